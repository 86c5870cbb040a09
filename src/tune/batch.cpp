// Batch: token rows and their next-token targets.
#include "braid/error.h"
#include "braid/train.h"

namespace braid::tune {

Batch Batch::causal_lm(std::span<const int32_t> tokens, int B, int T) {
  check(B > 0 && T > 0, "batch: B and T must be positive (got ", B, " x ", T, ")");
  check(tokens.size() == size_t(B) * size_t(T), "batch: ", tokens.size(), " tokens for ", B, " x ", T);
  Batch b;
  b.B = B;
  b.T = T;
  b.inputs.assign(tokens.begin(), tokens.end());
  b.targets.assign(tokens.size(), kIgnore);
  for (int r = 0; r < B; ++r)
    for (int t = 0; t + 1 < T; ++t) b.targets[size_t(r) * T + t] = tokens[size_t(r) * T + t + 1];
  return b;
}

Batch Batch::causal_lm(std::span<const int32_t> tokens, int B, int T, std::span<const uint8_t> loss_mask) {
  Batch b = causal_lm(tokens, B, T);
  check(loss_mask.size() == tokens.size(), "batch: loss mask has ", loss_mask.size(), " entries for ",
        tokens.size(), " tokens");
  for (int r = 0; r < B; ++r)
    for (int t = 0; t + 1 < T; ++t)
      if (!loss_mask[size_t(r) * T + t + 1]) b.targets[size_t(r) * T + t] = kIgnore;
  return b;
}

int64_t Batch::count_targets() const {
  int64_t n = 0;
  for (int32_t t : targets) n += t >= 0;
  return n;
}

}  // namespace braid::tune
