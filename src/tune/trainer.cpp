// Trainer: one optimizer step over accumulated micro-batches.
#include <cmath>

#include "braid/error.h"
#include "braid/tune_trainer.h"

namespace braid::tune {

Trainer::Trainer(TrainModel model, const TrainerOptions& options, ThreadPool* pool)
    : model_(std::move(model)),
      options_(options),
      pool_(pool),
      adamw_(model_.num_params(), options.adamw),
      rng_(options.seed) {
  if (!options_.decay_all) {
    std::vector<std::pair<size_t, size_t>> ranges;
    for (const ParamTensor& t : model_.tensors())
      if (t.shape.size() == 1) ranges.emplace_back(t.offset, t.offset + t.size);
    adamw_.set_no_decay(std::move(ranges));
  }
}

StepStats Trainer::step(TrainPass& pass, std::span<const Batch> micro_batches) {
  StepStats s;
  for (const Batch& b : micro_batches) s.targets += b.count_targets();
  s.step = steps();
  if (s.targets == 0) return s;
  model_.zero_grads();
  double loss_sum = 0.0;
  for (const Batch& b : micro_batches) {
    const int64_t n = b.count_targets();
    if (n == 0) continue;
    loss_sum += double(pass.forward_backward(model_, b, double(s.targets))) * double(n);
  }
  s.loss = static_cast<float>(loss_sum / double(s.targets));
  s.grad_norm = clip_grad_norm(model_.grads(), options_.grad_clip, pool_);
  if (!std::isfinite(s.grad_norm)) {
    s.skipped = true;
    return s;
  }
  s.lr = options_.schedule.at(steps());
  adamw_.step(model_.params(), model_.grads(), s.lr, pool_);
  s.step = steps();
  return s;
}

}  // namespace braid::tune
