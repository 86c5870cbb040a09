// Little-endian byte writing and bounds-checked reading for the protocol codec. The
// Reader throws braid::Error naming the frame and the field for every short read or bad
// value, so decoders read fields in order and never index the buffer themselves.
#pragma once

#include <bit>
#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "braid/error.h"
#include "braid/protocol.h"

namespace braid::proto::wire {

// Why tensor data a decoder received cannot be used (empty when it can): q8_0 blocks
// with a non-finite or negative scale or a value of -128 (encoders never write them).
std::string tensor_problem(std::span<const uint8_t> data, WireType t);

// True when s is well-formed UTF-8 (no overlongs, surrogates or code points > U+10FFFF).
bool valid_utf8(std::string_view s);

class Writer {
 public:
  explicit Writer(std::vector<uint8_t>& out) : out_(out) {}

  void u8(uint8_t v) { out_.push_back(v); }
  void u16(uint16_t v) { put(v, 2); }
  void u32(uint32_t v) { put(v, 4); }
  void u64(uint64_t v) { put(v, 8); }
  void f32(float v) { u32(std::bit_cast<uint32_t>(v)); }
  void f64(double v) { u64(std::bit_cast<uint64_t>(v)); }
  void bytes(std::span<const uint8_t> b) { out_.insert(out_.end(), b.begin(), b.end()); }
  // u16 length + bytes; the caller has checked the length limit.
  void str(const std::string& s) {
    u16(static_cast<uint16_t>(s.size()));
    out_.insert(out_.end(), s.begin(), s.end());
  }
  // Overwrites 4 bytes at offset (the header's payload length, once known).
  void patch_u32(size_t offset, uint32_t v) {
    for (int i = 0; i < 4; ++i) out_[offset + i] = static_cast<uint8_t>(v >> (8 * i));
  }
  size_t size() const { return out_.size(); }

 private:
  void put(uint64_t v, int n) {
    for (int i = 0; i < n; ++i) out_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  std::vector<uint8_t>& out_;
};

class Reader {
 public:
  // what: the frame's name for messages ("ACTIVATIONS").
  Reader(std::span<const uint8_t> bytes, std::string what) : b_(bytes), what_(std::move(what)) {}

  uint8_t u8(const char* field) { return static_cast<uint8_t>(get(field, 1)); }
  uint16_t u16(const char* field) { return static_cast<uint16_t>(get(field, 2)); }
  uint32_t u32(const char* field) { return static_cast<uint32_t>(get(field, 4)); }
  uint64_t u64(const char* field) { return get(field, 8); }
  float f32(const char* field) { return std::bit_cast<float>(u32(field)); }
  double f64(const char* field) { return std::bit_cast<double>(u64(field)); }
  // A u8 that must be 0 or 1.
  bool boolean(const char* field) {
    const uint8_t v = u8(field);
    if (v > 1) fail(field, " is ", int{v}, ", must be 0 or 1");
    return v == 1;
  }
  // n raw bytes (a view into the input).
  std::span<const uint8_t> bytes(const char* field, uint64_t n) {
    need(field, n);
    auto s = b_.subspan(pos_, static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return s;
  }
  // u16 length + UTF-8 bytes, at most max_bytes.
  std::string str(const char* field, uint32_t max_bytes) {
    const uint16_t n = u16(field);
    if (n > max_bytes) fail(field, " is ", n, " bytes long, the limit is ", max_bytes);
    auto s = bytes(field, n);
    std::string out(s.begin(), s.end());
    if (!valid_utf8(out)) fail(field, " is not valid UTF-8");
    return out;
  }
  size_t remaining() const { return b_.size() - pos_; }
  size_t offset() const { return pos_; }
  // The payload must end here.
  void end() {
    if (remaining() != 0) fail_whole(remaining(), " bytes after the last field");
  }

  // Throws "<WHAT> frame: <field><rest...>".
  template <class... Args>
  [[noreturn]] void fail(const char* field, Args&&... rest) const {
    braid::fail(what_, " frame: ", field, std::forward<Args>(rest)...);
  }
  template <class... Args>
  [[noreturn]] void fail_whole(Args&&... rest) const {
    braid::fail(what_, " frame: ", std::forward<Args>(rest)...);
  }

 private:
  void need(const char* field, uint64_t n) const {
    if (n > remaining()) {
      fail("payload ends inside ", field, " (", n, " bytes needed at offset ", pos_, ", ", remaining(),
           " left)");
    }
  }
  uint64_t get(const char* field, int n) {
    need(field, n);
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) v |= static_cast<uint64_t>(b_[pos_ + i]) << (8 * i);
    pos_ += n;
    return v;
  }
  std::span<const uint8_t> b_;
  size_t pos_ = 0;
  std::string what_;
};

}  // namespace braid::proto::wire
