#include <algorithm>

#include "braid/error.h"
#include "braid/generate.h"
#include "braid/model.h"

namespace braid {

namespace {
int context_for(const Model& model, int n_ctx) {
  if (n_ctx > 0) return n_ctx;
  check(model.config().n_ctx_train > 0, "the model does not say its context length; pass one (--ctx)");
  return model.config().n_ctx_train;
}
}  // namespace

LocalForward::LocalForward(std::shared_ptr<const Model> model, int n_ctx, ThreadPool& pool, int n_batch)
    : model_(std::move(model)),
      pool_(pool),
      kv_(model_->config(), 0, model_->config().n_layers, context_for(*model_, n_ctx)),
      n_batch_(std::max(1, n_batch)) {}

int LocalForward::n_vocab() const { return model_->config().n_vocab; }

void LocalForward::forward(const int32_t* tokens, int n, int pos0, bool all_logits, float* logits) {
  const ModelConfig& c = model_->config();
  check(n >= 1, "forward: no tokens");
  check(pos0 >= 0 && pos0 <= kv_.n_pos(), "forward: position ", pos0, " is beyond the ", kv_.n_pos(),
        " the sequence holds");
  check(static_cast<int64_t>(pos0) + n <= kv_.n_ctx(), "prompt of ", static_cast<int64_t>(pos0) + n,
        " tokens exceeds the context of ", kv_.n_ctx());
  for (int i = 0; i < n; ++i)
    check(tokens[i] >= 0 && tokens[i] < c.n_vocab, "token id ", tokens[i], " is outside the vocabulary [0, ",
          c.n_vocab, ")");
  kv_.truncate(pos0);

  // Batches of n_batch: only the rows that produce requested logits go through the head.
  for (int start = 0; start < n; start += n_batch_) {
    const int m = std::min(n_batch_, n - start);
    hidden_.resize(static_cast<size_t>(m) * c.dim);
    model_->embed(tokens + start, m, pos0 + start, hidden_.data());
    model_->run_layers(0, c.n_layers, hidden_.data(), m, pos0 + start, kv_, pool_);
    if (all_logits) {
      model_->output(hidden_.data(), m, logits + static_cast<size_t>(start) * c.n_vocab, pool_);
    } else if (start + m == n) {
      model_->output(hidden_.data() + static_cast<size_t>(m - 1) * c.dim, 1, logits, pool_);
    }
  }
}

}  // namespace braid
