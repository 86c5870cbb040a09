// The output side shared by the converters: metadata and a plan for every tensor, then
// one pass that converts what needs converting and writes the GGUF file.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "braid/convert.h"
#include "braid/gguf.h"
#include "convert/scratch.h"

namespace braid::convert {

// How a source tensor becomes a GGUF tensor.
enum class Layout {
  kSame,         // same element order (type may change)
  kPermuteRows,  // rotary rows, rotate-half -> interleaved (see permute_rows)
  kTranspose,    // source [ne[0]][ne[1]]: GPT-2 Conv1D weights stored [in][out]
};

struct TensorPlan {
  std::string name;         // GGUF tensor name
  DType type = DType::F32;  // output element type
  std::vector<int64_t> ne;  // GGUF dimensions, ne[0] innermost
  const uint8_t* src = nullptr;
  DType src_type = DType::F32;  // F32, F16 or BF16
  Layout layout = Layout::kSame;
  int64_t n_head = 0;  // kPermuteRows: heads the rows are grouped in
};

class Builder {
 public:
  GgufWriter& meta() { return writer_; }
  // Keeps an object alive until the file is written (mapped sources that plans point into).
  void keep(std::shared_ptr<const void> p) { keep_.push_back(std::move(p)); }
  void add(TensorPlan p) { plans_.push_back(std::move(p)); }
  size_t n_tensors() const { return plans_.size(); }

  // Converts tensors that change type or layout (into scratch space beside `out`), then
  // writes `out` atomically. Fills the result's tensor counts.
  void write(const std::string& out, const ConvertOptions& opt, ConvertResult& result);

 private:
  GgufWriter writer_;
  std::vector<std::shared_ptr<const void>> keep_;
  std::vector<TensorPlan> plans_;
  Scratch scratch_;
};

// The output type of a tensor: the requested type for matrices, F32 for vectors
// (norms, biases), as llama.cpp does.
DType output_type(const ConvertOptions& opt, size_t n_dims);

// general.file_type for a model whose matrices have type t (llama_ftype).
uint32_t gguf_file_type(DType t);

}  // namespace braid::convert
