// matmul for F32 / F16 / BF16 weights with Highway (dynamic dispatch: the best SIMD
// target of the running CPU), and dispatch to braid/quant.h for block-quantized weights.
//
// Bit-identity across batch sizes: a token's dot product with a row always runs the same
// operations (one vector accumulator over the full vectors, a zero-padded final vector,
// then one horizontal sum), whether it is computed alone or in a tile of rows and tokens
// sharing their loads (see Tile).

// Tokens per prefill tile: shared by every target's kernels and by matmul's packing of
// the input (outside the per-target code, so defined once for the file).
#ifndef BRAID_MATMUL_TILE_TOKENS
#define BRAID_MATMUL_TILE_TOKENS 6
#endif

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "tensor/matmul.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/cache_control.h>
#include <hwy/highway.h>

#include <algorithm>
#include <cstring>

#include "braid/dtype.h"

HWY_BEFORE_NAMESPACE();
namespace braid {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// Weight row readers: `vec` loads Lanes(d) weights as f32, `at` one weight.
struct RowF32 {
  const float* p;
  HWY_INLINE VF vec(DF d, int64_t i) const { return hn::LoadU(d, p + i); }
  HWY_INLINE float at(int64_t i) const { return p[i]; }
};
struct RowF16 {
  const hwy::float16_t* p;
  HWY_INLINE VF vec(DF d, int64_t i) const {
    const hn::Rebind<hwy::float16_t, DF> dh;
    return hn::PromoteTo(d, hn::LoadU(dh, p + i));
  }
  HWY_INLINE float at(int64_t i) const {
    uint16_t h;
    std::memcpy(&h, p + i, 2);
    return f16_to_f32(h);
  }
};
struct RowBF16 {
  const hwy::bfloat16_t* p;
  HWY_INLINE VF vec(DF d, int64_t i) const {
    const hn::Rebind<hwy::bfloat16_t, DF> dh;
    return hn::PromoteTo(d, hn::LoadU(dh, p + i));
  }
  HWY_INLINE float at(int64_t i) const {
    uint16_t h;
    std::memcpy(&h, p + i, 2);
    return bf16_to_f32(h);
  }
};

constexpr size_t kMaxLanes = HWY_MAX_BYTES / sizeof(float);

// The last k % Lanes weights (as f32) and inputs, zero-padded to one full vector.
template <class Row>
HWY_INLINE VF TailW(DF d, const Row& w, int64_t i0, int64_t k) {
  HWY_ALIGN float buf[kMaxLanes] = {};
  for (int64_t i = i0; i < k; ++i) buf[i - i0] = w.at(i);
  return hn::Load(d, buf);
}
HWY_INLINE VF TailX(DF d, const float* x, int64_t i0, int64_t k) {
  HWY_ALIGN float buf[kMaxLanes] = {};
  for (int64_t i = i0; i < k; ++i) buf[i - i0] = x[i];
  return hn::Load(d, buf);
}

// Decode streams each weight from DRAM once; the hardware prefetchers alone stall at
// page boundaries, so fetch this far ahead (as the quantized kernels do, see
// quant_tile-inl.h), past the row's end into the next rows, which follow it in memory.
constexpr int64_t kPrefetchAheadBytes = 24576;

// The canonical order of one (row, token) dot product, which every kernel below follows
// so that a token gets the same bits alone (decode) or in a prompt (prefill), on any
// thread count: one vector accumulator, fused multiply-adds over the full vectors in
// order, then the zero-padded last partial vector, then one horizontal sum. One
// accumulator (not two) leaves registers for tiles of kTileRows rows x kTileTokens
// tokens: each weight vector loaded (and converted from f16) once for 6 tokens and each
// input vector once for 4 rows, instead of the loads outnumbering the multiply-adds.

// The horizontal sum that ends every dot product. On 512-bit x86 targets it is spelled
// out (the tree of GCC's _mm512_reduce_add_ps, which Highway's SumOfLanes calls: lanes
// i and i+8, then i and i+4, then i and i+2, then 0 and 1) so that SumsOf16 can form
// the same sums for 16 accumulators at once; elsewhere it is SumOfLanes.
// (This file is compiled once per target: the macro is set again in each pass.)
#undef BRAID_MATMUL_SUMS_512
#if HWY_ARCH_X86 && (HWY_TARGET == HWY_AVX3 || HWY_TARGET == HWY_AVX3_DL)
#define BRAID_MATMUL_SUMS_512 1
HWY_INLINE float SumOf(DF, VF v) {
  const __m512 x = v.raw;
  const __m256 h8 = _mm256_add_ps(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)),
                                  _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 0)));
  const __m128 h4 = _mm_add_ps(_mm256_extractf128_ps(h8, 1), _mm256_castps256_ps128(h8));
  const __m128 h2 = _mm_add_ps(h4, _mm_permute_ps(h4, 0x4e));  // lanes (2, 3, 0, 1)
  return _mm_cvtss_f32(h2) + _mm_cvtss_f32(_mm_movehdup_ps(h2));
}

