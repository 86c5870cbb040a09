// Dense layers for training, out = x . w^T + b, and their backward, with Highway
// (dynamic dispatch: the widest SIMD of the running CPU).
//
// Every output element is produced by one fixed sequence of operations, whichever
// thread computes it and whether it is computed alone or in a register block with its
// neighbours; that is what keeps gradients bit-identical across thread counts:
// - forward: out[r][o] = two vector accumulators over x[r] . w[o], one horizontal sum,
//   then a scalar tail, plus the bias;
// - dx[r][i] += g[r][o] * w[o][i] for o ascending (fused multiply-adds where the CPU has
//   them, one element at a time in the scalar tail);
// - dw[o][i] += g[r][o] * x[r][i] for r ascending, likewise.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "tune/kernels_matmul.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>

#include <algorithm>
#include <cstdint>

HWY_BEFORE_NAMESPACE();
namespace braid::tune {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

HWY_INLINE float Dot1(const float* w, const float* x, int64_t k) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  VF a0 = hn::Zero(d), a1 = hn::Zero(d);
  int64_t i = 0;
  for (; i + 2 * N <= k; i += 2 * N) {
    a0 = hn::MulAdd(hn::LoadU(d, w + i), hn::LoadU(d, x + i), a0);
    a1 = hn::MulAdd(hn::LoadU(d, w + i + N), hn::LoadU(d, x + i + N), a1);
  }
  if (i + N <= k) {
    a0 = hn::MulAdd(hn::LoadU(d, w + i), hn::LoadU(d, x + i), a0);
    i += N;
  }
  float s = hn::GetLane(hn::SumOfLanes(d, hn::Add(a0, a1)));
  for (; i < k; ++i) s += w[i] * x[i];
  return s;
}

// Four rows of x (stride xs) against one weight row, which is loaded once per step.
// Each row's result equals Dot1's.
HWY_INLINE void Dot4(const float* w, const float* x, int64_t xs, int64_t k, float* out) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const float* x0 = x;
  const float* x1 = x + xs;
  const float* x2 = x + 2 * xs;
  const float* x3 = x + 3 * xs;
  VF a0 = hn::Zero(d), a1 = hn::Zero(d), b0 = hn::Zero(d), b1 = hn::Zero(d);
  VF c0 = hn::Zero(d), c1 = hn::Zero(d), e0 = hn::Zero(d), e1 = hn::Zero(d);
  int64_t i = 0;
  for (; i + 2 * N <= k; i += 2 * N) {
    const VF w0 = hn::LoadU(d, w + i), w1 = hn::LoadU(d, w + i + N);
    a0 = hn::MulAdd(w0, hn::LoadU(d, x0 + i), a0);
    a1 = hn::MulAdd(w1, hn::LoadU(d, x0 + i + N), a1);
    b0 = hn::MulAdd(w0, hn::LoadU(d, x1 + i), b0);
    b1 = hn::MulAdd(w1, hn::LoadU(d, x1 + i + N), b1);
    c0 = hn::MulAdd(w0, hn::LoadU(d, x2 + i), c0);
    c1 = hn::MulAdd(w1, hn::LoadU(d, x2 + i + N), c1);
    e0 = hn::MulAdd(w0, hn::LoadU(d, x3 + i), e0);
    e1 = hn::MulAdd(w1, hn::LoadU(d, x3 + i + N), e1);
  }
  if (i + N <= k) {
    const VF w0 = hn::LoadU(d, w + i);
    a0 = hn::MulAdd(w0, hn::LoadU(d, x0 + i), a0);
    b0 = hn::MulAdd(w0, hn::LoadU(d, x1 + i), b0);
    c0 = hn::MulAdd(w0, hn::LoadU(d, x2 + i), c0);
    e0 = hn::MulAdd(w0, hn::LoadU(d, x3 + i), e0);
    i += N;
  }
  float s0 = hn::GetLane(hn::SumOfLanes(d, hn::Add(a0, a1)));
  float s1 = hn::GetLane(hn::SumOfLanes(d, hn::Add(b0, b1)));
  float s2 = hn::GetLane(hn::SumOfLanes(d, hn::Add(c0, c1)));
  float s3 = hn::GetLane(hn::SumOfLanes(d, hn::Add(e0, e1)));
  for (; i < k; ++i) {
    s0 += w[i] * x0[i];
    s1 += w[i] * x1[i];
    s2 += w[i] * x2[i];
    s3 += w[i] * x3[i];
  }
  out[0] = s0;
  out[1] = s1;
  out[2] = s2;
  out[3] = s3;
}

