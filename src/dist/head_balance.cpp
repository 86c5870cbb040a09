// Runtime balancing: every decode token's reply carries each stage's compute time. The
// first balance_window tokens after a (re)plan set each worker's baseline (what its
// layers take in this layout: the plan's expectation, calibrated); a worker whose time
// then stays beyond balance_margin of it (slower: it throttles or got busy; or faster)
// for balance_window tokens in a row makes the supervisor re-plan with the measured
// speeds. A different plan is put in place between two decode steps: layers move with
// their KV caches. The old owner of each layer that changes hands sends the rows of
// every live sequence (KV_ROWS, relayed by the head over the control links, which stay
// up while the data links are relinked); layers that stay keep their caches (ASSIGN
// keep_kv). Nothing is recomputed, so the output does not change. (After a lost worker
// its caches are gone: recovery replays instead, head_recover.cpp. So does a move that
// fails half-way.) Hysteresis: the margin (and balance_min_ms, so that noise on tiny
// stages does not count), the window, and a new baseline after each move.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>

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

// Who runs each layer under a plan: a worker index, or -1 for the head.
std::vector<int> owners(const PlanResult& p, int n_layers) {
  std::vector<int> o(static_cast<size_t>(n_layers), -1);
  for (const auto& part : p.parts)
    for (int l = part.first; l < part.last; ++l) o[static_cast<size_t>(l)] = part.worker;
  return o;
}

// KV rows per KV_ROWS frame: about 16 MiB, far below the frame limit.
int positions_per_frame(int layers, int kv_dim) {
  const int64_t per_position = 2 * int64_t{layers} * kv_dim * static_cast<int64_t>(sizeof(float));
  return static_cast<int>(
      std::clamp<int64_t>((int64_t{16} << 20) / std::max<int64_t>(per_position, 1), 1, 1 << 20));
}

}  // namespace

std::string RingImpl::move_with_kv(const PlanResult& next) {
  const auto t0 = std::chrono::steady_clock::now();
  const int n_layers = model->config().n_layers, kv_dim = model->config().kv_dim();
  const std::vector<int> from = owners(plan, n_layers), to = owners(next, n_layers);
  // Runs of consecutive layers that go from one owner to the same other one.
  struct Run {
    int first, last, from, to;
  };
  std::vector<Run> runs;
  for (int l = 0; l < n_layers; ++l) {
    const int a = from[static_cast<size_t>(l)], b = to[static_cast<size_t>(l)];
    if (a == b) continue;
    if (!runs.empty() && runs.back().last == l && runs.back().from == a && runs.back().to == b)
      ++runs.back().last;
    else
      runs.push_back({l, l + 1, a, b});
  }
  std::vector<std::pair<uint64_t, int>> seqs;  // every live sequence and the positions it holds
  {
    std::lock_guard<std::mutex> lock(seq_mu);
    for (const auto& [seq, log] : sequences)
      if (!log->tokens.empty()) seqs.emplace_back(seq, static_cast<int>(log->tokens.size()));
  }

  // Out of the old owners first (ASSIGN replaces their stages), into the head's memory.
  struct Piece {
    const Run* run;
    uint64_t seq;
    int pos0, n;
    std::vector<float> rows;
  };
  std::vector<Piece> pieces;
  for (const Run& r : runs) {
    const int chunk = positions_per_frame(r.last - r.first, kv_dim);
    for (const auto& [seq, n_pos] : seqs) {
      for (int pos0 = 0; pos0 < n_pos; pos0 += chunk) {
        Piece p{&r, seq, pos0, std::min(chunk, n_pos - pos0), {}};
        if (r.from < 0) {
          p.rows = stage->export_kv(seq, r.first, r.last, p.pos0, p.n);
        } else {
          RemoteWorker& w = *workers[static_cast<size_t>(r.from)];
          proto::KvRows ask;
          ask.kind = proto::KvRowsKind::kFetch;
          ask.first_layer = static_cast<uint32_t>(r.first);
          ask.last_layer = static_cast<uint32_t>(r.last);
          ask.pos0 = static_cast<uint32_t>(p.pos0);
          ask.n_pos = static_cast<uint32_t>(p.n);
          proto::KvRows got =
              expect<proto::KvRows>(w.request(make_frame(ask, seq), opt.io_timeout), w.label());
          check(got.kind == proto::KvRowsKind::kRows && got.first_layer == ask.first_layer &&
                    got.last_layer == ask.last_layer && got.pos0 == ask.pos0 && got.n_pos == ask.n_pos &&
                    got.kv_dim == static_cast<uint32_t>(kv_dim),
                w.label(), " sent other KV rows than asked for");
          p.rows = std::move(got.data);
        }
        pieces.push_back(std::move(p));
      }
    }
  }
  uint64_t bytes = 0;
  for (const Piece& p : pieces) bytes += p.rows.size() * sizeof(float);

  plan = next;
  apply_plan([&] {
    // Into the new owners, whose stages now cover the layers (and hold the positions
    // before each piece: pieces of a sequence go in order).
    for (Piece& p : pieces) {
      const Run& r = *p.run;
      if (r.to < 0) {
        stage->import_kv(p.seq, r.first, r.last, p.pos0, p.n, p.rows.data(), p.rows.size());
        continue;
      }
      RemoteWorker& w = *workers[static_cast<size_t>(r.to)];
      proto::KvRows put;
      put.kind = proto::KvRowsKind::kRows;
      put.first_layer = static_cast<uint32_t>(r.first);
      put.last_layer = static_cast<uint32_t>(r.last);
      put.pos0 = static_cast<uint32_t>(p.pos0);
      put.n_pos = static_cast<uint32_t>(p.n);
      put.kv_dim = static_cast<uint32_t>(kv_dim);
      put.data = std::move(p.rows);
      const proto::KvRows ok =
          expect<proto::KvRows>(w.request(make_frame(std::move(put), p.seq), opt.io_timeout), w.label());
      check(ok.kind == proto::KvRowsKind::kStored, w.label(), " did not store the KV rows");
    }
  });
  const double took =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::string layers;
  for (const Run& r : runs) layers += cat(layers.empty() ? "" : ", ", "[", r.first, ", ", r.last, ")");
  return cat("KV of ", seqs.size(), seqs.size() == 1 ? " sequence" : " sequences", ", layers ", layers,
             " transferred: ", bytes, " bytes in ", ms(took), " ms (no replay)");
}

void RingImpl::note_decode(const std::vector<std::pair<int, double>>& times) {
  const int window = opt.balance_window;
  std::lock_guard<std::mutex> lock(balance_mu);
  ++decode_tokens;
  // Also what a re-plan prices workers without a profile by (head_speed.cpp).
  for (const auto& [w, t] : times) record_run_time(*workers[static_cast<size_t>(w)], t);
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
  // speed its profile says. (One without a measured profile, after a fixed split, is
  // priced from its recent stage times, which show its current speed.)
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
  std::string kv;
  if (problem.empty() && !same(next, plan)) {
    try {
      stop_chains("moving layers");
      kv = move_with_kv(next);  // sets plan = next once the old owners sent their rows
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
    log(cat("balance: ", why, "; moved layers: ", before, " => ", describe_locked(), "; ", kv, "; took ",
            took, " ms"));
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
