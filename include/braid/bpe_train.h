// Training a byte-level BPE vocabulary (GPT-2 style) on a text corpus, written as GGUF
// tokenizer metadata that braid::Tokenizer::from_gguf (and llama.cpp) read:
//
//   braid::BpeTrainer trainer({.vocab_size = 4096});
//   for (const std::string& doc : corpus) trainer.add_text(doc);
//   braid::BpeVocab vocab = trainer.train();
//   vocab.write_gguf("tok.gguf");  // tokenizer.ggml.model "gpt2", pre "gpt-2", merges, ...
//
// The algorithm is the classic one (Sennrich et al.; Hugging Face's BpeTrainer): split the
// text into words with the pre-tokenizer that tokenizer.ggml.pre names (the same regexes
// braid's tokenizer applies), count the distinct words, start every word as its bytes
// (token id = byte value), then repeatedly merge the most frequent adjacent pair of
// tokens into a new token. Pair counts are kept incrementally, so each merge only touches
// the words that contain the pair: a few MB of text train a 4k vocabulary in seconds.
//
// Ties between equally frequent pairs go to the pair with the smaller (left, right) token
// ids, so training is deterministic. Because braid's tokenizer applies the merges by rank
// to each word, encoding a training word reproduces exactly the tokens training ended with.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "braid/tokenizer.h"

namespace braid {

class GgufWriter;
namespace text {
struct PreTokenizer;
}

struct BpeTrainOptions {
  // The final vocabulary size: 256 byte tokens + merges + the special tokens below.
  // Training stops earlier when no pair occurs min_frequency times.
  int vocab_size = 4096;
  // tokenizer.ggml.pre: the pre-tokenizer that splits text into words ("gpt-2",
  // "llama-bpe", ... any name braid's tokenizer knows).
  std::string pre = "gpt-2";
  int64_t min_frequency = 2;
  // Control tokens appended after the merged tokens; empty strings are left out.
  std::string bos = "<|startoftext|>";
  std::string eos = "<|endoftext|>";
};

// A trained vocabulary: what goes into tokenizer.ggml.*.
struct BpeVocab {
  std::string pre;
  // Byte-level strings (GPT-2's bytes_to_unicode): ids 0..255 are the single bytes in
  // byte order, then the tokens the merges formed, then the special tokens.
  std::vector<std::string> tokens;
  std::vector<TokenType> types;     // kNormal, kControl for the special tokens
  std::vector<std::string> merges;  // "left right" in rank order
  int32_t bos = -1, eos = -1;       // -1: none

  // Sets tokenizer.ggml.{model, pre, tokens, token_type, merges, bos_token_id,
  // eos_token_id, add_bos_token, add_eos_token}. Prompts get BOS when there is one.
  void to_gguf(GgufWriter& w) const;
  // A tokenizer-only GGUF file (general.name plus the keys above), written atomically.
  void write_gguf(const std::string& path, const std::string& name = "braid-bpe") const;
};

class BpeTrainer {
 public:
  // Throws braid::Error for an unknown pre-tokenizer, a vocabulary too small to hold the
  // 256 byte tokens and the special tokens, or min_frequency < 1.
  explicit BpeTrainer(const BpeTrainOptions& options);

  // Splits `text` into words and counts them. Throws braid::Error("<label> is not valid
  // UTF-8 (byte N)") for ill-formed UTF-8.
  void add_text(std::string_view text, const char* label = "text");

  int64_t total_words() const { return total_words_; }     // words seen, with repeats
  size_t distinct_words() const { return words_.size(); }  // different words

  // Runs the merges. Throws braid::Error when no text was added. `progress(merges done,
  // merges wanted)` is called now and then when given.
  BpeVocab train(const std::function<void(int, int)>& progress = nullptr) const;

 private:
  BpeTrainOptions options_;
  const text::PreTokenizer* pre_ = nullptr;         // shared, immutable
  std::unordered_map<std::string, int64_t> words_;  // word bytes -> occurrences
  int64_t total_words_ = 0;
};

}  // namespace braid
