// Quantized weight blocks (GGML/llama.cpp layouts) and their dot-product kernels.
//
// Weight rows are stored exactly as GGUF files hold them, so a tensor quantized by
// llama.cpp is used in place (mmap, zero copy). Block layouts, bit for bit:
//
//   q8_0  (32 elements, 34 bytes): f16 d, int8 qs[32];             x = d * q
//   q4_0  (32 elements, 18 bytes): f16 d, u8 qs[16];               x = d * (q - 8)
//         low nibbles hold elements 0..15, high nibbles 16..31
//   q4_1  (32 elements, 20 bytes): f16 d, f16 m, u8 qs[16];        x = d * q + m
//   q5_0  (32 elements, 22 bytes): f16 d, u32 qh, u8 qs[16];       x = d * (q - 16)
//   q5_1  (32 elements, 24 bytes): f16 d, f16 m, u32 qh, u8 qs[16]; x = d * q + m
//         (bit j of qh is the 5th bit of element j)
//   q4_K  (256 elements, 144 bytes): f16 d, f16 dmin, 12 bytes of 6-bit scales and mins
//         for 8 sub-blocks of 32, u8 qs[128];                      x = d*sc*q - dmin*m
//   q5_K  (256 elements, 176 bytes): as q4_K plus u8 qh[32] (5th bits) before qs
//   q6_K  (256 elements, 210 bytes): u8 ql[128], u8 qh[64], int8 scales[16], f16 d;
//         16 sub-blocks of 16,                                     x = d * sc * (q - 32)
//   q2_K  (256 elements, 84 bytes): 16 bytes of 4-bit scales | mins << 4, u8 qs[64] of
//         2-bit codes, f16 d, f16 dmin;                            x = d*sc*q - dmin*m
//   q3_K  (256 elements, 110 bytes): u8 hmask[32] (3rd bits), u8 qs[64] (2 low bits),
//         12 bytes of 6-bit scales, f16 d;                         x = d*(sc-32)*(q-4)
//
// Dot products follow llama.cpp: the activation x is first quantized to 8 bits per
// element (q8_0's blocks of 32 for the legacy types, q8_K's blocks of 256 with
// 16-element sums for the K types; same values and scales as llama.cpp's
// quantize_row_q8_0_ref / quantize_row_q8_K_ref), then each weight block is multiplied
// in integers (exactly) and scaled in f32. The activation buffer's internal layout is
// private to this module (it is arranged for the SIMD kernels): size it with
// quant_activation_bytes and fill it with quant_activation only.
//
// Kernels: hand-written AVX-512 VNNI/VBMI (Ice Lake, Sapphire Rapids, Zen 4) and AVX2
// (Haswell and later, and AVX-512 without VNNI) kernels, portable Highway kernels for
// every other target (SSE4, NEON, SVE, ...), chosen at run time; all are checked
// against the scalar reference (src/tensor/quant_ref*.cpp) by tests/test_quant.cpp.
//
// Determinism: on one CPU, the value computed for (row, activation) is a fixed
// sequence of operations: it does not depend on r0/r1 (how rows are split between
// threads) nor on how many activations quant_matmul_tile handles at once, so
// quant_matmul_tile gives bit-identical results to quant_dot_rows.
//
// Errors: shapes that do not fit (k not a multiple of the block size, a row stride
// shorter than a row, an unsupported type, a misaligned activation buffer) throw
// braid::Error.
#pragma once

#include <cstddef>
#include <cstdint>

#include "braid/dtype.h"

