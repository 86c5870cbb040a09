// A progress indicator for long CLI jobs (quantizing, synthesizing, converting, ...).
//
//   braid::Progress p("quantizing", total_bytes, braid::Progress::Unit::kBytes);
//   ... p.add(n) from any thread ...
//   p.finish();
//
// On a terminal it is one line rewritten in place ("\r"), at most ten times a second:
//
//   quantizing  42% [==========>              ] 0.93 / 2.20 GiB  3.1 s  eta 4.3 s
//
// Elsewhere (a log file, CI) it prints a plain line at every tenth of the way and at
// the end, so logs stay short. Jobs shorter than `min_total` units print nothing, so
// small files and tests stay quiet; BRAID_PROGRESS=0 in the environment silences every
// bar. add() and set() are thread-safe and cheap (an atomic add; printing is skipped by
// a thread that finds another one printing).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <string>

namespace braid {

class Progress {
 public:
  enum class Unit { kBytes, kItems };

  // label: what is being done ("quantizing"); total: units of the whole job (0: nothing
  // is printed). Output goes to `out` (stderr by default).
  Progress(std::string label, uint64_t total, Unit unit = Unit::kBytes, uint64_t min_total = 0,
           std::FILE* out = stderr);
  ~Progress();  // finishes the line if finish() was not called
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  // Adds n units done.
  void add(uint64_t n);
  // Sets the units done (for callers that report a running total).
  void set(uint64_t done);
  // Prints the final state (100% when done == total) and ends the line. Idempotent.
  void finish();

  uint64_t done() const { return done_.load(std::memory_order_relaxed); }
  uint64_t total() const { return total_; }
  bool enabled() const { return enabled_; }

  // The text of the line for `done` of `total` after `seconds` (no "\r"), for tests.
  static std::string format_line(const std::string& label, uint64_t done, uint64_t total, Unit unit,
                                 double seconds, bool bar);

 private:
  void maybe_print(bool final);
  double elapsed() const;

  std::string label_;
  uint64_t total_;
  Unit unit_;
  std::FILE* out_;
  bool enabled_ = false;
  bool tty_ = false;
  std::atomic<uint64_t> done_{0};
  std::mutex mu_;
  bool finished_ = false;
  int last_tenth_ = -1;       // non-terminal: last tenth printed
  double last_print_s_ = -1;  // terminal: time of the last redraw
  std::chrono::steady_clock::time_point start_;
};

// Adapts the (stage, done, total) callbacks of long library calls (ConvertOptions,
// QuantizeOptions, SynthOptions ::progress) to bars: a new bar each time the stage
// changes ("quantizing", then "writing"). Calls must not overlap (those callbacks come
// from one thread at a time).
class StageProgress {
 public:
  explicit StageProgress(uint64_t min_total = 0, Progress::Unit unit = Progress::Unit::kBytes)
      : min_total_(min_total), unit_(unit) {}
  void operator()(const char* stage, uint64_t done, uint64_t total);
  void finish();

 private:
  uint64_t min_total_;
  Progress::Unit unit_;
  std::string stage_;
  std::unique_ptr<Progress> bar_;
};

}  // namespace braid
