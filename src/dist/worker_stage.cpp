#include "dist/worker_stage.h"

#include <chrono>
#include <thread>

#include "braid/error.h"

namespace braid::dist {

using Clock = std::chrono::steady_clock;

Stage::Stage(std::shared_ptr<const Model> model, int first, int last, int n_ctx, int max_seqs,
             ThreadPool& pool, double slowdown)
    : model_(std::move(model)),
      first_(first),
      last_(last),
      n_ctx_(n_ctx),
      max_seqs_(max_seqs),
      pool_(pool),
      slowdown_(slowdown) {
  const int n_layers = model_->config().n_layers;
  check(first >= 0 && first <= last && last <= n_layers, "layer range [", first, ", ", last,
        ") is not within the model's ", n_layers, " layers");
  check(n_ctx >= 1, "context size ", n_ctx, " must be at least 1");
  check(max_seqs >= 1, "at least one sequence must fit");
  check(slowdown >= 1.0 && slowdown <= 1000.0, "slowdown ", slowdown, " must be in [1, 1000]");
}

void Stage::pad(double seconds) {
  const double slowdown = slowdown_.load();
  if (slowdown > 1.0) std::this_thread::sleep_for(std::chrono::duration<double>(seconds * (slowdown - 1.0)));
}

void Stage::run(uint64_t seq, int pos0, int n, float* hidden) {
  check(n >= 1, "empty batch");
  check(pos0 >= 0 && static_cast<int64_t>(pos0) + n <= n_ctx_, "positions [", pos0, ", ",
        static_cast<int64_t>(pos0) + n, ") exceed the context of ", n_ctx_);
  if (first_ == last_) return;
  double spent;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = kv_.find(seq);
    if (it == kv_.end()) {
      check(static_cast<int>(kv_.size()) < max_seqs_, "too many sequences at once (", max_seqs_, ")");
      check(pos0 == 0, "sequence ", seq, " is new but starts at position ", pos0);
      it = kv_.emplace(seq, std::make_unique<KVCache>(model_->config(), first_, last_, n_ctx_)).first;
    }
    KVCache& kv = *it->second;
    check(pos0 <= kv.n_pos(), "position ", pos0, " is beyond the ", kv.n_pos(), " the sequence holds");
    kv.truncate(pos0);
    const auto t0 = Clock::now();
    model_->run_layers(first_, last_, hidden, n, pos0, kv, pool_);
    spent = std::chrono::duration<double>(Clock::now() - t0).count();
    busy_s_ += spent;
  }
  pad(spent);
}

void Stage::output(const float* hidden, int rows, float* logits) {
  double spent;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const auto t0 = Clock::now();
    model_->output(hidden, rows, logits, pool_);
    spent = std::chrono::duration<double>(Clock::now() - t0).count();
    busy_s_ += spent;
  }
  pad(spent);
}

void Stage::end(uint64_t seq) {
  std::lock_guard<std::mutex> lock(mu_);
  kv_.erase(seq);
}

void Stage::truncate(uint64_t seq, int keep) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = kv_.find(seq);
  if (it != kv_.end()) it->second->truncate(keep);
}

int Stage::open_sequences() const {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<int>(kv_.size());
}

}  // namespace braid::dist
