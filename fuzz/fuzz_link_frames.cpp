// Fuzz target: frames as a worker or the head receives them, protocol and link frames
// alike (src/dist/transport_frames.h). Any input must either decode or throw
// braid::Error; a link frame that decodes must re-encode to the same bytes.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "braid/error.h"
#include "dist/transport_frames.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    braid::dist::Incoming in = braid::dist::decode_any(data, size);
    if (in.is_link) {
      const std::vector<uint8_t> again = braid::dist::encode_link(in.link);
      if (again.size() != size || std::memcmp(again.data(), data, size) != 0) __builtin_trap();
    }
  } catch (const braid::Error&) {
  }
  return 0;
}
