#include "text/pretokenize.h"

#include <initializer_list>
#include <map>
#include <mutex>
#include <utility>

namespace braid::text {

namespace {

// The patterns, as the models' tokenizer.json files write them (llama.cpp rewrites some
// because std::regex lacks Unicode classes and (?i:); this engine needs no rewriting).
// Where llama.cpp runs a sequence of regexes, so do we. Non-ASCII characters are written as
// \x{...}: several in these classes (U+1F7D, U+2126, U+212A, ...) have canonical singleton
// decompositions, which an editor's Unicode normalisation would silently change.

constexpr const char* kGpt2 = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

constexpr const char* kLlama3 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|)"
    R"(\s*[\r\n]+|\s+(?!\S)|\s+)";

constexpr const char* kQwen2 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|)"
    R"(\s*[\r\n]+|\s+(?!\S)|\s+)";

constexpr const char* kQwen35 =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N})"
    R"(]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

constexpr const char* kSeedCoder =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|)"
    R"(\s*[\r\n]+|\s+(?!\S)|\s+)";

// Possessive quantifiers of the original ("?+", "++") read as greedy, as llama.cpp does.
constexpr const char* kBailingMoe =
    R"('(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]|)"
    R"(\s+(?!\S)|\s+)";

constexpr const char* kTekken =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N})"
    R"(]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|)"
    R"(\s*[\r\n]+|\s+(?!\S)|\s+)";

constexpr const char* kGpt4o =
    R"([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|)"
    R"('m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|)"
    R"('t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// GPT-2's pattern without the final "|\s+" (llama.cpp's form inside sequences; a lone run of
// whitespace the pattern leaves unmatched is kept as its own piece all the same).
constexpr const char* kGpt2Seq = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S))";

constexpr const char* kCjk = R"([\x{4E00}-\x{9FA5}\x{0800}-\x{4E00}\x{AC00}-\x{D7FF}]+)";

constexpr const char* kDeepseekLetters =
    R"(\s?[A-Za-z\x{00B5}\x{00C0}-\x{00D6}\x{00D8}-\x{00F6}\x{00F8}-\x{01BA}\x{01BC}-\x{01BF}\x{01C4})"
    R"(-\x{0293}\x{0295}-\x{02AF}\x{0370}-\x{0373}\x{0376}\x{0377}\x{037B}-\x{037D}\x{037F}\x{0386})"
    R"(\x{0388}-\x{038A}\x{038C}\x{038E}-\x{03A1}\x{03A3}-\x{03F5}\x{03F7}-\x{0481}\x{048A}-\x{052F})"
    R"(\x{0531}-\x{0556}\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD})"
    R"(-\x{1CBF}\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D})"
    R"(\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D})"
    R"(\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3})"
    R"(\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107}\x{210A})"
    R"(-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134})"
    R"(\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E})"
    R"(-\x{2CE4}\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F})"
    R"(\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21})"
    R"(-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}\x{10C80})"
    R"(-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+)";

constexpr const char* kDeepseek3Main =
    R"([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+| ?[\p{P})"
    R"(\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

constexpr const char* kDeepseekPunct =
    R"(\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+)";

constexpr const char* kCjkKana = R"([\x{4E00}-\x{9FA5}\x{3040}-\x{309F}\x{30A0}-\x{30FF}]+)";

constexpr const char* kBloom = R"( ?[^(\s|.,!?\x{2026}\x{3002}\x{FF0C}\x{3001}\x{0964}\x{06D4}\x{060C})]+)";

struct Family {
  std::initializer_list<const char*> names;
  std::initializer_list<const char*> patterns;
  bool ignore_merges = false;
  bool add_bos = false;
};

