// Scalar reference for the legacy block types (q4_0, q4_1, q5_0, q5_1, q8_0): llama.cpp's
// quantize_row_*_ref and dequantize_row_*, the activation layout, and the generic dot
// products the SIMD kernels are tested against. The K types are in quant_ref_k.cpp.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "braid/error.h"
#include "tensor/quant_act.h"
#include "tensor/quant_blocks.h"
#include "tensor/quant_internal.h"

// No fused multiply-add contraction: the quantizers' rounding decisions (and so the
// bytes they write) must be those of llama.cpp's x86 build on every machine.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace braid::quant {

// Defined in quant_ref_k.cpp.
void quantize_ref_k(DType t, const float* src, void* dst, int64_t n);
void dequantize_ref_k(DType t, const void* src, float* dst, int64_t n);
void activation_ref_k(DType wtype, const float* x, int64_t k, void* xq);
void dot_rows_ref_k(DType wtype, const uint8_t* W, size_t row_stride, int64_t r0, int64_t r1, const void* xq,
                    int64_t k, float* y);

namespace {

inline float round_f16(float x) { return fp16_to_fp32(f32_to_f16(x)); }

inline size_t align64(size_t n) { return (n + 63) & ~size_t{63}; }

bool is_k_type(DType t) { return dtype_info(t).block_size == kQKK; }

// ---------------------------------------------------------------- quantize (legacy)

void quantize_q4_0(const float* x, BlockQ4_0* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < kQK; ++j) {
      if (amax < std::fabs(x[j])) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = max / -8;
    const float id = d ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    for (int j = 0; j < kQK / 2; ++j) {
      const uint8_t xi0 = std::min<int8_t>(15, static_cast<int8_t>(x[j] * id + 8.5f));
      const uint8_t xi1 = std::min<int8_t>(15, static_cast<int8_t>(x[kQK / 2 + j] * id + 8.5f));
      y[i].qs[j] = static_cast<uint8_t>(xi0 | (xi1 << 4));
    }
  }
}

void quantize_q4_1(const float* x, BlockQ4_1* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float min = x[0], max = x[0];
    for (int j = 1; j < kQK; ++j) {
      if (x[j] < min) min = x[j];
      if (x[j] > max) max = x[j];
    }
    const float d = (max - min) / ((1 << 4) - 1);
    const float id = d ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    y[i].m = f32_to_f16(min);
    for (int j = 0; j < kQK / 2; ++j) {
      const uint8_t xi0 = std::min<int8_t>(15, static_cast<int8_t>((x[j] - min) * id + 0.5f));
      const uint8_t xi1 = std::min<int8_t>(15, static_cast<int8_t>((x[kQK / 2 + j] - min) * id + 0.5f));
      y[i].qs[j] = static_cast<uint8_t>(xi0 | (xi1 << 4));
    }
  }
}

void quantize_q5_0(const float* x, BlockQ5_0* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float amax = 0.0f, max = 0.0f;
    for (int j = 0; j < kQK; ++j) {
      if (amax < std::fabs(x[j])) {
        amax = std::fabs(x[j]);
        max = x[j];
      }
    }
    const float d = max / -16;
    const float id = d ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    uint32_t qh = 0;
    for (int j = 0; j < kQK / 2; ++j) {
      const uint8_t xi0 = std::min<int8_t>(31, static_cast<int8_t>(x[j] * id + 16.5f));
      const uint8_t xi1 = std::min<int8_t>(31, static_cast<int8_t>(x[kQK / 2 + j] * id + 16.5f));
      y[i].qs[j] = static_cast<uint8_t>((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
      qh |= ((xi0 & 0x10u) >> 4) << (j + 0);
      qh |= ((xi1 & 0x10u) >> 4) << (j + kQK / 2);
    }
    std::memcpy(y[i].qh, &qh, 4);
  }
}

void quantize_q5_1(const float* x, BlockQ5_1* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float min = x[0], max = x[0];
    for (int j = 1; j < kQK; ++j) {
      if (x[j] < min) min = x[j];
      if (x[j] > max) max = x[j];
    }
    const float d = (max - min) / ((1 << 5) - 1);
    const float id = d ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    y[i].m = f32_to_f16(min);
    uint32_t qh = 0;
    for (int j = 0; j < kQK / 2; ++j) {
      const uint8_t xi0 = static_cast<uint8_t>((x[j] - min) * id + 0.5f);
      const uint8_t xi1 = static_cast<uint8_t>((x[kQK / 2 + j] - min) * id + 0.5f);
      y[i].qs[j] = static_cast<uint8_t>((xi0 & 0x0F) | ((xi1 & 0x0F) << 4));
      qh |= ((xi0 & 0x10u) >> 4) << (j + 0);
      qh |= ((xi1 & 0x10u) >> 4) << (j + kQK / 2);
    }
    std::memcpy(y[i].qh, &qh, 4);
  }
}