// SumOf of 16 accumulators in one pass (a transposed tree: each step pairs two vectors'
// halves in one shuffle): out[p] = SumOf(v[p]), bit for bit. 45 shuffles and adds
// for 16 sums, against 9 per SumOf: a prefill tile ends with 24 sums, which took ~7% of
// an f16 prefill one at a time.
HWY_INLINE void SumsOf16(const VF* v, float* out) {
  __m512 a[8], b[4], c[2];
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {  // lanes i + 8: [v[2i] 0-7 | v[2i+1] 0-7]
    const __m512 lo = _mm512_shuffle_f32x4(v[2 * i].raw, v[2 * i + 1].raw, 0x44);
    const __m512 hi = _mm512_shuffle_f32x4(v[2 * i].raw, v[2 * i + 1].raw, 0xee);
    a[i] = _mm512_add_ps(hi, lo);
  }
#pragma GCC unroll 4
  for (int i = 0; i < 4; ++i) {  // lanes i + 4: 128-bit block q holds v[4i + q] 0-3
    const __m512 lo = _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0x88);
    const __m512 hi = _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0xdd);
    b[i] = _mm512_add_ps(hi, lo);
  }
#pragma GCC unroll 2
  for (int i = 0; i < 2; ++i) {  // lanes i + 2: block q holds v[8i + q] 0-1, v[8i + 4 + q] 0-1
    const __m512d x = _mm512_castps_pd(b[2 * i]), y = _mm512_castps_pd(b[2 * i + 1]);
    c[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
  }
  // lanes 0 + 1: lane 4q + m holds the sum of v[4m + q].
  const __m512 s = _mm512_add_ps(_mm512_shuffle_ps(c[0], c[1], 0x88), _mm512_shuffle_ps(c[0], c[1], 0xdd));
  HWY_ALIGN float lanes[16];
  _mm512_store_ps(lanes, s);
#pragma GCC unroll 4
  for (int q = 0; q < 4; ++q) {
#pragma GCC unroll 4
    for (int m = 0; m < 4; ++m) out[4 * m + q] = lanes[4 * q + m];
  }
}
#else
HWY_INLINE float SumOf(DF d, VF v) { return hn::GetLane(hn::SumOfLanes(d, v)); }
#endif

// The last k % Lanes weights of row w and inputs of x from i0, zero-padded, multiplied
// into acc.
template <class Row>
HWY_INLINE VF TailMulAdd(DF d, const Row& w, const float* x, int64_t i0, int64_t k, VF acc) {
  return hn::MulAdd(TailW(d, w, i0, k), TailX(d, x, i0, k), acc);
}

constexpr int kTileRows = 4;
constexpr int kTileTokens = BRAID_MATMUL_TILE_TOKENS;
// Cache lines of the next row block fetched ahead per prefill tile (see MatmulRowsT).
constexpr int64_t kPrefetchLines = 8;
// Elements per span: a tile's inputs for one span (6 tokens x 4 KiB) stay in L1 while
// the rows of a 32-row block pass over them; accumulators wait in `state` between spans.
// The inputs are packed span by span (PackInputs): 6 rows of x lie a multiple of 4 KiB
// apart and would share a few of L1's sets with the weight rows (+10-25% for an f16
// gate/up matmul of 64 tokens on one core).
// A multiple of Lanes on every target. (Spans do not change bits: each pair's sequence
// of vector steps is the same however it is cut.)
// Each row block reads all the prompt's packed inputs once (512 KiB for 64 tokens of
// 2048): with blocks of 16 rows and spans of 512, two threads reading them from L2/L3
// scaled only 1.75x over one. Blocks of 32 and spans of 1024 halve those reads: f16,
// 64 tokens, 2 threads, in-process A/B over 30 alternating rounds: 71-72 -> 77-81
// GMAC/s for gate/up (5632 x 2048), 71 -> 77 for down (2048 x 5632), 73 -> 81 for the
// output (32000 x 2048); one thread +3-12%. Blocks of 64 or 128 and spans of 2048 were
// no better.
constexpr int64_t kSpan = 1024;
constexpr int64_t kRowBlock = 32;

