// Element-wise, normalization and RoPE kernels (attention is in attention.cpp). Plain
// loops the compiler vectorizes; reductions that decide accuracy (norm statistics, softmax
// sums) run in double. Each one has a scalar reference in tests/test_kernels.cpp.
#include "braid/kernels.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace braid {

void rmsnorm(const float* x, const float* w, int n, int d, float eps, float* y) {
  for (int t = 0; t < n; ++t) {
    const float* xt = x + static_cast<int64_t>(t) * d;
    float* yt = y + static_cast<int64_t>(t) * d;
    double ss = 0;
    for (int i = 0; i < d; ++i) ss += static_cast<double>(xt[i]) * xt[i];
    const float scale = static_cast<float>(1.0 / std::sqrt(ss / d + eps));
    for (int i = 0; i < d; ++i) yt[i] = xt[i] * scale * w[i];
  }
}

void layernorm(const float* x, const float* w, const float* b, int n, int d, float eps, float* y) {
  for (int t = 0; t < n; ++t) {
    const float* xt = x + static_cast<int64_t>(t) * d;
    float* yt = y + static_cast<int64_t>(t) * d;
    double sum = 0;
    for (int i = 0; i < d; ++i) sum += xt[i];
    const double mean = sum / d;
    double var = 0;
    for (int i = 0; i < d; ++i) var += (xt[i] - mean) * (xt[i] - mean);
    const float fmean = static_cast<float>(mean);
    const float scale = static_cast<float>(1.0 / std::sqrt(var / d + eps));
    for (int i = 0; i < d; ++i) {
      const float v = (xt[i] - fmean) * scale * w[i];
      yt[i] = b ? v + b[i] : v;
    }
  }
}

void rope_table(const RopeParams& p, int pos0, int n, float* cos_out, float* sin_out) {
  const int half = p.rope_dim / 2;
  std::vector<double> inv_freq(static_cast<size_t>(half));
  for (int i = 0; i < half; ++i) {
    double f = std::pow(static_cast<double>(p.theta), -2.0 * i / p.rope_dim) * p.freq_scale;
    if (p.freq_factors) f /= p.freq_factors[i];
    inv_freq[static_cast<size_t>(i)] = f;
  }
  for (int t = 0; t < n; ++t) {
    const double pos = pos0 + t;
    for (int i = 0; i < half; ++i) {
      const double a = pos * inv_freq[static_cast<size_t>(i)];
      cos_out[static_cast<int64_t>(t) * half + i] = static_cast<float>(std::cos(a));
      sin_out[static_cast<int64_t>(t) * half + i] = static_cast<float>(std::sin(a));
    }
  }
}

void rope_apply(const RopeParams& p, const float* cos_t, const float* sin_t, int n, int n_heads, float* x) {
  const int half = p.rope_dim / 2;
  // Adjacent pairs (x[2i], x[2i+1]) or, NEOX, halves (x[i], x[i + half]).
  const int stride = p.neox ? 1 : 2;
  const int other = p.neox ? half : 1;
  for (int t = 0; t < n; ++t) {
    const float* c = cos_t + static_cast<int64_t>(t) * half;
    const float* s = sin_t + static_cast<int64_t>(t) * half;
    for (int h = 0; h < n_heads; ++h) {
      float* xh = x + (static_cast<int64_t>(t) * n_heads + h) * p.head_dim;
      for (int i = 0; i < half; ++i) {
        float* a = xh + i * stride;
        float* b = a + other;
        const float x0 = *a, x1 = *b;
        *a = x0 * c[i] - x1 * s[i];
        *b = x0 * s[i] + x1 * c[i];
      }
    }
  }
}

void rope(const RopeParams& p, int pos0, int n, int n_heads, float* x) {
  const size_t size = static_cast<size_t>(n) * static_cast<size_t>(p.rope_dim / 2);
  std::vector<float> c(size), s(size);
  rope_table(p, pos0, n, c.data(), s.data());
  rope_apply(p, c.data(), s.data(), n, n_heads, x);
}

void softmax(float* x, int64_t n) {
  if (n <= 0) return;
  const float mx = *std::max_element(x, x + n);
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

void silu_mul(float* gate, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = gate[i];
    gate[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

void gelu_tanh(float* x, int64_t n) {
  constexpr float kSqrt2OverPi = 0.7978845608028654f;
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i];
    x[i] = 0.5f * v * (1.0f + std::tanh(kSqrt2OverPi * (v + 0.044715f * v * v * v)));
  }
}

void add_bias(float* y, const float* b, int n, int d) {
  for (int t = 0; t < n; ++t) {
    float* yt = y + static_cast<int64_t>(t) * d;
    for (int i = 0; i < d; ++i) yt[i] += b[i];
  }
}

void add_inplace(float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] += x[i];
}

}  // namespace braid
