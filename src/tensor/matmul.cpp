// matmul for F32 / F16 / BF16 weights with Highway (dynamic dispatch: the best SIMD
// target of the running CPU), and dispatch to braid/quant.h for block-quantized weights.
//
// Bit-identity across batch sizes: a token's dot product with a row always runs the same
// operations (two vector accumulators over 2-vector steps, one more vector step, a
// zero-padded final vector, then one horizontal sum), whether it is computed alone or as
// one of a block of four tokens sharing the row's loads.
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

// Prefetches the cache lines of elements [i, i + n) of row w, kPrefetchAheadBytes ahead.
template <class Row>
HWY_INLINE void PrefetchAhead(const Row& w, int64_t i, int64_t n) {
  const char* p = reinterpret_cast<const char*>(w.p + i) + kPrefetchAheadBytes;
  const int64_t bytes = n * static_cast<int64_t>(sizeof(*w.p));
  for (int64_t b = 0; b < bytes; b += 64) hwy::Prefetch(p + b);
}

template <class Row>
HWY_INLINE float Dot1(const Row& w, const float* x, int64_t k) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  VF a0 = hn::Zero(d), a1 = hn::Zero(d);
  int64_t i = 0;
  for (; i + 2 * N <= k; i += 2 * N) {
    PrefetchAhead(w, i, 2 * N);
    a0 = hn::MulAdd(w.vec(d, i), hn::LoadU(d, x + i), a0);
    a1 = hn::MulAdd(w.vec(d, i + N), hn::LoadU(d, x + i + N), a1);
  }
  if (i + N <= k) {
    a0 = hn::MulAdd(w.vec(d, i), hn::LoadU(d, x + i), a0);
    i += N;
  }
  if (i < k) a1 = hn::MulAdd(TailW(d, w, i, k), TailX(d, x, i, k), a1);
  return hn::GetLane(hn::SumOfLanes(d, hn::Add(a0, a1)));
}

// Four tokens x0..x3 (stride xs) against one row, over the elements [i0, i1): the row is
// loaded once per step for all four. The eight accumulators live in `state` between
// spans; i0 must be a multiple of 2 * Lanes, and so must i1 unless it is k (the last
// span, which also does Dot1's final vector step, the tail and the horizontal sums into
// out[0..4)). Span by span, each token sees exactly Dot1's sequence of operations.
template <class Row>
HWY_INLINE void Dot4Span(const Row& w, const float* x, int64_t xs, int64_t i0, int64_t i1, int64_t k,
                         float* state, float* out) {
  const DF d;
  const int64_t N = static_cast<int64_t>(hn::Lanes(d));
  const float* x0 = x;
  const float* x1 = x + xs;
  const float* x2 = x + 2 * xs;
  const float* x3 = x + 3 * xs;
  VF a0 = hn::Load(d, state + 0 * N), a1 = hn::Load(d, state + 1 * N);
  VF b0 = hn::Load(d, state + 2 * N), b1 = hn::Load(d, state + 3 * N);
  VF c0 = hn::Load(d, state + 4 * N), c1 = hn::Load(d, state + 5 * N);
  VF e0 = hn::Load(d, state + 6 * N), e1 = hn::Load(d, state + 7 * N);
  int64_t i = i0;
  for (; i + 2 * N <= i1; i += 2 * N) {
    const VF w0 = w.vec(d, i), w1 = w.vec(d, i + N);
    a0 = hn::MulAdd(w0, hn::LoadU(d, x0 + i), a0);
    a1 = hn::MulAdd(w1, hn::LoadU(d, x0 + i + N), a1);
    b0 = hn::MulAdd(w0, hn::LoadU(d, x1 + i), b0);
    b1 = hn::MulAdd(w1, hn::LoadU(d, x1 + i + N), b1);
    c0 = hn::MulAdd(w0, hn::LoadU(d, x2 + i), c0);
    c1 = hn::MulAdd(w1, hn::LoadU(d, x2 + i + N), c1);
    e0 = hn::MulAdd(w0, hn::LoadU(d, x3 + i), e0);
    e1 = hn::MulAdd(w1, hn::LoadU(d, x3 + i + N), e1);
  }
  if (i1 < k) {
    hn::Store(a0, d, state + 0 * N);
    hn::Store(a1, d, state + 1 * N);
    hn::Store(b0, d, state + 2 * N);
    hn::Store(b1, d, state + 3 * N);
    hn::Store(c0, d, state + 4 * N);
    hn::Store(c1, d, state + 5 * N);
    hn::Store(e0, d, state + 6 * N);
    hn::Store(e1, d, state + 7 * N);
    return;
  }
  if (i + N <= k) {
    const VF w0 = w.vec(d, i);
    a0 = hn::MulAdd(w0, hn::LoadU(d, x0 + i), a0);
    b0 = hn::MulAdd(w0, hn::LoadU(d, x1 + i), b0);
    c0 = hn::MulAdd(w0, hn::LoadU(d, x2 + i), c0);
    e0 = hn::MulAdd(w0, hn::LoadU(d, x3 + i), e0);
    i += N;
  }
  if (i < k) {
    const VF wt = TailW(d, w, i, k);
    a1 = hn::MulAdd(wt, TailX(d, x0, i, k), a1);
    b1 = hn::MulAdd(wt, TailX(d, x1, i, k), b1);
    c1 = hn::MulAdd(wt, TailX(d, x2, i, k), c1);
    e1 = hn::MulAdd(wt, TailX(d, x3, i, k), e1);
  }
  out[0] = hn::GetLane(hn::SumOfLanes(d, hn::Add(a0, a1)));
  out[1] = hn::GetLane(hn::SumOfLanes(d, hn::Add(b0, b1)));
  out[2] = hn::GetLane(hn::SumOfLanes(d, hn::Add(c0, c1)));
  out[3] = hn::GetLane(hn::SumOfLanes(d, hn::Add(e0, e1)));
}

