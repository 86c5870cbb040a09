// Full-parameter training of small Llama-family and GPT-2 models on the CPU, in f32.
//
// A TrainModel holds every parameter in one flat f32 buffer (and its gradient in a
// second one), loaded from a Hugging Face folder (config.json + model.safetensors) or
// initialised at random. A TrainPass owns the activations for batches up to B x T and
// runs the forward pass, the cross-entropy loss and the backward pass:
//
//   braid::ThreadPool pool(braid::physical_cores());
//   auto model = braid::tune::TrainModel::load_hf("models/tiny");
//   braid::tune::TrainPass pass(model.config(), /*B=*/4, /*T=*/256, &pool);
//   auto batch = braid::tune::Batch::causal_lm(tokens, 4, 256);  // labels = inputs, shifted
//   model.zero_grads();
//   float loss = pass.forward_backward(model, batch);             // grads += dloss/dparams
//
// The optimizer, the learning-rate schedule, gradient clipping and checkpoints are in
// braid/tune_optim.h and braid/tune_trainer.h.
//
// Semantics follow transformers: the loss is the mean cross-entropy over the positions
// that have a target (HF's labels = input_ids, shifted by one, with -100 ignored), and
// gradients match PyTorch's autograd of that loss to f32 rounding.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "braid/thread_pool.h"

namespace braid::tune {

enum class Arch {
  kLlama,  // RMSNorm, RoPE (rotate-half), grouped-query attention, SiLU-gated MLP, no biases
  kGpt2,   // LayerNorm, learned positions, GELU-tanh MLP, biases everywhere
};

struct ModelConfig {
  Arch arch = Arch::kLlama;
  int n_layer = 0;
  int dim = 0;  // hidden size
  int n_head = 0;
  int n_kv_head = 0;  // == n_head without grouped-query attention
  int head_dim = 0;
  int ffn_dim = 0;  // MLP hidden width (Llama intermediate_size, GPT-2 n_inner or 4*dim)
  int vocab = 0;
  int max_seq = 0;  // max_position_embeddings / n_positions
  float norm_eps = 1e-5f;
  double rope_theta = 10000.0;  // Llama only
  bool tied_head = false;       // output head shares the token embedding

  // Parses a Hugging Face config.json (LlamaForCausalLM / GPT2LMHeadModel); throws
  // braid::Error naming `label` for other architectures or features it does not train
  // (biases on Llama, rope scaling, other activations).
  static ModelConfig from_hf_json(const std::string& json_text, const std::string& label);
  // braid's own JSON form (checkpoints); round-trips every field.
  std::string to_json() const;
  static ModelConfig from_json(const std::string& json_text, const std::string& label);
  // Throws braid::Error unless the sizes are positive and consistent.
  void validate(const std::string& label) const;
};

// One parameter tensor inside the flat buffers.
struct ParamTensor {
  std::string name;            // the Hugging Face parameter name
  std::vector<int64_t> shape;  // the Hugging Face shape (PyTorch order)
  size_t offset = 0;           // first element in TrainModel::params() / grads()
  size_t size = 0;             // elements
  // GPT-2's Conv1D weights are [in][out] in the file; they are kept here as [out][in],
  // like every other linear weight, and transposed on the way in and out.
  bool transposed = false;
};

// Where each part of the model lives in the flat buffers (npos when absent). Linear
// weights are [out][in]. Llama's q/k/v projections are adjacent, so they form one
// [(H + 2*KV) * head_dim][dim] matrix, and gate/up form one [2 * ffn_dim][dim] matrix;
// GPT-2's c_attn and c_fc are already fused that way.
struct ParamLayout {
  static constexpr size_t npos = static_cast<size_t>(-1);
  struct Layer {
    size_t ln1_w = npos, ln1_b = npos;    // input norm
    size_t qkv_w = npos, qkv_b = npos;    // [(H + 2*KV) * hd][dim]
    size_t o_w = npos, o_b = npos;        // [dim][H * hd]
    size_t ln2_w = npos, ln2_b = npos;    // post-attention norm
    size_t fc_w = npos, fc_b = npos;      // Llama: [2 * ffn][dim] (gate; up); GPT-2: [ffn][dim]
    size_t proj_w = npos, proj_b = npos;  // [dim][ffn]
  };
  size_t wte = npos;  // [vocab][dim]
  size_t wpe = npos;  // [max_seq][dim], GPT-2 only
  size_t lnf_w = npos, lnf_b = npos;
  size_t head = npos;  // [vocab][dim]; == wte when tied
  std::vector<Layer> layers;
};

class TrainModel {
 public:
  // All parameters zero (norm weights too): fill them with set_hf() or load().
  explicit TrainModel(const ModelConfig& config);

