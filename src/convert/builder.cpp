#include "convert/builder.h"

#include <algorithm>

#include "braid/error.h"
#include "convert/elements.h"

namespace braid::convert {
namespace {

size_t plan_bytes(const TensorPlan& p) {
  size_t n = 1;
  for (int64_t d : p.ne) n *= static_cast<size_t>(d);
  return n * elem_size(p.type);
}

// Keeps every converted tensor 32-byte aligned in scratch space.
size_t align(size_t n) { return (n + 31) & ~size_t{31}; }

bool needs_work(const TensorPlan& p) { return p.layout != Layout::kSame || p.type != p.src_type; }

}  // namespace

DType output_type(const ConvertOptions& opt, size_t n_dims) { return n_dims >= 2 ? opt.type : DType::F32; }

uint32_t gguf_file_type(DType t) {
  switch (t) {
    case DType::F16:
      return 1;  // LLAMA_FTYPE_MOSTLY_F16
    case DType::BF16:
      return 32;  // LLAMA_FTYPE_MOSTLY_BF16
    default:
      return 0;  // LLAMA_FTYPE_ALL_F32
  }
}

void Builder::write(const std::string& out, const ConvertOptions& opt, ConvertResult& result) {
  size_t scratch_bytes = 0;
  for (const TensorPlan& p : plans_)
    if (needs_work(p)) scratch_bytes += align(plan_bytes(p));
  scratch_.reserve(out, scratch_bytes);

  size_t offset = 0;
  uint64_t total = 0;
  for (const TensorPlan& p : plans_) {
    const size_t nbytes = plan_bytes(p);
    total += nbytes;
    if (!needs_work(p)) {
      writer_.add_tensor(p.name, p.type, p.ne, p.src, nbytes);
      continue;
    }
    uint8_t* dst = scratch_.data() + offset;
    // A 1-D tensor (a bias) permuted as a column: rows of one element.
    const int64_t cols = p.ne.size() >= 2 ? p.ne[0] : 1;
    const int64_t rows = static_cast<int64_t>(nbytes / elem_size(p.type)) / cols;
    switch (p.layout) {
      case Layout::kSame:
        convert_run(p.src, p.src_type, dst, p.type, nbytes / elem_size(p.type));
        break;
      case Layout::kPermuteRows:
        permute_rows(p.src, p.src_type, dst, p.type, rows, cols, p.n_head);
        break;
      case Layout::kTranspose:  // the source is [cols][rows]
        transpose(p.src, p.src_type, dst, p.type, cols, rows);
        break;
    }
    writer_.add_tensor(p.name, p.type, p.ne, dst, nbytes);
    offset += align(nbytes);
    if (opt.progress) opt.progress("converting", std::min(offset, scratch_bytes), scratch_bytes);
  }
  if (opt.progress)
    writer_.write(out, [&](uint64_t done, uint64_t all) { opt.progress("writing", done, all); });
  else
    writer_.write(out);
  result.n_tensors = plans_.size();
  result.tensor_bytes = total;
}

}  // namespace braid::convert
