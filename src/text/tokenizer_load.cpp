// Tokenizer::from_gguf: reads and checks the tokenizer.ggml.* metadata, with llama.cpp's
// defaults and fix-ups (llama_vocab::impl::load), so the same file gives the same ids.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <string_view>

#include "braid/error.h"
#include "braid/gguf.h"
#include "text/pretokenize.h"
#include "text/tokenizer_impl.h"
#include "text/utf8.h"

namespace braid {

namespace {

constexpr const char* kModel = "tokenizer.ggml.model";
constexpr const char* kPre = "tokenizer.ggml.pre";
constexpr const char* kTokens = "tokenizer.ggml.tokens";
constexpr const char* kScores = "tokenizer.ggml.scores";
constexpr const char* kTypes = "tokenizer.ggml.token_type";
constexpr const char* kMerges = "tokenizer.ggml.merges";

// Texts that llama.cpp takes for an end-of-turn token when tokenizer.ggml.eot_token_id is
// absent, in the order we prefer them.
constexpr std::string_view kEotTexts[] = {
    "<|eot_id|>",      "<|im_end|>", "<|end|>", "<end_of_turn>",      "<|endoftext|>",
    "<|end_of_text|>", "<EOT>",      "_<EOT>",  "<end_of_utterance>",
};
// Texts of tokens that end generation (llama.cpp's special_eog_ids detection).
constexpr std::string_view kEogTexts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>",   "<|endoftext|>",
    "<|eom_id|>", "<EOT>",      "_<EOT>",  "<|end_of_text|>", "<end_of_utterance>",
};

// A special token id key: absent keeps `dflt`; -1 and 0xFFFFFFFF (what llama2.c exports
// write for "none") also keep it; any other value must be a token id.
int32_t read_id(const GgufFile& f, const std::string& key, int32_t dflt, size_t n_vocab) {
  const GgufValue* v = f.find(key);
  if (v == nullptr) return dflt;
  if (!gguf_is_int_type(v->type))
    fail("metadata key ", key, " has type ", gguf_type_name(v->type), ", expected an integer");
  if (v->i == -1 || v->i == 0xFFFFFFFFll) return dflt;
  if (v->i < 0 || static_cast<uint64_t>(v->i) >= n_vocab)
    fail(key, " = ",
         v->type == GgufType::UINT64 ? std::to_string(static_cast<uint64_t>(v->i)) : std::to_string(v->i),
         " is outside the vocabulary of ", n_vocab, " tokens");
  return static_cast<int32_t>(v->i);
}

void check_length(const char* key, size_t got, size_t n_vocab) {
  if (got != n_vocab) fail(key, " has ", got, " entries but ", kTokens, " has ", n_vocab);
}

void load_vocabulary(const GgufFile& f, Tokenizer::Impl& m) {
  const std::vector<std::string>& tokens = f.get_strs(kTokens);
  const size_t n = tokens.size();
  if (n == 0) fail(kTokens, " is empty");
  if (n > 0x7FFFFFFF) fail(kTokens, " has too many entries (", n, ")");

  m.scores.assign(n, 0.0f);
  if (const GgufValue* v = f.find(kScores)) {
    if (v->is_array() && (v->elem == GgufType::FLOAT32 || v->elem == GgufType::FLOAT64)) {
      check_length(kScores, v->floats.size(), n);
      for (size_t i = 0; i < n; ++i) m.scores[i] = static_cast<float>(v->floats[i]);
      // A NaN would break the merge queue's ordering: count it as the lowest score.
      for (float& s : m.scores)
        if (std::isnan(s)) s = -std::numeric_limits<float>::infinity();
    } else if (v->is_array() && gguf_is_int_type(v->elem)) {  // llama.cpp accepts int32 scores
      check_length(kScores, v->ints.size(), n);
      for (size_t i = 0; i < n; ++i) m.scores[i] = static_cast<float>(v->ints[i]);
    } else {
      fail(kScores, " has type ", gguf_type_name(v->type), ", expected an array of floats");
    }
  }

  m.types.assign(n, TokenType::kNormal);
  if (f.has(kTypes)) {
    const std::vector<int64_t>& types = f.get_ints(kTypes);
    check_length(kTypes, types.size(), n);
    for (size_t i = 0; i < n; ++i) {
      // Values outside llama_token_type read as undefined, as in llama.cpp.
      m.types[i] = types[i] >= 0 && types[i] <= 6 ? static_cast<TokenType>(types[i]) : TokenType::kUndefined;
    }
  }

  m.pieces.resize(n);
  for (size_t i = 0; i < n; ++i) {
    // llama.cpp names empty entries so that they cannot match anything.
    m.pieces[i] = tokens[i].empty() ? "[EMPTY_" + std::to_string(i) + "]" : tokens[i];
  }
  if (auto [a, b] = m.index.build(m.pieces); a >= 0)
    fail(kTokens, " has '", m.pieces[a], "' twice (ids ", a, " and ", b, ")");
}

void load_special_tokens(const GgufFile& f, Tokenizer::Impl& m, bool default_add_bos) {
  const size_t n = m.pieces.size();
  auto in_vocab = [&](int32_t id) { return static_cast<size_t>(id) < n ? id : -1; };
  if (m.kind == Tokenizer::Kind::kSpm) {  // llama.cpp's LLaMA defaults
    m.bos = in_vocab(1);
    m.eos = in_vocab(2);
    m.unk = in_vocab(0);
  }
  m.bos = read_id(f, "tokenizer.ggml.bos_token_id", m.bos, n);
  m.eos = read_id(f, "tokenizer.ggml.eos_token_id", m.eos, n);
  m.eot = read_id(f, "tokenizer.ggml.eot_token_id", -1, n);
  m.eom = read_id(f, "tokenizer.ggml.eom_token_id", -1, n);
  m.unk = read_id(f, "tokenizer.ggml.unknown_token_id", m.unk, n);
  m.pad = read_id(f, "tokenizer.ggml.padding_token_id", -1, n);

  m.add_bos = f.get_bool("tokenizer.ggml.add_bos_token", default_add_bos);
  m.add_eos = f.get_bool("tokenizer.ggml.add_eos_token", false);
  if (m.add_bos && m.bos < 0) fail("tokenizer.ggml.add_bos_token is true, but there is no BOS token id");
  if (m.add_eos && m.eos < 0) fail("tokenizer.ggml.add_eos_token is true, but there is no EOS token id");

  // End of turn / end of message by text when the ids are not given. llama.cpp makes such
  // "control-looking" tokens control tokens whatever their token_type says.
  auto mark_control = [&](int32_t id) { m.types[id] = TokenType::kControl; };
  if (m.eot < 0) {
    for (std::string_view t : kEotTexts) {
      if (int32_t id = m.find(t); id >= 0) {
        m.eot = id;
        mark_control(id);
        break;
      }
    }
  }
  if (m.eom < 0) {
    if (int32_t id = m.find("<|eom_id|>"); id >= 0) {
      m.eom = id;
      mark_control(id);
    }
  }

  m.eog.assign(n, false);
  for (std::string_view t : kEogTexts) {
    if (int32_t id = m.find(t); id >= 0) {
      m.eog[id] = true;
      mark_control(id);
    }
  }
  for (int32_t id : {m.eos, m.eot, m.eom})
    if (id >= 0) m.eog[id] = true;
}

// Tokens matched whole before BPE: control, user-defined and unknown ones, longest first.
void collect_specials(Tokenizer::Impl& m) {
  for (size_t i = 0; i < m.pieces.size(); ++i) {
    const TokenType t = m.types[i];
    if (t != TokenType::kControl && t != TokenType::kUserDefined && t != TokenType::kUnknown) continue;
    // A piece that is not well-formed UTF-8 cannot be written in a (validated) prompt,
    // and matching it inside a character would split the character.
    size_t prefix, off = 0;
    bool ok = true;
    const std::string& p = m.pieces[i];
    while (ok && off < p.size()) {
      const size_t len = text::utf8_sequence(std::string_view(p).substr(off), &prefix);
      ok = len > 0;
      off += len;
    }
    if (ok) m.specials.push_back(static_cast<int32_t>(i));
  }
  std::stable_sort(m.specials.begin(), m.specials.end(),
                   [&](int32_t a, int32_t b) { return m.pieces[a].size() > m.pieces[b].size(); });
}

void fill_byte_tokens(Tokenizer::Impl& m) {
  static const char* hex = "0123456789ABCDEF";
  for (int b = 0; b < 256; ++b) {
    const char name[7] = {'<', '0', 'x', hex[b >> 4], hex[b & 15], '>', 0};
    int32_t id = m.find(name);
    if (id < 0) {
      const char c = static_cast<char>(b);
      id = m.find(std::string_view(&c, 1));  // llama.cpp's fallback: the byte as a piece
    }
    m.byte_tokens[b] = id;
  }
}

std::unique_ptr<Tokenizer::Impl> load(const GgufFile& f) {
  auto m = std::make_unique<Tokenizer::Impl>();
  if (!f.has(kModel)) fail("has no tokenizer (metadata key ", kModel, " is missing)");
  const std::string model = f.get_str(kModel);
  if (model == "llama") {
    m->kind = Tokenizer::Kind::kSpm;
  } else if (model == "gpt2") {
    m->kind = Tokenizer::Kind::kBpe;
  } else if (model == "none" || model == "no_vocab") {
    fail("has no vocabulary (", kModel, " = '", model, "')");
  } else {
    fail("unsupported tokenizer ", kModel, " = '", model,
         "': braid supports 'llama' (SentencePiece BPE) and 'gpt2' (byte-level BPE)");
  }

  load_vocabulary(f, *m);

  const text::PreTokenizer* pre = nullptr;
  bool default_add_bos = true;
  if (m->kind == Tokenizer::Kind::kBpe) {
    m->pre = f.get_str(kPre, "");
    if (m->pre.empty()) {
      std::fprintf(
          stderr,
          "braid: warning: %s: %s is missing, using 'default'; tokenization may differ from the model's\n",
          f.label().c_str(), kPre);
      m->pre = "default";
    }
    pre = text::find_pre_tokenizer(m->pre);
    if (pre == nullptr)
      fail("unknown pre-tokenizer ", kPre, " = '", m->pre, "' (known: ", text::known_pre_tokenizers(), ")");
    default_add_bos = pre->add_bos;
    m->add_space_prefix = false;
  } else {
    m->pre = f.get_str(kPre, "default");
    m->add_space_prefix = true;
  }
  m->add_space_prefix = f.get_bool("tokenizer.ggml.add_space_prefix", m->add_space_prefix);

  load_special_tokens(f, *m, default_add_bos);
  collect_specials(*m);

  if (m->kind == Tokenizer::Kind::kSpm) {
    fill_byte_tokens(*m);
  } else {
    if (!f.has(kMerges)) fail(kMerges, " is missing (byte-level BPE needs its merges)");
    m->bpe = std::make_unique<text::ByteBpe>(f.get_strs(kMerges), m->index, *pre);
  }
  return m;
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_gguf(const GgufFile& f) {
  try {
    return std::unique_ptr<Tokenizer>(new Tokenizer(load(f)));
  } catch (const Error& e) {
    // Name the file, once (GgufFile's own errors already do).
    const std::string msg = e.what();
    if (msg.rfind(f.label(), 0) == 0) throw;
    throw Error(f.label() + ": " + msg);
  }
}

}  // namespace braid
