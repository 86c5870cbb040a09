// The public quant API (braid/quant.h): argument checks, then the reference or SIMD code.
#include "braid/quant.h"

#include <cstring>

#include "braid/error.h"
#include "tensor/quant_act.h"
#include "tensor/quant_internal.h"

namespace braid {
namespace {

void check_blocks(DType t, int64_t n) {
  const int block = dtype_info(t).block_size;
  check(n >= 0 && n % block == 0, "row of ", n, " elements is not a multiple of ", dtype_info(t).name,
        "'s block size ", block);
}

void check_row(DType t, int64_t k) {
  check(quant_supported(t), "no quantized dot-product kernels for tensor type ", dtype_info(t).name);
  check_blocks(t, k);
}

void check_rows(DType t, size_t row_stride, int64_t r0, int64_t r1, const void* xq, int64_t k) {
  check_row(t, k);
  check(r0 >= 0 && r0 <= r1, "bad row range [", r0, ", ", r1, ")");
  check(row_stride >= row_bytes(t, k), "row stride ", row_stride, " is shorter than a ", dtype_info(t).name,
        " row of ", k, " elements");
  check(reinterpret_cast<uintptr_t>(xq) % 4 == 0, "quantized activation buffer is not 4-byte aligned");
}

// Types quantize_row / dequantize_row convert: the quant_supported ones.
void check_convertible(DType t, int64_t n) {
  check(quant_supported(t), "cannot convert tensor type ", dtype_info(t).name, " to or from f32");
  check_blocks(t, n);
}

}  // namespace

bool quant_supported(DType t) {
  switch (t) {
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q4_1:
    case DType::Q5_0:
    case DType::Q5_1:
    case DType::Q2_K:
    case DType::Q3_K:
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K:
      return true;
    default:
      return false;
  }
}

DType quant_activation_type(DType wtype) {
  check_row(wtype, 0);
  return dtype_info(wtype).block_size == 256 ? DType::Q8_K : DType::Q8_0;
}

size_t quant_activation_bytes(DType wtype, int64_t k) {
  check_row(wtype, k);
  return quant::act_layout(wtype, k).bytes;
}

void quant_activation(DType wtype, const float* x, int64_t k, void* xq) {
  check_row(wtype, k);
  check(reinterpret_cast<uintptr_t>(xq) % 4 == 0, "quantized activation buffer is not 4-byte aligned");
  quant::activation_simd(wtype, x, k, xq);
}

void quant_dot_rows(DType wtype, const uint8_t* W, size_t row_stride, int64_t r0, int64_t r1, const void* xq,
                    int64_t k, float* y) {
  check_rows(wtype, row_stride, r0, r1, xq, k);
  if (r0 == r1) return;
  quant::dot_rows_simd(wtype, W, row_stride, r0, r1, xq, k, y);
}

void quant_matmul_tile(DType wtype, const uint8_t* W, size_t row_stride, int64_t r0, int64_t r1,
                       const void* xq, size_t xq_stride, int64_t n, int64_t k, float* y, size_t ldy) {
  check_rows(wtype, row_stride, r0, r1, xq, k);
  check(n >= 0, "negative activation count ", n);
  if (n == 0 || r0 == r1) return;
  check(n == 1 || xq_stride >= quant_activation_bytes(wtype, k), "activation stride ", xq_stride,
        " is shorter than one quantized activation");
  check(n == 1 || xq_stride % 4 == 0, "activation stride ", xq_stride, " is not a multiple of 4");
  check(n == 1 || ldy >= static_cast<size_t>(r1 - r0), "output stride ", ldy, " is shorter than ", r1 - r0,
        " rows");
  quant::matmul_tile_simd(wtype, W, row_stride, r0, r1, xq, xq_stride, n, k, y, ldy);
}

void dequantize_row(DType t, const void* src, float* dst, int64_t n) {
  switch (t) {
    case DType::F32:
      check(n >= 0, "negative element count ", n);
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::F16: {
      check(n >= 0, "negative element count ", n);
      const uint8_t* p = static_cast<const uint8_t*>(src);
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        dst[i] = f16_to_f32(h);
      }
      return;
    }
    case DType::BF16: {
      check(n >= 0, "negative element count ", n);
      const uint8_t* p = static_cast<const uint8_t*>(src);
      for (int64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, p + 2 * i, 2);
        dst[i] = bf16_to_f32(h);
      }
      return;
    }
    default:
      check_convertible(t, n);
      quant::dequantize_ref(t, src, dst, n);
  }
}

void quantize_row(DType t, const float* src, void* dst, int64_t n) {
  switch (t) {
    case DType::F32:
      check(n >= 0, "negative element count ", n);
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case DType::F16:
    case DType::BF16: {
      check(n >= 0, "negative element count ", n);
      uint8_t* p = static_cast<uint8_t*>(dst);
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = t == DType::F16 ? f32_to_f16(src[i]) : f32_to_bf16(src[i]);
        std::memcpy(p + 2 * i, &h, 2);
      }
      return;
    }
    default:
      check_convertible(t, n);
      quant::quantize_ref(t, src, dst, n);
  }
}

const char* quant_simd_target() { return quant::simd_target_name(); }

}  // namespace braid
