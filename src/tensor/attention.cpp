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
#include <hwy/cache_control.h>
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

// Positions ahead at which the score and output loops prefetch cache rows: a head's
// keys and values sit every kv_dim floats (the other KV heads' in between), a stride
// the hardware prefetchers follow poorly, and at long contexts the cache comes from DRAM.
constexpr int64_t kAheadPositions = 8;

// Prefetches the cache lines of floats [0, count) from p.
HWY_INLINE void PrefetchRow(const float* p, int64_t count) {
  for (int64_t b = 0; b < count * static_cast<int64_t>(sizeof(float)); b += 64)
    hwy::Prefetch(reinterpret_cast<const char*>(p) + b);
}

// o[0 .. kV * N) = inv * sum_j p[j] * v_j[0 .. kV * N), v_j = v + j * stride: kV
// independent FMA chains kept in registers across the positions.
template <int kV>
HWY_INLINE void WeightedSum(DF d, const float* v, int64_t stride, int64_t len, const float* p, VF inv, float* o,
                            bool prefetch) {
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  VF a0 = hn::Zero(d), a1 = hn::Zero(d), a2 = hn::Zero(d), a3 = hn::Zero(d);
  for (int64_t j = 0; j < len; ++j) {
    const float* vj = v + j * stride;
    if (prefetch && j + kAheadPositions < len) PrefetchRow(vj + kAheadPositions * stride, kV * N);
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

// One head's softmax over its scores sc[0, len) (overwritten with the weights) and its
// output o = the weighted sum of the value rows vh + j * kv_dim. prefetch: fetch value
// rows ahead (the first head of a group; the others find them in cache).
HWY_INLINE void AttendHead(DF d, float* sc, int64_t len, const float* vh, int64_t kv_dim, int64_t hd, float* o,
                           bool prefetch) {
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
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
  int64_t c = 0;
  for (; c + 4 * N <= hd; c += 4 * N) WeightedSum<4>(d, vh + c, kv_dim, len, sc, inv, o + c, prefetch);
  if (c + 3 * N <= hd) {
    WeightedSum<3>(d, vh + c, kv_dim, len, sc, inv, o + c, prefetch);
    c += 3 * N;
  } else if (c + 2 * N <= hd) {
    WeightedSum<2>(d, vh + c, kv_dim, len, sc, inv, o + c, prefetch);
    c += 2 * N;
  } else if (c + N <= hd) {
    WeightedSum<1>(d, vh + c, kv_dim, len, sc, inv, o + c, prefetch);
    c += N;
  }
  if (c < hd) {
    VF a = hn::Zero(d);
    for (int64_t j = 0; j < len; ++j) a = hn::MulAdd(hn::Set(d, sc[j]), LoadPart(d, vh + j * kv_dim, c, hd), a);
    StorePart(d, hn::Mul(a, inv), o, c, hd);
  }
}

// Items [begin, end) of one attention call. An item is token t with query heads
// [h0, h0 + heads) of one KV head (item = (kv_head * subs + sub) * n + t, heads = group
// / subs): the heads read each cached key and value row together, so a row comes from
// memory once for all of them. Each head's arithmetic is the same whatever `subs`, so
// results do not depend on it. sc: scratch of at least heads * n_kv floats.
void AttendItems(int n_heads, int n_kv_heads, int hd, const float* q, int n, int pos0, const float* k,
                 const float* v, float* out, int subs, int64_t begin, int64_t end, float* sc) {
  const DF d;
  const int64_t q_dim = static_cast<int64_t>(n_heads) * hd;
  const int64_t kv_dim = static_cast<int64_t>(n_kv_heads) * hd;
  const int group = n_heads / n_kv_heads;
  const int heads = group / subs;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for (int64_t item = begin; item < end; ++item) {
    const int t = static_cast<int>(item % n);
    const int64_t kv_sub = item / n;
    const int kvh = static_cast<int>(kv_sub / subs);
    const int h0 = kvh * group + static_cast<int>(kv_sub % subs) * heads;
    const int64_t len = pos0 + t + 1;  // causal: positions [0, pos0 + t]
    const float* kh = k + static_cast<int64_t>(kvh) * hd;
    const float* vh = v + static_cast<int64_t>(kvh) * hd;

    // Scores of every head, position by position.
    for (int64_t j = 0; j < len; ++j) {
      if (j + kAheadPositions < len) PrefetchRow(kh + (j + kAheadPositions) * kv_dim, hd);
      for (int i = 0; i < heads; ++i) {
        const float* qh = q + t * q_dim + static_cast<int64_t>(h0 + i) * hd;
        sc[i * len + j] = Dot(d, qh, kh + j * kv_dim, hd) * scale;
      }
    }

    for (int i = 0; i < heads; ++i) {
      AttendHead(d, sc + i * len, len, vh, kv_dim, hd, out + t * q_dim + static_cast<int64_t>(h0 + i) * hd, i == 0);
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
  const int group = s.n_heads / s.n_kv_heads;
  // Query heads of a KV head go together (its cache rows are read once for all); when
  // that leaves fewer than two items per thread (decode of a model with few KV heads),
  // the group is split, at the price of reading its rows once per part.
  int subs = 1;
  while (group % (2 * subs) == 0 && int64_t{n} * s.n_kv_heads * subs < 2 * int64_t{pool.size()}) subs *= 2;
  const int64_t heads = group / subs;
  const auto kernel = HWY_DYNAMIC_DISPATCH(AttendItems);
  const size_t per_thread = static_cast<size_t>(heads) * static_cast<size_t>(n_kv);
  std::vector<float> scratch(static_cast<size_t>(pool.size()) * per_thread);
  auto work = [&](int64_t begin, int64_t end, int thread) {
    // KV-head-major items: a thread's chunk spans all tokens (early ones are cheap, late
    // ones costly), which balances causal prefill across threads.
    kernel(s.n_heads, s.n_kv_heads, s.head_dim, q, n, pos0, k, v, out, subs, begin, end,
           scratch.data() + static_cast<size_t>(thread) * per_thread);
  };
  const int64_t items = static_cast<int64_t>(n) * s.n_kv_heads * subs;
  // Tiny jobs (a short context in decode) are cheaper inline than waking the pool.
  if (static_cast<int64_t>(n_kv) * n * s.n_heads * s.head_dim < (1 << 15)) {
    work(0, items, 0);
  } else {
    pool.parallel_for(items, work);
  }
}

}  // namespace braid
#endif  // HWY_ONCE
