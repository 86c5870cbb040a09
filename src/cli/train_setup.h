// `braid train`'s inputs, prepared before the loop: the options, the tokenizer (from a
// file, the --init model, or trained on the data), the packed train/validation rows and
// the starting model (random, --init, or a checkpoint).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "braid/gguf.h"
#include "braid/thread_pool.h"
#include "braid/tokenizer.h"
#include "braid/train.h"
#include "braid/tune_data.h"
#include "cli/train_common.h"

namespace braid::cli {

struct TrainArgs {
  CorpusArgs corpus;
  // Tokenizer: a GGUF holding one, or a vocabulary size to train one on the data.
  std::string tokenizer;
  int vocab_size = 0;
  std::string pre = "gpt-2";
  // Model shape (from scratch): a preset, then any of these overriding it (0: preset's).
  std::string preset;
  int dim = 0, layers = 0, heads = 0, kv_heads = 0, ffn = 0, ctx = 0;
  bool tie_embeddings = false;
  std::string init;  // Hugging Face folder or GGUF to start from
  // Optimisation.
  int64_t steps = 1000;
  int batch = 8, seq = 256, accum = 1;
  double lr = 1e-3, min_lr = -1, weight_decay = 0.1, grad_clip = 1.0, beta1 = 0.9, beta2 = 0.95;
  int64_t warmup = -1;
  uint64_t seed = 1;
  double val_frac = 0.05;
  // Running.
  int threads = 1;
  bool recompute = false;
  std::string checkpoint;
  int64_t save_every = 0, stop_after = 0, eval_every = -1, log_every = 0;
  std::string metrics;
  // Output.
  std::string out, type = "f32", name;
};

// Checks the options that need no file (ranges, combinations). Throws braid::Error.
void validate_args(const TrainArgs& a);

// The tokenizer the run uses, and the GGUF its metadata comes from (copied into the
// output model).
struct TokenizerSource {
  std::shared_ptr<const GgufFile> gguf;
  std::unique_ptr<Tokenizer> tok;
  std::string description;   // "tok.gguf", "trained: 4096 tokens", ...
  uint64_t fingerprint = 0;  // of the vocabulary and merges
};

// From --tokenizer, else --init, else trained on `train_docs` (--vocab-size).
TokenizerSource resolve_tokenizer(const TrainArgs& a, const std::vector<tune::Document>& train_docs);

struct TrainData {
  tune::PackedRows train, val;
  std::string summary;  // one line for the log
};

// Tokenizes and packs the split; rows are split instead of documents when there are too
// few documents for val_frac (see tune::split_documents).
TrainData prepare_data(const TrainArgs& a, const tune::DocumentSplit& split, const Tokenizer& tok,
                       ThreadPool& pool);

// The model a fresh run starts from: --init, or random weights of the preset/flag shape
// with the tokenizer's vocabulary.
tune::TrainModel initial_model(const TrainArgs& a, const Tokenizer& tok);

// What a fresh run's model would be, for the checkpoint check: the config JSON (from
// the flags) or "init:<path>".
std::string model_identity(const TrainArgs& a, const Tokenizer& tok);

// Named model shapes.
struct Preset {
  const char* name;
  int dim, layers, heads, kv_heads, ffn, ctx;
};
const std::vector<Preset>& presets();

}  // namespace braid::cli