// Sanitizer builds (the ASan unit tests, the fuzz targets) take the plain loop below:
// with ASan and UBSan, the unrolled tiles of every T made this one file take 4-9 minutes
// to compile instead of 30 s. The Release tests check the tiles against it bit for bit.
#if defined(__SANITIZE_ADDRESS__)
#define BRAID_MATMUL_PLAIN_LOOP 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BRAID_MATMUL_PLAIN_LOOP 1
#endif
#endif

#if HWY_HAVE_SCALABLE || defined(BRAID_MATMUL_PLAIN_LOOP)
// Sizeless vectors (SVE, RVV) cannot form the arrays of the tiles below: one (row,
// token) pair at a time, the same operations in the same order.
template <int R, int T, class Row>
HWY_INLINE void Tile(const Row* w, const float* x, int64_t ldx, int64_t k, int64_t i0, int64_t i1, float* state,
                     float* y, int64_t rows) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) {
      float* st = state + (r * T + t) * N;
      const float* xt = x + t * ldx;
      VF acc = i0 == 0 ? hn::Zero(d) : hn::Load(d, st);
      int64_t i = i0;
      for (; i + N <= i1; i += N) {
        if (T == 1) hwy::Prefetch(reinterpret_cast<const char*>(w[r].p + i) + kPrefetchAheadBytes);
        acc = hn::MulAdd(w[r].vec(d, i), hn::LoadU(d, xt + i), acc);
      }
      if (i1 < k) {
        hn::Store(acc, d, st);
      } else {
        if (i < k) acc = TailMulAdd(d, w[r], xt, i, k, acc);
        y[t * rows + r] = SumOf(d, acc);
      }
    }
  }
}
#else
// R rows x T tokens over the elements [i0, i1) (a multiple of Lanes from i0, or up to
// k); token t's element i is x[t * ldx + i]. Accumulators start at zero in the first
// span (i0 == 0), else come from `state` (R*T vectors); they go back there, or, when
// i1 == k, finish with the tail and their horizontal sums into y[t * rows + r].
template <int R, int T, class Row>
HWY_INLINE void Tile(const Row* w, const float* x, int64_t ldx, int64_t k, int64_t i0, int64_t i1, float* state,
                     float* y, int64_t rows) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  VF acc[R][T];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) acc[r][t] = i0 == 0 ? hn::Zero(d) : hn::Load(d, state + (r * T + t) * N);
  }
  int64_t i = i0;
  for (; i + N <= i1; i += N) {
    VF wv[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      // One token: decode, streaming from DRAM.
      if (T == 1) hwy::Prefetch(reinterpret_cast<const char*>(w[r].p + i) + kPrefetchAheadBytes);
      wv[r] = w[r].vec(d, i);
    }
#pragma GCC unroll 8
    for (int t = 0; t < T; ++t) {
      const VF xv = hn::LoadU(d, x + t * ldx + i);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) acc[r][t] = hn::MulAdd(wv[r], xv, acc[r][t]);
    }
  }
  if (i1 < k) {
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) hn::Store(acc[r][t], d, state + (r * T + t) * N);
    }
    return;
  }
  if (i < k) {
    for (int r = 0; r < R; ++r) {
      for (int t = 0; t < T; ++t) acc[r][t] = TailMulAdd(d, w[r], x + t * ldx, i, k, acc[r][t]);
    }
  }
