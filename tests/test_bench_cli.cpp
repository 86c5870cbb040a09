// braid bench (library and CLI), the progress bar, and the quantize / synth / bench CLIs
// end to end:
//   - run_bench over a scripted Forward: which calls it makes (positions, batch sizes,
//     repetitions), the statistics, the JSON keys (null for what was not measured); the
//     pipelined test: sequences made, driven at once from their own threads;
//   - the machine probes: read bandwidth, peak RSS grows with touched memory, cache size;
//   - Progress lines on a non-terminal (a line per tenth) and their format;
//   - `braid synth` -> `braid quantize` -> `braid bench --json` on tiny synthetic models:
//     valid JSON with the required keys and sane values; the human-readable table;
//   - `braid bench --sequences N`, locally and over two `braid worker` processes on
//     127.0.0.1 (stories260K): the pipelined keys, positive speeds;
//   - bad input: -t 0, missing files, unknown types and presets, bad -p, nothing to do.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "braid/bench.h"
#include "braid/error.h"
#include "braid/progress.h"
#include "test_util.h"
#include "worker_process.h"

namespace braid {
namespace {

using test::run_braid;

// ---------------------------------------------------------------- run_bench

// Records every forward call; logits are a fixed finite vector.
class RecordingForward : public Forward {
 public:
  struct Call {
    int n, pos0;
    bool all_logits;
  };
  RecordingForward(std::vector<Call>* calls, int n_ctx) : calls_(calls), n_ctx_(n_ctx) {}
  int n_vocab() const override { return 16; }
  int n_ctx() const override { return n_ctx_; }
  void forward(const int32_t* tokens, int n, int pos0, bool all_logits, float* logits) override {
    for (int i = 0; i < n; ++i) EXPECT_TRUE(tokens[i] >= 0 && tokens[i] < 16);
    calls_->push_back({n, pos0, all_logits});
    for (int i = 0; i < 16; ++i) logits[i] = static_cast<float>(i);
  }