// Rows [r0, r1) of y[n][rows] = x[n][k] · Wᵀ. Blocks of 16 rows meet blocks of 4 tokens,
// and long rows go in spans of kSpan elements so the four tokens' inputs stay in L1
// while the 16 rows stream past them (prefill is otherwise bound by L2 bandwidth).
template <class Row, class Elem>
void MatmulRowsT(const uint8_t* wdata, size_t row_stride, int64_t k, const float* x, int n, float* y,
                 int64_t rows, int64_t r0, int64_t r1) {
  constexpr int64_t kRowBlock = 16;
  constexpr int64_t kSpan = 1024;  // a multiple of 2 * Lanes on every target
  const DF d;
  const size_t N = hn::Lanes(d);
  HWY_ALIGN float state[kRowBlock * 8 * kMaxLanes];
  auto row = [&](int64_t r) {
    return Row{reinterpret_cast<const Elem*>(wdata + static_cast<size_t>(r) * row_stride)};
  };
  for (int64_t rb = r0; rb < r1; rb += kRowBlock) {
    const int64_t re = std::min(rb + kRowBlock, r1);
    int t = 0;
    for (; t + 4 <= n; t += 4) {
      const float* xt = x + static_cast<int64_t>(t) * k;
      std::fill(state, state + (re - rb) * 8 * N, 0.0f);
      float out[4];
      for (int64_t i0 = 0; i0 < k; i0 += kSpan) {
        const int64_t i1 = std::min(i0 + kSpan, k);
        for (int64_t r = rb; r < re; ++r) {
          Dot4Span(row(r), xt, k, i0, i1, k, state + (r - rb) * 8 * N, out);
          if (i1 == k) {
            for (int j = 0; j < 4; ++j) y[static_cast<int64_t>(t + j) * rows + r] = out[j];
          }
        }
      }
    }
    for (; t < n; ++t) {
      for (int64_t r = rb; r < re; ++r)
        y[static_cast<int64_t>(t) * rows + r] = Dot1(row(r), x + static_cast<int64_t>(t) * k, k);
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

float DotF32(const float* a, const float* b, int64_t n) { return Dot1(RowF32{a}, b, n); }

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

namespace braid {

HWY_EXPORT(MatmulRows);
HWY_EXPORT(DotF32);
HWY_EXPORT(RowToF32);

namespace {

// Below this many multiply-adds, waking the pool costs more than it saves.
constexpr int64_t kParallelMacs = 1 << 16;
// Rows go to threads in blocks of this many (whole blocks keep threads off each other's
// cache lines in y, and match the decode kernels' passes of 16 rows).
constexpr int64_t kRowBlock = 16;

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
  for (size_t i = 0; i < parts.size(); ++i) {
    const DType t = parts[i].w->type;
    if (float_code(t) >= 0) continue;
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

  // Rows [r0, r1) of part i.
  auto run = [&](size_t i, int64_t r0, int64_t r1) {
    const Tensor& W = *parts[i].w;
    const int64_t rows = W.rows();
    float* y = parts[i].y;
    const int code = float_code(W.type);
    if (code >= 0) {
      HWY_DYNAMIC_DISPATCH(MatmulRows)(code, W.data, W.row_size(), k, x, n, y, rows, r0, r1);
    } else {
      const Quantized& q = *act[i];
      quant_matmul_tile(W.type, W.data, W.row_size(), r0, r1, q.data.data(), q.bytes, n, k, y + r0,
                        static_cast<size_t>(rows));
    }
  };
  // All parts' rows form one job in whole row blocks (part i's blocks from first[i]):
  // one wait instead of one per tensor, and small tensors (a GQA model's k and v) share
  // the threads' memory streams with the large ones instead of running alone.
  std::vector<int64_t> first(parts.size() + 1, 0);
  int64_t macs = 0;
  for (size_t i = 0; i < parts.size(); ++i) {
    const int64_t rows = parts[i].w->rows();
    first[i + 1] = first[i] + (rows + kRowBlock - 1) / kRowBlock;
    macs += rows * k * n;
  }
  auto blocks = [&](int64_t b0, int64_t b1, int) {
    for (size_t i = 0; i < parts.size() && b0 < b1; ++i) {
      if (b0 >= first[i + 1]) continue;
      const int64_t e = std::min(b1, first[i + 1]);
      run(i, (b0 - first[i]) * kRowBlock, std::min((e - first[i]) * kRowBlock, parts[i].w->rows()));
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
