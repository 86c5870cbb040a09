// A small backtracking regex engine over Unicode code points, for the pre-tokenizer
// patterns of byte-level BPE vocabularies ("'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+|...").
//
// Why not std::regex: it knows no Unicode categories, works on bytes or wchar_t, and is
// slow. The patterns here are a handful of fixed strings, so a compact engine with real
// \p{..} classes is both exact and fast.
//
// Supported: literals; '.' (anything but \n); classes [...] and [^...] with ranges and the
// escapes below; \s \S (White_Space), \d \D (Nd), \w \W, \p{X} \P{X} for the general
// categories (L, Lu, Ll, Lt, Lm, Lo, M, Mn, Mc, Me, N, Nd, Nl, No, P, Pc, Pd, Ps, Pe, Pi,
// Pf, Po, S, Sm, Sc, Sk, So, Z, Zs, Zl, Zp, C, Cc, Cf, Cs, Co, Cn); \r \n \t \f \v \0 \xHH
// \x{H...} and escaped punctuation; groups (...) (?:...) and (?i:...) (ASCII case folding);
// alternation; greedy quantifiers ? * + {n} {n,} {n,m}; lookahead (?=...) (?!...); anchors
// ^ and $ (start and end of the piece being split). Matching is leftmost-first with
// backtracking, as in Oniguruma (which Hugging Face tokenizers use) and ECMAScript.
// Anything else (lazy or possessive quantifiers, backreferences, lookbehind, a quantified
// group that can match the empty string) is refused with a braid::Error at construction.
//
// Matching keeps its backtracking state on an explicit stack: deep recursion is bounded by
// the pattern's lookahead nesting, never by the length of the text.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace braid::text {

// Text prepared for matching: code points, their properties and byte offsets.
struct CpText {
  static constexpr uint8_t kWhiteSpace = 0x80;  // bit in props; the low 5 bits are the Gc

  std::vector<uint32_t> cps;
  std::vector<uint8_t> props;
  std::vector<size_t> offsets;  // byte offset of cps[i]; offsets[size()] = byte length

  // `utf8` must be well-formed (validated by the caller).
  void assign(std::string_view utf8);
  size_t size() const { return cps.size(); }
};

class Regex {
 public:
  // Backtracking state, reusable across match() calls to avoid allocations.
  struct Frame {
    uint32_t pc;
    size_t hi, lo;  // try positions hi, hi-1, ..., lo at pc
  };
  using Stack = std::vector<Frame>;

  static constexpr size_t kUnbounded = static_cast<size_t>(-1);  // the max of '*' and '+'

  explicit Regex(std::string_view pattern);

  // The length in code points of the match starting at `pos`, where the subject is
  // t[begin, end) (lookahead and $ see no further); -1 when there is none.
  ptrdiff_t match(const CpText& t, size_t begin, size_t end, size_t pos, Stack& stack) const;

  const std::string& pattern() const { return pattern_; }

 private:
  struct CharSet {
    std::vector<std::pair<uint32_t, uint32_t>> ranges;  // inclusive
    uint32_t gc_mask = 0;                               // general categories included
    bool space = false;                                 // \s
    bool not_space = false;                             // \S
    bool negate = false;
    uint64_t ascii[2] = {0, 0};  // membership of U+0000..U+007F, filled by finish()

    bool slow_contains(uint32_t cp, uint8_t prop) const;
    void finish();
    bool contains(uint32_t cp, uint8_t prop) const {
      if (cp < 128) return (ascii[cp >> 6] >> (cp & 63)) & 1;
      return slow_contains(cp, prop);
    }
  };

  enum class Op : uint8_t { kSet, kRepeat, kSplit, kJmp, kLook, kBegin, kEnd, kMatch };
  struct Inst {
    Op op;
    bool negate = false;      // kLook: (?!...)
    uint32_t set = 0;         // kSet, kRepeat
    uint32_t x = 0;           // kSplit: preferred branch; kJmp: target; kLook: body
    uint32_t y = 0;           // kSplit: other branch; kLook: continuation
    size_t min = 0, max = 0;  // kRepeat
  };

  // Parse tree.
  struct Node {
    enum Kind { kSet, kConcat, kAlt, kRepeat, kLook, kBegin, kEnd };
    explicit Node(Kind k) : kind(k) {}
    Kind kind;
    uint32_t set = 0;
    std::vector<uint32_t> kids;
    size_t min = 0, max = 0;
    bool negate = false;
  };
  class Parser;

  uint32_t compile(const std::vector<Node>& nodes, uint32_t n);
  void compile_node(const std::vector<Node>& nodes, uint32_t n);
  static bool nullable(const std::vector<Node>& nodes, uint32_t n);
  uint32_t emit(Inst in);
  ptrdiff_t run(uint32_t pc, const CpText& t, size_t begin, size_t end, size_t pos, Stack& st) const;

  std::string pattern_;
  std::vector<CharSet> sets_;
  std::vector<Inst> prog_;
};

// Splits t into pieces with each regex in turn: every current piece is cut into the
// regex's successive matches and the gaps between them, both kept (Hugging Face's Split
// with behavior "Isolated", llama.cpp's unicode_regex_split). Returns [begin, end) code
// point ranges in order, covering t.
std::vector<std::pair<size_t, size_t>> regex_split(const CpText& t, const std::vector<const Regex*>& regexes);

}  // namespace braid::text
