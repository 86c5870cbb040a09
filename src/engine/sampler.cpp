#include "braid/sampler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <unordered_map>

#include "braid/error.h"

namespace braid {

namespace {

// Most likely first; the lower id wins ties so the order never depends on the sort.
bool before(const TokenCandidate& a, const TokenCandidate& b) {
  if (a.logit != b.logit) return a.logit > b.logit;
  return a.id < b.id;
}

constexpr float kNegInf = -std::numeric_limits<float>::infinity();

}  // namespace

int32_t argmax(const float* logits, int n) {
  int32_t best = -1;
  for (int i = 0; i < n; ++i) {
    if (std::isnan(logits[i])) continue;
    if (best < 0 || logits[i] > logits[best]) best = i;
  }
  return best;
}

Sampler::Sampler(const SamplerParams& params) : params_(params), rng_(params.seed) {
  check(!std::isnan(params.temperature), "sampler: temperature is NaN");
  check(params.top_p > 0.0f && params.top_p <= 1.0f && !std::isnan(params.top_p),
        "sampler: top-p must be in (0, 1], got ", params.top_p);
  check(params.min_p >= 0.0f && params.min_p <= 1.0f, "sampler: min-p must be in [0, 1], got ", params.min_p);
  check(params.repeat_penalty > 0.0f && std::isfinite(params.repeat_penalty),
        "sampler: repeat penalty must be > 0, got ", params.repeat_penalty);
  check(params.repeat_last_n >= -1, "sampler: repeat-last-n must be >= -1, got ", params.repeat_last_n);
  check(std::isfinite(params.frequency_penalty) && std::isfinite(params.presence_penalty),
        "sampler: frequency / presence penalties must be finite");
}

void Sampler::accept(int32_t token) {
  if (params_.repeat_last_n == 0) return;
  history_.push_back(token);
  if (params_.repeat_last_n > 0) {
    while (history_.size() > static_cast<size_t>(params_.repeat_last_n)) history_.pop_front();
  }
}

void Sampler::reset() {
  history_.clear();
  rng_.seed(params_.seed);
}

double Sampler::uniform() {
  // The top 53 bits of one 64-bit draw, scaled: every value k / 2^53 for k < 2^53.
  return static_cast<double>(rng_() >> 11) * (1.0 / 9007199254740992.0);
}

void Sampler::build(const float* logits, int n_vocab, std::vector<TokenCandidate>& out) const {
  check(n_vocab >= 1, "sampler: empty logits");
  out.resize(static_cast<size_t>(n_vocab));
  for (int i = 0; i < n_vocab; ++i) {
    float l = logits[i];
    out[i] = {i, std::isnan(l) ? kNegInf : l, 0.0f};
  }

  // 1. Penalties, on the full row indexed by id (history ids outside the row are ignored).
  const bool penalize = params_.repeat_last_n != 0 && !history_.empty() &&
                        (params_.repeat_penalty != 1.0f || params_.frequency_penalty != 0.0f ||
                         params_.presence_penalty != 0.0f);
  if (penalize) {
    std::unordered_map<int32_t, int> counts;
    for (int32_t t : history_)
      if (t >= 0 && t < n_vocab) ++counts[t];
    for (const auto& [id, count] : counts) {
      float& l = out[id].logit;
      l = l > 0.0f ? l / params_.repeat_penalty : l * params_.repeat_penalty;
      l -= static_cast<float>(count) * params_.frequency_penalty + params_.presence_penalty;
    }
  }

  // Greedy: the best penalized logit, nothing else matters.
  if (params_.temperature <= 0.0f) {
    auto best = std::min_element(out.begin(), out.end(), before);
    check(best->logit != kNegInf, "sampler: every logit is -inf or NaN");
    TokenCandidate winner = *best;
    winner.p = 1.0f;
    out.assign(1, winner);
    return;
  }

  // -inf can never be drawn; dropping it early keeps the sorts short.
  out.erase(
      std::remove_if(out.begin(), out.end(), [](const TokenCandidate& c) { return c.logit == kNegInf; }),
      out.end());
  check(!out.empty(), "sampler: every logit is -inf or NaN");

  // 2. top-k: the k best, sorted.
  bool sorted = false;
  const int k = params_.top_k;
  if (k > 0 && static_cast<size_t>(k) < out.size()) {
    std::partial_sort(out.begin(), out.begin() + k, out.end(), before);
    out.resize(static_cast<size_t>(k));
    sorted = true;
  }

  float max_logit = kNegInf;
  for (const auto& c : out) max_logit = std::max(max_logit, c.logit);
  if (max_logit == std::numeric_limits<float>::infinity()) {
    // +inf dominates everything: the first such token is certain.
    TokenCandidate winner = *std::min_element(out.begin(), out.end(), before);
    winner.p = 1.0f;
    out.assign(1, winner);
    return;
  }

  // 3 + 4. top-p then min-p. Both keep a prefix of the sorted order, so together they keep
  // the shorter prefix. top-p needs the softmax of the top-k set (its denominator over
  // everything) but only walks until it is satisfied; min-p's cut is a plain threshold.
  // So partition by the min-p threshold first and sort only what might survive.
  const bool use_top_p = params_.top_p < 1.0f;
  const bool use_min_p = params_.min_p > 0.0f;
  if (use_top_p || use_min_p) {
    double denom = 0;
    for (const auto& c : out) denom += std::exp(static_cast<double>(c.logit) - max_logit);
    size_t keep = out.size();
    if (use_min_p) {
      const float threshold = max_logit + std::log(params_.min_p);
      auto end = std::partition(out.begin(), out.end(),
                                [&](const TokenCandidate& c) { return c.logit >= threshold; });
      keep = static_cast<size_t>(end - out.begin());
      if (!sorted) std::sort(out.begin(), end, before);
    } else if (!sorted) {
      std::sort(out.begin(), out.end(), before);
    }
    sorted = true;
    if (use_top_p) {
      double cum = 0;
      for (size_t i = 0; i < keep; ++i) {
        cum += std::exp(static_cast<double>(out[i].logit) - max_logit) / denom;
        if (cum >= params_.top_p) {
          keep = i + 1;
          break;
        }
      }
    }
    out.resize(std::max<size_t>(keep, 1));
  }
  if (!sorted) std::sort(out.begin(), out.end(), before);

  // 5. Temperature, then normalize. The first candidate holds the max logit.
  const double inv_t = 1.0 / params_.temperature;
  double sum = 0;
  std::vector<double> w(out.size());
  for (size_t i = 0; i < out.size(); ++i) {
    out[i].logit = static_cast<float>(out[i].logit * inv_t);
    w[i] = std::exp((static_cast<double>(out[i].logit) - out[0].logit));
    sum += w[i];
  }
  for (size_t i = 0; i < out.size(); ++i) out[i].p = static_cast<float>(w[i] / sum);
}

std::vector<TokenCandidate> Sampler::candidates(const float* logits, int n_vocab) const {
  std::vector<TokenCandidate> out;
  build(logits, n_vocab, out);
  return out;
}

int32_t Sampler::sample(const float* logits, int n_vocab) {
  build(logits, n_vocab, scratch_);
  if (scratch_.size() == 1) return scratch_[0].id;
  // 6. Draw: the first candidate whose cumulative probability exceeds u. Cumulate in
  // double over the stored floats; the last candidate takes any rounding slack.
  double total = 0;
  for (const auto& c : scratch_) total += c.p;
  const double u = uniform() * total;
  double cum = 0;
  for (const auto& c : scratch_) {
    cum += c.p;
    if (u < cum) return c.id;
  }
  return scratch_.back().id;
}

}  // namespace braid
