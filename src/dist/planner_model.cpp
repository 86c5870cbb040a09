// The cost model (docs/planner.md, "The model"): input validation, prefix sums, the
// evaluation of any assignment and the explanation of a model that does not fit.
#include "dist/planner_model.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <numeric>

#include "braid/error.h"

namespace braid::planner {
namespace {

std::string device_name(const Cluster& cluster, int d) {
  const std::string& n = cluster.devices[d].name;
  return n.empty() ? cat("device ", d) : n;
}

bool finite_nonneg(double x) { return std::isfinite(x) && x >= 0; }

}  // namespace

void Cluster::set_all_links(double latency_ms, double bytes_per_s) {
  links.assign(devices.size(), std::vector<Link>(devices.size(), Link{latency_ms, bytes_per_s}));
}

void validate(const ModelCost& model, const Cluster& cluster, const Options& options) {
  const size_t n = model.layer_bytes.size();
  check(n >= 1, "planner: the model has no layers");
  check(n <= 100000, "planner: the model has ", n, " layers, more than 100000");
  check(model.kv_bytes_per_token.size() == n, "planner: the model has ", n, " layers but KV sizes for ",
        model.kv_bytes_per_token.size());
  check(model.context_length >= 0 && model.context_length <= (int64_t{1} << 32), "planner: context length ",
        model.context_length, " is out of range");
  // Every byte count the planner adds up must stay far from overflow.
  long double total =
      static_cast<long double>(model.embed_bytes) + model.output_bytes + model.head_output_bytes();
  for (size_t l = 0; l < n; ++l) {
    total +=
        model.layer_bytes[l] + static_cast<long double>(model.kv_bytes_per_token[l]) * model.context_length;
  }
  check(total < std::ldexp(1.0L, 62), "planner: the model's byte counts are implausibly large");

  const size_t nd = cluster.devices.size();
  check(nd >= 1, "planner: the cluster has no devices");
  check(nd <= 64, "planner: ", nd, " devices, more than the 64 the planner handles");
  check(cluster.head >= 0 && static_cast<size_t>(cluster.head) < nd, "planner: head index ", cluster.head,
        " is not one of the ", nd, " devices");
  for (size_t d = 0; d < nd; ++d) {
    const Device& dev = cluster.devices[d];
    const std::string name = device_name(cluster, static_cast<int>(d));
    check(dev.layer_ms.size() == n, "planner: device ", name, " has times for ", dev.layer_ms.size(),
          " layers, the model has ", n);
    check(dev.prefill_layer_ms.empty() || dev.prefill_layer_ms.size() == n, "planner: device ", name,
          " has prefill times for ", dev.prefill_layer_ms.size(), " layers, the model has ", n);
    for (double t : dev.layer_ms) {
      check(finite_nonneg(t) && t < 1e9, "planner: device ", name, " has layer time ", t, " ms");
    }
    for (double t : dev.prefill_layer_ms) {
      check(finite_nonneg(t) && t < 1e9, "planner: device ", name, " has prefill time ", t, " ms");
    }
    check(finite_nonneg(dev.output_ms) && dev.output_ms < 1e9, "planner: device ", name, " has output time ",
          dev.output_ms, " ms");
  }
  check(cluster.links.size() == nd, "planner: the link matrix has ", cluster.links.size(), " rows for ", nd,
        " devices");
  for (size_t i = 0; i < nd; ++i) {
    check(cluster.links[i].size() == nd, "planner: link matrix row ", i, " has ", cluster.links[i].size(),
          " entries for ", nd, " devices");
    for (size_t j = 0; j < nd; ++j) {
      if (i == j) continue;
      const Link& l = cluster.links[i][j];
      check(finite_nonneg(l.latency_ms) && l.latency_ms < 1e9, "planner: link ",
            device_name(cluster, static_cast<int>(i)), " -> ", device_name(cluster, static_cast<int>(j)),
            " has latency ", l.latency_ms, " ms");
      check(l.bytes_per_s > 0 && !std::isnan(l.bytes_per_s), "planner: link ",
            device_name(cluster, static_cast<int>(i)), " -> ", device_name(cluster, static_cast<int>(j)),
            " has bandwidth ", l.bytes_per_s, " bytes/s (must be positive)");
    }
  }
  check(finite_nonneg(options.latency_weight) && finite_nonneg(options.bottleneck_weight) &&
            options.latency_weight + options.bottleneck_weight > 0,
        "planner: objective weights must be non-negative and not both zero (latency ", options.latency_weight,
        ", bottleneck ", options.bottleneck_weight, ")");
  check(finite_nonneg(options.memory_margin) && options.memory_margin <= 10, "planner: memory margin ",
        options.memory_margin, " is out of range [0, 10]");
  check(options.time_limit_s > 0 && !std::isnan(options.time_limit_s),
        "planner: time limit must be positive");
}

namespace detail {

CostModel::CostModel(const ModelCost& model, const Cluster& cluster, const Options& options)
    : model_(model),
      cluster_(cluster),
      options_(options),
      n_layers_(model.n_layers()),
      n_devices_(static_cast<int>(cluster.devices.size())),
      head_(cluster.head) {
  ms_prefix_.assign(n_devices_, std::vector<double>(n_layers_ + 1, 0.0));
  for (int d = 0; d < n_devices_; ++d) {
    for (int l = 0; l < n_layers_; ++l) {
      ms_prefix_[d][l + 1] = ms_prefix_[d][l] + cluster.devices[d].layer_ms[l];
    }
  }
  bytes_prefix_.assign(n_layers_ + 1, 0);
  for (int l = 0; l < n_layers_; ++l) {
    bytes_prefix_[l + 1] = bytes_prefix_[l] + model.layer_bytes[l] +
                           model.kv_bytes_per_token[l] * static_cast<uint64_t>(model.context_length);
  }
}

double CostModel::transfer_ms(int from, int to, uint64_t bytes) const {
  if (from == to) return 0;
  const Link& l = cluster_.links[from][to];
  return l.latency_ms + 1000.0 * static_cast<double>(bytes) / l.bytes_per_s;
}

bool CostModel::fits(int d, uint64_t need) const {
  return static_cast<long double>(need) * (1.0L + options_.memory_margin) <=
         static_cast<long double>(cluster_.devices[d].memory_bytes);
}

double CostModel::usable_bytes(int d) const {
  return static_cast<double>(cluster_.devices[d].memory_bytes) / (1.0 + options_.memory_margin);
}

std::string format_bytes(double bytes) {
  char buf[64];
  if (bytes >= 1024.0 * 1024 * 1024) {
    std::snprintf(buf, sizeof buf, "%.2f GiB", bytes / (1024.0 * 1024 * 1024));
  } else if (bytes >= 1024.0 * 1024) {
    std::snprintf(buf, sizeof buf, "%.1f MiB", bytes / (1024.0 * 1024));
  } else if (bytes >= 1024.0) {
    std::snprintf(buf, sizeof buf, "%.1f KiB", bytes / 1024.0);
  } else {
    std::snprintf(buf, sizeof buf, "%.0f B", bytes);
  }
  return buf;
}

std::string explain_infeasible(const ModelCost& model, const Cluster& cluster, const Options& options) {
  CostModel c(model, cluster, options);
  const double factor = 1.0 + options.memory_margin;
  const std::string margin = cat(" with the ", std::lround(options.memory_margin * 100), "% margin");
  const int h = c.head();
  const std::string head = device_name(cluster, h);

  if (!c.fits(h, c.embed_bytes())) {
    return cat("the head ", head, " must hold the token embeddings (", format_bytes(c.embed_bytes() * factor),
               margin, ") but its budget is ", format_bytes(cluster.devices[h].memory_bytes));
  }
  const double need = static_cast<double>(c.layers_bytes(0, c.n_layers())) +
                      static_cast<double>(c.embed_bytes()) +
                      static_cast<double>(std::min(model.output_bytes, model.head_output_bytes()));
  double offered = 0;
  int largest_device = 0;
  for (int d = 0; d < c.n_devices(); ++d) {
    offered += static_cast<double>(cluster.devices[d].memory_bytes);
    if (cluster.devices[d].memory_bytes > cluster.devices[largest_device].memory_bytes) {
      largest_device = d;
    }
  }
  int largest_layer = 0;
  for (int l = 1; l < c.n_layers(); ++l) {
    if (c.layer_bytes(l) > c.layer_bytes(largest_layer)) largest_layer = l;
  }
  const std::string largest = cat(
      "; the largest layer (", largest_layer, ") needs ", format_bytes(c.layer_bytes(largest_layer) * factor),
      margin, " and the largest budget is ", format_bytes(cluster.devices[largest_device].memory_bytes), " (",
      device_name(cluster, largest_device), ")");
  const std::string needs =
      cat("the model needs ", format_bytes(need * factor), " for weights + KV cache at context ",
          model.context_length, " + embeddings and output", margin);
  if (need * factor > offered) {
    return cat(needs, ", but the devices offer ", format_bytes(offered), " in all", largest);
  }
  if (!c.fits(largest_device, c.layer_bytes(largest_layer))) {
    return cat("layer ", largest_layer, " alone needs ", format_bytes(c.layer_bytes(largest_layer) * factor),
               " (weights + KV cache at context ", model.context_length, margin,
               "), more than any device's budget: the largest is ",
               format_bytes(cluster.devices[largest_device].memory_bytes), " (",
               device_name(cluster, largest_device), ")");
  }
  return cat(needs, " and the devices offer ", format_bytes(offered),
             " in all, but no split into contiguous ranges of whole layers fits every device's "
             "budget",
             largest);
}

}  // namespace detail

Prediction evaluate(const ModelCost& model, const Cluster& cluster, const Assignment& a,
                    const Options& options) {
  validate(model, cluster, options);
  detail::CostModel c(model, cluster, options);
  const int nd = c.n_devices(), h = c.head();
  check(!a.stages.empty(), "planner: the assignment has no stages");
  std::vector<bool> seen(nd, false);
  int next_layer = 0;
  for (size_t i = 0; i < a.stages.size(); ++i) {
    const Segment& s = a.stages[i];
    check(s.device >= 0 && s.device < nd, "planner: stage ", i, " names device ", s.device,
          ", not one of the ", nd, " devices");
    check(!seen[s.device], "planner: device ", device_name(cluster, s.device), " appears twice in the ring");
    seen[s.device] = true;
    check(s.first == next_layer && s.last > s.first && s.last <= c.n_layers(), "planner: stage ", i, " (",
          device_name(cluster, s.device), ") has layers [", s.first, ", ", s.last,
          "), expected a non-empty range starting at ", next_layer, " within ", c.n_layers(), " layers");
    next_layer = s.last;
  }
  check(next_layer == c.n_layers(), "planner: the stages cover layers [0, ", next_layer, ") of ",
        c.n_layers());

  Prediction p;
  p.devices.assign(nd, DeviceLoad{});
  DeviceLoad& head = p.devices[h];
  head.used = true;
  head.memory_bytes += c.embed_bytes();
  head.send_ms += c.hidden_ms(h, a.stages.front().device);
  const int last = a.stages.back().device;
  const bool out_head = a.output_at_head && last != h;
  for (size_t i = 0; i < a.stages.size(); ++i) {
    const Segment& s = a.stages[i];
    DeviceLoad& load = p.devices[s.device];
    load.used = true;
    load.compute_ms += c.compute_ms(s.device, s.first, s.last);
    load.memory_bytes += c.layers_bytes(s.first, s.last);
    if (i + 1 < a.stages.size()) {
      load.send_ms += c.hidden_ms(s.device, a.stages[i + 1].device);
    } else if (out_head) {
      load.send_ms += c.hidden_ms(s.device, h);
      head.compute_ms += c.output_ms(h);
      head.memory_bytes += c.output_bytes(h);
    } else {
      load.compute_ms += c.output_ms(s.device);
      load.memory_bytes += c.output_bytes(s.device);
      load.send_ms += c.logits_ms(s.device, h);
    }
  }
  for (int d = 0; d < nd; ++d) {
    DeviceLoad& load = p.devices[d];
    load.busy_ms = load.compute_ms + load.send_ms;
    p.latency_ms += load.busy_ms;
    if (p.bottleneck_device < 0 || load.busy_ms > p.bottleneck_ms) {
      p.bottleneck_ms = load.busy_ms;
      p.bottleneck_device = d;
    }
    load.fits = c.fits(d, load.memory_bytes);
    if (!load.fits && p.fits_memory) {
      p.fits_memory = false;
      p.memory_problem =
          cat("device ", device_name(cluster, d), " would hold ",
              detail::format_bytes(load.memory_bytes * (1.0 + options.memory_margin)), " with the ",
              std::lround(options.memory_margin * 100), "% margin but its budget is ",
              detail::format_bytes(cluster.devices[d].memory_bytes));
    }
  }
  p.objective = c.objective(p.latency_ms, p.bottleneck_ms);
  return p;
}

double predict_prefill_ms(const ModelCost& model, const Cluster& cluster, const Assignment& a,
                          int64_t n_tokens) {
  check(n_tokens >= 1, "planner: prefill of ", n_tokens, " tokens");
  evaluate(model, cluster, a);  // validates the assignment
  detail::CostModel c(model, cluster, Options{});
  const int h = c.head();
  const uint64_t batch = model.hidden_bytes * static_cast<uint64_t>(n_tokens);
  double ms = c.transfer_ms(h, a.stages.front().device, batch);
  for (size_t i = 0; i < a.stages.size(); ++i) {
    const Segment& s = a.stages[i];
    const Device& dev = cluster.devices[s.device];
    const std::vector<double>& per_token = dev.prefill_layer_ms.empty() ? dev.layer_ms : dev.prefill_layer_ms;
    ms += static_cast<double>(n_tokens) *
          std::accumulate(per_token.begin() + s.first, per_token.begin() + s.last, 0.0);
    if (i + 1 < a.stages.size()) ms += c.transfer_ms(s.device, a.stages[i + 1].device, batch);
  }
  const int last = a.stages.back().device;
  if (a.output_at_head && last != h) {
    ms += c.hidden_ms(last, h) + c.output_ms(h);
  } else {
    ms += c.output_ms(last) + c.logits_ms(last, h);
  }
  return ms;
}

namespace {

std::vector<int> default_order(const Cluster& cluster, std::vector<int> order) {
  const int nd = static_cast<int>(cluster.devices.size());
  if (order.empty()) {
    order.push_back(cluster.head);
    for (int d = 0; d < nd; ++d) {
      if (d != cluster.head) order.push_back(d);
    }
  }
  std::vector<bool> seen(nd, false);
  for (int d : order) {
    check(d >= 0 && d < nd && !seen[d], "planner: device order names ", d, " twice or out of range");
    seen[d] = true;
  }
  return order;
}

Assignment from_counts(const std::vector<int>& order, const std::vector<int>& counts) {
  Assignment a;
  int next = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    if (counts[i] == 0) continue;
    a.stages.push_back({order[i], next, next + counts[i]});
    next += counts[i];
  }
  return a;
}

}  // namespace

