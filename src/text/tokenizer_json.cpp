// tokenizer_json_to_gguf: a Hugging Face tokenizer.json (+ tokenizer_config.json,
// config.json) as the GGUF tokenizer metadata that llama.cpp's convert_hf_to_gguf.py writes
// (TextModel.get_vocab_base / _set_vocab_gpt2, LlamaHfVocab, gguf-py's SpecialVocab).
#include <algorithm>
#include <cctype>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "braid/error.h"
#include "braid/gguf.h"
#include "braid/tokenizer.h"
#include "text/json_util.h"
#include "text/pretokenize.h"
#include "text/special_vocab.h"
#include "text/token_index.h"
#include "text/utf8.h"

namespace braid {

namespace {

using nlohmann::json;
using text::member;

json parse(const std::string& text, const char* name) {
  try {
    json j = json::parse(text);
    if (!j.is_object()) fail(name, ": expected a JSON object at the top level");
    return j;
  } catch (const json::parse_error& e) {
    fail(name, ": invalid JSON: ", e.what());
  }
}

enum : int32_t {
  kNormal = 1,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

struct AddedToken {
  int64_t id;
  std::string content;
  bool special;
};

// convert_hf_to_gguf.py's does_token_look_special.
bool looks_special(const std::string& t) {
  auto starts = [&](std::string_view p) { return t.size() >= p.size() && t.compare(0, p.size(), p) == 0; };
  auto ends = [&](std::string_view p) {
    return t.size() >= p.size() && t.compare(t.size() - p.size(), p.size(), p) == 0;
  };
  if (t == "<pad>" || t == "<mask>" || t == "<2mass>" || t == "[@BOS@]") return true;
  if (starts("<|") && ends("|>")) return true;
  if (starts("<\xEF\xBD\x9C") && ends("\xEF\xBD\x9C>")) return true;  // <｜...｜> (DeepSeek)
  return starts("<unused") && ends(">");
}

std::string replace_all(std::string_view s, std::string_view from, std::string_view to) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  for (size_t hit; (hit = s.find(from, pos)) != std::string_view::npos; pos = hit + from.size()) {
    out.append(s.substr(pos, hit - pos));
    out.append(to);
  }
  out.append(s.substr(pos));
  return out;
}

// The model's merges as "left right" strings. Since transformers 4.45 they may be pairs,
// whose halves may contain spaces: those are written as U+0120 like gguf-py does.
std::vector<std::string> read_merges(const json& model) {
  std::vector<std::string> merges;
  const json* m = member(model, "merges");
  if (m == nullptr) return merges;
  if (!m->is_array()) fail("tokenizer.json: model.merges is not an array");
  merges.reserve(m->size());
  for (const json& e : *m) {
    if (e.is_string()) {
      merges.push_back(e.get<std::string>());
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      merges.push_back(replace_all(e[0].get<std::string>(), " ", "\xC4\xA0") + " " +
                       replace_all(e[1].get<std::string>(), " ", "\xC4\xA0"));
    } else {
      fail("tokenizer.json: model.merges[", merges.size(), "] is neither \"a b\" nor [\"a\", \"b\"]");
    }
  }
  return merges;
}

// tokenizer.ggml.pre from the pre_tokenizer (llama.cpp hashes the encoding of a test text
// instead, which needs the tokenizer running; the patterns identify the same families).
std::string detect_pre(const json& tj) {
  const json* pt = member(tj, "pre_tokenizer");
  std::vector<const json*> steps;
  if (pt != nullptr && pt->is_object()) {
    const json* type = member(*pt, "type");
    const json* list = member(*pt, "pretokenizers");
    if (type && *type == "Sequence" && list && list->is_array()) {
      for (const json& s : *list) steps.push_back(&s);
    } else {
      steps.push_back(pt);
    }
  }
  auto type_of = [](const json* s) {
    const json* t = member(*s, "type");
    return t && t->is_string() ? t->get<std::string>() : std::string();
  };
  auto byte_level = [&](const json* s, bool use_regex) {
    if (type_of(s) != "ByteLevel") return false;
    const json* r = member(*s, "use_regex");
    return (r == nullptr || !r->is_boolean() ? true : r->get<bool>()) == use_regex;
  };
  auto split_pattern = [&](const json* s) -> std::string {
    if (type_of(s) != "Split") return "";
    const json* p = member(*s, "pattern");
    const json* re = p ? member(*p, "Regex") : nullptr;
    return re && re->is_string() ? re->get<std::string>() : "";
  };
  auto digits = [&](const json* s, bool individual) {
    if (type_of(s) != "Digits") return false;
    const json* d = member(*s, "individual_digits");
    return (d && d->is_boolean() && d->get<bool>()) == individual;
  };

  const size_t n = steps.size();
  if (n == 1 && byte_level(steps[0], true)) return "gpt-2";
  if (n == 2 && byte_level(steps[1], false)) {
    if (const char* name = text::pre_name_for_split_pattern(split_pattern(steps[0]))) return name;
  }
  if (n == 2 && digits(steps[0], true) && byte_level(steps[1], true)) return "starcoder";
  if (n == 4 && type_of(steps[0]) == "Punctuation" && byte_level(steps[1], true) && digits(steps[2], false) &&
      split_pattern(steps[3]) == "[0-9][0-9][0-9]")
    return "falcon";
  if (n >= 3 && split_pattern(steps[0]) == "[\r\n]") {
    const std::string second = split_pattern(steps[1]);
    if (second.rfind("\\s?[A-Za-z", 0) == 0) return "deepseek-llm";
    if (second == "\\s?\\p{L}+") return "deepseek-coder";
  }
  std::string desc = pt == nullptr ? "null" : pt->dump();
  if (desc.size() > 300) desc = desc.substr(0, 300) + "...";
  fail(
      "tokenizer.json: pre_tokenizer ", desc,
      " is not one braid recognises (supported: GPT-2 byte-level, Llama 3, Qwen2, GPT-4o, Tekken, StarCoder, "
      "Falcon, DeepSeek LLM and Coder)");
}

struct Vocab {
  std::unordered_map<int64_t, std::string> by_id;  // model.vocab and added tokens
  std::map<std::string, int64_t> model_vocab;      // model.vocab
  std::vector<AddedToken> added;
};

Vocab read_vocab(const json& tj, const json& model) {
  Vocab v;
  const json* vocab = member(model, "vocab");
  if (vocab == nullptr || !vocab->is_object())
    fail("tokenizer.json: model.vocab is missing or not an object");
  for (const auto& [piece, id] : vocab->items()) {
    if (!id.is_number_integer() || id.get<int64_t>() < 0 || id.get<int64_t>() > 0x7FFFFFFF)
      fail("tokenizer.json: model.vocab['", piece, "'] is not a token id");
    v.model_vocab.emplace(piece, id.get<int64_t>());
    v.by_id[id.get<int64_t>()] = piece;
  }
  if (const json* a = member(tj, "added_tokens")) {
    if (!a->is_array()) fail("tokenizer.json: added_tokens is not an array");
    for (const json& t : *a) {
      const json* id = member(t, "id");
      const json* content = member(t, "content");
      if (!id || !id->is_number_integer() || id->get<int64_t>() < 0 || id->get<int64_t>() > 0x7FFFFFFF ||
          !content || !content->is_string())
        fail("tokenizer.json: added_tokens[", v.added.size(), "] lacks an id or content");
      const json* special = member(t, "special");
      v.added.push_back({id->get<int64_t>(), content->get<std::string>(),
                         special && special->is_boolean() && special->get<bool>()});
      v.by_id[id->get<int64_t>()] = content->get<std::string>();
    }
  }
  return v;
}

// Byte-level BPE: TextModel.get_vocab_base + _set_vocab_gpt2.
void write_gpt2(const json& tj, const json& model, const json* tc, const json* cfg, GgufWriter& out) {
  const Vocab v = read_vocab(tj, model);
  std::map<std::string, const AddedToken*> added_by_content;
  for (const AddedToken& t : v.added) added_by_content[t.content] = &t;  // get_added_vocab: last wins

  // len(tokenizer.vocab): the distinct pieces of the vocabulary and the added tokens.
  std::set<std::string> distinct;
  for (const auto& [piece, id] : v.model_vocab) distinct.insert(piece);
  for (const AddedToken& t : v.added) distinct.insert(t.content);
  int64_t vocab_size = static_cast<int64_t>(distinct.size());
  if (const json* vs = cfg ? member(*cfg, "vocab_size") : nullptr; vs && vs->is_number_integer())
    vocab_size = vs->get<int64_t>();
  int64_t max_id = -1;
  for (const auto& [id, piece] : v.by_id) max_id = std::max(max_id, id);
  if (max_id >= vocab_size)
    fail("tokenizer.json: token id ", max_id, " is not below the vocabulary size ", vocab_size);

  const std::string pre = detect_pre(tj);
  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  tokens.reserve(static_cast<size_t>(vocab_size));
  types.reserve(static_cast<size_t>(vocab_size));
  for (int64_t i = 0; i < vocab_size; ++i) {
    auto it = v.by_id.find(i);
    if (it == v.by_id.end()) {
      tokens.push_back("[PAD" + std::to_string(i) + "]");
      types.push_back(kUnused);
      continue;
    }
    std::string token = it->second;
    auto added = added_by_content.find(token);
    if (added == added_by_content.end()) {
      types.push_back(kNormal);
    } else if (added->second->special || looks_special(token)) {
      types.push_back(kControl);
    } else {
      token = replace_all(token, "\xE2\x96\x81", " ");  // pre-normalised user-defined spaces
      types.push_back(kUserDefined);
    }
    tokens.push_back(std::move(token));
  }

  out.set("tokenizer.ggml.model", GgufValue::string("gpt2"));
  out.set("tokenizer.ggml.pre", GgufValue::string(pre));
  out.set("tokenizer.ggml.tokens", GgufValue::string_array(std::move(tokens)));
  out.set("tokenizer.ggml.token_type", GgufValue::i32_array(types));
  std::vector<std::string> merges = read_merges(model);
  if (!merges.empty()) out.set("tokenizer.ggml.merges", GgufValue::string_array(std::move(merges)));
  text::write_special_vocab(tj, tc, cfg, /*n_vocab=*/-1, out);
}

// SentencePiece-style BPE with byte fallback: LlamaHfVocab + _set_vocab_llama_hf.
void write_llama(const json& tj, const json& model, const json* tc, const json* cfg, GgufWriter& out) {
  const Vocab v = read_vocab(tj, model);
  const int64_t base = static_cast<int64_t>(v.model_vocab.size());

  // The tokenizer's special tokens: added tokens marked special, and the ones the config names.
  std::set<std::string> specials;
  for (const AddedToken& t : v.added)
    if (t.special) specials.insert(t.content);
  if (tc != nullptr) {
    for (const char* key :
         {"bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token"}) {
      const json* e = member(*tc, key);
      if (e && e->is_string()) specials.insert(e->get<std::string>());
      if (e && e->is_object() && member(*e, "content") && (*e)["content"].is_string())
        specials.insert((*e)["content"].get<std::string>());
    }
    if (const json* extra = member(*tc, "additional_special_tokens"); extra && extra->is_array()) {
      for (const json& e : *extra) {
        if (e.is_string()) specials.insert(e.get<std::string>());
        if (e.is_object() && member(e, "content") && e["content"].is_string())
          specials.insert(e["content"].get<std::string>());
      }
    }
  }

  std::vector<std::string> tokens;
  std::vector<int32_t> types;
  for (int64_t id = 0; id < base; ++id) {
    auto it = v.by_id.find(id);
    if (it == v.by_id.end()) fail("tokenizer.json: model.vocab has no token with id ", id);
    const std::string& t = it->second;
    const bool byte = t.size() == 6 && t.compare(0, 3, "<0x") == 0 && t[5] == '>' &&
                      std::isxdigit(static_cast<unsigned char>(t[3])) &&
                      std::isxdigit(static_cast<unsigned char>(t[4]));
    tokens.push_back(t);
    types.push_back(byte ? kByte : specials.count(t) ? kControl : kNormal);
  }
  std::vector<const AddedToken*> extra;
  for (const AddedToken& t : v.added)
    if (t.id >= base) extra.push_back(&t);
  std::sort(extra.begin(), extra.end(),
            [](const AddedToken* a, const AddedToken* b) { return a->id < b->id; });
  for (size_t i = 0; i < extra.size(); ++i) {
    if (extra[i]->id != base + static_cast<int64_t>(i))
      fail("tokenizer.json: added token ids are not consecutive after the vocabulary (", extra[i]->id, ")");
    tokens.push_back(extra[i]->content);
    types.push_back(specials.count(extra[i]->content) ? kControl : kUserDefined);
  }

  // Scores that make SentencePiece's highest-score-first merging follow the BPE ranks.
  std::vector<float> scores(tokens.size(), 0.0f);
  std::vector<bool> formed(tokens.size(), false);
  text::TokenIndex index;
  index.build(tokens);  // a duplicate keeps its first id, which is all the scores need
  const std::vector<std::string> merges = read_merges(model);
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const std::string& m = merges[rank];
    const size_t sp = m.size() > 1 ? m.find(' ', 1) : std::string::npos;
    if (sp == std::string::npos) continue;
    const int32_t id = index.find(m.substr(0, sp) + m.substr(sp + 1));
    if (id < 0 || formed[id]) continue;
    formed[id] = true;
    scores[id] = -static_cast<float>(rank);
  }
  // Longer pieces no merge forms come last (a single character never is a merged pair).
  for (size_t i = 0; i < tokens.size(); ++i) {
    if (!formed[i] && types[i] == kNormal && tokens[i].size() > text::utf8_len_from_lead(tokens[i][0]))
      scores[i] = -static_cast<float>(merges.size());
  }

