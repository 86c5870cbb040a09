// Elementwise activations (SiLU-gated MLP, GELU-tanh) and the token/position embedding.
#include <cmath>

#include "tune/kernels.h"

namespace braid::tune {
namespace {

inline float sigmoid(float x) { return 1.0f / (1.0f + std::exp(-x)); }

constexpr float kGeluC = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluK = 0.044715f;

}  // namespace

void silu_mul_forward(ThreadPool& pool, float* out, const float* gu, int64_t n, int64_t f) {
  parallel_for(pool, n, 16 * f, [&](int64_t begin, int64_t end, int) {
    for (int64_t r = begin; r < end; ++r) {
      const float* g = gu + r * 2 * f;
      const float* u = g + f;
      float* o = out + r * f;
      for (int64_t i = 0; i < f; ++i) o[i] = g[i] * sigmoid(g[i]) * u[i];
    }
  });
}

void silu_mul_backward(ThreadPool& pool, float* dgu, const float* dout, const float* gu, int64_t n,
                       int64_t f) {
  parallel_for(pool, n, 16 * f, [&](int64_t begin, int64_t end, int) {
    for (int64_t r = begin; r < end; ++r) {
      const float* g = gu + r * 2 * f;
      const float* u = g + f;
      const float* d = dout + r * f;
      float* dg = dgu + r * 2 * f;
      float* du = dg + f;
      for (int64_t i = 0; i < f; ++i) {
        const float sg = sigmoid(g[i]);
        const float silu = g[i] * sg;
        dg[i] += d[i] * u[i] * (sg * (1.0f + g[i] * (1.0f - sg)));
        du[i] += d[i] * silu;
      }
    }
  });
}

void gelu_forward(ThreadPool& pool, float* out, const float* x, int64_t count) {
  parallel_for(pool, count, 24, [&](int64_t begin, int64_t end, int) {
    for (int64_t i = begin; i < end; ++i) {
      const float v = x[i];
      out[i] = 0.5f * v * (1.0f + std::tanh(kGeluC * (v + kGeluK * v * v * v)));
    }
  });
}

void gelu_backward(ThreadPool& pool, float* dx, const float* dout, const float* x, int64_t count) {
  parallel_for(pool, count, 24, [&](int64_t begin, int64_t end, int) {
    for (int64_t i = begin; i < end; ++i) {
      const float v = x[i];
      const float th = std::tanh(kGeluC * (v + kGeluK * v * v * v));
      const float dinner = kGeluC * (1.0f + 3.0f * kGeluK * v * v);
      dx[i] += dout[i] * (0.5f * (1.0f + th) + 0.5f * v * (1.0f - th * th) * dinner);
    }
  });
}

void embedding_forward(ThreadPool& pool, float* out, const int32_t* ids, const float* wte, const float* wpe,
                       int64_t n, int seq_len, int64_t c) {
  parallel_for(pool, n, c, [&](int64_t begin, int64_t end, int) {
    for (int64_t r = begin; r < end; ++r) {
      const float* e = wte + int64_t(ids[r]) * c;
      float* o = out + r * c;
      if (wpe) {
        const float* p = wpe + (r % seq_len) * c;
        for (int64_t i = 0; i < c; ++i) o[i] = e[i] + p[i];
      } else {
        for (int64_t i = 0; i < c; ++i) o[i] = e[i];
      }
    }
  });
}

void embedding_backward(ThreadPool& pool, float* dwte, float* dwpe, const float* dout, const int32_t* ids,
                        int64_t n, int seq_len, int64_t c) {
  // Split by columns: rows repeat tokens (and positions), so a row split would race.
  parallel_for(pool, c, 2 * n, [&](int64_t begin, int64_t end, int) {
    for (int64_t r = 0; r < n; ++r) {
      const float* g = dout + r * c;
      if (dwte) {
        float* d = dwte + int64_t(ids[r]) * c;
        for (int64_t i = begin; i < end; ++i) d[i] += g[i];
      }
      if (dwpe) {
        float* d = dwpe + (r % seq_len) * c;
        for (int64_t i = begin; i < end; ++i) d[i] += g[i];
      }
    }
  });
}

}  // namespace braid::tune
