// Choosing the next token from a row of logits.
//
// The chain is llama.cpp's default order, so settings mean what users expect:
//
//   penalties -> top-k -> top-p -> min-p -> temperature -> draw
//
// top-p and min-p therefore see the untempered distribution, and temperature only
// reshapes what survived them. A temperature <= 0 means greedy: after penalties, the
// highest logit wins (ties go to the lowest id) and nothing is drawn.
//
//   SamplerParams p;  p.temperature = 0.7f;  p.seed = 42;
//   Sampler sampler(p);
//   int32_t tok = sampler.sample(logits, n_vocab);
//   sampler.accept(tok);  // feeds the repetition penalty's history
//
// Reproducible: the same params (seed included) and the same logits give the same tokens
// on every platform and standard library. The draw uses std::mt19937_64, whose output
// the C++ standard fixes, and turns it into a uniform double itself (std::*_distribution
// differ between libraries).
#pragma once

#include <cstdint>
#include <deque>
#include <random>
#include <span>
#include <vector>

namespace braid {

struct SamplerParams {
  float temperature = 0.8f;  // <= 0: greedy
  int top_k = 40;            // <= 0: keep all
  float top_p = 0.95f;       // >= 1: keep all
  float min_p = 0.05f;       // <= 0: keep all; else keep p >= min_p * p_max
  // Penalties over the last repeat_last_n accepted tokens (0: none, -1: all of them).
  // Each distinct token seen there has its logit divided by repeat_penalty when positive
  // and multiplied when negative, then frequency_penalty * count + presence_penalty
  // subtracted (llama.cpp's semantics).
  float repeat_penalty = 1.0f;  // 1: off
  int repeat_last_n = 64;
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  uint64_t seed = 0;
};

// A surviving candidate: token id, its (transformed) logit, and its probability once the
// chain has normalized them.
struct TokenCandidate {
  int32_t id;
  float logit;
  float p;
};

class Sampler {
 public:
  // Throws braid::Error for nonsensical parameters (NaN temperature, top_p outside
  // (0, 1], min_p outside [0, 1], repeat_penalty <= 0, repeat_last_n < -1).
  explicit Sampler(const SamplerParams& params);

  const SamplerParams& params() const { return params_; }

  // Picks a token from logits[0..n_vocab). Does not record it: call accept().
  // Throws braid::Error when n_vocab < 1 or every logit is NaN / -inf.
  int32_t sample(const float* logits, int n_vocab);
  int32_t sample(std::span<const float> logits) {
    return sample(logits.data(), static_cast<int>(logits.size()));
  }

  // Runs the chain up to (not including) the draw and returns the candidates that
  // survive, most likely first, with probabilities after temperature summing to 1.
  // For greedy, the single winner with p = 1.
  std::vector<TokenCandidate> candidates(const float* logits, int n_vocab) const;

  // Records a token that is now part of the sequence (prompt or generated) for the
  // penalties. Tokens of the prompt may be accepted too, as llama.cpp does.
  void accept(int32_t token);
  // Forgets the history and restarts the random stream from the seed.
  void reset();

  // A uniform double in [0, 1) from the sampler's stream (exposed for tests).
  double uniform();

 private:
  // Applies penalties, then filters and tempers into `out` (sorted, normalized).
  void build(const float* logits, int n_vocab, std::vector<TokenCandidate>& out) const;

  SamplerParams params_;
  std::deque<int32_t> history_;
  std::mt19937_64 rng_;
  std::vector<TokenCandidate> scratch_;
};

// Index of the largest finite-or-inf logit (lowest id on ties); -1 if all are NaN.
int32_t argmax(const float* logits, int n);

}  // namespace braid
