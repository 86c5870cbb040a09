// A small deterministic random generator for training (initialisation, batch sampling).
// xoshiro256** seeded through SplitMix64: fast, good statistics, and its whole state is
// four words, so a checkpoint saves and restores it exactly and a resumed run draws the
// same numbers an uninterrupted one would.
#pragma once

#include <array>
#include <cstdint>

namespace braid::tune {

class Rng {
 public:
  explicit Rng(uint64_t seed = 0);

  uint64_t next();             // 64 random bits
  uint64_t below(uint64_t n);  // uniform in [0, n); n > 0 (unbiased, by rejection)
  double uniform();            // uniform in [0, 1), 53 bits
  double normal();             // standard normal (Box-Muller; draws two uniforms per call)

  std::array<uint64_t, 4> state() const { return s_; }
  void set_state(const std::array<uint64_t, 4>& s) { s_ = s; }

 private:
  std::array<uint64_t, 4> s_;
};

}  // namespace braid::tune
