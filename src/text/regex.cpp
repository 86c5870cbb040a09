// Regex: compiling the tree to a backtracking program, running it, and splitting text.
#include "text/regex.h"

#include <algorithm>

#include "braid/error.h"
#include "text/unicode.h"
#include "text/utf8.h"

namespace braid::text {

namespace {
constexpr size_t kInf = Regex::kUnbounded;
}  // namespace

void CpText::assign(std::string_view utf8) {
  cps.clear();
  props.clear();
  offsets.clear();
  cps.reserve(utf8.size());
  props.reserve(utf8.size());
  offsets.reserve(utf8.size() + 1);
  size_t i = 0;
  while (i < utf8.size()) {
    offsets.push_back(i);
    const uint32_t cp = next_codepoint(utf8, i);
    cps.push_back(cp);
    props.push_back(static_cast<uint8_t>(static_cast<uint8_t>(general_category(cp)) |
                                         (is_whitespace(cp) ? kWhiteSpace : 0)));
  }
  offsets.push_back(utf8.size());
}

bool Regex::CharSet::slow_contains(uint32_t cp, uint8_t prop) const {
  bool in = ((gc_mask >> (prop & 31)) & 1) != 0;
  if (!in && (space || not_space)) {
    const bool ws = (prop & CpText::kWhiteSpace) != 0;
    in = (space && ws) || (not_space && !ws);
  }
  for (size_t i = 0; !in && i < ranges.size(); ++i) in = cp >= ranges[i].first && cp <= ranges[i].second;
  return in != negate;
}

void Regex::CharSet::finish() {
  ascii[0] = ascii[1] = 0;
  for (uint32_t cp = 0; cp < 128; ++cp) {
    const uint8_t prop = static_cast<uint8_t>(static_cast<uint8_t>(general_category(cp)) |
                                              (is_whitespace(cp) ? CpText::kWhiteSpace : 0));
    if (slow_contains(cp, prop)) ascii[cp >> 6] |= uint64_t{1} << (cp & 63);
  }
}

uint32_t Regex::emit(Inst in) {
  prog_.push_back(in);
  return static_cast<uint32_t>(prog_.size() - 1);
}

bool Regex::nullable(const std::vector<Node>& nodes, uint32_t n) {
  const Node& node = nodes[n];
  switch (node.kind) {
    case Node::kSet:
      return false;
    case Node::kConcat:
      for (uint32_t k : node.kids)
        if (!nullable(nodes, k)) return false;
      return true;
    case Node::kAlt:
      for (uint32_t k : node.kids)
        if (nullable(nodes, k)) return true;
      return false;
    case Node::kRepeat:
      return node.min == 0 || nullable(nodes, node.kids[0]);
    default:  // lookahead, anchors
      return true;
  }
}

uint32_t Regex::compile(const std::vector<Node>& nodes, uint32_t n) {
  const uint32_t start = static_cast<uint32_t>(prog_.size());
  compile_node(nodes, n);
  emit({Op::kMatch});
  return start;
}

void Regex::compile_node(const std::vector<Node>& nodes, uint32_t n) {
  const Node& node = nodes[n];
  switch (node.kind) {
    case Node::kSet: {
      Inst in{Op::kSet};
      in.set = node.set;
      emit(in);
      return;
    }
    case Node::kConcat:
      for (uint32_t k : node.kids) compile_node(nodes, k);
      return;
    case Node::kAlt: {
      std::vector<uint32_t> jumps;
      for (size_t i = 0; i + 1 < node.kids.size(); ++i) {
        const uint32_t split = emit({Op::kSplit});
        prog_[split].x = static_cast<uint32_t>(prog_.size());
        compile_node(nodes, node.kids[i]);
        jumps.push_back(emit({Op::kJmp}));
        prog_[split].y = static_cast<uint32_t>(prog_.size());
      }
      compile_node(nodes, node.kids.back());
      for (uint32_t j : jumps) prog_[j].x = static_cast<uint32_t>(prog_.size());
      return;
    }
    case Node::kRepeat: {
      const uint32_t kid = node.kids[0];
      if (nodes[kid].kind == Node::kSet) {  // the common case: one instruction, no recursion
        Inst in{Op::kRepeat};
        in.set = nodes[kid].set;
        in.min = node.min;
        in.max = node.max;
        emit(in);
        return;
      }
      if (node.max > 1 && nullable(nodes, kid))
        fail("regex '", pattern_, "' repeats a group that can match the empty string (unsupported)");
      for (size_t i = 0; i < node.min; ++i) compile_node(nodes, kid);
      if (node.max == kInf) {
        const uint32_t loop = emit({Op::kSplit});
        prog_[loop].x = static_cast<uint32_t>(prog_.size());
        compile_node(nodes, kid);
        Inst jmp{Op::kJmp};
        jmp.x = loop;
        emit(jmp);
        prog_[loop].y = static_cast<uint32_t>(prog_.size());
      } else {
        std::vector<uint32_t> splits;
        for (size_t i = node.min; i < node.max; ++i) {
          const uint32_t split = emit({Op::kSplit});
          prog_[split].x = static_cast<uint32_t>(prog_.size());
          compile_node(nodes, kid);
          splits.push_back(split);
        }
        for (uint32_t s : splits) prog_[s].y = static_cast<uint32_t>(prog_.size());
      }
      return;
    }
    case Node::kLook: {
      const uint32_t look = emit({Op::kLook});
      prog_[look].negate = node.negate;
      const uint32_t skip = emit({Op::kJmp});  // the body is compiled out of line
      prog_[look].x = compile(nodes, node.kids[0]);
      prog_[skip].x = static_cast<uint32_t>(prog_.size());
      prog_[look].y = skip;
      return;
    }
    case Node::kBegin:
      emit({Op::kBegin});
      return;
    case Node::kEnd:
      emit({Op::kEnd});
      return;
  }
}

ptrdiff_t Regex::run(uint32_t pc, const CpText& t, size_t begin, size_t end, size_t pos, Stack& st) const {
  const size_t base = st.size();
  for (;;) {
    const Inst& in = prog_[pc];
    bool ok = true;
    switch (in.op) {
      case Op::kSet:
        if (pos < end && sets_[in.set].contains(t.cps[pos], t.props[pos])) {
          ++pos;
          ++pc;
        } else {
          ok = false;
        }
        break;
      case Op::kRepeat: {
        const CharSet& cs = sets_[in.set];
        const size_t limit = std::min(in.max, end - pos);
        size_t n = 0;
        while (n < limit && cs.contains(t.cps[pos + n], t.props[pos + n])) ++n;
        if (n < in.min) {
          ok = false;
          break;
        }
        // Greedy: go on with all n; on failure retry with n-1, ..., min.
        if (n > in.min) st.push_back({pc + 1, pos + n - 1, pos + in.min});
        pos += n;
        ++pc;
        break;
      }
      case Op::kSplit:
        st.push_back({in.y, pos, pos});
        pc = in.x;
        break;
      case Op::kJmp:
        pc = in.x;
        break;
      case Op::kLook: {
        const bool found = run(in.x, t, begin, end, pos, st) >= 0;
        if (found != in.negate) {
          pc = in.y;
        } else {
          ok = false;
        }
        break;
      }
      case Op::kBegin:
        ok = pos == begin;
        ++pc;
        break;
      case Op::kEnd:
        ok = pos == end;
        ++pc;
        break;
      case Op::kMatch:
        st.resize(base);
        return static_cast<ptrdiff_t>(pos);
    }
    if (ok) continue;
    if (st.size() == base) return -1;
    Frame& f = st.back();
    pc = f.pc;
    pos = f.hi;
    if (f.hi > f.lo) {
      --f.hi;
    } else {
      st.pop_back();
    }
  }
}

ptrdiff_t Regex::match(const CpText& t, size_t begin, size_t end, size_t pos, Stack& stack) const {
  const ptrdiff_t e = run(0, t, begin, end, pos, stack);
  return e < 0 ? -1 : e - static_cast<ptrdiff_t>(pos);
}

std::vector<std::pair<size_t, size_t>> regex_split(const CpText& t,
                                                   const std::vector<const Regex*>& regexes) {
  std::vector<std::pair<size_t, size_t>> pieces, next;
  if (t.size() > 0) pieces.emplace_back(0, t.size());
  Regex::Stack stack;
  for (const Regex* re : regexes) {
    next.clear();
    for (auto [b, e] : pieces) {
      size_t last = b;
      for (size_t pos = b; pos < e;) {
        const ptrdiff_t len = re->match(t, b, e, pos, stack);
        if (len <= 0) {  // no match here (an empty one splits nothing)
          ++pos;
          continue;
        }
        if (last < pos) next.emplace_back(last, pos);
        next.emplace_back(pos, pos + static_cast<size_t>(len));
        pos += static_cast<size_t>(len);
        last = pos;
      }
      if (last < e) next.emplace_back(last, e);
    }
    pieces.swap(next);
  }
  return pieces;
}

}  // namespace braid::text
