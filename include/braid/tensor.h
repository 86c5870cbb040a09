// A view of one tensor's bytes (weights in a mapped file, or a buffer someone owns).
// Dimensions follow GGML: ne[0] is the contiguous (innermost) dimension, so a weight
// matrix of `rows` output features by `cols` input features has ne = {cols, rows}.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "braid/dtype.h"

namespace braid {

struct Tensor {
  std::string name;
  DType type = DType::F32;
  int n_dims = 0;
  int64_t ne[4] = {1, 1, 1, 1};
  const uint8_t* data = nullptr;
  size_t nbytes = 0;
  // The rows are not stored one after another but in panels (braid/kernels.h,
  // pack_panels): row() and row_size() do not apply; matmul and tensor_row_f32 do.
  bool panels = false;

  int64_t nelements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  int64_t cols() const { return ne[0]; }
  int64_t rows() const { return ne[1] * ne[2] * ne[3]; }
  size_t row_size() const { return row_bytes(type, ne[0]); }
  const uint8_t* row(int64_t r) const { return data + static_cast<size_t>(r) * row_size(); }
  // "[64, 512]" (GGML order), for error messages.
  std::string shape_string() const;
};

}  // namespace braid
