// `braid convert SRC -o OUT.gguf`: Hugging Face folders, llama2.c checkpoints and
// tokenizer.json files to GGUF (see include/braid/convert.h).
#include "braid/convert.h"

#include <unistd.h>

#include <cstdio>
#include <memory>
#include <string>

#include "braid/error.h"
#include "cli/command.h"

namespace {

struct Options {
  std::string src, out, tokenizer, type = "f32", name;
};

// Progress on stderr for conversions big enough to wait for: one line rewritten in
// place on a terminal, a line per quarter otherwise (logs).
class Progress {
 public:
  void operator()(const char* stage, uint64_t done, uint64_t total) {
    if (total < kMinBytes) return;
    const int pct = static_cast<int>(done * 100 / total);
    const bool tty = isatty(STDERR_FILENO);
    const int step = tty ? 1 : 25;
    if (stage != stage_) {
      stage_ = stage;
      last_ = -1;
    }
    if (pct / step == last_ / step && last_ >= 0) return;
    last_ = pct;
    std::fprintf(stderr, "%sbraid: %s %3d%% (%.1f of %.1f MiB)%s", tty ? "\r" : "", stage, pct,
                 done / 1048576.0, total / 1048576.0, tty && pct < 100 ? "" : "\n");
    std::fflush(stderr);
  }

 private:
  static constexpr uint64_t kMinBytes = 64u << 20;
  std::string stage_;
  int last_ = -1;
};

braid::DType parse_type(const std::string& t) {
  if (t == "f32" || t == "F32") return braid::DType::F32;
  if (t == "f16" || t == "F16") return braid::DType::F16;
  if (t == "bf16" || t == "BF16") return braid::DType::BF16;
  braid::fail("--type: expected f32, f16 or bf16, got '", t, "'");
}

void run(const Options& o) {
  braid::ConvertOptions opt;
  opt.tokenizer = o.tokenizer;
  opt.type = parse_type(o.type);
  opt.name = o.name;
  auto progress = std::make_shared<Progress>();
  opt.progress = [progress](const char* stage, uint64_t done, uint64_t total) {
    (*progress)(stage, done, total);
  };

  const braid::ConvertResult r = braid::convert_to_gguf(o.src, o.out, opt);
  if (r.kind == braid::SourceKind::kHfFolder && !r.has_tokenizer)
    std::fprintf(stderr,
                 "braid: warning: %s has no tokenizer.json, so %s has no tokenizer (pass --tokenizer FILE)\n",
                 o.src.c_str(), o.out.c_str());
  std::printf("wrote %s: %s%s%zu tensors, %.2f MiB of tensor data%s (from %s)\n", o.out.c_str(),
              r.architecture.c_str(), r.architecture.empty() ? "" : ", ", r.n_tensors,
              r.tensor_bytes / 1048576.0, r.has_tokenizer ? ", tokenizer" : "",
              braid::source_kind_name(r.kind));
}

}  // namespace

static braid::cli::Command reg(
    "convert", "Convert a Hugging Face model, llama2.c checkpoint or tokenizer.json to GGUF",
    [](CLI::App& app) {
      auto o = std::make_shared<Options>();
      app.add_option("SRC", o->src,
                     "A Hugging Face folder (config.json + safetensors), a llama2.c .bin checkpoint, or a "
                     "tokenizer.json")
          ->required();
      app.add_option("-o,--output", o->out, "The GGUF file to write (atomically)")->required();
      app.add_option(
          "--tokenizer", o->tokenizer,
          "llama2.c: its tokenizer.bin (required); Hugging Face: a tokenizer.json to use instead of "
          "the folder's");
      app.add_option("--type", o->type,
                     "Type of the weight matrices: f32 (exact), f16 or bf16; norms and biases "
                     "stay f32")
          ->capture_default_str();
      app.add_option("--name", o->name, "general.name (default: the source's name)");
      app.callback([o] { run(*o); });
    });
