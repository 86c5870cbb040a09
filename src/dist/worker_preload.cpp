#include "dist/worker_preload.h"

#include <sys/mman.h>
#include <unistd.h>
#ifdef __linux__
#include <pthread.h>
#include <sched.h>
#include <sys/syscall.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>

#include "braid/error.h"
#include "braid/mapped_file.h"
#include "dist/worker_impl.h"
#include "dist/worker_model.h"

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22  // Linux 5.14; older kernels answer EINVAL and pages are touched
#endif

namespace braid::dist {
namespace {

using Clock = std::chrono::steady_clock;

uint64_t weight_bytes(const Model& m, int layer) {
  return layer == m.config().n_layers ? m.output_weight_bytes() : m.layer_weight_bytes(layer);
}

// The bytes of a layer's tensors in the model's file ("blk.L." ones), or of the output
// (layer == n_layers: its norm and matrix, token_embd when tied).
std::vector<std::pair<const uint8_t*, size_t>> spans(const Model& m, int layer) {
  std::vector<std::pair<const uint8_t*, size_t>> out;
  if (layer == m.config().n_layers) {
    const Tensor& w = m.output_weight();
    out.emplace_back(w.data, w.nbytes);
    if (const Tensor* n = m.gguf().find_tensor("output_norm.weight")) out.emplace_back(n->data, n->nbytes);
    return out;
  }
  const std::string prefix = cat("blk.", layer, ".");
  for (const Tensor& t : m.gguf().tensors())
    if (t.name.compare(0, prefix.size(), prefix) == 0 && t.data && t.nbytes) out.emplace_back(t.data, t.nbytes);
  return out;
}

const size_t kPage = static_cast<size_t>(sysconf(_SC_PAGESIZE) > 0 ? sysconf(_SC_PAGESIZE) : 4096);
constexpr size_t kStep = size_t{1} << 20;  // bytes warmed between two looks at Run::stop

uintptr_t page_down(const uint8_t* p) { return reinterpret_cast<uintptr_t>(p) & ~(kPage - 1); }
uintptr_t page_up(uintptr_t a) { return (a + kPage - 1) & ~(kPage - 1); }

// Gives back the pages that lie wholly inside a span (a page shared with a neighbouring
// tensor stays).
void release(const std::pair<const uint8_t*, size_t>& s) { MappedFile::drop_pages(s.first, s.second); }

// "84 MiB", "356 KiB" (small models in tests).
std::string size_text(uint64_t bytes) {
  return bytes >= (uint64_t{16} << 20) ? cat(bytes >> 20, " MiB") : cat(bytes >> 10, " KiB");
}

// The calling thread yields the CPU and the disk to everything else.
void lower_priority() {
#ifdef __linux__
  sched_param p{};
  pthread_setschedparam(pthread_self(), SCHED_IDLE, &p);
  constexpr int kWhoProcess = 1, kClassIdle = 3, kClassShift = 13;  // linux/ioprio.h
  syscall(SYS_ioprio_set, kWhoProcess, 0, kClassIdle << kClassShift);
#endif
}

}  // namespace

PreloadSet choose_preload(const Model& model, int first, int last, bool runs_output, uint64_t budget) {
  const int n = model.config().n_layers;
  PreloadSet out;
  out.budget = budget;
  // Candidates below and above the range, nearest first; the output follows the last layer.
  std::vector<int> below, above;
  for (int l = first - 1; l >= 0; --l) below.push_back(l);
  for (int l = last; l < n; ++l) above.push_back(l);
  if (!runs_output) above.push_back(n);
  size_t i = 0, j = 0;
  bool below_open = true, above_open = true;
  while ((below_open && i < below.size()) || (above_open && j < above.size())) {
    // Alternate: the side whose next candidate is nearer goes first (below on a tie).
    const bool take_below = below_open && i < below.size() &&
                            (!above_open || j >= above.size() || first - below[i] <= above[j] - last + 1);
    std::vector<int>& side = take_below ? below : above;
    size_t& k = take_below ? i : j;
    const uint64_t b = weight_bytes(model, side[k]);
    if (b > budget - out.bytes) {
      (take_below ? below_open : above_open) = false;
      continue;
    }
    out.layers.push_back(side[k]);
    out.bytes += b;
    ++k;
  }
  return out;
}

uint64_t preload_budget(const Model& model, int first, int last, bool runs_output, int n_ctx, int max_seqs,
                        uint64_t budget) {
  uint64_t own = 0;
  for (int l = first; l < last; ++l) own += model.layer_weight_bytes(l);
  if (runs_output) own += model.output_weight_bytes();
  own += static_cast<uint64_t>(last - first) * static_cast<uint64_t>(n_ctx) * static_cast<uint64_t>(max_seqs) *
         2 * sizeof(float) * static_cast<uint64_t>(model.config().kv_dim());
  const uint64_t usable = budget - budget / 10;
  return usable > own ? usable - own : 0;
}

std::string describe_layers(const std::set<int>& layers, int n_layers) {
  std::vector<std::string> parts;
  bool output = false;
  for (auto it = layers.begin(); it != layers.end();) {
    if (*it == n_layers) {
      output = true;
      ++it;
      continue;
    }
    int a = *it, b = a + 1;
    for (++it; it != layers.end() && *it == b && b < n_layers; ++it) ++b;
    parts.push_back(cat("[", a, ", ", b, ")"));
  }
  if (output) parts.push_back("the output");
  std::string s;
  for (size_t k = 0; k < parts.size(); ++k)
    s += cat(k == 0 ? "" : k + 1 == parts.size() ? " and " : ", ", parts[k]);
  return s.empty() ? "nothing" : s;
}

void Preloader::stop() {
  if (run_) run_->stop.store(true);  // the run before it was told at the last start
  if (thread_.joinable()) thread_.join();
}

bool Preloader::wait_done(int timeout_ms) const {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (run_ && !run_->done.load()) {
    if (Clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

void Preloader::start(std::shared_ptr<const Model> model, int first, int last, bool runs_output, PreloadSet set,
                      bool file_backed, std::string prefix) {
  if (run_) run_->stop.store(true);
  const int n = model->config().n_layers;
  std::vector<int> order;  // own range first: the stage needs it anyway
  for (int l = first; l < last; ++l) order.push_back(l);
  if (runs_output) order.push_back(n);
  const int n_own = static_cast<int>(order.size());
  order.insert(order.end(), set.layers.begin(), set.layers.end());
  const std::set<int> keep(order.begin(), order.end());
  std::vector<int> give_back;
  if (file_backed)
    for (int l : resident_)
      if (!keep.count(l)) give_back.push_back(l);
  resident_ = keep;
  run_ = std::make_shared<Run>();
  thread_ = std::thread([this, r = run_, before = std::move(thread_), model = std::move(model),
                         order = std::move(order), give_back = std::move(give_back), n_own, budget = set.budget,
                         prefix = std::move(prefix)]() mutable {
    if (before.joinable()) before.join();  // it stops within a step of 1 MiB
    lower_priority();
    for (int l : give_back)
      for (const auto& sp : spans(*model, l)) release(sp);
    run(*r, *model, order, n_own, budget, prefix);
    r->done.store(true);
  });
}

void Preloader::run(const Run& r, const Model& model, const std::vector<int>& order, int n_own, uint64_t budget,
                    const std::string& prefix) const {
  const auto t0 = Clock::now();
  bool populate = true;  // MADV_POPULATE_READ works here (else: touch a byte per page)
  std::set<int> warmed;
  uint64_t neighbours = 0;
  for (size_t k = 0; k < order.size(); ++k) {
    // An own layer that already runs from its copy in panels gave its file pages back
    // (braid/model.h, "Panels"): paging them in again would hold its bytes twice.
    if (static_cast<int>(k) < n_own && model.is_packed(order[k])) continue;
    for (const auto& [p, len] : spans(model, order[k])) {
      const uintptr_t a = page_down(p), end = page_up(reinterpret_cast<uintptr_t>(p + len));
      // Read-ahead of the whole tensor, then page it in step by step.
      madvise(reinterpret_cast<void*>(a), end - a, MADV_WILLNEED);
      for (uintptr_t c = a; c < end; c += kStep) {
        if (r.stop.load()) return;  // a new range, or the session ends: no log line
        const size_t step = std::min<uintptr_t>(kStep, end - c);
        if (populate && madvise(reinterpret_cast<void*>(c), step, MADV_POPULATE_READ) != 0) populate = false;
        if (!populate) {
          volatile uint8_t sink = 0;
          for (uintptr_t q = c; q < c + step; q += kPage) sink = sink + *reinterpret_cast<const uint8_t*>(q);
        }
      }
    }
    if (static_cast<int>(k) >= n_own) {
      warmed.insert(order[k]);
      neighbours += weight_bytes(model, order[k]);
    }
  }
  const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  if (!log_) return;
  const int n_layers = model.config().n_layers;
  if (n_own == n_layers + 1) {
    log_(cat(prefix, "nothing to preload: it runs every layer and the output"));
  } else if (warmed.empty()) {
    log_(cat(prefix, "preloaded no layers: ", size_text(budget), " left in the memory budget after its own"));
  } else {
    log_(cat(prefix, "preloaded layers ", describe_layers(warmed, n_layers), " (", size_text(neighbours), " of ",
             size_text(budget), " left) in ", static_cast<int64_t>(ms), " ms"));
  }
}

void Worker::Impl::start_preload(Session& s) {
  // A streamed model's tensors are in memory already.
  if (!opt.preload || s.streamed || !s.model || !s.stage) return;
  const int first = s.stage->first(), last = s.stage->last();
  const uint64_t budget = opt.mem_limit ? opt.mem_limit : available_memory();
  const uint64_t left = preload_budget(*s.model, first, last, s.run_output, s.n_ctx, s.max_seqs, budget);
  if (!s.preloader) s.preloader = std::make_unique<Preloader>([this](const std::string& l) { log(l); });
  s.preloader->start(s.model, first, last, s.run_output, choose_preload(*s.model, first, last, s.run_output, left),
                     true, cat("session ", s.id, ": "));
}

}  // namespace braid::dist