namespace braid {

// True for the block types with dot-product kernels: Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
// Q2_K, Q3_K, Q4_K, Q5_K, Q6_K (Q2_K and Q3_K only with the portable kernels so far).
bool quant_supported(DType t);

// The 8-bit block type x is quantized to for dot products with rows of type wtype:
// Q8_0 for the legacy types, Q8_K for the K types.
DType quant_activation_type(DType wtype);

// Bytes of the buffer quant_activation fills for a vector of k elements (k a multiple
// of wtype's block size); a multiple of 64. The buffer must be 4-byte aligned (any
// malloc/new/vector memory is); 64-byte alignment is fastest.
size_t quant_activation_bytes(DType wtype, int64_t k);

// Quantizes x[0..k) for dot products with rows of type wtype (llama.cpp's
// quantize_row_q8_0_ref / quantize_row_q8_K_ref values; SIMD) into xq.
void quant_activation(DType wtype, const float* x, int64_t k, void* xq);

// y[r - r0] = dot(row r of W, x) for r in [r0, r1). Row r starts at W + r*row_stride
// and holds k elements (row_stride >= row_bytes(wtype, k)). xq is quant_activation's
// output for wtype and the same k. Single-threaded; callers split rows across threads.
void quant_dot_rows(DType wtype, const uint8_t* W, size_t row_stride, int64_t r0, int64_t r1, const void* xq,
                    int64_t k, float* y);

// Several activations at once (prompt processing): for t in [0, n) and r in [r0, r1),
//   y[t*ldy + (r - r0)] = dot(row r of W, x_t)
// where x_t is quant_activation's output at (const char*)xq + t*xq_stride (xq_stride a
// multiple of 4, at least quant_activation_bytes(wtype, k); ldy >= r1 - r0). Each
// weight block is decoded once for a tile of 4 activations, so this is much faster
// than n calls of quant_dot_rows, and gives the same bits. Single-threaded: callers
// split rows (or activations) across threads.
void quant_matmul_tile(DType wtype, const uint8_t* W, size_t row_stride, int64_t r0, int64_t r1,
                       const void* xq, size_t xq_stride, int64_t n, int64_t k, float* y, size_t ldy);

// ---- Panels: q4_0, q8_0, q4_K and q6_K matrices repacked for AVX-512 VNNI. ----
// A copy of a matrix in panels of kQuantPanelRows rows (the last padded with zero rows),
// each stored block column by block column: for block b, the 32 rows' f16 fields side by
// side (d; q4_K: d, then dmin; 64 bytes each), then the rest of their blocks (codes;
// q4_K: the 12 scale bytes, then the codes; q6_K: ql, qh, scales), 16 rows per 64-byte
// vector, 4 bytes of one row per 32-bit lane (q8_0's codes stored XOR 0x80, i.e. w +
// 128). A block column is 32 blocks' bytes, so the copy is the size of the rows; it is
// one contiguous stream, and decode reads 16 rows' codes with each plain load: no byte
// gathers, no transposes of per-row sums (the sums come out with rows in lanes). The
// values are the file's, so a panel matmul gives the row kernels' bits exactly (same
// integer block sums, same f32 order), on every target. Layout details:
// src/tensor/quant_panels.h.
constexpr int64_t kQuantPanelRows = 32;
// Whether panels of type t run natively on this CPU (q4_0, q8_0, q4_K and q6_K with the
// AVX-512 VNNI kernels). quant_matmul_panels accepts panels anywhere (elsewhere it
// unpacks each panel to rows first), but only then is packing worth it.
bool quant_panels_supported(DType t);
// Bytes of a rows x k matrix of type t in panels.
size_t quant_panel_bytes(DType t, int64_t rows, int64_t k);
// Writes panels [p0, p1) of the rows x k matrix W (rows row_stride bytes apart) to dst
// (quant_panel_bytes; 64-byte aligned for speed). Single-threaded.
void quant_pack_panels(DType t, const uint8_t* W, size_t row_stride, int64_t rows, int64_t k, int64_t p0,
                       int64_t p1, uint8_t* dst);
// Row r of the panels P (a k-element matrix of type t) back in the row layout, into row
// (row_bytes(t, k) bytes).
void quant_panel_row(DType t, const uint8_t* P, int64_t k, int64_t r, uint8_t* row);
// quant_matmul_tile for a matrix in panels: rows [r0, r1), r0 a multiple of
// kQuantPanelRows. Same bits as quant_matmul_tile on the rows.
void quant_matmul_panels(DType t, const uint8_t* P, int64_t r0, int64_t r1, const void* xq, size_t xq_stride,
                         int64_t n, int64_t k, float* y, size_t ldy);

// dst[0..n) = the values of a row of type t (n a multiple of the block size). Accepts
// the quant_supported types, F32, F16 and BF16. Matches llama.cpp's dequantize_row_*
// exactly.
void dequantize_row(DType t, const void* src, float* dst, int64_t n);

// Quantizes src[0..n) into a row of type t with llama.cpp's reference quantizers
// (quantize_row_*_ref without importance matrix: round-to-nearest for the legacy types,
// make_qkx2_quants / make_qx_quants / make_q3_quants scale searches for the K types),
// so rows written by braid match llama-quantize's byte for byte. Accepts the same types
// as dequantize_row. The K-type searches are slow (a few M elements/s per thread).
void quantize_row(DType t, const float* src, void* dst, int64_t n);

// Name of the SIMD target the kernels run on ("AVX3_DL", "AVX2", "NEON", ...).
const char* quant_simd_target();

}  // namespace braid
