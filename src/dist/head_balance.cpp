// Runtime balancing: every decode token's reply carries each stage's compute time. The
// first balance_window tokens after a (re)plan set each worker's baseline (what its
// layers take in this layout: the plan's expectation, calibrated); a worker whose time
// then stays beyond balance_margin of it (slower: it throttles or got busy; or faster)
// for balance_window tokens in a row makes the supervisor re-plan with the measured
// speeds. A different plan is put in place between two decode steps: layers move, and
// their KV caches are rebuilt by replaying the live sequences (as after a lost worker),
// so the output does not change. Hysteresis: the margin (and balance_min_ms, so that
// noise on tiny stages does not count), the window, and a new baseline after each move.
#include <algorithm>
#include <chrono>

#include "braid/error.h"
#include "dist/head_ring.h"

namespace braid::dist {
namespace {

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

std::string ms(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", x);
  return buf;
}

}  // namespace

void RingImpl::note_decode(const std::vector<std::pair<int, double>>& times) {
  const int window = opt.balance_window;
  std::lock_guard<std::mutex> lock(balance_mu);
  ++decode_tokens;
  if (window <= 0) return;
  int culprit = -1;
  for (const auto& [w, t] : times) {
    StageClock& c = clocks[w];
    if (static_cast<int>(c.first.size()) < window) {
      c.first.push_back(t);
      if (static_cast<int>(c.first.size()) == window) c.baseline_ms = median(c.first);
      continue;
    }
    c.recent.push_back(t);
    if (static_cast<int>(c.recent.size()) > window) c.recent.erase(c.recent.begin());
    const double b = c.baseline_ms;
    const bool slower = t > b * opt.balance_margin && t - b >= opt.balance_min_ms;
    const bool faster = t * opt.balance_margin < b && b - t >= opt.balance_min_ms;
    c.off = slower || faster ? c.off + 1 : 0;
    if (c.off >= window && culprit < 0) culprit = w;
  }
  if (culprit < 0 || decode_tokens < quiet_until) return;
  quiet_until = decode_tokens + 2 * static_cast<int64_t>(window);  // until the supervisor acts

  const StageClock& c = clocks[culprit];
  const double now = median(c.recent);
  std::lock_guard<std::mutex> state_lock(state_mu);
  if (state != State::kRunning || !balance_request.empty()) return;
  balance_ratio.clear();
  for (const auto& [w, k] : clocks)
    if (k.baseline_ms > 0 && static_cast<int>(k.recent.size()) == window)
      balance_ratio[w] = std::max(1e-3, median(k.recent) / k.baseline_ms);
  balance_request =
      cat(workers[static_cast<size_t>(culprit)]->label(), " takes ", ms(now), " ms per token, ",
          ms(now / c.baseline_ms), "x the ", ms(c.baseline_ms), " ms it took after the last plan, for ",
          window, " tokens (decode token ", decode_tokens, ")");
  state_cv.notify_all();
}

void RingImpl::reset_clocks() {
  std::lock_guard<std::mutex> lock(balance_mu);
  clocks.clear();
  quiet_until = decode_tokens;
}

void RingImpl::rebalance(const std::string& why) {
  const auto t0 = std::chrono::steady_clock::now();
  std::map<int, double> ratio;
  {
    std::lock_guard<std::mutex> lock(state_mu);
    if (stopping.load() || state != State::kRunning) return;
    ratio = balance_ratio;
    // New batches wait; the ones in flight finish (between two decode steps).
    state = State::kRecovering;
  }
  std::unique_lock<std::shared_mutex> topo(topo_mu);
  // A worker that takes r times what it took after the last plan runs at 1/r of the
  // speed its profile says. (One without a profile, after a fixed split, is measured
  // now, at its current speed.)
  for (const auto& [w, r] : ratio) {
    DeviceProfile& p = workers[static_cast<size_t>(w)]->profile;
    for (double& x : p.layer_ms) x *= r;
    p.output_ms *= r;
  }
  const std::string before = describe_locked();
  PlanResult next;
  std::string problem;
  try {
    next = plan_survivors();
  } catch (const Error& e) {
    problem = e.what();
  }
  auto same = [&](const PlanResult& a, const PlanResult& b) {
    if (a.output_at_head != b.output_at_head || a.parts.size() != b.parts.size()) return false;
    for (size_t i = 0; i < a.parts.size(); ++i)
      if (a.parts[i].worker != b.parts[i].worker || a.parts[i].first != b.parts[i].first ||
          a.parts[i].last != b.parts[i].last)
        return false;
    return true;
  };
  bool moved = false, broken = false;
  if (problem.empty() && !same(next, plan)) {
    try {
      stop_chains("moving layers");
      plan = next;
      apply_plan();
      moved = true;
    } catch (const Error& e) {
      problem = e.what();
      broken = true;
    }
  }
  const int64_t took =
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  if (!moved) reset_clocks();  // a new baseline for the layout that stays
  std::lock_guard<std::mutex> lock(state_mu);
  if (moved) {
    log(cat("balance: ", why, "; moved layers: ", before, " => ", describe_locked(), "; took ", took, " ms"));
    state = failures.empty() ? State::kRunning : State::kRecovering;
  } else if (!broken) {
    log(cat("balance: ", why, "; the plan stays ", before, problem.empty() ? "" : " (", problem,
            problem.empty() ? "" : ")"));
    state = failures.empty() ? State::kRunning : State::kRecovering;
  } else {
    // Moving failed half-way: the ring needs a rebuild, which finds out why.
    log(cat("balance: ", why, "; could not move layers: ", problem));
    failures.push_back({-1, problem, 0});
    state = State::kRecovering;
  }
  state_cv.notify_all();
}

}  // namespace braid::dist
