// Regex: parsing a pattern into a tree (Regex::Parser) and the constructor.
#include <algorithm>
#include <limits>

#include "braid/error.h"
#include "text/regex.h"
#include "text/unicode.h"
#include "text/utf8.h"

namespace braid::text {

namespace {

constexpr size_t kInf = Regex::kUnbounded;
constexpr size_t kMaxCount = 1000;  // {n,m} bounds; the tokenizers' patterns use at most 3

struct NamedMask {
  const char* name;
  uint32_t mask;
};

// \p{...} names: one- and two-letter general categories.
constexpr NamedMask kCategoryNames[] = {
    {"L", kMaskL},          {"M", kMaskM},          {"N", kMaskN},          {"P", kMaskP},
    {"S", kMaskS},          {"Z", kMaskZ},          {"C", kMaskC},          {"Lu", gc_bit(Gc::Lu)},
    {"Ll", gc_bit(Gc::Ll)}, {"Lt", gc_bit(Gc::Lt)}, {"Lm", gc_bit(Gc::Lm)}, {"Lo", gc_bit(Gc::Lo)},
    {"Mn", gc_bit(Gc::Mn)}, {"Mc", gc_bit(Gc::Mc)}, {"Me", gc_bit(Gc::Me)}, {"Nd", gc_bit(Gc::Nd)},
    {"Nl", gc_bit(Gc::Nl)}, {"No", gc_bit(Gc::No)}, {"Pc", gc_bit(Gc::Pc)}, {"Pd", gc_bit(Gc::Pd)},
    {"Ps", gc_bit(Gc::Ps)}, {"Pe", gc_bit(Gc::Pe)}, {"Pi", gc_bit(Gc::Pi)}, {"Pf", gc_bit(Gc::Pf)},
    {"Po", gc_bit(Gc::Po)}, {"Sm", gc_bit(Gc::Sm)}, {"Sc", gc_bit(Gc::Sc)}, {"Sk", gc_bit(Gc::Sk)},
    {"So", gc_bit(Gc::So)}, {"Zs", gc_bit(Gc::Zs)}, {"Zl", gc_bit(Gc::Zl)}, {"Zp", gc_bit(Gc::Zp)},
    {"Cc", gc_bit(Gc::Cc)}, {"Cf", gc_bit(Gc::Cf)}, {"Cs", gc_bit(Gc::Cs)}, {"Co", gc_bit(Gc::Co)},
    {"Cn", gc_bit(Gc::Cn)},
};

// Oniguruma's Unicode \w: letters, marks, decimal digits, connector punctuation.
constexpr uint32_t kMaskWord = kMaskL | kMaskM | gc_bit(Gc::Nd) | gc_bit(Gc::Pc);

}  // namespace
// Recursive descent over the pattern's code points, building Regex::Node trees.
class Regex::Parser {
 public:
  Parser(Regex& re, std::string_view pattern) : re_(re) {
    size_t i = 0;
    while (i < pattern.size()) {
      size_t prefix;
      if (utf8_sequence(pattern.substr(i), &prefix) == 0) error("is not valid UTF-8");
      cps_.push_back(next_codepoint(pattern, i));
    }
  }

  uint32_t parse() {
    const uint32_t n = parse_alt();
    if (pos_ != cps_.size()) error("has an unmatched ')'");
    return n;
  }

  std::vector<Node> nodes;

 private:
  [[noreturn]] void error(const std::string& what) const {
    fail("regex '", re_.pattern_, "' ", what, " (at code point ", pos_, ")");
  }
  bool at_end() const { return pos_ >= cps_.size(); }
  uint32_t peek(size_t k = 0) const { return pos_ + k < cps_.size() ? cps_[pos_ + k] : 0xFFFFFFFF; }
  uint32_t take() {
    if (at_end()) error("ends too early");
    return cps_[pos_++];
  }

  uint32_t add(Node node) {
    nodes.push_back(std::move(node));
    return static_cast<uint32_t>(nodes.size() - 1);
  }

  uint32_t add_set(CharSet cs) {
    if (icase_) fold_case(cs);
    cs.finish();
    re_.sets_.push_back(std::move(cs));
    Node n{Node::kSet};
    n.set = static_cast<uint32_t>(re_.sets_.size() - 1);
    return add(std::move(n));
  }

