#include "braid/tensor.h"

#include "braid/error.h"

namespace braid {

std::string Tensor::shape_string() const {
  std::string s = "[";
  for (int i = 0; i < n_dims; ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

}  // namespace braid