void quantize_q8_0(const float* x, BlockQ8_0* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    float amax = 0.0f;
    for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / ((1 << 7) - 1);
    const float id = d ? 1.0f / d : 0.0f;
    y[i].d = f32_to_f16(d);
    for (int j = 0; j < kQK; ++j) y[i].qs[j] = static_cast<int8_t>(std::round(x[j] * id));
  }
}

// ---------------------------------------------------------------- dequantize (legacy)

void dequantize_q4_0(const BlockQ4_0* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = fp16_to_fp32(x[i].d);
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = static_cast<float>((x[i].qs[j] & 0x0F) - 8) * d;
      y[j + kQK / 2] = static_cast<float>((x[i].qs[j] >> 4) - 8) * d;
    }
  }
}

void dequantize_q4_1(const BlockQ4_1* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = fp16_to_fp32(x[i].d), m = fp16_to_fp32(x[i].m);
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = static_cast<float>(x[i].qs[j] & 0x0F) * d + m;
      y[j + kQK / 2] = static_cast<float>(x[i].qs[j] >> 4) * d + m;
    }
  }
}

void dequantize_q5_0(const BlockQ5_0* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = fp16_to_fp32(x[i].d);
    uint32_t qh;
    std::memcpy(&qh, x[i].qh, 4);
    for (int j = 0; j < kQK / 2; ++j) {
      const int xh0 = ((qh >> (j + 0)) << 4) & 0x10;
      const int xh1 = ((qh >> (j + 12))) & 0x10;
      y[j] = static_cast<float>(((x[i].qs[j] & 0x0F) | xh0) - 16) * d;
      y[j + kQK / 2] = static_cast<float>(((x[i].qs[j] >> 4) | xh1) - 16) * d;
    }
  }
}

void dequantize_q5_1(const BlockQ5_1* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = fp16_to_fp32(x[i].d), m = fp16_to_fp32(x[i].m);
    uint32_t qh;
    std::memcpy(&qh, x[i].qh, 4);
    for (int j = 0; j < kQK / 2; ++j) {
      const int xh0 = ((qh >> (j + 0)) << 4) & 0x10;
      const int xh1 = ((qh >> (j + 12))) & 0x10;
      y[j] = static_cast<float>((x[i].qs[j] & 0x0F) | xh0) * d + m;
      y[j + kQK / 2] = static_cast<float>((x[i].qs[j] >> 4) | xh1) * d + m;
    }
  }
}

void dequantize_q8_0(const BlockQ8_0* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = fp16_to_fp32(x[i].d);
    for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(x[i].qs[j]) * d;
  }
}

// ---------------------------------------------------------------- activation (legacy)

}  // namespace

// ebias of block j of a record (quant_act.h): -offset * (block sum) in the block's
// first lane (nibble types; q8_0 has none).
void write_ebias(DType wtype, const ActLayout& L, char* rec, int j, int32_t block_sum) {
  (void)wtype;
  if (!L.ebias) return;
  const int32_t bias = -L.offset * block_sum;
  std::memcpy(rec + L.ebias + 4 * (L.lanes * j), &bias, 4);
}

