// BpeVocab -> tokenizer.ggml.* metadata, the keys llama.cpp's converter writes for
// byte-level BPE vocabularies (and braid's Tokenizer::from_gguf reads).
#include "braid/bpe_train.h"
#include "braid/error.h"
#include "braid/gguf.h"

namespace braid {

void BpeVocab::to_gguf(GgufWriter& w) const {
  check(tokens.size() == types.size(), "BPE vocabulary: ", tokens.size(), " tokens but ", types.size(),
        " token types");
  w.set("tokenizer.ggml.model", GgufValue::string("gpt2"));
  w.set("tokenizer.ggml.pre", GgufValue::string(pre));
  w.set("tokenizer.ggml.tokens", GgufValue::string_array(tokens));
  std::vector<int32_t> type_ids;
  type_ids.reserve(types.size());
  for (TokenType t : types) type_ids.push_back(static_cast<int32_t>(t));
  w.set("tokenizer.ggml.token_type", GgufValue::i32_array(type_ids));
  w.set("tokenizer.ggml.merges", GgufValue::string_array(merges));
  if (bos >= 0) w.set("tokenizer.ggml.bos_token_id", GgufValue::u32(static_cast<uint32_t>(bos)));
  if (eos >= 0) w.set("tokenizer.ggml.eos_token_id", GgufValue::u32(static_cast<uint32_t>(eos)));
  // Training puts BOS in front of every document, so prompts should start with it too.
  w.set("tokenizer.ggml.add_bos_token", GgufValue::boolean(bos >= 0));
  w.set("tokenizer.ggml.add_eos_token", GgufValue::boolean(false));
}

void BpeVocab::write_gguf(const std::string& path, const std::string& name) const {
  GgufWriter w;
  w.set("general.name", GgufValue::string(name));
  to_gguf(w);
  w.write(path);
}

}  // namespace braid
