// Byte-level BPE (GPT-2 and its descendants): pre-tokenize with regexes, map each byte of a
// word to a printable character (GPT-2's bytes_to_unicode), then merge adjacent symbols,
// always the pair of lowest merge rank first (leftmost among equals), like llama.cpp's
// llm_tokenizer_bpe_session and Hugging Face's BPE model.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "text/pretokenize.h"
#include "text/token_index.h"

namespace braid::text {

// GPT-2's bytes_to_unicode: the printable character that stands for byte b.
uint32_t byte_to_codepoint(uint8_t b);
// The inverse: the byte code point cp stands for, or -1.
int codepoint_to_byte(uint32_t cp);
// A byte-level vocabulary entry back to the bytes it stands for. Characters outside the
// mapping (not produced by byte-level encoding) are kept as their UTF-8; ill-formed UTF-8
// in the entry is kept as is.
std::string byte_level_decode(std::string_view piece);

class ByteBpe {
 public:
  // `merges`: tokenizer.ggml.merges, "left right" in rank order. Both halves and their
  // concatenation must be vocabulary entries, else braid::Error. `vocab` and `pre` must
  // outlive this.
  ByteBpe(const std::vector<std::string>& merges, const TokenIndex& vocab, const PreTokenizer& pre);

  // Appends the tokens of `text` (well-formed UTF-8, special tokens already split out).
  void tokenize(std::string_view text, std::vector<int32_t>& out) const;

  size_t n_merges() const { return n_merges_; }

 private:
  // Merge ranks in an open-addressing table keyed by the pair of token ids.
  struct MergeSlot {
    uint64_t key;  // left << 32 | right, plus 1 (0 marks an empty slot)
    int32_t rank;
    int32_t result;  // token id of the concatenation
  };
  static uint64_t key(int32_t left, int32_t right) {
    return ((static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right)) + 1;
  }
  static uint64_t slot_of(uint64_t key) { return (key * 0x9E3779B97F4A7C15ull) >> 20; }
  const MergeSlot* find_merge(int32_t left, int32_t right) const;
  void tokenize_word(std::string_view bytes, std::vector<int32_t>& out) const;

  const TokenIndex& vocab_;
  const PreTokenizer& pre_;
  std::vector<const Regex*> regexes_;
  std::vector<MergeSlot> merges_;
  uint64_t mask_ = 0;
  size_t n_merges_ = 0;
  std::array<std::string, 256> byte_chars_;  // UTF-8 of byte_to_codepoint(b)
  std::array<int32_t, 256> byte_tokens_;     // token of byte_chars_[b], or -1
};

}  // namespace braid::text
