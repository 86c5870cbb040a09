// matmul for F16 / BF16 weights repacked into panels (braid/kernels.h: pack_panels),
// with Highway (dynamic dispatch).
//
// A panel is 32 rows stored k-major: for each element i, the 32 rows' weights side by
// side. A tile loads the 32 weights of one i (two 512-bit vectors of f32 once
// converted), broadcasts each token's x[i], and multiply-adds them into one accumulator
// per (row, token) pair. So every output is one chain of fused multiply-adds over i in
// order, from 0: no horizontal sums, and the same sequence of operations alone (decode)
// or in a prompt, on any thread count and on every target with FMA.
//
// Against the row-major kernel of matmul.cpp, a tile converts 2 weight vectors per 24
// multiply-adds (not 4) and reads its inputs as broadcast scalars (48 bytes per step
// for 12 tokens, not 384): f16, 64 tokens, 5632 x 2048 from DRAM, 49 against 45 GMAC/s
// on one core and 93 against 86 on two; the whole 1B model's pp64 on one core rose by
// about a fifth (docs/benchmarks.md).

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "tensor/matmul_panels.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/cache_control.h>
#include <hwy/highway.h>

#include <algorithm>
#include <cstring>

#include "braid/dtype.h"
#include "braid/kernels.h"
#include "tensor/matmul_panels.h"

HWY_BEFORE_NAMESPACE();
namespace braid {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// At most 16 lanes: a tile's two vectors of rows must fit a panel's 32.
using DF = hn::CappedTag<float, 16>;
using VF = hn::Vec<DF>;

constexpr int64_t kRows = kPanelRows;
static_assert(kRows == 32, "a tile's two vectors of up to 16 rows cover a panel");
constexpr int kGroup = kPanelGroup;
// Decode streams each weight from DRAM once: fetch this far ahead (as matmul.cpp).
constexpr int64_t kPrefetchAheadBytes = 24576;

template <class Elem>
HWY_INLINE VF LoadW(DF d, const Elem* p) {
  const hn::Rebind<Elem, DF> dh;
  return hn::PromoteTo(d, hn::LoadU(dh, p));
}

// Sanitizer builds (the ASan unit tests, the fuzz targets) take the plain loop below,
// as matmul.cpp does: the unrolled tiles of every T compile slowly with ASan and UBSan.
// The Release tests check the tiles against the same chains bit for bit.
#if defined(__SANITIZE_ADDRESS__)
#define BRAID_PANELS_PLAIN_LOOP 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BRAID_PANELS_PLAIN_LOOP 1
#endif
#endif

#if HWY_HAVE_SCALABLE || defined(BRAID_PANELS_PLAIN_LOOP)
// Sizeless vectors (SVE, RVV) cannot form the arrays of the tile below: one vector of
// rows and one token at a time, the same chain per pair.
template <int T, class Elem>
HWY_INLINE void PanelTile(const Elem* p, const float* x, int64_t ldx, int64_t k, float* out) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  for (int t = 0; t < T; ++t) {
    for (int64_t v = 0; v < 2; ++v) {
      VF acc = hn::Zero(d);
      for (int64_t i = 0; i < k; ++i) acc = hn::MulAdd(LoadW(d, p + i * kRows + v * N), hn::Set(d, x[i * ldx + t]), acc);
      hn::StoreU(acc, d, out + (t * 2 + v) * N);
    }
  }
}
#else
// Two vectors of rows (2N of the panel's rows, from p) x T tokens over all k elements;
// token t's element i is x[i * ldx + t]. out[t * 2N + j] is row j's sum for token t.
template <int T, class Elem>
HWY_INLINE void PanelTile(const Elem* p, const float* x, int64_t ldx, int64_t k, float* out) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  VF a0[T], a1[T];
#pragma GCC unroll 16
  for (int t = 0; t < T; ++t) a0[t] = a1[t] = hn::Zero(d);
  for (int64_t i = 0; i < k; ++i) {
    const Elem* w = p + i * kRows;
    if (T == 1) hwy::Prefetch(reinterpret_cast<const char*>(w) + kPrefetchAheadBytes);
    const VF w0 = LoadW(d, w), w1 = LoadW(d, w + N);
    const float* xi = x + i * ldx;
#pragma GCC unroll 16
    for (int t = 0; t < T; ++t) {
      const VF xv = hn::Set(d, xi[t]);
      a0[t] = hn::MulAdd(w0, xv, a0[t]);
      a1[t] = hn::MulAdd(w1, xv, a1[t]);
    }
  }
