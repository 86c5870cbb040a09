// A transformer language model loaded from GGUF (llama.cpp's conventions), and the
// layer-range interface every runtime builds on.
//
//   auto model = braid::Model::load("stories260K.gguf");
//   braid::ThreadPool pool(4);
//   braid::KVCache kv(model->config(), 0, model->config().n_layers, 512);
//   std::vector<float> logits = model->forward(tokens.data(), n, /*pos0=*/0, kv, pool);
//
// A device of a cluster runs only part of the model through the same three steps:
//   embed (head)  ->  run_layers(first, last) on each device  ->  output (last stage).
// Running the layers in consecutive ranges, each with its own KVCache, gives results
// bit-identical to one run over all layers; results also do not depend on the thread
// count, or on whether a prompt is fed at once (prefill) or token by token (decode).
//
// Architectures: "llama" (RMSNorm, SwiGLU, RoPE on adjacent pairs, GQA; llama3 rope via
// the rope_freqs.weight tensor), "qwen2" (llama + q/k/v biases, NEOX-style RoPE) and
// "gpt2" (LayerNorm, GELU, learned positions, fused qkv, biases everywhere).
// Weights stay in the mapped file (zero-copy); a Model is immutable and every method is
// const, so one Model can serve many sequences from many threads at once.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "braid/gguf.h"
#include "braid/kv_cache.h"
#include "braid/tensor.h"
#include "braid/thread_pool.h"

namespace braid {

enum class Arch { Llama, Qwen2, GPT2 };
const char* arch_name(Arch a);  // "llama", "qwen2", "gpt2"

struct ModelConfig {
  Arch arch = Arch::Llama;
  int n_vocab = 0;
  int dim = 0;  // embedding width
  int n_layers = 0;
  int n_heads = 0;
  int n_kv_heads = 0;  // < n_heads: grouped-query attention
  int head_dim = 0;
  int ffn_dim = 0;
  int n_ctx_train = 0;  // {arch}.context_length
  float norm_eps = 1e-5f;
  // RoPE (llama, qwen2). Pairs are rotated by pos * theta^(-2i/rope_dim) / freq_factor_i.
  float rope_theta = 10000.0f;
  int rope_dim = 0;           // leading dims of each head that rotate (= head_dim usually)
  bool rope_neox = false;     // pairs (x[i], x[i + rope_dim/2]) instead of (x[2i], x[2i+1])
  float rope_freq_scale = 1;  // "linear" scaling: positions are multiplied by this
  // Llama 3 scaling parameters (as in HF's rope_scaling). llama.cpp files carry their
  // effect as the per-pair factors of tensor rope_freqs.weight; see llama3_rope_factors.
  float rope_factor = 1, rope_low_freq_factor = 1, rope_high_freq_factor = 4;
  int rope_orig_ctx = 0;
  bool tied_output = false;  // LM head is token_embd (no output.weight)

  int q_dim() const { return n_heads * head_dim; }
  int kv_dim() const { return n_kv_heads * head_dim; }

  // Reads and validates the hyperparameters of `gguf` (not its tensors). Throws
  // braid::Error "<label>: unsupported architecture 'bert'" and the like.
  static ModelConfig from_gguf(const GgufFile& gguf);
};

// The per-pair frequency divisors Llama 3.x applies (HF "llama3" rope_scaling), rope_dim/2
// of them: what converters store as rope_freqs.weight.
std::vector<float> llama3_rope_factors(float theta, int rope_dim, float factor, float low_freq_factor,
                                       float high_freq_factor, int orig_ctx);

// The weights of one block. Matrices are views into the file (ne = {in, out}); vectors
// (norms, biases) are f32 copies. Absent parts are null / empty.
struct LayerWeights {
  std::vector<float> attn_norm, attn_norm_b;  // b: LayerNorm bias (gpt2)
  const Tensor* wq = nullptr;                 // [dim] -> [q_dim]
  const Tensor* wk = nullptr;                 // [dim] -> [kv_dim]
  const Tensor* wv = nullptr;                 // [dim] -> [kv_dim]
  const Tensor* wqkv = nullptr;               // gpt2: fused [dim] -> [3 * dim]
  std::vector<float> bq, bk, bv, bqkv;
  const Tensor* wo = nullptr;  // [q_dim] -> [dim]
  std::vector<float> bo;
  std::vector<float> ffn_norm, ffn_norm_b;
  const Tensor* w_gate = nullptr;  // [dim] -> [ffn_dim] (llama, qwen2)
  const Tensor* w_up = nullptr;    // [dim] -> [ffn_dim]
  const Tensor* w_down = nullptr;  // [ffn_dim] -> [dim]
  std::vector<float> b_up, b_down;
};

class Model {
 public:
  // Maps `gguf_path` and checks everything a forward pass will touch: a supported
  // architecture, sane hyperparameters, every expected tensor present with the right
  // shape and a type braid computes. Throws one-line braid::Errors such as
  //   "model.gguf: unsupported architecture 'bert'"
  //   "model.gguf: missing tensor blk.3.ffn_up.weight"
  //   "model.gguf: tensor blk.0.attn_q.weight has shape [64, 32], expected [64, 64]"
  //   "model.gguf: tensor blk.3.attn_q.weight has type q4_K, which braid cannot compute yet"
  static std::shared_ptr<const Model> load(const std::string& gguf_path);
  static std::shared_ptr<const Model> from_gguf(std::shared_ptr<const GgufFile> gguf);

