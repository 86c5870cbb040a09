// Speeds from run time. Every decode token's reply carries each stage's compute time
// (the balancer's telemetry, head_balance.cpp); the head also keeps them per worker, for
// the range the worker runs. A re-plan (a lost worker, or a balancing move) of a ring
// that started from a fixed split has no profiles: instead of having every survivor
// profile the model then (a few decode tokens' worth of compute on each, while the
// user waits), it prices each worker from what its stage took while it ran. Layers it
// did not run are estimated at the same ms per weight byte, as measure_profile does for
// layers it cannot time (decode is bound by reading the weights). The times include a
// worker's emulated slowdown and whatever else slows it now, which is what a re-plan
// should see.
#include <algorithm>
#include <cstddef>

#include "dist/head_ring.h"

namespace braid::dist {
namespace {

std::vector<double> last_n(const RunTimes& r, size_t window) {
  const size_t n = std::min(r.ms.size(), std::max<size_t>(window, 1));
  return std::vector<double>(r.ms.end() - static_cast<std::ptrdiff_t>(n), r.ms.end());
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

void record_run_time(RemoteWorker& w, double ms) {
  RunTimes& r = w.ran;
  if (r.first != w.first || r.last != w.last || r.output != w.output) {
    r.first = w.first;
    r.last = w.last;
    r.output = w.output;
    r.ms.clear();
  }
  r.ms.push_back(ms);
  if (r.ms.size() > RunTimes::kKeep) r.ms.erase(r.ms.begin());
}

double recent_run_ms(const RemoteWorker& w, size_t window) { return median(last_n(w.ran, window)); }

bool derive_profile(const Model& model, RemoteWorker& w, size_t window) {
  const RunTimes& r = w.ran;
  // Only times of the range the worker still runs (a record of an older one is stale).
  if (r.ms.size() < kMinRunTimes || r.first != w.first || r.last != w.last || r.output != w.output)
    return false;
  double bytes = 0;
  for (int l = r.first; l < r.last; ++l) bytes += static_cast<double>(model.layer_weight_bytes(l));
  if (r.output) bytes += static_cast<double>(model.output_weight_bytes());
  const double ms = recent_run_ms(w, window);
  if (bytes <= 0 || ms <= 0) return false;
  const double ms_per_byte = ms / bytes;
  const int n_layers = model.config().n_layers;
  w.profile.layer_ms.assign(static_cast<size_t>(n_layers), 0.0);
  for (int l = 0; l < n_layers; ++l)
    w.profile.layer_ms[static_cast<size_t>(l)] = ms_per_byte * static_cast<double>(model.layer_weight_bytes(l));
  w.profile.output_ms = ms_per_byte * static_cast<double>(model.output_weight_bytes());
  w.profile.memory_bytes = 0;
  w.profile_derived = true;
  return true;
}

}  // namespace braid::dist
