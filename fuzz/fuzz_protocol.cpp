// Fuzz target for the wire protocol decoder: any bytes either decode into a frame that
// re-encodes to exactly the same bytes (the encoding is canonical) or throw braid::Error.
// Crashes, sanitizer reports and other exceptions are bugs.
#include <cstddef>
#include <cstdint>
#include <span>

#include "braid/error.h"
#include "braid/protocol.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace braid::proto;
  std::span<const uint8_t> in(data, size);
  // Also exercise the streaming path: the first frame of the input, if complete.
  try {
    const size_t n = frame_bytes(in);
    if (n > 0 && n <= size) {
      const Frame f = decode(in.first(n));
      if (encode(f) != std::vector<uint8_t>(data, data + n)) __builtin_trap();
      if (const auto* a = std::get_if<Activations>(&f.message)) (void)a->to_f32();
    }
  } catch (const braid::Error&) {
  }
  try {
    (void)decode(in);
  } catch (const braid::Error&) {
  }
  return 0;
}