  const ModelConfig& config() const { return config_; }
  const GgufFile& gguf() const { return *gguf_; }
  const LayerWeights& layer(int i) const { return layers_.at(static_cast<size_t>(i)); }
  const Tensor& token_embd() const { return *token_embd_; }
  const Tensor& output_weight() const { return *output_; }  // token_embd when tied

  // ---- The layer-range interface. hidden is [n_tokens][dim] f32, row-major. ----

  // Token embeddings (plus learned positions pos0.. for gpt2). Throws braid::Error for
  // an id outside [0, n_vocab) or (gpt2) positions beyond the position table.
  void embed(const int32_t* tokens, int n_tokens, int pos0, float* hidden) const;

  // Runs blocks [first, last) in place on the hidden states of positions
  // [pos0, pos0 + n_tokens), appending their keys/values to kv, which must cover the
  // range. Attention is causal over kv positions [0, pos0 + n_tokens). Throws
  // braid::Error when the positions do not fit kv ("prompt of N tokens exceeds the
  // context of M") or pos0 is beyond what a layer holds.
  void run_layers(int first, int last, float* hidden, int n_tokens, int pos0, KVCache& kv,
                  ThreadPool& pool) const;

  // Final norm and LM head: logits [n_tokens][n_vocab].
  void output(const float* hidden, int n_tokens, float* logits, ThreadPool& pool) const;

  // ---- Single device convenience. ----

  // embed + all layers + output for tokens at positions pos0..; kv must cover all
  // layers. Returns the logits of the last token ([n_vocab]), or of every token
  // ([n_tokens][n_vocab]) when all_logits.
  std::vector<float> forward(const int32_t* tokens, int n_tokens, int pos0, KVCache& kv, ThreadPool& pool,
                             bool all_logits = false) const;

  // ---- Panels. ----
  // F16 and BF16 weight matrices, and Q4_0 / Q8_0 / Q4_K / Q6_K ones where the CPU has
  // the kernels for them (panels_supported), run from a copy in panels (braid/kernels.h,
  // pack_panels): the f16 prompt kernel and the quantized decode are faster on them. A
  // layer's copy (`layer` == n_layers: the output's) is made the first time run_layers
  // or output runs it, and kept until release_packed; the file's pages it was made from
  // are then given back when the file is mapped (GgufFile::file_backed), so that a
  // packed layer holds its bytes once. Thread-safe: a layer released while a pass runs
  // it stays alive until that pass is done.
  void release_packed(int layer) const;
  // True when the layer's copy exists; false also for layers with nothing to pack.
  bool is_packed(int layer) const;

  // ---- Costs, for the planner. ----
  size_t layer_weight_bytes(int layer) const;  // bytes of block `layer`'s tensors
  size_t embed_weight_bytes() const;           // token (+ position) embeddings
  // Final norm + LM head; a head tied to token_embd counts too (the last stage reads it).
  size_t output_weight_bytes() const;
  // Multiply-adds x 2 of one block for one token, not counting attention over the
  // context, which adds 4 * q_dim flops per cached position.
  double layer_flops_per_token(int layer) const;

 private:
  Model() = default;
  void bind_weights();

  std::shared_ptr<const GgufFile> gguf_;
  ModelConfig config_;
  std::vector<LayerWeights> layers_;
  const Tensor* token_embd_ = nullptr;
  const Tensor* pos_embd_ = nullptr;  // gpt2
  const Tensor* output_ = nullptr;
  std::vector<float> output_norm_, output_norm_b_;
  std::vector<float> rope_factors_;  // rope_dim/2 divisors; empty = all 1
  std::vector<size_t> layer_bytes_;
  std::vector<double> layer_flops_;
  size_t embed_bytes_ = 0, output_bytes_ = 0;

  // One layer's (or the output's) matrices in panels (model/packed.cpp).
  struct Packed;
  // The copy of `layer` (n_layers: the output), made now if it does not exist; null
  // when the layer has nothing to pack.
  std::shared_ptr<const Packed> packed(int layer, ThreadPool& pool) const;
  void find_packable();       // sets packs_ and sizes packed_ (after bind_weights)
  std::vector<bool> packs_;  // n_layers + 1
  mutable std::mutex packed_mu_;
  mutable std::vector<std::shared_ptr<const Packed>> packed_;  // n_layers + 1; null: none
};

}  // namespace braid
