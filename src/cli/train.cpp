// `braid train`: pretrains a Llama-architecture model from scratch (or fine-tunes one
// given with --init) on text or JSONL data, and writes a GGUF that `braid run` runs.
//
// stderr gets the progress (see cli/train_progress.h); stdout gets the final report. With
// --checkpoint FILE the whole training state is saved every --save-every steps, at the
// end and on Ctrl-C, and a rerun of the same command continues from it, giving the same
// result as a run that was never interrupted.
#include <cmath>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "braid/error.h"
#include "braid/thread_pool.h"
#include "braid/tune_export.h"
#include "braid/tune_trainer.h"
#include "cli/cli_util.h"
#include "cli/command.h"
#include "cli/train_progress.h"
#include "cli/train_setup.h"

namespace braid::cli {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

volatile std::sig_atomic_t g_interrupted = 0;

extern "C" void on_sigint(int) {
  g_interrupted = 1;
  std::signal(SIGINT, SIG_DFL);  // a second Ctrl-C stops at once
}

// Catches Ctrl-C while it lives, so a step can finish and the checkpoint be saved.
class InterruptGuard {
 public:
  InterruptGuard() {
    g_interrupted = 0;
    previous_ = std::signal(SIGINT, on_sigint);
  }
  ~InterruptGuard() { std::signal(SIGINT, previous_); }

