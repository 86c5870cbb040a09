// Tokenizers against llama.cpp's vocabulary test vectors (SentencePiece Llama, GPT-2, and
// Llama 3 imported from its tokenizer.json), stories260K's golden ids, the streaming
// decoder, the tokenizer.json importer, the regex engine, and hostile metadata.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <ctime>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "braid/error.h"
#include "braid/gguf.h"
#include "braid/tokenizer.h"
#include "test_util.h"
#include "text/pretokenize.h"
#include "text/regex.h"
#include "text/unicode.h"

namespace braid {
namespace {

using nlohmann::json;

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream s;
  s << in.rdbuf();
  return s.str();
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Writes `w` to a temporary file and loads its tokenizer.
struct Loaded {
  std::unique_ptr<GgufFile> gguf;
  std::unique_ptr<Tokenizer> tok;
};
Loaded load_written(const GgufWriter& w) {
  const std::string path = test::temp_dir() + "/tok.gguf";
  w.write(path);
  Loaded l;
  l.gguf = GgufFile::open(path);
  l.tok = Tokenizer::from_gguf(*l.gguf);
  return l;
}

Loaded load_file(const std::string& path) {
  Loaded l;
  l.gguf = GgufFile::open(path);
  l.tok = Tokenizer::from_gguf(*l.gguf);
  return l;
}

// llama.cpp's test-tokenizer-0 format: inputs separated by "\n__ggml_vocab_test__\n" (the
// file ends with one), one line of space-prefixed ids per input.
struct Vectors {
  std::vector<std::string> inputs;
  std::vector<std::vector<int32_t>> expected;
};
Vectors read_vectors(const std::string& inp_path, const std::string& out_path) {
  Vectors v;
  const std::string inp = slurp(inp_path), out = slurp(out_path);
  const std::string sep = "\n__ggml_vocab_test__\n";
  for (size_t pos = 0;;) {
    const size_t hit = inp.find(sep, pos);
    if (hit == std::string::npos) break;
    v.inputs.push_back(inp.substr(pos, hit - pos));
    pos = hit + sep.size();
  }
  std::istringstream lines(out);
  std::string line;
  while (v.expected.size() < v.inputs.size() && std::getline(lines, line)) {
    std::istringstream ids(line);
    std::vector<int32_t> row;
    for (int32_t id; ids >> id;) row.push_back(id);
    v.expected.push_back(row);
  }
  return v;
}

std::string ids_str(const std::vector<int32_t>& ids) {
  std::string s;
  for (int32_t id : ids) {
    s += ' ';
    s += std::to_string(id);
  }
  return s;
}

// Runs the vectors; returns the number that match exactly (and reports each mismatch).
int run_vectors(const Tokenizer& tok, const std::string& name, int* total) {
  *total = -1;
  if (test::asset("vocab/ggml-vocab-" + name + ".gguf.inp").empty()) {
    ADD_FAILURE() << "vectors for " << name << " missing";
    return 0;
  }
  const Vectors v = read_vectors(test::asset("vocab/ggml-vocab-" + name + ".gguf.inp"),
                                 test::asset("vocab/ggml-vocab-" + name + ".gguf.out"));
  EXPECT_EQ(v.inputs.size(), v.expected.size());
  int pass = 0;
  for (size_t i = 0; i < v.inputs.size() && i < v.expected.size(); ++i) {
    const std::vector<int32_t> got = tok.encode(v.inputs[i], /*add_bos=*/false);
    if (got == v.expected[i]) {
      ++pass;
    } else {
      ADD_FAILURE() << name << " #" << i << " '" << v.inputs[i] << "'\n  expected" << ids_str(v.expected[i])
                    << "\n  got     " << ids_str(got);
    }
  }
  *total = static_cast<int>(v.inputs.size());
  std::printf("[ vectors  ] %s: %d/%d exact\n", name.c_str(), pass, *total);
  return pass;
}

// Llama 3's tokenizer-only GGUF made from its tokenizer.json, built once.
const Loaded& llama3() {
  static Loaded l = [] {
    GgufWriter w;
    tokenizer_json_to_gguf(slurp(test::asset("vocab/tokenizers/llama3/tokenizer.json")), w,
                           slurp(test::asset("vocab/tokenizers/llama3/tokenizer_config.json")));
    return load_written(w);
  }();
  return l;
}
#define REQUIRE_LLAMA3() BRAID_REQUIRE_ASSET(llama3_json_, "vocab/tokenizers/llama3/tokenizer.json")

// ---------------------------------------------------------------------------------------
// llama.cpp's vectors

TEST(TokenizerVectors, LlamaSpm) {
  BRAID_REQUIRE_ASSET(path, "vocab/ggml-vocab-llama-spm.gguf");
  const Loaded l = load_file(path);
  EXPECT_EQ(l.tok->kind(), Tokenizer::Kind::kSpm);
  EXPECT_EQ(l.tok->n_vocab(), 32000);
  int total = 0;
  EXPECT_EQ(run_vectors(*l.tok, "llama-spm", &total), total);
  EXPECT_GT(total, 40);
}

TEST(TokenizerVectors, Gpt2) {
  BRAID_REQUIRE_ASSET(path, "vocab/ggml-vocab-gpt-2.gguf");
  const Loaded l = load_file(path);
  EXPECT_EQ(l.tok->kind(), Tokenizer::Kind::kBpe);
  EXPECT_EQ(l.tok->pre(), "gpt-2");
  int total = 0;
  EXPECT_EQ(run_vectors(*l.tok, "gpt-2", &total), total);
  EXPECT_GT(total, 40);
}

TEST(TokenizerVectors, Llama3FromTokenizerJson) {
  REQUIRE_LLAMA3();
  const Tokenizer& tok = *llama3().tok;
  EXPECT_EQ(tok.pre(), "llama-bpe");
  EXPECT_EQ(tok.n_vocab(), 128256);
  int total = 0;
  EXPECT_EQ(run_vectors(tok, "llama-bpe", &total), total);
  EXPECT_GT(total, 40);
}

// Every vector string survives encode -> decode.
TEST(TokenizerVectors, DecodeRoundTrips) {
  BRAID_REQUIRE_ASSET(spm, "vocab/ggml-vocab-llama-spm.gguf");
  BRAID_REQUIRE_ASSET(gpt2, "vocab/ggml-vocab-gpt-2.gguf");
  const Loaded a = load_file(spm), b = load_file(gpt2);
  const Vectors v = read_vectors(test::asset("vocab/ggml-vocab-llama-spm.gguf.inp"),
                                 test::asset("vocab/ggml-vocab-llama-spm.gguf.out"));
  for (const std::string& s : v.inputs) {
    EXPECT_EQ(a.tok->decode(a.tok->encode(s, true)), s);
    EXPECT_EQ(a.tok->decode(a.tok->encode(s, false)), s);
    EXPECT_EQ(b.tok->decode(b.tok->encode(s, false)), s);
  }
}

// ---------------------------------------------------------------------------------------
// stories260K (a llama2.c model's SentencePiece vocabulary of 512)

TEST(Stories260K, PromptEncodesToGoldenIds) {
  BRAID_REQUIRE_ASSET(path, "models/stories260K.gguf");
  const Loaded l = load_file(path);
  const Tokenizer& tok = *l.tok;
  EXPECT_EQ(tok.n_vocab(), 512);
  EXPECT_EQ(tok.bos(), 1);
  EXPECT_EQ(tok.eos(), 2);
  EXPECT_TRUE(tok.add_bos());
  EXPECT_EQ(tok.encode("Once upon a time", false), (std::vector<int32_t>{403, 407, 261, 378}));
  EXPECT_EQ(tok.encode("Once upon a time", true), (std::vector<int32_t>{1, 403, 407, 261, 378}));
  EXPECT_EQ(tok.decode(std::vector<int32_t>{1, 403, 407, 261, 378}), "Once upon a time");
  EXPECT_TRUE(tok.is_eog(2));
  EXPECT_FALSE(tok.is_eog(1));
  EXPECT_EQ(tok.pad(), -1);  // 0xFFFFFFFF in the file means none
  EXPECT_EQ(tok.encode("", true), (std::vector<int32_t>{1}));
  EXPECT_TRUE(tok.encode("", false).empty());
}

// The golden perplexity run counts its tokens: [BOS] + encode(paragraph), capped at 512,
// over the first 50 and 200 blank-line-separated paragraphs of the corpus.
TEST(Stories260K, CorpusTokenCountsMatchGolden) {
  BRAID_REQUIRE_ASSET(path, "models/stories260K.gguf");
  BRAID_REQUIRE_ASSET(corpus, "corpus/tinystories_val_subset.txt");
  const Loaded l = load_file(path);
  const std::string text = slurp(corpus);
  std::vector<std::string> paragraphs;
  for (size_t pos = 0; pos < text.size();) {
    size_t hit = text.find("\n\n", pos);
    if (hit == std::string::npos) hit = text.size();
    std::string p = text.substr(pos, hit - pos);
    while (!p.empty() && (p.back() == '\n' || p.back() == ' ')) p.pop_back();
    while (!p.empty() && (p.front() == '\n' || p.front() == ' ')) p.erase(0, 1);
    if (!p.empty()) paragraphs.push_back(p);
    pos = hit + 2;
  }
  ASSERT_GE(paragraphs.size(), 200u);
  size_t predicted = 0;
  for (size_t i = 0; i < 200; ++i) {
    const size_t n = std::min<size_t>(l.tok->encode(paragraphs[i], true).size(), 512);
    predicted += n - 1;
    if (i == 49) {
      EXPECT_EQ(predicted, 5055u);
    }
  }
  EXPECT_EQ(predicted, 19380u);
}

// ---------------------------------------------------------------------------------------
// Pieces and decoding

TEST(TokenBytes, SpmPiecesBytesAndControls) {
  BRAID_REQUIRE_ASSET(path, "vocab/ggml-vocab-llama-spm.gguf");
  const Loaded l = load_file(path);
  const Tokenizer& tok = *l.tok;
  const int32_t nl = tok.find("<0x0A>");
  ASSERT_GE(nl, 0);
  EXPECT_EQ(tok.type(nl), TokenType::kByte);
  EXPECT_EQ(tok.token_bytes(nl), "\n");
  EXPECT_EQ(tok.token_bytes(tok.find("\xE2\x96\x81the")), " the");
  EXPECT_EQ(tok.token_bytes(1), "");
  EXPECT_EQ(tok.token_bytes(1, /*render_special=*/true), "<s>");
  EXPECT_EQ(tok.piece(1), "<s>");
  EXPECT_EQ(tok.type(0), TokenType::kUnknown);
  EXPECT_NE(error_of([&] { tok.token_bytes(32000); }).find("outside the vocabulary"), std::string::npos);
  EXPECT_NE(error_of([&] { tok.piece(-1); }), "");
  // decode removes the one space encode() put in front, also after BOS.
  EXPECT_EQ(tok.decode(tok.encode(" Hello  world", true)), " Hello  world");
  EXPECT_EQ(tok.decode(tok.encode("Hello", true), true), "<s> Hello");
}

TEST(TokenBytes, ByteLevelPieces) {
  BRAID_REQUIRE_ASSET(path, "vocab/ggml-vocab-gpt-2.gguf");
  const Loaded l = load_file(path);
  const Tokenizer& tok = *l.tok;
  EXPECT_EQ(tok.token_bytes(tok.find("\xC4\xA0the")), " the");  // "Ġthe"
  EXPECT_EQ(tok.token_bytes(tok.find("\xC4\x8A")), "\n");       // "Ċ"
  EXPECT_EQ(tok.bos(), 50256);
  EXPECT_EQ(tok.eos(), 50256);
  EXPECT_TRUE(tok.is_eog(50256));
  EXPECT_EQ(tok.type(50256), TokenType::kControl);
  EXPECT_EQ(tok.token_bytes(50256), "");
  EXPECT_EQ(tok.token_bytes(50256, true), "<|endoftext|>");
  EXPECT_FALSE(tok.add_bos());
  // Every byte round-trips through a byte-level piece.
  std::string all;
  for (int b = 1; b < 256; ++b) all += static_cast<char>(b);
  const std::string valid = sanitize_utf8(all);
  EXPECT_EQ(tok.decode(tok.encode(valid, false)), valid);
}

// ---------------------------------------------------------------------------------------
// Streaming decoder

TEST(StreamDecoder, HoldsSplitCharactersUntilComplete) {
  BRAID_REQUIRE_ASSET(path, "models/stories260K.gguf");
  const Loaded l = load_file(path);
  const Tokenizer& tok = *l.tok;
  // The 512-token vocabulary has no CJK or emoji: they fall back to byte tokens.
  const std::string text = "Hi \xE4\xBD\xA0\xE5\xA5\xBD \xF0\x9F\x98\x80!";  // "Hi 你好 😀!"
  const std::vector<int32_t> ids = tok.encode(text, true);
  int byte_tokens = 0;
  for (int32_t id : ids) byte_tokens += tok.type(id) == TokenType::kByte;
  EXPECT_EQ(byte_tokens, 10);
  StreamDecoder dec(tok);
  std::string out;
  int empty_pushes = 0;
  for (int32_t id : ids) {
    const std::string piece = dec.push(id);
    EXPECT_NO_THROW(validate_utf8(piece, "piece")) << "half a character emitted";
    empty_pushes += piece.empty() && tok.type(id) == TokenType::kByte;
    out += piece;
  }
  EXPECT_FALSE(dec.pending());
  out += dec.flush();
  EXPECT_EQ(out, " " + text);          // the stream keeps the prefix space
  EXPECT_EQ(empty_pushes, 2 + 2 + 3);  // all but the last byte of each character
}

TEST(StreamDecoder, IllFormedBytesBecomeReplacementCharacters) {
  BRAID_REQUIRE_ASSET(path, "models/stories260K.gguf");
  const Loaded l = load_file(path);
  const Tokenizer& tok = *l.tok;
  auto byte = [&](int b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    return tok.find(name);
  };
  StreamDecoder dec(tok);
  EXPECT_EQ(dec.push(byte(0xFF)), "\xEF\xBF\xBD");
  EXPECT_EQ(dec.push(byte(0xE2)), "");
  EXPECT_TRUE(dec.pending());
  EXPECT_EQ(dec.push(byte(0x28)), "\xEF\xBF\xBD(");  // E2 then '(' is ill-formed
  EXPECT_EQ(dec.push(byte(0xF0)), "");
  EXPECT_EQ(dec.push(byte(0x9F)), "");
  EXPECT_EQ(dec.flush(), "\xEF\xBF\xBD");  // a cut-off character at the end
  EXPECT_FALSE(dec.pending());
  EXPECT_EQ(dec.push(byte(0x41)), "A");
  EXPECT_THROW(dec.push(512), Error);
  // decode() agrees with the stream.
  const std::vector<int32_t> ids = {byte(0xFF), byte(0xE2), byte(0x28), byte(0xF0), byte(0x9F)};
  EXPECT_EQ(tok.decode(ids), "\xEF\xBF\xBD\xEF\xBF\xBD(\xEF\xBF\xBD");
}

TEST(StreamDecoder, MatchesDecodeOnLlama3Emoji) {
  REQUIRE_LLAMA3();
  const Tokenizer& tok = *llama3().tok;
  const std::string text = "Rain \xF0\x9F\x8C\xA7\xEF\xB8\x8F and \xF0\x9F\xA6\x99\xF0\x9F\xA6\x99 llamas";
  const std::vector<int32_t> ids = tok.encode(text, false);
  StreamDecoder dec(tok);
  std::string out;
  for (int32_t id : ids) {
    const std::string piece = dec.push(id);
    EXPECT_NO_THROW(validate_utf8(piece, "piece"));
    out += piece;
  }
  out += dec.flush();
  EXPECT_EQ(out, text);
  EXPECT_EQ(tok.decode(ids), text);
}

// ---------------------------------------------------------------------------------------
// Special tokens

TEST(SpecialTokens, ParsedOnlyWhenAsked) {
  REQUIRE_LLAMA3();
  const Tokenizer& tok = *llama3().tok;
  const std::string text = "<|begin_of_text|>Hi<|eot_id|>";
  const std::vector<int32_t> special = tok.encode(text, false, /*parse_special=*/true);
  ASSERT_EQ(special.size(), 3u);
  EXPECT_EQ(special[0], 128000);
  EXPECT_EQ(special[2], 128009);
  EXPECT_EQ(special[1], tok.encode("Hi", false)[0]);
  const std::vector<int32_t> plain = tok.encode(text, false);
  EXPECT_GT(plain.size(), 5u);
  for (int32_t id : plain) EXPECT_LT(id, 128000);
  EXPECT_EQ(tok.decode(plain), text);
  EXPECT_EQ(tok.decode(special), "Hi");
  EXPECT_EQ(tok.decode(special, true), text);
  // Llama 3: BOS by default; generation ends at <|end_of_text|> or <|eot_id|>.
  EXPECT_TRUE(tok.add_bos());
  EXPECT_EQ(tok.bos(), 128000);
  EXPECT_EQ(tok.eos(), 128001);
  EXPECT_EQ(tok.eot(), 128009);
  for (int32_t id : {128001, 128009}) EXPECT_TRUE(tok.is_eog(id)) << id;
  EXPECT_FALSE(tok.is_eog(128000));
  EXPECT_FALSE(tok.is_eog(128008));  // <|reserved_special_token_4|> (Llama 3.1's <|eom_id|>)
  EXPECT_FALSE(tok.is_eog(-1));
}

TEST(SpecialTokens, SpmSpacePrefixAfterSpecial) {
  BRAID_REQUIRE_ASSET(path, "vocab/ggml-vocab-llama-spm.gguf");
  const Loaded l = load_file(path);
  const Tokenizer& tok = *l.tok;
  const std::vector<int32_t> ids = tok.encode("<s>Hello</s>", false, true);
  std::vector<int32_t> expect = {1};
  for (int32_t id : tok.encode("Hello", false)) expect.push_back(id);  // "▁Hello": prefixed again
  expect.push_back(2);
  EXPECT_EQ(ids, expect);
  EXPECT_NE(tok.encode("<s>", false, false), (std::vector<int32_t>{1}));
}

// ---------------------------------------------------------------------------------------
// Bad input

TEST(BadInput, InvalidUtf8IsRefusedWithItsOffset) {
  BRAID_REQUIRE_ASSET(path, "vocab/ggml-vocab-gpt-2.gguf");
  const Loaded l = load_file(path);
  const Tokenizer& tok = *l.tok;
  EXPECT_EQ(error_of([&] { tok.encode("\xFF", false); }), "prompt is not valid UTF-8 (byte 0)");
  EXPECT_EQ(error_of([&] { tok.encode("ab\xC3", false); }), "prompt is not valid UTF-8 (byte 2)");
  EXPECT_EQ(error_of([&] { tok.encode("a\xC0\x80", false); }),
            "prompt is not valid UTF-8 (byte 1)");  // overlong
  EXPECT_EQ(error_of([&] { tok.encode("\xED\xA0\x80", false); }),
            "prompt is not valid UTF-8 (byte 0)");  // surrogate
  EXPECT_EQ(error_of([&] { tok.encode("\xF4\x90\x80\x80", false); }), "prompt is not valid UTF-8 (byte 0)");
  EXPECT_EQ(error_of([&] { validate_utf8("ok \xE2\x82\xAC \xE2\x82", "stop string"); }),
            "stop string is not valid UTF-8 (byte 7)");
  EXPECT_EQ(error_of([&] { validate_utf8("\xF0\x9F\x98\x80", "x"); }), "");
  EXPECT_EQ(sanitize_utf8("a\xF0\x9F\x98"
                          "b\xC0"),
            "a\xEF\xBF\xBD"
            "b\xEF\xBF\xBD");
  const std::string nul("a\0b", 3);  // NUL is valid UTF-8
  EXPECT_EQ(tok.decode(tok.encode(nul, false)), nul);
}

// A tokenizer-only GGUF: a tiny byte-level vocabulary with `edit` applied.
std::string metadata_error(const std::function<void(GgufWriter&)>& edit) {
  GgufWriter w;
  w.set("tokenizer.ggml.model", GgufValue::string("gpt2"));
  w.set("tokenizer.ggml.pre", GgufValue::string("gpt-2"));
  w.set("tokenizer.ggml.tokens", GgufValue::string_array({"a", "b", "ab", "<|endoftext|>"}));
  w.set("tokenizer.ggml.token_type", GgufValue::i32_array({1, 1, 1, 3}));
  w.set("tokenizer.ggml.merges", GgufValue::string_array({"a b"}));
  w.set("tokenizer.ggml.eos_token_id", GgufValue::u32(3));
  edit(w);
  return error_of([&] { load_written(w); });
}

TEST(BadMetadata, RefusedWithClearErrors) {
  EXPECT_EQ(metadata_error([](GgufWriter&) {}), "");
  auto has = [](const std::string& msg, const std::string& part) {
    EXPECT_NE(msg.find(part), std::string::npos) << "message: " << msg;
  };
  has(metadata_error([](GgufWriter& w) { w.remove("tokenizer.ggml.model"); }), "has no tokenizer");
  has(metadata_error([](GgufWriter& w) { w.set("tokenizer.ggml.model", GgufValue::string("bert")); }),
      "unsupported tokenizer tokenizer.ggml.model = 'bert'");
  has(metadata_error([](GgufWriter& w) { w.remove("tokenizer.ggml.tokens"); }), "tokenizer.ggml.tokens");
  has(metadata_error([](GgufWriter& w) { w.set("tokenizer.ggml.merges", GgufValue::string_array({"a c"})); }),
      "names 'c', which is not in the vocabulary");
  has(metadata_error([](GgufWriter& w) { w.set("tokenizer.ggml.merges", GgufValue::string_array({"ab"})); }),
      "is not two tokens separated by a space");
  has(metadata_error([](GgufWriter& w) { w.set("tokenizer.ggml.merges", GgufValue::string_array({"b a"})); }),
      "forms 'ba', which is not in the vocabulary");
  has(metadata_error([](GgufWriter& w) { w.remove("tokenizer.ggml.merges"); }), "merges is missing");
  has(metadata_error([](GgufWriter& w) {
        w.set("tokenizer.ggml.token_type", GgufValue::i32_array({1, 1}));
      }),
      "tokenizer.ggml.token_type has 2 entries but tokenizer.ggml.tokens has 4");
  has(metadata_error([](GgufWriter& w) {
        w.set("tokenizer.ggml.scores", GgufValue::f32_array({0, 0, 0}));
      }),
      "tokenizer.ggml.scores has 3 entries");
  has(metadata_error([](GgufWriter& w) { w.set("tokenizer.ggml.eos_token_id", GgufValue::u32(4)); }),
      "tokenizer.ggml.eos_token_id = 4 is outside the vocabulary of 4 tokens");
  has(metadata_error([](GgufWriter& w) { w.set("tokenizer.ggml.bos_token_id", GgufValue::string("1")); }),
      "expected an integer");
  has(metadata_error([](GgufWriter& w) {
        w.set("tokenizer.ggml.tokens", GgufValue::string_array({"a", "b", "ab", "a"}));
      }),
      "has 'a' twice (ids 0 and 3)");
  has(metadata_error([](GgufWriter& w) { w.set("tokenizer.ggml.pre", GgufValue::string("klingon")); }),
      "unknown pre-tokenizer tokenizer.ggml.pre = 'klingon' (known: default, llama3");
  has(metadata_error([](GgufWriter& w) { w.set("tokenizer.ggml.add_bos_token", GgufValue::boolean(true)); }),
      "add_bos_token is true, but there is no BOS token id");
  // 0xFFFFFFFF and -1 mean "none".
  EXPECT_EQ(metadata_error([](GgufWriter& w) {
              w.set("tokenizer.ggml.padding_token_id", GgufValue::u32(0xFFFFFFFFu));
              w.set("tokenizer.ggml.bos_token_id", GgufValue::i32(-1));
            }),
            "");
  // A missing pre-tokenizer falls back to "default" (with a warning), like llama.cpp.
  EXPECT_EQ(metadata_error([](GgufWriter& w) { w.remove("tokenizer.ggml.pre"); }), "");
}

TEST(BadMetadata, ErrorsNameTheFile) {
  GgufWriter w;
  w.set("tokenizer.ggml.model", GgufValue::string("t5"));
  const std::string path = test::temp_dir() + "/t5.gguf";
  w.write(path);
  auto g = GgufFile::open(path);
  const std::string msg = error_of([&] { Tokenizer::from_gguf(*g); });
  EXPECT_EQ(msg.rfind(g->label() + ": unsupported tokenizer", 0), 0u) << msg;
}

TEST(BadMetadata, SpmWithoutByteTokensUsesUnk) {
  GgufWriter w;
  w.set("tokenizer.ggml.model", GgufValue::string("llama"));
  w.set("tokenizer.ggml.tokens", GgufValue::string_array({"<unk>", "<s>", "</s>", "\xE2\x96\x81", "a"}));
  w.set("tokenizer.ggml.scores", GgufValue::f32_array({0, 0, 0, -1, -2}));
  w.set("tokenizer.ggml.token_type", GgufValue::i32_array({2, 3, 3, 1, 1}));
  const Loaded l = load_written(w);
  EXPECT_EQ(l.tok->encode("a\xC3\xA9", false), (std::vector<int32_t>{3, 4, 0, 0}));
  w.set("tokenizer.ggml.unknown_token_id", GgufValue::i32(-1));
  w.set("tokenizer.ggml.tokens", GgufValue::string_array({"x", "<s>", "</s>", "\xE2\x96\x81", "a"}));
  const Loaded m = load_written(w);
  EXPECT_EQ(m.tok->unk(), 0);  // -1 keeps llama.cpp's default of 0
}

// ---------------------------------------------------------------------------------------
// tokenizer.json import

TEST(TokenizerJson, Llama3MetadataAsLlamaCppWritesIt) {
  REQUIRE_LLAMA3();
  const GgufFile& g = *llama3().gguf;
  EXPECT_EQ(g.get_str("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(g.get_str("tokenizer.ggml.pre"), "llama-bpe");
  const auto& tokens = g.get_strs("tokenizer.ggml.tokens");
  const auto& types = g.get_ints("tokenizer.ggml.token_type");
  ASSERT_EQ(tokens.size(), 128256u);
  ASSERT_EQ(types.size(), 128256u);
  EXPECT_EQ(tokens[0], "!");
  EXPECT_EQ(tokens[128000], "<|begin_of_text|>");
  EXPECT_EQ(types[127999], 1);
  for (size_t i = 128000; i < 128256; ++i) EXPECT_EQ(types[i], 3) << i;
  EXPECT_EQ(g.get_strs("tokenizer.ggml.merges").size(), 280147u);
  EXPECT_EQ(g.get_strs("tokenizer.ggml.merges")[0], "\xC4\xA0 \xC4\xA0");
  EXPECT_EQ(g.get_i64("tokenizer.ggml.bos_token_id"), 128000);
  EXPECT_EQ(g.get_i64("tokenizer.ggml.eos_token_id"), 128001);
  EXPECT_FALSE(g.has("tokenizer.ggml.add_bos_token"));  // neither the config nor the post-processor say
  EXPECT_NE(g.get_str("tokenizer.chat_template").find("<|start_header_id|>"), std::string::npos);
  // The key order of convert_hf_to_gguf.py.
  std::vector<std::string> keys;
  for (const auto& [k, v] : g.metadata()) keys.push_back(k);
  EXPECT_EQ(keys, (std::vector<std::string>{"tokenizer.ggml.model", "tokenizer.ggml.pre",
                                            "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                                            "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id",
                                            "tokenizer.ggml.eos_token_id", "tokenizer.chat_template"}));
}

// GPT-2's own files (encoder.json + vocab.bpe) as a tokenizer.json give llama.cpp's GGUF.
TEST(TokenizerJson, Gpt2FilesGiveTheSameVocabularyAsLlamaCpp) {
  BRAID_REQUIRE_ASSET(enc, "vocab/tokenizers/gpt2/encoder.json");
  BRAID_REQUIRE_ASSET(bpe, "vocab/tokenizers/gpt2/vocab.bpe");
  BRAID_REQUIRE_ASSET(ref_path, "vocab/ggml-vocab-gpt-2.gguf");
  json tj;
  tj["model"] = {{"type", "BPE"}, {"vocab", json::parse(slurp(enc))}, {"merges", json::array()}};
  std::istringstream lines(slurp(bpe));
  std::string line;
  std::getline(lines, line);  // "#version: 0.2"
  while (std::getline(lines, line))
    if (!line.empty()) tj["model"]["merges"].push_back(line);
  tj["pre_tokenizer"] = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  tj["decoder"] = {{"type", "ByteLevel"}};
  tj["added_tokens"] = json::array({{{"id", 50256}, {"content", "<|endoftext|>"}, {"special", true}}});
  GgufWriter w;
  tokenizer_json_to_gguf(tj.dump(), w, "",
                         R"({"bos_token_id": 50256, "eos_token_id": 50256, "vocab_size": 50257})");
  const Loaded l = load_written(w);
  const auto ref = GgufFile::open(ref_path);
  for (const char* key : {"tokenizer.ggml.tokens", "tokenizer.ggml.merges"})
    EXPECT_TRUE(l.gguf->get_strs(key) == ref->get_strs(key)) << key;
  EXPECT_TRUE(l.gguf->get_ints("tokenizer.ggml.token_type") == ref->get_ints("tokenizer.ggml.token_type"));
  EXPECT_EQ(l.gguf->get_str("tokenizer.ggml.pre"), "gpt-2");
  EXPECT_EQ(l.gguf->get_i64("tokenizer.ggml.bos_token_id"), 50256);
  EXPECT_EQ(l.gguf->get_i64("tokenizer.ggml.eos_token_id"), 50256);
  int total = 0;
  EXPECT_EQ(run_vectors(*l.tok, "gpt-2", &total), total);
}

// A SentencePiece-style tokenizer.json (byte_fallback BPE, as Hugging Face converts Llama 2's
// tokenizer.model) made from llama-spm's vocabulary: the import must tokenize like the
// original.
TEST(TokenizerJson, SentencePieceStyleBpeMatchesTheOriginal) {
  BRAID_REQUIRE_ASSET(path, "vocab/ggml-vocab-llama-spm.gguf");
  const auto g = GgufFile::open(path);
  const auto& pieces = g->get_strs("tokenizer.ggml.tokens");
  const auto& scores = g->get_floats("tokenizer.ggml.scores");
  std::map<std::string, int> vocab;
  for (size_t i = 0; i < pieces.size(); ++i) vocab[pieces[i]] = static_cast<int>(i);
  // transformers' SentencePieceExtractor: every split of a piece into two pieces, ordered by
  // the piece's score (stable), within a piece by the halves' ids.
  struct M {
    std::string l, r;
    double score;
    int li, ri;
  };
  std::vector<M> merges;
  for (size_t i = 0; i < pieces.size(); ++i) {
    const std::string& p = pieces[i];
    std::vector<M> local;
    for (size_t cut = 1; cut < p.size(); ++cut) {
      if ((static_cast<uint8_t>(p[cut]) & 0xC0) == 0x80) continue;  // inside a character
      auto l = vocab.find(p.substr(0, cut)), r = vocab.find(p.substr(cut));
      if (l != vocab.end() && r != vocab.end())
        local.push_back({l->first, r->first, scores[i], l->second, r->second});
    }
    std::sort(local.begin(), local.end(),
              [](const M& a, const M& b) { return std::tie(a.li, a.ri) < std::tie(b.li, b.ri); });
    merges.insert(merges.end(), local.begin(), local.end());
  }
  std::stable_sort(merges.begin(), merges.end(), [](const M& a, const M& b) { return a.score > b.score; });
  json tj;
  tj["model"] = {{"type", "BPE"}, {"byte_fallback", true}, {"unk_token", "<unk>"}, {"vocab", vocab}};
  tj["model"]["merges"] = json::array();
  for (const M& m : merges) tj["model"]["merges"].push_back(m.l + " " + m.r);
  tj["added_tokens"] = json::array({{{"id", 0}, {"content", "<unk>"}, {"special", true}},
                                    {{"id", 1}, {"content", "<s>"}, {"special", true}},
                                    {{"id", 2}, {"content", "</s>"}, {"special", true}}});
  tj["decoder"] = {{"type", "Sequence"}, {"decoders", json::array()}};
  GgufWriter w;
  tokenizer_json_to_gguf(tj.dump(), w, R"({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
                                           "add_bos_token": true, "add_eos_token": false})");
  const Loaded l = load_written(w);
  EXPECT_EQ(l.gguf->get_str("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(l.tok->bos(), 1);
  EXPECT_EQ(l.tok->unk(), 0);
  EXPECT_TRUE(l.tok->add_bos());
  EXPECT_EQ(l.tok->type(13), TokenType::kByte);
  int total = 0;
  EXPECT_EQ(run_vectors(*l.tok, "llama-spm", &total), total);
}

TEST(TokenizerJson, RefusesWhatItCannotImport) {
  auto err = [](const std::string& tj, const std::string& tc = "") {
    GgufWriter w;
    return error_of([&] { tokenizer_json_to_gguf(tj, w, tc); });
  };
  auto has = [](const std::string& msg, const std::string& part) {
    EXPECT_NE(msg.find(part), std::string::npos) << "message: " << msg;
  };
  has(err("{\"model\": "), "tokenizer.json: invalid JSON");
  has(err("[1, 2]"), "tokenizer.json: expected a JSON object");
  has(err("{}"), "has no model");
  has(err(R"({"model": {"type": "Unigram", "vocab": []}})"), "model type 'Unigram' is not supported");
  has(err(R"({"model": {"type": "BPE", "vocab": [1]}})"), "model.vocab is missing or not an object");
  has(err(R"({"model": {"type": "BPE", "vocab": {"a": "x"}}})"), "model.vocab['a'] is not a token id");
  has(err(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": [7]},
              "pre_tokenizer": {"type": "ByteLevel"}})"),
      "model.merges[0]");
  has(err(R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
              "pre_tokenizer": {"type": "Whitespace"}})"),
      "is not one braid recognises");
  has(err(R"({"model": {"type": "BPE", "vocab": {"a": 0}}, "pre_tokenizer": {"type": "ByteLevel"}})",
          "{oops"),
      "tokenizer_config.json: invalid JSON");
}

TEST(TokenizerJson, RecognisesPreTokenizerFamilies) {
  auto pre_of = [](const json& pre_tokenizer) {
    json tj;
    tj["model"] = {{"type", "BPE"}, {"vocab", {{"a", 0}, {"b", 1}, {"ab", 2}}}, {"merges", {"a b"}}};
    tj["pre_tokenizer"] = pre_tokenizer;
    GgufWriter w;
    tokenizer_json_to_gguf(tj.dump(), w);
    const Loaded l = load_written(w);
    return l.gguf->get_str("tokenizer.ggml.pre");
  };
  const json byte_level_no_regex = {{"type", "ByteLevel"}, {"use_regex", false}};
  auto split = [](const std::string& re) {
    return json{{"type", "Split"}, {"pattern", {{"Regex", re}}}, {"behavior", "Isolated"}};
  };
  EXPECT_EQ(pre_of({{"type", "ByteLevel"}}), "gpt-2");
  EXPECT_EQ(pre_of({{"type", "Sequence"},
                    {"pretokenizers",
                     {split("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "
                            "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"),
                      byte_level_no_regex}}}),
            "qwen2");
  EXPECT_EQ(pre_of({{"type", "Sequence"},
                    {"pretokenizers",
                     {{{"type", "Digits"}, {"individual_digits", true}},
                      {{"type", "ByteLevel"}, {"use_regex", true}}}}}),
            "starcoder");
}

// ---------------------------------------------------------------------------------------
// Regex engine and Unicode tables

std::vector<std::string> split(const std::vector<std::string>& patterns, const std::string& s) {
  std::vector<std::unique_ptr<text::Regex>> owned;
  std::vector<const text::Regex*> res;
  for (const auto& p : patterns) {
    owned.push_back(std::make_unique<text::Regex>(p));
    res.push_back(owned.back().get());
  }
  text::CpText t;
  t.assign(s);
  std::vector<std::string> out;
  for (auto [b, e] : text::regex_split(t, res))
    out.push_back(s.substr(t.offsets[b], t.offsets[e] - t.offsets[b]));
  return out;
}

using Pieces = std::vector<std::string>;

// Llama 3's pre-tokenizer, as its tokenizer.json writes it.
const std::string kLlama3Pattern =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|)"
    R"(\s*[\r\n]+|\s+(?!\S)|\s+)";

TEST(Regex, Llama3Pattern) {
  const std::string& p = kLlama3Pattern;
  EXPECT_EQ(split({p}, "Hello world"), (Pieces{"Hello", " world"}));
  EXPECT_EQ(split({p}, "I'M 1234567"), (Pieces{"I", "'M", " ", "123", "456", "7"}));
  EXPECT_EQ(split({p}, "x'\xC5\xBFy"), (Pieces{"x", "'\xC5\xBF", "y"}));  // (?i) folds U+017F to s
  EXPECT_EQ(split({p}, "a   b\n\n  c  "), (Pieces{"a", "  ", " b", "\n\n", " ", " c", "  "}));
  EXPECT_EQ(split({p}, "x!!\n\ny"), (Pieces{"x", "!!\n\n", "y"}));
  EXPECT_EQ(split({p}, "\xC3\xA9t\xC3\xA9 \xE4\xBD\xA0\xE5\xA5\xBD"),
            (Pieces{"\xC3\xA9t\xC3\xA9", " \xE4\xBD\xA0\xE5\xA5\xBD"}));
}

TEST(Regex, Gpt2PatternAndSequences) {
  const std::string gpt2 = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
  EXPECT_EQ(split({gpt2}, "it's  42!"), (Pieces{"it", "'s", " ", " 42", "!"}));
  EXPECT_EQ(split({R"(\p{N})", gpt2}, "x 123"), (Pieces{"x", " ", "1", "2", "3"}));
  EXPECT_EQ(split({R"(\s+$)"}, "ab  "), (Pieces{"ab", "  "}));
  EXPECT_EQ(split({R"( ?[^(\s|.,!?…。，、।۔،)]+)"}, "hi, you."), (Pieces{"hi", ",", " you", "."}));
  EXPECT_EQ(split({R"(a{2,3})"}, "aaaaaaa"), (Pieces{"aaa", "aaa", "a"}));
  EXPECT_EQ(split({R"((?:ab)+c|a)"}, "ababcab"), (Pieces{"ababc", "a", "b"}));
  EXPECT_EQ(split({R"(x(?=y)|[\x{4F60}-\x{597D}]+)"}, "xyx\xE4\xBD\xA0\xE5\xA5\xBD"),
            (Pieces{"x", "yx", "\xE4\xBD\xA0\xE5\xA5\xBD"}));
}

TEST(Regex, LongInputsStayLinearAndShallow) {
  const std::string& p = kLlama3Pattern;
  const std::string spaces(200000, ' ');
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(split({p}, spaces + "x").size(), 2u);
  EXPECT_EQ(split({p}, spaces).size(), 1u);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 2.0);
}

// Every tokenizer.ggml.pre family compiles, and its pieces cover the text exactly.
TEST(PreTokenizers, EveryFamilySplitsTextIntoPieces) {
  const std::string text =
      "Hello, World! It's 2024-01-01: caf\xC3\xA9 \xE4\xBD\xA0\xE5\xA5\xBD\n\n\t  x=1+2; "
      "\xF0\x9F\x98\x80  ";
  std::string names = text::known_pre_tokenizers() + ",";
  int families = 0;
  for (size_t pos = 0, comma; (comma = names.find(',', pos)) != std::string::npos; pos = comma + 2) {
    const std::string name = names.substr(pos, comma - pos);
    const text::PreTokenizer* pre = text::find_pre_tokenizer(name);
    ASSERT_NE(pre, nullptr) << name;
    text::CpText t;
    t.assign(text);
    std::string joined;
    size_t last = 0;
    for (auto [b, e] : text::regex_split(t, pre->regex_list())) {
      EXPECT_EQ(b, last) << name;
      EXPECT_LT(b, e) << name;
      last = e;
      joined += text.substr(t.offsets[b], t.offsets[e] - t.offsets[b]);
    }
    EXPECT_EQ(joined, text) << name;
    ++families;
  }
  EXPECT_GT(families, 60);
  EXPECT_EQ(text::find_pre_tokenizer("klingon"), nullptr);
  auto pieces = [](const char* name, const std::string& s) {
    text::CpText t;
    t.assign(s);
    Pieces out;
    for (auto [b, e] : text::regex_split(t, text::find_pre_tokenizer(name)->regex_list()))
      out.push_back(s.substr(t.offsets[b], t.offsets[e] - t.offsets[b]));
    return out;
  };
  EXPECT_EQ(pieces("starcoder", "abc 123"), (Pieces{"abc", " ", "1", "2", "3"}));
  EXPECT_EQ(pieces("qwen2", "abc 123"), (Pieces{"abc", " ", "1", "2", "3"}));
  EXPECT_EQ(pieces("llama-bpe", "abc 12345"), (Pieces{"abc", " ", "123", "45"}));
  EXPECT_EQ(pieces("deepseek-coder", "ab\ncd 12"), (Pieces{"ab", "\n", "cd", " ", "1", "2"}));
  EXPECT_EQ(pieces("default", "ab, 1234"), (Pieces{"ab", ",", " ", "123", "4"}));
}

TEST(Regex, RefusesUnsupportedSyntax) {
  for (const char* bad :
       {"a+?", "a*+", "(a", "a)", "[a", R"(\p{Klingon})", R"(\1)", "(?<=a)b", "(?:a*)*", "*a"})
    EXPECT_THROW(text::Regex{bad}, Error) << bad;
}

TEST(Unicode, GeneralCategories) {
  using text::Gc;
  EXPECT_EQ(text::general_category('A'), Gc::Lu);
  EXPECT_EQ(text::general_category('7'), Gc::Nd);
  EXPECT_EQ(text::general_category(0xBD), Gc::No);     // ½
  EXPECT_EQ(text::general_category(0x4F60), Gc::Lo);   // 你
  EXPECT_EQ(text::general_category(0x1F600), Gc::So);  // 😀
  EXPECT_EQ(text::general_category(0x0301), Gc::Mn);
  EXPECT_EQ(text::general_category(0xE000), Gc::Co);
  EXPECT_EQ(text::general_category(0x10FFFF), Gc::Cn);
  EXPECT_EQ(text::general_category(0x110000), Gc::Cn);
  EXPECT_TRUE(text::is_whitespace(0x3000));
  EXPECT_TRUE(text::is_whitespace(0x85));
  EXPECT_FALSE(text::is_whitespace(0x1C));
  EXPECT_FALSE(text::is_whitespace(0x200B));
}

// ---------------------------------------------------------------------------------------
// Speed

TEST(Speed, LoadsLlama3QuicklyAndEncodesFast) {
  REQUIRE_LLAMA3();
  const GgufFile& g = *llama3().gguf;
  // Processor time, not wall time: the test machines are shared.
  const std::clock_t c0 = std::clock();
  auto tok = Tokenizer::from_gguf(g);
  const double load_s = static_cast<double>(std::clock() - c0) / CLOCKS_PER_SEC;
  BRAID_REQUIRE_ASSET(corpus, "corpus/tinystories_val_subset.txt");
  const std::string text = slurp(corpus);
  const std::clock_t c1 = std::clock();
  const std::vector<int32_t> ids = tok->encode(text, false);
  const double enc_s = static_cast<double>(std::clock() - c1) / CLOCKS_PER_SEC;
  std::printf(
      "[ speed    ] llama3 load %.3f s cpu (128256 tokens, 280147 merges); encode %.2f MB/s (%zu tokens)\n",
      load_s, text.size() / enc_s / 1e6, ids.size());
  EXPECT_EQ(tok->decode(ids), text);
#if !defined(__SANITIZE_ADDRESS__) && defined(NDEBUG)
  EXPECT_LT(load_s, 1.0);
  EXPECT_GT(text.size() / enc_s, 1e6);  // bytes per second
#endif
}

}  // namespace
}  // namespace braid
