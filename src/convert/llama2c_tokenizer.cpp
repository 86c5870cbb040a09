// llama2.c's tokenizer.bin -> SentencePiece tokenizer metadata, with the token texts and
// types llama.cpp's convert-llama2c-to-ggml derives from it.
#include <cstring>

#include "braid/error.h"
#include "braid/mapped_file.h"
#include "convert/converters.h"

namespace braid::convert {
namespace {

// llama.cpp's token types.
constexpr int32_t kNormal = 1, kUnknown = 2, kControl = 3, kByte = 6;

bool is_hex(char c) { return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F') || (c >= 'a' && c <= 'f'); }

// "<0x0A>": SentencePiece's byte-fallback pieces.
bool is_byte_piece(const std::string& s) {
  return s.size() == 6 && s.compare(0, 3, "<0x") == 0 && is_hex(s[3]) && is_hex(s[4]) && s[5] == '>';
}

// SentencePiece marks spaces with U+2581 ("▁").
std::string escape_spaces(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == ' ')
      out += "\xe2\x96\x81";
    else
      out += c;
  }
  return out;
}

}  // namespace

void add_llama2c_tokenizer(const std::string& path, int64_t n_vocab, GgufWriter& w) {
  std::shared_ptr<MappedFile> file = MappedFile::open(path);
  const uint8_t* data = file->data();
  const size_t size = file->size();
  size_t pos = 0;
  auto read4 = [&](const char* what, int64_t id) {
    if (size - pos < 4) {
      if (id < 0) fail(path, ": truncated llama2.c tokenizer: no ", what);
      fail(path, ": truncated llama2.c tokenizer: token ", id, " of ", n_vocab, " has no ", what);
    }
    uint32_t v;
    std::memcpy(&v, data + pos, 4);
    pos += 4;
    return v;
  };
  int32_t max_len = static_cast<int32_t>(read4("max_token_length", -1));
  if (max_len < 1 || max_len > (1 << 16))
    fail(path, ": not a llama2.c tokenizer: max_token_length ", max_len, " is outside [1, 65536]");

  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int64_t> types;
  tokens.reserve(static_cast<size_t>(n_vocab));
  for (int64_t id = 0; id < n_vocab; ++id) {
    uint32_t score_bits = read4("score", id);
    float score;
    std::memcpy(&score, &score_bits, 4);
    int32_t len = static_cast<int32_t>(read4("length", id));
    if (len < 0 || len > max_len)
      fail(path, ": token ", id, " has length ", len, ", outside [0, max_token_length ", max_len, "]");
    if (size - pos < static_cast<size_t>(len))
      fail(path, ": truncated llama2.c tokenizer: token ", id, " of ", n_vocab, " is cut off");
    std::string text(reinterpret_cast<const char*>(data + pos), static_cast<size_t>(len));
    pos += static_cast<size_t>(len);

    // llama2.c stores "\n<s>\n" and "\n</s>\n" for BOS/EOS; llama.cpp renames them.
    int32_t type = kNormal;
    if (id == 0) {
      text = "<unk>";
      type = kUnknown;
    } else if (id == 1) {
      text = "<s>";
      type = kControl;
    } else if (id == 2) {
      text = "</s>";
      type = kControl;
    } else if (text.empty()) {
      type = kControl;
    } else if (is_byte_piece(text)) {
      type = kByte;
    }
    tokens.push_back(escape_spaces(text));
    scores.push_back(score);
    types.push_back(type);
  }
  if (pos != size)
    fail(path, ": ", size - pos, " bytes follow the ", n_vocab,
         " tokens the model needs (a tokenizer for a different vocabulary?)");

  w.set("tokenizer.ggml.model", GgufValue::string("llama"));
  w.set("tokenizer.ggml.tokens", GgufValue::string_array(std::move(tokens)));
  w.set("tokenizer.ggml.scores", GgufValue::f32_array(scores));
  w.set("tokenizer.ggml.token_type", GgufValue::int_array(GgufType::INT32, std::move(types)));
  w.set("tokenizer.ggml.unknown_token_id", GgufValue::u32(0));
  w.set("tokenizer.ggml.bos_token_id", GgufValue::u32(1));
  w.set("tokenizer.ggml.eos_token_id", GgufValue::u32(2));
  w.set("tokenizer.ggml.add_bos_token", GgufValue::boolean(true));
  w.set("tokenizer.ggml.add_eos_token", GgufValue::boolean(false));
}

}  // namespace braid::convert