 private:
  void (*previous_)(int);
};

tune::TrainerOptions trainer_options(const TrainArgs& a) {
  tune::TrainerOptions o;
  o.adamw.beta1 = a.beta1;
  o.adamw.beta2 = a.beta2;
  o.adamw.weight_decay = a.weight_decay;
  o.schedule.peak_lr = a.lr;
  o.schedule.min_lr = a.min_lr >= 0 ? a.min_lr : a.lr / 10;
  o.schedule.warmup_steps = a.warmup >= 0 ? a.warmup : std::llround(double(a.steps) * 0.05);
  o.schedule.total_steps = a.steps;
  o.grad_clip = a.grad_clip;
  o.decay_all = false;  // no weight decay on norm weights, as nanoGPT and llm.c
  o.seed = a.seed;
  return o;
}

std::string hex(uint64_t v) {
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016llx", (unsigned long long)v);
  return buf;
}

// Everything that must be the same for a checkpoint to continue this run, by the flag
// that sets it.
json run_identity(const TrainArgs& a, const TokenizerSource& tok, const TrainData& data) {
  const tune::TrainerOptions o = trainer_options(a);
  return {{"--steps", a.steps},
          {"--batch", a.batch},
          {"--seq", a.seq},
          {"--accum", a.accum},
          {"--lr", o.schedule.peak_lr},
          {"--min-lr", o.schedule.min_lr},
          {"--warmup", o.schedule.warmup_steps},
          {"--weight-decay", a.weight_decay},
          {"--grad-clip", a.grad_clip},
          {"--beta1", a.beta1},
          {"--beta2", a.beta2},
          {"--seed", a.seed},
          {"model (--preset, --dim, ..., --init)", model_identity(a, *tok.tok)},
          {"tokenizer", hex(tok.fingerprint)},
          {"training data", hex(data.train.fingerprint())},
          {"validation data (--val-frac)", hex(data.val.fingerprint())}};
}

void check_resumable(const std::string& path, const std::string& stored, const json& want) {
  json have;
  try {
    have = json::parse(stored);
  } catch (const json::exception&) {
    fail(path, ": not a checkpoint of braid train (no run description)");
  }
  for (const auto& [key, value] : want.items()) {
    if (have.contains(key) && have[key] == value) continue;
    const std::string was = have.contains(key) ? have[key].dump() : "nothing";
    fail("checkpoint ", path, " belongs to another run: its ", key, " was ", was, ", this run's is ",
         value.dump(), " (rerun the command that made it, or give another --checkpoint file)");
  }
}

// Mean loss over every target of the rows, in batches of up to B rows.
double evaluate(tune::TrainPass& pass, const tune::TrainModel& model, const tune::PackedRows& rows, int B,
                int64_t* targets) {
  double sum = 0;
  int64_t n = 0;
  for (size_t r = 0; r < rows.rows(); r += size_t(B)) {
    std::vector<size_t> ids;
    for (size_t i = r; i < std::min(rows.rows(), r + size_t(B)); ++i) ids.push_back(i);
    const tune::Batch b = rows.batch(ids);
    const int64_t t = b.count_targets();
    if (t == 0) continue;
    sum += double(pass.forward(model, b)) * double(t);
    n += t;
  }
  if (targets) *targets = n;
  return n > 0 ? sum / double(n) : std::nan("");
}

DType parse_type(const std::string& t) {
  return t == "f16" ? DType::F16 : t == "bf16" ? DType::BF16 : DType::F32;
}

void train(TrainArgs& a) {
  validate_args(a);
  check_output_path(a.out, "-o");
  if (!a.checkpoint.empty()) check_output_path(a.checkpoint, "--checkpoint");

  ThreadPool pool(a.threads);
  const std::vector<tune::Document> docs = read_corpus(a.corpus);
  const tune::DocumentSplit split = tune::split_documents(docs, a.val_frac, a.seed);
  const TokenizerSource tok = resolve_tokenizer(a, split.train);
  const TrainData data = prepare_data(a, split, *tok.tok, pool);
  std::fprintf(stderr, "braid: tokenizer: %s (%d tokens)\nbraid: %s\n", tok.description.c_str(),
               tok.tok->n_vocab(), data.summary.c_str());

  const json identity = run_identity(a, tok, data);
  const bool resume = !a.checkpoint.empty() && fs::exists(a.checkpoint);
  std::unique_ptr<tune::Trainer> trainer;
  if (resume) {
    trainer = std::make_unique<tune::Trainer>(tune::Trainer::load(a.checkpoint, &pool));
    check_resumable(a.checkpoint, trainer->metadata(), identity);
    std::fprintf(stderr, "braid: resuming from %s at step %lld\n", a.checkpoint.c_str(),
                 (long long)trainer->steps());
  } else {
    trainer = std::make_unique<tune::Trainer>(initial_model(a, *tok.tok), trainer_options(a), &pool);
    trainer->metadata() = identity.dump();
  }
  tune::TrainModel& model = trainer->model();
  const tune::ModelConfig& c = model.config();
  check(tok.tok->n_vocab() <= c.vocab, "the tokenizer has ", tok.tok->n_vocab(),
        " tokens, more than the model's vocabulary of ", c.vocab);
  std::fprintf(stderr,
               "braid: model: %s, %d layers, dim %d, %d heads (%d kv), ffn %d, vocab %d, context %d: "
               "%.2fM parameters\n",
               c.arch == tune::Arch::kLlama ? "llama" : "gpt2", c.n_layer, c.dim, c.n_head, c.n_kv_head,
               c.ffn_dim, c.vocab, c.max_seq, double(model.num_params()) / 1e6);

  std::ofstream metrics;
  if (!a.metrics.empty()) {
    metrics.open(a.metrics, resume ? std::ios::app : std::ios::trunc);
    check(metrics.good(), a.metrics, ": cannot open for writing");
  }
  auto log_metrics = [&](const json& j) {
    if (metrics.is_open()) metrics << j.dump() << '\n' << std::flush;
  };

  tune::TrainPass pass(c, a.batch, a.seq, &pool, a.recompute);
  tune::BatchSampler sampler(data.train, a.batch, a.seed);
  const int64_t tokens_per_step = int64_t(a.batch) * a.seq * a.accum;
  const int64_t eval_every = a.eval_every >= 0 ? a.eval_every : std::max<int64_t>(1, a.steps / 5);
  const int64_t first = trainer->steps();
  TrainProgress progress(first, a.steps, tokens_per_step, a.log_every);
  std::vector<double> recent;  // this run's step losses, for the report
  bool stopped = false;
  {
    InterruptGuard guard;
    while (trainer->steps() < a.steps) {
      std::vector<tune::Batch> micro;
      for (int k = 0; k < a.accum; ++k) micro.push_back(sampler.batch(trainer->steps() * a.accum + k));
      const tune::StepStats s = trainer->step(pass, micro);
      check(!s.skipped, "training diverged at step ", trainer->steps() + 1,
            ": the gradients are not finite (try a lower --lr)");
      recent.push_back(s.loss);
      progress.step(s.step, s.loss, s.lr);
      log_metrics({{"step", s.step},
                   {"loss", s.loss},
                   {"lr", s.lr},
                   {"grad_norm", s.grad_norm},
                   {"tokens", s.step * tokens_per_step},
                   {"epoch", sampler.epoch_at((s.step) * a.accum)},
                   {"seconds", progress.seconds()}});
      const bool last = s.step == a.steps;
      if (eval_every > 0 && s.step % eval_every == 0 && !last && data.val.rows() > 0) {
        const double t0 = progress.seconds();
        const double v = evaluate(pass, model, data.val, a.batch, nullptr);
        progress.eval(s.step, v, progress.seconds() - t0);
        log_metrics({{"step", s.step}, {"val_loss", v}});
      }
      if (a.save_every > 0 && s.step % a.save_every == 0 && !last) trainer->save(a.checkpoint);
      if (g_interrupted) {
        progress.finish();
        if (a.checkpoint.empty()) fail("interrupted at step ", s.step, " of ", a.steps, " (no --checkpoint)");
        trainer->save(a.checkpoint);
        fail("interrupted at step ", s.step, " of ", a.steps, "; saved ", a.checkpoint,
             ": rerun the same command to continue");
      }
      if (a.stop_after > 0 && progress.steps_done() >= a.stop_after && !last) {
        stopped = true;
        break;
      }
    }
  }
  progress.finish();
  const double train_secs = progress.seconds(), tokens_per_second = progress.tokens_per_second();
  if (!a.checkpoint.empty()) trainer->save(a.checkpoint);
  if (stopped) {
    std::printf(
        "stopped after step %lld of %lld (--stop-after); saved %s: rerun the same command to continue\n",
        (long long)trainer->steps(), (long long)a.steps, a.checkpoint.c_str());
    return;
  }

  int64_t val_targets = 0;
  const double val_loss = data.val.rows() > 0 ? evaluate(pass, model, data.val, a.batch, &val_targets) : 0;
  if (data.val.rows() > 0) log_metrics({{"step", trainer->steps()}, {"val_loss", val_loss}});
  tune::ExportOptions eo;
  eo.type = parse_type(a.type);
  eo.name = a.name.empty() ? fs::path(a.out).stem().string() : a.name;
  tune::export_gguf(model, tok.gguf.get(), a.out, eo);

  std::printf("trained steps %lld-%lld of %lld in %s: %lld tokens, %.2f epochs, %.0f tokens/s\n",
              (long long)first + 1, (long long)trainer->steps(), (long long)a.steps,
              format_duration(train_secs).c_str(), (long long)(progress.steps_done() * tokens_per_step),
              sampler.epoch_at(trainer->steps() * a.accum), tokens_per_second);
  if (!recent.empty()) {
    const size_t n = std::min<size_t>(recent.size(), std::max<size_t>(1, recent.size() / 10));
    double mean = 0;
    for (size_t i = recent.size() - n; i < recent.size(); ++i) mean += recent[i];
    std::printf("train loss %.6f (mean of the last %zu steps), last step %.6f\n", mean / double(n), n,
                recent.back());
  }
  if (data.val.rows() > 0)
    std::printf("validation loss %.6f (perplexity %.2f) on %lld tokens\n", val_loss, std::exp(val_loss),
                (long long)val_targets);
  std::printf("wrote %s: %s, %d layers, dim %d, %.2fM parameters, vocab %d, %s\n", a.out.c_str(),
              c.arch == tune::Arch::kLlama ? "llama" : "gpt2", c.n_layer, c.dim,
              double(model.num_params()) / 1e6, c.vocab, a.type.c_str());
}

const char* kFooter = R"(
Data: --data takes files and folders (recursively; hidden files and symbolic links in
folders are skipped). Plain text is one document per file unless --doc-sep SEP splits
files at lines equal to SEP. Each document is trained as [BOS] text [EOS]; JSONL records
{"prompt", "completion"} as [BOS] prompt completion [EOS] with the loss on the completion
and EOS only. Documents are packed into rows of --seq tokens. --val-frac of the documents
(chosen by --seed) are held out for the validation loss; with too few documents, rows are.
Schedule: linear warmup over --warmup steps (default 5% of --steps) to --lr, then cosine
decay to --min-lr (default lr/10) at --steps. AdamW; no weight decay on norm weights.
Each step trains --batch x --accum rows of --seq tokens.
Presets (--dim etc. override):)";

