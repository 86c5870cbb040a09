// Preloading: once a worker holds a range of layers, a background thread warms the
// weights of the layers around it (its neighbours' boundary layers), as far as its
// memory budget allows, so that when a re-plan hands it some of them (balancing moves a
// boundary layer; recovery gives out a lost worker's range) they are already read from
// storage and mapped, and the move costs only the KV transfer (the recovery only the
// replay). A worker maps the model file, so "loading" a layer is nothing but page faults
// on its weights: major ones from storage (a layer of the 1.1B Q4_0 synth model, 28 MiB,
// takes about 37 ms paged in page by page from the test VM's disk), minor ones when the
// page cache holds it already (about 1 ms). The only other per-layer set-up is a
// layer's copy in panels (f16 / bf16, and q4_0 / q8_0 / q4_K / q6_K on AVX-512 VNNI;
// braid/model.h), made on the layer's first batch from those pages (~30 ms for a 23 MiB
// f16 matrix on one core), after which the file's pages are
// given back; so the preloader warms the pages of its own range only while a layer has
// no copy yet, and the KV cache is allocated on a sequence's first batch. The thread
// runs at idle priority (SCHED_IDLE, idle I/O class) in 1 MiB steps, so that it yields
// to the running decode.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "braid/cluster.h"
#include "braid/model.h"

namespace braid::dist {

// What a worker warms besides its own range: layers by distance from [first, last),
// nearest first and alternating sides (first - 1, last, first - 2, last + 1, ...; the
// output counts as the layer after the last, when the range does not run it), while
// their weights fit `budget` bytes; a side ends at its first layer that does not fit.
struct PreloadSet {
  std::vector<int> layers;  // in the order they are warmed; n_layers stands for the output
  uint64_t bytes = 0;       // their weights
  uint64_t budget = 0;      // what they were chosen within
};
PreloadSet choose_preload(const Model& model, int first, int last, bool runs_output, uint64_t budget);

// What preloading may use: `budget` (what braid may use on the device) less a 10% margin
// (the planner's) and what the stage itself needs, its weights and its KV caches at full
// context (n_ctx positions for each of max_seqs sequences); 0 when that is all of it.
uint64_t preload_budget(const Model& model, int first, int last, bool runs_output, int n_ctx, int max_seqs,
                        uint64_t budget);

// "[0, 3), [7, 9) and the output" for a set of layers (n_layers: the output).
std::string describe_layers(const std::set<int>& layers, int n_layers);

// The background thread of one session. start() and the destructor are called from one
// thread at a time (the session's control thread, then whoever ends the session).
class Preloader {
 public:
  explicit Preloader(LogFn log) : log_(std::move(log)) {}
  ~Preloader() { stop(); }
  Preloader(const Preloader&) = delete;
  Preloader& operator=(const Preloader&) = delete;

  // Warms the range [first, last) (+ output) and then `set`, in the background. A run in
  // progress is told to stop; start() does not wait for it (an idle-priority thread may
  // be slow to get the CPU on a busy device, and ASSIGN must not wait for that): the new
  // run does. With file_backed (the weights are a mapping of the model file, not memory
  // the session received) the new run first gives back the pages of layers an earlier
  // start ran or warmed and this one neither runs nor warms (MADV_DONTNEED: the kernel
  // drops them from this process and reads them again if they are ever needed), so that
  // what is resident stays within the budget after the range moves. Logs one line when
  // done ("<prefix>preloaded layers [4, 7) (84 MiB of 200 MiB left) in 120 ms").
  void start(std::shared_ptr<const Model> model, int first, int last, bool runs_output, PreloadSet set,
             bool file_backed, std::string prefix);
  // Stops the runs and waits for them.
  void stop();
  // Waits until the current run has ended (tests); false when it did not within timeout_ms.
  bool wait_done(int timeout_ms) const;

 private:
  struct Run {
    std::atomic<bool> stop{false}, done{false};
  };
  void run(const Run& r, const Model& model, const std::vector<int>& order, int n_own, uint64_t budget,
           const std::string& prefix) const;

  LogFn log_;
  std::thread thread_;       // the current run's; it joins the one before it first
  std::shared_ptr<Run> run_;  // the current run
  std::set<int> resident_;   // layers (n_layers: the output) run or warmed since the last start
};

}  // namespace braid::dist
