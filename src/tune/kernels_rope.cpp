// Rotary position embedding (Hugging Face rotate-half layout), forward and backward.
// The table is computed the way transformers computes it, in f32 (inv_freq, then
// pos * inv_freq, then cos/sin), so rotated values match it to the last bits.
#include <cmath>

#include "tune/kernels.h"

namespace braid::tune {

RopeTable::RopeTable(int max_pos_, int head_dim, double theta)
    : max_pos(max_pos_),
      half(head_dim / 2),
      cos(size_t(max_pos_) * (head_dim / 2)),
      sin(size_t(max_pos_) * (head_dim / 2)) {
  for (int i = 0; i < half; ++i) {
    const float inv_freq =
        1.0f / std::pow(static_cast<float>(theta), static_cast<float>(2 * i) / static_cast<float>(head_dim));
    for (int p = 0; p < max_pos; ++p) {
      const float angle = static_cast<float>(p) * inv_freq;
      cos[size_t(p) * half + i] = std::cos(angle);
      sin[size_t(p) * half + i] = std::sin(angle);
    }
  }
}

namespace {

// sign = +1 rotates forward by the position's angle; -1 applies the transpose.
void rope_apply(ThreadPool& pool, float* x, int64_t n, int seq_len, int n_heads, int head_dim,
                int64_t row_stride, const RopeTable& table, float sign) {
  const int half = head_dim / 2;
  parallel_for(pool, n, int64_t(n_heads) * head_dim * 3, [&](int64_t begin, int64_t end, int) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t pos = r % seq_len;
      const float* c = table.cos.data() + pos * half;
      const float* s = table.sin.data() + pos * half;
      for (int h = 0; h < n_heads; ++h) {
        float* v = x + r * row_stride + int64_t(h) * head_dim;
        for (int i = 0; i < half; ++i) {
          const float a = v[i], b = v[i + half];
          const float si = sign * s[i];
          v[i] = a * c[i] - b * si;
          v[i + half] = b * c[i] + a * si;
        }
      }
    }
  });
}

}  // namespace

void rope_forward(ThreadPool& pool, float* x, int64_t n, int seq_len, int n_heads, int head_dim,
                  int64_t row_stride, const RopeTable& table) {
  rope_apply(pool, x, n, seq_len, n_heads, head_dim, row_stride, table, 1.0f);
}

void rope_backward(ThreadPool& pool, float* dx, int64_t n, int seq_len, int n_heads, int head_dim,
                   int64_t row_stride, const RopeTable& table) {
  rope_apply(pool, dx, n, seq_len, n_heads, head_dim, row_stride, table, -1.0f);
}

}  // namespace braid::tune
