// The compute kernels of a forward pass: plain functions over f32 activations with
// explicit shapes. Activations of n tokens are row-major [n][width].
//
// Determinism: every output element is computed by one fixed sequence of operations
// that depends neither on the thread count nor on how many tokens are in the batch, so a
// prompt fed at once and fed token by token give bit-identical results (on one CPU).
// Each kernel has a scalar reference in tests/test_kernels.cpp.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>

#include "braid/tensor.h"
#include "braid/thread_pool.h"

namespace braid {

// True when matmul / tensor_row_f32 handle weights of type t: F32, F16, BF16 and the
// block types of braid/quant.h (when built in).
bool matmul_supported(DType t);

// y[n][W.rows()] = x[n][W.cols()] · Wᵀ: row r of W (output feature r) dotted with each
// token's x. Rows are split across the pool; tokens go in blocks so each weight row is
// read once per block. Quantized W quantizes x to the block format's activation type
// first (as llama.cpp does), so results are those of its dot products.
void matmul(const Tensor& W, const float* x, int n, float* y, ThreadPool& pool);

// Several matmuls of one input (q, k and v; gate and up): parts[i].y = x · parts[i].wᵀ,
// bit for bit what separate matmul calls give. x is quantized once per weight type, and
// all the parts' rows are one job for the pool. Every part's W has x's width.
struct MatmulPart {
  const Tensor* w;
  float* y;  // [n][w->rows()]
};
void matmul(std::span<const MatmulPart> parts, const float* x, int n, ThreadPool& pool);

// Row r of W as f32 (embedding lookup); dequantizes block types.
void tensor_row_f32(const Tensor& W, int64_t r, float* dst);

// ---- Panels: weights repacked for matmul. ----
// A copy of a matrix with its rows in groups of kPanelRows (the last group padded with
// zero rows); matmul and tensor_row_f32 accept it (Tensor::panels set, the same type and
// shape).
// - F16 / BF16: each group stored k-major, row r's element i at ((r / 32) * cols + i) *
//   32 + r % 32. matmul computes each output as one chain of fused multiply-adds over i
//   in order: the same bits for any batch and thread count, but not those of the row
//   layout, whose dot products end in a horizontal sum. Prefill runs faster: a tile
//   converts one weight vector per 12 multiply-adds, not per 6, and needs no horizontal
//   sums.
// - Q4_0, Q8_0, Q4_K and Q6_K, where the CPU has the AVX-512 VNNI kernels: block column
//   by block column (braid/quant.h, "Panels"). The same bits as the row layout; decode streams
//   the weights closer to the memory bandwidth (no byte gathers or transposes).
constexpr int64_t kPanelRows = 32;
// F16, BF16; Q4_0, Q8_0, Q4_K, Q6_K where quant_panels_supported (worth packing here).
bool panels_supported(DType t);
// Bytes of W in panels (rows rounded up to a multiple of kPanelRows).
size_t panel_bytes(const Tensor& W);
// Writes W (rows, F16, BF16, Q4_0, Q8_0, Q4_K or Q6_K) in panels to dst (panel_bytes(W), 64-byte
// aligned for speed), split over the pool: panels [p0, p1) only (p1 < 0: to the last), so
// that a caller can give back the rows' pages of each slice before the next. The caller
// makes the Tensor: W's fields, data = dst, nbytes = panel_bytes(W), panels = true.
void pack_panels(const Tensor& W, uint8_t* dst, ThreadPool& pool, int64_t p0 = 0, int64_t p1 = -1);

// Dot product of two f32 vectors (SIMD, fixed summation order).
float dot_f32(const float* a, const float* b, int64_t n);
// y[r] = dot_f32(a + r * stride, x, n) for r in [0, rows), on the calling thread (one
// dispatch for all rows: attention scores against the rows of a KV cache).
void dot_rows_f32(const float* a, int64_t stride, int64_t rows, const float* x, int64_t n, float* y);

// y[t] = x[t] / sqrt(mean(x[t]^2) + eps) * w, for n rows of width d. y may alias x.
void rmsnorm(const float* x, const float* w, int n, int d, float eps, float* y);
// y[t] = (x[t] - mean) / sqrt(var + eps) * w + b (b may be null). y may alias x.
void layernorm(const float* x, const float* w, const float* b, int n, int d, float eps, float* y);

// Rotary position embedding, in place, on x = [n][n_heads * head_dim] at positions
// pos0 .. pos0+n-1. The first rope_dim dims of each head rotate, in pairs
// (x[2i], x[2i+1]) or, with neox, (x[i], x[i + rope_dim/2]), by the angle
// pos * freq_scale * theta^(-2i/rope_dim) / freq_factors[i] (freq_factors may be null).
struct RopeParams {
  int head_dim = 0;
  int rope_dim = 0;
  float theta = 10000.0f;
  float freq_scale = 1.0f;
  const float* freq_factors = nullptr;  // rope_dim/2 divisors, or null
  bool neox = false;
};
// cos/sin of the angles of positions pos0..pos0+n-1: [n][rope_dim/2] each; computed once
// per batch and shared by all heads and layers.
void rope_table(const RopeParams& p, int pos0, int n, float* cos_out, float* sin_out);
void rope_apply(const RopeParams& p, const float* cos_t, const float* sin_t, int n, int n_heads, float* x);
// Both steps at once (tests, one-off use).
void rope(const RopeParams& p, int pos0, int n, int n_heads, float* x);

// In place numerically stable softmax of x[0..n).
void softmax(float* x, int64_t n);
// gate[i] = silu(gate[i]) * up[i].
void silu_mul(float* gate, const float* up, int64_t n);
// GELU, tanh approximation (GPT-2's "gelu_new"), in place.
void gelu_tanh(float* x, int64_t n);
// y[t][i] += b[i] for n rows of width d.
void add_bias(float* y, const float* b, int n, int d);
// y[i] += x[i].
void add_inplace(float* y, const float* x, int64_t n);

// Causal multi-head attention with grouped-query heads over a KV cache.
// q: [n][n_heads * head_dim], already rotated; token t sits at position pos0 + t and
// attends to cache positions [0, pos0 + t]. k, v: [>= pos0 + n][n_kv_heads * head_dim].
// out: [n][n_heads * head_dim]. Scores are scaled by 1/sqrt(head_dim), softmax in f32
// with max subtraction. Parallel over (token, head).
struct AttentionShape {
  int n_heads = 0;
  int n_kv_heads = 0;
  int head_dim = 0;
};
void attention(const AttentionShape& s, const float* q, int n, int pos0, const float* k, const float* v,
               float* out, ThreadPool& pool);

}  // namespace braid
