// gguf-py's SpecialVocab, as convert_hf_to_gguf.py uses it: the special token ids,
// add_*_token flags and chat template that a Hugging Face tokenizer's files give.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>

#include "braid/gguf.h"

namespace braid::text {

// Reads the post-processor of tokenizer.json, then tokenizer_config.json (`tokenizer_config`,
// nullptr when absent: the *_token entries, looked up by content in added_tokens, add_*_token,
// chat_template), then config.json (`config`, nullptr when absent: <type>_token_id for the
// types still unset), and sets tokenizer.ggml.<type>_token_id, tokenizer.ggml.add_<type>_token
// and tokenizer.chat_template on `out` in the order gguf-py would. Ids not below n_vocab are
// skipped (n_vocab < 0: no limit). Throws braid::Error for a negative id.
void write_special_vocab(const nlohmann::json& tokenizer_json, const nlohmann::json* tokenizer_config,
                         const nlohmann::json* config, int64_t n_vocab, GgufWriter& out);

}  // namespace braid::text
