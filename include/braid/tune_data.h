// Training data: reading text and JSONL corpora, a deterministic train/validation split,
// tokenization, packing into fixed-length rows, and batches drawn from them.
//
//   auto files = braid::tune::expand_data_paths({"corpus/"});
//   auto docs = braid::tune::read_text_documents(files, "%");       // or read_jsonl_documents
//   auto split = braid::tune::split_documents(docs, 0.05, /*seed=*/1);
//   auto train = braid::tune::pack_rows(braid::tune::tokenize_documents(split.train, *tok), 256, pad);
//   braid::tune::BatchSampler sampler(train, /*B=*/8, /*seed=*/1);
//   braid::tune::Batch b = sampler.batch(step);  // the same batch for the same step, always
//
// A document becomes [BOS] prompt completion [EOS] (BOS/EOS when the vocabulary has
// them). The loss mask marks the tokens the model is trained to predict: every token of a
// plain text document and its EOS; for a JSONL {"prompt", "completion"} record only the
// completion and EOS (never the prompt, and never a BOS, which nothing predicts).
//
// Packing concatenates the documents into one stream and cuts it into rows of `seq`
// tokens, each row starting on the last token of the previous one: with Batch::causal_lm,
// where position t predicts token t + 1, every token of the stream after the first is a
// target exactly once. The last row is padded (masked out). Documents are not split at
// row boundaries and attend to the ones before them in their row, as in GPT-style
// pretraining; the BOS in between tells the model where a new one starts.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "braid/thread_pool.h"
#include "braid/train.h"

namespace braid {
class Tokenizer;
}

namespace braid::tune {

// Files and folders -> the files to read: a folder contributes the regular files below it
// (recursively, in name order, skipping hidden entries and symbolic links); a file is
// taken as given. Throws braid::Error naming a path that does not exist, or when nothing
// is left.
std::vector<std::string> expand_data_paths(const std::vector<std::string>& paths);

struct Document {
  std::string prompt;  // not trained on (JSONL "prompt"); empty for plain text
  std::string text;    // trained on (plain text, or JSONL "completion")
  std::string source;  // "file" or "file:line", for messages
};

// Plain text. With an empty separator each file is one document; otherwise a line that
// equals `separator` exactly (like the "%" lines of fortune files) ends a document.
// Documents that are empty or only whitespace are dropped. Throws braid::Error naming the
// file for unreadable files and ill-formed UTF-8 ("a.txt is not valid UTF-8 (byte N)").
std::vector<Document> read_text_documents(const std::vector<std::string>& files,
                                          const std::string& separator = "");

// JSON Lines: one object per non-blank line, {"prompt": "...", "completion": "..."}
// (loss on the completion only) or {"text": "..."} (loss on all of it); other fields are
// ignored. Throws braid::Error("data.jsonl:17: ...") for a line that is not JSON, not an
// object, or lacks those string fields.
std::vector<Document> read_jsonl_documents(const std::vector<std::string>& files);

// Throws braid::Error("... no text ...") when `docs` is empty.
void check_not_empty(const std::vector<Document>& docs, const std::vector<std::string>& files);

// Documents shuffled with `seed`, then the first round(val_frac * n) go to validation
// (the rest, in their original order, to training). When val_frac * n < 1 the split is
// left to rows (see split_rows): by_rows is set and every document goes to training.
struct DocumentSplit {
  std::vector<Document> train, val;
  bool by_rows = false;
};
DocumentSplit split_documents(const std::vector<Document>& docs, double val_frac, uint64_t seed);

// Token ids and their loss mask (1: the token is a target).
struct TokenStream {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> mask;
  size_t size() const { return tokens.size(); }
};

// [BOS] prompt text [EOS] for every document, concatenated (see the top of this file).
// Tokenizes on `pool` when given; the result does not depend on it.
TokenStream tokenize_documents(const std::vector<Document>& docs, const Tokenizer& tok,
                               ThreadPool* pool = nullptr);

// Rows of `seq` tokens cut from a stream.
struct PackedRows {
  int seq = 0;
  std::vector<int32_t> tokens;  // [rows][seq]
  std::vector<uint8_t> mask;    // [rows][seq]

  size_t rows() const { return seq > 0 ? tokens.size() / size_t(seq) : 0; }
  // Positions that are a target of the row before them (mask set, not a row's first).
  int64_t targets() const;
  // The causal-LM batch of the given rows.
  Batch batch(const std::vector<size_t>& row_ids) const;
  // A 64-bit fingerprint of the tokens and masks (checkpoints check it on resume).
  uint64_t fingerprint() const;
};

// Packs a stream (see the top of this file); padding is `pad` with mask 0. seq >= 2.
// Rows without a single target (a long prompt's middle, say) are left out.
PackedRows pack_rows(const TokenStream& stream, int seq, int32_t pad);

// Moves round(val_frac * rows) rows, chosen with `seed`, to validation (at least one when
// val_frac > 0; throws when fewer than two rows exist).
void split_rows(PackedRows& train, PackedRows& val, double val_frac, uint64_t seed);

// Batches of B rows: each epoch visits every row once, in an order drawn from the seed
// and the epoch number. batch(i) depends only on i (not on earlier calls), so a run that
// resumes at step s draws exactly the batches an uninterrupted run would.
class BatchSampler {
 public:
  BatchSampler(const PackedRows& rows, int B, uint64_t seed);  // rows must outlive this

  Batch batch(int64_t index);
  double epoch_at(int64_t index) const;  // fractional epochs done after batch index - 1

 private:
  const std::vector<uint32_t>& order(int64_t epoch);

  const PackedRows& rows_;
  int B_;
  uint64_t seed_;
  std::map<int64_t, std::vector<uint32_t>> orders_;  // recent epochs' row orders
};

}  // namespace braid::tune