#ifdef BRAID_MATMUL_SUMS_512
  if constexpr (R * T >= 8) {
    // Accumulator p = r * T + t, in groups of 16 (a last partial group padded with zero
    // vectors, whose sums are not stored).
    constexpr int kFull = R * T / 16, kLeft = R * T % 16;
    const VF* flat = &acc[0][0];
    float sums[(kFull + 1) * 16];
    for (int g = 0; g < kFull; ++g) SumsOf16(flat + 16 * g, sums + 16 * g);
    if constexpr (kLeft > 0) {
      VF last[16];
#pragma GCC unroll 16
      for (int p = 0; p < 16; ++p) last[p] = p < kLeft ? flat[16 * kFull + p] : hn::Zero(d);
      SumsOf16(last, sums + 16 * kFull);
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
#pragma GCC unroll 8
      for (int t = 0; t < T; ++t) y[t * rows + r] = sums[r * T + t];
    }
    return;
  }
#endif
  for (int r = 0; r < R; ++r) {
    for (int t = 0; t < T; ++t) y[t * rows + r] = SumOf(d, acc[r][t]);
  }
}
#endif

// Tile<R, T> for T = 1..kTileTokens chosen at run time.
static_assert(kTileTokens == 6, "TileOf lists the tile sizes 1 to 5 and then kTileTokens");
template <int R, class Row>
HWY_INLINE void TileOf(int T, const Row* w, const float* x, int64_t ldx, int64_t k, int64_t i0, int64_t i1,
                       float* state, float* y, int64_t rows) {
  switch (T) {
    case 1:
      return Tile<R, 1>(w, x, ldx, k, i0, i1, state, y, rows);
    case 2:
      return Tile<R, 2>(w, x, ldx, k, i0, i1, state, y, rows);
    case 3:
      return Tile<R, 3>(w, x, ldx, k, i0, i1, state, y, rows);
    case 4:
      return Tile<R, 4>(w, x, ldx, k, i0, i1, state, y, rows);
    case 5:
      return Tile<R, 5>(w, x, ldx, k, i0, i1, state, y, rows);
    default:
      return Tile<R, kTileTokens>(w, x, ldx, k, i0, i1, state, y, rows);
  }
}

// The span length for a group of T tokens: one token's input fits L1 whole, so each row
// then streams start to end (decode).
HWY_INLINE int64_t SpanFor(int T, int64_t k) { return T == 1 ? k : kSpan; }

// x[n][k] rearranged as the tiles read it (MatmulRowsT): for each group of up to 6
// tokens from t0 and each span [i0, i1), the group's T token rows of that span one after
// another, from PackedSpan(xp, t0, T, k, i0). For one token this is x itself.
template <class F>  // float or const float
HWY_INLINE F* PackedSpan(F* xp, int t0, int T, int64_t k, int64_t i0) {
  return xp + static_cast<int64_t>(t0) * k + T * i0;
}

void PackInputs(const float* x, int n, int64_t k, int64_t g0, int64_t g1, float* xp) {
  for (int64_t g = g0; g < g1; ++g) {
    const int t0 = static_cast<int>(g) * kTileTokens;
    const int T = std::min(kTileTokens, n - t0);
    const int64_t span = SpanFor(T, k);
    for (int64_t i0 = 0; i0 < k; i0 += span) {
      const int64_t len = std::min(span, k - i0);
      for (int t = 0; t < T; ++t)
        std::memcpy(PackedSpan(xp, t0, T, k, i0) + t * len, x + (t0 + t) * k + i0,
                    sizeof(float) * static_cast<size_t>(len));
    }
  }
}

