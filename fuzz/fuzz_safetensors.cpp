// Fuzzes the safetensors reader: any bytes must parse or throw braid::Error, never crash,
// hang or read out of bounds. On success, converts every tensor that converts, so that a
// bad pointer or size the parser let through shows up under ASan.
#include <cstddef>
#include <cstdint>

#include "braid/error.h"
#include "braid/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto st = braid::SafetensorsFile::parse(data, size, "fuzz.safetensors");
    volatile size_t sink = 0;
    for (const auto& t : st->tensors()) {
      if (t.dtype == "F32" || t.dtype == "F16" || t.dtype == "BF16" || t.dtype == "F64") {
        sink = sink + braid::st_to_f32(t).size();
      } else {
        try {
          sink = sink + braid::st_to_i32(t).size();
        } catch (const braid::Error&) {  // out-of-range values, unconvertible dtypes
        }
      }
    }
  } catch (const braid::Error&) {
  }
  return 0;
}
