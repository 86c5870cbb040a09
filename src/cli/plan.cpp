// `braid plan -m MODEL (--cluster FILE | --workers A,B --secret-file F)`: where the layers
// would run and how fast, without running anything.
//
// Connects to the workers, has them load and profile the model, probes the links, and
// prints the planner's assignment (each device's layers, memory used / limit, time per
// layer, compute + send time per token), the predicted ms/token and tokens/s, the
// bottleneck device (which limits pipelined tokens/s), and what an even split and a
// memory-proportional split would predict under the same cost model. Then it ends the
// workers' sessions. --json prints one object instead.
#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

#include "braid/cluster.h"
#include "braid/error.h"
#include "braid/model.h"
#include "braid/planner.h"
#include "cli/cli_util.h"
#include "cli/cluster_flags.h"
#include "cli/command.h"

namespace braid::cli {
namespace {

constexpr int kDefaultMaxCtx = 4096;  // as `braid run`

struct PlanArgs {
  std::string model;
  int threads = 1;
  int ctx = 0;
  int sequences = 1;
  bool json = false;
  ClusterFlags cluster;
};

// How the report names device d: "name (address)", the cluster file's name first.
struct Names {
  std::vector<std::string> label, name, address;
};

Names device_names(const dist::ClusterPlan& p, const ClusterFlags& flags) {
  Names n;
  for (size_t d = 0; d < p.cluster.devices.size(); ++d) {
    std::string name = p.names[d];
    std::string address = d == 0 ? "" : p.cluster.devices[d].name;
    if (d > 0 && d - 1 < flags.worker_names.size() && !flags.worker_names[d - 1].empty())
      name = flags.worker_names[d - 1];
    n.name.push_back(name);
    n.address.push_back(address);
    n.label.push_back(address.empty() ? name : name.empty() ? address : cat(name, " (", address, ")"));
  }
  return n;
}

// "head -> local-1 [0, 3) -> local-2 [3, 5) -> head (logits)" in the model's layers.
std::string ring_text(const dist::ClusterPlan& p, const planner::Assignment& a, const Names& n) {
  const int h = p.first_layer;
  std::string s = "head";
  if (h > 0) s += cat(" [0, ", h, ")");
  for (const auto& st : a.stages) {
    if (st.device == 0 && (h > 0 || st.first == 0)) {
      // The head's planned layers come first, after any fixed share.
      s +=
          h > 0 ? cat(" + [", st.first + h, ", ", st.last + h, ")") : cat(" [", st.first, ", ", st.last, ")");
      continue;
    }
    const size_t d = static_cast<size_t>(st.device);
    const std::string who = d == 0 ? std::string("head") : n.name[d].empty() ? n.address[d] : n.name[d];
    s += cat(" -> ", who, " [", st.first + h, ", ", st.last + h, ")");
  }
  const bool out_head = (a.output_at_head || a.stages.back().device == 0);
  return s + (out_head ? " -> head (runs the output)" : " -> head (logits)");
}

double per_s(double ms) { return ms > 0 ? 1000.0 / ms : 0; }

std::string fmt(const char* f, double x) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, x);
  return buf;
}

std::string mib(uint64_t bytes) {
  const double b = static_cast<double>(bytes);
  return b >= 1073741824.0 ? fmt("%.2f GiB", b / 1073741824.0) : fmt("%.1f MiB", b / 1048576.0);
}

// Per device: the layers it runs in model numbers (empty range when none).
struct DeviceRow {
  int first = 0, last = 0;
  bool output = false;
};

std::vector<DeviceRow> rows_of(const dist::ClusterPlan& p) {
  std::vector<DeviceRow> rows(p.cluster.devices.size());
  const int h = p.first_layer;
  if (h > 0) rows[0] = {0, h, false};
  for (const auto& st : p.plan.assignment.stages) {
    DeviceRow& r = rows[static_cast<size_t>(st.device)];
    if (st.device == 0 && h > 0) {
      r.last = st.last + h;
    } else {
      r = {st.first + h, st.last + h, false};
    }
  }
  const auto& a = p.plan.assignment;
  if (a.output_at_head || a.stages.back().device == 0) {
    rows[0].output = true;
  } else {
    rows[static_cast<size_t>(a.stages.back().device)].output = true;
  }
  return rows;
}

// Mean time per layer of device d over the planner's layers [a, b); 0 when none.
double ms_per_layer(const dist::ClusterPlan& p, int d, int a, int b) {
  const auto& ms = p.cluster.devices[static_cast<size_t>(d)].layer_ms;
  if (b <= a) return 0;
  return std::accumulate(ms.begin() + a, ms.begin() + b, 0.0) / (b - a);
}