namespace {

// llama.cpp's quantize_row_q8_0_ref for each block, plus the sums the kernels need.
void activation_ref_legacy(DType wtype, const float* x, int64_t k, void* xq) {
  const ActLayout L = act_layout(wtype, k);
  char* base = static_cast<char*>(xq);
  std::memset(base, 0, L.bytes);  // padding blocks stay zero
  for (int64_t b = 0; b < L.nb; ++b) {
    char* rec = base + (b / 4) * L.rec;
    const int j = static_cast<int>(b % 4);
    const float* xb = x + b * kQK;
    float amax = 0.0f;
    for (int e = 0; e < kQK; ++e) amax = std::max(amax, std::fabs(xb[e]));
    const float d = amax / ((1 << 7) - 1);
    const float id = d ? 1.0f / d : 0.0f;
    int32_t sum = 0;
    for (int e = 0; e < kQK; ++e) {
      const int8_t q = static_cast<int8_t>(std::round(xb[e] * id));
      rec[L.qs + act_pos_in_unit(wtype, j * kQK + e)] = static_cast<char>(q);
      sum += q;
    }
    const float dx = round_f16(d);
    std::memcpy(rec + L.dx + 4 * j, &dx, 4);
    std::memcpy(rec + L.sy + 4 * j, &sum, 4);
    const int E = L.lanes;
    for (int e = 0; e < E; ++e) std::memcpy(rec + L.escale + 4 * (E * j + e), &dx, 4);
    write_ebias(wtype, L, rec, j, sum);
    if (L.emin) {
      const float m = dx * static_cast<float>(sum) / static_cast<float>(E);
      for (int e = 0; e < E; ++e) std::memcpy(rec + L.emin + 4 * (E * j + e), &m, 4);
    }
  }
}

// ---------------------------------------------------------------- dot (legacy)

// Integer sum of one weight block (its codes minus the type's offset) times the
// activation's 8-bit values, as llama.cpp's ggml_vec_dot_*_q8_0 computes it.
template <class Block>
int block_isum(const Block& w, const ActView& a, int64_t b) {
  auto y = [&](int j) { return static_cast<int>(a.q(b * kQK + j)); };
  int sum = 0;
  if constexpr (std::is_same_v<Block, BlockQ8_0>) {
    for (int j = 0; j < kQK; ++j) sum += w.qs[j] * y(j);
  } else {
    uint32_t qh = 0;
    int offset = 0;
    if constexpr (std::is_same_v<Block, BlockQ5_0> || std::is_same_v<Block, BlockQ5_1>) {
      std::memcpy(&qh, w.qh, 4);
    }
    if constexpr (std::is_same_v<Block, BlockQ4_0>) offset = 8;
    if constexpr (std::is_same_v<Block, BlockQ5_0>) offset = 16;
    for (int j = 0; j < kQK / 2; ++j) {
      const int h0 = ((qh >> j) & 1) << 4, h1 = ((qh >> (j + 16)) & 1) << 4;
      sum += (((w.qs[j] & 0x0F) | h0) - offset) * y(j);
      sum += (((w.qs[j] >> 4) | h1) - offset) * y(j + kQK / 2);
    }
  }
  return sum;
}

template <class Block>
void dot_rows_legacy(DType t, const uint8_t* W, size_t stride, int64_t r0, int64_t r1, const void* xq,
                     int64_t k, float* y) {
  const ActLayout L = act_layout(t, k);
  const ActView a = act_view(L, xq);
  for (int64_t r = r0; r < r1; ++r) {
    const Block* w = reinterpret_cast<const Block*>(W + r * stride);
    float sumf = 0.0f;
    for (int64_t b = 0; b < L.nb; ++b) {
      const int isum = block_isum(w[b], a, b);
      const float d = fp16_to_fp32(w[b].d) * a.dx(b);
      sumf += static_cast<float>(isum) * d;
      if constexpr (std::is_same_v<Block, BlockQ4_1> || std::is_same_v<Block, BlockQ5_1>) {
        sumf += fp16_to_fp32(w[b].m) * (a.dx(b) * static_cast<float>(a.sy(b)));
      }
    }
    y[r - r0] = sumf;
  }
}

}  // namespace

// ---------------------------------------------------------------- layout and dispatch