Command reg("train", "Train a language model from scratch (or fine-tune one) on text", [](CLI::App& app) {
  auto a = std::make_shared<TrainArgs>();
  app.add_option("--data", a->corpus.paths, "Training text: files and/or folders")->required();
  add_corpus_options(app, a->corpus);
  app.add_option("--tokenizer", a->tokenizer, "GGUF file whose tokenizer to use (e.g. from train-tokenizer)");
  app.add_option("--vocab-size", a->vocab_size, "Train a byte-level BPE tokenizer of this size on the data")
      ->check(CLI::Range(1, 1 << 24));
  app.add_option("--pre", a->pre, "Pre-tokenizer of a trained tokenizer")->capture_default_str();
  app.add_option("--preset", a->preset, "Model shape: tiny, small (default), base");
  app.add_option("--dim", a->dim, "Embedding width")->check(CLI::Range(1, 1 << 16));
  app.add_option("--layers", a->layers, "Transformer blocks")->check(CLI::Range(1, 1024));
  app.add_option("--heads", a->heads, "Attention heads")->check(CLI::Range(1, 1024));
  app.add_option("--kv-heads", a->kv_heads, "Key/value heads (grouped-query attention)")
      ->check(CLI::Range(1, 1024));
  app.add_option("--ffn", a->ffn, "MLP hidden width")->check(CLI::Range(1, 1 << 18));
  app.add_option("--ctx", a->ctx, "Context length the model is made for (default: max(preset, --seq))")
      ->check(CLI::Range(2, 1 << 20));
  app.add_flag("--tie-embeddings", a->tie_embeddings, "Share the token embeddings with the output head");
  app.add_option("--init", a->init, "Start from this model (Hugging Face folder or GGUF) instead of random");
  app.add_option("--steps", a->steps, "Optimizer steps")->capture_default_str();
  app.add_option("--batch", a->batch, "Rows per micro-batch")->capture_default_str();
  app.add_option("--seq", a->seq, "Tokens per row")->capture_default_str();
  app.add_option("--accum", a->accum, "Micro-batches per step (gradient accumulation)")
      ->capture_default_str();
  app.add_option("--lr", a->lr, "Peak learning rate")->capture_default_str();
  app.add_option("--min-lr", a->min_lr, "Final learning rate (default: lr/10)");
  app.add_option("--warmup", a->warmup, "Warmup steps (default: 5% of --steps)");
  app.add_option("--weight-decay", a->weight_decay, "AdamW weight decay")->capture_default_str();
  app.add_option("--beta1", a->beta1, "AdamW beta1")->capture_default_str();
  app.add_option("--beta2", a->beta2, "AdamW beta2")->capture_default_str();
  app.add_option("--grad-clip", a->grad_clip, "Max global gradient norm; 0 = off")->capture_default_str();
  app.add_option("--seed", a->seed, "Seed for initialisation, the split and batch order")
      ->capture_default_str();
  app.add_option("--val-frac", a->val_frac, "Fraction of documents held out for validation")
      ->capture_default_str();
  add_threads_option(app, a->threads);
  app.add_flag("--recompute", a->recompute, "Recompute activations in the backward pass (less memory)");
  app.add_option("--checkpoint", a->checkpoint, "Training state file: resumed from when it exists");
  app.add_option("--save-every", a->save_every, "Save the checkpoint every N steps (0: only at the end)")
      ->capture_default_str();
  app.add_option("--stop-after", a->stop_after, "Stop after N steps of this run, saving the checkpoint");
  app.add_option("--eval-every", a->eval_every,
                 "Validation loss every N steps (default: 5 times; 0: at the end)");
  app.add_option("--log-every", a->log_every, "Progress line every N steps when stderr is not a terminal");
  app.add_option("--metrics", a->metrics,
                 "Append per-step JSON lines (loss, lr, val_loss, ...) to this file");
  app.add_option("-o,--output", a->out, "Output GGUF model")->required();
  app.add_option("--type", a->type, "Weight type of the output: f32, f16, bf16")->capture_default_str();
  app.add_option("--name", a->name, "general.name of the output (default: its file name)");
  std::string footer = kFooter;
  for (const Preset& p : presets())
    footer += cat("\n  ", p.name, ": dim ", p.dim, ", ", p.layers, " layers, ", p.heads, " heads (",
                  p.kv_heads, " kv), ffn ", p.ffn, ", context ", p.ctx);
  app.footer(footer + "\n");
  app.callback([a] { train(*a); });
});

}  // namespace
}  // namespace braid::cli
