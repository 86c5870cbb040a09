// Tensor element types. The numeric values are GGML's type ids, so a GGUF file's tensor
// type field maps to DType directly and block layouts are llama.cpp's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>

namespace braid {

enum class DType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  I8 = 24,
  I16 = 25,
  I32 = 26,
  I64 = 27,
  F64 = 28,
  BF16 = 30,
};

struct DTypeInfo {
  DType type;
  const char* name;  // GGML's name: "f32", "q4_0", "q4_K", ...
  int block_size;    // elements per block (1 for plain types)
  int block_bytes;   // bytes per block
};

// Info for a GGML type id, or nullptr when the id is unknown.
const DTypeInfo* dtype_info(uint32_t ggml_type);
const DTypeInfo& dtype_info(DType t);
const char* dtype_name(DType t);
// Parses "f32", "F16", "q8_0", "Q4_K" ...; throws braid::Error for unknown names.
DType dtype_from_name(const std::string& name);

// Bytes for a row of n elements; throws braid::Error when n is not a multiple of the
// block size or the size overflows.
size_t row_bytes(DType t, int64_t n);

// IEEE half and bfloat16 conversions (round to nearest even, NaN kept NaN).
float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);
inline float bf16_to_f32(uint16_t h) {
  uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
uint16_t f32_to_bf16(float f);

}  // namespace braid
