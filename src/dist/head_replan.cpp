// Who runs what after a worker was lost (or balancing re-plans): the planner over the
// workers that are left, with the profiles and link measurements the head took at the
// start. A ring that began with a fixed split never profiled its workers: each is priced
// from the stage times it reported while it ran (head_speed.cpp), and only one that has
// none (it never ran a decode token) is profiled now. Such a worker's memory budget is
// unknown (only PROFILE reports it): the plan takes it as unbounded, as the fixed split
// did, and a worker that refuses what it cannot hold (--mem-limit) fails the attempt;
// the next one profiles the workers priced so (recover, head_recover.cpp). The head's
// fixed share (HeadOptions::head_layers >= 0) stays; with head_layers < 0 the head may
// take layers itself. The model's costs are priced as at the start (head_plan.cpp).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <exception>
#include <future>

#include "braid/error.h"
#include "braid/planner.h"
#include "dist/head_ring.h"
#include "dist/worker_stream.h"

namespace braid::dist {
namespace {

constexpr double kOutOfReach = 1e8;  // ms: a device that may not run something
constexpr uint64_t kUnknownMemory = uint64_t{1} << 50;  // bytes: a budget nobody reported

std::string ms2(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", x);
  return buf;
}

}  // namespace

PlanResult RingImpl::plan_survivors(bool profile_derived) {
  const HeadOptions& o = opt;
  const ModelConfig& c = model->config();
  const int h = std::max(0, o.head_layers);
  const bool head_computes = o.head_layers < 0;

  std::vector<int> alive;  // worker indices, in their original order
  for (size_t i = 0; i < workers.size(); ++i)
    if (!workers[i]->lost.load() && workers[i]->control) alive.push_back(static_cast<int>(i));
  if (alive.empty() && !head_computes) throw NoPlacement("no worker is left to run the layers");
  // Speeds: a measured profile, else the worker's own recent stage times (the same
  // window the balancer judges by), else a profile now.
  const size_t window = static_cast<size_t>(opt.balance_window > 0 ? opt.balance_window : 8);
  std::string from_run, profiled;
  int n_from_run = 0, n_profiled = 0;
  {
    std::lock_guard<std::mutex> lock(balance_mu);
    for (int i : alive) {
      RemoteWorker& w = *workers[static_cast<size_t>(i)];
      if (w.profile_derived && profile_derived) {
        w.profile = DeviceProfile{};
        w.profile_derived = false;
      }
      if (w.profile.layer_ms.empty() || w.profile_derived) {
        if (!profile_derived && derive_profile(*model, w, window)) {
          from_run += cat(from_run.empty() ? "" : ", ", w.addr.str(), " ", ms2(recent_run_ms(w, window)),
                          " ms for [", w.ran.first, ", ", w.ran.last, ")", w.ran.output ? " + output" : "");
          ++n_from_run;
        } else if (w.profile_derived) {  // no new times since: the speeds of the last re-plan
          from_run += cat(from_run.empty() ? "" : ", ", w.addr.str(), " as before");
          ++n_from_run;
        } else if (w.profile.layer_ms.empty()) {
          profiled += cat(profiled.empty() ? "" : ", ", w.addr.str());
          ++n_profiled;
        }
      }
    }
  }
  speeds_note.clear();
  if (n_from_run > 0) speeds_note = cat(n_from_run, n_from_run == 1 ? " speed" : " speeds", " from run time");
  if (n_profiled > 0) speeds_note += cat(speeds_note.empty() ? "" : ", ", "profiled ", n_profiled);
  if (!speeds_note.empty()) {
    log(cat("re-plan: ", from_run.empty() ? "" : "speeds from run time: " + from_run,
            from_run.empty() || profiled.empty() ? "" : "; ",
            profiled.empty() ? ""
                              : cat("profiling ", profiled,
                                    profile_derived ? " (a plan on speeds from run time failed)" : " (no decode times)")));
  }
  // All at once: each profile takes a while.
  for_each_parallel(alive.size(),
                    [this, &alive](size_t k) { measure_worker(*this, *workers[static_cast<size_t>(alive[k])]); });
  for (int i : alive) {
    const RemoteWorker& w = *workers[static_cast<size_t>(i)];
    check(static_cast<int>(w.profile.layer_ms.size()) == c.n_layers, w.label(), " profiled ",
          w.profile.layer_ms.size(), " layers, the model has ", c.n_layers);
  }

  planner::ModelCost cost;
  const uint64_t kv_per_token = 2 * sizeof(float) * static_cast<uint64_t>(c.kv_dim());
  for (int l = h; l < c.n_layers; ++l) {
    cost.layer_bytes.push_back(model->layer_weight_bytes(l));
    cost.kv_bytes_per_token.push_back(kv_per_token);
  }
  cost.context_length = static_cast<int64_t>(o.n_ctx) * o.max_sequences;
  cost.hidden_bytes = proto::wire_bytes(transfer, 1, static_cast<uint64_t>(c.dim));
  cost.logits_bytes = sizeof(float) * static_cast<uint64_t>(c.n_vocab);
  cost.embed_bytes = model->embed_weight_bytes();
  cost.output_bytes = model->output_weight_bytes();
  if (c.tied_output) cost.output_bytes_on_head = model->output_weight_bytes() - model->token_embd().nbytes;

  planner::Options po;
  if (o.objective == HeadOptions::Objective::kThroughput) po = planner::Options::throughput();
  po.allow_output_at_head = head_computes || o.output_at_head;

  planner::Cluster cl;
  cl.head = 0;
  planner::Device head;
  head.name = "head";
  if (head_computes || o.output_at_head) {
    if (head_layer_ms.empty()) {
      const DeviceProfile p = measure_profile(*model, *pool, 1.0, 0);
      head_layer_ms = p.layer_ms;
      head_output_ms = p.output_ms;
      head_memory = p.memory_bytes;
    }
    head.layer_ms = head_layer_ms;
    head.output_ms = head_output_ms;
    head.memory_bytes = head_memory;
  }
  if (!head_computes) {
    // Layers stay off the head: priced out of reach, and a budget of only what it must
    // hold, so that survivors too small for the model are an error that says so.
    head.layer_ms.assign(static_cast<size_t>(c.n_layers), kOutOfReach);
    const double must_hold = static_cast<double>(cost.embed_bytes) +
                             (o.output_at_head ? static_cast<double>(cost.head_output_bytes()) : 0.0);
    head.memory_bytes = static_cast<uint64_t>(std::ceil(must_hold * (1.0 + po.memory_margin))) + 64;
  }
  head.layer_ms.erase(head.layer_ms.begin(), head.layer_ms.begin() + h);
  cl.devices.push_back(head);
  for (int i : alive) {
    const RemoteWorker& w = *workers[static_cast<size_t>(i)];
    planner::Device d;
    d.name = w.addr.str();
    d.layer_ms.assign(w.profile.layer_ms.begin() + h, w.profile.layer_ms.end());
    d.output_ms = o.output_at_head ? kOutOfReach : w.profile.output_ms;
    d.memory_bytes = w.profile.memory_bytes ? w.profile.memory_bytes : kUnknownMemory;
    cl.devices.push_back(d);
  }
  const size_t nd = cl.devices.size();
  cl.links.assign(nd, std::vector<planner::Link>(nd));
  for (size_t i = 0; i < nd; ++i) {
    for (size_t j = 0; j < nd; ++j) {
      if (i == j) continue;
      // As at the start: head <-> worker measured, worker <-> worker the slower of both.
      const RemoteWorker* a = i ? workers[static_cast<size_t>(alive[i - 1])].get() : nullptr;
      const RemoteWorker* b = j ? workers[static_cast<size_t>(alive[j - 1])].get() : nullptr;
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

  planner::Plan plan;
  try {
    plan = planner::solve(cost, cl, po);
  } catch (const Error& e) {
    throw NoPlacement(e.what());
  }

  PlanResult p = ring_plan_from(plan, cl, h, o.output_at_head, alive);
  log(cat("re-plan (", plan.solver, "): ", p.summary, ", predicted ", plan.prediction.latency_ms,
          " ms/token"));
  return p;
}

}  // namespace braid::dist