 private:
  std::vector<Call>* calls_;
  int n_ctx_;
};

BenchModelInfo fake_info() {
  BenchModelInfo m;
  m.path = "fake.gguf";
  m.type = "Q4_0";
  m.file_bytes = 1000;
  m.weight_bytes_per_token = 1 << 20;
  m.kv_bytes_per_position = 64;
  return m;
}

TEST(RunBench, CallsTheForwardAsDocumented) {
  std::vector<RecordingForward::Call> calls;
  int made_ctx = 0;
  ThreadPool pool(1);
  BenchOptions opt;
  opt.n_prompt = {8, 3};
  opt.n_gen = 5;
  opt.reps = 2;
  opt.measure_bandwidth = false;
  std::vector<std::string> logged;
  opt.log = [&](const std::string& s) { logged.push_back(s); };
  const BenchResult r = run_bench(
      [&](int n_ctx) {
        made_ctx = n_ctx;
        return std::make_unique<RecordingForward>(&calls, n_ctx);
      },
      fake_info(), opt, pool);
  EXPECT_EQ(made_ctx, 8);  // the largest test
  // pp8: warmup + 2 reps, pp3: warmup + 2 reps, tg: warmup (1 token) + 2 x 5 single tokens.
  ASSERT_EQ(calls.size(), 3u + 3u + 1u + 10u);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(calls[i].n, 8);
  for (int i = 3; i < 6; ++i) EXPECT_EQ(calls[i].n, 3);
  for (int i = 0; i < 7; ++i) EXPECT_EQ(calls[i].pos0, 0);
  for (int rep = 0; rep < 2; ++rep)
    for (int i = 0; i < 5; ++i) {
      const auto& c = calls[7 + rep * 5 + i];
      EXPECT_EQ(c.n, 1);
      EXPECT_EQ(c.pos0, i);  // from an empty context, one position at a time
    }
  for (const auto& c : calls) EXPECT_FALSE(c.all_logits);
  ASSERT_EQ(r.prompt.size(), 2u);
  EXPECT_EQ(r.prompt[0].n_prompt, 8);
  EXPECT_EQ(r.prompt[0].tokens_per_s.samples.size(), 2u);
  EXPECT_EQ(r.gen_tokens_per_s.samples.size(), 2u);
  EXPECT_GT(r.gen_tokens_per_s.median(), 0);
  EXPECT_EQ(r.kv_cache_bytes, 8u * 64u);
  EXPECT_GT(r.peak_rss_bytes, 0u);
  EXPECT_EQ(r.bandwidth.bytes_per_s, 0);
  EXPECT_EQ(logged.size(), 3u);
  EXPECT_EQ(logged[0].rfind("pp8: ", 0), 0u) << logged[0];

  auto j = nlohmann::json::parse(r.to_json());
  EXPECT_EQ(j["model_type"], "Q4_0");
  EXPECT_EQ(j["n_prompt"], 8);
  EXPECT_GT(j["prompt_tokens_per_s"].get<double>(), 0);
  EXPECT_EQ(j["prompt"].size(), 2u);
  EXPECT_EQ(j["prompt"][1]["n_prompt"], 3);
  EXPECT_TRUE(j["read_bandwidth_bytes_per_s"].is_null());  // not measured
  EXPECT_TRUE(j["bandwidth_fraction"].is_null());
  EXPECT_NEAR(j["gen_bytes_per_s"].get<double>(), r.gen_tokens_per_s.median() * (1 << 20), 1e-3);
}

// At depth, the context is fed once (untimed) and every test starts from its end.
TEST(RunBench, DepthFillsTheContextFirst) {
  std::vector<RecordingForward::Call> calls;
  int made_ctx = 0;
  ThreadPool pool(1);
  BenchOptions opt;
  opt.n_prompt = {8};
  opt.n_gen = 3;
  opt.n_depth = 20;
  opt.reps = 2;
  opt.measure_bandwidth = false;
  const BenchResult r = run_bench(
      [&](int n_ctx) {
        made_ctx = n_ctx;
        return std::make_unique<RecordingForward>(&calls, n_ctx);
      },
      fake_info(), opt, pool);
  EXPECT_EQ(made_ctx, 28);  // depth + the largest test
  // The context (20 at 0), pp8: warmup + 2 reps at 20, tg: warmup + 2 x 3 from 20.
  ASSERT_EQ(calls.size(), 1u + 3u + 1u + 6u);
  EXPECT_EQ(calls[0].n, 20);
  EXPECT_EQ(calls[0].pos0, 0);
  for (int i = 1; i < 4; ++i) {
    EXPECT_EQ(calls[i].n, 8);
    EXPECT_EQ(calls[i].pos0, 20);
  }
  EXPECT_EQ(calls[4].pos0, 20);
  for (int rep = 0; rep < 2; ++rep)
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(calls[5 + rep * 3 + i].n, 1);
      EXPECT_EQ(calls[5 + rep * 3 + i].pos0, 20 + i);
    }
  EXPECT_EQ(r.n_depth, 20);
  EXPECT_EQ(r.kv_cache_bytes, 28u * 64u);
  auto j = nlohmann::json::parse(r.to_json());
  EXPECT_EQ(j["n_depth"], 20);
  EXPECT_EQ(j["n_ctx"], 28);

