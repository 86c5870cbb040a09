// Fuzzes the GGUF reader: any bytes must parse or throw braid::Error, never crash, hang or
// read out of bounds. On success, touches every tensor byte and metadata value so that a
// bad pointer or size the parser let through shows up under ASan.
#include <cstddef>
#include <cstdint>

#include "braid/error.h"
#include "braid/gguf.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    auto g = braid::GgufFile::parse(data, size, "fuzz.gguf");
    volatile uint64_t sink = 0;
    for (const auto& t : g->tensors())
      for (size_t i = 0; i < t.nbytes; i += 64) sink = sink + t.data[i];
    for (const auto& t : g->tensors())
      if (t.nbytes) sink = sink + t.data[t.nbytes - 1] + static_cast<uint64_t>(t.nelements());
    for (const auto& [key, v] : g->metadata()) sink = sink + key.size() + v.array_size() + v.str.size();
    (void)g->get_u64("general.alignment", 32);
    (void)g->get_str("general.architecture", "");
  } catch (const braid::Error&) {
  }
  return 0;
}
