// The MILP solver (docs/planner.md, "MILP"): the plan is a unit flow through a DAG whose
// nodes are "device d starts at layer a" and whose arcs are stages, "device e runs
// layers [a, b) and sends its hidden state to device f", plus the head's first send and
// the last stages (output on the last device, or at the head). Side constraints: each
// device runs at most one stage, memory per device, and B >= each device's busy time
// and >= the busy time of the stage covering each layer. Solved with COIN-OR CBC.
#include <algorithm>
#include <cmath>
#include <vector>

#include "braid/error.h"
#include "braid/planner.h"
#include "dist/planner_model.h"

#if BRAID_HAVE_CBC
#include <CbcModel.hpp>
#include <CoinPackedMatrix.hpp>
#include <OsiClpSolverInterface.hpp>
#endif

namespace braid::planner {

#if BRAID_HAVE_CBC

bool have_milp() { return true; }

namespace {

constexpr double kMiB = 1024.0 * 1024.0;

// Builds the program, solves it and reads the plan back.
class Milp {
 public:
  explicit Milp(const detail::CostModel& c) : c_(c), n_(c.n_layers()), nd_(c.n_devices()) {
    // Node balance rows: +1 where an arc enters, -1 where it leaves. One unit leaves the
    // source and reaches the sink; node (a, d) "device d starts at layer a" passes on
    // what it receives.
    source_ = add_row(-1, -1);
    sink_ = add_row(1, 1);
    start_rows_.assign(n_, std::vector<int>(nd_));
    for (int a = 0; a < n_; ++a) {
      for (int d = 0; d < nd_; ++d) start_rows_[a][d] = add_row(0, 0);
    }
    const int h = c.head();
    for (int d = 0; d < nd_; ++d) usage_rows_.push_back(add_row(-kInf, 1));
    for (int d = 0; d < nd_; ++d) {
      double rhs = c.usable_bytes(d) / kMiB;
      if (d == h) rhs -= static_cast<double>(c.embed_bytes()) / kMiB;
      memory_rows_.push_back(add_row(-kInf, rhs));
    }
    if (c.options().bottleneck_weight > 0) {
      for (int d = 0; d < nd_; ++d) busy_rows_.push_back(add_row(-kInf, 0));
      for (int l = 0; l < n_; ++l) layer_rows_.push_back(add_row(-kInf, 0));
    }

    const double wl = c.options().latency_weight;
    for (int e = 0; e < nd_; ++e) {  // the head embeds and sends to the first stage
      const double ms = c.hidden_ms(h, e);
      Column col(Kind::kEntry, e, 0, 0, wl * ms);
      col.add(source_, -1).add(start_rows_[0][e], 1);
      busy(col, h, ms);
      add_column(std::move(col));
    }
    for (int e = 0; e < nd_; ++e) {
      const uint64_t fixed = e == h ? c.embed_bytes() : 0;
      for (int a = 0; a < n_; ++a) {
        for (int b = a + 1; b <= n_; ++b) {
          const uint64_t bytes = c.layers_bytes(a, b);
          if (!c.fits(e, bytes + fixed)) break;  // longer ranges fit even less
          const double compute = c.compute_ms(e, a, b);
          if (b < n_) {  // stages: e runs [a, b), sends the hidden state to f
            for (int f = 0; f < nd_; ++f) {
              if (f == e) continue;
              const double ms = compute + c.hidden_ms(e, f);
              Column col(Kind::kStage, e, a, b, wl * ms);
              col.add(start_rows_[a][e], -1).add(start_rows_[b][f], 1);
              stage(col, e, a, b, bytes, ms);
              add_column(std::move(col));
            }
            continue;
          }
          // Last stages. Either e runs the output and sends the logits ...
          if (c.fits(e, bytes + fixed + c.output_bytes(e))) {
            const double ms = compute + c.output_ms(e) + c.logits_ms(e, h);
            Column col(Kind::kLast, e, a, b, wl * ms);
            col.add(start_rows_[a][e], -1).add(sink_, 1);
            stage(col, e, a, b, bytes + c.output_bytes(e), ms);
            add_column(std::move(col));
          }
          // ... or it sends the hidden state and the head runs the output.
          if (c.options().allow_output_at_head && e != h) {
            const double ms = compute + c.hidden_ms(e, h), out = c.output_ms(h);
            Column col(Kind::kLastOutputAtHead, e, a, b, wl * (ms + out));
            col.add(start_rows_[a][e], -1).add(sink_, 1);
            stage(col, e, a, b, bytes, ms);
            col.add(memory_rows_[h], static_cast<double>(c.output_bytes(h)) / kMiB);
            busy(col, h, out);
            add_column(std::move(col));
          }
        }
      }
    }
    if (!busy_rows_.empty()) {  // B, the busiest device's time
      Column col(Kind::kBottleneck, 0, 0, 0, c.options().bottleneck_weight);
      for (int r : busy_rows_) col.add(r, -1);
      for (int r : layer_rows_) col.add(r, -1);
      add_column(std::move(col), /*integer=*/false);
    }
  }

