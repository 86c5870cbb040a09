// Model::Packed: one layer's (or the output's) matrices in panels (F16 / BF16, and
// Q4_0 / Q8_0 / Q4_K / Q6_K where supported; braid/model.h, "Panels"; made in
// packed.cpp, run by forward.cpp).
#pragma once

#include <memory>
#include <vector>

#include "base/aligned_vector.h"
#include "braid/model.h"

namespace braid {

struct Model::Packed {
  std::vector<AlignedVector<uint8_t>> buffers;
  std::vector<std::unique_ptr<Tensor>> tensors;  // views of buffers
  LayerWeights weights;                          // a layer's, its matrices in panels
  const Tensor* output = nullptr;                // the output's matrix in panels
};

}  // namespace braid
