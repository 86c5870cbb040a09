// Synthetic Llama-shaped models with random weights, for benchmarks and tests.
//
// Speed depends on a model's shape and weight types, not on what its weights learned, so
// a benchmark needs no download: braid makes the model itself.
//
//   braid::SynthOptions opt;
//   opt.shape = braid::synth_preset("1b");   // TinyLlama 1.1B's shape
//   opt.mix = braid::QuantMix::kQ4_0;
//   opt.vocab = "../shared/assets/vocab/ggml-vocab-llama-spm.gguf";
//   braid::synthesize_model("/tmp/synth-1b-q4_0.gguf", opt);
//
// The file is a "llama" GGUF with llama.cpp's metadata and tensor names (it also loads in
// llama.cpp). Matrices get the tensor types of the quantization mix (the same rules as
// braid quantize, see braid/quantize.h) and are written directly in those types.
// Weights are approximately normal with mean 0 and standard deviation `stddev` (the sum
// of four uniform variables, scaled: cheap to draw and bounded at 3.5 sigma, so
// activations stay finite through every layer); norm weights are 1. Every row is drawn
// from its own seeded stream, so the file depends only on the options, not on the thread
// count. With a vocabulary file its tokenizer.* metadata is copied (so `braid run` can
// tokenize and print text) and its size sets n_vocab.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "braid/quantize.h"

namespace braid {

struct SynthShape {
  int dim = 0;
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;
  int ffn_dim = 0;
  int n_vocab = 0;  // used without a vocabulary file; with one, its token count wins
  int n_ctx = 2048;
  float rope_theta = 10000.0f;
  float norm_eps = 1e-5f;

  // Parameters of the llama model this shape makes (untied output head).
  uint64_t n_params() const;
};

// "1b": TinyLlama 1.1B (dim 2048, 22 layers, 32 heads, 4 KV heads, FFN 5632, vocab 32000,
// context 2048). "tiny": a 4-layer model whose widths (256, FFN 768, head_dim 64) fit
// every block type including the 256-element K-quants, for tests (vocab 32000 with the
// Llama vocabulary, else 512). Throws braid::Error for other names.
SynthShape synth_preset(const std::string& name);
std::vector<std::string> synth_preset_names();

struct SynthOptions {
  SynthShape shape;
  QuantMix mix = QuantMix::kQ4_0;
  bool pure = false;  // every matrix in the mix's base type (see choose_tensor_types)
  uint64_t seed = 1;
  float stddev = 0.02f;
  // A GGUF whose tokenizer.* metadata to copy (a vocabulary-only file such as
  // ggml-vocab-llama-spm.gguf, or a model). Empty: no tokenizer.
  std::string vocab;
  std::string name;  // general.name; empty: "braid-synth"
  int threads = 0;   // <= 0: the machine's physical cores
  // Called as tensors are generated (bytes of tensor data done, total) and then while
  // the file is written (stage "writing").
  std::function<void(const char* stage, uint64_t done, uint64_t total)> progress;
};

struct SynthResult {
  uint64_t n_params = 0;
  size_t n_tensors = 0;
  uint64_t tensor_bytes = 0;
  int n_vocab = 0;
  bool has_tokenizer = false;
  std::vector<std::pair<DType, size_t>> type_counts;
  std::vector<std::string> fallbacks;  // as QuantizeResult::fallbacks
};

// Writes the model to `out` atomically. Throws braid::Error for an invalid shape (heads
// not dividing dim, ...), a vocabulary file that is missing or holds no tokenizer, or an
// unwritable output.
SynthResult synthesize_model(const std::string& out, const SynthOptions& opt);

// The random stream behind the weights (exposed for tests): value j of row `row` of
// tensor number `tensor`, in units of the standard deviation.
float synth_normal(uint64_t seed, uint64_t tensor, uint64_t row, uint64_t j);

}  // namespace braid
