// Vocabulary lookup: piece text -> token id. An open-addressing table over the vocabulary's
// own strings: 8 bytes a slot, no allocation per entry, one probe per lookup in the common
// case. (std::unordered_map made loading a 128k vocabulary with 280k merges cache-miss bound.)
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace braid::text {

class TokenIndex {
 public:
  // Indexes `pieces` (which must outlive this and stay unchanged). When a piece occurs
  // twice, returns the two ids (the first one stays indexed); else {-1, -1}.
  std::pair<int32_t, int32_t> build(const std::vector<std::string>& pieces);

  // The id of `piece`, or -1.
  int32_t find(std::string_view piece) const {
    if (slots_.empty()) return -1;
    const uint64_t h = hash(piece);
    const uint32_t tag = static_cast<uint32_t>(h >> 32);
    for (uint64_t i = h & mask_;; i = (i + 1) & mask_) {
      const uint64_t s = slots_[i];
      if (s == 0) return -1;
      if (static_cast<uint32_t>(s >> 32) == tag) {
        const int32_t id = static_cast<int32_t>(static_cast<uint32_t>(s) - 1);
        if ((*pieces_)[id] == piece) return id;
      }
    }
  }

 private:
  static uint64_t hash(std::string_view s);

  const std::vector<std::string>* pieces_ = nullptr;
  std::vector<uint64_t> slots_;  // tag << 32 | (id + 1); 0 is empty
  uint64_t mask_ = 0;
};

}  // namespace braid::text
