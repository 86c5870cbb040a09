// What a worker needs to know about a model before it serves it: that its file is the
// head's file (a fingerprint), and how fast this device runs it (a profile).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "braid/model.h"
#include "braid/thread_pool.h"

namespace braid::dist {

// SHA-256 of the file size, the GGUF version, metadata and tensor table (names, types,
// shapes, sizes and relative offsets). Two files with the same fingerprint describe the
// same tensors at the same places; hashing the weights themselves would read gigabytes
// on every start. Travels as LOAD's model_sha256. Throws braid::Error naming the path.
std::array<uint8_t, 32> model_fingerprint(const GgufFile& gguf, uint64_t file_size);
std::array<uint8_t, 32> model_fingerprint(const std::string& path);
// The first n bytes in hex, for messages.
std::string short_hex(const std::array<uint8_t, 32>& digest, int n = 8);

// What this device can do for one model, as measured.
struct DeviceProfile {
  std::vector<double> layer_ms;  // one decode token through each layer, ms
  double output_ms = 0;          // output norm + head for one token
  uint64_t memory_bytes = 0;     // what braid may use here
  uint64_t memory_total = 0;     // physical memory
};

// Times every layer (and the output) on one token at pool's thread count, taking the
// best of a few runs, times `slowdown`. memory_bytes is mem_limit when non-zero, else
// the memory available now. With `present` (a streamed model that holds only some
// layers), only those are timed and the others estimated from their size at the same
// ms per byte; the output likewise when `output_present` is false.
DeviceProfile measure_profile(const Model& model, ThreadPool& pool, double slowdown, uint64_t mem_limit,
                              const std::vector<bool>* present = nullptr, bool output_present = true);

// MemAvailable (Linux), else physical memory; 0 when unknown.
uint64_t available_memory();
uint64_t total_memory();

// "1.5G", "800M", "512k", "1073741824" -> bytes. Throws braid::Error.
uint64_t parse_bytes(const std::string& text);

}  // namespace braid::dist
