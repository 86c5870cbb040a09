// Softmax cross-entropy over the vocabulary, one row per predicted token.
#include <cmath>
#include <vector>

#include "tune/kernels.h"

namespace braid::tune {
namespace {

struct RowStats {
  float max;
  double sum;  // sum of exp(logit - max)
};

inline RowStats row_stats(const float* l, int64_t v) {
  float mx = l[0];
  for (int64_t j = 1; j < v; ++j) mx = l[j] > mx ? l[j] : mx;
  double sum = 0.0;
  for (int64_t j = 0; j < v; ++j) sum += std::exp(l[j] - mx);
  return {mx, sum};
}

inline double row_loss(const float* l, const RowStats& st, int32_t target) {
  return std::log(st.sum) + double(st.max) - double(l[target]);
}

// Sums row losses in row order so the result does not depend on the thread split.
double sum_losses(const std::vector<double>& losses, const int32_t* targets, int64_t n, int64_t* count) {
  double total = 0.0;
  int64_t c = 0;
  for (int64_t r = 0; r < n; ++r) {
    if (targets[r] < 0) continue;
    total += losses[r];
    ++c;
  }
  if (count) *count = c;
  return total;
}

}  // namespace

double cross_entropy_forward(ThreadPool& pool, const float* logits, const int32_t* targets, int64_t n,
                             int64_t v, int64_t* count) {
  std::vector<double> losses(n, 0.0);
  parallel_for(pool, n, 8 * v, [&](int64_t begin, int64_t end, int) {
    for (int64_t r = begin; r < end; ++r) {
      if (targets[r] < 0) continue;
      const float* l = logits + r * v;
      losses[r] = row_loss(l, row_stats(l, v), targets[r]);
    }
  });
  return sum_losses(losses, targets, n, count);
}

void cross_entropy_backward(ThreadPool& pool, float* dlogits, const float* logits, const int32_t* targets,
                            int64_t n, int64_t v, float scale) {
  parallel_for(pool, n, 8 * v, [&](int64_t begin, int64_t end, int) {
    for (int64_t r = begin; r < end; ++r) {
      if (targets[r] < 0) continue;
      const float* l = logits + r * v;
      const RowStats st = row_stats(l, v);
      const float inv = static_cast<float>(1.0 / st.sum);
      float* d = dlogits + r * v;
      for (int64_t j = 0; j < v; ++j) d[j] += scale * (std::exp(l[j] - st.max) * inv);
      d[targets[r]] -= scale;
    }
  });
}

double cross_entropy_fused(ThreadPool& pool, float* logits, const int32_t* targets, int64_t n, int64_t v,
                           float scale, int64_t* count) {
  std::vector<double> losses(n, 0.0);
  parallel_for(pool, n, 8 * v, [&](int64_t begin, int64_t end, int) {
    for (int64_t r = begin; r < end; ++r) {
      float* l = logits + r * v;
      if (targets[r] < 0) {
        for (int64_t j = 0; j < v; ++j) l[j] = 0.0f;
        continue;
      }
      const RowStats st = row_stats(l, v);
      losses[r] = row_loss(l, st, targets[r]);
      const float inv = static_cast<float>(1.0 / st.sum);
      for (int64_t j = 0; j < v; ++j) l[j] = scale * (std::exp(l[j] - st.max) * inv);
      l[targets[r]] -= scale;
    }
  });
  return sum_losses(losses, targets, n, count);
}

}  // namespace braid::tune