constexpr int64_t kOutBlock = 64;  // weight rows kept in cache while token rows stream by
constexpr int64_t kRowBlock = 64;  // token rows kept in cache for the weight gradient

// out[r][o] for rows [r0, r1).
void ForwardRows(float* out, const float* x, const float* w, const float* b, int64_t r0, int64_t r1,
                 int64_t in_dim, int64_t out_dim) {
  for (int64_t o0 = 0; o0 < out_dim; o0 += kOutBlock) {
    const int64_t o1 = std::min(out_dim, o0 + kOutBlock);
    int64_t r = r0;
    for (; r + 4 <= r1; r += 4) {
      for (int64_t o = o0; o < o1; ++o) {
        float res[4];
        Dot4(w + o * in_dim, x + r * in_dim, in_dim, in_dim, res);
        const float bias = b ? b[o] : 0.0f;
        for (int k = 0; k < 4; ++k) out[(r + k) * out_dim + o] = res[k] + bias;
      }
    }
    for (; r < r1; ++r)
      for (int64_t o = o0; o < o1; ++o)
        out[r * out_dim + o] = Dot1(w + o * in_dim, x + r * in_dim, in_dim) + (b ? b[o] : 0.0f);
  }
}

// One dx row over weight rows [o0, o1): groups of four, then single rows, with the same
// per-element sequence of multiply-adds either way.
HWY_INLINE void DxRow(float* HWY_RESTRICT dx, const float* g, const float* w, int64_t o0, int64_t o1,
                      int64_t in_dim) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  int64_t o = o0;
  for (; o + 4 <= o1; o += 4) {
    const float* w0 = w + o * in_dim;
    const float* w1 = w0 + in_dim;
    const float* w2 = w1 + in_dim;
    const float* w3 = w2 + in_dim;
    const VF g0 = hn::Set(d, g[o]), g1 = hn::Set(d, g[o + 1]), g2 = hn::Set(d, g[o + 2]),
             g3 = hn::Set(d, g[o + 3]);
    int64_t i = 0;
    for (; i + N <= in_dim; i += N) {
      VF acc = hn::LoadU(d, dx + i);
      acc = hn::MulAdd(g0, hn::LoadU(d, w0 + i), acc);
      acc = hn::MulAdd(g1, hn::LoadU(d, w1 + i), acc);
      acc = hn::MulAdd(g2, hn::LoadU(d, w2 + i), acc);
      acc = hn::MulAdd(g3, hn::LoadU(d, w3 + i), acc);
      hn::StoreU(acc, d, dx + i);
    }
    for (; i < in_dim; ++i) {
      float s = dx[i];
      s += g[o] * w0[i];
      s += g[o + 1] * w1[i];
      s += g[o + 2] * w2[i];
      s += g[o + 3] * w3[i];
      dx[i] = s;
    }
  }
  for (; o < o1; ++o) {
    const float* w0 = w + o * in_dim;
    const VF g0 = hn::Set(d, g[o]);
    int64_t i = 0;
    for (; i + N <= in_dim; i += N)
      hn::StoreU(hn::MulAdd(g0, hn::LoadU(d, w0 + i), hn::LoadU(d, dx + i)), d, dx + i);
    for (; i < in_dim; ++i) dx[i] += g[o] * w0[i];
  }
}

void DxRows(float* dx, const float* dout, const float* w, int64_t r0, int64_t r1, int64_t in_dim,
            int64_t out_dim) {
  for (int64_t o0 = 0; o0 < out_dim; o0 += kOutBlock) {
    const int64_t o1 = std::min(out_dim, o0 + kOutBlock);
    for (int64_t r = r0; r < r1; ++r) DxRow(dx + r * in_dim, dout + r * out_dim, w, o0, o1, in_dim);
  }
}

