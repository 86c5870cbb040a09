// `braid bench -m MODEL -t THREADS -p 64 -n 64 [--json]`: prompt processing and
// generation speed, peak memory and the machine's read bandwidth (include/braid/bench.h).
//
// With --workers (or --cluster) the same tests run over the ring: the layers run on the
// workers, the head (this process) embeds and samples. The JSON then says "engine":
// "cluster" and has a "cluster" object: the ring as run, the split rule, the workers
// and the planner's predicted ms/token (null for a fixed split).
//
// --sequences N adds the pipelined test: N sequences generate at once, one thread each.
// On a cluster they are N sequences of one ring (max_sequences N), so the workers overlap
// their tokens. Locally they share the one thread pool, which runs one forward at a time:
// the sequences take turns token by token, so the figure is one stream's speed minus the
// cost of switching between KV caches; it is the baseline a cluster's pipelining is
// measured against, not a batched decode.
#include "braid/bench.h"

#include <algorithm>
#include <cstdio>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "braid/cluster.h"
#include "braid/error.h"
#include "braid/model.h"
#include "braid/quantize.h"
#include "cli/cli_util.h"
#include "cli/cluster_flags.h"
#include "cli/command.h"

namespace {

struct Options {
  std::string model;
  int threads = 0;
  std::string prompt = "64";  // comma-separated sizes
  int n_gen = 64;
  int depth = 0;  // tokens of context before each test
  int reps = 3;
  bool json = false;
  std::string output;
  bool no_bandwidth = false;
  int bandwidth_mib = 0;
  uint64_t seed = 1;
  int sequences = 1;                 // > 1: the pipelined generation test
  braid::cli::ClusterFlags cluster;  // --workers ...: benchmark the ring
};

std::vector<int> parse_sizes(const std::string& text) {
  std::vector<int> v;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    size_t used = 0;
    int n = 0;
    try {
      n = std::stoi(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    braid::check(used == item.size() && n >= 0 && n <= (1 << 20), "-p: '", item,
                 "' is not a prompt size (a whole number, 0 for none)");
    if (n > 0) v.push_back(n);
  }
  return v;
}

// The name of the model's quantization mix from general.file_type; empty if unknown.
std::string mix_name(const braid::Model& m) {
  const int64_t ft = m.gguf().get_i64("general.file_type", -1);
  braid::QuantMix mix;
  if (ft >= 0 && braid::quant_mix_from_file_type(static_cast<uint32_t>(ft), &mix))
    return braid::quant_mix_name(mix);
  return "";
}

std::string gib(double bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f GiB", bytes / 1073741824.0);
  return buf;
}

// A local sequence that takes its turn on the shared thread pool: ThreadPool calls are
// not reentrant, so concurrent sequences (the pipelined test) must not overlap.
class TurnForward : public braid::Forward {
 public:
  TurnForward(std::unique_ptr<braid::Forward> inner, std::shared_ptr<std::mutex> turn)
      : inner_(std::move(inner)), turn_(std::move(turn)) {}
  int n_vocab() const override { return inner_->n_vocab(); }
  int n_ctx() const override { return inner_->n_ctx(); }
  void forward(const int32_t* tokens, int n, int pos0, bool all_logits, float* logits) override {
    std::lock_guard<std::mutex> lock(*turn_);
    inner_->forward(tokens, n, pos0, all_logits, logits);
  }

 private:
  std::unique_ptr<braid::Forward> inner_;
  std::shared_ptr<std::mutex> turn_;
};

// The ring a cluster benchmark ran on, for the JSON and the table.
struct RingInfo {
  std::string ring;
  std::string split;
  double predicted_ms = 0;
  std::vector<std::string> workers;
};

std::string split_rule(const braid::cli::ClusterFlags& f) {
  if (f.split.empty()) return "planner";
  return f.split == "even" || f.split == "memory" || f.split == "planner" ? f.split : "fixed " + f.split;
}

// The result's JSON with, for a cluster, its "cluster" object (key order kept).
std::string result_json(const braid::BenchResult& r, const RingInfo* ring) {
  std::string json = r.to_json();
  if (!ring) return json;
  nlohmann::ordered_json j = nlohmann::ordered_json::parse(json);
  nlohmann::ordered_json c;
  c["ring"] = ring->ring;
  c["split"] = ring->split;
  c["workers"] = ring->workers;
  c["predicted_ms_per_token"] =
      ring->predicted_ms > 0 ? nlohmann::ordered_json(ring->predicted_ms) : nlohmann::ordered_json(nullptr);
  j["cluster"] = c;
  return j.dump(2);
}

void print_table(const braid::BenchResult& r) {
  const braid::BenchModelInfo& m = r.model;
  std::printf("model: %s (%s %s, %.3f B params, %s)\n", m.path.c_str(), m.arch.c_str(), m.type.c_str(),
              m.n_params / 1e9, gib(static_cast<double>(m.file_bytes)).c_str());
  std::printf("engine: %s, %d threads, SIMD %s, %d reps\n\n", r.engine.c_str(), r.threads, r.simd.c_str(),
              r.reps);
  // Tests at depth are named as llama-bench names them: "tg64 @ d1024".
  const std::string at = r.n_depth > 0 ? " @ d" + std::to_string(r.n_depth) : "";
  const int width = static_cast<int>(std::max<size_t>(8, 10 + at.size()));
  std::printf("| %-*s | %-21s |\n|%s|-----------------------|\n", width, "test", "tokens/s (median, sd)",
              std::string(static_cast<size_t>(width) + 2, '-').c_str());
  auto row = [&](const std::string& test, const braid::BenchStat& s, const char* note) {
    std::printf("| %-*s | %10.2f ± %-8.2f |%s\n", width, (test + at).c_str(), s.median(), s.stddev(), note);
  };
  for (const braid::PromptBench& p : r.prompt) row("pp" + std::to_string(p.n_prompt), p.tokens_per_s, "");
  if (r.n_gen > 0) row("tg" + std::to_string(r.n_gen), r.gen_tokens_per_s, "");
  if (!r.pipelined_gen_tokens_per_s.samples.empty()) {
    const std::string note = "  (" + std::to_string(r.sequences) + " sequences at once, all their tokens)";
    row("tg" + std::to_string(r.n_gen) + " x" + std::to_string(r.sequences), r.pipelined_gen_tokens_per_s,
        note.c_str());
  }
  std::printf("\n");
  if (r.bandwidth.bytes_per_s > 0)
    std::printf("read bandwidth: %.2f GB/s (%d threads, %s buffer)\n", r.bandwidth.bytes_per_s / 1e9,
                r.bandwidth.threads, gib(static_cast<double>(r.bandwidth.buffer_bytes)).c_str());
  if (r.n_gen > 0) {
    std::printf("generation reads %.2f GB/s of weights (%.1f MiB per token)", r.gen_bytes_per_s() / 1e9,
                m.weight_bytes_per_token / 1048576.0);
    if (r.bandwidth.bytes_per_s > 0)
      std::printf(" = %.0f%% of the read bandwidth", 100 * r.bandwidth_fraction());
    if (r.n_depth > 0)
      std::printf("; attention also reads %.1f MiB of KV cache per token at depth %d",
                  static_cast<double>(m.kv_bytes_per_position) * r.n_depth / 1048576.0, r.n_depth);
    std::printf("\n");
  }
  const double budget = static_cast<double>(m.file_bytes + r.kv_cache_bytes);
  std::printf("peak RSS: %s (model file %s + KV cache %.1f MiB; %+.1f%%)\n",
              gib(static_cast<double>(r.peak_rss_bytes)).c_str(),
              gib(static_cast<double>(m.file_bytes)).c_str(), r.kv_cache_bytes / 1048576.0,
              budget > 0 ? 100.0 * (static_cast<double>(r.peak_rss_bytes) / budget - 1) : 0);
}

// Cluster flags without workers are a mistake, not a local run.
void check_local_flags(const braid::cli::ClusterFlags& f) {
  if (f.active()) return;
  braid::check(
      f.split.empty() && f.secret_file.empty() && f.ca.empty() && f.head_layers == "0" && !f.output_at_head,
      "cluster flags (--secret-file, --split, --head-layers, --output-at-head) need --workers, "
      "--accept or --cluster");
}

void run(const Options& o) {
  braid::BenchOptions opt;
  opt.n_prompt = parse_sizes(o.prompt);
  opt.n_gen = o.n_gen;
  opt.n_depth = o.depth;
  opt.reps = o.reps;
  opt.seed = o.seed;
  opt.sequences = o.sequences;
  opt.measure_bandwidth = !o.no_bandwidth;
  opt.bandwidth_buffer_bytes = static_cast<size_t>(o.bandwidth_mib) << 20;
  braid::check(!opt.n_prompt.empty() || opt.n_gen > 0, "nothing to measure: -p 0 and -n 0");
  braid::check(o.sequences == 1 || o.n_gen > 0, "--sequences ", o.sequences,
               " times generation: it needs -n > 0");
  opt.log = [](const std::string& line) { std::fprintf(stderr, "braid: %s\n", line.c_str()); };
  if (!o.output.empty()) braid::cli::check_writable(o.output);

  const bool cluster = o.cluster.active();
  check_local_flags(o.cluster);
  if (cluster) {
    opt.engine = "cluster";
    // Bad cluster flags fail before the (slow) model load.
    braid::cli::head_options(o.cluster, 1, o.threads, o.sequences);
    braid::cli::cluster_tls(o.cluster);
  }

  std::shared_ptr<const braid::Model> model = braid::cli::load_model(o.model);
  // Past the trained context a model's output is not what it was trained for, and a
  // depth of a million tokens would run for hours: refuse it up front.
  const int longest = std::max(opt.n_gen, opt.n_prompt.empty() ? 0 : *std::max_element(opt.n_prompt.begin(),
                                                                                       opt.n_prompt.end()));
  const int trained = model->config().n_ctx_train;
  braid::check(trained <= 0 || int64_t{o.depth} + longest <= trained, "--depth ", o.depth, " plus the longest test (",
               longest, " tokens) is beyond the model's context of ", trained, " tokens");
  braid::ThreadPool pool(o.threads);
  // The Forward under test: local, or a sequence on the ring (started on the first call,
  // with room for every sequence of the pipelined test). Everything else (timing, memory,
  // bandwidth, reports) is the same.
  std::shared_ptr<braid::dist::Ring> ring;
  auto turn = std::make_shared<std::mutex>();
  braid::ForwardFactory factory = [&](int n_ctx) -> std::unique_ptr<braid::Forward> {
    if (!cluster)
      return std::make_unique<TurnForward>(std::make_unique<braid::LocalForward>(model, n_ctx, pool), turn);
    if (!ring) ring = braid::cli::start_ring(o.cluster, model, o.model, n_ctx, o.threads, o.sequences);
    return braid::cli::ring_forward(ring);
  };
  const braid::BenchModelInfo info = braid::bench_model_info(*model, o.model, mix_name(*model));
  const braid::BenchResult r = braid::run_bench(factory, info, opt, pool);

  RingInfo ring_info;
  if (ring) {
    ring_info.ring = ring->describe();
    ring_info.split = split_rule(o.cluster);
    ring_info.predicted_ms = ring->predicted_ms_per_token();
    if (!o.cluster.workers.empty())
      for (const auto& ep : braid::dist::parse_endpoints(o.cluster.workers))
        ring_info.workers.push_back(ep.str());
    ring.reset();  // ends the workers' sessions
  }
  const std::string json = result_json(r, cluster ? &ring_info : nullptr);
  if (!o.output.empty()) braid::cli::write_file(o.output, json.data(), json.size());
  if (o.json) {
    std::printf("%s\n", json.c_str());
  } else {
    print_table(r);
    if (cluster) {
      std::printf("cluster: %s (%s split", ring_info.ring.c_str(), ring_info.split.c_str());
      if (ring_info.predicted_ms > 0) std::printf(", predicted %.3f ms/token", ring_info.predicted_ms);
      std::printf(")\n");
    }
  }
}

}  // namespace

static braid::cli::Command reg(
    "bench", "Measure prompt and generation speed, peak memory and the machine's read bandwidth",
    [](CLI::App& app) {
      auto o = std::make_shared<Options>();
      braid::cli::add_model_option(app, o->model);
      braid::cli::add_threads_option(app, o->threads);
      app.add_option("-p,--n-prompt", o->prompt, "Prompt sizes to time, comma-separated (0: none)")
          ->capture_default_str();
      app.add_option("-n,--n-gen", o->n_gen, "Tokens to generate one at a time (0: none)")
          ->check(CLI::Range(0, 1 << 20))
          ->capture_default_str();
      app.add_option("-d,--depth", o->depth,
                     "Tokens of context already in the cache when each test starts (llama-bench's depth)")
          ->check(CLI::Range(0, 1 << 20))
          ->capture_default_str();
      app.add_option("-r,--reps", o->reps, "Repetitions of each test (medians are reported)")
          ->check(CLI::Range(1, 1000))
          ->capture_default_str();
      app.add_flag("--json", o->json, "Print one JSON object instead of a table");
      app.add_option("-o,--output", o->output, "Also write the JSON result to this file");
      app.add_flag("--no-bandwidth", o->no_bandwidth, "Skip the memory bandwidth probe");
      app.add_option("--bandwidth-mib", o->bandwidth_mib,
                     "Bandwidth probe buffer in MiB (default: 4 x the last-level cache, >= 256 MiB)")
          ->check(CLI::Range(1, 1 << 20));
      app.add_option("--seed", o->seed, "Seed of the random token ids")->capture_default_str();
      app.add_option("--sequences", o->sequences,
                     "Also time N sequences generating at once (pipelined through a cluster's ring)")
          ->check(CLI::Range(1, 64))
          ->capture_default_str();
      braid::cli::add_cluster_options(app, o->cluster, false);
      app.callback([o, &app] {
        braid::cli::apply_cluster_file(app, o->cluster);
        run(*o);
      });
    });
