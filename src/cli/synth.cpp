// `braid synth --preset 1b --type Q4_0 -o FILE`: a Llama-shaped model with random weights
// for benchmarks and tests (see include/braid/synth.h).
#include "braid/synth.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>

#include "braid/error.h"
#include "braid/progress.h"
#include "cli/cli_util.h"
#include "cli/command.h"

namespace {

namespace fs = std::filesystem;

constexpr const char* kVocabRel = "vocab/ggml-vocab-llama-spm.gguf";

struct Options {
  std::string preset = "1b", type = "Q4_0", out, vocab, name;
  uint64_t seed = 1;
  float stddev = 0.02f;
  int threads = 0;
  bool pure = false;
  // Shape overrides (0: the preset's).
  int dim = 0, layers = 0, heads = 0, kv_heads = 0, ffn = 0, n_vocab = 0, ctx = 0;
};

// The Llama vocabulary among the shared assets: $BRAID_ASSETS, ../shared/assets from the
// working directory (the repository root), or beside a folder above the executable (a
// build folder inside the repository). Empty when none exists.
std::string default_vocab() {
  std::vector<fs::path> roots;
  if (const char* env = std::getenv("BRAID_ASSETS")) roots.emplace_back(env);
  roots.emplace_back("../shared/assets");
  std::error_code ec;
  fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec)
    for (fs::path d = exe.parent_path(); !d.empty() && d != d.root_path(); d = d.parent_path())
      roots.push_back(d.parent_path() / "shared" / "assets");
  for (const fs::path& r : roots) {
    const fs::path p = r / kVocabRel;
    if (fs::is_regular_file(p, ec)) return p.lexically_normal().string();
  }
  return "";
}

void run(const Options& o) {
  braid::SynthOptions opt;
  opt.shape = braid::synth_preset(o.preset);
  opt.mix = braid::quant_mix_from_name(o.type);
  opt.seed = o.seed;
  opt.stddev = o.stddev;
  opt.threads = o.threads;
  opt.pure = o.pure;
  opt.name = o.name.empty() ? "braid-synth-" + o.preset : o.name;
  if (o.dim) opt.shape.dim = o.dim;
  if (o.layers) opt.shape.n_layers = o.layers;
  if (o.heads) opt.shape.n_heads = o.heads;
  if (o.kv_heads) opt.shape.n_kv_heads = o.kv_heads;
  if (o.ffn) opt.shape.ffn_dim = o.ffn;
  if (o.n_vocab) opt.shape.n_vocab = o.n_vocab;
  if (o.ctx) opt.shape.n_ctx = o.ctx;
  if (o.vocab.empty()) {
    opt.vocab = default_vocab();
    braid::check(!opt.vocab.empty(), "the default vocabulary (shared/assets/", kVocabRel,
                 ") was not found; pass --vocab FILE, or --vocab none for a model without a tokenizer");
  } else if (o.vocab != "none") {
    braid::check(fs::exists(o.vocab), "vocabulary file '", o.vocab, "' not found");
    opt.vocab = o.vocab;
  }
  braid::check(o.n_vocab == 0 || opt.vocab.empty(),
               "--n-vocab applies only with --vocab none (a vocabulary file sets the size)");
  auto progress = std::make_shared<braid::StageProgress>(uint64_t{32} << 20);
  opt.progress = [progress](const char* stage, uint64_t done, uint64_t total) {
    (*progress)(stage, done, total);
  };

  const braid::SynthResult r = braid::synthesize_model(o.out, opt);
  progress->finish();
  std::printf("wrote %s: llama %s, %.3f B parameters, vocab %d%s, %s (%s), %.2f MiB of tensor data\n",
              o.out.c_str(), o.preset.c_str(), r.n_params / 1e9, r.n_vocab,
              r.has_tokenizer ? " with tokenizer" : " (no tokenizer)", braid::quant_mix_name(opt.mix),
              braid::type_counts_string(r.type_counts).c_str(), r.tensor_bytes / 1048576.0);
}

}  // namespace

static braid::cli::Command reg(
    "synth", "Make a Llama-shaped model with random weights (for benchmarks and tests)", [](CLI::App& app) {
      auto o = std::make_shared<Options>();
      app.add_option("--preset", o->preset, "Shape: 1b (TinyLlama 1.1B) or tiny (4 layers, dim 256)")
          ->capture_default_str();
      app.add_option("--type", o->type, "Quantization type: " + braid::quant_mix_names())
          ->capture_default_str();
      app.add_option("-o,--output", o->out, "The GGUF file to write (atomically)")->required();
      app.add_option("--seed", o->seed, "Random seed (the file depends only on the options)")
          ->capture_default_str();
      app.add_option("--vocab", o->vocab,
                     "A GGUF whose tokenizer to copy (default: the shared Llama-2 vocabulary); 'none' for no "
                     "tokenizer");
      app.add_option("--stddev", o->stddev, "Standard deviation of the weights")->capture_default_str();
      app.add_option("--name", o->name, "general.name (default: braid-synth-PRESET)");
      app.add_flag("--pure", o->pure, "Every matrix in the base type of --type");
      braid::cli::add_threads_option(app, o->threads);
      app.add_option("--dim", o->dim, "Override the preset's embedding width")->check(CLI::Range(1, 1 << 16));
      app.add_option("--layers", o->layers, "Override the preset's layer count")
          ->check(CLI::Range(1, 1 << 10));
      app.add_option("--heads", o->heads, "Override the preset's head count")->check(CLI::Range(1, 1 << 16));
      app.add_option("--kv-heads", o->kv_heads, "Override the preset's KV head count")
          ->check(CLI::Range(1, 1 << 16));
      app.add_option("--ffn", o->ffn, "Override the preset's FFN width")->check(CLI::Range(1, 1 << 18));
      app.add_option("--n-vocab", o->n_vocab, "Vocabulary size without a vocabulary file (--vocab none)")
          ->check(CLI::Range(1, 1 << 20));
      app.add_option("--ctx", o->ctx, "Override the preset's context length")->check(CLI::Range(1, 1 << 20));
      app.callback([o] { run(*o); });
    });
