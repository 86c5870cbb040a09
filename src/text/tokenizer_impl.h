// Tokenizer::Impl: the loaded vocabulary and the state every encoder and decoder shares.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "braid/tokenizer.h"
#include "text/byte_bpe.h"
#include "text/token_index.h"

namespace braid {

struct Tokenizer::Impl {
  Kind kind = Kind::kSpm;
  std::string pre = "default";

  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::vector<TokenType> types;
  text::TokenIndex index;

  int32_t bos = -1, eos = -1, eot = -1, eom = -1, unk = -1, pad = -1;
  bool add_bos = false;
  bool add_eos = false;
  bool add_space_prefix = false;  // SentencePiece: "▁" in front of the text
  std::vector<bool> eog;          // per token: ends generation

  // Tokens matched whole in the text before BPE: control, user-defined and unknown ones,
  // longest first (llama.cpp's cache_special_tokens).
  std::vector<int32_t> specials;

  // SentencePiece: the token of each byte (<0xXX>, else the 1-byte piece), -1 if none.
  std::array<int32_t, 256> byte_tokens{};

  std::unique_ptr<text::ByteBpe> bpe;  // byte-level BPE only

  int32_t find(std::string_view piece) const { return index.find(piece); }
  void check_id(int32_t id) const;  // throws braid::Error for an id outside the vocabulary
  std::string token_bytes(int32_t id, bool render_special) const;
};

}  // namespace braid