Assignment even_split(const ModelCost& model, const Cluster& cluster, std::vector<int> order) {
  order = default_order(cluster, std::move(order));
  const int n = model.n_layers();
  check(n >= 1 && !order.empty(), "planner: nothing to split");
  const int k = std::min<int>(n, static_cast<int>(order.size()));
  std::vector<int> counts(order.size(), 0);
  for (int i = 0; i < k; ++i) counts[i] = n / k + (i < n % k ? 1 : 0);
  return from_counts(order, counts);
}

Assignment memory_split(const ModelCost& model, const Cluster& cluster, std::vector<int> order) {
  order = default_order(cluster, std::move(order));
  const int n = model.n_layers();
  check(n >= 1 && !order.empty(), "planner: nothing to split");
  long double total = 0;
  for (int d : order) total += cluster.devices[d].memory_bytes;
  if (total <= 0) return even_split(model, cluster, order);
  std::vector<int> counts(order.size());
  std::vector<std::pair<long double, size_t>> remainders;
  int given = 0;
  for (size_t i = 0; i < order.size(); ++i) {
    const long double share = n * (cluster.devices[order[i]].memory_bytes / total);
    counts[i] = static_cast<int>(std::floor(share));
    given += counts[i];
    remainders.push_back({share - counts[i], i});
  }
  // Largest remainders first; ties go to the earlier device in the order.
  std::stable_sort(remainders.begin(), remainders.end(),
                   [](const auto& x, const auto& y) { return x.first > y.first; });
  for (size_t r = 0; given < n; ++r, ++given) counts[remainders[r].second] += 1;
  return from_counts(order, counts);
}

std::string describe(const Cluster& cluster, const Assignment& a) {
  // "head laptop" names the head's device; a head called just "head" is said once.
  const std::string name = device_name(cluster, cluster.head);
  const std::string head = name == "head" ? name : "head " + name;
  std::string s = head;
  for (const Segment& seg : a.stages) {
    s += cat(" -> ", device_name(cluster, seg.device), " [", seg.first, ", ", seg.last, ")");
  }
  const bool out_head = a.output_at_head && !a.stages.empty() && a.stages.back().device != cluster.head;
  s += out_head ? cat(" -> ", head, " (hidden state; the head runs the output)") : cat(" -> ", head, " (logits)");
  return s;
}

}  // namespace braid::planner