  out.set("tokenizer.ggml.model", GgufValue::string("llama"));
  out.set("tokenizer.ggml.pre", GgufValue::string("default"));
  const int64_t n = static_cast<int64_t>(tokens.size());
  out.set("tokenizer.ggml.tokens", GgufValue::string_array(std::move(tokens)));
  out.set("tokenizer.ggml.scores", GgufValue::f32_array(scores));
  out.set("tokenizer.ggml.token_type", GgufValue::i32_array(types));
  text::write_special_vocab(tj, tc, cfg, n, out);
}

}  // namespace

void tokenizer_json_to_gguf(const std::string& tokenizer_json_text, GgufWriter& out,
                            const std::string& tokenizer_config_json_text,
                            const std::string& config_json_text) {
  try {
    const json tj = parse(tokenizer_json_text, "tokenizer.json");
    json tc, cfg;
    if (!tokenizer_config_json_text.empty()) tc = parse(tokenizer_config_json_text, "tokenizer_config.json");
    if (!config_json_text.empty()) cfg = parse(config_json_text, "config.json");
    const json* tcp = tokenizer_config_json_text.empty() ? nullptr : &tc;
    const json* cfgp = config_json_text.empty() ? nullptr : &cfg;

    const json* model = member(tj, "model");
    if (model == nullptr || !model->is_object()) fail("tokenizer.json: has no model object");
    const json* type = member(*model, "type");
    const std::string kind = type && type->is_string() ? type->get<std::string>() : "BPE";
    if (kind != "BPE")
      fail("tokenizer.json: model type '", kind, "' is not supported (braid imports BPE tokenizers only)");
    const json* fallback = member(*model, "byte_fallback");
    if (fallback && fallback->is_boolean() && fallback->get<bool>()) {
      write_llama(tj, *model, tcp, cfgp, out);
    } else {
      write_gpt2(tj, *model, tcp, cfgp, out);
    }
  } catch (const json::exception& e) {  // a field of an unexpected type
    fail("tokenizer.json: ", e.what());
  }
}

}  // namespace braid
