// End-to-end benchmarks: how fast a model processes prompts and generates tokens, how
// much memory it takes, and how that compares with what the machine's memory can do,
// measured in the same run.
//
//   braid::ThreadPool pool(2);
//   auto model = braid::Model::load("synth-1b-q4_0.gguf");
//   braid::BenchOptions opt;  opt.n_prompt = {64, 512};  opt.n_gen = 64;
//   braid::BenchResult r = braid::run_bench(
//       [&](int n_ctx) { return std::make_unique<braid::LocalForward>(model, n_ctx, pool); },
//       braid::bench_model_info(*model, "synth-1b-q4_0.gguf", "Q4_0"), opt, pool);
//   puts(r.to_json().c_str());
//
// Decoding one token reads every weight once, so generation speed is bounded by
// (weight bytes per token) / (memory read bandwidth); BenchResult reports the fraction
// of that bound a run reached. The benchmark runs over braid::Forward, so the same code
// measures one device (LocalForward) or a cluster (a Forward over the network): pass a
// factory that makes either.
//
// Pipelined generation (BenchOptions::sequences > 1) drives several sequences at once,
// one thread each: on a cluster's ring, while one worker runs a token of one sequence the
// next runs another's, so tokens/s over all sequences can exceed one stream's.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "braid/generate.h"
#include "braid/thread_pool.h"

namespace braid {

class Model;

// ---- Machine measurements ----

// Size of the largest CPU cache (sysfs on Linux); 0 when unknown.
size_t last_level_cache_bytes();

struct BandwidthResult {
  double bytes_per_s = 0;  // the fastest pass: what the memory can deliver
  double median_bytes_per_s = 0;
  size_t buffer_bytes = 0;
  int threads = 0;
  int passes = 0;
  double seconds = 0;  // time spent measuring
};

// Default probe buffer: 4 x the last-level cache and at least 256 MiB (so reads come
// from memory, not cache), at most a quarter of the available memory and 4 GiB.
size_t default_bandwidth_buffer_bytes();

// Read bandwidth of this machine with the pool's threads: each thread streams through
// its own slice of a buffer of buffer_bytes (0: default_bandwidth_buffer_bytes()), summing
// 64-bit words, pass after pass for at least min_seconds (and at least 3 timed passes
// after a first untimed one). The buffer is freed before returning. Throws braid::Error
// when the buffer cannot be allocated.
BandwidthResult measure_read_bandwidth(ThreadPool& pool, size_t buffer_bytes = 0, double min_seconds = 1.0);

// High-water mark of this process's resident memory (VmHWM, else getrusage's
// ru_maxrss), and the current value (VmRSS; 0 where unknown), in bytes. Mapped model
// files count as their pages are touched.
uint64_t peak_rss_bytes();
uint64_t current_rss_bytes();

// ---- What is benchmarked ----

struct BenchModelInfo {
  std::string path;
  std::string name;  // general.name
  std::string arch;  // "llama", ...
  std::string type;  // the quantization mix ("Q4_K_M") or the main matrix type
  uint64_t file_bytes = 0;
  uint64_t n_params = 0;
  // Weight bytes read to decode one token: every layer, the output head, one row of the
  // token embedding.
  uint64_t weight_bytes_per_token = 0;
  // KV cache bytes per position (all layers, keys and values).
  uint64_t kv_bytes_per_position = 0;
  int n_layers = 0;
  int n_vocab = 0;
};

// Fills BenchModelInfo from a loaded model. `type` names its quantization mix; empty:
// the type holding the most matrix bytes ("q4_K").
BenchModelInfo bench_model_info(const Model& model, const std::string& path, const std::string& type = "");

// ---- The benchmark ----

struct BenchOptions {
  // Prompt processing tests: one prompt of each size fed at once (pp64, pp512, ...).
  std::vector<int> n_prompt = {64};
  // Generation test: n_gen tokens fed one at a time (tg64); 0: none.
  int n_gen = 64;
  // Context already in the cache when each test starts (llama-bench's depth): n_depth
  // tokens are fed first, untimed, and the tests run from position n_depth. 0: the tests
  // start from an empty context. At depth, attention reads the cache's n_depth positions
  // (and more) for every token: what long conversations cost.
  int n_depth = 0;
  int reps = 3;        // timed repetitions of each test; results are medians
  bool warmup = true;  // an untimed run of each test first (faults the weights in)
  uint64_t seed = 1;   // of the random token ids fed
  bool measure_bandwidth = true;
  size_t bandwidth_buffer_bytes = 0;  // 0: default_bandwidth_buffer_bytes()
  double bandwidth_seconds = 1.0;
  // Pipelined generation test: this many sequences (one Forward each, all alive at once)
  // generate n_gen tokens each from an empty context at the same time, one thread per
  // sequence; the result is all their tokens / wall time. 1: no such test. Needs n_gen > 0.
  int sequences = 1;
  std::string engine = "local";  // recorded in the result: what the Forward runs on
  // Called with a short line as each test finishes ("pp64: 118.3 tok/s"), for progress.
  std::function<void(const std::string&)> log;
};

// Samples of one measurement.
struct BenchStat {
  std::vector<double> samples;
  double median() const;  // 0 when empty
  double mean() const;
  double stddev() const;  // sample standard deviation; 0 for fewer than 2
};

struct PromptBench {
  int n_prompt = 0;
  BenchStat tokens_per_s;
};

struct BenchResult {
  BenchModelInfo model;
  std::string engine;
  std::string simd;  // braid::quant_simd_target()
  int threads = 0;
  int reps = 0;
  int n_depth = 0;
  int n_ctx = 0;
  std::vector<PromptBench> prompt;
  int n_gen = 0;
  BenchStat gen_tokens_per_s;
  int sequences = 1;
  BenchStat pipelined_gen_tokens_per_s;  // all sequences' tokens / wall time; empty for 1
  uint64_t peak_rss_bytes = 0;           // before the bandwidth probe allocated anything
  uint64_t kv_cache_bytes = 0;           // model.kv_bytes_per_position x n_ctx x sequences
  BandwidthResult bandwidth;             // bytes_per_s == 0 when not measured

