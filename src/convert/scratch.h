// Disk-backed working memory for converted tensors. A conversion may change every weight
// (F16 -> F32, permuted rows), and holding all of them in RAM until the GGUF is written
// would need several times the model's size on the small machines braid targets. A
// scratch area is a mapping of an unlinked file beside the output, so the kernel can
// write its pages back to disk instead of running out of memory.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace braid::convert {

class Scratch {
 public:
  Scratch() = default;
  ~Scratch();
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;

  // Reserves `bytes` (disk space included, so a full disk is an error here and not a
  // crash later) in a file named near_path + ".scratch", removed at once. Throws
  // braid::Error. Only one reservation per Scratch.
  void reserve(const std::string& near_path, size_t bytes);

  uint8_t* data() { return data_; }
  size_t size() const { return size_; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace braid::convert
