// Block-quantized matrices in panels (braid/quant.h, "Panels"): packing, reading rows back,
// and the matmul entry point, with a fallback for targets without panel kernels.
#include "tensor/quant_panels.h"

#include <algorithm>
#include <cstring>
#include <vector>

#include "braid/error.h"
#include "braid/quant.h"
#include "tensor/quant_blocks.h"
#include "tensor/quant_internal.h"

namespace braid {

using quant::PanelBlockBytes;
using quant::PanelFormatOf;
using quant::PanelHeadAt;
using quant::PanelPayloadAt;
using quant::PanelType;

namespace {

void check_panels(DType t, int64_t k) {
  check(PanelType(t), "no panel layout for tensor type ", dtype_info(t).name);
  const int block = dtype_info(t).block_size;
  check(k >= 0 && k % block == 0, "row of ", k, " elements is not a multiple of ", dtype_info(t).name,
        "'s block of ", block);
}

int64_t blocks_per_row(DType t, int64_t k) { return k / dtype_info(t).block_size; }

int64_t panel_count(int64_t rows) { return (rows + kQuantPanelRows - 1) / kQuantPanelRows; }

}  // namespace

bool quant_panels_supported(DType t) { return PanelType(t) && quant::panels_native_simd(); }

size_t quant_panel_bytes(DType t, int64_t rows, int64_t k) {
  check_panels(t, k);
  check(rows >= 0, "negative row count ", rows);
  return static_cast<size_t>(panel_count(rows) * blocks_per_row(t, k) * PanelBlockBytes(t));
}

void quant_pack_panels(DType t, const uint8_t* W, size_t row_stride, int64_t rows, int64_t k, int64_t p0,
                       int64_t p1, uint8_t* dst) {
  check_panels(t, k);
  check(row_stride >= row_bytes(t, k), "row stride ", row_stride, " is shorter than a ", dtype_info(t).name,
        " row of ", k, " elements");
  check(0 <= p0 && p0 <= p1 && p1 <= panel_count(rows), "pack: panels [", p0, ", ", p1, ") of ",
        panel_count(rows));
  const int64_t nb = blocks_per_row(t, k), bb = PanelBlockBytes(t);
  const size_t block = dtype_info(t).block_bytes;
  const quant::PanelFormat f = PanelFormatOf(t);
  for (int64_t p = p0; p < p1; ++p) {
    uint8_t* panel = dst + p * nb * bb;
    std::memset(panel, 0, static_cast<size_t>(nb * bb));  // padding rows: zero scales
    const int64_t n_rows = std::min(kQuantPanelRows, rows - p * kQuantPanelRows);
    // Row by row (each row read once, in order); a panel (nb * bb bytes, 36 KiB for a
    // 2048-wide q4_0 matrix) stays in L2 while its rows are scattered into it.
    for (int rr = 0; rr < n_rows; ++rr) {
      const uint8_t* row = W + (p * kQuantPanelRows + rr) * static_cast<int64_t>(row_stride);
      for (int64_t b = 0; b < nb; ++b) {
        const uint8_t* src = row + b * static_cast<int64_t>(block);
        uint8_t* col = panel + b * bb;
        for (int h = 0; h < f.heads; ++h) std::memcpy(col + PanelHeadAt(h, rr), src + f.head_at + 2 * h, 2);
        const uint8_t* payload = src + f.payload_at;
        for (int q = 0; q < f.payload; q += 4) {
          uint8_t four[4];
          for (int i = 0; i < 4; ++i) four[i] = static_cast<uint8_t>(payload[q + i] ^ f.flip);
          std::memcpy(col + PanelPayloadAt(t, rr, q), four, 4);
        }
      }
    }
  }
}

void quant_panel_row(DType t, const uint8_t* P, int64_t k, int64_t r, uint8_t* row) {
  check_panels(t, k);
  check(r >= 0, "negative row ", r);
  const int64_t nb = blocks_per_row(t, k), bb = PanelBlockBytes(t);
  const size_t block = dtype_info(t).block_bytes;
  const uint8_t* panel = P + (r / kQuantPanelRows) * nb * bb;
  const int rr = static_cast<int>(r % kQuantPanelRows);
  const quant::PanelFormat f = PanelFormatOf(t);
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* col = panel + b * bb;
    uint8_t* out = row + b * static_cast<int64_t>(block);
    for (int h = 0; h < f.heads; ++h) std::memcpy(out + f.head_at + 2 * h, col + PanelHeadAt(h, rr), 2);
    for (int q = 0; q < f.payload; ++q)
      out[f.payload_at + q] = static_cast<uint8_t>(col[PanelPayloadAt(t, rr, q)] ^ f.flip);
  }
}

void quant_matmul_panels(DType t, const uint8_t* P, int64_t r0, int64_t r1, const void* xq, size_t xq_stride,
                         int64_t n, int64_t k, float* y, size_t ldy) {
  check_panels(t, k);
  check(r0 >= 0 && r0 <= r1 && r0 % kQuantPanelRows == 0, "panel matmul: bad row range [", r0, ", ", r1, ")");
  check(n >= 0, "negative activation count ", n);
  check(reinterpret_cast<uintptr_t>(xq) % 4 == 0, "quantized activation buffer is not 4-byte aligned");
  check(n <= 1 || (xq_stride >= quant_activation_bytes(t, k) && xq_stride % 4 == 0), "activation stride ",
        xq_stride, " does not fit");
  check(n <= 1 || ldy >= static_cast<size_t>(r1 - r0), "output stride ", ldy, " is shorter than ", r1 - r0,
        " rows");
  if (n == 0 || r0 == r1) return;
  if (quant::matmul_panels_simd(t, P, r0, r1, xq, xq_stride, n, k, y, ldy)) return;
  // No panel kernels on this target: each panel back to rows, then the row kernels
  // (same bits as on the original rows).
  const size_t rb = row_bytes(t, k);
  std::vector<uint8_t> rows(rb * kQuantPanelRows);
  for (int64_t p0 = r0; p0 < r1; p0 += kQuantPanelRows) {
    const int64_t m = std::min(kQuantPanelRows, r1 - p0);
    for (int64_t i = 0; i < m; ++i)
      quant_panel_row(t, P, k, p0 + i, rows.data() + i * static_cast<int64_t>(rb));
    quant_matmul_tile(t, rows.data(), rb, 0, m, xq, xq_stride, n, k, y + (p0 - r0),
                      n <= 1 ? static_cast<size_t>(m) : ldy);
  }
}

}  // namespace braid
