// A fixed pool of worker threads for data-parallel kernels. The calling thread takes part
// in the work, so ThreadPool(1) runs everything inline with no threads at all.
//
//   pool.parallel_for(n_rows, [&](int64_t begin, int64_t end, int thread) { ... });
//
// splits [0, n) into contiguous chunks, a few per thread, that threads claim as they go:
// a thread the OS has descheduled (a phone running other apps, a laptop compiling) holds
// up only the chunk it is in, not a fixed share of every job. `thread` is unique among
// the calls running at once (use it to index per-thread scratch); which thread gets which
// chunk varies from call to call, so results must not depend on it. Calls are not
// reentrant: a kernel running inside parallel_for must not call parallel_for on the same
// pool. Workers spin briefly between jobs (decode issues hundreds of small jobs per
// token), then sleep; the caller waits for stragglers the same way.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace braid {

class ThreadPool {
 public:
  using Fn = std::function<void(int64_t begin, int64_t end, int thread)>;

  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }

  // Runs fn over [0, n) in contiguous chunks; returns when all are done.
  void parallel_for(int64_t n, const Fn& fn);

  // Runs fn(thread) once on every thread (chunking is the caller's business).
  void run_on_all(const std::function<void(int thread)>& fn);

 private:
  void worker_loop(int index);
  // Waits until pending_ is 0: spins briefly, then sleeps on it.
  void wait_for_workers();

  int n_threads_;
  std::vector<std::thread> threads_;
  const std::function<void(int)>* job_ = nullptr;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable cv_;
};

// Physical cores of this machine (the default thread count), at least 1.
int physical_cores();

}  // namespace braid
