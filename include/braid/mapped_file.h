// A read-only file mapped into memory (zero-copy model loading). Empty files map to an
// empty span. Throws braid::Error naming the path when the file cannot be opened.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace braid {

class MappedFile {
 public:
  static std::shared_ptr<MappedFile> open(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

  // Gives back the pages lying wholly inside [p, p + n), a range of some file mapping
  // (MADV_DONTNEED: the kernel drops them from this process and reads them from the
  // file again if they are touched). Pages shared with bytes outside the range stay.
  static void drop_pages(const uint8_t* p, size_t n);

 private:
  MappedFile() = default;
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
  std::string path_;
};

// Reads a whole (small) file into a string; throws braid::Error naming the path.
std::string read_file(const std::string& path);

}  // namespace braid
