// The progress display of `braid train` on stderr: one line rewritten in place after every
// step on a terminal, a plain line every `log_every` steps otherwise (logs, CI).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace braid::cli {

// "0:42", "12:05", "1:02:03".
std::string format_duration(double seconds);

class TrainProgress {
 public:
  // Steps first_step + 1 ... total_steps are to come; each trains tokens_per_step tokens.
  // log_every <= 0 picks about 20 lines per run.
  TrainProgress(int64_t first_step, int64_t total_steps, int64_t tokens_per_step, int64_t log_every);
  ~TrainProgress();

  // After optimizer step `step` (1-based) with its loss and learning rate.
  void step(int64_t step, double loss, double lr);
  // After an evaluation that took `seconds` (not counted in tokens/s); its loss is shown
  // with the next steps.
  void eval(int64_t step, double val_loss, double seconds);
  // A line of its own (clearing the bar first on a terminal).
  void note(const std::string& line);
  // Ends the bar's line on a terminal.
  void finish();

  double seconds() const;            // since construction
  double tokens_per_second() const;  // training tokens over training time, this run
  int64_t steps_done() const { return done_; }

 private:
  void draw(int64_t step, double loss, double lr);

  std::chrono::steady_clock::time_point start_;
  int64_t first_, total_, tokens_per_step_, log_every_;
  int64_t done_ = 0;
  double val_loss_ = -1;
  double eval_seconds_ = 0;
  bool tty_;
  bool bar_open_ = false;
};

}  // namespace braid::cli
