// A session's layers change after the head re-planned (a worker of the ring was lost, or
// balancing moves layers): ASSIGN drops the data links and installs a stage for the new
// range. After a loss the KV caches go and the head replays its sequences; when
// balancing (keep_kv) the caches of the layers that stay are kept and KV_ROWS moves the
// others between the old and the new owner. Also the memory check LOAD and ASSIGN
// share, and the test hooks that make a worker die or hang at a given batch.
#include <signal.h>

#include <chrono>

#include "braid/error.h"
#include "dist/worker_impl.h"

namespace braid::dist {

uint64_t Worker::Impl::stage_bytes(const Session& s, int first, int last, bool output) const {
  const ModelConfig& c = s.model->config();
  uint64_t weights = 0;
  for (int i = first; i < last; ++i) weights += s.model->layer_weight_bytes(i);
  if (output) weights += s.model->output_weight_bytes();
  if (opt.mem_limit) {
    // The planner respects the limit already; a fixed split may not.
    const uint64_t need = weights + static_cast<uint64_t>(last - first) * static_cast<uint64_t>(s.n_ctx) *
                                        static_cast<uint64_t>(s.max_seqs) * 2 * sizeof(float) *
                                        static_cast<uint64_t>(c.kv_dim());
    check(need <= opt.mem_limit, "layers [", first, ", ", last, ") with ", s.max_seqs, " sequence(s) of ",
          s.n_ctx, " positions need ", need >> 20, " MiB, more than this worker's --mem-limit of ",
          opt.mem_limit >> 20, " MiB");
  }
  return weights;
}

void Worker::Impl::drop_data_links(Session& s) {
  std::unique_lock<std::mutex> lock(s.mu);
  for (auto* c : {&s.in, &s.out})
    if (*c) (*c)->interrupt();
  s.in.reset();
  s.out.reset();
  s.forward_end = false;
  ++s.links_gen;
  s.cv.notify_all();
  // Interrupted links end their loops within ~100 ms; a batch being computed finishes
  // first (bounded by its size).
  check(s.cv.wait_for(lock, opt.io_timeout, [&] { return s.data_threads == 0 || s.closed; }),
        "the data path did not stop within ", net::format_duration(opt.io_timeout));
  check(!s.closed, "session closed");
}

void Worker::Impl::assign(Session& s, const proto::Assign& a, net::Connection& conn) {
  const auto t0 = std::chrono::steady_clock::now();
  check(s.stage != nullptr && s.model != nullptr, "ASSIGN before LOAD");
  const int first = static_cast<int>(a.first_layer), last = static_cast<int>(a.last_layer);
  const int n_layers = s.model->config().n_layers;
  check(last <= n_layers, "bad layer range [", first, ", ", last, ") for a model of ", n_layers, " layers");
  if (s.streamed) {
    const std::string gap = s.streamed->missing(first, last, a.runs_output);
    // The head streams what the new range needs and asks again.
    if (!gap.empty()) throw ModelMissing(cat("tensor ", gap, " of the assigned layers has not arrived"));
    s.model = s.streamed->model();  // over the tensors that arrived since
  }
  const uint64_t weights = stage_bytes(s, first, last, a.runs_output);
  drop_data_links(s);
  {
    std::lock_guard<std::mutex> lock(s.mu);
    // The old stage goes. Its caches either go too (the head replays its sequences
    // through the new ring, which recomputes the same values) or, for the layers that
    // stay here, move into the new stage (no data thread runs: the links are down).
    auto next = std::make_unique<Stage>(s.model, first, last, s.n_ctx, s.max_seqs, *s.pool, slowdown.load());
    if (a.keep_kv) next->adopt_kv(*s.stage);
    s.stage = std::move(next);
    s.run_output = a.runs_output;
    s.label = cat("layers [", first, ", ", last, ")", s.run_output ? " + output" : "");
  }
  // The copies in panels (braid/model.h) of layers this worker no longer runs; a batch
  // still running one keeps it until it ends.
  for (int l = 0; l <= n_layers; ++l)
    if ((l < first || l >= last) && !(l == n_layers && a.runs_output)) s.model->release_packed(l);
  log(cat("session ", s.id, ": re-planned (epoch ", a.epoch, ", after batch ", batches.load(), "): now ",
          s.label, a.keep_kv ? ", caches of the layers that stay kept" : ""));
  start_preload(s);  // the layers around the new range
  proto::Loaded reply;
  reply.first_layer = a.first_layer;
  reply.last_layer = a.last_layer;
  reply.resident_bytes = weights;
  reply.load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  send(conn, make_frame(reply), opt.io_timeout);
}

void Worker::Impl::kv_rows(Session& s, const proto::KvRows& k, uint64_t seq, net::Connection& conn) {
  // Control requests of a session run one at a time on this thread, and only ASSIGN
  // (on this thread too) replaces the stage.
  Stage* stage = s.data_path().stage;
  check(stage != nullptr, "KV_ROWS before LOAD");
  const int first = static_cast<int>(k.first_layer), last = static_cast<int>(k.last_layer);
  const int pos0 = static_cast<int>(k.pos0), n = static_cast<int>(k.n_pos);
  proto::KvRows reply;
  reply.first_layer = k.first_layer;
  reply.last_layer = k.last_layer;
  reply.pos0 = k.pos0;
  reply.n_pos = k.n_pos;
  if (k.kind == proto::KvRowsKind::kFetch) {
    reply.kind = proto::KvRowsKind::kRows;
    reply.kv_dim = static_cast<uint32_t>(s.model->config().kv_dim());
    reply.data = stage->export_kv(seq, first, last, pos0, n);
  } else {
    check(k.kind == proto::KvRowsKind::kRows, "a KV_ROWS reply (stored) is not a request");
    check(k.kv_dim == static_cast<uint32_t>(s.model->config().kv_dim()), "KV rows of ", k.kv_dim,
          " values per position, the model has ", s.model->config().kv_dim());
    stage->import_kv(seq, first, last, pos0, n, k.data.data(), k.data.size());
    reply.kind = proto::KvRowsKind::kStored;
  }
  send(conn, make_frame(std::move(reply), seq), opt.io_timeout);
}

void Worker::Impl::set_slowdown(double factor) {
  check(factor >= 1.0 && factor <= 1000.0, "slowdown ", factor, " must be in [1, 1000]");
  slowdown.store(factor);
  std::vector<std::shared_ptr<Session>> ss;
  {
    std::lock_guard<std::mutex> lock(mu);
    for (auto& [id, s] : sessions) ss.push_back(s);
  }
  for (auto& s : ss) {
    std::lock_guard<std::mutex> lock(s->mu);
    if (s->stage) s->stage->set_slowdown(factor);
  }
  log(cat("slowdown now ", factor, " (at batch ", batches.load(), ")"));
}

void Worker::Impl::count_batch() {
  const int n = batches.fetch_add(1) + 1;
  if (opt.die_after_batches >= 0 && n > opt.die_after_batches) {
    log(cat("test hook: dying at batch ", n));
    raise(SIGKILL);
  }
  if (opt.slowdown_after_batches >= 0 && n == opt.slowdown_after_batches + 1) set_slowdown(opt.slowdown_then);
  if (opt.hang_after_batches >= 0 && n == opt.hang_after_batches + 1) {
    log(cat("test hook: hanging at batch ", n));
    raise(SIGSTOP);
  }
}

}  // namespace braid::dist
