// BpeTrainer: word counting with braid's pre-tokenizers, then merges with incremental
// pair counts (each merge rewrites only the words that hold the pair).
#include "braid/bpe_train.h"

#include <algorithm>
#include <queue>

#include "braid/error.h"
#include "text/byte_bpe.h"
#include "text/pretokenize.h"
#include "text/regex.h"
#include "text/utf8.h"

namespace braid {
namespace {

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}
int32_t pair_left(uint64_t key) { return static_cast<int32_t>(key >> 32); }
int32_t pair_right(uint64_t key) { return static_cast<int32_t>(key & 0xFFFFFFFFu); }

struct Word {
  std::vector<int32_t> syms;
  int64_t count = 0;
};

// Candidate merges. Entries go stale when a pair's count changes; every change pushes a
// fresh entry, and a popped entry whose count no longer matches is dropped.
struct Candidate {
  int64_t count;
  uint64_t pair;
};
struct LowerPriority {
  // The top is the most frequent pair; among equals the smallest (left, right) ids.
  bool operator()(const Candidate& x, const Candidate& y) const {
    if (x.count != y.count) return x.count < y.count;
    return x.pair > y.pair;
  }
};

// The state of one training run.
class Merger {
 public:
  Merger(const std::unordered_map<std::string, int64_t>& counted, std::vector<std::string>& tokens)
      : tokens_(tokens) {
    // Sorted words make every container's contents independent of hash order.
    std::vector<std::pair<std::string_view, int64_t>> sorted(counted.begin(), counted.end());
    std::sort(sorted.begin(), sorted.end());
    words_.reserve(sorted.size());
    for (const auto& [bytes, count] : sorted) {
      Word w;
      w.count = count;
      for (char c : bytes) w.syms.push_back(static_cast<uint8_t>(c));
      words_.push_back(std::move(w));
    }
    for (size_t i = 0; i < tokens_.size(); ++i) ids_.emplace(tokens_[i], static_cast<int32_t>(i));
    for (size_t wi = 0; wi < words_.size(); ++wi) {
      const Word& w = words_[wi];
      for (size_t j = 0; j + 1 < w.syms.size(); ++j) {
        const uint64_t k = pair_key(w.syms[j], w.syms[j + 1]);
        counts_[k] += w.count;
        note_word(k, static_cast<int32_t>(wi));
      }
    }
    for (const auto& [k, c] : counts_) heap_.push({c, k});
    stamp_.assign(words_.size(), -1);
  }

  // The most frequent pair with at least min_count occurrences; false when there is none.
  bool best(int64_t min_count, uint64_t* pair) {
    while (!heap_.empty()) {
      const Candidate top = heap_.top();
      auto it = counts_.find(top.pair);
      if (it == counts_.end() || it->second != top.count) {
        heap_.pop();  // stale
        continue;
      }
      if (top.count < min_count) return false;
      *pair = top.pair;
      return true;
    }
    return false;
  }

  // Merges `pair` everywhere into one token (new, or an existing token with the same
  // text); returns its id.
  int32_t merge(uint64_t pair, int serial) {
    const int32_t a = pair_left(pair), b = pair_right(pair);
    const std::string joined = tokens_[a] + tokens_[b];
    int32_t id;
    if (auto it = ids_.find(joined); it != ids_.end()) {
      id = it->second;
    } else {
      id = static_cast<int32_t>(tokens_.size());
      tokens_.push_back(joined);
      ids_.emplace(joined, id);
    }

    std::vector<int32_t> holders = std::move(where_[pair]);
    where_.erase(pair);
    delta_.clear();
    std::vector<int32_t> merged;
    for (int32_t wi : holders) {
      if (stamp_[wi] == serial) continue;  // listed twice
      stamp_[wi] = serial;
      Word& w = words_[wi];
      const size_t n = w.syms.size();
      bool found = false;
      for (size_t j = 0; j + 1 < n && !found; ++j) found = w.syms[j] == a && w.syms[j + 1] == b;
      if (!found) continue;  // an entry left from before an earlier merge changed the word
      // The word's pairs before and after, left to right, non-overlapping (as "a a a"
      // becomes "aa a").
      for (size_t j = 0; j + 1 < n; ++j) delta_[pair_key(w.syms[j], w.syms[j + 1])] -= w.count;
      merged.clear();
      for (size_t j = 0; j < n;) {
        if (j + 1 < n && w.syms[j] == a && w.syms[j + 1] == b) {
          merged.push_back(id);
          j += 2;
        } else {
          merged.push_back(w.syms[j++]);
        }
      }
      w.syms = merged;
      for (size_t j = 0; j + 1 < w.syms.size(); ++j) {
        const uint64_t k = pair_key(w.syms[j], w.syms[j + 1]);
        delta_[k] += w.count;
        // Pairs without the new token were already in the word, so already listed.
        if (w.syms[j] == id || w.syms[j + 1] == id) note_word(k, wi);
      }
    }
    for (const auto& [k, d] : delta_) {
      if (d == 0) continue;
      int64_t& c = counts_[k];
      c += d;
      if (c <= 0) {
        counts_.erase(k);
        continue;
      }
      heap_.push({c, k});
    }
    return id;
  }

