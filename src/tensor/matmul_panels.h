// The panel kernels behind matmul and tensor_row_f32 for tensors with `panels` set
// (matmul_panels.cpp; the layout is described at pack_panels in braid/kernels.h).
#pragma once

#include <cstdint>

#include "braid/tensor.h"
#include "braid/thread_pool.h"

namespace braid {

// Tokens per group of the packed input: xg holds, for each group of up to kPanelGroup
// tokens from t0, element i of token t0 + t at xg[t0 * k + i * T + t] (T: the group's
// tokens). n * k floats; for one token, x itself.
constexpr int kPanelGroup = 12;
void pack_panel_inputs(const float* x, int n, int64_t k, float* xg, ThreadPool& pool);

// Rows [r0, r1) of y[n][W.rows()] = x · Wᵀ for W in panels, from x packed by
// pack_panel_inputs, on the calling thread. r0 is a multiple of kPanelRows.
void matmul_panels_rows(const Tensor& W, const float* xg, int n, float* y, int64_t r0, int64_t r1);

// Row r of W (in panels) as f32.
void tensor_panel_row_f32(const Tensor& W, int64_t r, float* dst);

}  // namespace braid
