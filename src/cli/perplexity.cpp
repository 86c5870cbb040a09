// `braid perplexity`: how well a model predicts a text file.
//
//   paragraphs (default): split on blank lines, each paragraph scored on its own as
//     [BOS] + its tokens, capped at --ctx tokens (the assets README's procedure);
//   windows: llama.cpp's procedure: consecutive windows of --ctx tokens over the whole
//     text, each starting with BOS, the second half of each scored.
// stdout: one line "<mode> N tokens T mean_nll X ppl P"; progress goes to stderr.
#include "engine/perplexity.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "braid/error.h"
#include "braid/generate.h"
#include "braid/mapped_file.h"
#include "braid/model.h"
#include "braid/thread_pool.h"
#include "braid/tokenizer.h"
#include "cli/cli_util.h"
#include "cli/command.h"

namespace braid::cli {
namespace {

struct PerplexityArgs {
  std::string model, file;
  std::string mode = "paragraphs";
  int ctx = 512;
  int paragraphs = 0;
  int windows = 0;
  int threads = 1;
};

void perplexity(const PerplexityArgs& a) {
  const std::string text = read_file(a.file);
  validate_utf8(text, "text");
  auto model = load_model(a.model);
  auto tok = load_tokenizer(model->gguf());
  ThreadPool pool(a.threads);
  LocalForward forward(model, a.ctx, pool);

  const auto t0 = std::chrono::steady_clock::now();
  // Running figures on a terminal only; logs get the summary.
  const bool tty = isatty(STDERR_FILENO);
  auto progress = [&](const engine::PerplexityResult& r) {
    if (tty && r.n_segments % 10 == 0)
      std::fprintf(stderr, "\r%d %s, %lld tokens, ppl %.4f", r.n_segments,
                   a.mode == "windows" ? "windows" : "paragraphs", static_cast<long long>(r.n_tokens),
                   r.ppl());
  };
  engine::PerplexityResult r =
      a.mode == "windows" ? engine::perplexity_windows(forward, *tok, text, a.ctx, a.windows, progress)
                          : engine::perplexity_paragraphs(forward, *tok, text, a.paragraphs, a.ctx, progress);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "%s%d %s, %lld tokens in %.2f s (%.1f tok/s)\n", tty ? "\r" : "", r.n_segments,
               a.mode.c_str(), static_cast<long long>(r.n_tokens), secs, secs > 0 ? r.n_tokens / secs : 0.0);
  std::printf("%s %d tokens %lld mean_nll %.6f ppl %.6f\n", a.mode.c_str(), r.n_segments,
              static_cast<long long>(r.n_tokens), r.mean_nll(), r.ppl());
}

Command reg("perplexity", "Measure a model's perplexity on a text file", [](CLI::App& app) {
  auto a = std::make_shared<PerplexityArgs>();
  add_model_option(app, a->model);
  app.add_option("-f,--file", a->file, "Text file (UTF-8)")->required();
  app.add_option("--mode", a->mode,
                 "paragraphs: each blank-line-separated paragraph alone; windows: "
                 "llama.cpp-style consecutive windows of --ctx, second halves scored")
      ->check(CLI::IsMember({"paragraphs", "windows"}))
      ->capture_default_str();
  app.add_option("-c,--ctx", a->ctx, "Paragraph cap / window size in tokens")
      ->check(CLI::Range(4, 1 << 20))
      ->capture_default_str();
  app.add_option("--paragraphs", a->paragraphs, "Score only the first N paragraphs (0 = all)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--windows", a->windows, "Score only the first N windows (0 = all)")
      ->check(CLI::NonNegativeNumber);
  add_threads_option(app, a->threads);
  app.callback([a] { perplexity(*a); });
});

}  // namespace
}  // namespace braid::cli
