// braid::run_bench: prompt processing and generation timings over a Forward, then the
// peak RSS and the machine's read bandwidth.
#include "braid/bench.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>
#include <map>
#include <nlohmann/json.hpp>
#include <thread>

#include "braid/error.h"
#include "braid/model.h"
#include "braid/quant.h"

namespace braid {

namespace {

uint64_t splitmix(uint64_t& s) {
  uint64_t z = (s += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void check_finite(const std::vector<float>& logits, const char* test) {
  for (float v : logits)
    check(std::isfinite(v), "bench: the model produced a non-finite logit (", v, ") in ", test);
}

std::string fmt_rate(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  return buf;
}

std::vector<int32_t> random_tokens(uint64_t seed, int n, int n_vocab) {
  std::vector<int32_t> tokens(static_cast<size_t>(n));
  uint64_t s = seed;
  for (int32_t& t : tokens) t = static_cast<int32_t>(splitmix(s) % static_cast<uint64_t>(n_vocab));
  return tokens;
}

// Runs fn(i) for every sequence i on its own thread, all at once, and returns the wall
// time until the last one finished. A sequence's error is rethrown after all have ended
// (a thread must not outlive the Forwards it uses).
template <typename Fn>
double run_concurrently(int n, const Fn& fn) {
  std::vector<std::exception_ptr> errors(static_cast<size_t>(n));
  std::vector<std::thread> threads;
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < n; ++i) {
    threads.emplace_back([&, i] {
      try {
        fn(i);
      } catch (...) {
        errors[static_cast<size_t>(i)] = std::current_exception();
      }
    });
  }
  for (std::thread& t : threads) t.join();
  const double seconds = seconds_since(t0);
  for (const std::exception_ptr& e : errors)
    if (e) std::rethrow_exception(e);
  return seconds;
}

}  // namespace

double BenchStat::median() const {
  if (samples.empty()) return 0;
  std::vector<double> s = samples;
  std::sort(s.begin(), s.end());
  const size_t n = s.size();
  return n % 2 ? s[n / 2] : 0.5 * (s[n / 2 - 1] + s[n / 2]);
}

double BenchStat::mean() const {
  if (samples.empty()) return 0;
  double sum = 0;
  for (double v : samples) sum += v;
  return sum / static_cast<double>(samples.size());
}

double BenchStat::stddev() const {
  if (samples.size() < 2) return 0;
  const double m = mean();
  double ss = 0;
  for (double v : samples) ss += (v - m) * (v - m);
  return std::sqrt(ss / static_cast<double>(samples.size() - 1));
}

BenchModelInfo bench_model_info(const Model& model, const std::string& path, const std::string& type) {
  const ModelConfig& c = model.config();
  const GgufFile& g = model.gguf();
  BenchModelInfo info;
  info.path = path;
  info.name = g.get_str("general.name", "");
  info.arch = arch_name(c.arch);
  info.n_layers = c.n_layers;
  info.n_vocab = c.n_vocab;
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) info.file_bytes = static_cast<uint64_t>(st.st_size);
  std::map<DType, uint64_t> matrix_bytes;
  for (const Tensor& t : g.tensors()) {
    info.n_params += static_cast<uint64_t>(t.nelements());
    if (t.n_dims >= 2) matrix_bytes[t.type] += t.nbytes;
  }
  info.type = type;
  if (info.type.empty() && !matrix_bytes.empty()) {
    auto most = std::max_element(matrix_bytes.begin(), matrix_bytes.end(),
                                 [](const auto& a, const auto& b) { return a.second < b.second; });
    info.type = dtype_name(most->first);
  }
  uint64_t bytes = model.output_weight_bytes() + model.token_embd().row_size();
  for (int l = 0; l < c.n_layers; ++l) bytes += model.layer_weight_bytes(l);
  info.weight_bytes_per_token = bytes;
  info.kv_bytes_per_position = 2ull * sizeof(float) * static_cast<uint64_t>(c.kv_dim()) * c.n_layers;
  return info;
}

double BenchResult::gen_bytes_per_s() const {
  return static_cast<double>(model.weight_bytes_per_token) * gen_tokens_per_s.median();
}

double BenchResult::bandwidth_fraction() const {
  return bandwidth.bytes_per_s > 0 ? gen_bytes_per_s() / bandwidth.bytes_per_s : 0;
}

std::string BenchResult::to_json(int indent) const {
  using json = nlohmann::ordered_json;
  auto rate = [](const BenchStat& s) -> json { return s.samples.empty() ? json(nullptr) : json(s.median()); };
  json j;
  j["model"] = model.path;
  j["model_name"] = model.name;
  j["model_arch"] = model.arch;
  j["model_type"] = model.type;
  j["model_bytes"] = model.file_bytes;
  j["model_params"] = model.n_params;
  j["weight_bytes_per_token"] = model.weight_bytes_per_token;
  j["engine"] = engine;
  j["simd"] = simd;
  j["threads"] = threads;
  j["reps"] = reps;
  j["n_depth"] = n_depth;
  j["n_ctx"] = n_ctx;
  j["n_prompt"] = prompt.empty() ? 0 : prompt.front().n_prompt;
  j["prompt_tokens_per_s"] = prompt.empty() ? json(nullptr) : rate(prompt.front().tokens_per_s);
  json pp = json::array();
  for (const PromptBench& p : prompt) {
    pp.push_back({{"n_prompt", p.n_prompt},
                  {"tokens_per_s", rate(p.tokens_per_s)},
                  {"stddev", p.tokens_per_s.stddev()},
                  {"samples", p.tokens_per_s.samples}});
  }
  j["prompt"] = pp;
  j["n_gen"] = n_gen;
  j["gen_tokens_per_s"] = rate(gen_tokens_per_s);
  j["gen_stddev"] = gen_tokens_per_s.stddev();
  j["gen_samples"] = gen_tokens_per_s.samples;
  j["sequences"] = sequences;
  j["pipelined_gen_tokens_per_s"] = rate(pipelined_gen_tokens_per_s);
  j["pipelined_gen_stddev"] = pipelined_gen_tokens_per_s.stddev();
  j["pipelined_gen_samples"] = pipelined_gen_tokens_per_s.samples;
  j["peak_rss_bytes"] = peak_rss_bytes;
  j["kv_cache_bytes"] = kv_cache_bytes;
  j["read_bandwidth_bytes_per_s"] = bandwidth.bytes_per_s > 0 ? json(bandwidth.bytes_per_s) : json(nullptr);
  j["read_bandwidth_median_bytes_per_s"] =
      bandwidth.bytes_per_s > 0 ? json(bandwidth.median_bytes_per_s) : json(nullptr);
  j["bandwidth_buffer_bytes"] = bandwidth.buffer_bytes;
  j["gen_bytes_per_s"] = gen_tokens_per_s.samples.empty() ? json(nullptr) : json(gen_bytes_per_s());
  j["bandwidth_fraction"] = gen_tokens_per_s.samples.empty() || bandwidth.bytes_per_s <= 0
                                ? json(nullptr)
                                : json(bandwidth_fraction());
  return j.dump(indent);
}

BenchResult run_bench(const ForwardFactory& make, const BenchModelInfo& model, const BenchOptions& opt,
                      ThreadPool& pool) {
  check(!opt.n_prompt.empty() || opt.n_gen > 0,
        "bench: nothing to measure (no prompt sizes and no generation)");
  check(opt.reps >= 1 && opt.reps <= 1000, "bench: repetitions must be in [1, 1000], got ", opt.reps);
  check(opt.n_gen >= 0, "bench: generation length must be >= 0, got ", opt.n_gen);
  check(opt.n_depth >= 0, "bench: depth must be >= 0, got ", opt.n_depth);
  check(opt.sequences >= 1 && opt.sequences <= 1024, "bench: sequences must be in [1, 1024], got ",
        opt.sequences);
  check(opt.sequences == 1 || opt.n_gen > 0, "bench: the pipelined test of ", opt.sequences,
        " sequences generates tokens: it needs a generation length > 0");
  int n_test = opt.n_gen;
  for (int p : opt.n_prompt) {
    check(p >= 1, "bench: prompt sizes must be >= 1, got ", p);
    n_test = std::max(n_test, p);
  }
  check(opt.n_depth <= (1 << 24) - n_test, "bench: depth ", opt.n_depth, " plus the tests' ", n_test,
        " tokens is too long");
  const int n_ctx = opt.n_depth + n_test;
  const int d0 = opt.n_depth;  // the tests' first position

  BenchResult r;
  r.model = model;
  r.engine = opt.engine;
  r.simd = quant_simd_target();
  r.threads = pool.size();
  r.reps = opt.reps;
  r.n_depth = opt.n_depth;
  r.n_gen = opt.n_gen;
  r.sequences = opt.sequences;
  r.n_ctx = n_ctx;
  r.kv_cache_bytes =
      model.kv_bytes_per_position * static_cast<uint64_t>(n_ctx) * static_cast<uint64_t>(opt.sequences);
  auto log = [&](const std::string& s) {
    if (opt.log) opt.log(s);
  };

  {
    std::unique_ptr<Forward> fwd = make(n_ctx);
    check(fwd != nullptr, "bench: no model to run");
    check(fwd->n_ctx() >= n_ctx, "bench: the tests need ", n_ctx, " positions but the model holds ",
          fwd->n_ctx());
    const int n_vocab = fwd->n_vocab();
    check(n_vocab >= 1, "bench: the model has no vocabulary");
    // Random ids: speed does not depend on which tokens are fed.
    const std::vector<int32_t> tokens = random_tokens(opt.seed, n_ctx, n_vocab);
    std::vector<float> logits(static_cast<size_t>(n_vocab));
    // The context the tests start from (untimed); each test then writes its positions
    // from d0 on, over the previous test's.
    if (d0 > 0) {
      fwd->forward(tokens.data(), d0, 0, false, logits.data());
      log("depth " + std::to_string(d0) + ": filled");
    }

    for (int p : opt.n_prompt) {
      PromptBench pb;
      pb.n_prompt = p;
      if (opt.warmup) fwd->forward(tokens.data() + d0, p, d0, false, logits.data());
      for (int rep = 0; rep < opt.reps; ++rep) {
        const auto t0 = std::chrono::steady_clock::now();
        fwd->forward(tokens.data() + d0, p, d0, false, logits.data());
        pb.tokens_per_s.samples.push_back(p / std::max(seconds_since(t0), 1e-9));
      }
      check_finite(logits, "prompt processing");
      log("pp" + std::to_string(p) + ": " + fmt_rate(pb.tokens_per_s.median()) + " tok/s");
      r.prompt.push_back(std::move(pb));
    }
    if (opt.n_gen > 0) {
      if (opt.warmup) fwd->forward(tokens.data() + d0, 1, d0, false, logits.data());
      for (int rep = 0; rep < opt.reps; ++rep) {
        const auto t0 = std::chrono::steady_clock::now();
        for (int i = d0; i < d0 + opt.n_gen; ++i)
          fwd->forward(&tokens[static_cast<size_t>(i)], 1, i, false, logits.data());
        r.gen_tokens_per_s.samples.push_back(opt.n_gen / std::max(seconds_since(t0), 1e-9));
      }
      check_finite(logits, "generation");
      log("tg" + std::to_string(opt.n_gen) + ": " + fmt_rate(r.gen_tokens_per_s.median()) + " tok/s");
    }
    if (opt.sequences > 1) {
      // The first sequence and sequences - 1 new ones, each with its own tokens, all
      // generating at once from an empty context: every thread feeds its n_gen tokens one
      // at a time, as the single-stream test does.
      std::vector<std::unique_ptr<Forward>> seqs;
      seqs.push_back(std::move(fwd));
      for (int i = 1; i < opt.sequences; ++i) {
        seqs.push_back(make(n_ctx));
        check(seqs.back() != nullptr && seqs.back()->n_ctx() >= n_ctx && seqs.back()->n_vocab() == n_vocab,
              "bench: sequence ", i + 1, " of the pipelined test does not match the first");
      }
      const int n = opt.sequences;
      std::vector<std::vector<int32_t>> ids;
      std::vector<std::vector<float>> out(static_cast<size_t>(n), std::vector<float>(logits.size()));
      for (int i = 0; i < n; ++i)
        ids.push_back(random_tokens(opt.seed + 1 + static_cast<uint64_t>(i), n_ctx, n_vocab));
      auto generate = [&](int i, int count) {
        Forward& f = *seqs[static_cast<size_t>(i)];
        for (int k = d0; k < d0 + count; ++k)
          f.forward(&ids[static_cast<size_t>(i)][static_cast<size_t>(k)], 1, k, false,
                    out[static_cast<size_t>(i)].data());
      };
      // Untimed: the new sequences' contexts (at depth), and their first tokens set up
      // their state (caches, links).
      if (d0 > 0) {
        run_concurrently(n - 1, [&](int i) {
          seqs[static_cast<size_t>(i) + 1]->forward(ids[static_cast<size_t>(i) + 1].data(), d0, 0, false,
                                                     out[static_cast<size_t>(i) + 1].data());
        });
      }
      if (opt.warmup) run_concurrently(n, [&](int i) { generate(i, 1); });
      for (int rep = 0; rep < opt.reps; ++rep) {
        const double seconds = run_concurrently(n, [&](int i) { generate(i, opt.n_gen); });
        r.pipelined_gen_tokens_per_s.samples.push_back(static_cast<double>(n) * opt.n_gen /
                                                       std::max(seconds, 1e-9));
      }
      for (const std::vector<float>& o : out) check_finite(o, "pipelined generation");
      log("tg" + std::to_string(opt.n_gen) + " x " + std::to_string(n) +
          " sequences: " + fmt_rate(r.pipelined_gen_tokens_per_s.median()) + " tok/s");
    }
    // Before the probe below allocates its buffer, and while the model and its cache
    // are still alive.
    r.peak_rss_bytes = peak_rss_bytes();
  }

  if (opt.measure_bandwidth) {
    r.bandwidth = measure_read_bandwidth(pool, opt.bandwidth_buffer_bytes, opt.bandwidth_seconds);
    log("read bandwidth: " + fmt_rate(r.bandwidth.bytes_per_s / 1e9) + " GB/s");
  }
  return r;
}

}  // namespace braid
