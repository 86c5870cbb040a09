// The head's setup of a ring: dial and authenticate every worker, have them map the
// model, decide the layer ranges, link the workers to each other and to the head.
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <future>

#include "braid/error.h"
#include "dist/head_ring.h"
#include "dist/worker_stream.h"

namespace braid::dist {

using namespace std::chrono_literals;

std::string RemoteWorker::label() const {
  std::string s = cat("worker ", addr.str());
  if (last > first) s += cat(" (layers [", first, ", ", last, "))");
  return s;
}

Incoming RemoteWorker::request(const proto::Frame& f, net::Millis timeout) {
  std::lock_guard<std::mutex> lock(control_mu);
  check(control != nullptr, label(), " is not connected");
  send(*control, f, timeout);
  Incoming in = receive(*control, timeout);
  last_ok = std::chrono::steady_clock::now();
  return in;
}

Incoming RemoteWorker::request(const LinkMessage& m, net::Millis timeout) {
  std::lock_guard<std::mutex> lock(control_mu);
  check(control != nullptr, label(), " is not connected");
  send(*control, m, timeout);
  Incoming in = receive(*control, timeout);
  last_ok = std::chrono::steady_clock::now();
  return in;
}

proto::WireType transfer_from_name(const std::string& name) {
  if (name == "f32") return proto::WireType::kF32;
  if (name == "f16") return proto::WireType::kF16;
  if (name == "q8" || name == "q8_0") return proto::WireType::kQ8_0;
  fail("unknown transfer format '", name, "' (use f32, f16 or q8)");
}

namespace {

// "cannot connect to 1.2.3.4:5: why" -> "cannot connect to worker 1.2.3.4:5: why";
// "1.2.3.4:5 refused us: ..." -> "worker 1.2.3.4:5 refused us: ...".
[[noreturn]] void rethrow_for_worker(const Error& e) {
  const std::string m = e.what();
  const std::string prefix = "cannot connect to ";
  if (m.rfind(prefix, 0) == 0) fail(prefix, "worker ", m.substr(prefix.size()));
  if (m.rfind("worker ", 0) == 0) throw e;
  fail("worker ", m);
}

// Dials a worker and opens a link of `kind` (for input/output: of its session).
std::shared_ptr<net::Connection> open_link(const net::Tls& tls, const RemoteWorker& w, LinkKind kind,
                                           const HeadOptions& o, uint64_t* session) {
  std::shared_ptr<net::Connection> conn;
  try {
    conn = net::Connection::dial(tls, w.addr, o.connect_timeout);
    send(*conn, make_hello(proto::Role::kHead, "head"), Link{kind, w.session}, o.connect_timeout);
    check_hello(receive(*conn, o.io_timeout), w.addr.str());
    const Linked l = expect<Linked>(receive(*conn, o.io_timeout), "worker " + w.addr.str());
    if (session) *session = l.session;
  } catch (const Error& e) {
    rethrow_for_worker(e);
  }
  return conn;
}

}  // namespace

void RingImpl::log(const std::string& line) const {
  if (opt.log) {
    opt.log(line);
  } else {
    std::fprintf(stderr, "braid head: %s\n", line.c_str());
    std::fflush(stderr);
  }
}

std::unique_ptr<RingImpl> connect_ring(std::shared_ptr<const Model> model, const std::string& model_path,
                                       const net::Tls& tls, const HeadOptions& options) {
  check(!options.workers.empty() || options.accept_count > 0, "no workers given");
  check(options.accept_count == 0 || !options.accept.empty(),
        "workers to accept, but no address to accept on");
  check(options.n_ctx >= 1, "context size must be at least 1");
  check(options.max_sequences >= 1, "at least one sequence must fit");
  auto ring = std::make_unique<RingImpl>();
  RingImpl& r = *ring;
  r.model = std::move(model);
  r.tls = tls;
  r.opt = options;
  r.transfer = transfer_from_name(options.transfer);
  const ModelConfig& config = r.model->config();
  check(r.transfer != proto::WireType::kQ8_0 || config.dim % 32 == 0,
        "--transfer q8 needs a hidden size that is a ", "multiple of 32; this model's is ", config.dim);
  for (size_t i = 0; i < options.workers.size(); ++i) {
    for (size_t j = 0; j < i; ++j)
      check(options.workers[i].str() != options.workers[j].str(), "worker ", options.workers[i].str(),
            " is listed twice");
  }
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(model_path, ec);
  check(!ec, "model file '", model_path, "' not found");
  r.model_path = std::filesystem::absolute(model_path, ec).string();
  r.fingerprint = model_fingerprint(r.model->gguf(), size);

  // Connect everywhere at once: a cluster is as slow to start as its slowest device,
  // not the sum of them.
  for (const auto& ep : options.workers) {
    r.workers.push_back(std::make_unique<RemoteWorker>());
    r.workers.back()->addr = ep;
  }
  for_each_parallel(r.workers.size(), [&](size_t i) {
    RemoteWorker& w = *r.workers[i];
    w.control = open_link(tls, w, LinkKind::kControl, options, &w.session);
  });
  if (options.accept_count > 0) {
    r.start_accepting(options.accept);
    r.wait_for_workers(options.accept_count, options.accept_timeout);
  }

  return ring;
}

std::unique_ptr<Ring> Ring::start(std::shared_ptr<const Model> model, const std::string& model_path,
                                  const net::Tls& tls, const HeadOptions& options) {
  std::unique_ptr<RingImpl> ring = connect_ring(std::move(model), model_path, tls, options);
  RingImpl& r = *ring;
  r.plan = plan_ring(*r.model, r);

  // The head's own share: its layers (possibly none) and maybe the output.
  r.pool = std::make_unique<ThreadPool>(options.threads);
  r.stage = std::make_unique<Stage>(r.model, r.plan.head_first, r.plan.head_last, options.n_ctx,
                                    options.max_sequences, *r.pool);
  r.lay_out();

  // Every worker in the plan maps its layers (at once), then links to its successor.
  std::vector<RemoteWorker*> used;
  for (auto& chain : r.chains)
    for (int wi : chain->workers) used.push_back(r.workers[static_cast<size_t>(wi)].get());
  for_each_parallel(used.size(), [&](size_t i) { r.load(*used[i]); });
  r.link_ring();
  r.stop_accepting();
  r.log(
      cat("ring: ", r.describe_locked(),
          r.plan.predicted_ms > 0 ? cat(" (predicted ", r.plan.predicted_ms, " ms/token)") : std::string()));
  r.start_supervision();
  return ring;
}

void RingImpl::load(RemoteWorker& w) {
  proto::Load load;
  load.model_id = model_path;
  load.model_sha256 = fingerprint;
  load.first_layer = static_cast<uint32_t>(w.first);
  load.last_layer = static_cast<uint32_t>(w.last);
  load.runs_output = w.output;
  load.activation_type = transfer;
  load.context_length = static_cast<uint32_t>(opt.n_ctx);
  load.max_sequences = static_cast<uint32_t>(opt.max_sequences);
  expect<proto::Loaded>(
      request_with_model(w, make_frame(load), tensors_for_stage(model->gguf(), w.first, w.last, w.output)),
      "worker " + w.addr.str());
  w.loaded = true;
}

void RingImpl::reconnect(RemoteWorker& w, net::Millis timeout) {
  HeadOptions o = opt;
  o.connect_timeout = timeout;
  o.io_timeout = timeout;
  uint64_t session = 0;
  std::shared_ptr<net::Connection> conn = open_link(tls, w, LinkKind::kControl, o, &session);
  std::lock_guard<std::mutex> lock(w.control_mu);
  w.control = std::move(conn);
  w.session = session;
  w.loaded = false;
  w.streamed.clear();  // a new session holds nothing
  w.last_ok = std::chrono::steady_clock::now();
}

void RingImpl::lay_out() {
  chains.clear();
  steps.clear();
  for (auto& w : workers) {
    w->first = w->last = 0;
    w->output = false;
  }
  // Ring order -> steps: the head's layers, or maximal runs of workers (chains).
  for (const auto& part : plan.parts) {
    if (part.worker < 0) {
      steps.push_back(Step{true, part.first, part.last, -1});
      continue;
    }
    RemoteWorker& w = *workers[static_cast<size_t>(part.worker)];
    w.first = part.first;
    w.last = part.last;
    // A worker that dialed in cannot be reached by its neighbours: it is a chain of its
    // own, and the head relays to and from it.
    const bool alone =
        w.dialed_in || (!chains.empty() && !chains.back()->workers.empty() &&
                        workers[static_cast<size_t>(chains.back()->workers.back())]->dialed_in);
    if (steps.empty() || steps.back().local || alone) {
      chains.push_back(std::make_unique<Chain>());
      chains.back()->epoch = epoch;
      steps.push_back(Step{false, part.first, part.last, static_cast<int>(chains.size()) - 1});
    }
    steps.back().last = part.last;
    chains.back()->workers.push_back(part.worker);
  }
  if (!plan.output_at_head) {
    check(!steps.empty() && !steps.back().local,
          "the plan ends on the head but does not run the output there");
    workers[static_cast<size_t>(chains.back()->workers.back())]->output = true;
  }
}

void RingImpl::link_ring() {
  for (auto& chain : chains) {
    for (size_t k = 0; k + 1 < chain->workers.size(); ++k) {
      RemoteWorker& w = *workers[static_cast<size_t>(chain->workers[k])];
      const RemoteWorker& next = *workers[static_cast<size_t>(chain->workers[k + 1])];
      expect<Linked>(w.request(Route{next.addr.str(), next.session}, opt.io_timeout),
                     "worker " + w.addr.str());
    }
  }
  // Workers the plan leaves out end their sessions now.
  for (auto& w : workers) {
    if (w->in_ring()) continue;
    std::lock_guard<std::mutex> lock(w->control_mu);
    if (!w->control) continue;
    if (!w->lost) log(cat("the plan leaves out ", w->addr.str()));
    try {
      send(*w->control, make_frame(proto::Shutdown{"left out of the plan"}), 1000ms);
    } catch (const Error&) {
    }
    w->control->close();
    w->control.reset();
  }

  // The head's links: into the first worker of every chain, out of the last.
  for (size_t c = 0; c < chains.size(); ++c) {
    Chain& chain = *chains[c];
    chain.in = link_to(*workers[static_cast<size_t>(chain.workers.front())], LinkKind::kInput);
    chain.out = link_to(*workers[static_cast<size_t>(chain.workers.back())], LinkKind::kOutput);
    chain.receiver = std::thread([this, c] { receive_loop(static_cast<int>(c)); });
  }
}

void RingImpl::break_chains(const std::string& why) {
  for (auto& c : chains) {
    {
      std::lock_guard<std::mutex> lock(c->mu);
      if (c->broken.empty()) c->broken = why;
      c->cv.notify_all();
    }
    if (c->in) c->in->interrupt();
    if (c->out) c->out->interrupt();
  }
}

void RingImpl::stop_chains(const std::string& why) {
  break_chains(why);
  for (auto& c : chains) {
    if (c->receiver.joinable()) c->receiver.join();
    if (c->in) c->in->close();
    if (c->out) c->out->close();
  }
}

std::shared_ptr<net::Connection> RingImpl::link_to(RemoteWorker& w, LinkKind kind) {
  if (!w.dialed_in) return open_link(tls, w, kind, opt, nullptr);
  DialBack d;
  d.kind = kind;
  expect<Linked>(w.request(d, opt.io_timeout), w.label());
  return take_link(w.session, kind, opt.io_timeout);
}

std::string RingImpl::describe() const {
  std::shared_lock<std::shared_mutex> lock(topo_mu);
  return describe_locked();
}

std::string RingImpl::describe_locked() const {
  std::string s = "head";
  for (const auto& part : plan.parts) {
    s += " -> ";
    s += part.worker < 0 ? std::string("head") : workers[static_cast<size_t>(part.worker)]->addr.str();
    s += cat(" [", part.first, ", ", part.last, ")");
  }
  s += plan.output_at_head ? " -> head (output)" : " -> head (logits)";
  return s;
}

RingImpl::~RingImpl() {
  stopping.store(true);
  stop_supervision();
  stop_accepting();
  // Goodbye first, so workers log a clean end rather than a broken link.
  for (auto& w : workers) {
    std::lock_guard<std::mutex> lock(w->control_mu);
    if (!w->control) continue;
    try {
      send(*w->control, make_frame(proto::Shutdown{"the head is done"}), 1000ms);
    } catch (const Error&) {
    }
  }
  stop_chains("the ring was shut down");
  for (auto& w : workers)
    if (w->control) w->control->close();
}

}  // namespace braid::dist
