// From documents to batches: the train/validation split, tokenization with loss masks,
// packing into rows and the epoch-shuffled batch sampler.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "braid/error.h"
#include "braid/tokenizer.h"
#include "braid/tune_data.h"
#include "braid/tune_rng.h"

namespace braid::tune {
namespace {

// Fisher-Yates with the training generator: the same permutation on every machine.
std::vector<uint32_t> permutation(size_t n, uint64_t seed) {
  std::vector<uint32_t> p(n);
  std::iota(p.begin(), p.end(), 0u);
  Rng rng(seed);
  for (size_t i = n; i > 1; --i) std::swap(p[i - 1], p[rng.below(i)]);
  return p;
}

// Seeds for the split and for each epoch's order, kept apart from the model's seed.
uint64_t mix(uint64_t seed, uint64_t salt) { return seed * 0x9E3779B97F4A7C15ull + salt; }
constexpr uint64_t kSplitSalt = 0x5b17;
constexpr uint64_t kEpochSalt = 0xe90c;

size_t val_count(size_t n, double val_frac) {
  return static_cast<size_t>(std::llround(val_frac * double(n)));
}

}  // namespace

DocumentSplit split_documents(const std::vector<Document>& docs, double val_frac, uint64_t seed) {
  check(val_frac >= 0.0 && val_frac < 1.0, "validation fraction must be in [0, 1) (got ", val_frac, ")");
  DocumentSplit s;
  if (val_frac > 0.0 && val_frac * double(docs.size()) < 1.0) {
    s.train = docs;
    s.by_rows = true;
    return s;
  }
  const size_t n_val = std::min(val_count(docs.size(), val_frac), docs.size() - (docs.empty() ? 0 : 1));
  std::vector<uint8_t> is_val(docs.size(), 0);
  const std::vector<uint32_t> order = permutation(docs.size(), mix(seed, kSplitSalt));
  for (size_t i = 0; i < n_val; ++i) is_val[order[i]] = 1;
  for (size_t i = 0; i < docs.size(); ++i) (is_val[i] ? s.val : s.train).push_back(docs[i]);
  return s;
}

TokenStream tokenize_documents(const std::vector<Document>& docs, const Tokenizer& tok, ThreadPool* pool) {
  std::vector<TokenStream> parts(docs.size());
  auto work = [&](int64_t begin, int64_t end, int) {
    for (int64_t i = begin; i < end; ++i) {
      const Document& d = docs[size_t(i)];
      TokenStream& s = parts[size_t(i)];
      if (tok.bos() >= 0) {
        s.tokens.push_back(tok.bos());
        s.mask.push_back(0);  // nothing predicts a BOS
      }
      if (!d.prompt.empty()) {
        const std::vector<int32_t> p = tok.encode(d.prompt, false);
        s.tokens.insert(s.tokens.end(), p.begin(), p.end());
        s.mask.insert(s.mask.end(), p.size(), 0);
      }
      const std::vector<int32_t> t = tok.encode(d.text, false);
      s.tokens.insert(s.tokens.end(), t.begin(), t.end());
      s.mask.insert(s.mask.end(), t.size(), 1);
      if (tok.eos() >= 0) {
        s.tokens.push_back(tok.eos());
        s.mask.push_back(1);  // learning where a document ends lets generation stop
      }
    }
  };
  if (pool != nullptr)
    pool->parallel_for(int64_t(docs.size()), work);
  else
    work(0, int64_t(docs.size()), 0);
  TokenStream out;
  size_t n = 0;
  for (const TokenStream& p : parts) n += p.size();
  out.tokens.reserve(n);
  out.mask.reserve(n);
  for (const TokenStream& p : parts) {
    out.tokens.insert(out.tokens.end(), p.tokens.begin(), p.tokens.end());
    out.mask.insert(out.mask.end(), p.mask.begin(), p.mask.end());
  }
  return out;
}

int64_t PackedRows::targets() const {
  int64_t n = 0;
  for (size_t i = 0; i < mask.size(); ++i) n += (i % size_t(seq)) != 0 && mask[i];
  return n;
}

Batch PackedRows::batch(const std::vector<size_t>& row_ids) const {
  const size_t T = size_t(seq);
  std::vector<int32_t> toks;
  std::vector<uint8_t> m;
  toks.reserve(row_ids.size() * T);
  m.reserve(row_ids.size() * T);
  for (size_t r : row_ids) {
    check(r < rows(), "row ", r, " is outside the ", rows(), " rows");
    toks.insert(toks.end(), tokens.begin() + r * T, tokens.begin() + (r + 1) * T);
    m.insert(m.end(), mask.begin() + r * T, mask.begin() + (r + 1) * T);
  }
  return Batch::causal_lm(toks, int(row_ids.size()), seq, m);
}

uint64_t PackedRows::fingerprint() const {
  uint64_t h = 0xcbf29ce484222325ull ^ uint64_t(seq);
  for (size_t i = 0; i < tokens.size(); ++i) {
    h = (h ^ uint64_t(uint32_t(tokens[i]))) * 0x100000001b3ull;
    h = (h ^ mask[i]) * 0x100000001b3ull;
  }
  return h;
}

PackedRows pack_rows(const TokenStream& stream, int seq, int32_t pad) {
  check(seq >= 2, "sequence length must be at least 2 (got ", seq, ")");
  check(stream.tokens.size() == stream.mask.size(), "token stream: ", stream.tokens.size(), " tokens but ",
        stream.mask.size(), " mask entries");
  PackedRows p;
  p.seq = seq;
  const size_t n = stream.size(), T = size_t(seq);
  if (n < 2) return p;                              // nothing to predict
  const size_t rows = (n - 1 + (T - 2)) / (T - 1);  // each row adds T - 1 new tokens
  p.tokens.assign(rows * T, pad);
  p.mask.assign(rows * T, 0);
  size_t kept = 0;
  for (size_t r = 0; r < rows; ++r) {
    const size_t start = r * (T - 1), len = std::min(T, n - start);
    int32_t* tok = p.tokens.data() + kept * T;
    uint8_t* mask = p.mask.data() + kept * T;
    std::copy_n(stream.tokens.begin() + start, len, tok);
    std::copy_n(stream.mask.begin() + start, len, mask);
    // A row without targets (all prompt, say) teaches nothing, and a batch of such rows
    // would leave a training step with nothing to do.
    if (std::any_of(mask + 1, mask + len, [](uint8_t m) { return m != 0; })) {
      ++kept;
    } else {
      std::fill_n(tok, T, pad);
      std::fill_n(mask, T, 0);
    }
  }
  p.tokens.resize(kept * T);
  p.mask.resize(kept * T);
  return p;
}

void split_rows(PackedRows& train, PackedRows& val, double val_frac, uint64_t seed) {
  const size_t n = train.rows();
  check(n >= 2, "too little data for a validation split: ", n, " row", n == 1 ? "" : "s", " of ", train.seq,
        " tokens (use a shorter sequence, more data, or a validation fraction of 0)");
  const size_t n_val = std::clamp<size_t>(val_count(n, val_frac), 1, n - 1);
  const std::vector<uint32_t> order = permutation(n, mix(seed, kSplitSalt));
  std::vector<uint8_t> is_val(n, 0);
  for (size_t i = 0; i < n_val; ++i) is_val[order[i]] = 1;
  PackedRows t, v;
  t.seq = v.seq = train.seq;
  const size_t T = size_t(train.seq);
  for (size_t r = 0; r < n; ++r) {
    PackedRows& dst = is_val[r] ? v : t;
    dst.tokens.insert(dst.tokens.end(), train.tokens.begin() + r * T, train.tokens.begin() + (r + 1) * T);
    dst.mask.insert(dst.mask.end(), train.mask.begin() + r * T, train.mask.begin() + (r + 1) * T);
  }
  train = std::move(t);
  val = std::move(v);
}

BatchSampler::BatchSampler(const PackedRows& rows, int B, uint64_t seed) : rows_(rows), B_(B), seed_(seed) {
  check(B >= 1, "batch size must be at least 1 (got ", B, ")");
  check(rows.rows() >= 1, "no training rows to sample from");
}

const std::vector<uint32_t>& BatchSampler::order(int64_t epoch) {
  auto it = orders_.find(epoch);
  if (it != orders_.end()) return it->second;
  if (orders_.size() >= 2) orders_.erase(orders_.begin());  // a batch spans at most two epochs
  return orders_[epoch] = permutation(rows_.rows(), mix(seed_ ^ uint64_t(epoch), kEpochSalt));
}

Batch BatchSampler::batch(int64_t index) {
  check(index >= 0, "batch index must not be negative");
  const uint64_t n = rows_.rows();
  std::vector<size_t> ids;
  ids.reserve(size_t(B_));
  for (int j = 0; j < B_; ++j) {
    const uint64_t g = uint64_t(index) * uint64_t(B_) + uint64_t(j);
    ids.push_back(order(int64_t(g / n))[g % n]);
  }
  return rows_.batch(ids);
}

double BatchSampler::epoch_at(int64_t index) const {
  return double(index) * double(B_) / double(rows_.rows());
}

}  // namespace braid::tune
