// `braid run --batch-file`: many prompts, several sequences in flight at once. On a
// cluster every sequence is its own RemoteForward over one ring, so the workers pipeline
// them; locally they run one after another.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include "braid/error.h"
#include "braid/mapped_file.h"
#include "braid/model.h"
#include "braid/thread_pool.h"
#include "braid/tokenizer.h"
#include "cli/cli_util.h"
#include "cli/cluster_flags.h"

namespace braid::cli {

namespace {

constexpr int kDefaultMaxCtx = 4096;  // as `braid run`
constexpr int kMaxInFlight = 16;

std::vector<std::string> read_prompts(const std::string& path) {
  const std::string text = read_file(path);
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!line.empty()) out.push_back(line);
  }
  check(!out.empty(), "batch file '", path, "' has no prompts");
  return out;
}

}  // namespace

void run_batch(const ClusterFlags& flags, const BatchArgs& a, const CLI::App& app) {
  for (const char* f : {"--prompt", "--file", "--prompt-tokens", "--logits-out"})
    check(app.count(f) == 0, f, " does not combine with --batch-file");
  check(a.n_predict >= 1, "-n must be at least 1 (got ", a.n_predict, ")");
  if (!a.ids_out.empty()) check_writable(a.ids_out);
  const std::vector<std::string> texts = read_prompts(flags.batch_file);

  SamplerParams sp = a.sampling;
  sp.seed = a.seed >= 0 ? static_cast<uint64_t>(a.seed)
                        : (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
  { Sampler check_flags(sp); }

  auto model = load_model(a.model);
  auto tok = load_tokenizer(model->gguf());
  const ModelConfig& config = model->config();
  std::vector<std::vector<int32_t>> prompts;
  for (size_t i = 0; i < texts.size(); ++i) {
    validate_utf8(texts[i], cat("prompt ", i + 1).c_str());
    prompts.push_back(tok->encode(texts[i], !a.no_bos && tok->add_bos()));
  }
  int n_ctx = a.ctx;
  if (n_ctx == 0)
    n_ctx = config.n_ctx_train > 0 ? std::min(config.n_ctx_train, kDefaultMaxCtx) : kDefaultMaxCtx;

  // One Forward per lane; lanes take prompts in turn.
  const int lanes = flags.active() ? std::min<int>(kMaxInFlight, static_cast<int>(prompts.size())) : 1;
  ThreadPool pool(a.threads);
  std::vector<std::unique_ptr<Forward>> forwards;
  if (flags.active()) {
    forwards = make_ring_forwards(flags, model, a.model, n_ctx, a.threads, lanes);
  } else {
    forwards.push_back(std::make_unique<LocalForward>(model, n_ctx, pool));
  }

  GenerateOptions opt;
  opt.max_tokens = a.n_predict;
  opt.stop = a.stop;
  opt.ignore_eos = a.ignore_eos;
  std::vector<GenerateResult> results(prompts.size());
  std::vector<std::string> errors(prompts.size());
  std::atomic<size_t> next{0};
  const auto t0 = std::chrono::steady_clock::now();
  auto lane = [&](int k) {
    Generator gen(*forwards[static_cast<size_t>(k)], *tok);
    for (size_t i = next++; i < prompts.size(); i = next++) {
      SamplerParams p = sp;
      p.seed = sp.seed + i;
      Sampler sampler(p);
      try {
        results[i] = gen.generate(prompts[i], sampler, opt);
      } catch (const Error& e) {
        errors[i] = e.what();
      }
    }
  };
  std::vector<std::thread> threads;
  for (int k = 0; k < lanes; ++k) threads.emplace_back(lane, k);
  for (auto& t : threads) t.join();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  forwards.clear();  // ends the cluster session before the output is written

  for (size_t i = 0; i < prompts.size(); ++i) check(errors[i].empty(), "prompt ", i + 1, ": ", errors[i]);
  size_t generated = 0;
  std::string ids;
  for (size_t i = 0; i < results.size(); ++i) {
    std::printf("=== %zu ===\n%s\n", i + 1, results[i].text.c_str());
    generated += results[i].tokens.size();
    for (size_t j = 0; j < results[i].tokens.size(); ++j)
      ids += (j ? " " : "") + std::to_string(results[i].tokens[j]);
    ids += "\n";
  }
  std::fflush(stdout);
  if (!a.ids_out.empty()) write_file(a.ids_out, ids.data(), ids.size());
  std::fprintf(
      stderr,
      "\nbatch: %zu prompts, %d in flight | generated: %zu tokens in %.2f s, %.1f tok/s | seed: %llu\n",
      prompts.size(), lanes, generated, seconds, seconds > 0 ? static_cast<double>(generated) / seconds : 0.0,
      static_cast<unsigned long long>(sp.seed));
}

}  // namespace braid::cli