// Rows [r0, r1) of y[n][rows] = x[n][k] · Wᵀ, x packed by PackInputs: blocks of 32 rows,
// and for each, groups of up to 6 tokens, spans of k, then tiles of 4 rows (single rows
// at a block's end).
template <class Row, class Elem>
void MatmulRowsT(const uint8_t* wdata, size_t row_stride, int64_t k, const float* x, int n, float* y,
                 int64_t rows, int64_t r0, int64_t r1) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  if (k == 0) {
    // Empty sums: no span runs below to write them.
    for (int t = 0; t < n; ++t) {
      float* yt = y + static_cast<int64_t>(t) * rows;
      std::fill(yt + r0, yt + r1, 0.0f);
    }
    return;
  }
  HWY_ALIGN float state[kRowBlock * kTileTokens * kMaxLanes];
  Row w[kRowBlock];
  for (int64_t rb = r0; rb < r1; rb += kRowBlock) {
    const int re = static_cast<int>(std::min(kRowBlock, r1 - rb));
    for (int r = 0; r < re; ++r)
      w[r] = Row{reinterpret_cast<const Elem*>(wdata + static_cast<size_t>(rb + r) * row_stride)};
    // A prompt reads this block's weights once per group of tokens: from DRAM the first
    // time, which the tiles would wait on. So each tile fetches a slice of the next
    // block's weights into L2 (the first block is not fetched ahead).
    const char* next = reinterpret_cast<const char*>(wdata + static_cast<size_t>(rb + re) * row_stride);
    const int64_t next_bytes = n > 1 ? std::min<int64_t>(kRowBlock, r1 - rb - re) * static_cast<int64_t>(row_stride) : 0;
    int64_t next_done = 0;
    for (int t0 = 0; t0 < n; t0 += kTileTokens) {
      const int T = std::min(kTileTokens, n - t0);
      float* yt = y + static_cast<int64_t>(t0) * rows + rb;
      const int64_t span = SpanFor(T, k);
      for (int64_t i0 = 0; i0 < k; i0 += span) {
        const int64_t i1 = std::min(i0 + span, k);
        // Token t's element i of this span is xt[t * ldx + i] (see PackInputs).
        const float* xt = PackedSpan(x, t0, T, k, i0) - i0;
        const int64_t ldx = i1 - i0;
        int r = 0;
        for (; r + kTileRows <= re; r += kTileRows) {
          // A slice of the next block's weights into L2 (none for decode: next_bytes 0).
          for (int64_t b = 0; b < kPrefetchLines * 64 && next_done < next_bytes; b += 64, next_done += 64)
            __builtin_prefetch(next + next_done, 0, 2);
          TileOf<kTileRows>(T, w + r, xt, ldx, k, i0, i1, state + r * T * N, yt + r, rows);
        }
        for (; r < re; ++r) TileOf<1>(T, w + r, xt, ldx, k, i0, i1, state + r * T * N, yt + r, rows);
      }
    }
  }
}

// type: 0 = f32, 1 = f16, 2 = bf16.
void MatmulRows(int type, const uint8_t* wdata, size_t row_stride, int64_t k, const float* x, int n, float* y,
                int64_t rows, int64_t r0, int64_t r1) {
  switch (type) {
    case 0:
      return MatmulRowsT<RowF32, float>(wdata, row_stride, k, x, n, y, rows, r0, r1);
    case 1:
      return MatmulRowsT<RowF16, hwy::float16_t>(wdata, row_stride, k, x, n, y, rows, r0, r1);
    default:
      return MatmulRowsT<RowBF16, hwy::bfloat16_t>(wdata, row_stride, k, x, n, y, rows, r0, r1);
  }
}

float DotF32(const float* a, const float* b, int64_t n) {
  float y;
  MatmulRowsT<RowF32, float>(reinterpret_cast<const uint8_t*>(a), 0, n, b, 1, &y, 1, 0, 1);
  return y;
}

