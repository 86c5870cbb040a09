// The planner's cost model, shared by evaluate(), the exact solver and the MILP so that
// all three price a plan the same way (docs/planner.md, "The model").
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "braid/planner.h"

namespace braid::planner::detail {

// Precomputed prefix sums over layers; every cost of a plan is one of these lookups.
class CostModel {
 public:
  CostModel(const ModelCost& model, const Cluster& cluster, const Options& options);

  int n_layers() const { return n_layers_; }
  int n_devices() const { return n_devices_; }
  int head() const { return head_; }

  // Decode ms of layers [a, b) on device d.
  double compute_ms(int d, int a, int b) const { return ms_prefix_[d][b] - ms_prefix_[d][a]; }
  // Weights + KV cache at full context of layers [a, b), bytes, before the margin.
  uint64_t layers_bytes(int a, int b) const { return bytes_prefix_[b] - bytes_prefix_[a]; }
  // Bytes of layer l alone (weights + KV).
  uint64_t layer_bytes(int l) const { return layers_bytes(l, l + 1); }

  // ms to send `bytes` from device `from` to device `to`; 0 on the same device.
  double transfer_ms(int from, int to, uint64_t bytes) const;
  double hidden_ms(int from, int to) const { return transfer_ms(from, to, model_.hidden_bytes); }
  double logits_ms(int from, int to) const { return transfer_ms(from, to, model_.logits_bytes); }

  double output_ms(int d) const { return cluster_.devices[d].output_ms; }
  // Bytes device d holds to run the output itself.
  uint64_t output_bytes(int d) const { return d == head_ ? model_.head_output_bytes() : model_.output_bytes; }
  uint64_t embed_bytes() const { return model_.embed_bytes; }

  // need * (1 + margin) <= budget of device d.
  bool fits(int d, uint64_t need) const;
  // The most bytes (before the margin) device d may hold: floor(budget / (1 + margin)).
  double usable_bytes(int d) const;

  double objective(double latency_ms, double bottleneck_ms) const {
    return options_.latency_weight * latency_ms + options_.bottleneck_weight * bottleneck_ms;
  }

  const ModelCost& model() const { return model_; }
  const Cluster& cluster() const { return cluster_; }
  const Options& options() const { return options_; }

 private:
  const ModelCost& model_;
  const Cluster& cluster_;
  const Options& options_;
  int n_layers_, n_devices_, head_;
  std::vector<std::vector<double>> ms_prefix_;  // [device][layer + 1]
  std::vector<uint64_t> bytes_prefix_;          // [layer + 1]
};

// Why no assignment fits the memory budgets, as one line for braid::Error. Called once
// a solver has found none.
std::string explain_infeasible(const ModelCost& model, const Cluster& cluster, const Options& options);

// The MILP's answer (planner_milp.cpp); throws braid::Error when built without CBC.
enum class MilpOutcome { kPlan, kInfeasible, kNoPlanInTime };
MilpOutcome run_milp(const ModelCost& model, const Cluster& cluster, const Options& options, Plan& plan);

// "1.20 GiB", "900.0 MiB", "512 B".
std::string format_bytes(double bytes);

}  // namespace braid::planner::detail
