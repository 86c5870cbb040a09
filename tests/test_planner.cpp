// The planner: the exact solver against brute force, the MILP against the exact solver
// on random clusters, hand-checked predictions, and the errors a user sees.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>
#include <limits>
#include <random>

#include "braid/error.h"
#include "braid/planner.h"

namespace braid::planner {
namespace {

constexpr uint64_t kMiB = 1024 * 1024;

// A uniform model: n layers of `layer_mib` MiB weights, no KV cache unless asked.
ModelCost uniform_model(int n, uint64_t layer_mib) {
  ModelCost m;
  m.layer_bytes.assign(n, layer_mib * kMiB);
  m.kv_bytes_per_token.assign(n, 0);
  m.context_length = 0;
  m.hidden_bytes = 8 * 1024;
  m.logits_bytes = 128 * 1024;
  return m;
}

Device device(const std::string& name, int n_layers, double ms_per_layer, uint64_t mem_mib,
              double output_ms = 0) {
  Device d;
  d.name = name;
  d.layer_ms.assign(n_layers, ms_per_layer);
  d.output_ms = output_ms;
  d.memory_bytes = mem_mib * kMiB;
  return d;
}

double rel_diff(double a, double b) { return std::abs(a - b) / std::max({1e-12, std::abs(a), std::abs(b)}); }

struct Instance {
  ModelCost model;
  Cluster cluster;
  Options options;
};

// Random heterogeneous clusters: speeds over a 25x range, budgets from hopeless to ample,
// links from LAN to slow Wi-Fi, all three objectives, with and without output at head.
Instance random_instance(std::mt19937_64& rng, int nd, int nl) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  auto uni = [&](double lo, double hi) { return lo + (hi - lo) * u(rng); };
  auto log_uni = [&](double lo, double hi) { return std::exp(uni(std::log(lo), std::log(hi))); };
  Instance in;
  ModelCost& m = in.model;
  for (int l = 0; l < nl; ++l) {
    m.layer_bytes.push_back(static_cast<uint64_t>(uni(50, 150) * kMiB));
    m.kv_bytes_per_token.push_back(static_cast<uint64_t>(uni(1, 8) * 1024));
  }
  const int64_t contexts[] = {0, 512, 2048, 4096};
  m.context_length = contexts[rng() % 4];
  m.hidden_bytes = static_cast<uint64_t>(uni(2e3, 32e3));
  m.logits_bytes = static_cast<uint64_t>(uni(16e3, 512e3));
  m.embed_bytes = static_cast<uint64_t>(uni(20, 200) * kMiB);
  m.output_bytes = static_cast<uint64_t>(uni(20, 200) * kMiB);
  if (rng() % 2) m.output_bytes_on_head = m.output_bytes / 100;  // tied to the embeddings

