// solve(): picks the solver (docs/planner.md, "Which solver").
#include "braid/planner.h"

#include "braid/error.h"
#include "dist/planner_model.h"

namespace braid::planner {

Plan solve(const ModelCost& model, const Cluster& cluster, const Options& options) {
  validate(model, cluster, options);
  switch (options.solver) {
    case Options::Solver::kExact:
      return solve_exact(model, cluster, options);
    case Options::Solver::kMilp:
      return solve_milp(model, cluster, options);
    case Options::Solver::kAuto:
      break;
  }
  const bool exact_ok = cluster.devices.size() <= static_cast<size_t>(kExactMaxDevices);
  // The MILP's LP relaxation is tight for latency but weak for the bottleneck (it
  // averages split points), so CBC needs many branches where the exact search needs
  // milliseconds: throughput-first plans of small clusters go to the exact search.
  const bool throughput_first = options.bottleneck_weight > options.latency_weight;
  if (!have_milp() || (throughput_first && exact_ok)) return solve_exact(model, cluster, options);
  Plan p;
  switch (detail::run_milp(model, cluster, options, p)) {
    case detail::MilpOutcome::kPlan:
      if (p.proven_optimal || !exact_ok) return p;
      break;  // stopped at the time limit with a plan that may not be the best
    case detail::MilpOutcome::kInfeasible:
      fail("cannot place the model: ", detail::explain_infeasible(model, cluster, options));
    case detail::MilpOutcome::kNoPlanInTime:
      check(exact_ok, "planner: CBC found no plan within ", options.time_limit_s, " s for ",
            cluster.devices.size(), " devices; raise the time limit");
      break;
  }
  return solve_exact(model, cluster, options);
}

}  // namespace braid::planner
