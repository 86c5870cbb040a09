// Hugging Face safetensors files (mmap, zero-copy): an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets}, "__metadata__": {...}},
// then the raw data. Every field is validated (offsets inside the file, no overlap,
// size = product(shape) * dtype size, shapes non-negative and not overflowing), so a
// bad file gives one braid::Error, never a crash.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "braid/mapped_file.h"

namespace braid {

struct StTensor {
  std::string name;
  std::string dtype;           // "F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL", ...
  std::vector<int64_t> shape;  // row-major, outermost first (PyTorch order)
  const uint8_t* data = nullptr;
  size_t nbytes = 0;

  int64_t numel() const;
};

class SafetensorsFile {
 public:
  static std::unique_ptr<SafetensorsFile> open(const std::string& path);
  // Parses bytes someone else keeps alive (fuzzing, tests).
  static std::unique_ptr<SafetensorsFile> parse(const uint8_t* data, size_t size, const std::string& label);

  const std::string& label() const { return label_; }
  const std::vector<StTensor>& tensors() const { return tensors_; }  // sorted by data offset
  const StTensor* find(const std::string& name) const;
  const StTensor& get(const std::string& name) const;  // throws "<label>: no tensor NAME"
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsFile() = default;
  std::shared_ptr<MappedFile> file_;
  std::string label_;
  std::vector<StTensor> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// Element conversions; throw braid::Error for dtypes that do not convert.
std::vector<float> st_to_f32(const StTensor& t);  // F32, F16, BF16, F64
// I32, I64/U32/U64 (range-checked), I16, U16, I8, U8, BOOL
std::vector<int32_t> st_to_i32(const StTensor& t);
// Bytes per element: also U16, U32, U64, F8_E4M3, F8_E5M2 (parsed, not converted); 0 for unknown dtypes.
size_t st_dtype_size(const std::string& dtype);

}  // namespace braid
