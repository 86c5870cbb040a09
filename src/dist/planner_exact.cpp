// The exact solver (docs/planner.md, "Exact solver"): a depth-first enumeration of every
// ordered sequence of distinct devices, with a dynamic program over layer boundaries for
// the split. Each DP label is a (latency, bottleneck) pair; the labels per boundary that
// no other label beats keep the weighted objective exact, and a label whose partial
// objective plus a lower bound on the rest already reaches the best plan found is
// dropped (costs only grow along the ring).
#include <algorithm>
#include <limits>
#include <vector>

#include "braid/error.h"
#include "braid/planner.h"
#include "dist/planner_model.h"

namespace braid::planner {
namespace {

struct Label {
  double sum;    // latency so far: every busy time of the completed stages
  double max;    // largest busy time so far
  int prev_b;    // where the previous stage ended (this stage's first layer)
  int prev_idx;  // index of the previous label at prev_b
};

using Level = std::vector<std::vector<Label>>;  // [boundary] -> Pareto front

class ExactSearch {
 public:
  explicit ExactSearch(const detail::CostModel& c)
      : c_(c),
        wl_(c.options().latency_weight),
        wb_(c.options().bottleneck_weight),
        used_(c.n_devices(), false) {
    // rest_[a]: the least compute layers [a, n) can take on any devices, a lower bound
    // on what a partial plan ending at a still adds to the latency.
    rest_.assign(c.n_layers() + 1, 0.0);
    for (int l = c.n_layers() - 1; l >= 0; --l) {
      double best = kInf;
      for (int d = 0; d < c.n_devices(); ++d) best = std::min(best, c.compute_ms(d, l, l + 1));
      rest_[l] = rest_[l + 1] + best;
    }
  }

  void run() {
    for (int variant = 0; variant < 2; ++variant) {
      if (variant == 1 && !c_.options().allow_output_at_head) break;
      out_head_ = variant == 1;
      Level start(c_.n_layers() + 1);
      start[0].push_back({0, 0, -1, -1});
      levels_.push_back(std::move(start));
      for (int d = 0; d < c_.n_devices(); ++d) extend_with(d);
      levels_.clear();
    }
  }

  bool found() const { return best_objective_ < kInf; }
  const Assignment& best() const { return best_; }

 private:
  static constexpr double kInf = std::numeric_limits<double>::infinity();

  double objective(double sum, double max) const { return wl_ * sum + wb_ * max; }

  // Adds device d as the next stage (the one after order_'s last) and explores.
  void extend_with(int d) {
    order_.push_back(d);
    used_[d] = true;
    const int stage = static_cast<int>(order_.size());
    terminate();  // d is the last stage
    if (stage < c_.n_layers()) {
      for (int e = 0; e < c_.n_devices(); ++e) {
        if (used_[e]) continue;
        if (!build_level(c_.hidden_ms(d, e))) continue;  // nothing feasible to extend
        extend_with(e);
        levels_.pop_back();
      }
    }
    used_[d] = false;
    order_.pop_back();
  }

  // Busy time and memory that the current stage's device has on top of its layers.
  double head_extra_ms() const {
    return c_.hidden_ms(c_.head(), order_.front()) + (out_head_ ? c_.output_ms(c_.head()) : 0);
  }
  uint64_t head_extra_bytes() const {
    return c_.embed_bytes() + (out_head_ ? c_.output_bytes(c_.head()) : 0);
  }

  // Computes the next level: the current stage ends at each boundary b < n_layers and
  // sends its hidden state for send_ms. Returns false when no label survives.
  bool build_level(double send_ms) {
    const int d = order_.back();
    const bool is_head = d == c_.head();
    const double extra_ms = send_ms + (is_head ? head_extra_ms() : 0);
    const uint64_t extra_bytes = is_head ? head_extra_bytes() : 0;
    const Level& prev = levels_.back();
    const int n = c_.n_layers();
    Level next(n + 1);
    bool any = false;
    const int free_devices = c_.n_devices() - static_cast<int>(order_.size());
    std::vector<Label> cand;
    for (int b = 1; b < n; ++b) {
      cand.clear();
      // Layers [b, n) still add at least rest_[b] in all, and one of the free devices
      // at least its share of it.
      const double rest = rest_[b], rest_max = rest_[b] / free_devices;
      for (int a = 0; a < b; ++a) {
        if (prev[a].empty()) continue;
        if (!c_.fits(d, c_.layers_bytes(a, b) + extra_bytes)) continue;
        const double busy = c_.compute_ms(d, a, b) + extra_ms;
        for (size_t i = 0; i < prev[a].size(); ++i) {
          const Label& l = prev[a][i];
          Label x{l.sum + busy, std::max(l.max, busy), a, static_cast<int>(i)};
          if (objective(x.sum + rest, std::max(x.max, rest_max)) >= best_objective_) {
            continue;  // cannot improve on the best plan so far
          }
          cand.push_back(x);
        }
      }
      pareto(cand, next[b]);
      any = any || !next[b].empty();
    }
    levels_.push_back(std::move(next));
    if (!any) {
      levels_.pop_back();
      return false;
    }
    return true;
  }