#pragma GCC unroll 16
  for (int t = 0; t < T; ++t) {
    hn::StoreU(a0[t], d, out + t * 2 * N);
    hn::StoreU(a1[t], d, out + t * 2 * N + N);
  }
}
#endif

#if !HWY_HAVE_SCALABLE && !defined(BRAID_PANELS_PLAIN_LOOP)
// One token (decode) over two consecutive panels (64 rows from p) at once: two streams
// from DRAM and 4 chains of multiply-adds instead of one and 2, which ran 8% below the
// row kernel's decode (f16 5632 x 2048, one core); with two, they are level.
template <class Elem>
HWY_INLINE void PanelDecode2(const Elem* p, const float* x, int64_t k, float* out) {
  const DF d;
  constexpr int64_t N = static_cast<int64_t>(hn::MaxLanes(DF()));
  constexpr int64_t V = kRows / N;  // vectors per panel
  VF a[2][V];
#pragma GCC unroll 8
  for (int64_t v = 0; v < V; ++v) a[0][v] = a[1][v] = hn::Zero(d);
  const Elem* p1 = p + kRows * k;
  for (int64_t i = 0; i < k; ++i) {
    const VF xv = hn::Set(d, x[i]);
    const Elem* w0 = p + i * kRows;
    const Elem* w1 = p1 + i * kRows;
    hwy::Prefetch(reinterpret_cast<const char*>(w0) + kPrefetchAheadBytes);
    hwy::Prefetch(reinterpret_cast<const char*>(w1) + kPrefetchAheadBytes);
#pragma GCC unroll 8
    for (int64_t v = 0; v < V; ++v) {
      a[0][v] = hn::MulAdd(LoadW(d, w0 + v * N), xv, a[0][v]);
      a[1][v] = hn::MulAdd(LoadW(d, w1 + v * N), xv, a[1][v]);
    }
  }
#pragma GCC unroll 8
  for (int64_t v = 0; v < V; ++v) {
    hn::StoreU(a[0][v], d, out + v * N);
    hn::StoreU(a[1][v], d, out + kRows + v * N);
  }
}
#endif

// Tokens per tile: a tile holds 2T accumulators, 2 weight vectors and a broadcast. With
// 32 vector registers (AVX-512, NEON, SVE) 12 tokens fit (27 registers); with 16 (AVX2,
// SSE4) 6 do, and a group of 12 runs as two tiles.
#if HWY_ARCH_X86 && HWY_TARGET > HWY_AVX3
constexpr int kTileTokens = 6;
#else
constexpr int kTileTokens = 12;
#endif
static_assert(kGroup % kTileTokens == 0, "a group is whole tiles");

template <class Elem>
HWY_INLINE void PanelTileOf(int T, const Elem* p, const float* x, int64_t ldx, int64_t k, float* out) {
  switch (T) {
#define BRAID_PANEL_CASE(n) \
  case n:                   \
    return PanelTile<n>(p, x, ldx, k, out);
    BRAID_PANEL_CASE(1)
    BRAID_PANEL_CASE(2)
    BRAID_PANEL_CASE(3)
    BRAID_PANEL_CASE(4)
    BRAID_PANEL_CASE(5)
#if HWY_ARCH_X86 && HWY_TARGET > HWY_AVX3
    default:
      return PanelTile<6>(p, x, ldx, k, out);
#else
    BRAID_PANEL_CASE(6)
    BRAID_PANEL_CASE(7)
    BRAID_PANEL_CASE(8)
    BRAID_PANEL_CASE(9)
    BRAID_PANEL_CASE(10)
    BRAID_PANEL_CASE(11)
    default:
      return PanelTile<12>(p, x, ldx, k, out);
#endif
#undef BRAID_PANEL_CASE
  }
}

