// Internal entry points of the quant module, shared by quant.cpp, the SIMD kernels and
// the tests (which check every SIMD kernel against the scalar reference).
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "braid/dtype.h"

namespace braid::quant {

// ---- scalar reference (quant_ref.cpp, quant_ref_k.cpp) ----

// llama.cpp's quantize_row_*_ref for a supported block type; n a multiple of its block.
void quantize_ref(DType t, const float* src, void* dst, int64_t n);
// llama.cpp's dequantize_row_*.
void dequantize_ref(DType t, const void* src, float* dst, int64_t n);
// Fills an activation buffer (layout in quant_act.h) from x.
void activation_ref(DType wtype, const float* x, int64_t k, void* xq);
// y[r - r0] = dot(row r, activation): llama.cpp's generic ggml_vec_dot_*_q8_* math
// (integer block sums, then f32 scaling in block order).
void dot_rows_ref(DType wtype, const uint8_t* W, size_t row_stride, int64_t r0, int64_t r1, const void* xq,
                  int64_t k, float* y);

// llama.cpp's rounding helper: round to nearest, ties to even, for |x| < 2^22.
inline int nearest_int(float fval) {
  float val = fval + 12582912.f;
  int i;
  static_assert(sizeof(i) == sizeof(val));
  __builtin_memcpy(&i, &val, sizeof(int));
  return (i & 0x007fffff) - 0x00400000;
}

// ---- SIMD kernels (quant_simd.cpp), runtime-dispatched ----

// Same output as activation_ref, bit for bit.
void activation_simd(DType wtype, const float* x, int64_t k, void* xq);
void dot_rows_simd(DType wtype, const uint8_t* W, size_t row_stride, int64_t r0, int64_t r1, const void* xq,
                   int64_t k, float* y);
void matmul_tile_simd(DType wtype, const uint8_t* W, size_t row_stride, int64_t r0, int64_t r1,
                      const void* xq, size_t xq_stride, int64_t n, int64_t k, float* y, size_t ldy);
// Panels (quant_panels.h): false when the current target has no panel kernel for t
// (the caller falls back to unpacking rows).
bool matmul_panels_simd(DType wtype, const uint8_t* P, int64_t r0, int64_t r1, const void* xq, size_t xq_stride,
                        int64_t n, int64_t k, float* y, size_t ldy);
// Whether the current target has panel kernels (AVX-512 VNNI).
bool panels_native_simd();
const char* simd_target_name();
// Which kernel family quant_dot_rows runs for t on the current target: "avx512-vnni",
// "portable" or "scalar".
const char* simd_kernel_name(DType t);
// Highway targets compiled into the kernels that this CPU can run, best first (tests
// run each via hwy::SetSupportedTargetsForTest).
std::vector<int64_t> simd_targets();

}  // namespace braid::quant
