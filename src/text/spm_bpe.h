// SentencePiece BPE as llama.cpp runs it (llm_tokenizer_spm_session): the text is cut into
// UTF-8 characters; the adjacent pair whose concatenation is the vocabulary entry with the
// highest score is merged (leftmost among equal scores) until no pair is in the
// vocabulary; symbols that are not tokens fall back to byte tokens <0xXX>.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>
#include <vector>

#include "text/token_index.h"

namespace braid::text {

struct SpmVocab {
  const TokenIndex& index;
  const std::vector<float>& scores;
  const std::array<int32_t, 256>& byte_tokens;  // -1 where the vocabulary has no byte token
  int32_t unk;                                  // used for a byte without a token; -1: error
};

// Appends the tokens of `text`, whose spaces are already escaped to "▁" (and which is
// well-formed UTF-8). Throws braid::Error when a byte has neither a token nor an <unk>.
void spm_tokenize(const SpmVocab& v, std::string_view text, std::vector<int32_t>& out);

}  // namespace braid::text