  BenchOptions neg = opt;
  neg.n_depth = -1;
  EXPECT_THROW(run_bench([&](int n) { return std::make_unique<RecordingForward>(&calls, n); }, fake_info(), neg, pool),
               Error);
}

TEST(RunBench, OnlyGenerationAndBadOptions) {
  std::vector<RecordingForward::Call> calls;
  ThreadPool pool(1);
  auto make = [&](int n_ctx) { return std::make_unique<RecordingForward>(&calls, n_ctx); };
  BenchOptions opt;
  opt.n_prompt = {};
  opt.n_gen = 4;
  opt.reps = 1;
  opt.warmup = false;
  opt.measure_bandwidth = false;
  const BenchResult r = run_bench(make, fake_info(), opt, pool);
  EXPECT_EQ(calls.size(), 4u);
  auto j = nlohmann::json::parse(r.to_json());
  EXPECT_TRUE(j["prompt_tokens_per_s"].is_null());
  EXPECT_GT(j["gen_tokens_per_s"].get<double>(), 0);

  BenchOptions none = opt;
  none.n_gen = 0;
  EXPECT_THROW(run_bench(make, fake_info(), none, pool), Error);
  BenchOptions reps = opt;
  reps.reps = 0;
  EXPECT_THROW(run_bench(make, fake_info(), reps, pool), Error);
  BenchOptions neg = opt;
  neg.n_prompt = {-1};
  EXPECT_THROW(run_bench(make, fake_info(), neg, pool), Error);
  // A Forward too short for the tests is refused, not overrun.
  EXPECT_THROW(
      run_bench([&](int) { return std::make_unique<RecordingForward>(&calls, 2); }, fake_info(), opt, pool),
      Error);
}

// A sequence of the pipelined test: records its calls, and how many sequences were inside
// forward() at once (each call takes 2 ms, so overlapping threads are seen).
class ConcurrentForward : public Forward {
 public:
  struct Shared {
    std::mutex mu;
    std::set<std::thread::id> threads;
    std::atomic<int> in_flight{0};
    std::atomic<int> max_in_flight{0};
  };
  using Calls = std::vector<std::pair<int, int>>;  // (n, pos0)
  // Records into *calls (owned by the test: run_bench destroys its Forwards), if given.
  ConcurrentForward(Shared* shared, int n_ctx, Calls* calls = nullptr)
      : shared_(shared), n_ctx_(n_ctx), calls_(calls) {}
  int n_vocab() const override { return 16; }
  int n_ctx() const override { return n_ctx_; }
  void forward(const int32_t* tokens, int n, int pos0, bool, float* logits) override {
    const int now = ++shared_->in_flight;
    int seen = shared_->max_in_flight.load();
    while (now > seen && !shared_->max_in_flight.compare_exchange_weak(seen, now)) {
    }
    {
      std::lock_guard<std::mutex> lock(shared_->mu);
      shared_->threads.insert(std::this_thread::get_id());
      for (int i = 0; i < n; ++i) EXPECT_TRUE(tokens[i] >= 0 && tokens[i] < 16);
      if (calls_) calls_->push_back({n, pos0});
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
    for (int i = 0; i < 16; ++i) logits[i] = static_cast<float>(i);
    --shared_->in_flight;
  }

 private:
  Shared* shared_;
  int n_ctx_;
  Calls* calls_;  // under shared->mu
};

TEST(RunBench, PipelinedSequencesRunAtOnce) {
  ConcurrentForward::Shared shared;
  std::vector<std::unique_ptr<ConcurrentForward::Calls>> made;
  ThreadPool pool(1);
  BenchOptions opt;
  opt.n_prompt = {};
  opt.n_gen = 5;
  opt.reps = 2;
  opt.sequences = 3;
  opt.measure_bandwidth = false;
  const BenchResult r = run_bench(
      [&](int n_ctx) {
        made.push_back(std::make_unique<ConcurrentForward::Calls>());
        return std::make_unique<ConcurrentForward>(&shared, n_ctx, made.back().get());
      },
      fake_info(), opt, pool);
  ASSERT_EQ(made.size(), 3u);  // the single-stream Forward is the first sequence
  // First: tg warmup (1) + 2 x 5, then pipelined warmup (1) + 2 x 5. The others: the last two.
  std::vector<std::pair<int, int>> pipelined;
  for (int rep = -1; rep < 2; ++rep)
    for (int i = 0; i < (rep < 0 ? 1 : 5); ++i) pipelined.push_back({1, i});
  std::vector<std::pair<int, int>> first;
  for (int rep = -1; rep < 2; ++rep)
    for (int i = 0; i < (rep < 0 ? 1 : 5); ++i) first.push_back({1, i});
  first.insert(first.end(), pipelined.begin(), pipelined.end());
  EXPECT_EQ(*made[0], first);
  EXPECT_EQ(*made[1], pipelined);
  EXPECT_EQ(*made[2], pipelined);
  EXPECT_EQ(shared.max_in_flight.load(), 3);  // all three at once
  EXPECT_GE(shared.threads.size(), 3u);
  EXPECT_EQ(r.sequences, 3);
  ASSERT_EQ(r.pipelined_gen_tokens_per_s.samples.size(), 2u);
  // 3 sequences of 2 ms tokens at once: well above one stream's rate.
  EXPECT_GT(r.pipelined_gen_tokens_per_s.median(), 1.5 * r.gen_tokens_per_s.median());
  EXPECT_EQ(r.kv_cache_bytes, 3u * 5u * 64u);

  auto j = nlohmann::json::parse(r.to_json());
  EXPECT_EQ(j["sequences"], 3);
  EXPECT_GT(j["pipelined_gen_tokens_per_s"].get<double>(), 0);
  EXPECT_EQ(j["pipelined_gen_samples"].size(), 2u);

  // One sequence: no pipelined test, and null in the JSON.
  opt.sequences = 1;
  const BenchResult one = run_bench(
      [&](int n_ctx) { return std::make_unique<ConcurrentForward>(&shared, n_ctx); }, fake_info(), opt, pool);
  EXPECT_TRUE(one.pipelined_gen_tokens_per_s.samples.empty());
  auto j1 = nlohmann::json::parse(one.to_json());
  EXPECT_EQ(j1["sequences"], 1);
  EXPECT_TRUE(j1["pipelined_gen_tokens_per_s"].is_null());

  // Out of range, or pipelining without generation.
  auto make = [&](int n_ctx) { return std::make_unique<ConcurrentForward>(&shared, n_ctx); };
  BenchOptions zero = opt;
  zero.sequences = 0;
  EXPECT_THROW(run_bench(make, fake_info(), zero, pool), Error);
  BenchOptions no_gen = opt;
  no_gen.sequences = 2;
  no_gen.n_gen = 0;
  no_gen.n_prompt = {4};
  EXPECT_THROW(run_bench(make, fake_info(), no_gen, pool), Error);
}

// A sequence that fails mid-test: the error reaches the caller once every thread ended.
TEST(RunBench, PipelinedErrorIsRethrown) {
  // Sequences after the first fail at position 3 (a worker lost mid-run).
  struct Failing : Forward {
    explicit Failing(bool fails) : fails_(fails) {}
    int n_vocab() const override { return 16; }
    int n_ctx() const override { return 8; }
    void forward(const int32_t*, int, int pos0, bool, float* logits) override {
      if (fails_ && pos0 == 3) fail("sequence lost at position 3");
      std::fill(logits, logits + 16, 0.0f);
    }
    bool fails_;
  };
  ThreadPool pool(1);
  BenchOptions opt;
  opt.n_prompt = {};
  opt.n_gen = 5;
  opt.reps = 1;
  opt.sequences = 3;
  opt.measure_bandwidth = false;
  int made = 0;
  try {
    run_bench([&](int) { return std::make_unique<Failing>(made++ > 0); }, fake_info(), opt, pool);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "sequence lost at position 3");
  }
  EXPECT_EQ(made, 3);
}

TEST(BenchStat, MedianMeanStddev) {
  BenchStat s;
  EXPECT_EQ(s.median(), 0);
  s.samples = {3, 1, 2};
  EXPECT_EQ(s.median(), 2);
  s.samples = {4, 1, 3, 2};
  EXPECT_EQ(s.median(), 2.5);
  EXPECT_EQ(s.mean(), 2.5);
  EXPECT_NEAR(s.stddev(), 1.2909944, 1e-6);
}

// ---------------------------------------------------------------- machine probes

TEST(Machine, ReadBandwidthIsMeasured) {
  ThreadPool pool(2);
  const BandwidthResult b = measure_read_bandwidth(pool, size_t{32} << 20, 0.05);
  EXPECT_EQ(b.threads, 2);
  EXPECT_EQ(b.buffer_bytes, size_t{32} << 20);
  EXPECT_GE(b.passes, 3);
  EXPECT_GT(b.bytes_per_s, 1e8);  // any machine (even loaded, under ASan) streams > 0.1 GB/s
  EXPECT_LT(b.bytes_per_s, 1e13);
  EXPECT_GE(b.bytes_per_s, b.median_bytes_per_s);
  EXPECT_GE(default_bandwidth_buffer_bytes(), size_t{16} << 20);
}

TEST(Machine, PeakRssFollowsTouchedMemory) {
  const uint64_t before = peak_rss_bytes();
  EXPECT_GT(before, 0u);
  EXPECT_GT(current_rss_bytes(), 0u);
  const size_t n = size_t{96} << 20;
  std::vector<char> big(n);
  for (size_t i = 0; i < n; i += 4096) big[i] = static_cast<char>(i);
  const uint64_t now = current_rss_bytes();  // read first: the peak covers it
  const uint64_t after = peak_rss_bytes();
  EXPECT_GE(after, before + (size_t{64} << 20)) << before << " -> " << after;
  EXPECT_GE(after, now);
}

TEST(Machine, LastLevelCache) {
  const size_t llc = last_level_cache_bytes();
  if (llc == 0) GTEST_SKIP() << "no cache sizes in sysfs";
  EXPECT_GE(llc, size_t{32} << 10);
  EXPECT_GE(default_bandwidth_buffer_bytes(), std::min<size_t>(4 * llc, default_bandwidth_buffer_bytes()));
}

// ---------------------------------------------------------------- progress

TEST(Progress, OneLinePerTenthOffTerminal) {
  std::FILE* f = std::tmpfile();
  ASSERT_NE(f, nullptr);
  {
    Progress p("working", 1000, Progress::Unit::kItems, 0, f);
    ASSERT_TRUE(p.enabled());
    for (int i = 0; i < 1000; ++i) p.add(1);
    p.finish();
    p.finish();  // idempotent
  }
  std::rewind(f);
  std::vector<std::string> lines;
  char buf[256];
  while (std::fgets(buf, sizeof buf, f)) lines.push_back(buf);
  std::fclose(f);
  ASSERT_EQ(lines.size(), 11u);  // 0%, 10%, ..., 100%
  EXPECT_EQ(lines.front().rfind("working   0% 1 / 1000", 0), 0u) << lines.front();
  EXPECT_EQ(lines.back().rfind("working 100% 1000 / 1000", 0), 0u) << lines.back();
  for (const auto& l : lines) EXPECT_EQ(l.find('\r'), std::string::npos);
}

TEST(Progress, QuietBelowMinimumAndFormat) {
  std::FILE* f = std::tmpfile();
  {
    Progress p("small", 10, Progress::Unit::kBytes, 100, f);
    EXPECT_FALSE(p.enabled());
    p.add(10);
  }
  EXPECT_EQ(std::ftell(f), 0);
  std::fclose(f);
  const std::string line =
      Progress::format_line("quantizing", 512ull << 20, 2048ull << 20, Progress::Unit::kBytes, 3.0, true);
  EXPECT_EQ(line, "quantizing  25% [======>                  ] 0.50 / 2.00 GiB  3.0 s  eta 9.0 s");
  EXPECT_EQ(Progress::format_line("x", 5, 5, Progress::Unit::kItems, 1.0, false), "x 100% 5 / 5  1.0 s");
}

// ---------------------------------------------------------------- CLI end to end

std::string file_size_str(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 ? std::to_string(st.st_size) : "missing";
}

TEST(BenchCli, SynthQuantizeBenchJson) {
  const std::string dir = test::temp_dir();
  const std::string f16 = dir + "/tiny-f16.gguf";
  auto s = run_braid({"synth", "--preset", "tiny", "--type", "F16", "--vocab", "none", "-o", f16, "-t", "2"});
  ASSERT_EQ(s.exit_code, 0) << s.err;
  EXPECT_NE(s.out.find("wrote " + f16), std::string::npos) << s.out;
  const std::string q8 = dir + "/tiny-q8.gguf";
  auto q = run_braid({"quantize", f16, q8, "q8_0", "-t", "2"});
  ASSERT_EQ(q.exit_code, 0) << q.err;
  EXPECT_NE(q.out.find("Q8_0"), std::string::npos) << q.out;

  const std::string json_file = dir + "/r.json";
  auto b = run_braid({"bench", "-m", q8, "-t", "1", "-p", "8,16", "-n", "4", "-r", "2", "--json",
                      "--bandwidth-mib", "32", "-o", json_file});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  nlohmann::json j;
  ASSERT_NO_THROW(j = nlohmann::json::parse(b.out)) << b.out;
  for (const char* key :
       {"prompt_tokens_per_s", "gen_tokens_per_s", "peak_rss_bytes", "read_bandwidth_bytes_per_s",
        "model_type", "model_bytes", "threads", "gen_bytes_per_s", "bandwidth_fraction"})
    EXPECT_TRUE(j.contains(key)) << key;
  EXPECT_GT(j["prompt_tokens_per_s"].get<double>(), 0);
  EXPECT_GT(j["gen_tokens_per_s"].get<double>(), 0);
  EXPECT_GT(j["read_bandwidth_bytes_per_s"].get<double>(), 1e8);
  EXPECT_EQ(j["model_type"], "Q8_0");
  EXPECT_EQ(j["threads"], 1);
  EXPECT_EQ(j["n_prompt"], 8);
  EXPECT_EQ(j["prompt"].size(), 2u);
  EXPECT_EQ(j["n_gen"], 4);
  EXPECT_EQ(std::to_string(j["model_bytes"].get<uint64_t>()), file_size_str(q8));
  // The mapped weights were all touched, so the peak covers most of the file.
  EXPECT_GT(j["peak_rss_bytes"].get<double>(), 0.5 * j["model_bytes"].get<double>());
  EXPECT_GT(j["bandwidth_fraction"].get<double>(), 0);
  std::ifstream in(json_file);
  EXPECT_EQ(nlohmann::json::parse(in), j);  // -o wrote the same object
}

TEST(BenchCli, HumanReadableTable) {
  const std::string dir = test::temp_dir();
  const std::string m = dir + "/tiny-q4.gguf";
  ASSERT_EQ(run_braid({"synth", "--preset", "tiny", "--type", "Q4_0", "--vocab", "none", "-o", m}).exit_code,
            0);
  auto b = run_braid({"bench", "-m", m, "-t", "2", "-p", "8", "-n", "4", "-r", "1", "--bandwidth-mib", "32"});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  for (const char* want : {"| pp8", "| tg4", "read bandwidth:", "peak RSS:", "Q4_0", "of the read bandwidth"})
    EXPECT_NE(b.out.find(want), std::string::npos) << want << "\n" << b.out;
  EXPECT_NE(b.err.find("braid: tg4: "), std::string::npos) << b.err;

  // At depth, tests are named as llama-bench names them, and the KV cache read is said.
  auto d = run_braid({"bench", "-m", m, "-t", "2", "-p", "8", "-n", "4", "-d", "16", "-r", "1", "--no-bandwidth"});
  ASSERT_EQ(d.exit_code, 0) << d.err;
  for (const char* want : {"| pp8 @ d16", "| tg4 @ d16", "of KV cache per token at depth 16"})
    EXPECT_NE(d.out.find(want), std::string::npos) << want << "\n" << d.out;
}

TEST(BenchCli, SynthWithTheSharedVocabulary) {
  BRAID_REQUIRE_ASSET(vocab, "vocab/ggml-vocab-llama-spm.gguf");
  const std::string m = test::temp_dir() + "/tiny-vocab.gguf";
  // No --vocab: the shared Llama vocabulary is found by default.
  auto s = run_braid({"synth", "--preset", "tiny", "--type", "Q4_K_M", "-o", m});
  ASSERT_EQ(s.exit_code, 0) << s.err;
  EXPECT_NE(s.out.find("vocab 32000 with tokenizer"), std::string::npos) << s.out;
  auto t = run_braid({"tokenize", "-m", m, "-p", "Hello"});
  EXPECT_EQ(t.exit_code, 0) << t.err;
}

// The pipelined keys of `braid bench --sequences N`: every sequence's tokens counted.
void expect_pipelined(const nlohmann::json& j, int sequences) {
  EXPECT_EQ(j["sequences"], sequences);
  ASSERT_TRUE(j["pipelined_gen_tokens_per_s"].is_number()) << j.dump();
  EXPECT_GT(j["pipelined_gen_tokens_per_s"].get<double>(), 0);
  EXPECT_GT(j["gen_tokens_per_s"].get<double>(), 0);
  EXPECT_EQ(j["pipelined_gen_samples"].size(), j["reps"].get<size_t>());
}

TEST(BenchCli, SequencesLocally) {
  const std::string dir = test::temp_dir();
  const std::string m = dir + "/tiny-q4.gguf";
  ASSERT_EQ(run_braid({"synth", "--preset", "tiny", "--type", "Q4_0", "--vocab", "none", "-o", m}).exit_code,
            0);
  auto b = run_braid({"bench", "-m", m, "-t", "1", "-p", "8", "-n", "6", "-r", "2", "--no-bandwidth",
                      "--sequences", "3", "--json"});
  ASSERT_EQ(b.exit_code, 0) << b.err;
  const auto j = nlohmann::json::parse(b.out);
  expect_pipelined(j, 3);
  EXPECT_EQ(j["engine"], "local");
  EXPECT_NE(b.err.find("braid: tg6 x 3 sequences: "), std::string::npos) << b.err;
  auto t = run_braid(
      {"bench", "-m", m, "-t", "1", "-p", "0", "-n", "4", "-r", "1", "--no-bandwidth", "--sequences", "2"});
  ASSERT_EQ(t.exit_code, 0) << t.err;
  EXPECT_NE(t.out.find("| tg4 x2"), std::string::npos) << t.out;
}


TEST(BenchCli, SequencesOverTwoWorkers) {
  BRAID_REQUIRE_ASSET(model, "models/stories260K.gguf");
  if (run_braid({"worker", "--help"}, "", 30).exit_code != 0) GTEST_SKIP() << "braid has no dist module";
  const std::string secret = test::temp_dir() + "/secret";
  std::ofstream(secret) << "bench secret";
  test::WorkerProcess a({"--secret-file", secret}), b({"--secret-file", secret});
  ASSERT_TRUE(a.ok() && b.ok());
  for (const char* sequences : {"2", "3"}) {
    SCOPED_TRACE(sequences);
    // An even split, so both workers are in the ring and the sequences overlap.
    std::vector<std::string> args = {"bench", "-m", model, "-t", "1", "-p", "8", "-n", "8", "-r", "2"};
    args.insert(args.end(), {"--json", "--no-bandwidth", "--sequences", sequences, "--split", "even"});
    args.insert(args.end(), {"--workers", a.addr() + "," + b.addr(), "--secret-file", secret});
    const auto r = run_braid(args, "", 60);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const auto j = nlohmann::json::parse(r.out);
    EXPECT_EQ(j["engine"], "cluster");
    expect_pipelined(j, std::stoi(sequences));
    EXPECT_EQ(j["cluster"]["ring"],
              "head -> " + a.addr() + " [0, 3) -> " + b.addr() + " [3, 5) -> head (logits)");
    EXPECT_GT(j["cluster"]["predicted_ms_per_token"].get<double>(), 0);
  }
}

TEST(BenchCli, BadInputFailsWithOneLine) {
  const std::string dir = test::temp_dir();
  const std::string m = dir + "/tiny.gguf";
  ASSERT_EQ(run_braid({"synth", "--preset", "tiny", "--type", "Q8_0", "--vocab", "none", "-o", m}).exit_code,
            0);
  struct Case {
    std::vector<std::string> args;
    std::string want;
  };
  const Case cases[] = {
      {{"bench", "-m", m, "-t", "0"}, "threads"},
      {{"bench", "-m", dir + "/missing.gguf"}, "not found"},
      {{"bench", "-m", m, "-p", "abc"}, "'abc' is not a prompt size"},
      {{"bench", "-m", m, "-p", "0", "-n", "0"}, "nothing to measure"},
      {{"bench", "-m", m, "-r", "0"}, "reps"},
      {{"bench", "-m", m, "--sequences", "0"}, "sequences"},
      {{"bench", "-m", m, "-d", "-1"}, "--depth"},
      {{"bench", "-m", m, "-d", "1000000"}, "--depth 1000000 plus the longest test (64 tokens) is beyond the model's context of"},
      {{"bench", "-m", m, "--sequences", "2", "-n", "0"}, "--sequences 2 times generation: it needs -n > 0"},
      {{"quantize", m, dir + "/o.gguf", "Q3_X"}, "unknown quantization type 'Q3_X'"},
      {{"quantize", dir + "/missing.gguf", dir + "/o.gguf", "Q4_0"}, "not found"},
      {{"quantize", m, dir + "/o.gguf", "Q4_0", "-t", "0"}, "threads"},
      {{"quantize", m, dir + "/o.gguf", "Q4_0"}, "already quantized"},
      {{"synth", "--preset", "huge", "-o", dir + "/s.gguf", "--vocab", "none"},
       "unknown synth preset 'huge'"},
      {{"synth", "--type", "Q9_9", "-o", dir + "/s.gguf", "--vocab", "none"}, "unknown quantization type"},
      {{"synth", "--preset", "tiny", "-o", dir + "/s.gguf", "--vocab", dir + "/nope.gguf"}, "not found"},
      {{"synth", "--preset", "tiny", "--heads", "3", "-o", dir + "/s.gguf", "--vocab", "none"}, "heads"},
      {{"synth", "--preset", "tiny", "-o", dir + "/no/dir/s.gguf", "--vocab", "none"}, "does not exist"},
  };
  for (const Case& c : cases) {
    auto r = run_braid(c.args);
    std::string cmd;
    for (const auto& a : c.args) cmd += a + " ";
    EXPECT_NE(r.exit_code, 0) << cmd;
    EXPECT_EQ(r.signal, 0) << cmd;
    EXPECT_NE(r.err.find(c.want), std::string::npos) << cmd << "\n" << r.err;
    EXPECT_EQ(r.err.find("error"), r.err.rfind("error")) << cmd << ": more than one error line\n" << r.err;
  }
  EXPECT_FALSE(std::ifstream(dir + "/o.gguf").good());
  EXPECT_FALSE(std::ifstream(dir + "/s.gguf").good());
}

}  // namespace
}  // namespace braid