// Rows [r0, r1) (r0 a multiple of 32) of y[n][rows] = x[n][k] · Wᵀ, W in panels, x
// packed by pack_panel_inputs: panel by panel, each read once from DRAM and then from L2
// for every group of tokens.
template <class Elem>
void MatmulPanelsT(const uint8_t* data, int64_t k, const float* xg, int n, float* y, int64_t rows, int64_t r0,
                   int64_t r1) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  HWY_ALIGN float out[kTileTokens * kRows];
  int64_t pr = r0;
#if !HWY_HAVE_SCALABLE && !defined(BRAID_PANELS_PLAIN_LOOP)
  if (n == 1) {
    HWY_ALIGN float two[2 * kRows];
    for (; pr + 2 * kRows <= r1; pr += 2 * kRows) {
      PanelDecode2(reinterpret_cast<const Elem*>(data) + pr * k, xg, k, two);
      std::memcpy(y + pr, two, sizeof(two));
    }
  }
#endif
  for (; pr < r1; pr += kRows) {
    const Elem* panel = reinterpret_cast<const Elem*>(data) + pr * k;
    for (int t0 = 0; t0 < n; t0 += kGroup) {
      const int G = std::min(kGroup, n - t0);
      const float* xgrp = xg + static_cast<int64_t>(t0) * k;
      for (int s = 0; s < G; s += kTileTokens) {
        const int T = std::min(kTileTokens, G - s);
        for (int64_t v = 0; v < kRows; v += 2 * N) {
          PanelTileOf(T, panel + v, xgrp + s, G, k, out);
          const int64_t r = pr + v, m = std::min<int64_t>(2 * N, r1 - r);
          for (int t = 0; t < T; ++t)
            std::memcpy(y + static_cast<int64_t>(t0 + s + t) * rows + r, out + t * 2 * N,
                        sizeof(float) * static_cast<size_t>(std::max<int64_t>(m, 0)));
        }
      }
    }
  }
}

// type: 1 = f16, 2 = bf16.
void MatmulPanels(int type, const uint8_t* data, int64_t k, const float* xg, int n, float* y, int64_t rows,
                  int64_t r0, int64_t r1) {
  if (type == 1) return MatmulPanelsT<hwy::float16_t>(data, k, xg, n, y, rows, r0, r1);
  return MatmulPanelsT<hwy::bfloat16_t>(data, k, xg, n, y, rows, r0, r1);
}

}  // namespace HWY_NAMESPACE
}  // namespace braid
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
#include <vector>

#include "braid/error.h"
#include "braid/quant.h"
#include "tensor/quant_panels.h"