  // (?i:...): ASCII letters match both cases, and the two non-ASCII letters whose Unicode
  // case folding is an ASCII letter (U+017F long s, U+212A Kelvin sign), as in Oniguruma.
  // That is all the tokenizers' patterns ("(?i:'s|'t|...)") need.
  static void fold_case(CharSet& cs) {
    const auto ranges = cs.ranges;
    auto has = [&](uint32_t c) {
      for (auto [lo, hi] : ranges)
        if (c >= lo && c <= hi) return true;
      return false;
    };
    for (auto [lo, hi] : ranges) {
      for (uint32_t c = std::max<uint32_t>(lo, 'A'); c <= std::min<uint32_t>(hi, 'Z'); ++c)
        cs.ranges.emplace_back(c + 32, c + 32);
      for (uint32_t c = std::max<uint32_t>(lo, 'a'); c <= std::min<uint32_t>(hi, 'z'); ++c)
        cs.ranges.emplace_back(c - 32, c - 32);
    }
    if (has('s') || has('S')) cs.ranges.emplace_back(0x17F, 0x17F);
    if (has('k') || has('K')) cs.ranges.emplace_back(0x212A, 0x212A);
  }

  uint32_t parse_alt() {
    std::vector<uint32_t> alts{parse_concat()};
    while (peek() == '|') {
      ++pos_;
      alts.push_back(parse_concat());
    }
    if (alts.size() == 1) return alts[0];
    Node n{Node::kAlt};
    n.kids = std::move(alts);
    return add(std::move(n));
  }

  uint32_t parse_concat() {
    Node n{Node::kConcat};
    while (!at_end() && peek() != '|' && peek() != ')') n.kids.push_back(parse_repeat());
    if (n.kids.size() == 1) return n.kids[0];
    return add(std::move(n));
  }

  // Reads {n}, {n,}, {n,m} at pos_ (just after '{'); false (pos_ unchanged) when the
  // braces are not a quantifier, in which case '{' is a literal, as in Oniguruma.
  bool parse_braces(size_t& mn, size_t& mx) {
    const size_t save = pos_;
    auto number = [&](size_t& v) {
      size_t digits = 0;
      v = 0;
      while (peek() >= '0' && peek() <= '9') {
        v = std::min<size_t>(v * 10 + (take() - '0'), kMaxCount + 1);
        ++digits;
      }
      return digits > 0;
    };
    if (!number(mn)) {
      pos_ = save;
      return false;
    }
    mx = mn;
    if (peek() == ',') {
      ++pos_;
      if (!number(mx)) mx = kInf;
    }
    if (peek() != '}') {
      pos_ = save;
      return false;
    }
    ++pos_;
    if (mn > kMaxCount || (mx != kInf && mx > kMaxCount)) error("has a repeat count above 1000");
    if (mx < mn) error("has a repeat {n,m} with m < n");
    return true;
  }

  uint32_t parse_repeat() {
    uint32_t atom = parse_atom();
    for (;;) {
      size_t mn, mx;
      const uint32_t c = peek();
      if (c == '?' || c == '*' || c == '+') {
        ++pos_;
        mn = c == '+' ? 1 : 0;
        mx = c == '?' ? 1 : kInf;
      } else if (c == '{') {
        ++pos_;
        if (!parse_braces(mn, mx)) {
          --pos_;  // a literal '{', read as the next atom
          return atom;
        }
      } else {
        return atom;
      }
      if (peek() == '?' || peek() == '+') error("uses a lazy or possessive quantifier (unsupported)");
      Node n{Node::kRepeat};
      n.kids = {atom};
      n.min = mn;
      n.max = mx;
      atom = add(std::move(n));
    }
  }

  uint32_t parse_atom() {
    const uint32_t c = take();
    switch (c) {
      case '(':
        return parse_group();
      case '[':
        return add_set(parse_class());
      case '.': {
        CharSet cs;
        cs.ranges.emplace_back('\n', '\n');
        cs.negate = true;
        return add_set(std::move(cs));
      }
      case '^':
        return add(Node{Node::kBegin});
      case '$':
        return add(Node{Node::kEnd});
      case '\\': {
        CharSet cs;
        parse_escape(cs);
        return add_set(std::move(cs));
      }
      case '*':
      case '+':
      case '?':
        error("has a quantifier with nothing to repeat");
      default: {
        CharSet cs;
        cs.ranges.emplace_back(c, c);
        return add_set(std::move(cs));
      }
    }
  }

