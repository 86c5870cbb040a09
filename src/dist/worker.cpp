// braid worker: accepts connections, authenticates them, and serves the head's control
// requests (measure a profile, load a layer range, link to the next device). The data
// path is in worker_data.cpp.
//
// Every connection starts with HELLO and LINK from the dialer; the worker answers HELLO
// and LINKED. LINK says what the connection is: a head's control link (a new session),
// or the input or output link of an existing session.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <random>

#include "braid/error.h"
#include "dist/worker_impl.h"
#include "dist/worker_model.h"

namespace braid::dist {

using namespace std::chrono_literals;

void Session::close() {
  std::lock_guard<std::mutex> lock(mu);
  closed = true;
  for (auto* c : {&out, &in, &control})
    if (*c) (*c)->interrupt();
  // A data thread may be padding a batch for the emulated slowdown: after the process
  // was stopped that lasts (slowdown - 1) x the stop, and the thread keeps the session
  // and its links until it is done. Its batch has nowhere to go now.
  if (stage) stage->stop_padding();
  cv.notify_all();
}

Worker::Impl::Impl(net::Tls t, WorkerOptions o) : tls(std::move(t)), opt(std::move(o)) {
  check(opt.threads >= 1, "threads must be at least 1");
  check(opt.slowdown >= 1.0 && opt.slowdown <= 1000.0, "--slowdown must be in [1, 1000] (got ", opt.slowdown,
        ")");
  check(opt.slowdown_after_batches < 0 || (opt.slowdown_then >= 1.0 && opt.slowdown_then <= 1000.0),
        "the later slowdown must be in [1, 1000] (got ", opt.slowdown_then, ")");
  slowdown.store(opt.slowdown);
  if (opt.name.empty()) {
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    opt.name = host;
  }
}

void Worker::Impl::log(const std::string& line) const {
  if (opt.log) {
    opt.log(line);
  } else {
    std::fprintf(stderr, "braid worker %s: %s\n", opt.name.c_str(), line.c_str());
    std::fflush(stderr);
  }
}

void Worker::Impl::spawn(std::function<void()> fn) {
  {
    std::lock_guard<std::mutex> lock(mu);
    ++running;
  }
  std::thread([this, fn = std::move(fn)] {
    fn();
    std::lock_guard<std::mutex> lock(mu);
    --running;
    cv.notify_all();
  }).detach();
}

std::shared_ptr<Session> Worker::Impl::find_session(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu);
  auto it = sessions.find(id);
  return it == sessions.end() ? nullptr : it->second;
}

std::shared_ptr<Session> Worker::Impl::new_session(const std::shared_ptr<net::Connection>& conn) {
  auto s = std::make_shared<Session>();
  s->head = conn->peer();
  s->control = conn;
  std::random_device rd;
  std::lock_guard<std::mutex> lock(mu);
  do s->id = (static_cast<uint64_t>(rd()) << 32) ^ rd();
  while (s->id == 0 || sessions.count(s->id));
  sessions[s->id] = s;
  return s;
}

void Worker::Impl::attach_output(const std::shared_ptr<net::Connection>& conn, Session& s) {
  {
    std::lock_guard<std::mutex> lock(s.mu);
    check(!s.out && !s.closed, "session ", s.id, " already has an output link");
    s.out = conn;
  }
  s.cv.notify_all();
}