nlohmann::ordered_json split_json(const dist::ClusterPlan& p, const planner::Assignment& a,
                                  const planner::Prediction& pr, const Names& n) {
  nlohmann::ordered_json j;
  j["ring"] = ring_text(p, a, n);
  j["ms_per_token"] = pr.latency_ms;
  j["tokens_per_s"] = per_s(pr.latency_ms);
  j["bottleneck_device"] = n.label[static_cast<size_t>(pr.bottleneck_device)];
  j["bottleneck_ms"] = pr.bottleneck_ms;
  j["pipelined_tokens_per_s"] = per_s(pr.bottleneck_ms);
  j["fits_memory"] = pr.fits_memory;
  if (!pr.fits_memory) j["memory_problem"] = pr.memory_problem;
  return j;
}

std::string split_line(const dist::ClusterPlan& p, const planner::Assignment& a,
                       const planner::Prediction& pr, const Names& n) {
  std::string s =
      cat(ring_text(p, a, n), ": ", fmt("%.3f", pr.latency_ms), " ms/token (",
          fmt("%.1f", per_s(pr.latency_ms)), " tokens/s), bottleneck ",
          n.label[static_cast<size_t>(pr.bottleneck_device)], " ", fmt("%.3f", pr.bottleneck_ms), " ms");
  if (!pr.fits_memory) s += cat(" [does not fit: ", pr.memory_problem, "]");
  return s;
}

void print_json(const dist::ClusterPlan& p, const PlanArgs& a, const ModelConfig& c, int n_ctx,
                const Names& n) {
  const planner::Prediction& pr = p.plan.prediction;
  const std::vector<DeviceRow> rows = rows_of(p);
  nlohmann::ordered_json j;
  j["model"] = a.model;
  j["n_layers"] = c.n_layers;
  j["n_ctx"] = n_ctx;
  j["sequences"] = a.sequences;
  j["objective"] = a.cluster.objective;
  j["rule"] = p.rule;
  j["solver"] = p.plan.solver;
  j["proven_optimal"] = p.plan.proven_optimal;
  j["head_layers"] = p.first_layer;
  nlohmann::ordered_json devices = nlohmann::ordered_json::array();
  for (size_t d = 0; d < rows.size(); ++d) {
    const planner::DeviceLoad& load = pr.devices[d];
    const DeviceRow& r = rows[d];
    nlohmann::ordered_json dj;
    dj["name"] = n.name[d];
    dj["address"] = n.address[d];
    dj["threads"] = p.threads[d];
    dj["used"] = load.used;
    dj["layers"] =
        r.last > r.first ? nlohmann::ordered_json::array({r.first, r.last}) : nlohmann::ordered_json(nullptr);
    dj["runs_output"] = r.output;
    dj["memory_used_bytes"] = load.memory_bytes;
    if (d == 0 && !p.head_computes) {
      dj["memory_limit_bytes"] = nullptr;  // the head was not asked for its layers' budget
    } else {
      dj["memory_limit_bytes"] = p.cluster.devices[d].memory_bytes;
    }
    const int a0 = std::max(0, r.first - p.first_layer), b0 = std::max(0, r.last - p.first_layer);
    if (b0 > a0 && (d > 0 || p.head_computes)) {
      dj["ms_per_layer"] = ms_per_layer(p, static_cast<int>(d), a0, b0);
    } else {
      dj["ms_per_layer"] = nullptr;
    }
    dj["compute_ms"] = load.compute_ms;
    dj["send_ms"] = load.send_ms;
    dj["busy_ms"] = load.busy_ms;
    devices.push_back(dj);
  }
  j["devices"] = devices;
  j["ring"] = ring_text(p, p.plan.assignment, n);
  j["predicted_ms_per_token"] = pr.latency_ms;
  j["tokens_per_s"] = per_s(pr.latency_ms);
  j["bottleneck_device"] = n.label[static_cast<size_t>(pr.bottleneck_device)];
  j["bottleneck_ms"] = pr.bottleneck_ms;
  j["pipelined_tokens_per_s"] = per_s(pr.bottleneck_ms);
  j["fits_memory"] = pr.fits_memory;  // false only for a fixed split that does not fit
  if (!pr.fits_memory) j["memory_problem"] = pr.memory_problem;
  j["even_split"] = split_json(p, p.even, p.even_prediction, n);
  j["memory_split"] = split_json(p, p.memory, p.memory_prediction, n);
  std::printf("%s\n", j.dump(2).c_str());
}