// The names llama.cpp (llama-vocab.cpp) maps to each family.
const Family kFamilies[] = {
    {{"default"}, {R"([\p{P}\$\+<=>\^~\|]+)", kGpt2Seq, R"(\p{N}+)", "[0-9][0-9][0-9]"}},
    {{"llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2"},
     {kLlama3},
     /*ignore_merges=*/true,
     /*add_bos=*/true},
    {{"dbrx", "smaug-bpe", "glm4", "chatglm-bpe"}, {kLlama3}},
    {{"gpt-2", "mpt", "olmo", "phi-2", "jina-es", "jina-de", "gigachat", "jina-v2-es", "jina-v2-de",
      "a.x-4.0", "mellum", "modern-bert", "jina-v1-en", "jina-v2-code", "roberta-bpe", "exaone4", "jais",
      "trillion", "granite-docling"},
     {kGpt2}},
    {{"starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b", "mellum2"},
     {R"(\p{N})", kGpt2Seq}},
    {{"falcon"}, {R"([\p{P}\$\+<=>\^~\|`]+)", kGpt2Seq, "[0-9][0-9][0-9]"}},
    {{"qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "stablelm2", "hunyuan", "megrez", "solar-open",
      "grok-2"},
     {kQwen2}},
    {{"qwen35"}, {kQwen35}},
    {{"deepseek-llm"}, {"[\r\n]", kDeepseekLetters, kDeepseekPunct, R"(\s+$)", kCjk, R"(\p{N}+)"}},
    {{"deepseek-coder"}, {"[\r\n]", R"(\s?\p{L}+)", R"(\s?\p{P}+)", kCjk, R"(\p{N})"}},
    {{"deepseek-v3", "hunyuan-dense"}, {R"(\p{N}{1,3})", kCjkKana, kDeepseek3Main}},
    {{"poro-chat", "bloom", "gpt3-finnish"}, {kBloom}},
    {{"viking"}, {kBloom, R"(\p{N})"}},
    {{"tekken"}, {kTekken}, /*ignore_merges=*/true, /*add_bos=*/true},
    {{"gpt-4o", "llama4", "kanana2"}, {kGpt4o}},
    {{"seed-coder"}, {kSeedCoder}},
    {{"bailingmoe", "bailingmoe2", "llada-moe"}, {kBailingMoe}},
};

}  // namespace

std::vector<const Regex*> PreTokenizer::regex_list() const {
  std::vector<const Regex*> out;
  for (const auto& r : regexes) out.push_back(r.get());
  return out;
}

const PreTokenizer* find_pre_tokenizer(std::string_view name) {
  // Compiled on first use of each family, then shared by every Tokenizer (and never freed,
  // so that no Tokenizer can outlive its pre-tokenizer at exit).
  static std::mutex mu;
  static auto& compiled = *new std::map<const Family*, std::unique_ptr<PreTokenizer>>();
  for (const Family& f : kFamilies) {
    for (const char* n : f.names) {
      if (name != n) continue;
      std::lock_guard<std::mutex> lock(mu);
      auto& slot = compiled[&f];
      if (!slot) {
        auto p = std::make_unique<PreTokenizer>();
        for (const char* pattern : f.patterns) p->regexes.push_back(std::make_unique<Regex>(pattern));
        p->ignore_merges = f.ignore_merges;
        p->add_bos = f.add_bos;
        slot = std::move(p);
      }
      return slot.get();
    }
  }
  return nullptr;
}

const char* pre_name_for_split_pattern(std::string_view pattern) {
  static constexpr std::pair<const char*, const char*> kKnown[] = {
      {kLlama3, "llama-bpe"}, {kQwen2, "qwen2"},   {kQwen35, "qwen35"}, {kSeedCoder, "seed-coder"},
      {kGpt4o, "gpt-4o"},     {kTekken, "tekken"}, {kGpt2, "gpt-2"},
  };
  for (const auto& [p, name] : kKnown)
    if (pattern == p) return name;
  return nullptr;
}

std::string known_pre_tokenizers() {
  std::string out;
  for (const Family& f : kFamilies) {
    for (const char* n : f.names) {
      if (!out.empty()) out += ", ";
      out += n;
    }
  }
  return out;
}

}  // namespace braid::text
