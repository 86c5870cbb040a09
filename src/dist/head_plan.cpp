// Who runs which layers: a fixed split as the user gave it, or the planner over the
// profiles the workers measured for this model and the links the head measured.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <exception>
#include <future>

#include "braid/error.h"
#include "braid/planner.h"
#include "dist/head_ring.h"
#include "dist/worker_stream.h"

namespace braid::dist {

using namespace std::chrono_literals;

std::vector<std::pair<int, int>> parse_split(const std::string& text) {
  std::vector<std::pair<int, int>> out;
  size_t i = 0;
  while (i <= text.size()) {
    size_t j = text.find(',', i);
    if (j == std::string::npos) j = text.size();
    const std::string item = text.substr(i, j - i);
    const size_t colon = item.find(':');
    auto num = [&](const std::string& s) {
      bool ok = !s.empty() && s.size() <= 6;
      for (char ch : s) ok = ok && ch >= '0' && ch <= '9';
      check(ok, "bad split '", text, "': '", item, "' is not FIRST:LAST");
      return std::stoi(s);
    };
    check(colon != std::string::npos, "bad split '", text, "': '", item, "' is not FIRST:LAST");
    const int a = num(item.substr(0, colon)), b = num(item.substr(colon + 1));
    check(a < b, "bad split '", text, "': range ", a, ":", b, " is empty");
    out.emplace_back(a, b);
    i = j + 1;
  }
  return out;
}

std::vector<net::Endpoint> parse_endpoints(const std::string& text) {
  std::vector<net::Endpoint> out;
  size_t i = 0;
  while (i <= text.size()) {
    size_t j = text.find(',', i);
    if (j == std::string::npos) j = text.size();
    const std::string item = text.substr(i, j - i);
    if (!item.empty()) out.push_back(net::Endpoint::parse(item));
    i = j + 1;
  }
  check(!out.empty(), "no worker addresses in '", text, "'");
  return out;
}

namespace {

PlanResult fixed_split(const Model& model, const RingImpl& r) {
  const int n_layers = model.config().n_layers;
  const HeadOptions& o = r.opt;
  const int h = std::max(0, o.head_layers);
  check(h <= n_layers, "--head-layers ", h, " exceeds the model's ", n_layers, " layers");
  PlanResult p;
  p.head_first = 0;
  p.head_last = h;
  p.output_at_head = o.output_at_head;
  if (h > 0) p.parts.push_back({-1, 0, h});
  if (o.split.empty()) {
    // One worker, nothing to decide: it runs everything the head does not.
    check(r.workers.size() == 1, "internal: fixed split without ranges");
    check(h < n_layers || o.output_at_head, "the head runs every layer: the worker would have nothing to do");
    if (h < n_layers) p.parts.push_back({0, h, n_layers});
    return p;
  }
  check(o.split.size() == r.workers.size(), "--split has ", o.split.size(), " ranges for ", r.workers.size(),
        " workers");
  int next = h;
  for (size_t i = 0; i < o.split.size(); ++i) {
    const auto [a, b] = o.split[i];
    check(a == next, "--split: worker ", i + 1, " starts at layer ", a, ", expected ", next,
          next == h && h > 0 ? " (after the head's layers)" : "");
    check(b > a && b <= n_layers, "--split: range ", a, ":", b, " is outside the model's ", n_layers,
          " layers");
    p.parts.push_back({static_cast<int>(i), a, b});
    next = b;
  }
  check(next == n_layers, "--split covers layers up to ", next, ", the model has ", n_layers);
  return p;
}

// Round trip of a probe that carries `bytes` out and asks for as many back, best of
// `reps`, in ms.
double best_probe(RemoteWorker& w, uint32_t bytes, int reps, net::Millis timeout) {
  double best = 1e30;
  for (int i = 0; i < reps; ++i) {
    proto::Probe p;
    p.padding.assign(bytes, 0);
    p.reply_bytes = bytes;
    const auto t0 = std::chrono::steady_clock::now();
    expect<proto::Probe>(w.request(make_frame(p), timeout), w.label());
    best = std::min(best,
                    std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

// The planner's inputs for this ring: the model's costs from layer `first` on (the
// head's fixed share stays out), device 0 the head, device i worker i - 1.
struct Measured {
  int first = 0;
  bool head_computes = false;
  planner::ModelCost cost;
  planner::Cluster cluster;
  planner::Options options;
};

// Profiles and link probes, all workers at once.
void profile_workers(const Model& model, RingImpl& r) {
  for_each_parallel(r.workers.size(), [&](size_t i) { measure_worker(r, *r.workers[i]); });
  for (auto& w : r.workers) {
    check(static_cast<int>(w->profile.layer_ms.size()) == model.config().n_layers, w->label(), " profiled ",
          w->profile.layer_ms.size(), " layers, the model has ", model.config().n_layers);
  }
}

Measured measure(const Model& model, RingImpl& r) {
  const HeadOptions& o = r.opt;
  const ModelConfig& c = model.config();
  Measured m;
  m.first = std::max(0, o.head_layers);
  const int h = m.first;
  check(h < c.n_layers, "--head-layers ", h, " leaves no layers for the workers");
  profile_workers(model, r);

  planner::ModelCost& cost = m.cost;
  const uint64_t kv_per_token = 2 * sizeof(float) * static_cast<uint64_t>(c.kv_dim());
  for (int l = h; l < c.n_layers; ++l) {
    cost.layer_bytes.push_back(model.layer_weight_bytes(l));
    cost.kv_bytes_per_token.push_back(kv_per_token);
  }
  cost.context_length = static_cast<int64_t>(o.n_ctx) * o.max_sequences;
  cost.hidden_bytes = proto::wire_bytes(r.transfer, 1, static_cast<uint64_t>(c.dim));
  cost.logits_bytes = sizeof(float) * static_cast<uint64_t>(c.n_vocab);
  cost.embed_bytes = model.embed_weight_bytes();
  cost.output_bytes = model.output_weight_bytes();
  if (c.tied_output) cost.output_bytes_on_head = model.output_weight_bytes() - model.token_embd().nbytes;

  planner::Options& po = m.options;
  if (o.objective == HeadOptions::Objective::kThroughput) po = planner::Options::throughput();
  m.head_computes = o.head_layers < 0;
  po.allow_output_at_head = m.head_computes || o.output_at_head;

  planner::Cluster& cl = m.cluster;
  cl.head = 0;
  planner::Device head;
  head.name = "head";
  // A head that may not run (more) layers has their times priced out of reach and a
  // budget of just what it must hold (the embeddings, and the output when asked to run
  // it): too little for any layer, so a model the workers cannot hold is an error that
  // says so, not a silent run on the head.
  constexpr double kOutOfReach = 1e8;
  if (m.head_computes || o.output_at_head) {
    ThreadPool pool(o.threads);
    DeviceProfile p = measure_profile(model, pool, 1.0, 0);
    head.layer_ms = p.layer_ms;
    head.output_ms = p.output_ms;
    head.memory_bytes = p.memory_bytes;
  }
  if (!m.head_computes) {
    head.layer_ms.assign(static_cast<size_t>(c.n_layers), kOutOfReach);
    const double must_hold = static_cast<double>(cost.embed_bytes) +
                             (o.output_at_head ? static_cast<double>(cost.head_output_bytes()) : 0.0);
    head.memory_bytes = static_cast<uint64_t>(std::ceil(must_hold * (1.0 + po.memory_margin))) + 64;
  }
  head.layer_ms.erase(head.layer_ms.begin(), head.layer_ms.begin() + h);
  cl.devices.push_back(head);
  for (auto& w : r.workers) {
    planner::Device d;
    d.name = w->addr.str();
    d.layer_ms.assign(w->profile.layer_ms.begin() + h, w->profile.layer_ms.end());
    // --output-at-head: the output is not the workers' to run.
    d.output_ms = o.output_at_head ? kOutOfReach : w->profile.output_ms;
    d.memory_bytes = w->profile.memory_bytes;
    cl.devices.push_back(d);
  }
  const size_t nd = cl.devices.size();
  cl.links.assign(nd, std::vector<planner::Link>(nd));
  for (size_t i = 0; i < nd; ++i) {
    for (size_t j = 0; j < nd; ++j) {
      if (i == j) continue;
      // Head <-> worker links are measured; worker <-> worker links are estimated from
      // both workers' links to the head (the slower of the two).
      const RemoteWorker* a = i ? r.workers[i - 1].get() : nullptr;
      const RemoteWorker* b = j ? r.workers[j - 1].get() : nullptr;
      planner::Link l;
      if (!a || !b) {
        const RemoteWorker* w = a ? a : b;
        l.latency_ms = w->rtt_ms / 2;
        l.bytes_per_s = w->bytes_per_s;
      } else {
        l.latency_ms = std::max(a->rtt_ms, b->rtt_ms) / 2;
        l.bytes_per_s = std::min(a->bytes_per_s, b->bytes_per_s);
      }
      cl.links[i][j] = l;
    }
  }
  return m;
}

// An even or memory-proportional split over the devices that may run layers (the head
// first when it may), with the output where the options put it.
planner::Assignment simple_split(const Measured& m, const HeadOptions& o, HeadOptions::SplitRule rule) {
  std::vector<int> order;
  for (int d = m.head_computes ? 0 : 1; d < static_cast<int>(m.cluster.devices.size()); ++d)
    order.push_back(d);
  planner::Assignment a = rule == HeadOptions::SplitRule::kEven
                              ? planner::even_split(m.cost, m.cluster, order)
                              : planner::memory_split(m.cost, m.cluster, order);
  a.output_at_head = o.output_at_head;
  return a;
}

const char* rule_name(HeadOptions::SplitRule rule) {
  switch (rule) {
    case HeadOptions::SplitRule::kEven:
      return "even";
    case HeadOptions::SplitRule::kMemory:
      return "memory";
    case HeadOptions::SplitRule::kPlanner:
      break;
  }
  return "planner";
}

// The plan the options ask for: the planner's, or a simple split (which must fit).
planner::Plan choose(const Measured& m, const HeadOptions& o) {
  if (o.split_rule == HeadOptions::SplitRule::kPlanner) return planner::solve(m.cost, m.cluster, m.options);
  planner::Plan p;
  p.assignment = simple_split(m, o, o.split_rule);
  p.prediction = planner::evaluate(m.cost, m.cluster, p.assignment, m.options);
  p.solver = rule_name(o.split_rule);
  check(p.prediction.fits_memory, "cannot use the ",
        o.split_rule == HeadOptions::SplitRule::kEven ? "even" : "memory-proportional",
        " split: ", p.prediction.memory_problem);
  return p;
}

// The planner's assignment in the model's layer numbers, as the ring runs it.
PlanResult to_ring_plan(const planner::Plan& plan, const Measured& m, const HeadOptions& o) {
  return ring_plan_from(plan, m.cluster, m.first, o.output_at_head);
}

// A fixed split (PlanResult from fixed_split) as the planner's assignment, to price it.
planner::Assignment to_assignment(const PlanResult& fixed, const Measured& m) {
  planner::Assignment a;
  for (const auto& part : fixed.parts) {
    if (part.worker < 0) continue;  // the head's fixed share is outside the cost model
    a.stages.push_back({part.worker + 1, part.first - m.first, part.last - m.first});
  }
  a.output_at_head = fixed.output_at_head;
  return a;
}

bool is_fixed(const HeadOptions& o) { return !o.split.empty(); }

void profile_worker(RingImpl& r, RemoteWorker& w) {
  proto::ProfileRequest req;
  req.model_id = r.model_path;
  req.model_sha256 = r.fingerprint;
  req.context_length = static_cast<uint32_t>(r.opt.n_ctx);
  // The other layers' times are estimated from their size.
  const proto::Profile p = expect<proto::Profile>(
      r.request_with_model(w, make_frame(req), tensors_for_stage(r.model->gguf(), 0, 1, false)), w.label());
  w.name = p.device_name;
  w.threads = static_cast<int>(p.threads);
  w.profile.output_ms = p.output_ms;
  w.profile.layer_ms = p.layer_ms;
  w.profile.memory_bytes = p.memory_budget_bytes;
  w.profile_derived = false;
  ++r.profiles_requested;
}

}  // namespace

PlanResult plan_ring(const Model& model, RingImpl& r) {
  const HeadOptions& o = r.opt;
  // One worker and no layers for the planner to give the head: nothing to decide.
  if (is_fixed(o) || (r.workers.size() == 1 && o.head_layers >= 0)) return fixed_split(model, r);

  const Measured m = measure(model, r);
  const planner::Plan plan = choose(m, o);
  PlanResult p = to_ring_plan(plan, m, o);
  r.log(cat("plan (", plan.solver, m.first > 0 ? cat(", layers from ", m.first) : std::string(),
            "): ", p.summary, ", predicted ", plan.prediction.latency_ms, " ms/token, bottleneck ",
            plan.prediction.bottleneck_ms, " ms"));
  return p;
}

ClusterPlan plan_cluster(std::shared_ptr<const Model> model, const std::string& model_path,
                         const net::Tls& tls, const HeadOptions& options) {
  std::unique_ptr<RingImpl> ring = connect_ring(std::move(model), model_path, tls, options);
  RingImpl& r = *ring;
  const HeadOptions& o = r.opt;
  // The fixed split is checked before the (slower) profiles.
  PlanResult fixed_plan;
  if (is_fixed(o)) fixed_plan = fixed_split(*r.model, r);
  const Measured m = measure(*r.model, r);

  ClusterPlan out;
  out.first_layer = m.first;
  out.cost = m.cost;
  out.cluster = m.cluster;
  out.options = m.options;
  out.head_computes = m.head_computes;
  out.names.push_back("head");
  out.threads.push_back(o.threads);
  for (const auto& w : r.workers) {
    out.names.push_back(w->name);
    out.threads.push_back(w->threads);
  }
  if (is_fixed(o)) {
    out.rule = "fixed";
    out.plan.assignment = to_assignment(fixed_plan, m);
    out.plan.prediction = planner::evaluate(m.cost, m.cluster, out.plan.assignment, m.options);
    out.plan.solver = "fixed";
  } else {
    out.rule = rule_name(o.split_rule);
    out.plan = choose(m, o);
  }
  out.even = simple_split(m, o, HeadOptions::SplitRule::kEven);
  out.even_prediction = planner::evaluate(m.cost, m.cluster, out.even, m.options);
  out.memory = simple_split(m, o, HeadOptions::SplitRule::kMemory);
  out.memory_prediction = planner::evaluate(m.cost, m.cluster, out.memory, m.options);
  return out;  // ~RingImpl ends the workers' sessions
}

void measure_worker(RingImpl& r, RemoteWorker& w) {
  if (w.profile.layer_ms.empty()) profile_worker(r, w);
  if (w.probed) return;
  constexpr uint32_t kProbe = 256 * 1024;
  w.rtt_ms = best_probe(w, 0, 3, r.opt.io_timeout);
  const double big = best_probe(w, kProbe, 2, r.opt.io_timeout);
  w.bytes_per_s = std::clamp(2.0 * kProbe / (std::max(big - w.rtt_ms, 1e-3) / 1000.0), 1e5, 1e11);
  w.probed = true;
}

PlanResult ring_plan_from(const planner::Plan& plan, const planner::Cluster& cluster, int first_layer,
                          bool output_at_head, const std::vector<int>& worker_of) {
  const int h = first_layer;
  PlanResult p;
  p.head_first = 0;
  p.head_last = h;
  if (h > 0) p.parts.push_back({-1, 0, h});
  for (const auto& s : plan.assignment.stages) {
    if (s.device == 0) {
      // The head as a stage of its own: after any fixed share it already runs, and
      // only contiguous with it (the head keeps one range).
      check(h == 0 || s.first == 0, "the planner split the head's layers");
      p.head_first = h > 0 ? 0 : s.first + h;
      p.head_last = s.last + h;
      if (h > 0) {
        p.parts.back().last = s.last + h;
      } else {
        p.parts.push_back({-1, s.first + h, s.last + h});
      }
      continue;
    }
    const int w = worker_of.empty() ? s.device - 1 : worker_of[static_cast<size_t>(s.device - 1)];
    p.parts.push_back({w, s.first + h, s.last + h});
  }
  // A plan whose last stage is the head runs the output there too.
  p.output_at_head =
      plan.assignment.output_at_head || output_at_head || p.parts.empty() || p.parts.back().worker < 0;
  p.predicted_ms = plan.prediction.latency_ms;
  p.summary = planner::describe(cluster, plan.assignment);
  return p;
}

}  // namespace braid::dist
