#include "text/byte_bpe.h"

#include <queue>

#include "braid/error.h"
#include "text/regex.h"
#include "text/utf8.h"

namespace braid::text {

namespace {

// Bytes GPT-2 keeps as themselves: '!'..'~', '¡'..'¬', '®'..'ÿ'. The other 68 map, in
// order, to U+0100.. .
bool printable(uint32_t b) {
  return (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}

struct ByteTables {
  std::array<uint32_t, 256> to_cp{};
  std::array<int16_t, 0x144> from_cp{};  // code points below U+0144 are the only targets
  ByteTables() {
    from_cp.fill(-1);
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      to_cp[b] = printable(b) ? b : next++;
      from_cp[to_cp[b]] = static_cast<int16_t>(b);
    }
  }
};

const ByteTables& tables() {
  static const ByteTables t;
  return t;
}

}  // namespace

uint32_t byte_to_codepoint(uint8_t b) { return tables().to_cp[b]; }

int codepoint_to_byte(uint32_t cp) { return cp < 0x144 ? tables().from_cp[cp] : -1; }

std::string byte_level_decode(std::string_view piece) {
  std::string out;
  out.reserve(piece.size());
  size_t i = 0;
  while (i < piece.size()) {
    size_t prefix;
    const size_t n = utf8_sequence(piece.substr(i), &prefix);
    if (n == 0) {  // not from a byte-level encoder: keep the byte
      out += piece[i++];
      continue;
    }
    const size_t start = i;
    const uint32_t cp = next_codepoint(piece, i);
    const int b = codepoint_to_byte(cp);
    if (b >= 0) {
      out += static_cast<char>(b);
    } else {
      out.append(piece.substr(start, n));
    }
  }
  return out;
}

ByteBpe::ByteBpe(const std::vector<std::string>& merges, const TokenIndex& vocab, const PreTokenizer& pre)
    : vocab_(vocab), pre_(pre), regexes_(pre.regex_list()) {
  for (uint32_t b = 0; b < 256; ++b) {
    byte_chars_[b].clear();
    append_utf8(byte_chars_[b], byte_to_codepoint(static_cast<uint8_t>(b)));
    byte_tokens_[b] = vocab_.find(byte_chars_[b]);
  }
  size_t cap = 16;
  while (cap < merges.size() * 2) cap *= 2;  // load factor <= 0.5
  merges_.assign(cap, MergeSlot{0, 0, 0});
  mask_ = cap - 1;
  std::string joined;
  for (size_t i = 0; i < merges.size(); ++i) {
    const std::string& m = merges[i];
    // llama.cpp splits at the first space after the first byte (a half is never empty).
    const size_t sp = m.size() > 1 ? m.find(' ', 1) : std::string::npos;
    if (sp == std::string::npos)
      fail("tokenizer.ggml.merges[", i, "] = '", m, "' is not two tokens separated by a space");
    const std::string_view left(m.data(), sp), right(m.data() + sp + 1, m.size() - sp - 1);
    const int32_t l = vocab_.find(left), r = vocab_.find(right);
    if (l < 0 || r < 0)
      fail("tokenizer.ggml.merges[", i, "] = '", m, "' names '", l < 0 ? left : right,
           "', which is not in the vocabulary");
    joined.assign(left);
    joined.append(right);
    const int32_t result = vocab_.find(joined);
    if (result < 0)
      fail("tokenizer.ggml.merges[", i, "] = '", m, "' forms '", joined, "', which is not in the vocabulary");
    // The first occurrence of a pair gives its rank, as in llama.cpp's bpe_ranks.emplace.
    const uint64_t k = key(l, r);
    for (uint64_t s = slot_of(k) & mask_;; s = (s + 1) & mask_) {
      if (merges_[s].key == k) break;
      if (merges_[s].key == 0) {
        merges_[s] = MergeSlot{k, static_cast<int32_t>(i), result};
        ++n_merges_;
        break;
      }
    }
  }
}

const ByteBpe::MergeSlot* ByteBpe::find_merge(int32_t left, int32_t right) const {
  const uint64_t k = key(left, right);
  for (uint64_t s = slot_of(k) & mask_;; s = (s + 1) & mask_) {
    if (merges_[s].key == k) return &merges_[s];
    if (merges_[s].key == 0) return nullptr;
  }
}

void ByteBpe::tokenize(std::string_view text, std::vector<int32_t>& out) const {
  CpText t;
  t.assign(text);
  for (auto [b, e] : regex_split(t, regexes_)) {
    tokenize_word(text.substr(t.offsets[b], t.offsets[e] - t.offsets[b]), out);
  }
}

void ByteBpe::tokenize_word(std::string_view bytes, std::vector<int32_t>& out) const {
  if (pre_.ignore_merges) {
    std::string encoded;
    for (char c : bytes) encoded += byte_chars_[static_cast<uint8_t>(c)];
    const int32_t id = vocab_.find(encoded);
    if (id >= 0) {
      out.push_back(id);
      return;
    }
  }

  struct Sym {
    int32_t id;  // -1: a byte whose character is not in the vocabulary
    int32_t prev, next;
    uint8_t byte;  // the source byte, for symbols that are still one byte
    bool alive;
  };
  struct Bigram {
    int32_t rank, left, right, left_id, right_id, result;
  };
  struct Later {  // priority: lowest rank, then leftmost
    bool operator()(const Bigram& a, const Bigram& b) const {
      return a.rank > b.rank || (a.rank == b.rank && a.left > b.left);
    }
  };

  const int32_t n = static_cast<int32_t>(bytes.size());
  std::vector<Sym> syms(bytes.size());
  for (int32_t i = 0; i < n; ++i) {
    const uint8_t byte = static_cast<uint8_t>(bytes[i]);
    syms[i] = Sym{byte_tokens_[byte], i - 1, i + 1 < n ? i + 1 : -1, byte, true};
  }

  std::priority_queue<Bigram, std::vector<Bigram>, Later> queue;
  auto add_bigram = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const int32_t l = syms[left].id, r = syms[right].id;
    if (l < 0 || r < 0) return;
    const MergeSlot* m = find_merge(l, r);
    if (m == nullptr) return;
    queue.push(Bigram{m->rank, left, right, l, r, m->result});
  };
  for (int32_t i = 1; i < n; ++i) add_bigram(i - 1, i);

  while (!queue.empty()) {
    const Bigram bg = queue.top();
    queue.pop();
    Sym& left = syms[bg.left];
    Sym& right = syms[bg.right];
    // Skip pairs that merges since queuing made stale (a token id changes with its text).
    if (!left.alive || !right.alive || left.id != bg.left_id || right.id != bg.right_id) continue;
    left.id = bg.result;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) syms[right.next].prev = bg.left;
    add_bigram(left.prev, bg.left);
    add_bigram(bg.left, left.next);
  }

  for (int32_t i = n > 0 ? 0 : -1; i >= 0; i = syms[i].next) {
    if (syms[i].id >= 0) {
      out.push_back(syms[i].id);
      continue;
    }
    // The byte's character is not a token: llama.cpp then tries each byte of the
    // character's UTF-8 as a one-byte token and drops those that are not.
    for (char c : byte_chars_[syms[i].byte]) {
      const int32_t id = vocab_.find(std::string_view(&c, 1));
      if (id >= 0) out.push_back(id);
    }
  }
}

}  // namespace braid::text