// dw rows [o_begin, o_end): a register tile of four weight rows x one vector of columns
// accumulates a block of token rows before it is stored.
void DwRows(float* dw, const float* dout, const float* x, int64_t n, int64_t o_begin, int64_t o_end,
            int64_t in_dim, int64_t out_dim) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  for (int64_t r0 = 0; r0 < n; r0 += kRowBlock) {
    const int64_t r1 = std::min(n, r0 + kRowBlock);
    int64_t o = o_begin;
    for (; o + 4 <= o_end; o += 4) {
      float* w0 = dw + o * in_dim;
      float* w1 = w0 + in_dim;
      float* w2 = w1 + in_dim;
      float* w3 = w2 + in_dim;
      int64_t i = 0;
      for (; i + N <= in_dim; i += N) {
        VF a0 = hn::LoadU(d, w0 + i), a1 = hn::LoadU(d, w1 + i), a2 = hn::LoadU(d, w2 + i),
           a3 = hn::LoadU(d, w3 + i);
        for (int64_t r = r0; r < r1; ++r) {
          const VF xv = hn::LoadU(d, x + r * in_dim + i);
          const float* g = dout + r * out_dim + o;
          a0 = hn::MulAdd(hn::Set(d, g[0]), xv, a0);
          a1 = hn::MulAdd(hn::Set(d, g[1]), xv, a1);
          a2 = hn::MulAdd(hn::Set(d, g[2]), xv, a2);
          a3 = hn::MulAdd(hn::Set(d, g[3]), xv, a3);
        }
        hn::StoreU(a0, d, w0 + i);
        hn::StoreU(a1, d, w1 + i);
        hn::StoreU(a2, d, w2 + i);
        hn::StoreU(a3, d, w3 + i);
      }
      for (; i < in_dim; ++i)
        for (int64_t r = r0; r < r1; ++r) {
          const float xv = x[r * in_dim + i];
          const float* g = dout + r * out_dim + o;
          w0[i] += g[0] * xv;
          w1[i] += g[1] * xv;
          w2[i] += g[2] * xv;
          w3[i] += g[3] * xv;
        }
    }
    for (; o < o_end; ++o) {
      float* w0 = dw + o * in_dim;
      int64_t i = 0;
      for (; i + N <= in_dim; i += N) {
        VF a0 = hn::LoadU(d, w0 + i);
        for (int64_t r = r0; r < r1; ++r)
          a0 = hn::MulAdd(hn::Set(d, dout[r * out_dim + o]), hn::LoadU(d, x + r * in_dim + i), a0);
        hn::StoreU(a0, d, w0 + i);
      }
      for (; i < in_dim; ++i)
        for (int64_t r = r0; r < r1; ++r) w0[i] += dout[r * out_dim + o] * x[r * in_dim + i];
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace braid::tune
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include "tune/kernels.h"

namespace braid::tune {

HWY_EXPORT(ForwardRows);
HWY_EXPORT(DxRows);
HWY_EXPORT(DwRows);

void matmul_forward(ThreadPool& pool, float* out, const float* x, const float* w, const float* b, int64_t n,
                    int64_t in_dim, int64_t out_dim) {
  parallel_for(pool, n, 2 * in_dim * out_dim, [&](int64_t begin, int64_t end, int) {
    HWY_DYNAMIC_DISPATCH(ForwardRows)(out, x, w, b, begin, end, in_dim, out_dim);
  });
}

void matmul_backward(ThreadPool& pool, float* dx, float* dw, float* db, const float* dout, const float* x,
                     const float* w, int64_t n, int64_t in_dim, int64_t out_dim) {
  if (dx) {
    parallel_for(pool, n, 2 * in_dim * out_dim, [&](int64_t begin, int64_t end, int) {
      HWY_DYNAMIC_DISPATCH(DxRows)(dx, dout, w, begin, end, in_dim, out_dim);
    });
  }
  if (dw || db) {
    // Each thread owns a range of weight rows (output features): no two write the same.
    parallel_for(pool, out_dim, 2 * n * in_dim + n, [&](int64_t begin, int64_t end, int) {
      if (dw) HWY_DYNAMIC_DISPATCH(DwRows)(dw, dout, x, n, begin, end, in_dim, out_dim);
      if (db) {
        for (int64_t o = begin; o < end; ++o) {
          float s = 0.0f;
          for (int64_t r = 0; r < n; ++r) s += dout[r * out_dim + o];
          db[o] += s;
        }
      }
    });
  }
}

}  // namespace braid::tune
#endif  // HWY_ONCE
