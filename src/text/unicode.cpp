#include "text/unicode.h"

#include <algorithm>
#include <array>

namespace braid::text {

namespace {

Gc lookup(uint32_t cp) {
  // The last range starting at or before cp: upper_bound over (first << 5 | 31).
  const uint32_t key = (cp << 5) | 31u;
  const uint32_t* end = kCategoryRanges + kCategoryRangeCount;
  const uint32_t* it = std::upper_bound(kCategoryRanges, end, key);
  return static_cast<Gc>(it[-1] & 31u);  // kCategoryRanges[0] starts at U+0000
}

// Latin-1 is most of most text: answer it from a small table.
const std::array<Gc, 256>& latin1() {
  static const std::array<Gc, 256> table = [] {
    std::array<Gc, 256> t{};
    for (uint32_t cp = 0; cp < 256; ++cp) t[cp] = lookup(cp);
    return t;
  }();
  return table;
}

}  // namespace

Gc general_category(uint32_t cp) {
  if (cp < 256) return latin1()[cp];
  if (cp > 0x10FFFF) return Gc::Cn;
  return lookup(cp);
}

bool is_whitespace(uint32_t cp) {
  if (cp < 0x80) return cp == ' ' || (cp >= 0x09 && cp <= 0x0D);
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 ||
         cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

}  // namespace braid::text
