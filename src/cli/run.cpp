// `braid run`: generate text from a prompt on this machine.
//
// stdout gets only the generated text, streamed as it comes (the prompt is not echoed),
// so `braid run ... > out.txt` captures exactly the continuation. One statistics line
// goes to stderr at the end.
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "braid/error.h"
#include "braid/generate.h"
#include "braid/mapped_file.h"
#include "braid/model.h"
#include "braid/sampler.h"
#include "braid/thread_pool.h"
#include "braid/tokenizer.h"
#include "cli/cli_util.h"
#include "cli/cluster_flags.h"
#include "cli/command.h"

namespace braid::cli {
namespace {

// Without --ctx: the model's training context, but no more than this (a 128k-context
// model would otherwise reserve a huge cache for a short chat).
constexpr int kDefaultMaxCtx = 4096;

struct RunArgs {
  std::string model;
  std::string prompt, prompt_file, prompt_tokens;
  int n_predict = 256;
  SamplerParams sampling;
  int64_t seed = -1;
  int threads = 1;
  int ctx = 0;
  std::vector<std::string> stop;
  std::string logits_out, ids_out;
  bool no_bos = false;
  bool ignore_eos = false;
  ClusterFlags cluster;  // --workers or --cluster ...: the layers run on a cluster
};

void run(const RunArgs& a, const CLI::App& app) {
  if (!a.cluster.batch_file.empty()) {  // many prompts at once: cli/cluster_batch.cpp
    run_batch(a.cluster, {a.model, a.sampling, a.seed, a.n_predict, a.threads, a.ctx, a.stop, a.ids_out, a.no_bos,
                          a.ignore_eos},
              app);
    return;
  }
  const int n_sources =
      static_cast<int>(app.count("--prompt") + app.count("--file") + app.count("--prompt-tokens"));
  check(n_sources == 1, n_sources == 0
                            ? "no prompt: give -p TEXT, -f FILE or --prompt-tokens IDS"
                            : "give the prompt once: -p, -f and --prompt-tokens exclude each other");
  check(a.n_predict >= 1, "-n must be at least 1 (got ", a.n_predict, ")");
  for (const auto& s : a.stop) check(!s.empty(), "--stop needs a non-empty string");
  // Fail on an unwritable output before spending time on generation.
  if (!a.ids_out.empty()) check_writable(a.ids_out);
  if (!a.logits_out.empty()) check_writable(a.logits_out);
  // The prompt text is checked before the (possibly slow) model load.
  std::string text;
  if (app.count("--file")) text = read_file(a.prompt_file);
  if (app.count("--prompt")) text = a.prompt;
  if (!app.count("--prompt-tokens")) validate_utf8(text, "prompt");

  SamplerParams sp = a.sampling;
  sp.seed = a.seed >= 0 ? static_cast<uint64_t>(a.seed)
                        : (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
  Sampler sampler(sp);  // checks the sampling flags

  auto model = load_model(a.model);
  auto tok = load_tokenizer(model->gguf());
  const ModelConfig& config = model->config();

  std::vector<int32_t> prompt;
  if (app.count("--prompt-tokens")) {
    prompt = parse_token_list(a.prompt_tokens, config.n_vocab);
  } else {
    prompt = tok->encode(text, !a.no_bos && tok->add_bos());
  }

  int n_ctx = a.ctx;
  if (n_ctx == 0)
    n_ctx = config.n_ctx_train > 0 ? std::min(config.n_ctx_train, kDefaultMaxCtx) : kDefaultMaxCtx;

  ThreadPool pool(a.threads);
  std::unique_ptr<Forward> forward = make_forward(a.cluster, model, a.model, n_ctx, pool);
  Generator gen(*forward, *tok);
  GenerateOptions opt;
  opt.max_tokens = a.n_predict;
  opt.stop = a.stop;
  opt.ignore_eos = a.ignore_eos;
  opt.record_logits = !a.logits_out.empty();

  GenerateResult r = gen.generate(prompt, sampler, opt, [](std::string_view piece) {
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
    return true;
  });

  if (!a.ids_out.empty()) {
    std::string ids;
    for (size_t i = 0; i < r.tokens.size(); ++i) ids += (i ? " " : "") + std::to_string(r.tokens[i]);
    ids += "\n";
    write_file(a.ids_out, ids.data(), ids.size());
  }
  if (!a.logits_out.empty()) write_file(a.logits_out, r.logits.data(), r.logits.size() * sizeof(float));

  std::fprintf(
      stderr, "\nprompt: %d tokens, %.1f tok/s | generated: %zu tokens, %.1f tok/s | stop: %s | seed: %llu\n",
      r.n_prompt, r.prompt_tokens_per_second(), r.tokens.size(), r.gen_tokens_per_second(),
      stop_reason_name(r.stop_reason), static_cast<unsigned long long>(sp.seed));
}

const char* kFooter = R"(
Output: only the generated text goes to stdout; a statistics line (prompt and generated
tokens and tok/s, why generation stopped, the seed) goes to stderr.
--ids-out FILE: the generated token ids as text, space-separated on one line (an
  end-of-generation token that ended the run included).
--logits-out FILE: float32 little-endian [rows][n_vocab], one row per position fed to
  the model: rows 0..P-1 are the logits after each of the P prompt tokens, row P+j the
  logits after generated token j (the last generated token is fed too). So generated
  token j was drawn from row P-1+j, and rows = P + generated tokens.
Sampling applies, in order: repetition penalty, top-k, top-p, min-p, temperature
(llama.cpp's default chain). --temp 0 is greedy. A context (--ctx) of C holds the prompt
and at most C - P generated tokens.
)";

Command reg("run", "Generate text from a prompt", [](CLI::App& app) {
  auto a = std::make_shared<RunArgs>();
  add_model_option(app, a->model);
  app.add_option("-p,--prompt", a->prompt, "Prompt text (BOS is added when the model wants it)");
  app.add_option("-f,--file", a->prompt_file, "Read the prompt text from a file");
  app.add_option("--prompt-tokens", a->prompt_tokens, "Prompt as token ids, e.g. 1,17,42 (no BOS is added)");
  app.add_option("-n,--n-predict", a->n_predict, "Tokens to generate (>= 1)")->capture_default_str();
  app.add_option("--temp", a->sampling.temperature, "Temperature; 0 = greedy")->capture_default_str();
  app.add_option("--top-k", a->sampling.top_k, "Keep the k most likely tokens; 0 = off")
      ->capture_default_str();
  app.add_option("--top-p", a->sampling.top_p, "Nucleus: smallest set with probability >= p; 1 = off")
      ->capture_default_str();
  app.add_option("--min-p", a->sampling.min_p, "Drop tokens less likely than min-p x the best; 0 = off")
      ->capture_default_str();
  app.add_option("--repeat-penalty", a->sampling.repeat_penalty, "Penalty for recent tokens; 1 = off")
      ->capture_default_str();
  app.add_option("--repeat-last-n", a->sampling.repeat_last_n, "Tokens the penalty looks back on; -1 = all")
      ->capture_default_str();
  app.add_option("--frequency-penalty", a->sampling.frequency_penalty, "Subtract count x this from a logit")
      ->capture_default_str();
  app.add_option("--presence-penalty", a->sampling.presence_penalty, "Subtract this from seen tokens' logits")
      ->capture_default_str();
  app.add_option("-s,--seed", a->seed, "Random seed (default: random; the stats line shows it)")
      ->check(CLI::NonNegativeNumber);
  add_threads_option(app, a->threads);
  app.add_option("-c,--ctx", a->ctx, "Context size in tokens (default: the model's, at most 4096)")
      ->check(CLI::Range(1, 1 << 24));
  app.add_option("--stop", a->stop, "Stop when the text contains this (repeatable); it is not printed");
  app.add_option("--logits-out", a->logits_out, "Write every position's logits (see below)");
  app.add_option("--ids-out", a->ids_out, "Write the generated token ids (see below)");
  app.add_flag("--no-bos", a->no_bos, "Do not add BOS to a text prompt");
  app.add_flag("--ignore-eos", a->ignore_eos, "Keep generating past end-of-generation tokens");
  add_cluster_options(app, a->cluster);
  app.footer(kFooter);
  app.callback([a, &app] {
    apply_cluster_file(app, a->cluster);
    run(*a, app);
  });
});

}  // namespace
}  // namespace braid::cli
