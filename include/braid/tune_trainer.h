// The training loop's state in one object: the model, AdamW, the learning-rate
// schedule, the step counter and the random generator, with checkpoints that save all
// of it, so a resumed run continues exactly as an uninterrupted one would.
//
//   braid::tune::TrainerOptions opt;
//   opt.schedule = {.peak_lr = 1e-3, .warmup_steps = 100, .total_steps = 5000};
//   braid::tune::Trainer trainer(braid::tune::TrainModel::load_hf(dir), opt, &pool);
//   braid::tune::TrainPass pass(trainer.model().config(), B, T, &pool);
//   for (...) {
//     std::vector<Batch> micro = ...;          // gradient accumulation: several batches
//     auto stats = trainer.step(pass, micro);  // one optimizer step
//     if (want) trainer.save("run.ckpt");
//   }
//   auto resumed = braid::tune::Trainer::load("run.ckpt", &pool);
#pragma once

#include <cstdint>
#include <span>
#include <string>

#include "braid/thread_pool.h"
#include "braid/train.h"
#include "braid/tune_optim.h"
#include "braid/tune_rng.h"

namespace braid::tune {

struct TrainerOptions {
  AdamWConfig adamw;
  LrSchedule schedule;
  double grad_clip = 1.0;  // max global gradient norm; <= 0: no clipping
  // Weight decay on every parameter (what torch.optim.AdamW(model.parameters()) does);
  // false exempts vectors (norm weights, biases) as llm.c and nanoGPT do.
  bool decay_all = true;
  uint64_t seed = 0;  // seeds rng()
};

struct StepStats {
  int64_t step = 0;      // optimizer steps done, including this one
  float loss = 0;        // mean loss over the step's targets, before the update
  double grad_norm = 0;  // before clipping
  double lr = 0;
  int64_t targets = 0;   // tokens that counted in the loss
  bool skipped = false;  // gradients were not finite: no update was made
};

class Trainer {
 public:
  // `pool` (may be null) runs the optimizer; the TrainPass given to step() has its own.
  Trainer(TrainModel model, const TrainerOptions& options, ThreadPool* pool = nullptr);

  // One optimizer step on the micro-batches together (gradient accumulation): zeroes
  // the gradients, runs forward/backward on each with the loss normalised by the total
  // target count (so the result equals one batch holding them all), clips, and applies
  // AdamW at schedule.at(steps()). Micro-batches without targets are skipped; when none
  // has any, nothing changes and the returned stats have targets == 0. When the gradient
  // norm is not finite (inf/NaN), the parameters and step count stay as they were and
  // the stats say skipped.
  StepStats step(TrainPass& pass, std::span<const Batch> micro_batches);

  TrainModel& model() { return model_; }
  const TrainModel& model() const { return model_; }
  const TrainerOptions& options() const { return options_; }
  AdamW& optimizer() { return adamw_; }
  int64_t steps() const { return adamw_.steps(); }
  Rng& rng() { return rng_; }  // for the caller's batch sampling; saved in checkpoints

  // Free-form text (for example JSON with the data set's path) saved with checkpoints.
  std::string& metadata() { return metadata_; }

  // Writes parameters, AdamW moments, step, rng state, options and metadata to `path`
  // (through a temporary file and a rename, so a crash never leaves a torn checkpoint).
  void save(const std::string& path) const;
  // Reads a checkpoint written by save(); throws braid::Error naming the file when it is
  // not one, is truncated, or fails its checksum.
  static Trainer load(const std::string& path, ThreadPool* pool = nullptr);

 private:
  TrainModel model_;
  TrainerOptions options_;
  ThreadPool* pool_;
  AdamW adamw_;
  Rng rng_;
  std::string metadata_;
};

}  // namespace braid::tune