  uint32_t parse_group() {
    bool look = false, negate = false;
    const bool outer_icase = icase_;
    if (peek() == '?') {
      ++pos_;
      const uint32_t k = take();
      if (k == ':') {
      } else if (k == '=' || k == '!') {
        look = true;
        negate = k == '!';
      } else if (k == 'i' && peek() == ':') {
        ++pos_;
        icase_ = true;
      } else {
        error("uses an unsupported group kind");
      }
    }
    const uint32_t body = parse_alt();
    if (take() != ')') error("has an unclosed group");
    icase_ = outer_icase;
    if (!look) return body;
    Node n{Node::kLook};
    n.kids = {body};
    n.negate = negate;
    return add(std::move(n));
  }

  uint32_t parse_hex(size_t max_digits) {
    uint32_t v = 0;
    size_t digits = 0;
    while (digits < max_digits) {
      const uint32_t h = peek();
      uint32_t d;
      if (h >= '0' && h <= '9') {
        d = h - '0';
      } else if (h >= 'a' && h <= 'f') {
        d = h - 'a' + 10;
      } else if (h >= 'A' && h <= 'F') {
        d = h - 'A' + 10;
      } else {
        break;
      }
      v = v * 16 + d;
      ++pos_;
      ++digits;
    }
    if (digits == 0 || v > 0x10FFFF) error("has a bad \\x escape");
    return v;
  }

  // After '\': adds what the escape stands for to cs. Returns the literal code point for
  // escapes that stand for one (so a class can use it as a range end), else 0xFFFFFFFF.
  uint32_t parse_escape(CharSet& cs) {
    const uint32_t c = take();
    uint32_t lit = 0xFFFFFFFF;
    switch (c) {
      case 's':
        cs.space = true;
        break;
      case 'S':
        cs.not_space = true;
        break;
      case 'd':
        cs.gc_mask |= gc_bit(Gc::Nd);
        break;
      case 'D':
        cs.gc_mask |= kMaskAll & ~gc_bit(Gc::Nd);
        break;
      case 'w':
        cs.gc_mask |= kMaskWord;
        break;
      case 'W':
        cs.gc_mask |= kMaskAll & ~kMaskWord;
        break;
      case 'p':
      case 'P': {
        if (take() != '{') error("has \\p without {");
        std::string name;
        while (peek() != '}') name += static_cast<char>(take());
        ++pos_;
        uint32_t mask = 0;
        for (const auto& nm : kCategoryNames)
          if (name == nm.name) mask = nm.mask;
        if (mask == 0) error("uses an unknown property \\p{" + name + "}");
        cs.gc_mask |= c == 'p' ? mask : kMaskAll & ~mask;
        break;
      }
      case 'r':
        lit = '\r';
        break;
      case 'n':
        lit = '\n';
        break;
      case 't':
        lit = '\t';
        break;
      case 'f':
        lit = '\f';
        break;
      case 'v':
        lit = '\v';
        break;
      case '0':
        lit = 0;
        break;
      case 'x':
        if (peek() == '{') {
          ++pos_;
          lit = parse_hex(6);
          if (take() != '}') error("has an unclosed \\x{");
        } else {
          lit = parse_hex(2);
        }
        break;
      default:
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
          error("uses an unsupported escape");
        lit = c;  // escaped punctuation stands for itself
    }
    if (lit != 0xFFFFFFFF) cs.ranges.emplace_back(lit, lit);
    return lit;
  }

  // After '[': the class up to its ']'.
  CharSet parse_class() {
    CharSet cs;
    if (peek() == '^') {
      ++pos_;
      cs.negate = true;
    }
    bool first = true;
    for (;;) {
      uint32_t c = take();
      if (c == ']' && !first) break;
      first = false;
      if (c == '[') error("uses a nested class (unsupported)");
      uint32_t lo = c;
      if (c == '\\') {
        lo = parse_escape(cs);
        if (lo == 0xFFFFFFFF) continue;  // \s, \p{L}, ...: not a range end
        cs.ranges.pop_back();            // re-added below, maybe as a range
      }
      uint32_t hi = lo;
      if (peek() == '-' && peek(1) != ']' && pos_ + 1 < cps_.size()) {
        ++pos_;
        hi = take();
        if (hi == '\\') {
          CharSet tmp;
          hi = parse_escape(tmp);
          if (hi == 0xFFFFFFFF) error("has a class range ending in a class escape");
        }
        if (hi < lo) error("has a class range out of order");
      }
      cs.ranges.emplace_back(lo, hi);
    }
    return cs;
  }

  Regex& re_;
  std::vector<uint32_t> cps_;
  size_t pos_ = 0;
  bool icase_ = false;
};

Regex::Regex(std::string_view pattern) : pattern_(pattern) {
  Parser p(*this, pattern);
  const uint32_t root = p.parse();
  compile(p.nodes, root);
}

}  // namespace braid::text
