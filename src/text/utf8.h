// UTF-8 decoding and encoding for the tokenizers. The well-formedness rules are the
// Unicode standard's (Table 3-7): no overlong forms, no surrogates, nothing above U+10FFFF.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace braid::text {

// The well-formed UTF-8 sequence at the start of `s`: its length (1..4) when complete.
// Otherwise 0, with *valid_prefix set to how many leading bytes are a valid start of some
// sequence (0 for a bad lead byte). valid_prefix == s.size() means the sequence was cut
// off by the end of `s` and may still complete.
size_t utf8_sequence(std::string_view s, size_t* valid_prefix);

// Decodes the code point at s[i] and advances i. `s` must be well-formed (validated).
uint32_t next_codepoint(std::string_view s, size_t& i);

// Appends the UTF-8 encoding of cp (< 0x110000).
void append_utf8(std::string& out, uint32_t cp);

// llama.cpp's character length from the lead byte alone (1 for continuation bytes), used
// where vocabulary strings, which are not validated, are cut into characters.
inline size_t utf8_len_from_lead(char c) {
  static constexpr uint8_t kLen[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
  return kLen[static_cast<uint8_t>(c) >> 4];
}

// The "U+FFFD REPLACEMENT CHARACTER" in UTF-8.
inline constexpr std::string_view kReplacement = "\xEF\xBF\xBD";

}  // namespace braid::text
