// AdamW, gradient clipping and the learning-rate schedule.
#include <algorithm>
#include <cmath>
#include <numbers>

#include "braid/error.h"
#include "braid/tune_optim.h"
#include "tune/kernels.h"

namespace braid::tune {
namespace {

ThreadPool& pool_or_inline(ThreadPool* pool) {
  static thread_local ThreadPool inline_pool(1);
  return pool ? *pool : inline_pool;
}

// Block size for sums of squares: fixed, so the order of the sum (and the result) does
// not depend on the number of threads.
constexpr int64_t kNormBlock = 1 << 14;

}  // namespace

AdamW::AdamW(size_t n_params, const AdamWConfig& config)
    : config_(config), m_(n_params, 0.0f), v_(n_params, 0.0f) {
  check(config.beta1 >= 0 && config.beta1 < 1 && config.beta2 >= 0 && config.beta2 < 1,
        "AdamW: betas must be in [0, 1)");
  check(config.eps > 0 && config.weight_decay >= 0, "AdamW: eps must be positive and weight decay >= 0");
}

void AdamW::set_no_decay(std::vector<std::pair<size_t, size_t>> ranges) {
  std::sort(ranges.begin(), ranges.end());
  for (size_t i = 0; i < ranges.size(); ++i) {
    check(ranges[i].first <= ranges[i].second && ranges[i].second <= m_.size(),
          "AdamW: no-decay range outside the parameters");
    check(i == 0 || ranges[i - 1].second <= ranges[i].first, "AdamW: no-decay ranges overlap");
  }
  no_decay_ = std::move(ranges);
}

void AdamW::step(std::span<float> params, std::span<const float> grads, double lr, ThreadPool* pool) {
  check(params.size() == m_.size() && grads.size() == m_.size(), "AdamW: ", params.size(), " parameters and ",
        grads.size(), " gradients for an optimizer of ", m_.size());
  ++steps_;
  // Scalars in double as PyTorch computes them in Python, applied in f32.
  const double bc1 = 1.0 - std::pow(config_.beta1, double(steps_));
  const double bc2_sqrt = std::sqrt(1.0 - std::pow(config_.beta2, double(steps_)));
  const float step_size = static_cast<float>(lr / bc1);
  const float decay = static_cast<float>(1.0 - lr * config_.weight_decay);
  const float b1c = static_cast<float>(1.0 - config_.beta1);
  const float b2 = static_cast<float>(config_.beta2), b2c = static_cast<float>(1.0 - config_.beta2);
  const float bc2_sqrt_f = static_cast<float>(bc2_sqrt);
  const float eps = static_cast<float>(config_.eps);
  float* p = params.data();
  const float* g = grads.data();
  float* m = m_.data();
  float* v = v_.data();
  auto update = [&](int64_t begin, int64_t end, bool with_decay) {
    for (int64_t i = begin; i < end; ++i) {
      if (with_decay) p[i] *= decay;
      m[i] += b1c * (g[i] - m[i]);
      v[i] = v[i] * b2 + b2c * (g[i] * g[i]);
      const float denom = std::sqrt(v[i]) / bc2_sqrt_f + eps;
      p[i] += -step_size * (m[i] / denom);
    }
  };
  const int64_t n = static_cast<int64_t>(m_.size());
  parallel_for(pool_or_inline(pool), n, 12, [&](int64_t begin, int64_t end, int) {
    // Walk [begin, end) alternating decayed stretches and no-decay ranges.
    int64_t i = begin;
    for (const auto& [rb, re] : no_decay_) {
      const int64_t b = std::max<int64_t>(int64_t(rb), i), e = std::min<int64_t>(int64_t(re), end);
      if (b >= e) continue;
      update(i, b, config_.weight_decay != 0);
      update(b, e, false);
      i = e;
    }
    update(i, end, config_.weight_decay != 0);
  });
}

double grad_norm(std::span<const float> grads, ThreadPool* pool) {
  const int64_t n = static_cast<int64_t>(grads.size());
  const int64_t blocks = (n + kNormBlock - 1) / kNormBlock;
  std::vector<double> partial(blocks, 0.0);
  parallel_for(pool_or_inline(pool), blocks, 2 * kNormBlock, [&](int64_t begin, int64_t end, int) {
    for (int64_t b = begin; b < end; ++b) {
      double s = 0.0;
      for (int64_t i = b * kNormBlock, e = std::min(n, (b + 1) * kNormBlock); i < e; ++i)
        s += double(grads[i]) * grads[i];
      partial[b] = s;
    }
  });
  double total = 0.0;
  for (double s : partial) total += s;
  return std::sqrt(total);
}

double clip_grad_norm(std::span<float> grads, double max_norm, ThreadPool* pool) {
  const double norm = grad_norm(grads, pool);
  if (max_norm <= 0 || !(norm > max_norm)) return norm;
  const float coef = static_cast<float>(max_norm / (norm + 1e-6));
  float* g = grads.data();
  parallel_for(pool_or_inline(pool), int64_t(grads.size()), 1, [&](int64_t begin, int64_t end, int) {
    for (int64_t i = begin; i < end; ++i) g[i] *= coef;
  });
  return norm;
}

double LrSchedule::at(int64_t step) const {
  if (step < warmup_steps) return peak_lr * double(step + 1) / double(warmup_steps);
  if (total_steps <= warmup_steps) return peak_lr;
  const double progress = std::min(1.0, double(step - warmup_steps) / double(total_steps - warmup_steps));
  return min_lr + 0.5 * (peak_lr - min_lr) * (1.0 + std::cos(std::numbers::pi * progress));
}

}  // namespace braid::tune