  // Keeps the labels that may still lead to the best plan. What follows a label adds
  // the same R to the latency and raises the bottleneck to at least the same M for
  // every label at this boundary, so label x beats label y whenever
  //   x.sum <= y.sum  and  wl * x.sum + wb * x.max <= wl * y.sum + wb * y.max
  // (check M <= y.max, y.max <= M <= x.max and M >= x.max in turn). Sorted by latency,
  // a label survives only if its weighted objective beats every cheaper one; with one
  // weight zero that leaves a single label.
  void pareto(std::vector<Label>& cand, std::vector<Label>& out) const {
    if (cand.empty()) return;
    if (wl_ == 0) {
      out.push_back(*std::min_element(cand.begin(), cand.end(), [](const Label& x, const Label& y) {
        return x.max < y.max || (x.max == y.max && x.sum < y.sum);
      }));
      return;
    }
    std::sort(cand.begin(), cand.end(), [](const Label& x, const Label& y) {
      return x.sum < y.sum || (x.sum == y.sum && x.max < y.max);
    });
    double best = kInf;
    for (const Label& l : cand) {
      const double obj = objective(l.sum, l.max);
      if (obj < best) {
        out.push_back(l);
        best = obj;
      }
    }
  }

  // The current stage is the last: it covers [a, n_layers) and ends the ring.
  void terminate() {
    const int d = order_.back();
    const int h = c_.head();
    const bool is_head = d == h;
    if (out_head_ && is_head) return;  // the same plans as the other variant
    double extra_ms = is_head ? head_extra_ms() : 0;
    uint64_t extra_bytes = is_head ? head_extra_bytes() : 0;
    if (out_head_) {
      extra_ms += c_.hidden_ms(d, h);
    } else {
      extra_ms += c_.output_ms(d) + c_.logits_ms(d, h);
      extra_bytes += c_.output_bytes(d);
    }
    // The head's own busy time when it runs no layers.
    const bool head_in_ring = std::find(order_.begin(), order_.end(), h) != order_.end();
    const double head_ms = head_in_ring ? 0 : head_extra_ms();
    if (!head_in_ring && !c_.fits(h, head_extra_bytes())) return;

    const int n = c_.n_layers();
    const Level& prev = levels_.back();
    for (int a = 0; a < n; ++a) {
      if (prev[a].empty() || !c_.fits(d, c_.layers_bytes(a, n) + extra_bytes)) continue;
      const double busy = c_.compute_ms(d, a, n) + extra_ms;
      for (size_t i = 0; i < prev[a].size(); ++i) {
        const Label& l = prev[a][i];
        const double sum = l.sum + busy + head_ms;
        const double max = std::max({l.max, busy, head_ms});
        const double obj = objective(sum, max);
        if (obj < best_objective_) {
          best_objective_ = obj;
          record(a, static_cast<int>(i));
        }
      }
    }
  }

  // Rebuilds the assignment from the back pointers; the last stage starts at a.
  void record(int a, int idx) {
    const int k = static_cast<int>(order_.size());
    best_.stages.assign(k, Segment{});
    best_.output_at_head = out_head_;
    int last = c_.n_layers();
    int b = a;
    for (int s = k - 1; s >= 0; --s) {
      best_.stages[s] = {order_[s], b, last};
      if (s == 0) break;
      const Label& l = levels_[s][b][idx];  // levels_[s]: s stages complete
      last = b;
      b = l.prev_b;
      idx = l.prev_idx;
    }
  }

  const detail::CostModel& c_;
  const double wl_, wb_;
  bool out_head_ = false;
  std::vector<bool> used_;
  std::vector<int> order_;
  std::vector<Level> levels_;  // levels_[s]: labels after s completed stages
  std::vector<double> rest_;
  double best_objective_ = kInf;
  Assignment best_;
};

}  // namespace

Plan solve_exact(const ModelCost& model, const Cluster& cluster, const Options& options) {
  validate(model, cluster, options);
  const int nd = static_cast<int>(cluster.devices.size());
  check(nd <= kExactMaxDevices, "planner: the exact solver handles up to ", kExactMaxDevices,
        " devices, the cluster has ", nd, " (build braid with COIN-OR CBC for the MILP solver)");
  detail::CostModel c(model, cluster, options);
  ExactSearch search(c);
  search.run();
  if (!search.found()) {
    fail("cannot place the model: ", detail::explain_infeasible(model, cluster, options));
  }
  Plan p;
  p.assignment = search.best();
  p.prediction = evaluate(model, cluster, p.assignment, options);
  p.solver = "exact";
  p.proven_optimal = true;
  return p;
}

}  // namespace braid::planner
