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
#include <vector>

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

// Query heads whose outputs are summed together (each value row loaded once for all):
// their kV accumulators each must stay in registers (32 vector registers with AVX-512
// and NEON, 16 with AVX2 / SSE, whose vectors hold fewer lanes anyway).
constexpr int kHeadsAtOnce = HWY_MAX_BYTES >= 64 ? 4 : 2;

// For heads i in [0, H): o[i][0 .. kV * N) = inv[i] * sum_j p[i][j] * v_j[0 .. kV * N),
// v_j = v + j * stride: H * kV independent FMA chains kept in registers across the
// positions. A head's chain is the same whatever H, so results do not depend on it.
// (Named accumulators, not arrays: SVE's vectors are sizeless and cannot form arrays.)
template <int kV, int H>
HWY_INLINE void WeightedSums(DF d, const float* v, int64_t stride, int64_t len, float* const* p, const float* inv,
                             float* const* o, bool prefetch) {
  static_assert(kV >= 1 && kV <= 4 && (H == 1 || H == 2 || H == 4));
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  VF a00 = hn::Zero(d), a01 = a00, a02 = a00, a03 = a00, a10 = a00, a11 = a00, a12 = a00, a13 = a00;
  VF a20 = a00, a21 = a00, a22 = a00, a23 = a00, a30 = a00, a31 = a00, a32 = a00, a33 = a00;
  for (int64_t j = 0; j < len; ++j) {
    const float* vj = v + j * stride;
    if (prefetch && j + kAheadPositions < len) PrefetchRow(vj + kAheadPositions * stride, kV * N);
    const VF w0 = hn::LoadU(d, vj);
    const VF w1 = kV > 1 ? hn::LoadU(d, vj + N) : w0;
    const VF w2 = kV > 2 ? hn::LoadU(d, vj + 2 * N) : w0;
    const VF w3 = kV > 3 ? hn::LoadU(d, vj + 3 * N) : w0;
#define BRAID_HEAD_FMAS(i)                                                \
  if constexpr (H > i) {                                                  \
    const VF pj = hn::Set(d, p[i][j]);                                    \
    a##i##0 = hn::MulAdd(pj, w0, a##i##0);                                \
    if constexpr (kV > 1) a##i##1 = hn::MulAdd(pj, w1, a##i##1);          \
    if constexpr (kV > 2) a##i##2 = hn::MulAdd(pj, w2, a##i##2);          \
    if constexpr (kV > 3) a##i##3 = hn::MulAdd(pj, w3, a##i##3);          \
  }
    BRAID_HEAD_FMAS(0)
    BRAID_HEAD_FMAS(1)
    BRAID_HEAD_FMAS(2)
    BRAID_HEAD_FMAS(3)
#undef BRAID_HEAD_FMAS
  }
#define BRAID_HEAD_STORE(i)                                                                   \
  if constexpr (H > i) {                                                                      \
    const VF s = hn::Set(d, inv[i]);                                                          \
    hn::StoreU(hn::Mul(a##i##0, s), d, o[i]);                                                 \
    if constexpr (kV > 1) hn::StoreU(hn::Mul(a##i##1, s), d, o[i] + N);                       \
    if constexpr (kV > 2) hn::StoreU(hn::Mul(a##i##2, s), d, o[i] + 2 * N);                   \
    if constexpr (kV > 3) hn::StoreU(hn::Mul(a##i##3, s), d, o[i] + 3 * N);                   \
  }
  BRAID_HEAD_STORE(0)
  BRAID_HEAD_STORE(1)
  BRAID_HEAD_STORE(2)
  BRAID_HEAD_STORE(3)
#undef BRAID_HEAD_STORE
}

// WeightedSums of `heads` heads (any number) over the vectors from element c,
// kHeadsAtOnce heads at a time; the first call prefetches the value rows for the others.
template <int kV>
HWY_INLINE void WeightedSumsOf(DF d, const float* v, int64_t stride, int64_t len, float* const* p, const float* inv,
                               float* const* o, int heads, int64_t c) {
  float* oc[kHeadsAtOnce];
  int i = 0;
  for (; i + kHeadsAtOnce <= heads; i += kHeadsAtOnce) {
    for (int m = 0; m < kHeadsAtOnce; ++m) oc[m] = o[i + m] + c;
    WeightedSums<kV, kHeadsAtOnce>(d, v + c, stride, len, p + i, inv + i, oc, i == 0);
  }
  for (; i < heads; ++i) {
    oc[0] = o[i] + c;
    WeightedSums<kV, 1>(d, v + c, stride, len, p + i, inv + i, oc, i == 0);
  }
}

// Softmax of one head's scores sc[0, len), in place (max-subtracted; lanes past len
// contribute nothing); returns 1 / (the sum of the exponentials).
HWY_INLINE float Softmax(DF d, float* sc, int64_t len) {
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
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
  return 1.0f / hn::GetLane(hn::SumOfLanes(d, vsum));
}

// The outputs of `heads` heads of one KV head: o[i] = inv[i] * the sum over positions j
// of p[i][j] * (value row vh + j * kv_dim), in whole vectors 4 (then 3, 2, 1) at a time,
// then a partial one. Value rows are prefetched ahead once, by the first heads.
HWY_INLINE void AttendOutputs(DF d, float* const* p, const float* inv, int heads, int64_t len, const float* vh,
                              int64_t kv_dim, int64_t hd, float* const* o) {
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  int64_t c = 0;
  for (; c + 4 * N <= hd; c += 4 * N) WeightedSumsOf<4>(d, vh, kv_dim, len, p, inv, o, heads, c);
  if (c + 3 * N <= hd) {
    WeightedSumsOf<3>(d, vh, kv_dim, len, p, inv, o, heads, c);
    c += 3 * N;
  } else if (c + 2 * N <= hd) {
    WeightedSumsOf<2>(d, vh, kv_dim, len, p, inv, o, heads, c);
    c += 2 * N;
  } else if (c + N <= hd) {
    WeightedSumsOf<1>(d, vh, kv_dim, len, p, inv, o, heads, c);
    c += N;
  }
  if (c < hd) {
    for (int i = 0; i < heads; ++i) {
      VF a = hn::Zero(d);
      for (int64_t j = 0; j < len; ++j) a = hn::MulAdd(hn::Set(d, p[i][j]), LoadPart(d, vh + j * kv_dim, c, hd), a);
      StorePart(d, hn::Mul(a, hn::Set(d, inv[i])), o[i], c, hd);
    }
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
  std::vector<float*> p(static_cast<size_t>(heads)), o(p.size());
  std::vector<float> inv(p.size());
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

    // Softmax of every head, then their outputs together.
    for (int i = 0; i < heads; ++i) {
      p[i] = sc + i * len;
      inv[i] = Softmax(d, p[i], len);
      o[i] = out + t * q_dim + static_cast<int64_t>(h0 + i) * hd;
    }
    AttendOutputs(d, p.data(), inv.data(), heads, len, vh, kv_dim, hd, o.data());
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
