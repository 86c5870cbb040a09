// Element-level work of the converters: changing F32/F16/BF16 element types and the two
// layout changes GGUF needs (rotary row permutation, transposition).
#pragma once

#include <cstddef>
#include <cstdint>

#include "braid/dtype.h"

namespace braid::convert {

// True for the element types the converters read and write: F32, F16, BF16.
bool is_float_type(DType t);
size_t elem_size(DType t);  // 4 or 2

// Converts n elements of type st at src into type dt at dst (memcpy when the types match,
// so an F32 -> F32 copy is bit-exact).
void convert_run(const uint8_t* src, DType st, uint8_t* dst, DType dt, size_t n);

// Row-major [rows][cols] -> [rows][cols] with rows reordered from Hugging Face's
// rotate-half layout to GGUF's interleaved one, per head, as llama.cpp's
// LlamaModel.permute: w.reshape(n_head, 2, rows/n_head/2, cols).swapaxes(1, 2).
// rows must be a multiple of 2 * n_head.
void permute_rows(const uint8_t* src, DType st, uint8_t* dst, DType dt, int64_t rows, int64_t cols,
                  int64_t n_head);

// Row-major [rows][cols] -> row-major [cols][rows].
void transpose(const uint8_t* src, DType st, uint8_t* dst, DType dt, int64_t rows, int64_t cols);

}  // namespace braid::convert
