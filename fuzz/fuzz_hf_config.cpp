// Fuzzes config.json parsing: any bytes must give an HfConfig or a braid::Error.
#include <cstddef>
#include <cstdint>
#include <string>

#include "braid/convert.h"
#include "braid/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    braid::HfConfig c =
        braid::parse_hf_config(std::string(reinterpret_cast<const char*>(data), size), "config.json");
    // A config that parses is internally consistent.
    if (c.n_heads % c.n_kv_heads != 0 || (c.arch != "gpt2" && c.head_dim % 2 != 0)) __builtin_trap();
  } catch (const braid::Error&) {
  }
  return 0;
}