  // Weight bytes per second while generating (weight_bytes_per_token x median tg
  // tokens/s), and its fraction of the measured read bandwidth (0 when unknown).
  double gen_bytes_per_s() const;
  double bandwidth_fraction() const;

  // One JSON object. Keys: model, model_name, model_arch, model_type, model_bytes,
  // model_params, weight_bytes_per_token, engine, simd, threads, reps, n_depth, n_ctx, n_prompt
  // (the first prompt size), prompt_tokens_per_s (its median), prompt (every size:
  // n_prompt, tokens_per_s, stddev, samples), n_gen, gen_tokens_per_s, gen_stddev,
  // gen_samples, sequences, pipelined_gen_tokens_per_s, pipelined_gen_stddev,
  // pipelined_gen_samples, peak_rss_bytes, kv_cache_bytes, read_bandwidth_bytes_per_s,
  // bandwidth_buffer_bytes, gen_bytes_per_s, bandwidth_fraction. Speeds not measured
  // (pipelined with 1 sequence) are null.
  std::string to_json(int indent = 2) const;
};

// Makes the Forward to benchmark (a new sequence), holding at least n_ctx positions.
using ForwardFactory = std::function<std::unique_ptr<Forward>(int n_ctx)>;

// Runs the tests of `opt` on one Forward from `make` (n_ctx = the largest test); for the
// pipelined test, calls `make` sequences - 1 more times and drives the first Forward and
// those from one thread each at once (so they must be usable concurrently: a factory over
// one ThreadPool must serialize them). Then reads the peak RSS and probes the read
// bandwidth with `pool`'s threads. Throws braid::Error for options out of range (no
// test, reps < 1, sizes < 1, depth < 0, sequences < 1, sequences > 1 without generation) and
// whatever a Forward throws.
BenchResult run_bench(const ForwardFactory& make, const BenchModelInfo& model, const BenchOptions& opt,
                      ThreadPool& pool);

}  // namespace braid
