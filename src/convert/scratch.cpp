#include "convert/scratch.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cassert>
#include <cerrno>
#include <cstring>

#include "braid/error.h"

namespace braid::convert {

Scratch::~Scratch() {
  if (data_) munmap(data_, size_);
}

void Scratch::reserve(const std::string& near_path, size_t bytes) {
  assert(!data_);
  if (bytes == 0) return;
  const std::string path = near_path + ".scratch";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) fail("cannot create scratch file ", path, ": ", std::strerror(errno));
  ::unlink(path.c_str());  // the mapping keeps the space until it is unmapped
  int err = posix_fallocate(fd, 0, static_cast<off_t>(bytes));
  if (err != 0) {
    ::close(fd);
    fail("cannot reserve ", bytes, " bytes of scratch space beside ", near_path, ": ", std::strerror(err));
  }
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int map_err = errno;
  ::close(fd);
  if (p == MAP_FAILED) fail("cannot map scratch file ", path, ": ", std::strerror(map_err));
  data_ = static_cast<uint8_t*>(p);
  size_ = bytes;
}

}  // namespace braid::convert
