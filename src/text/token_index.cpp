#include "text/token_index.h"

#include <cstring>

namespace braid::text {

uint64_t TokenIndex::hash(std::string_view s) {
  // FNV-1a over 8-byte words, then a final mix so that both halves are well spread (the
  // low bits pick the slot, the high 32 are the tag).
  uint64_t h = 0xcbf29ce484222325ull ^ s.size();
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    h = (h ^ w) * 0x100000001b3ull;
  }
  uint64_t tail = 0;
  std::memcpy(&tail, s.data() + i, s.size() - i);
  h = (h ^ tail) * 0x100000001b3ull;
  h ^= h >> 33;
  h *= 0xff51afd7ed558ccdull;
  h ^= h >> 33;
  h *= 0xc4ceb9fe1a85ec53ull;
  h ^= h >> 33;
  return h;
}

std::pair<int32_t, int32_t> TokenIndex::build(const std::vector<std::string>& pieces) {
  pieces_ = &pieces;
  size_t cap = 16;
  while (cap < pieces.size() * 2) cap *= 2;  // load factor <= 0.5
  slots_.assign(cap, 0);
  mask_ = cap - 1;
  std::pair<int32_t, int32_t> dup{-1, -1};
  for (size_t id = 0; id < pieces.size(); ++id) {
    const uint64_t h = hash(pieces[id]);
    const uint32_t tag = static_cast<uint32_t>(h >> 32);
    for (uint64_t i = h & mask_;; i = (i + 1) & mask_) {
      const uint64_t s = slots_[i];
      if (s == 0) {
        slots_[i] = (static_cast<uint64_t>(tag) << 32) | (id + 1);
        break;
      }
      const int32_t other = static_cast<int32_t>(static_cast<uint32_t>(s) - 1);
      if (static_cast<uint32_t>(s >> 32) == tag && pieces[other] == pieces[id]) {
        if (dup.first < 0) dup = {other, static_cast<int32_t>(id)};
        break;
      }
    }
  }
  return dup;
}

}  // namespace braid::text
