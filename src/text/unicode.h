// Unicode character properties for the pre-tokenizer regexes: general categories (from the
// generated table in unicode_tables.cpp) and the White_Space property.
#pragma once

#include <cstddef>
#include <cstdint>

namespace braid::text {

// Unicode general categories; Cn (unassigned) is 0. The order is the generator's.
// clang-format off
enum class Gc : uint8_t {
  Cn, Lu, Ll, Lt, Lm, Lo, Mn, Mc, Me, Nd, Nl, No, Pc, Pd, Ps,
  Pe, Pi, Pf, Po, Sm, Sc, Sk, So, Zs, Zl, Zp, Cc, Cf, Cs, Co,
};
// clang-format on

// Bit masks over Gc (bit i = category i), for regex classes such as \p{L}.
constexpr uint32_t gc_bit(Gc c) { return 1u << static_cast<unsigned>(c); }
constexpr uint32_t kMaskL =
    gc_bit(Gc::Lu) | gc_bit(Gc::Ll) | gc_bit(Gc::Lt) | gc_bit(Gc::Lm) | gc_bit(Gc::Lo);
constexpr uint32_t kMaskM = gc_bit(Gc::Mn) | gc_bit(Gc::Mc) | gc_bit(Gc::Me);
constexpr uint32_t kMaskN = gc_bit(Gc::Nd) | gc_bit(Gc::Nl) | gc_bit(Gc::No);
constexpr uint32_t kMaskP = gc_bit(Gc::Pc) | gc_bit(Gc::Pd) | gc_bit(Gc::Ps) | gc_bit(Gc::Pe) |
                            gc_bit(Gc::Pi) | gc_bit(Gc::Pf) | gc_bit(Gc::Po);
constexpr uint32_t kMaskS = gc_bit(Gc::Sm) | gc_bit(Gc::Sc) | gc_bit(Gc::Sk) | gc_bit(Gc::So);
constexpr uint32_t kMaskZ = gc_bit(Gc::Zs) | gc_bit(Gc::Zl) | gc_bit(Gc::Zp);
constexpr uint32_t kMaskC =
    gc_bit(Gc::Cn) | gc_bit(Gc::Cc) | gc_bit(Gc::Cf) | gc_bit(Gc::Cs) | gc_bit(Gc::Co);
constexpr uint32_t kMaskAll = (1u << 30) - 1;

// The category of code point cp (Cn beyond U+10FFFF).
Gc general_category(uint32_t cp);

// Unicode's White_Space property, which is what \s means in the tokenizers' regexes
// (Oniguruma, Rust regex). Not Python's str.isspace: U+001C..U+001F are not White_Space.
bool is_whitespace(uint32_t cp);

// Generated (unicode_tables.cpp): sorted entries first << 5 | category.
extern const uint32_t kCategoryRanges[];
extern const size_t kCategoryRangeCount;

}  // namespace braid::text
