#include "dist/worker_stage.h"

#include <algorithm>
#include <chrono>

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
  if (slowdown <= 1.0) return;
  std::unique_lock<std::mutex> lock(pad_mu_);
  pad_cv_.wait_for(lock, std::chrono::duration<double>(seconds * (slowdown - 1.0)),
                   [&] { return pad_stopped_; });
}

void Stage::stop_padding() {
  {
    std::lock_guard<std::mutex> lock(pad_mu_);
    pad_stopped_ = true;
  }
  pad_cv_.notify_all();
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
      open_.store(static_cast<int>(kv_.size()));
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
  open_.store(static_cast<int>(kv_.size()));
}

void Stage::truncate(uint64_t seq, int keep) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = kv_.find(seq);
  if (it != kv_.end()) it->second->truncate(keep);
}

int Stage::positions(uint64_t seq, int layer) const {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = kv_.find(seq);
  if (it == kv_.end() || !it->second->covers(layer)) return -1;
  return it->second->n_pos(layer);
}

std::vector<float> Stage::export_kv(uint64_t seq, int first, int last, int pos0, int n) const {
  check(first >= first_ && first < last && last <= last_, "layers [", first, ", ", last,
        ") are not within this stage's [", first_, ", ", last_, ")");
  std::lock_guard<std::mutex> lock(mu_);
  auto it = kv_.find(seq);
  check(it != kv_.end(), "sequence ", seq, " has no KV cache here");
  const KVCache& kv = *it->second;
  const size_t d = static_cast<size_t>(kv.kv_dim()), rows = static_cast<size_t>(n) * d;
  std::vector<float> out;
  out.reserve(2 * static_cast<size_t>(last - first) * rows);
  for (int l = first; l < last; ++l) {
    check(pos0 >= 0 && n >= 1 && static_cast<int64_t>(pos0) + n <= kv.n_pos(l), "layer ", l, " of sequence ",
          seq, " holds ", kv.n_pos(l), " positions, not [", pos0, ", ", static_cast<int64_t>(pos0) + n, ")");
    const size_t at = static_cast<size_t>(pos0) * d;
    out.insert(out.end(), kv.k(l) + at, kv.k(l) + at + rows);
    out.insert(out.end(), kv.v(l) + at, kv.v(l) + at + rows);
  }
  return out;
}

void Stage::import_kv(uint64_t seq, int first, int last, int pos0, int n, const float* data, size_t size) {
  check(first >= first_ && first < last && last <= last_, "layers [", first, ", ", last,
        ") are not within this stage's [", first_, ", ", last_, ")");
  check(pos0 >= 0 && n >= 1 && static_cast<int64_t>(pos0) + n <= n_ctx_, "positions [", pos0, ", ",
        static_cast<int64_t>(pos0) + n, ") exceed the context of ", n_ctx_);
  std::lock_guard<std::mutex> lock(mu_);
  auto it = kv_.find(seq);
  if (it == kv_.end()) {
    check(static_cast<int>(kv_.size()) < max_seqs_, "too many sequences at once (", max_seqs_, ")");
    it = kv_.emplace(seq, std::make_unique<KVCache>(model_->config(), first_, last_, n_ctx_)).first;
    open_.store(static_cast<int>(kv_.size()));
  }
  KVCache& kv = *it->second;
  const size_t d = static_cast<size_t>(kv.kv_dim()), rows = static_cast<size_t>(n) * d;
  check(size == 2 * static_cast<size_t>(last - first) * rows, size, " KV values for 2 x ", last - first,
        " layers x ", n, " positions x ", d);
  for (int l = first; l < last; ++l) {
    check(pos0 <= kv.n_pos(l), "layer ", l, " of sequence ", seq, " holds ", kv.n_pos(l),
          " positions, rows from ", pos0, " would leave a gap");
  }
  const size_t at = static_cast<size_t>(pos0) * d;
  for (int l = first; l < last; ++l) {
    std::copy(data, data + rows, kv.k(l) + at);
    std::copy(data + rows, data + 2 * rows, kv.v(l) + at);
    data += 2 * rows;
    kv.set_n_pos(l, pos0 + n);
  }
}

void Stage::adopt_kv(const Stage& old) {
  const int first = std::max(first_, old.first_), last = std::min(last_, old.last_);
  if (first >= last) return;
  std::vector<std::pair<uint64_t, int>> seqs;  // with the positions every shared layer holds
  {
    std::lock_guard<std::mutex> lock(old.mu_);
    for (const auto& [seq, kv] : old.kv_) {
      int n = kv->n_pos(first);
      for (int l = first; l < last; ++l) n = std::min(n, kv->n_pos(l));
      seqs.emplace_back(seq, n);
    }
  }
  for (const auto& [seq, n] : seqs) {
    if (n == 0) continue;
    const std::vector<float> rows = old.export_kv(seq, first, last, 0, n);
    import_kv(seq, first, last, 0, n, rows.data(), rows.size());
  }
}

int Stage::open_sequences() const { return open_.load(); }

}  // namespace braid::dist