  double total = static_cast<double>(m.embed_bytes + m.output_bytes);
  for (int l = 0; l < nl; ++l) {
    total += m.layer_bytes[l] + static_cast<double>(m.kv_bytes_per_token[l]) * m.context_length;
  }
  std::vector<double> base(nl);
  for (double& b : base) b = uni(0.5, 2.0);
  for (int d = 0; d < nd; ++d) {
    Device dev;
    dev.name = cat("d", d);
    const double speed = log_uni(0.2, 5.0);
    for (int l = 0; l < nl; ++l) dev.layer_ms.push_back(speed * base[l] * uni(0.9, 1.1));
    dev.output_ms = speed * uni(0.5, 5.0);
    // Budgets: each device holds between a tenth and all of the model.
    dev.memory_bytes = static_cast<uint64_t>(total * uni(0.1, 1.3));
    in.cluster.devices.push_back(dev);
  }
  in.cluster.links.assign(nd, std::vector<Link>(nd));
  for (int i = 0; i < nd; ++i) {
    for (int j = 0; j < nd; ++j) in.cluster.links[i][j] = {uni(0.05, 10.0), log_uni(1e6, 1e9)};
  }
  in.cluster.head = static_cast<int>(rng() % nd);
  switch (rng() % 3) {
    case 0:
      in.options = Options::latency();
      break;
    case 1:
      in.options = Options::throughput();
      break;
    default:
      in.options.latency_weight = uni(0.0, 1.0);
      in.options.bottleneck_weight = uni(0.0, 1.0);
  }
  in.options.memory_margin = uni(0.0, 0.2);
  in.options.allow_output_at_head = rng() % 5 != 0;
  return in;
}

// Every assignment there is: ordered subsets of devices x compositions of the layers x
// where the output runs, each priced by evaluate(). The oracle's oracle.
double brute_force(const Instance& in, bool& feasible) {
  const int nd = static_cast<int>(in.cluster.devices.size());
  const int nl = in.model.n_layers();
  double best = std::numeric_limits<double>::infinity();
  feasible = false;
  std::vector<int> order;
  std::vector<bool> used(nd, false);
  std::function<void()> orders = [&] {
    if (!order.empty() && static_cast<int>(order.size()) <= nl) {
      // Compositions of nl into order.size() positive parts: choose cut points.
      const int k = static_cast<int>(order.size());
      std::vector<int> cuts(k - 1);
      std::function<void(int, int)> split = [&](int i, int from) {
        if (i == k - 1) {
          Assignment a;
          int first = 0;
          for (int s = 0; s < k; ++s) {
            const int last = s + 1 < k ? cuts[s] : nl;
            a.stages.push_back({order[s], first, last});
            first = last;
          }
          for (int v = 0; v < 2; ++v) {
            if (v == 1 && !in.options.allow_output_at_head) break;
            a.output_at_head = v == 1;
            Prediction p = evaluate(in.model, in.cluster, a, in.options);
            if (p.fits_memory) {
              feasible = true;
              best = std::min(best, p.objective);
            }
          }
          return;
        }
        for (int c = from; c <= nl - (k - 1 - i); ++c) {
          cuts[i] = c;
          split(i + 1, c + 1);
        }
      };
      split(0, 1);
    }
    for (int d = 0; d < nd; ++d) {
      if (used[d]) continue;
      used[d] = true;
      order.push_back(d);
      orders();
      order.pop_back();
      used[d] = false;
    }
  };
  orders();
  return best;
}

TEST(Planner, ExactSolverMatchesBruteForce) {
  std::mt19937_64 rng(7);
  int feasible_count = 0;
  for (int it = 0; it < 150; ++it) {
    const int nd = 1 + static_cast<int>(rng() % 3);
    const int nl = 1 + static_cast<int>(rng() % 6);
    Instance in = random_instance(rng, nd, nl);
    bool feasible = false;
    const double best = brute_force(in, feasible);
    if (!feasible) {
      EXPECT_THROW(solve_exact(in.model, in.cluster, in.options), Error) << "instance " << it;
      continue;
    }
    ++feasible_count;
    Plan p = solve_exact(in.model, in.cluster, in.options);
    EXPECT_TRUE(p.prediction.fits_memory);
    EXPECT_LT(rel_diff(p.prediction.objective, best), 1e-9)
        << "instance " << it << ": exact " << p.prediction.objective << " brute force " << best;
  }
  EXPECT_GT(feasible_count, 60);
}

// Keeps the first n layers of an instance.
void truncate(Instance& in, int n) {
  in.model.layer_bytes.resize(n);
  in.model.kv_bytes_per_token.resize(n);
  for (Device& d : in.cluster.devices) d.layer_ms.resize(n);
}

TEST(Planner, MilpMatchesExactOnRandomClusters) {
  if (!have_milp()) GTEST_SKIP() << "built without COIN-OR CBC";
  std::mt19937_64 rng(2024);
  int feasible = 0, infeasible = 0, left_out = 0, out_at_head = 0;
  double milp_s = 0, exact_s = 0;
  for (int it = 0; it < 220; ++it) {
    const int nd = 2 + static_cast<int>(rng() % 4);
    const int nl = 4 + static_cast<int>(rng() % 21);
    Instance in = random_instance(rng, nd, nl);
    // Bottleneck-first objectives make CBC branch much more (docs/planner.md): up to 16
    // layers for those keeps this test at a few seconds.
    if (in.options.bottleneck_weight > in.options.latency_weight && nl > 16) {
      truncate(in, 4 + nl % 13);
    }
    auto t0 = std::chrono::steady_clock::now();
    Plan exact, milp;
    bool exact_ok = true, milp_ok = true;
    std::string exact_err, milp_err;
    try {
      exact = solve_exact(in.model, in.cluster, in.options);
    } catch (const Error& e) {
      exact_ok = false;
      exact_err = e.what();
    }
    auto t1 = std::chrono::steady_clock::now();
    try {
      milp = solve_milp(in.model, in.cluster, in.options);
    } catch (const Error& e) {
      milp_ok = false;
      milp_err = e.what();
    }
    auto t2 = std::chrono::steady_clock::now();
    exact_s += std::chrono::duration<double>(t1 - t0).count();
    milp_s += std::chrono::duration<double>(t2 - t1).count();
    ASSERT_EQ(exact_ok, milp_ok) << "instance " << it << ": exact: " << exact_err << " milp: " << milp_err;
    if (!exact_ok) {
      ++infeasible;
      EXPECT_EQ(exact_err, milp_err);
      EXPECT_NE(exact_err.find("cannot place the model"), std::string::npos) << exact_err;
      continue;
    }
    ++feasible;
    EXPECT_TRUE(milp.proven_optimal);
    EXPECT_TRUE(milp.prediction.fits_memory) << milp.prediction.memory_problem;
    EXPECT_LT(rel_diff(milp.prediction.objective, exact.prediction.objective), 1e-6)
        << "instance " << it << " (" << nd << " devices, " << in.model.n_layers() << " layers): milp "
        << milp.prediction.objective << " [" << describe(in.cluster, milp.assignment) << "] exact "
        << exact.prediction.objective << " [" << describe(in.cluster, exact.assignment) << "]";
    left_out += static_cast<int>(exact.assignment.stages.size()) < nd;
    out_at_head += exact.assignment.output_at_head;
  }
  // The random clusters cover the interesting cases.
  EXPECT_GE(feasible, 150);
  EXPECT_GE(infeasible, 5);
  EXPECT_GE(left_out, 20);
  EXPECT_GE(out_at_head, 5);
  std::printf(
      "[ info ] %d feasible (%d leave devices out, %d output at head), %d infeasible; "
      "exact %.2f s, milp %.2f s in all\n",
      feasible, left_out, out_at_head, infeasible, exact_s, milp_s);
}

// Two devices, four layers: every number below is worked out by hand.
struct HandCluster {
  ModelCost model = uniform_model(4, 100);
  Cluster cluster;
  HandCluster() {
    model.hidden_bytes = 1000;
    model.logits_bytes = 10000;
    model.embed_bytes = 50 * kMiB;
    model.output_bytes = 50 * kMiB;
    cluster.devices.push_back(device("laptop", 4, 2.0, 1000, 1.0));  // head
    cluster.devices.push_back(device("phone", 4, 4.0, 250, 3.0));
    cluster.set_all_links(1.0, 1e6);  // 1 ms + 1 ms per 1000 bytes
  }
};

TEST(Planner, EvenSplitPrediction) {
  HandCluster hc;
  Assignment even = even_split(hc.model, hc.cluster);
  ASSERT_EQ(even.stages.size(), 2u);
  EXPECT_EQ(even.stages[0].device, 0);
  EXPECT_EQ(even.stages[0].last, 2);
  EXPECT_EQ(even.stages[1].device, 1);
  EXPECT_EQ(even.stages[1].first, 2);
  Options o;
  o.memory_margin = 0;
  Prediction p = evaluate(hc.model, hc.cluster, even, o);
  // laptop: 2 layers x 2 ms + hidden to phone (1 + 1 ms) = 6 ms.
  // phone: 2 layers x 4 ms + output 3 ms + logits back (1 + 10 ms) = 22 ms.
  EXPECT_DOUBLE_EQ(p.devices[0].busy_ms, 6.0);
  EXPECT_DOUBLE_EQ(p.devices[1].busy_ms, 22.0);
  EXPECT_DOUBLE_EQ(p.latency_ms, 28.0);
  EXPECT_DOUBLE_EQ(p.bottleneck_ms, 22.0);
  EXPECT_EQ(p.bottleneck_device, 1);
  EXPECT_DOUBLE_EQ(p.objective, 28.0 + 1e-3 * 22.0);
  // Memory: laptop 200 + 50 embed = 250 MiB; phone 200 + 50 output = 250 MiB: fits exactly.
  EXPECT_EQ(p.devices[0].memory_bytes, 250 * kMiB);
  EXPECT_EQ(p.devices[1].memory_bytes, 250 * kMiB);
  EXPECT_TRUE(p.fits_memory);
  // With the default 10% margin the phone no longer fits, and the prediction says so.
  Prediction q = evaluate(hc.model, hc.cluster, even, Options{});
  EXPECT_FALSE(q.fits_memory);
  EXPECT_FALSE(q.devices[1].fits);
  EXPECT_NE(q.memory_problem.find("device phone would hold 275.0 MiB"), std::string::npos)
      << q.memory_problem;
}

TEST(Planner, MemoryProportionalSplit) {
  HandCluster hc;
  hc.cluster.devices[1].memory_bytes = 333 * kMiB;  // laptop 1000 : phone 333
  Assignment a = memory_split(hc.model, hc.cluster);
  // Shares 4 * 1000/1333 = 3.0008 and 0.999: floors 3 and 0, the remainder goes to the phone.
  ASSERT_EQ(a.stages.size(), 2u);
  EXPECT_EQ(a.stages[0].last, 3);
  EXPECT_EQ(a.stages[1].first, 3);
  hc.cluster.devices[1].memory_bytes = 100 * kMiB;  // 4 * 100/1100 = 0.36: the phone gets none
  a = memory_split(hc.model, hc.cluster);
  ASSERT_EQ(a.stages.size(), 1u);
  EXPECT_EQ(a.stages[0].device, 0);
  Options o;
  Prediction p = evaluate(hc.model, hc.cluster, a, o);
  // laptop alone: 4 x 2 ms + output 1 ms, nothing on the wire.
  EXPECT_DOUBLE_EQ(p.latency_ms, 9.0);
  EXPECT_DOUBLE_EQ(p.bottleneck_ms, 9.0);
}

TEST(Planner, SlowDeviceIsLeftOut) {
  // The head alone holds the model; a second device that is 20x slower would only add
  // time, a third as fast as the head over a fast link splits the pipeline.
  ModelCost m = uniform_model(12, 100);
  Cluster c;
  c.devices.push_back(device("head", 12, 1.0, 4000, 0.5));
  c.devices.push_back(device("slow", 12, 20.0, 4000, 10.0));
  c.devices.push_back(device("peer", 12, 1.0, 4000, 0.5));
  c.set_all_links(0.2, 1e9);
  for (Options o : {Options::latency(), Options::throughput()}) {
    for (auto solver : {Options::Solver::kExact, Options::Solver::kMilp}) {
      if (solver == Options::Solver::kMilp && !have_milp()) continue;
      o.solver = solver;
      Plan p = solve(m, c, o);
      for (const Segment& s : p.assignment.stages) EXPECT_NE(s.device, 1) << describe(c, p.assignment);
    }
  }
  // Latency: one device, no hops: 12 ms + 0.5 ms output.
  Plan lat = solve(m, c, Options::latency());
  EXPECT_EQ(lat.assignment.stages.size(), 1u) << describe(c, lat.assignment);
  EXPECT_NEAR(lat.prediction.latency_ms, 12.5, 1e-9);
  // Throughput: head and peer share the layers; the slow device stays out.
  Plan thr = solve(m, c, Options::throughput());
  EXPECT_EQ(thr.assignment.stages.size(), 2u) << describe(c, thr.assignment);
  EXPECT_LT(thr.prediction.bottleneck_ms, 7.5);
  // The even split over all three is far worse than either plan.
  Prediction even = evaluate(m, c, even_split(m, c), Options::latency());
  EXPECT_GT(even.latency_ms, 2 * lat.prediction.latency_ms);
  EXPECT_GT(even.bottleneck_ms, 2 * thr.prediction.bottleneck_ms);
}

TEST(Planner, SplitsWhenTheHeadCannotHoldTheModel) {
  ModelCost m = uniform_model(8, 100);
  m.embed_bytes = 100 * kMiB;
  m.output_bytes = 100 * kMiB;
  m.output_bytes_on_head = 1 * kMiB;  // tied: the head has the matrix already
  Cluster c;
  c.devices.push_back(device("head", 8, 1.0, 660, 2.0));  // 600 MiB usable with 10%
  c.devices.push_back(device("w1", 8, 1.5, 660, 3.0));
  c.devices.push_back(device("w2", 8, 1.5, 660, 3.0));
  c.set_all_links(0.5, 1e8);
  Plan p = solve(m, c, Options::latency());
  EXPECT_TRUE(p.prediction.fits_memory);
  EXPECT_GE(p.assignment.stages.size(), 2u) << describe(c, p.assignment);
  for (const DeviceLoad& load : p.prediction.devices) {
    EXPECT_LE(load.memory_bytes * 1.1, 660.0 * kMiB);
  }
}

TEST(Planner, OutputAtHeadWhenLogitsAreExpensive) {
  // A big vocabulary over a slow link: sending 1 MB of logits costs 100 ms, the hidden
  // state 0.4 ms; the head runs the output (tied to its embeddings, so no extra memory).
  ModelCost m = uniform_model(4, 100);
  m.hidden_bytes = 4000;
  m.logits_bytes = 1000000;
  m.embed_bytes = 200 * kMiB;
  m.output_bytes = 200 * kMiB;
  m.output_bytes_on_head = 0;
  Cluster c;
  c.devices.push_back(device("head", 4, 1.0, 250, 1.0));  // embeddings only
  c.devices.push_back(device("worker", 4, 1.0, 1000, 1.0));
  c.set_all_links(1.0, 1e7);
  Plan p = solve(m, c, Options::latency());
  ASSERT_EQ(p.assignment.stages.size(), 1u);
  EXPECT_EQ(p.assignment.stages[0].device, 1);
  EXPECT_TRUE(p.assignment.output_at_head);
  // head -> worker 1.4 ms, 4 layers 4 ms, worker -> head 1.4 ms, output 1 ms.
  EXPECT_NEAR(p.prediction.latency_ms, 7.8, 1e-9);
  Options no_head = Options::latency();
  no_head.allow_output_at_head = false;
  Plan q = solve(m, c, no_head);
  EXPECT_FALSE(q.assignment.output_at_head);
  EXPECT_NEAR(q.prediction.latency_ms, 1.4 + 4 + 1 + 101, 1e-9);
}

TEST(Planner, InfeasibleMemorySaysWhatDoesNotFit) {
  ModelCost m = uniform_model(16, 64);    // 1 GiB of weights
  m.kv_bytes_per_token.assign(16, 8192);  // 128 MiB of KV cache at context 1024
  m.context_length = 1024;
  Cluster c;
  c.devices.push_back(device("laptop", 16, 1.0, 500));
  c.devices.push_back(device("phone", 16, 2.0, 400));
  c.set_all_links(1.0, 1e8);
  for (auto solver : {Options::Solver::kExact, Options::Solver::kMilp, Options::Solver::kAuto}) {
    if (solver == Options::Solver::kMilp && !have_milp()) continue;
    Options o;
    o.solver = solver;
    try {
      solve(m, c, o);
      FAIL() << "expected an error";
    } catch (const Error& e) {
      EXPECT_STREQ(e.what(),
                   "cannot place the model: the model needs 1.24 GiB for weights + KV cache at "
                   "context 1024 + embeddings and output with the 10% margin, but the devices "
                   "offer 900.0 MiB in all; the largest layer (0) needs 79.2 MiB with the 10% "
                   "margin and the largest budget is 500.0 MiB (laptop)");
    }
  }
}

TEST(Planner, InfeasibleLayerAndHeadMessages) {
  ModelCost m = uniform_model(4, 100);
  m.layer_bytes[2] = 900 * kMiB;
  Cluster c;
  c.devices.push_back(device("a", 4, 1.0, 800));
  c.devices.push_back(device("b", 4, 1.0, 800));
  c.set_all_links(1.0, 1e8);
  try {
    solve(m, c);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer 2 alone needs 990.0 MiB"), std::string::npos) << e.what();
  }
  ModelCost big_embed = uniform_model(4, 10);
  big_embed.embed_bytes = 790 * kMiB;
  try {
    solve(big_embed, c);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("the head a must hold the token embeddings (869.0 MiB"),
              std::string::npos)
        << e.what();
  }
  // Enough memory in all, but not in contiguous whole layers: 3 layers of 300 MiB on
  // devices of 454.5 MiB usable each.
  ModelCost frag = uniform_model(3, 300);
  Cluster c3;
  c3.devices.push_back(device("a", 3, 1.0, 500));
  c3.devices.push_back(device("b", 3, 1.0, 500));
  c3.set_all_links(1.0, 1e8);
  try {
    solve(frag, c3);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("no split into contiguous ranges of whole layers"),
              std::string::npos)
        << e.what();
  }
}

