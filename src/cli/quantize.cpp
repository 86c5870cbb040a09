// `braid quantize IN.gguf OUT.gguf TYPE`: requantize a GGUF model with llama.cpp's mixes
// (see include/braid/quantize.h).
#include "braid/quantize.h"

#include <cstdio>
#include <memory>
#include <string>

#include "braid/error.h"
#include "braid/progress.h"
#include "cli/cli_util.h"
#include "cli/command.h"

namespace {

struct Options {
  std::string in, out, type;
  int threads = 0;
  bool pure = false;
  bool allow_requantize = false;
};

// Fallback lines printed in full up to this many; the rest are counted.
constexpr size_t kMaxFallbackLines = 8;

void run(const Options& o) {
  braid::QuantizeOptions opt;
  opt.mix = braid::quant_mix_from_name(o.type);
  opt.threads = o.threads;
  opt.pure = o.pure;
  opt.allow_requantize = o.allow_requantize;
  auto progress = std::make_shared<braid::StageProgress>(uint64_t{32} << 20);
  opt.progress = [progress](const char* stage, uint64_t done, uint64_t total) {
    (*progress)(stage, done, total);
  };

  const braid::QuantizeResult r = braid::quantize_gguf(o.in, o.out, opt);
  progress->finish();
  for (size_t i = 0; i < r.fallbacks.size() && i < kMaxFallbackLines; ++i)
    std::fprintf(stderr, "braid: note: %s\n", r.fallbacks[i].c_str());
  if (r.fallbacks.size() > kMaxFallbackLines)
    std::fprintf(stderr, "braid: note: ... and %zu more tensors fell back to a type that fits their rows\n",
                 r.fallbacks.size() - kMaxFallbackLines);
  const double bpw =
      r.n_elements ? 8.0 * static_cast<double>(r.bytes_out) / static_cast<double>(r.n_elements) : 0;
  std::printf("wrote %s: %s, %zu tensors (%s), %.2f MiB -> %.2f MiB of tensor data, %.2f bits per weight\n",
              o.out.c_str(), braid::quant_mix_name(opt.mix), r.n_tensors,
              braid::type_counts_string(r.type_counts).c_str(), r.bytes_in / 1048576.0,
              r.bytes_out / 1048576.0, bpw);
}

}  // namespace

static braid::cli::Command reg(
    "quantize", "Quantize a GGUF model (llama.cpp's mixes: Q4_0, Q8_0, Q4_K_M, ...)", [](CLI::App& app) {
      auto o = std::make_shared<Options>();
      app.add_option("IN", o->in, "The GGUF model to quantize (f32, f16 or bf16)")->required();
      app.add_option("OUT", o->out, "The GGUF file to write (atomically)")->required();
      app.add_option("TYPE", o->type, "Quantization type: " + braid::quant_mix_names())->required();
      braid::cli::add_threads_option(app, o->threads);
      app.add_flag("--pure", o->pure,
                   "Every matrix in the base type (no q6_K head or attn_v/ffn_down bumps)");
      app.add_flag("--allow-requantize", o->allow_requantize,
                   "Accept an already quantized input (loses precision twice)");
      app.callback([o] { run(*o); });
    });
