// The regex pre-tokenizers of byte-level BPE vocabularies, by tokenizer.ggml.pre name, with
// the settings llama.cpp attaches to each name.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "text/regex.h"

namespace braid::text {

struct PreTokenizer {
  std::vector<std::unique_ptr<Regex>> regexes;  // applied in turn (see regex_split)
  bool ignore_merges = false;                   // a word that is one vocabulary entry is not merged further
  bool add_bos = false;                         // prompts get BOS unless tokenizer.ggml.add_bos_token says no

  std::vector<const Regex*> regex_list() const;
};

// The pre-tokenizer for tokenizer.ggml.pre `name` (compiled once, shared, immutable);
// nullptr for a name braid does not know.
const PreTokenizer* find_pre_tokenizer(std::string_view name);

// The known names, comma-separated, for error messages.
std::string known_pre_tokenizers();

// The tokenizer.ggml.pre name for a Hugging Face pre-tokenizer that is one Split regex
// followed by ByteLevel without its own regex (Llama 3, Qwen2, ...), recognised by the
// exact pattern; nullptr when the pattern is none of the known ones.
const char* pre_name_for_split_pattern(std::string_view pattern);

}  // namespace braid::text