TEST(Planner, ThroughputBalancesIdenticalDevices) {
  ModelCost m = uniform_model(12, 10);
  Cluster c;
  for (int d = 0; d < 4; ++d) c.devices.push_back(device(cat("d", d), 12, 1.0, 4000));
  c.set_all_links(0.0, 1e12);
  m.hidden_bytes = 0;
  m.logits_bytes = 0;
  Plan p = solve(m, c, Options::throughput());
  EXPECT_EQ(p.assignment.stages.size(), 4u) << describe(c, p.assignment);
  EXPECT_NEAR(p.prediction.bottleneck_ms, 3.0, 1e-9);
  EXPECT_NEAR(p.prediction.latency_ms, 12.0, 1e-9);
}

TEST(Planner, PrefillPrediction) {
  HandCluster hc;
  hc.cluster.devices[0].prefill_layer_ms.assign(4, 0.5);  // the phone has no prefill numbers
  Assignment even = even_split(hc.model, hc.cluster);
  // 10 tokens: laptop 10 x 2 x 0.5 = 10 ms, hop 1 + 10 ms, phone 10 x 2 x 4 = 80 ms,
  // output 3 ms, logits 1 + 10 ms.
  EXPECT_DOUBLE_EQ(predict_prefill_ms(hc.model, hc.cluster, even, 10), 115.0);
  EXPECT_THROW(predict_prefill_ms(hc.model, hc.cluster, even, 0), Error);
}