void print_table(const dist::ClusterPlan& p, const PlanArgs& a, const ModelConfig& c, int n_ctx,
                 const Names& n) {
  const planner::Prediction& pr = p.plan.prediction;
  const std::vector<DeviceRow> rows = rows_of(p);
  std::printf("model: %s (%d layers), context %d x %d sequence%s, objective %s\n", a.model.c_str(),
              c.n_layers, n_ctx, a.sequences, a.sequences == 1 ? "" : "s", a.cluster.objective.c_str());
  const std::string how =
      p.rule == "planner"
          ? cat("planner, ", p.plan.solver, p.plan.proven_optimal ? ", optimal" : ", not proven optimal")
          : cat(p.rule, " split");
  std::printf("assignment (%s):\n", how.c_str());
  size_t width = 6;
  for (const auto& l : n.label) width = std::max(width, l.size());
  std::printf("  %-*s  threads  layers      memory used / limit      ms/layer  ms/token (compute + send)\n",
              static_cast<int>(width), "device");
  for (size_t d = 0; d < rows.size(); ++d) {
    const planner::DeviceLoad& load = pr.devices[d];
    const DeviceRow& r = rows[d];
    std::string layers = r.last > r.first ? cat("[", r.first, ", ", r.last, ")") : std::string("-");
    if (r.output) layers += "+out";
    if (d > 0 && !load.used) layers = "left out";
    const std::string limit =
        d == 0 && !p.head_computes ? std::string("-") : mib(p.cluster.devices[d].memory_bytes);
    const std::string memory = cat(mib(load.memory_bytes), " / ", limit);
    const int a0 = std::max(0, r.first - p.first_layer), b0 = std::max(0, r.last - p.first_layer);
    const std::string per_layer = b0 > a0 && (d > 0 || p.head_computes)
                                      ? fmt("%.4f", ms_per_layer(p, static_cast<int>(d), a0, b0))
                                      : std::string("-");
    std::printf("  %-*s  %7d  %-10s  %-23s  %8s  %.4f (%.4f + %.4f)\n", static_cast<int>(width),
                n.label[d].c_str(), p.threads[d], layers.c_str(), memory.c_str(), per_layer.c_str(),
                load.busy_ms, load.compute_ms, load.send_ms);
  }
  std::printf("ring: %s\n", ring_text(p, p.plan.assignment, n).c_str());
  std::printf("predicted: %.3f ms/token (%.1f tokens/s single stream)\n", pr.latency_ms,
              per_s(pr.latency_ms));
  std::printf("bottleneck: %s, %.3f ms/token (%.1f tokens/s pipelined)\n",
              n.label[static_cast<size_t>(pr.bottleneck_device)].c_str(), pr.bottleneck_ms,
              per_s(pr.bottleneck_ms));
  if (!pr.fits_memory) std::printf("warning: this split does not fit: %s\n", pr.memory_problem.c_str());
  std::printf("even split: %s\n", split_line(p, p.even, p.even_prediction, n).c_str());
  std::printf("memory-proportional split: %s\n", split_line(p, p.memory, p.memory_prediction, n).c_str());
}

void run(const PlanArgs& a) {
  check(a.cluster.active(),
        "braid plan needs the workers: --cluster FILE, or --workers HOST:PORT,... "
        "with --secret-file (or --accept)");
  check(a.cluster.batch_file.empty(), "braid plan takes no --batch-file");
  const net::Tls tls = cluster_tls(a.cluster);
  auto model = load_model(a.model);
  const ModelConfig& c = model->config();
  int n_ctx = a.ctx;
  if (n_ctx == 0) n_ctx = c.n_ctx_train > 0 ? std::min(c.n_ctx_train, kDefaultMaxCtx) : kDefaultMaxCtx;
  dist::HeadOptions o = head_options(a.cluster, n_ctx, a.threads, a.sequences);
  if (a.json) o.log = [](const std::string&) {};  // stdout is the JSON; nothing else to say
  const dist::ClusterPlan p = dist::plan_cluster(model, a.model, tls, o);
  const Names n = device_names(p, a.cluster);
  if (a.json) {
    print_json(p, a, c, n_ctx, n);
  } else {
    print_table(p, a, c, n_ctx, n);
  }
}

Command reg("plan", "Show where a model's layers would run on a cluster and the predicted speed",
            [](CLI::App& app) {
              auto a = std::make_shared<PlanArgs>();
              add_model_option(app, a->model);
              app.add_option("-t,--threads", a->threads, "Threads of the head (when it may run layers)")
                  ->check(CLI::Range(1, 1024))
                  ->capture_default_str();
              app.add_option("-c,--ctx", a->ctx,
                             "Context size in tokens (default: the model's, at most 4096)")
                  ->check(CLI::Range(1, 1 << 24));
              app.add_option("--sequences", a->sequences, "Sequences in flight (each has its KV cache)")
                  ->check(CLI::Range(1, 64))
                  ->capture_default_str();
              app.add_flag("--json", a->json, "Print one JSON object instead of a table");
              add_cluster_options(app, a->cluster, false);
              app.footer(R"(
Nothing runs: the workers load and profile the model, the head probes the links, the
planner decides, and the sessions end. Times are per token. The even split gives every
device the same number of layers; the memory-proportional split gives each a share
proportional to its memory budget; both are priced by the planner's cost model
(docs/planner.md). --split even|memory|RANGES shows that split as the assignment.)");
              app.callback([a, &app] {
                apply_cluster_file(app, a->cluster);
                run(*a);
              });
            });

}  // namespace
}  // namespace braid::cli