  // Solves; fills `plan` and returns true when CBC found a plan.
  bool solve(Plan& plan, bool& proven_optimal, bool& proven_infeasible) {
    OsiClpSolverInterface solver;
    CoinPackedMatrix matrix(true, triplet_rows_.data(), triplet_cols_.data(), triplet_values_.data(),
                            static_cast<CoinBigIndex>(triplet_values_.size()));
    matrix.setDimensions(static_cast<int>(rows_lo_.size()), static_cast<int>(columns_.size()));
    std::vector<double> lo(columns_.size(), 0.0), hi, cost;
    for (const Column& col : columns_) {
      hi.push_back(col.integer ? 1.0 : kInf);
      cost.push_back(col.cost);
    }
    solver.loadProblem(matrix, lo.data(), hi.data(), cost.data(), rows_lo_.data(), rows_hi_.data());
    for (size_t j = 0; j < columns_.size(); ++j) {
      if (columns_[j].integer) solver.setInteger(static_cast<int>(j));
    }
    solver.messageHandler()->setLogLevel(0);
    solver.setHintParam(OsiDoReducePrint, true, OsiHintTry);

    CbcModel model(solver);
    model.setLogLevel(0);
    model.messageHandler()->setLogLevel(0);
    model.solver()->messageHandler()->setLogLevel(0);
    model.setUseElapsedTime(true);  // the limit is the user's wait, not CPU time
    model.setMaximumSeconds(c_.options().time_limit_s);
    // Tests hold the MILP to the exact optimum: no relative gap, a tiny absolute one.
    model.setAllowableFractionGap(0.0);
    model.setAllowablePercentageGap(0.0);
    model.setAllowableGap(1e-9);
    // Strong branching costs more than it saves here: the LP bound moves little per
    // branch (measured: 2-3x faster without it on the test instances).
    model.setNumberStrong(0);
    model.setNumberBeforeTrust(0);
    model.branchAndBound();

    proven_optimal = model.isProvenOptimal();
    proven_infeasible = model.isProvenInfeasible();
    const double* x = model.bestSolution();
    if (x == nullptr) return false;
    read_back(x, plan.assignment);
    return true;
  }

 private:
  static constexpr double kInf = 1e300;  // COIN's infinity is any value >= 1e30
  enum class Kind { kEntry, kStage, kLast, kLastOutputAtHead, kBottleneck };
  struct Column {
    Column(Kind k, int d, int first, int last, double c) : kind(k), device(d), a(first), b(last), cost(c) {}
    Kind kind;
    int device, a, b;
    double cost;
    bool integer = true;
    std::vector<std::pair<int, double>> entries;
    Column& add(int row, double v) {
      entries.push_back({row, v});
      return *this;
    }
  };