ActLayout act_layout(DType wtype, int64_t k) {
  ActLayout L;
  L.wtype = wtype;
  L.k = k;
  switch (wtype) {
    case DType::Q8_0:  // no ebias: AVX-512 decode subtracts 128 * sy per block instead
      L.offset = 0;
      L.lanes = 8;
      break;
    case DType::Q4_0:
      L.offset = 8;
      L.lanes = 4;
      break;
    case DType::Q5_0:
      L.offset = 16;
      L.lanes = 4;
      break;
    case DType::Q4_1:
    case DType::Q5_1:
      L.offset = 0;
      L.lanes = 4;
      break;
    case DType::Q2_K:
    case DType::Q3_K:
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K:
      L.k_type = true;
      break;
    default:
      fail("no quantized dot product for tensor type ", dtype_info(wtype).name);
  }
  const int64_t block = L.k_type ? kQKK : kQK;
  check(k >= 0 && k % block == 0, "row of ", k, " elements is not a multiple of ", dtype_info(wtype).name,
        "'s block size ", block);
  check(k <= (int64_t{1} << 40), "row of ", k, " elements is too long");
  L.nb = k / block;
  size_t off = 0;
  auto take = [&](size_t bytes) {
    const size_t at = off;
    off += bytes;
    return at;
  };
  if (L.k_type) {
    L.units = L.nb;
    L.qs = take(kQKK);
    L.bs16 = take(16 * sizeof(int16_t));
    L.bs32 = take(8 * sizeof(int16_t));
    L.d = take(sizeof(float));
  } else {
    L.units = (L.nb + 3) / 4;
    const size_t E = static_cast<size_t>(L.lanes);
    L.qs = take(4 * kQK);
    if (wtype != DType::Q8_0) L.ebias = take(16 * sizeof(int32_t));
    L.escale = take(4 * E * sizeof(float));
    if (wtype == DType::Q4_1 || wtype == DType::Q5_1) L.emin = take(16 * sizeof(float));
    L.dx = take(4 * sizeof(float));
    L.sy = take(4 * sizeof(int32_t));
  }
  L.rec = align64(off);
  L.bytes = std::max<size_t>(L.rec * static_cast<size_t>(L.units), 64);
  return L;
}

void quantize_ref(DType t, const float* src, void* dst, int64_t n) {
  const int64_t nb = n / kQK;
  switch (t) {
    case DType::Q4_0:
      return quantize_q4_0(src, static_cast<BlockQ4_0*>(dst), nb);
    case DType::Q4_1:
      return quantize_q4_1(src, static_cast<BlockQ4_1*>(dst), nb);
    case DType::Q5_0:
      return quantize_q5_0(src, static_cast<BlockQ5_0*>(dst), nb);
    case DType::Q5_1:
      return quantize_q5_1(src, static_cast<BlockQ5_1*>(dst), nb);
    case DType::Q8_0:
      return quantize_q8_0(src, static_cast<BlockQ8_0*>(dst), nb);
    default:
      return quantize_ref_k(t, src, dst, n);
  }
}

void dequantize_ref(DType t, const void* src, float* dst, int64_t n) {
  const int64_t nb = n / kQK;
  switch (t) {
    case DType::Q4_0:
      return dequantize_q4_0(static_cast<const BlockQ4_0*>(src), dst, nb);
    case DType::Q4_1:
      return dequantize_q4_1(static_cast<const BlockQ4_1*>(src), dst, nb);
    case DType::Q5_0:
      return dequantize_q5_0(static_cast<const BlockQ5_0*>(src), dst, nb);
    case DType::Q5_1:
      return dequantize_q5_1(static_cast<const BlockQ5_1*>(src), dst, nb);
    case DType::Q8_0:
      return dequantize_q8_0(static_cast<const BlockQ8_0*>(src), dst, nb);
    default:
      return dequantize_ref_k(t, src, dst, n);
  }
}

void activation_ref(DType wtype, const float* x, int64_t k, void* xq) {
  if (is_k_type(wtype)) return activation_ref_k(wtype, x, k, xq);
  activation_ref_legacy(wtype, x, k, xq);
}

void dot_rows_ref(DType t, const uint8_t* W, size_t stride, int64_t r0, int64_t r1, const void* xq, int64_t k,
                  float* y) {
  switch (t) {
    case DType::Q4_0:
      return dot_rows_legacy<BlockQ4_0>(t, W, stride, r0, r1, xq, k, y);
    case DType::Q4_1:
      return dot_rows_legacy<BlockQ4_1>(t, W, stride, r0, r1, xq, k, y);
    case DType::Q5_0:
      return dot_rows_legacy<BlockQ5_0>(t, W, stride, r0, r1, xq, k, y);
    case DType::Q5_1:
      return dot_rows_legacy<BlockQ5_1>(t, W, stride, r0, r1, xq, k, y);
    case DType::Q8_0:
      return dot_rows_legacy<BlockQ8_0>(t, W, stride, r0, r1, xq, k, y);
    default:
      return dot_rows_ref_k(t, W, stride, r0, r1, xq, k, y);
  }
}

}  // namespace braid::quant
