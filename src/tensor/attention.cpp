// Causal grouped-query attention over the KV cache (braid/kernels.h), with Highway
// (dynamic dispatch: the widest SIMD target of the running CPU).
//
// Every (token, head) is computed on its own by the same sequence of operations,
// whatever the batch it came in, so prefill and decode give the same outputs bit for bit
// (recovery replays a sequence as one batch and must rebuild decode's cache exactly).
//
// Why not plain loops: compiled for baseline x86-64 they ran on 128-bit vectors without
// FMA, storing the output row after every cached position, and attention took over a
// third of a 512-token prefill.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "tensor/attention.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/highway.h>
#include <hwy/contrib/math/math-inl.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

HWY_BEFORE_NAMESPACE();
namespace braid {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// Lanes [i, min(i + N, n)) of p, zeros past n (a partial vector goes through a buffer:
// a masked load may be emulated with a full one on some targets, reading past the end).
HWY_INLINE VF LoadPart(DF d, const float* p, int64_t i, int64_t n) {
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  if (i + N <= n) return hn::LoadU(d, p + i);
  HWY_ALIGN float buf[HWY_MAX_BYTES / sizeof(float)] = {};
  for (int64_t j = i; j < n; ++j) buf[j - i] = p[j];
  return hn::Load(d, buf);
}

// Stores lanes [i, min(i + N, n)) of v to p.
HWY_INLINE void StorePart(DF d, VF v, float* p, int64_t i, int64_t n) {
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  if (i + N <= n) {
    hn::StoreU(v, d, p + i);
    return;
  }
  HWY_ALIGN float buf[HWY_MAX_BYTES / sizeof(float)];
  hn::Store(v, d, buf);
  for (int64_t j = i; j < n; ++j) p[j] = buf[j - i];
}

// sum over the head's elements of a[i] * b[i]: one vector FMA chain (full vectors, then
// a zero-padded partial one), then a horizontal sum.
HWY_INLINE float Dot(DF d, const float* a, const float* b, int64_t hd) {
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  VF acc = hn::Zero(d);
  int64_t i = 0;
  for (; i + N <= hd; i += N) acc = hn::MulAdd(hn::LoadU(d, a + i), hn::LoadU(d, b + i), acc);
  if (i < hd) acc = hn::MulAdd(LoadPart(d, a, i, hd), LoadPart(d, b, i, hd), acc);
  return hn::GetLane(hn::SumOfLanes(d, acc));
}

// o[0 .. kV * N) = inv * sum_j p[j] * v_j[0 .. kV * N), v_j = v + j * stride: kV
// independent FMA chains kept in registers across the positions.
template <int kV>
HWY_INLINE void WeightedSum(DF d, const float* v, int64_t stride, int64_t len, const float* p, VF inv, float* o) {
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  VF a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
  for (int64_t j = 0; j < len; ++j) {
    const float* vj = v + j * stride;
    const VF pj = hn::Set(d, p[j]);
    a0 = hn::MulAdd(pj, hn::LoadU(d, vj), a0);
    if constexpr (kV > 1) a1 = hn::MulAdd(pj, hn::LoadU(d, vj + N), a1);
    if constexpr (kV > 2) a2 = hn::MulAdd(pj, hn::LoadU(d, vj + 2 * N), a2);
    if constexpr (kV > 3) a3 = hn::MulAdd(pj, hn::LoadU(d, vj + 3 * N), a3);
  }
  hn::StoreU(hn::Mul(a0, inv), d, o);
  if constexpr (kV > 1) hn::StoreU(hn::Mul(a1, inv), d, o + N);
  if constexpr (kV > 2) hn::StoreU(hn::Mul(a2, inv), d, o + 2 * N);
  if constexpr (kV > 3) hn::StoreU(hn::Mul(a3, inv), d, o + 3 * N);
}

// Items [begin, end) (head-major: item = head * n + token) of one attention call.
// sc: scratch of at least n_kv floats.
void AttendItems(int n_heads, int n_kv_heads, int hd, const float* q, int n, int pos0, const float* k,
                 const float* v, float* out, int64_t begin, int64_t end, float* sc) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const int64_t q_dim = static_cast<int64_t>(n_heads) * hd;
  const int64_t kv_dim = static_cast<int64_t>(n_kv_heads) * hd;
  const int group = n_heads / n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for (int64_t item = begin; item < end; ++item) {
    const int h = static_cast<int>(item / n);
    const int t = static_cast<int>(item % n);
    const int64_t len = pos0 + t + 1;  // causal: positions [0, pos0 + t]
    const float* qh = q + t * q_dim + static_cast<int64_t>(h) * hd;
    const float* kh = k + static_cast<int64_t>(h / group) * hd;
    const float* vh = v + static_cast<int64_t>(h / group) * hd;

    for (int64_t j = 0; j < len; ++j) sc[j] = Dot(d, qh, kh + j * kv_dim, hd) * scale;

    // Softmax, max-subtracted; lanes past len contribute nothing.
    VF vmax = hn::Set(d, -HUGE_VALF);
    for (int64_t j = 0; j < len; j += N) {
      const VF s = LoadPart(d, sc, j, len);
      vmax = hn::IfThenElse(hn::FirstN(d, static_cast<size_t>(std::min(N, len - j))), hn::Max(vmax, s), vmax);
    }
    const VF mx = hn::Set(d, hn::GetLane(hn::MaxOfLanes(d, vmax)));
    VF vsum = hn::Zero(d);
    for (int64_t j = 0; j < len; j += N) {
      const auto valid = hn::FirstN(d, static_cast<size_t>(std::min(N, len - j)));
      const VF e = hn::IfThenElseZero(valid, hn::Exp(d, hn::Sub(LoadPart(d, sc, j, len), mx)));
      StorePart(d, e, sc, j, len);
      vsum = hn::Add(vsum, e);
    }
    const VF inv = hn::Set(d, 1.0f / hn::GetLane(hn::SumOfLanes(d, vsum)));

    // Output: whole vectors 4 (then 3, 2, 1) at a time, then a partial one.
    float* o = out + t * q_dim + static_cast<int64_t>(h) * hd;
    int64_t c = 0;
    for (; c + 4 * N <= hd; c += 4 * N) WeightedSum<4>(d, vh + c, kv_dim, len, sc, inv, o + c);
    if (c + 3 * N <= hd) {
      WeightedSum<3>(d, vh + c, kv_dim, len, sc, inv, o + c);
      c += 3 * N;
    } else if (c + 2 * N <= hd) {
      WeightedSum<2>(d, vh + c, kv_dim, len, sc, inv, o + c);
      c += 2 * N;
    } else if (c + N <= hd) {
      WeightedSum<1>(d, vh + c, kv_dim, len, sc, inv, o + c);
      c += N;
    }
    if (c < hd) {
      VF a = hn::Zero(d);
      for (int64_t j = 0; j < len; ++j) a = hn::MulAdd(hn::Set(d, sc[j]), LoadPart(d, vh + j * kv_dim, c, hd), a);
      StorePart(d, hn::Mul(a, inv), o, c, hd);
    }
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace braid
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <vector>

#include "braid/kernels.h"
#include "braid/thread_pool.h"

namespace braid {

HWY_EXPORT(AttendItems);

void attention(const AttentionShape& s, const float* q, int n, int pos0, const float* k, const float* v,
               float* out, ThreadPool& pool) {
  const int n_kv = pos0 + n;
  const auto kernel = HWY_DYNAMIC_DISPATCH(AttendItems);
  std::vector<float> scratch(static_cast<size_t>(pool.size()) * static_cast<size_t>(n_kv));
  auto work = [&](int64_t begin, int64_t end, int thread) {
    // Head-major items: a thread's chunk spans all tokens (early ones are cheap, late
    // ones costly), which balances causal prefill across threads.
    kernel(s.n_heads, s.n_kv_heads, s.head_dim, q, n, pos0, k, v, out, begin, end,
           scratch.data() + static_cast<size_t>(thread) * static_cast<size_t>(n_kv));
  };
  const int64_t items = static_cast<int64_t>(n) * s.n_heads;
  // Tiny jobs (a short context in decode) are cheaper inline than waking the pool.
  if (static_cast<int64_t>(n_kv) * items * s.head_dim < (1 << 15)) {
    work(0, items, 0);
  } else {
    pool.parallel_for(items, work);
  }
}

}  // namespace braid
#endif  // HWY_ONCE
