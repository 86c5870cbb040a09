#include "cli/train_progress.h"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace braid::cli {

std::string format_duration(double seconds) {
  const int64_t s = seconds > 0 && std::isfinite(seconds) ? int64_t(seconds + 0.5) : 0;
  char buf[32];
  if (s >= 3600)
    std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", (long long)(s / 3600), (long long)(s / 60 % 60),
                  (long long)(s % 60));
  else
    std::snprintf(buf, sizeof buf, "%lld:%02lld", (long long)(s / 60), (long long)(s % 60));
  return buf;
}

TrainProgress::TrainProgress(int64_t first_step, int64_t total_steps, int64_t tokens_per_step,
                             int64_t log_every)
    : start_(std::chrono::steady_clock::now()),
      first_(first_step),
      total_(total_steps),
      tokens_per_step_(tokens_per_step),
      log_every_(log_every > 0 ? log_every : std::max<int64_t>(1, (total_steps + 19) / 20)),
      tty_(isatty(STDERR_FILENO) != 0) {}

TrainProgress::~TrainProgress() { finish(); }

double TrainProgress::seconds() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

double TrainProgress::tokens_per_second() const {
  const double s = seconds() - eval_seconds_;
  return s > 0 ? double(done_ * tokens_per_step_) / s : 0.0;
}

void TrainProgress::step(int64_t step, double loss, double lr) {
  ++done_;
  if (tty_ || step % log_every_ == 0 || step == total_ || step == first_ + 1) draw(step, loss, lr);
}

void TrainProgress::eval(int64_t step, double val_loss, double seconds) {
  val_loss_ = val_loss;
  eval_seconds_ += seconds;
  char buf[96];
  std::snprintf(buf, sizeof buf, "braid: step %lld: validation loss %.4f", (long long)step, val_loss);
  note(buf);
}

void TrainProgress::note(const std::string& line) {
  if (bar_open_) std::fputs("\r\033[K", stderr);
  bar_open_ = false;
  std::fprintf(stderr, "%s\n", line.c_str());
  std::fflush(stderr);
}

void TrainProgress::finish() {
  if (bar_open_) std::fputc('\n', stderr);
  bar_open_ = false;
  std::fflush(stderr);
}

void TrainProgress::draw(int64_t step, double loss, double lr) {
  const double s = seconds();
  const double left = done_ > 0 ? s / double(done_) * double(total_ - step) : 0.0;
  const double frac = total_ > 0 ? double(step) / double(total_) : 1.0;
  std::string val;
  if (val_loss_ >= 0) {
    char v[32];
    std::snprintf(v, sizeof v, " | val %.3f", val_loss_);
    val = v;
  }
  char line[256];
  if (tty_) {
    constexpr int kWidth = 20;
    const int filled = std::clamp(int(frac * kWidth), 0, kWidth);
    const std::string bar = std::string(size_t(filled), '#') + std::string(size_t(kWidth - filled), '.');
    std::snprintf(line, sizeof line,
                  "\r\033[Kstep %lld/%lld [%s] %3d%% | loss %.4f%s | lr %.2e | %.0f tok/s | %s, %s left",
                  (long long)step, (long long)total_, bar.c_str(), int(frac * 100), loss, val.c_str(), lr,
                  tokens_per_second(), format_duration(s).c_str(), format_duration(left).c_str());
    bar_open_ = true;
    std::fputs(line, stderr);
  } else {
    std::snprintf(line, sizeof line,
                  "braid: step %lld/%lld (%d%%) | loss %.4f%s | lr %.2e | %.0f tok/s | %s elapsed, %s left\n",
                  (long long)step, (long long)total_, int(frac * 100), loss, val.c_str(), lr,
                  tokens_per_second(), format_duration(s).c_str(), format_duration(left).c_str());
    std::fputs(line, stderr);
  }
  std::fflush(stderr);
}

}  // namespace braid::cli