  // Loads config.json and model.safetensors (or a sharded model.safetensors.index.json)
  // from a Hugging Face folder; F32, F16, BF16 and F64 weights are converted to f32.
  // Names may lack the "transformer." / "model." prefix (as in the original gpt2 files).
  static TrainModel load_hf(const std::string& dir);
  // Random initialisation (GPT-2 / Llama style): N(0, init_std) for matrices and
  // embeddings, with residual output projections scaled by 1/sqrt(2 * n_layer); norm
  // weights 1, biases 0. Deterministic for a seed.
  static TrainModel random(const ModelConfig& config, uint64_t seed, float init_std = 0.02f);

  const ModelConfig& config() const { return config_; }
  const ParamLayout& layout() const { return layout_; }
  const std::vector<ParamTensor>& tensors() const { return tensors_; }
  const ParamTensor& tensor(const std::string& hf_name) const;  // throws braid::Error
  size_t num_params() const { return params_.size(); }

  std::vector<float>& params() { return params_; }
  const std::vector<float>& params() const { return params_; }
  std::vector<float>& grads() { return grads_; }
  const std::vector<float>& grads() const { return grads_; }
  void zero_grads();

  // A parameter (or its gradient) in the Hugging Face layout and shape.
  std::vector<float> get_hf(const std::string& hf_name) const;
  std::vector<float> grad_hf(const std::string& hf_name) const;
  void set_hf(const std::string& hf_name, std::span<const float> values);

 private:
  std::vector<float> read_hf(const ParamTensor& t, const std::vector<float>& buf) const;

  ModelConfig config_;
  ParamLayout layout_;
  std::vector<ParamTensor> tensors_;
  std::vector<float> params_;
  std::vector<float> grads_;
};

// Targets equal to kIgnore (or any negative value) do not count in the loss.
constexpr int32_t kIgnore = -100;

// B sequences of T tokens. targets[b][t] is the token the model should predict after
// reading inputs[b][0..t], or kIgnore.
struct Batch {
  int B = 0;
  int T = 0;
  std::vector<int32_t> inputs;   // [B][T]
  std::vector<int32_t> targets;  // [B][T]

  // Causal language modelling as transformers does it with labels = input_ids:
  // targets[b][t] = tokens[b][t + 1]; the last position of each row has none.
  static Batch causal_lm(std::span<const int32_t> tokens, int B, int T);
  // The same, training only on the tokens whose loss_mask[b][t] is non-zero (for example
  // a completion after its prompt): position t - 1 predicts token t only when it is.
  static Batch causal_lm(std::span<const int32_t> tokens, int B, int T, std::span<const uint8_t> loss_mask);

  int64_t count_targets() const;  // positions with a target
};

// Activations and scratch for one model shape and batches up to B x T. Not thread-safe;
// one pass per training loop. Kernels run on `pool` (null: the calling thread only).
class TrainPass {
 public:
  // With recompute, only each layer's input is kept through the forward pass, and every
  // layer's activations are recomputed just before its backward: activation memory
  // drops from about n_layer layers' worth to one, for about a third more compute.
  // Results are bit-identical either way.
  TrainPass(const ModelConfig& config, int max_batch, int max_seq, ThreadPool* pool = nullptr,
            bool recompute = false);
  ~TrainPass();
  TrainPass(const TrainPass&) = delete;
  TrainPass& operator=(const TrainPass&) = delete;

  // The mean loss over the batch's targets (0 when it has none). Leaves the logits
  // [B][T][vocab] in logits(). Throws braid::Error for a batch larger than the pass,
  // token ids outside the vocabulary, or a model of another shape.
  float forward(const TrainModel& model, const Batch& batch);

  // Forward and backward: adds to model.grads() the gradient of
  //   (sum of this batch's per-target cross-entropies) / normalizer.
  // normalizer <= 0 means this batch's target count, i.e. the gradient of the mean loss.
  // For gradient accumulation over micro-batches pass their total target count, so the
  // sum of the micro-batch gradients is the full batch's. Returns this batch's mean loss.
  // logits() does not survive (its buffer holds the logit gradients afterwards).
  float forward_backward(TrainModel& model, const Batch& batch, double normalizer = 0);

  const float* logits() const;  // valid after forward()
  size_t activation_bytes() const;
  bool recompute() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace braid::tune
