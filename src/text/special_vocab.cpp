#include "text/special_vocab.h"

#include <algorithm>
#include <cctype>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "braid/error.h"
#include "text/json_util.h"

namespace braid::text {

namespace {

using nlohmann::json;

// gguf-py's SpecialVocab: special token ids and add_*_token flags from the post-processor,
// tokenizer_config.json and config.json, in the order it records them (Python dicts keep
// insertion order, and so the GGUF keys come out in that order).
class SpecialVocab {
 public:
  SpecialVocab(const json& tj, const json* tc, const json* cfg, int64_t n_vocab) : n_vocab_(n_vocab) {
    const json empty = json::object();
    json config = tc ? *tc : empty;                          // a copy: the converter writes into it
    const bool have_config = tc != nullptr && !tc->empty();  // Python: an empty dict is false
    std::vector<std::pair<int64_t, std::string>> added;
    if (const json* a = member(tj, "added_tokens"); a && a->is_array()) {
      for (const json& t : *a) {
        const json* id = member(t, "id");
        const json* content = member(t, "content");
        if (id && id->is_number_integer() && content && content->is_string())
          added.emplace_back(id->get<int64_t>(), content->get<std::string>());
      }
    }

    auto str_or_null = [&](const char* key) -> json { return config.contains(key) ? config[key] : json(); };
    json special_bos = str_or_null("bos_token"), special_cls = str_or_null("cls_token");
    json special_eos = str_or_null("eos_token"), special_sep = str_or_null("sep_token");
    if (!truthy(&special_bos) && truthy(&special_cls) && have_config)
      config["bos_token"] = special_bos = special_cls;
    if (!truthy(&special_eos) && truthy(&special_sep) && have_config)
      config["eos_token"] = special_eos = special_sep;

    if (const json* pp = member(tj, "post_processor"); pp && pp->is_object()) {
      std::vector<const json*> procs;
      if (const json* list = member(*pp, "processors"); list && list->is_array()) {
        for (const json& p : *list) procs.push_back(&p);
      } else {
        procs.push_back(pp);
      }
      for (const json* proc : procs)
        parse_processor(*proc, config, have_config, special_bos, special_cls, special_eos, special_sep);
    }
    if (!have_config) {
      read_config_json(cfg);
      return;
    }

    if (const json* ct = member(config, "chat_template"); ct && (ct->is_string() || ct->is_array()))
      chat_template_ = *ct;
    for (const std::string& typ : types_) {
      if (const json* add = member(config, ("add_" + typ + "_token").c_str()); add && add->is_boolean())
        set_add(typ, add->get<bool>());
      const json* entry = member(config, (typ + "_token").c_str());
      std::string content;
      if (entry && entry->is_string()) {
        content = entry->get<std::string>();
      } else if (entry && entry->is_object() && member(*entry, "content") &&
                 (*entry)["content"].is_string()) {
        content = (*entry)["content"].get<std::string>();
      } else {
        continue;
      }
      for (const auto& [id, text] : added) {  // the first match
        if (text == content) {
          set_id(typ, id);
          break;
        }
      }
    }
    read_config_json(cfg);
  }

  void write(GgufWriter& out) const {
    static const std::map<std::string, std::string> kIdKeys = {
        {"bos", "bos_token_id"},       {"eos", "eos_token_id"},     {"unk", "unknown_token_id"},
        {"sep", "seperator_token_id"}, {"pad", "padding_token_id"}, {"cls", "cls_token_id"},
        {"mask", "mask_token_id"},     {"eot", "eot_token_id"},     {"eom", "eom_token_id"},
    };
    for (const auto& [typ, id] : ids_) {
      out.set("tokenizer.ggml." + kIdKeys.at(typ), GgufValue::u32(static_cast<uint32_t>(id)));
    }
    for (const auto& [typ, value] : add_) {
      if (typ == "bos" || typ == "eos" || typ == "sep")  // gguf-py has writers for these only
        out.set("tokenizer.ggml.add_" + typ + "_token", GgufValue::boolean(value));
    }
    write_chat_template(out);
  }

 private:
  void set_id(const std::string& typ, const json& tid) {
    if (!tid.is_number_integer()) return;
    const int64_t id = tid.get<int64_t>();
    if (id < 0) fail("tokenizer_config.json/config.json: invalid id for the ", typ, " token: ", id);
    if (n_vocab_ >= 0 && id >= n_vocab_) return;  // gguf-py warns and skips
    for (const auto& [t, v] : ids_)
      if (t == typ) return;  // the first source wins
    ids_.emplace_back(typ, id);
  }
  void set_id(const std::string& typ, int64_t id) { set_id(typ, json(id)); }

  void set_add(const std::string& typ, bool value) {
    for (auto& [t, v] : add_) {
      if (t == typ) {
        v = value;
        return;
      }
    }
    add_.emplace_back(typ, value);
  }

  void read_config_json(const json* cfg) {
    if (cfg == nullptr) return;
    for (const std::string& typ : types_) {
      const std::string key = typ + "_token_id";
      const json* id = member(*cfg, key.c_str());
      if (id == nullptr || id->is_null()) {
        if (const json* tc = member(*cfg, "text_config")) id = member(*tc, key.c_str());
      }
      if (id != nullptr) set_id(typ, *id);
    }
  }

  static std::string special_id(const json& entry) {
    const json* st = member(entry, "SpecialToken");
    const json* id = st ? member(*st, "id") : nullptr;
    return id && id->is_string() ? id->get<std::string>() : "";
  }

  // The converter compares token ids from the template with the config's *_token values,
  // which may be strings or {"content": ...} objects (those never compare equal).
  static bool same(const std::string& s, const json& v) { return !s.empty() && v.is_string() && v == s; }