void Worker::Impl::handle(std::shared_ptr<net::Connection> conn, bool handshake) {
  const std::string peer = conn->peer();
  {
    std::lock_guard<std::mutex> lock(mu);
    live.insert(conn);
  }
  Link link;
  try {
    if (handshake) conn->handshake_server(opt.handshake_timeout);
    check_hello(receive(*conn, opt.handshake_timeout), peer);
    Incoming second = receive(*conn, opt.handshake_timeout);
    const Link* l = second.get<Link>();
    check(l != nullptr, "expected LINK after HELLO, got ", second.name());
    link = *l;
  } catch (const Error& e) {
    log(cat("refused ", peer, ": ", e.what()));
    std::lock_guard<std::mutex> lock(mu);
    live.erase(conn);
    return;
  }
  try {
    const proto::Frame hello = make_hello(proto::Role::kWorker, opt.name);
    if (link.kind == LinkKind::kControl) {
      std::shared_ptr<Session> s = new_session(conn);
      send(*conn, hello, Linked{s->id}, opt.io_timeout);
      log(cat("head ", peer, " connected (session ", s->id, ")"));
      control_loop(conn, s);
    } else if (std::shared_ptr<Session> s = find_session(link.session)) {
      send(*conn, hello, Linked{s->id}, opt.io_timeout);
      if (link.kind == LinkKind::kInput) {
        input_loop(conn, s);
      } else {
        attach_output(conn, *s);
      }
    } else {
      const std::string why = cat("no session ", link.session, " on worker ", opt.name);
      send(*conn, make_error(why, proto::ErrorCode::kUnknownSequence), opt.io_timeout);
      log(cat("refused ", peer, ": ", why));
    }
  } catch (const Error& e) {
    if (!stopping.load()) log(cat("dropped ", peer, ": ", e.what()));
  }
  std::lock_guard<std::mutex> lock(mu);
  live.erase(conn);
}

void Worker::Impl::control_loop(const std::shared_ptr<net::Connection>& conn,
                                const std::shared_ptr<Session>& s) {
  std::string why = "the head said goodbye";
  // Once the head sends heartbeats, it is bound to be heard from: a head silent for
  // twice its own failure timeout (it hangs, or its network is gone) ends the session,
  // which frees the model and the caches. Before that (setup), the link may idle.
  net::Millis silence{0};
  try {
    while (true) {
      const auto t0 = std::chrono::steady_clock::now();
      Incoming in;
      try {
        in = silence.count() > 0 ? receive_within(*conn, silence, opt.io_timeout)
                                 : receive_idle(*conn, opt.io_timeout);
      } catch (const Error&) {
        if (silence.count() > 0 && std::chrono::steady_clock::now() - t0 >= silence)
          fail("the head sent nothing for ", net::format_duration(silence), " (heartbeats stopped)");
        throw;
      }
      if (in.get<proto::Shutdown>()) break;
      if (const auto* h = in.get<proto::Heartbeat>()) silence = net::Millis(2 * int64_t{h->timeout_ms});
      handle_request(in, *s, *conn);
    }
  } catch (const Error& e) {
    why = e.what();
  }
  s->close();
  {
    std::lock_guard<std::mutex> lock(mu);
    sessions.erase(s->id);
  }
  if (!stopping.load()) log(cat("session ", s->id, " with ", conn->peer(), " ended: ", why));
  conn->close();
}

void Worker::Impl::ensure_model(Session& s, const std::string& path, const proto::Sha256& fingerprint) {
  if (s.streamed) {
    // Rebuilt when tensors arrived since (vectors are copied when a Model is built).
    s.model = s.streamed->model();
    if (!s.pool) s.pool = std::make_unique<ThreadPool>(opt.threads);
    return;
  }
  if (s.model) {
    check(path == s.model_path, "this session already serves ", s.model_path);
    return;
  }
  const std::string local =
      opt.model_dir.empty()
          ? path
          : (std::filesystem::path(opt.model_dir) / std::filesystem::path(path).filename()).string();
  std::error_code ec;
  if (!std::filesystem::is_regular_file(local, ec))
    throw ModelMissing(cat("model file '", local, "' not found on worker ", opt.name));
  std::shared_ptr<const Model> model;
  try {
    model = Model::load(local);
  } catch (const Error& e) {
    throw ModelMissing(cat("model file '", local, "' on worker ", opt.name, " cannot be used: ", e.what()));
  }
  const proto::Sha256 mine = model_fingerprint(model->gguf(), std::filesystem::file_size(local, ec));
  if (mine != fingerprint) {
    throw ModelMissing(cat("model file '", local, "' on worker ", opt.name,
                           " is not the head's (fingerprint ", short_hex(mine), " vs ",
                           short_hex(fingerprint), ")"));
  }
  s.model = std::move(model);
  s.model_path = local;
  s.pool = std::make_unique<ThreadPool>(opt.threads);
  log(cat("session ", s.id, ": mapped ", local, " (", s.model->config().n_layers, " layers)"));
}