TEST(Planner, EvaluateRejectsMalformedAssignments) {
  HandCluster hc;
  auto bad = [&](Assignment a, const std::string& what) {
    try {
      evaluate(hc.model, hc.cluster, a);
      ADD_FAILURE() << "accepted: " << what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  bad({}, "no stages");
  bad({{{0, 0, 2}, {0, 2, 4}}}, "appears twice");
  bad({{{0, 0, 2}, {1, 3, 4}}}, "expected a non-empty range starting at 2");
  bad({{{0, 0, 2}, {2, 2, 4}}}, "not one of the 2 devices");
  bad({{{0, 0, 3}}}, "cover layers [0, 3) of 4");
  bad({{{0, 0, 0}, {1, 0, 4}}}, "non-empty");
}

TEST(Planner, ValidateRejectsBadInputs) {
  HandCluster hc;
  auto bad = [&](const std::function<void(ModelCost&, Cluster&, Options&)>& edit, const std::string& what) {
    ModelCost m = hc.model;
    Cluster c = hc.cluster;
    Options o;
    edit(m, c, o);
    try {
      solve(m, c, o);
      ADD_FAILURE() << "accepted: " << what;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  bad([](ModelCost& m, Cluster&, Options&) { m.layer_bytes.clear(); }, "no layers");
  bad([](ModelCost& m, Cluster&, Options&) { m.kv_bytes_per_token.pop_back(); }, "KV sizes for 3");
  bad([](ModelCost&, Cluster& c, Options&) { c.devices[1].layer_ms.pop_back(); },
      "phone has times for 3 layers");
  bad([](ModelCost&, Cluster& c, Options&) { c.devices[1].layer_ms[0] = NAN; }, "layer time");
  bad([](ModelCost&, Cluster& c, Options&) { c.links[0][1].bytes_per_s = 0; },
      "link laptop -> phone has bandwidth 0");
  bad([](ModelCost&, Cluster& c, Options&) { c.links.pop_back(); }, "1 rows for 2 devices");
  bad([](ModelCost&, Cluster& c, Options&) { c.head = 2; }, "head index 2");
  bad([](ModelCost&, Cluster& c, Options&) { c.devices.clear(); }, "no devices");
  bad([](ModelCost&, Cluster&, Options& o) { o.latency_weight = o.bottleneck_weight = 0; }, "not both zero");
  bad([](ModelCost&, Cluster&, Options& o) { o.memory_margin = -1; }, "memory margin");
  bad([](ModelCost& m, Cluster&, Options&) { m.context_length = -5; }, "context length");
}

TEST(Planner, ExactRefusesLargeClusters) {
  ModelCost m = uniform_model(4, 1);
  Cluster c;
  for (int d = 0; d < kExactMaxDevices + 1; ++d) c.devices.push_back(device("d", 4, 1.0, 100));
  c.set_all_links(1.0, 1e8);
  EXPECT_THROW(solve_exact(m, c), Error);
  if (have_milp()) {
    Plan p = solve(m, c);  // the MILP handles it
    EXPECT_EQ(p.solver, "cbc");
    EXPECT_EQ(p.assignment.stages.size(), 1u);
  }
}

TEST(Planner, Describe) {
  HandCluster hc;
  Assignment a = even_split(hc.model, hc.cluster);
  EXPECT_EQ(describe(hc.cluster, a), "head laptop -> laptop [0, 2) -> phone [2, 4) -> head laptop (logits)");
  a.output_at_head = true;
  EXPECT_EQ(describe(hc.cluster, a),
            "head laptop -> laptop [0, 2) -> phone [2, 4) -> head laptop (hidden state; the head "
            "runs the output)");
}

}  // namespace
}  // namespace braid::planner