 private:
  void note_word(uint64_t k, int32_t wi) {
    std::vector<int32_t>& list = where_[k];
    if (list.empty() || list.back() != wi) list.push_back(wi);
  }

  std::vector<std::string>& tokens_;
  std::unordered_map<std::string, int32_t> ids_;
  std::vector<Word> words_;
  std::unordered_map<uint64_t, int64_t> counts_;              // pair -> occurrences
  std::unordered_map<uint64_t, std::vector<int32_t>> where_;  // pair -> words that may hold it
  std::unordered_map<uint64_t, int64_t> delta_;               // count changes of one merge
  std::priority_queue<Candidate, std::vector<Candidate>, LowerPriority> heap_;
  std::vector<int> stamp_;  // per word: the last merge that visited it
};

int n_special(const BpeTrainOptions& o) { return int(!o.bos.empty()) + int(!o.eos.empty()); }

}  // namespace

BpeTrainer::BpeTrainer(const BpeTrainOptions& options) : options_(options) {
  pre_ = text::find_pre_tokenizer(options_.pre);
  check(pre_ != nullptr, "unknown pre-tokenizer '", options_.pre, "' (known: ", text::known_pre_tokenizers(),
        ")");
  const int min_vocab = 256 + n_special(options_);
  check(options_.vocab_size >= min_vocab, "vocabulary size ", options_.vocab_size,
        " is too small: byte-level BPE needs at least ", min_vocab, " tokens (256 bytes + ",
        n_special(options_), " special tokens)");
  check(options_.vocab_size <= (1 << 24), "vocabulary size ", options_.vocab_size,
        " is too large (at most 16777216)");
  check(options_.min_frequency >= 1, "minimum pair frequency must be at least 1 (got ",
        options_.min_frequency, ")");
  check(options_.bos.empty() || options_.bos != options_.eos, "BOS and EOS must be different tokens");
}

void BpeTrainer::add_text(std::string_view text, const char* label) {
  validate_utf8(text, label);
  text::CpText t;
  t.assign(text);
  for (auto [b, e] : text::regex_split(t, pre_->regex_list())) {
    const size_t begin = t.offsets[b], end = t.offsets[e];
    if (begin == end) continue;
    ++words_[std::string(text.substr(begin, end - begin))];
    ++total_words_;
  }
}

BpeVocab BpeTrainer::train(const std::function<void(int, int)>& progress) const {
  check(!words_.empty(), "BPE training: the corpus has no text");
  BpeVocab v;
  v.pre = options_.pre;
  for (int b = 0; b < 256; ++b) {
    std::string s;
    text::append_utf8(s, text::byte_to_codepoint(static_cast<uint8_t>(b)));
    v.tokens.push_back(std::move(s));
  }
  const int target = options_.vocab_size - n_special(options_);
  const int wanted = target - 256;
  Merger merger(words_, v.tokens);
  uint64_t pair;
  int serial = 0;
  while (static_cast<int>(v.tokens.size()) < target && merger.best(options_.min_frequency, &pair)) {
    v.merges.push_back(v.tokens[pair_left(pair)] + " " + v.tokens[pair_right(pair)]);
    merger.merge(pair, serial++);
    if (progress && serial % 64 == 0) progress(static_cast<int>(v.tokens.size()) - 256, wanted);
  }
  if (progress) progress(static_cast<int>(v.tokens.size()) - 256, wanted);
  v.types.assign(v.tokens.size(), TokenType::kNormal);
  for (const std::string* special : {&options_.bos, &options_.eos}) {
    if (special->empty()) continue;
    // A special token must not collide with a learned one (it is matched by id, not text).
    check(std::find(v.tokens.begin(), v.tokens.end(), *special) == v.tokens.end(), "special token '",
          *special, "' is also a learned token");
    (special == &options_.bos ? v.bos : v.eos) = static_cast<int32_t>(v.tokens.size());
    v.tokens.push_back(*special);
    v.types.push_back(TokenType::kControl);
  }
  return v;
}

}  // namespace braid
