#include "braid/progress.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

namespace braid {

namespace {

constexpr double kRedrawSeconds = 0.1;  // terminal redraw interval
constexpr int kBarWidth = 25;

bool progress_disabled_by_env() {
  const char* v = std::getenv("BRAID_PROGRESS");
  return v != nullptr && (std::strcmp(v, "0") == 0 || std::strcmp(v, "off") == 0);
}

// "0.93 / 2.20 GiB": both amounts in the unit that suits the total.
std::string amounts(uint64_t done, uint64_t total, Progress::Unit unit) {
  char buf[96];
  if (unit == Progress::Unit::kItems) {
    std::snprintf(buf, sizeof buf, "%llu / %llu", static_cast<unsigned long long>(done),
                  static_cast<unsigned long long>(total));
    return buf;
  }
  const char* name = "B";
  double div = 1;
  if (total >= (uint64_t{1} << 30)) {
    name = "GiB";
    div = 1073741824.0;
  } else if (total >= (uint64_t{1} << 20)) {
    name = "MiB";
    div = 1048576.0;
  } else if (total >= (uint64_t{1} << 10)) {
    name = "KiB";
    div = 1024.0;
  }
  std::snprintf(buf, sizeof buf, "%.2f / %.2f %s", done / div, total / div, name);
  return buf;
}

}  // namespace

Progress::Progress(std::string label, uint64_t total, Unit unit, uint64_t min_total, std::FILE* out)
    : label_(std::move(label)),
      total_(total),
      unit_(unit),
      out_(out),
      start_(std::chrono::steady_clock::now()) {
  enabled_ = out_ != nullptr && total_ > 0 && total_ >= min_total && !progress_disabled_by_env();
  tty_ = enabled_ && isatty(fileno(out_));
}

Progress::~Progress() { finish(); }

double Progress::elapsed() const {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
}

void Progress::add(uint64_t n) {
  done_.fetch_add(n, std::memory_order_relaxed);
  if (enabled_) maybe_print(false);
}

void Progress::set(uint64_t done) {
  done_.store(done, std::memory_order_relaxed);
  if (enabled_) maybe_print(false);
}

void Progress::finish() {
  if (!enabled_) return;
  maybe_print(true);
}

std::string Progress::format_line(const std::string& label, uint64_t done, uint64_t total, Unit unit,
                                  double seconds, bool bar) {
  if (done > total) done = total;
  const double frac = total ? static_cast<double>(done) / static_cast<double>(total) : 1.0;
  std::string s = label;
  char buf[64];
  std::snprintf(buf, sizeof buf, " %3d%%", static_cast<int>(frac * 100));
  s += buf;
  if (bar) {
    const int filled = static_cast<int>(frac * kBarWidth);
    s += " [";
    for (int i = 0; i < kBarWidth; ++i) s += i < filled ? '=' : (i == filled ? '>' : ' ');
    s += ']';
  }
  s += ' ';
  s += amounts(done, total, unit);
  std::snprintf(buf, sizeof buf, "  %.1f s", seconds);
  s += buf;
  // An estimate only once there is something to extrapolate from.
  if (done > 0 && done < total && seconds > 0.5) {
    std::snprintf(buf, sizeof buf, "  eta %.1f s", seconds * (1.0 - frac) / frac);
    s += buf;
  }
  return s;
}

void Progress::maybe_print(bool final) {
  // Another thread printing right now will show this progress soon enough; never wait.
  std::unique_lock<std::mutex> lock(mu_, std::defer_lock);
  if (final) {
    lock.lock();
  } else if (!lock.try_lock()) {
    return;
  }
  if (finished_) return;
  const uint64_t done = std::min(done_.load(std::memory_order_relaxed), total_);
  const double t = elapsed();
  if (tty_) {
    if (!final && last_print_s_ >= 0 && t - last_print_s_ < kRedrawSeconds) return;
    last_print_s_ = t;
    // Pad so a shorter line fully covers the previous one.
    std::fprintf(out_, "\r%-100s%s", format_line(label_, done, total_, unit_, t, true).c_str(),
                 final ? "\n" : "");
  } else {
    const int tenth = static_cast<int>(done * 10 / total_);
    if (!final && tenth == last_tenth_) return;
    if (final && tenth == last_tenth_ && tenth == 10) {  // 100% already printed
      finished_ = true;
      return;
    }
    last_tenth_ = tenth;
    std::fprintf(out_, "%s\n", format_line(label_, done, total_, unit_, t, false).c_str());
  }
  std::fflush(out_);
  if (final) finished_ = true;
}

void StageProgress::operator()(const char* stage, uint64_t done, uint64_t total) {
  if (!bar_ || stage_ != stage || bar_->total() != total) {
    if (bar_) bar_->finish();
    stage_ = stage;
    bar_ = std::make_unique<Progress>(stage_, total, unit_, min_total_);
  }
  bar_->set(done);
}

void StageProgress::finish() {
  if (bar_) bar_->finish();
}

}  // namespace braid
