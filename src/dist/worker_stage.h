// One stage of the ring: a contiguous range of layers of a model, one KV cache per
// sequence, and (on the last stage) the output norm + head. Workers run their stage for
// every frame that arrives; the head runs its own layers through the same class, so a
// cluster computes exactly what Model::forward computes on one device.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <vector>

#include "braid/kv_cache.h"
#include "braid/model.h"
#include "braid/thread_pool.h"

namespace braid::dist {

class Stage {
 public:
  // Layers [first, last) (may be empty when the stage only runs the output), KV caches
  // of n_ctx positions, at most max_seqs sequences at once. slowdown >= 1 makes every
  // run take that many times its measured time (emulating a slower device).
  Stage(std::shared_ptr<const Model> model, int first, int last, int n_ctx, int max_seqs, ThreadPool& pool,
        double slowdown = 1.0);

  int first() const { return first_; }
  int last() const { return last_; }
  const Model& model() const { return *model_; }

  // Runs the layers in place on hidden [n][dim] of sequence `seq` at positions
  // [pos0, pos0 + n). A new sequence gets a cache on its first call. Throws braid::Error
  // for positions that do not fit the cache or are beyond what the sequence holds, or
  // when max_seqs sequences are already open.
  void run(uint64_t seq, int pos0, int n, float* hidden);
  // Output norm + head on `rows` rows of hidden: logits [rows][n_vocab].
  void output(const float* hidden, int rows, float* logits);
  // Forgets a sequence (no-op when unknown).
  void end(uint64_t seq);
  // Keeps the first `keep` positions of a sequence (no-op when unknown).
  void truncate(uint64_t seq, int keep);
  // Sequences with a cache here. Lock-free: heartbeats ask while a batch holds the
  // stage, and a batch longer than the head's failure timeout must not make a healthy
  // worker look lost.
  int open_sequences() const;

  // ---- Moving KV caches between stages (runtime balancing) ----
  // Positions of `seq` its layer `layer` holds; -1 when the sequence is unknown.
  int positions(uint64_t seq, int layer) const;
  // Rows of layers [first, last) (within this stage) of `seq`, positions [pos0, pos0 + n):
  // per layer K rows then V rows, n x kv_dim each (the proto::KvRows layout). Throws
  // braid::Error for an unknown sequence or positions a layer does not hold.
  std::vector<float> export_kv(uint64_t seq, int first, int last, int pos0, int n) const;
  // Stores such rows (data holds 2 x (last - first) x n x kv_dim values): the layers then
  // hold pos0 + n positions. A new sequence gets a cache (within max_seqs); positions
  // before pos0 must be there already. Throws braid::Error otherwise.
  void import_kv(uint64_t seq, int first, int last, int pos0, int n, const float* data, size_t size);
  // Copies every sequence's rows of the layers this stage and `old` both cover (ASSIGN
  // with keep_kv: the layers that stay keep their caches).
  void adopt_kv(const Stage& old);

  // A device that got slower or faster while it runs (thermal throttling, in tests and
  // benchmarks): applies from the next batch on. Thread-safe.
  void set_slowdown(double slowdown) { slowdown_.store(slowdown); }
  // Ends the slowdown's padding of a run in progress at once, and skips it from then on:
  // the session that owns the stage is over and its batch is abandoned. (A batch's
  // measured time includes any time the process was stopped, so after a SIGSTOP the
  // padding can last minutes; the session's links stay open until the data thread is
  // done with it.) Thread-safe.
  void stop_padding();

  // Seconds spent computing so far (without the slowdown padding), for stage timings.
  double busy_seconds() const { return busy_s_; }

 private:
  void pad(double seconds);

  std::shared_ptr<const Model> model_;
  int first_, last_, n_ctx_, max_seqs_;
  ThreadPool& pool_;
  std::atomic<double> slowdown_;
  std::mutex pad_mu_;
  std::condition_variable pad_cv_;
  bool pad_stopped_ = false;  // under pad_mu_
  mutable std::mutex mu_;     // the pool is not reentrant; sequences share it
  std::map<uint64_t, std::unique_ptr<KVCache>> kv_;
  std::atomic<int> open_{0};  // kv_.size(), for open_sequences()
  double busy_s_ = 0;
};

}  // namespace braid::dist