void Worker::Impl::handle_request(Incoming& in, Session& s, net::Connection& conn) {
  const net::Millis t = opt.io_timeout;
  try {
    if (const auto* h = in.get<ModelHeader>()) {
      // The head streams the model (no reply; the request that needs it comes after).
      check(!s.model || s.streamed, "this session already maps its model from a file");
      if (!s.streamed) {
        s.streamed = std::make_shared<StreamedModel>(h->file_size, h->bytes);
        s.model_path = "(streamed)";
        log(cat("session ", s.id, ": receiving the model from the head (", h->file_size >> 20, " MiB file)"));
      }
      return;
    }
    if (const auto* d = in.get<ModelData>()) {
      check(s.streamed != nullptr, "MODEL_DATA before MODEL_HEADER");
      s.streamed->put(d->tensor, d->offset, d->bytes.data(), d->bytes.size());
      return;
    }
    if (const auto* r = in.get<proto::ProfileRequest>()) {
      ensure_model(s, r->model_id, r->model_sha256);
      if (s.streamed) {
        check(model_fingerprint(s.streamed->gguf(), s.streamed->file_size()) == r->model_sha256,
              "the streamed model is not the one requested");
      }
      const int n_layers = s.model->config().n_layers;
      const std::vector<bool> present = s.streamed ? s.streamed->layers_present(n_layers)
                                                   : std::vector<bool>(static_cast<size_t>(n_layers), true);
      check(std::find(present.begin(), present.end(), true) != present.end(),
            "no layer of the model has arrived to measure");
      const bool output_present = !s.streamed || s.streamed->missing(0, 0, true).empty();
      const DeviceProfile p =
          measure_profile(*s.model, *s.pool, slowdown.load(), opt.mem_limit, &present, output_present);
      proto::Profile reply;
      reply.device_name = opt.name;
      reply.threads = static_cast<uint32_t>(opt.threads);
      reply.memory_budget_bytes = p.memory_bytes;
      reply.memory_total_bytes = p.memory_total;
      reply.output_ms = p.output_ms;
      reply.layer_ms = p.layer_ms;
      send(conn, make_frame(reply), t);
    } else if (const auto* l = in.get<proto::Load>()) {
      const auto t0 = std::chrono::steady_clock::now();
      ensure_model(s, l->model_id, l->model_sha256);
      check(!s.stage, "layers are already assigned in this session");
      if (s.streamed) {
        check(model_fingerprint(s.streamed->gguf(), s.streamed->file_size()) == l->model_sha256,
              "the streamed model is not the one requested");
        const std::string gap = s.streamed->missing(static_cast<int>(l->first_layer),
                                                    static_cast<int>(l->last_layer), l->runs_output);
        // Not here yet: the head streams what the assignment needs and asks again.
        if (!gap.empty()) throw ModelMissing(cat("tensor ", gap, " of the assigned layers has not arrived"));
        log(cat("session ", s.id, ": received ", s.streamed->received_bytes() >> 10, " KiB of tensors"));
      }
      check(l->logits_mode == proto::LogitsMode::kFull, "top-k logits are not supported by this worker");
      const ModelConfig& c = s.model->config();
      const int first = static_cast<int>(l->first_layer), last = static_cast<int>(l->last_layer);
      const int n_ctx = static_cast<int>(l->context_length), max_seqs = static_cast<int>(l->max_sequences);
      check(first <= last && last <= c.n_layers && (first < last || l->runs_output), "bad layer range [",
            first, ", ", last, ") for a model of ", c.n_layers, " layers");
      check(n_ctx >= 1 && n_ctx <= (1 << 24), "bad context size ", n_ctx);
      check(max_seqs >= 1 && max_seqs <= 4096, "bad sequence count ", max_seqs);
      s.n_ctx = n_ctx;
      s.max_seqs = max_seqs;
      const uint64_t weights = stage_bytes(s, first, last, l->runs_output);
      {
        std::lock_guard<std::mutex> lock(s.mu);
        s.stage = std::make_unique<Stage>(s.model, first, last, n_ctx, max_seqs, *s.pool, slowdown.load());
        s.run_output = l->runs_output;
        s.transfer = l->activation_type;
        s.label = cat("layers [", first, ", ", last, ")", s.run_output ? " + output" : "");
      }
      log(cat("session ", s.id, ": ", s.label, " of ", s.model_path));
      start_preload(s);  // the layers around it, in the background (worker_preload.cpp)
      proto::Loaded reply;
      reply.first_layer = l->first_layer;
      reply.last_layer = l->last_layer;
      reply.resident_bytes = weights;
      reply.load_ms =
          std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      send(conn, make_frame(reply), t);
    } else if (const auto* r = in.get<Route>()) {
      // Link to the successor now, so the first token does not pay for it.
      auto next = std::shared_ptr<net::Connection>(
          net::Connection::dial(tls, net::Endpoint::parse(r->next), opt.handshake_timeout));
      send(*next, make_hello(proto::Role::kWorker, opt.name), Link{LinkKind::kInput, r->session}, t);
      check_hello(receive(*next, t), "worker " + r->next);
      expect<Linked>(receive(*next, t), "worker " + r->next);
      attach_output(next, s);
      {
        std::lock_guard<std::mutex> lock(s.mu);
        s.forward_end = true;
      }
      log(cat("session ", s.id, ": linked to ", r->next));
      send(conn, Linked{s.id}, t);
    } else if (const auto* d = in.get<DialBack>()) {
      // Dial-out mode: the head cannot reach us, so we open its data links.
      check(head_addr.has_value(), "DIAL_BACK outside dial-out mode");
      auto link =
          std::shared_ptr<net::Connection>(net::Connection::dial(tls, *head_addr, opt.handshake_timeout));
      send(*link, make_hello(proto::Role::kWorker, opt.name), Link{d->kind, s.id}, t);
      check_hello(receive(*link, t), "head " + head_addr->str());
      expect<Linked>(receive(*link, t), "head " + head_addr->str());
      std::shared_ptr<Session> sp = find_session(s.id);
      check(sp != nullptr, "session ended");
      if (d->kind == LinkKind::kInput) {
        spawn([this, link, sp] {
          try {
            input_loop(link, sp);
          } catch (const Error& e) {
            if (!stopping.load()) log(cat("dropped ", link->peer(), ": ", e.what()));
          }
        });
      } else {
        attach_output(link, s);
      }
      send(conn, Linked{s.id}, t);
    } else if (const auto* p = in.get<proto::Probe>()) {
      check(!p->is_reply, "unexpected probe echo");
      proto::Probe echo;
      echo.is_reply = true;
      echo.sent_us = p->sent_us;
      echo.padding.assign(std::min<uint32_t>(p->reply_bytes, 64u << 20), 0);
      send(conn, make_frame(echo), t);
    } else if (const auto* h = in.get<proto::Heartbeat>()) {
      proto::Heartbeat hb;
      hb.time_us = h->time_us;
      hb.in_flight = s.stage ? static_cast<uint32_t>(s.stage->open_sequences()) : 0;
      hb.timeout_ms = h->timeout_ms;
      send(conn, make_frame(hb), t);
    } else if (const auto* a = in.get<proto::Assign>()) {
      assign(s, *a, conn);
    } else if (const auto* k = in.get<proto::KvRows>()) {
      kv_rows(s, *k, in.frame.sequence_id, conn);
    } else {
      fail("unexpected ", in.name(), " frame on a control link");
    }
  } catch (const ModelMissing& e) {
    // Not a failure of the worker: the head may stream the model instead.
    log(cat("session ", s.id, ": ", e.what()));
    send(conn, make_error(e.what(), proto::ErrorCode::kModelMismatch), t);
  } catch (const Error& e) {
    log(cat("session ", s.id, ": ", in.name(), " failed: ", e.what()));
    send(conn, make_error(e.what()), t);
  }
}