  void parse_processor(const json& proc, json& config, bool have_config, json& special_bos, json& special_cls,
                       json& special_eos, json& special_sep) {
    const json* type = member(proc, "type");
    if (type == nullptr || !type->is_string()) return;
    if (*type == "RobertaProcessing") {
      set_add("bos", true);
      set_add("eos", true);
      set_add("sep", true);
      if (!truthy(&special_cls) && have_config) {
        const json* cls = member(proc, "cls");
        special_cls = cls && cls->is_array() && !cls->empty() ? (*cls)[0] : special_bos;
        config["cls_token"] = special_cls;
      }
      if (!truthy(&special_sep) && have_config) {
        const json* sep = member(proc, "sep");
        special_sep = sep && sep->is_array() && !sep->empty() ? (*sep)[0] : special_eos;
        config["sep_token"] = special_sep;
      }
      return;
    }
    if (*type != "TemplateProcessing") return;
    const json* single = member(proc, "single");
    const json* pair = member(proc, "pair");
    std::vector<json> tmpl_single =
        single && single->is_array() ? single->get<std::vector<json>>() : std::vector<json>{};
    std::vector<json> tmpl_pair =
        pair && pair->is_array() ? pair->get<std::vector<json>>() : std::vector<json>{};
    std::string special_first, special_last;
    if (tmpl_single.size() > 1) {
      special_first = special_id(tmpl_single.front());
      if (!special_first.empty()) {
        if (!have_config) special_bos = special_first;
        set_add("bos", same(special_first, special_bos) || same(special_first, special_cls));
      }
      special_last = special_id(tmpl_single.back());
      if (!special_last.empty()) {
        if (!have_config) {
          special_eos = special_last;
        } else if (!same(special_last, special_eos)) {
          // The template ends in another token than EOS: EOS becomes EOT (or EOM).
          if (std::find(types_.begin(), types_.end(), "eot") == types_.end()) {
            types_.push_back("eot");
            config["eot_token"] = special_eos;
          } else if (std::find(types_.begin(), types_.end(), "eom") == types_.end()) {
            types_.push_back("eom");
            config["eom_token"] = special_eos;
          }
          config["eos_token"] = special_eos = special_last;
        }
        set_add("eos", same(special_last, special_eos));
      }
    }
    if (tmpl_pair.empty()) return;
    size_t seq_start = !special_first.empty() && special_id(tmpl_pair.front()) == special_first ? 1 : 0;
    size_t seq_stop = tmpl_pair.size();
    if (!special_last.empty() && special_id(tmpl_pair.back()) == special_last) --seq_stop;
    if (seq_start >= seq_stop) return;
    std::vector<json> mid(tmpl_pair.begin() + static_cast<ptrdiff_t>(seq_start),
                          tmpl_pair.begin() + static_cast<ptrdiff_t>(seq_stop));
    auto seq_id = [](const json& e) {
      const json* s = member(e, "Sequence");
      const json* id = s ? member(*s, "id") : nullptr;
      return id && id->is_string() ? id->get<std::string>() : "";
    };
    if (seq_id(mid.front()) != "A" || seq_id(mid.back()) != "B" || mid.size() < 3) return;
    mid = std::vector<json>(mid.begin() + 1, mid.end() - 1);  // between A and B
    bool add_sep = false;
    const std::string first = special_id(mid[0]);
    if (!first.empty() && (same(first, special_sep) || same(first, special_eos)) && special_last.empty())
      add_sep = true;
    if (mid.size() == 2) {
      const std::string second = special_id(mid[1]);
      if (!second.empty() && (same(second, special_sep) || same(second, special_eos))) add_sep = true;
    }
    set_add("sep", add_sep);
    if (add_sep && !truthy(&special_sep) && have_config) config["sep_token"] = special_eos;
  }

  // gguf-py's add_chat_template: a string, or a list of {name, template}.
  void write_chat_template(GgufWriter& out) const {
    if (chat_template_.is_string()) {
      out.set("tokenizer.chat_template", GgufValue::string(chat_template_.get<std::string>()));
      return;
    }
    if (!chat_template_.is_array()) return;
    std::string dflt;
    bool have_default = false;
    std::set<std::string> names;
    for (const json& choice : chat_template_) {
      const json* name = member(choice, "name");
      const json* tmpl = member(choice, "template");
      if (!name || !name->is_string() || !tmpl || !tmpl->is_string()) continue;
      std::string clean;
      for (char c : name->get<std::string>())
        clean += (std::isalnum(static_cast<unsigned char>(c)) != 0) ? c : '_';
      if (clean.empty()) continue;
      if (clean == "default") {
        dflt = tmpl->get<std::string>();
        have_default = true;
      } else {
        names.insert(clean);
        out.set("tokenizer.chat_template." + clean, GgufValue::string(tmpl->get<std::string>()));
      }
    }
    if (!names.empty())
      out.set("tokenizer.chat_templates",
              GgufValue::string_array(std::vector<std::string>(names.begin(), names.end())));
    if (have_default) out.set("tokenizer.chat_template", GgufValue::string(dflt));
  }

  int64_t n_vocab_;
  std::vector<std::string> types_{"bos", "eos", "unk", "sep", "pad", "cls", "mask"};
  std::vector<std::pair<std::string, int64_t>> ids_;
  std::vector<std::pair<std::string, bool>> add_;
  json chat_template_;
};

}  // namespace

void write_special_vocab(const json& tokenizer_json, const json* tokenizer_config, const json* config,
                         int64_t n_vocab, GgufWriter& out) {
  SpecialVocab(tokenizer_json, tokenizer_config, config, n_vocab).write(out);
}

}  // namespace braid::text
