#include "text/spm_bpe.h"

#include <queue>

#include "braid/error.h"
#include "text/utf8.h"

namespace braid::text {

void spm_tokenize(const SpmVocab& v, std::string_view text, std::vector<int32_t>& out) {
  struct Sym {
    int32_t prev, next;
    size_t start, n;  // bytes of text; n == 0 once merged into the symbol on its left
  };
  struct Bigram {
    float score;
    int32_t left, right;
    size_t size;
  };
  struct Lower {  // priority: highest score, then leftmost
    bool operator()(const Bigram& a, const Bigram& b) const {
      return a.score < b.score || (a.score == b.score && a.left > b.left);
    }
  };

  std::vector<Sym> syms;
  for (size_t offs = 0; offs < text.size();) {
    const size_t len = std::min(utf8_len_from_lead(text[offs]), text.size() - offs);
    const int32_t index = static_cast<int32_t>(syms.size());
    syms.push_back(Sym{index - 1, offs + len == text.size() ? -1 : index + 1, offs, len});
    offs += len;
  }
  if (syms.empty()) return;

  std::priority_queue<Bigram, std::vector<Bigram>, Lower> queue;
  auto try_add = [&](int32_t left, int32_t right) {
    if (left < 0 || right < 0) return;
    const std::string_view s = text.substr(syms[left].start, syms[left].n + syms[right].n);
    const int32_t id = v.index.find(s);
    if (id < 0) return;
    queue.push(Bigram{v.scores[id], left, right, s.size()});
  };
  for (int32_t i = 1; i < static_cast<int32_t>(syms.size()); ++i) try_add(i - 1, i);

  while (!queue.empty()) {
    const Bigram bg = queue.top();
    queue.pop();
    Sym& left = syms[bg.left];
    Sym& right = syms[bg.right];
    // Skip pairs that a merge since queuing made stale.
    if (left.n == 0 || right.n == 0 || left.n + right.n != bg.size) continue;
    left.n += right.n;
    right.n = 0;
    left.next = right.next;
    if (right.next >= 0) syms[right.next].prev = bg.left;
    try_add(left.prev, bg.left);
    try_add(bg.left, left.next);
  }

  // Every merged symbol is a vocabulary entry (only such pairs are queued), so a symbol that
  // is not one is a single character the vocabulary lacks: its bytes become byte tokens.
  // (llama.cpp's rev_merge re-segmentation never triggers for well-formed UTF-8.)
  for (int32_t i = 0; i >= 0; i = syms[i].next) {
    const std::string_view s = text.substr(syms[i].start, syms[i].n);
    const int32_t id = v.index.find(s);
    if (id >= 0) {
      out.push_back(id);
      continue;
    }
    for (char c : s) {
      int32_t b = v.byte_tokens[static_cast<uint8_t>(c)];
      if (b < 0) b = v.unk;
      if (b < 0) {
        static const char* hex = "0123456789ABCDEF";
        const uint8_t u = static_cast<uint8_t>(c);
        fail("the vocabulary has no token for byte 0x", hex[u >> 4], hex[u & 15], " (no <0x", hex[u >> 4],
             hex[u & 15], "> and no unknown token)");
      }
      out.push_back(b);
    }
  }
}

}  // namespace braid::text