Worker::Worker(net::Tls tls, WorkerOptions options)
    : impl_(std::make_unique<Impl>(std::move(tls), std::move(options))) {}

Worker::~Worker() { stop(); }

void Worker::set_slowdown(double factor) { impl_->set_slowdown(factor); }
double Worker::slowdown() const { return impl_->slowdown.load(); }

void Worker::serve(net::Listener& listener) {
  Impl& w = *impl_;
  while (!w.stopping.load()) {
    std::unique_ptr<net::Connection> c = listener.accept(200ms);
    if (!c) continue;
    bool full;
    {
      std::lock_guard<std::mutex> lock(w.mu);
      full = w.running >= w.opt.max_connections;
    }
    if (full) {
      w.log(cat("refused ", c->peer(), ": too many connections (", w.opt.max_connections, ")"));
      continue;
    }
    std::shared_ptr<net::Connection> conn(std::move(c));
    w.spawn([&w, conn] { w.handle(conn, true); });
  }
  stop();
}

void Worker::serve_head(const net::Endpoint& head) {
  Impl& w = *impl_;
  w.head_addr = head;
  bool said_waiting = false;
  // One session after another, until stopped: a phone stays in the cluster across runs.
  while (!w.stopping.load()) {
    std::shared_ptr<net::Connection> conn;
    std::shared_ptr<Session> s;
    try {
      conn = net::Connection::dial(w.tls, head, w.opt.handshake_timeout);
      s = w.new_session(conn);
      send(*conn, make_hello(proto::Role::kWorker, w.opt.name), Link{LinkKind::kControl, s->id},
           w.opt.io_timeout);
      check_hello(receive(*conn, w.opt.io_timeout), "head " + head.str());
      expect<Linked>(receive(*conn, w.opt.io_timeout), "head " + head.str());
    } catch (const Error& e) {
      if (s) {
        std::lock_guard<std::mutex> lock(w.mu);
        w.sessions.erase(s->id);
      }
      const std::string m = e.what();
      // A head that is not up yet is normal; anything else (a wrong secret) is said
      // every time.
      const bool not_up = m.find("connection refused") != std::string::npos;
      if (!not_up || !said_waiting) w.log(not_up ? cat("waiting for the head at ", head.str()) : m);
      said_waiting = said_waiting || not_up;
      for (int i = 0; i < 10 && !w.stopping.load(); ++i) std::this_thread::sleep_for(100ms);
      continue;
    }
    said_waiting = false;
    w.log(cat("joined the head at ", head.str(), " (session ", s->id, ")"));
    {
      std::lock_guard<std::mutex> lock(w.mu);
      w.live.insert(conn);
    }
    w.control_loop(conn, s);
    std::lock_guard<std::mutex> lock(w.mu);
    w.live.erase(conn);
  }
  stop();
}

void Worker::stop() {
  Impl& w = *impl_;
  w.stopping.store(true);
  std::vector<std::shared_ptr<Session>> ss;
  {
    std::lock_guard<std::mutex> lock(w.mu);
    for (auto& c : w.live) c->interrupt();
    for (auto& [id, s] : w.sessions) ss.push_back(s);
  }
  for (auto& s : ss) s->close();
  // Connection threads notice within their 100-500 ms slices.
  std::unique_lock<std::mutex> lock(w.mu);
  w.cv.wait(lock, [&] { return w.running == 0; });
}

}  // namespace braid::dist
