// Optimisation pieces for training over flat f32 parameter buffers: AdamW with
// PyTorch's semantics, global-norm gradient clipping, and a warmup + cosine learning
// rate schedule.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <utility>
#include <vector>

#include "braid/thread_pool.h"

namespace braid::tune {

struct AdamWConfig {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.01;  // decoupled (AdamW), multiplied by the step's lr
};

// torch.optim.AdamW (single-tensor, f32): at step t = 1, 2, ...
//   p *= 1 - lr * weight_decay
//   m += (1 - beta1) * (g - m);   v = beta2 * v + (1 - beta2) * g^2
//   p -= lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
// (eps outside the square root, after the bias correction, as PyTorch has it).
class AdamW {
 public:
  AdamW(size_t n_params, const AdamWConfig& config);

  // Parameter index ranges [begin, end) that get no weight decay (e.g. norms, biases).
  void set_no_decay(std::vector<std::pair<size_t, size_t>> ranges);
  const std::vector<std::pair<size_t, size_t>>& no_decay() const { return no_decay_; }

  // One update of every parameter. Sizes must equal n_params (braid::Error otherwise).
  void step(std::span<float> params, std::span<const float> grads, double lr, ThreadPool* pool = nullptr);

  const AdamWConfig& config() const { return config_; }
  int64_t steps() const { return steps_; }  // updates made so far (t of the last one)
  size_t size() const { return m_.size(); }

  // The moment estimates, for checkpoints.
  std::vector<float>& m() { return m_; }
  std::vector<float>& v() { return v_; }
  const std::vector<float>& m() const { return m_; }
  const std::vector<float>& v() const { return v_; }
  void set_steps(int64_t steps) { steps_ = steps; }

 private:
  AdamWConfig config_;
  int64_t steps_ = 0;
  std::vector<float> m_, v_;
  std::vector<std::pair<size_t, size_t>> no_decay_;  // sorted, disjoint
};

// The L2 norm of all gradients together (summed in double, in a fixed order).
double grad_norm(std::span<const float> grads, ThreadPool* pool = nullptr);

// torch.nn.utils.clip_grad_norm_: when the global norm exceeds max_norm, scales every
// gradient by max_norm / (norm + 1e-6). Returns the norm before clipping. max_norm <= 0
// only measures.
double clip_grad_norm(std::span<float> grads, double max_norm, ThreadPool* pool = nullptr);

// Linear warmup, then cosine decay from peak_lr to min_lr at total_steps (constant
// min_lr after). `step` counts optimizer steps already taken, so the first step uses
// at(0) = peak_lr / warmup_steps (never 0) and the warmup ends at peak_lr.
// total_steps <= warmup_steps means constant peak_lr after the warmup.
struct LrSchedule {
  double peak_lr = 1e-3;
  double min_lr = 0.0;
  int64_t warmup_steps = 0;
  int64_t total_steps = 0;

  double at(int64_t step) const;
};

}  // namespace braid::tune