// Row conversions to f32 (embedding lookups).
void RowToF32(int type, const uint8_t* src, int64_t n, float* dst) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  int64_t i = 0;
  if (type == 1) {
    const RowF16 w{reinterpret_cast<const hwy::float16_t*>(src)};
    for (; i + N <= n; i += N) hn::StoreU(w.vec(d, i), d, dst + i);
    for (; i < n; ++i) dst[i] = w.at(i);
  } else {
    const RowBF16 w{reinterpret_cast<const hwy::bfloat16_t*>(src)};
    for (; i + N <= n; i += N) hn::StoreU(w.vec(d, i), d, dst + i);
    for (; i < n; ++i) dst[i] = w.at(i);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace braid
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <span>
#include <vector>

#include "base/aligned_vector.h"

#include "braid/error.h"
#include "braid/kernels.h"
#include "braid/quant.h"
#include "tensor/matmul_panels.h"

namespace braid {

HWY_EXPORT(MatmulRows);
HWY_EXPORT(PackInputs);
HWY_EXPORT(DotF32);
HWY_EXPORT(RowToF32);

namespace {

// Below this many multiply-adds, waking the pool costs more than it saves.
constexpr int64_t kParallelMacs = 1 << 16;
// Rows go to threads in blocks of this many (whole blocks keep threads off each other's
// cache lines in y, and match the quant kernels' blocks of 16 rows; the float kernels'
// blocks of 32 start at each thread's first row).
constexpr int64_t kJobRows = 16;

// 0 = f32, 1 = f16, 2 = bf16 (MatmulRows' codes); -1 = a block-quantized type.
int float_code(DType t) {
  switch (t) {
    case DType::F32:
      return 0;
    case DType::F16:
      return 1;
    case DType::BF16:
      return 2;
    default:
      return -1;
  }
}

}  // namespace

bool matmul_supported(DType t) {
  return t == DType::F32 || t == DType::F16 || t == DType::BF16 || quant_supported(t);
}

void matmul(const Tensor& W, const float* x, int n, float* y, ThreadPool& pool) {
  const MatmulPart part{&W, y};
  matmul(std::span<const MatmulPart>(&part, 1), x, n, pool);
}

void matmul(std::span<const MatmulPart> parts, const float* x, int n, ThreadPool& pool) {
  if (n <= 0 || parts.empty()) return;
  const int64_t k = parts[0].w->cols();
  for (const MatmulPart& p : parts) {
    check(p.w->cols() == k, "matmul: tensor ", p.w->name, " has rows of ", p.w->cols(),
          " elements, but the input has ", k);
    check(float_code(p.w->type) >= 0 || quant_supported(p.w->type), "matmul: tensor ", p.w->name, " has type ",
          dtype_name(p.w->type), ", which braid cannot compute yet");
  }
  // Quantize every token's activations once per activation format (one per weight type:
  // q, k and v of one type share it), as llama.cpp's q8 blocks, then let the quant
  // kernels decode each weight block once per tile of tokens.
  // The buffers are cache-line aligned (records are whole lines): from plain new, a
  // 16-byte-aligned buffer splits every 64-byte load of the kernels in two, and prefill
  // ran at half speed or full speed depending on where the heap happened to put it
  // (`braid bench` pp64 q4_0, 1 thread: 22 against 44 tok/s with one more argument).
  struct Quantized {
    DType type;
    size_t bytes;  // per token
    AlignedVector<uint8_t> data;
  };
  std::vector<Quantized> quantized;
  quantized.reserve(parts.size());  // act[] points into it
  std::vector<const Quantized*> act(parts.size(), nullptr);
  bool any_float = false;   // a part with float weights in rows (they read x packed, below)
  bool any_panels = false;  // a float part in panels (they read x packed their own way)
  for (size_t i = 0; i < parts.size(); ++i) {
    const DType t = parts[i].w->type;
    if (parts[i].w->panels && float_code(t) >= 0) {
      any_panels = true;
      continue;
    }
    if (float_code(t) >= 0) {
      any_float = true;
      continue;
    }
    auto same = std::find_if(quantized.begin(), quantized.end(), [&](const Quantized& q) { return q.type == t; });
    if (same != quantized.end()) {
      act[i] = &*same;
    } else {
      Quantized q{t, quant_activation_bytes(t, k), {}};
      q.data.resize(q.bytes * static_cast<size_t>(n));
      // Tokens are quantized independently; a prompt's are split over the pool (serial,
      // they were ~4% of a 2-thread prefill with the other thread idle).
      auto quantize = [&](int64_t t0, int64_t t1, int) {
        for (int64_t tok = t0; tok < t1; ++tok)
          quant_activation(t, x + tok * k, k, q.data.data() + q.bytes * static_cast<size_t>(tok));
      };
      if (n >= 4 && pool.size() > 1) {
        pool.parallel_for(n, quantize);
      } else {
        quantize(0, n, 0);
      }
      quantized.push_back(std::move(q));
      act[i] = &quantized.back();
    }
  }

  // Float weights read x rearranged for their tiles (PackInputs; one token is x as it
  // is), once per call for all threads.
  const float* xf = x;
  AlignedVector<float> packed;
  if (any_float && n > 1) {
    packed.resize(static_cast<size_t>(n) * static_cast<size_t>(k));
    const int64_t groups = (n + BRAID_MATMUL_TILE_TOKENS - 1) / BRAID_MATMUL_TILE_TOKENS;
    auto pack = [&](int64_t g0, int64_t g1, int) { HWY_DYNAMIC_DISPATCH(PackInputs)(x, n, k, g0, g1, packed.data()); };
    if (groups >= 4 && pool.size() > 1) {
      pool.parallel_for(groups, pack);
    } else {
      pack(0, groups, 0);
    }
    xf = packed.data();
  }
  // Float panels read x packed their own way (pack_panel_inputs; one token is x as it
  // is); quantized ones read the quantized activations like rows do.
  const float* xpanels = x;
  AlignedVector<float> xg;
  if (any_panels && n > 1) {
    xg.resize(static_cast<size_t>(n) * static_cast<size_t>(k));
    pack_panel_inputs(x, n, k, xg.data(), pool);
    xpanels = xg.data();
  }

  // Rows [r0, r1) of part i.
  auto run = [&](size_t i, int64_t r0, int64_t r1) {
    const Tensor& W = *parts[i].w;
    const int64_t rows = W.rows();
    float* y = parts[i].y;
    const int code = float_code(W.type);
    if (code >= 0) {
      if (W.panels) {
        matmul_panels_rows(W, xpanels, n, y, r0, r1);
      } else {
        HWY_DYNAMIC_DISPATCH(MatmulRows)(code, W.data, W.row_size(), k, xf, n, y, rows, r0, r1);
      }
    } else {
      const Quantized& q = *act[i];
      if (W.panels) {
        quant_matmul_panels(W.type, W.data, r0, r1, q.data.data(), q.bytes, n, k, y + r0,
                            static_cast<size_t>(rows));
      } else {
        quant_matmul_tile(W.type, W.data, W.row_size(), r0, r1, q.data.data(), q.bytes, n, k, y + r0,
                          static_cast<size_t>(rows));
      }
    }
  };
  // All parts' rows form one job in whole row blocks (part i's blocks from first[i]):
  // one wait instead of one per tensor, and small tensors (a GQA model's k and v) share
  // the threads' memory streams with the large ones instead of running alone.
  // A block is kJobRows rows, or a whole panel.
  static_assert(kPanelRows == kQuantPanelRows, "float and quantized panels are split alike");
  auto unit = [&](size_t i) { return parts[i].w->panels ? kPanelRows : kJobRows; };
  std::vector<int64_t> first(parts.size() + 1, 0);
  int64_t macs = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    const int64_t rows = parts[i].w->rows();
    first[i + 1] = first[i] + (rows + unit(i) - 1) / unit(i);
    macs += rows * k * n;
  }
  auto blocks = [&](int64_t b0, int64_t b1, int) {
    for (size_t i = 0; i < parts.size() && b0 < b1; ++i) {
      if (b0 >= first[i + 1]) continue;
      const int64_t e = std::min(b1, first[i + 1]);
      run(i, (b0 - first[i]) * unit(i), std::min((e - first[i]) * unit(i), parts[i].w->rows()));
      b0 = e;
    }
  };
  if (pool.size() == 1 || macs < kParallelMacs) {
    blocks(0, first.back(), 0);
  } else {
    pool.parallel_for(first.back(), blocks);
  }
}

float dot_f32(const float* a, const float* b, int64_t n) { return HWY_DYNAMIC_DISPATCH(DotF32)(a, b, n); }

void dot_rows_f32(const float* a, int64_t stride, int64_t rows, const float* x, int64_t n, float* y) {
  HWY_DYNAMIC_DISPATCH(MatmulRows)
  (0, reinterpret_cast<const uint8_t*>(a), static_cast<size_t>(stride) * sizeof(float), n, x, 1, y, rows, 0,
   rows);
}

void tensor_row_f32(const Tensor& W, int64_t r, float* dst) {
  if (W.panels) return tensor_panel_row_f32(W, r, dst);
  const int64_t k = W.cols();
  const uint8_t* src = W.row(r);
  switch (W.type) {
    case DType::F32:
      std::memcpy(dst, src, sizeof(float) * static_cast<size_t>(k));
      return;
    case DType::F16:
      return HWY_DYNAMIC_DISPATCH(RowToF32)(1, src, k, dst);
    case DType::BF16:
      return HWY_DYNAMIC_DISPATCH(RowToF32)(2, src, k, dst);
    default:
      check(quant_supported(W.type), "tensor ", W.name, " has type ", dtype_name(W.type),
            ", which braid cannot compute yet");
      dequantize_row(W.type, src, dst, k);
  }
}

}  // namespace braid
#endif  // HWY_ONCE
