// Fuzzes the tokenizers' loaders with untrusted bytes:
//   - a GGUF file: GgufFile::parse -> Tokenizer::from_gguf, then encode, decode and
//     stream-decode a few texts (and a piece of the input) with whatever vocabulary came out;
//   - a JSON text (input starting with '{'): tokenizer_json_to_gguf, as tokenizer.json and as
//     the tokenizer_config.json of a small valid tokenizer.json.
// Every failure must be a braid::Error; nothing may crash, hang or read out of bounds.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "braid/error.h"
#include "braid/gguf.h"
#include "braid/tokenizer.h"

namespace {

void fuzz_gguf(const uint8_t* data, size_t size) {
  auto gguf = braid::GgufFile::parse(data, size, "fuzz.gguf");
  auto tok = braid::Tokenizer::from_gguf(*gguf);
  const size_t tail = size < 48 ? size : 48;
  const std::string texts[] = {
      "Hello world! It's 2024: 1234567 <s></s><|endoftext|>",
      " \xE4\xBD\xA0\xE5\xA5\xBD\n\n  \t\xF0\x9F\x98\x80 caf\xC3\xA9   ",
      "",
      braid::sanitize_utf8(std::string(reinterpret_cast<const char*>(data + size - tail), tail)),
  };
  for (const std::string& text : texts) {
    for (bool special : {false, true}) {
      try {
        const std::vector<int32_t> ids = tok->encode(text, tok->bos() >= 0, special);
        (void)tok->decode(ids, special);
        braid::StreamDecoder stream(*tok, special);
        for (int32_t id : ids) (void)stream.push(id);
        (void)stream.flush();
        for (int32_t id : ids) (void)tok->is_eog(id);
      } catch (const braid::Error&) {
        // e.g. a SentencePiece vocabulary without byte tokens or <unk>
      }
    }
  }
}

void fuzz_json(const uint8_t* data, size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  try {
    braid::GgufWriter w;
    braid::tokenizer_json_to_gguf(text, w);
  } catch (const braid::Error&) {
  }
  static const std::string kTokenizerJson = R"({
    "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2, "<s>": 3}, "merges": ["a b"]},
    "added_tokens": [{"id": 3, "content": "<s>", "special": true}],
    "pre_tokenizer": {"type": "ByteLevel"},
    "post_processor": {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<s>"}},
                       {"Sequence": {"id": "A"}}], "pair": []}})";
  braid::GgufWriter w;
  braid::tokenizer_json_to_gguf(kTokenizerJson, w, text, text);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    if (size > 0 && data[0] == '{') {
      fuzz_json(data, size);
    } else {
      fuzz_gguf(data, size);
    }
  } catch (const braid::Error&) {
  }
  return 0;
}