namespace braid {

HWY_EXPORT(MatmulPanels);

bool panels_supported(DType t) { return t == DType::F16 || t == DType::BF16 || quant_panels_supported(t); }

size_t panel_bytes(const Tensor& W) {
  if (quant::PanelType(W.type)) return quant_panel_bytes(W.type, W.rows(), W.cols());
  const int64_t padded = (W.rows() + kPanelRows - 1) / kPanelRows * kPanelRows;
  return static_cast<size_t>(padded) * static_cast<size_t>(W.cols()) * 2;
}

void pack_panels(const Tensor& W, uint8_t* dst, ThreadPool& pool, int64_t first, int64_t last) {
  check(!W.panels && (W.type == DType::F16 || W.type == DType::BF16 || quant::PanelType(W.type)),
        "pack_panels: tensor ", W.name, " is not f16, bf16, q4_0, q8_0, q4_K or q6_K rows");
  const int64_t rows = W.rows(), k = W.cols();
  const int64_t all = (rows + kPanelRows - 1) / kPanelRows;
  if (last < 0) last = all;
  check(0 <= first && first <= last && last <= all, "pack_panels: panels [", first, ", ", last, ") of ", all);
  const int64_t n_panels = last - first;
  const size_t stride = W.row_size();
  if (quant::PanelType(W.type)) {
    auto pack = [&](int64_t p0, int64_t p1, int) {
      quant_pack_panels(W.type, W.data, stride, rows, k, first + p0, first + p1, dst);
    };
    if (n_panels > 1 && pool.size() > 1) {
      pool.parallel_for(n_panels, pack);
    } else {
      pack(0, n_panels, 0);
    }
    return;
  }
  auto pack = [&](int64_t p0, int64_t p1, int) {
    uint16_t* out = reinterpret_cast<uint16_t*>(dst);
    for (int64_t p = first + p0; p < first + p1; ++p) {
      uint16_t* panel = out + p * kPanelRows * k;
      // 32 elements of each row at a time (whole cache lines of the rows read) into a
      // 32 x 32 block, written transposed as a contiguous 2 KiB of the panel.
      for (int64_t i0 = 0; i0 < k; i0 += 32) {
        const int64_t len = std::min<int64_t>(32, k - i0);
        uint16_t block[32][32] = {};
        for (int64_t r = 0; r < kPanelRows; ++r) {
          const int64_t row = p * kPanelRows + r;
          if (row < rows) std::memcpy(block[r], W.data + static_cast<size_t>(row) * stride + i0 * 2, len * 2);
        }
        uint16_t* o = panel + i0 * kPanelRows;
        for (int64_t i = 0; i < len; ++i)
          for (int64_t r = 0; r < kPanelRows; ++r) o[i * kPanelRows + r] = block[r][i];
      }
    }
  };
  if (n_panels >= 8 && pool.size() > 1) {
    pool.parallel_for(n_panels, pack);
  } else {
    pack(0, n_panels, 0);
  }
}

void pack_panel_inputs(const float* x, int n, int64_t k, float* xg, ThreadPool& pool) {
  const int64_t groups = (n + kPanelGroup - 1) / kPanelGroup;
  // Group g's tokens from t0 = 12g: token t0 + t's element i at xg[t0 * k + i * T + t].
  auto pack = [&](int64_t g0, int64_t g1, int) {
    for (int64_t g = g0; g < g1; ++g) {
      const int t0 = static_cast<int>(g) * kPanelGroup;
      const int T = std::min(kPanelGroup, n - t0);
      float* dst = xg + static_cast<int64_t>(t0) * k;
      for (int t = 0; t < T; ++t) {
        const float* src = x + static_cast<int64_t>(t0 + t) * k;
        for (int64_t i = 0; i < k; ++i) dst[i * T + t] = src[i];
      }
    }
  };
  if (groups >= 2 && pool.size() > 1) {
    pool.parallel_for(groups, pack);
  } else {
    pack(0, groups, 0);
  }
}

void matmul_panels_rows(const Tensor& W, const float* xg, int n, float* y, int64_t r0, int64_t r1) {
  HWY_DYNAMIC_DISPATCH(MatmulPanels)(W.type == DType::F16 ? 1 : 2, W.data, W.cols(), xg, n, y, W.rows(), r0, r1);
}

void tensor_panel_row_f32(const Tensor& W, int64_t r, float* dst) {
  const int64_t k = W.cols();
  if (quant::PanelType(W.type)) {
    std::vector<uint8_t> row(row_bytes(W.type, k));
    quant_panel_row(W.type, W.data, k, r, row.data());
    return dequantize_row(W.type, row.data(), dst, k);
  }
  const uint16_t* panel = reinterpret_cast<const uint16_t*>(W.data) + (r / kPanelRows) * kPanelRows * k;
  for (int64_t i = 0; i < k; ++i) {
    const uint16_t h = panel[i * kPanelRows + r % kPanelRows];
    dst[i] = W.type == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
  }
}

}  // namespace braid
#endif  // HWY_ONCE