  int add_row(double lo, double hi) {
    rows_lo_.push_back(lo);
    rows_hi_.push_back(hi);
    return static_cast<int>(rows_lo_.size()) - 1;
  }
  // The arc adds ms to device d's busy time (only with a bottleneck term).
  void busy(Column& col, int d, double ms) {
    if (!busy_rows_.empty() && ms != 0) col.add(busy_rows_[d], ms);
  }
  // An arc where device e runs layers [a, b), holds `bytes` and is busy for ms: it
  // uses e once, and B is at least ms for each layer it covers. That last family is
  // implied by the busy rows for integer plans but much tighter for fractional ones,
  // where splitting the flow over parallel rings would otherwise lower every busy row.
  void stage(Column& col, int e, int a, int b, uint64_t bytes, double ms) {
    col.add(usage_rows_[e], 1);
    col.add(memory_rows_[e], static_cast<double>(bytes) / kMiB);
    busy(col, e, ms);
    if (!layer_rows_.empty() && ms != 0) {
      for (int l = a; l < b; ++l) col.add(layer_rows_[l], ms);
    }
  }
  void add_column(Column col, bool integer = true) {
    col.integer = integer;
    const int j = static_cast<int>(columns_.size());
    for (const auto& [row, v] : col.entries) {
      triplet_rows_.push_back(row);
      triplet_cols_.push_back(j);
      triplet_values_.push_back(v);
    }
    col.entries.clear();
    columns_.push_back(std::move(col));
  }

  // The chosen arcs form one path; segments sorted by first layer are the ring.
  void read_back(const double* x, Assignment& a) const {
    a.stages.clear();
    a.output_at_head = false;
    for (size_t j = 0; j < columns_.size(); ++j) {
      if (!columns_[j].integer || x[j] < 0.5) continue;
      const Column& col = columns_[j];
      if (col.kind == Kind::kStage || col.kind == Kind::kLast || col.kind == Kind::kLastOutputAtHead) {
        a.stages.push_back({col.device, col.a, col.b});
      }
      if (col.kind == Kind::kLastOutputAtHead) a.output_at_head = true;
    }
    std::sort(a.stages.begin(), a.stages.end(),
              [](const Segment& s, const Segment& t) { return s.first < t.first; });
  }

  const detail::CostModel& c_;
  const int n_, nd_;
  int source_ = 0, sink_ = 0;
  std::vector<std::vector<int>> start_rows_;  // [a][d]: node "device d starts at layer a"
  std::vector<int> usage_rows_, memory_rows_, busy_rows_, layer_rows_;
  std::vector<double> rows_lo_, rows_hi_;
  std::vector<Column> columns_;
  std::vector<int> triplet_rows_, triplet_cols_;
  std::vector<double> triplet_values_;
};

}  // namespace

namespace detail {

MilpOutcome run_milp(const ModelCost& model, const Cluster& cluster, const Options& options, Plan& plan) {
  validate(model, cluster, options);
  CostModel c(model, cluster, options);
  Milp milp(c);
  bool optimal = false, infeasible = false;
  if (!milp.solve(plan, optimal, infeasible)) {
    return infeasible || optimal ? MilpOutcome::kInfeasible : MilpOutcome::kNoPlanInTime;
  }
  plan.prediction = evaluate(model, cluster, plan.assignment, options);
  plan.solver = "cbc";
  plan.proven_optimal = optimal;
  return MilpOutcome::kPlan;
}

}  // namespace detail

#else  // built without CBC

bool have_milp() { return false; }

namespace detail {
MilpOutcome run_milp(const ModelCost&, const Cluster&, const Options&, Plan&) {
  fail(
      "planner: this braid was built without COIN-OR CBC, so the MILP solver is not "
      "available (install coinor-libcbc-dev and rebuild, or use the exact solver)");
}
}  // namespace detail

#endif

Plan solve_milp(const ModelCost& model, const Cluster& cluster, const Options& options) {
  Plan p;
  switch (detail::run_milp(model, cluster, options, p)) {
    case detail::MilpOutcome::kPlan:
      return p;
    case detail::MilpOutcome::kInfeasible:
      fail("cannot place the model: ", detail::explain_infeasible(model, cluster, options));
    case detail::MilpOutcome::kNoPlanInTime:
      break;
  }
  fail("planner: CBC found no plan within ", options.time_limit_s,
       " s; raise the time limit or use the exact solver");
}

}  // namespace braid::planner
