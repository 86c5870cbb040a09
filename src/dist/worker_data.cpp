// The worker's data path: frames from the predecessor go through this stage's layers
// (and the output, on the last stage) and on to the successor. Errors travel the same
// way, so the head always gets an answer for a batch it sent, or sees the ring break.
#include <chrono>

#include "braid/error.h"
#include "dist/worker_impl.h"

namespace braid::dist {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

// The output link: the successor worker's, or the head's. The head links it before it
// sends the first batch, but a frame may overtake that; wait a bounded time. A loop of
// an older generation of links (ASSIGN dropped them) gets none.
std::shared_ptr<net::Connection> wait_output(Session& s, net::Millis timeout, uint64_t gen) {
  std::unique_lock<std::mutex> lock(s.mu);
  s.cv.wait_for(lock, timeout, [&] { return s.out != nullptr || s.closed || s.links_gen != gen; });
  check(!s.closed, "session closed");
  check(s.links_gen == gen, "the head re-planned");
  check(s.out != nullptr, "no output link after ", net::format_duration(timeout));
  return s.out;
}

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

}  // namespace

void Worker::Impl::input_loop(const std::shared_ptr<net::Connection>& conn,
                              const std::shared_ptr<Session>& sp) {
  Session& s = *sp;
  uint64_t gen;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    if (s.in || s.closed) {
      send(*conn, make_error(cat("session ", s.id, " already has an input link")), opt.io_timeout);
      return;
    }
    s.in = conn;
    gen = s.links_gen;
    ++s.data_threads;
  }
  auto out = [&] { return wait_output(s, opt.io_timeout, gen); };
  std::string why;
  try {
    while (true) {
      Incoming in = receive_idle(*conn, opt.io_timeout);
      const auto received = Clock::now();
      const uint64_t seq = in.frame.sequence_id;
      const Session::DataPath d = s.data_path();
      if (auto* a = in.get<proto::Activations>()) {
        count_batch();
        proto::Frame reply;
        try {
          check(d.stage != nullptr, "no layers assigned");
          const ModelConfig& c = d.stage->model().config();
          check(a->dim == static_cast<uint32_t>(c.dim), "hidden states of width ", a->dim,
                ", the model's is ", c.dim);
          std::vector<float> hidden = a->to_f32();
          const int n = static_cast<int>(a->n_tokens);
          const auto t0 = Clock::now();
          d.stage->run(seq, static_cast<int>(a->pos0), n, hidden.data());
          std::vector<proto::StageTiming> timings = std::move(a->timings);
          proto::StageTiming mine;
          mine.first_layer = static_cast<uint32_t>(d.stage->first());
          mine.last_layer = static_cast<uint32_t>(d.stage->last());
          mine.wait_ms = static_cast<float>(std::chrono::duration<double, std::milli>(t0 - received).count());
          if (d.run_output) {
            const int rows = a->all_logits ? n : 1;
            proto::Logits l;
            l.pos0 = a->pos0 + static_cast<uint32_t>(n - rows);
            l.n_tokens = static_cast<uint32_t>(rows);
            l.n_vocab = static_cast<uint32_t>(c.n_vocab);
            l.full.resize(static_cast<size_t>(rows) * static_cast<size_t>(c.n_vocab));
            d.stage->output(hidden.data() + static_cast<size_t>(n - rows) * c.dim, rows, l.full.data());
            mine.compute_ms = static_cast<float>(ms_since(t0));
            timings.push_back(mine);
            l.timings = std::move(timings);
            reply = make_frame(std::move(l), seq, in.frame.step);
          } else {
            proto::Activations next = proto::Activations::from_f32(a->pos0, a->dim, hidden, d.transfer);
            next.all_logits = a->all_logits;
            mine.compute_ms = static_cast<float>(ms_since(t0));
            timings.push_back(mine);
            next.timings = std::move(timings);
            reply = make_frame(std::move(next), seq, in.frame.step);
          }
        } catch (const Error& e) {
          reply = make_error(cat("worker ", opt.name, " (", d.label, "): ", e.what()),
                             proto::ErrorCode::kInternal, seq);
        }
        send(*out(), reply, opt.io_timeout);
      } else if (in.get<proto::SeqReset>()) {
        if (d.stage) d.stage->end(seq);
        if (d.forward_end) send(*out(), in.frame, opt.io_timeout);
      } else if (const auto* k = in.get<proto::KvTruncate>()) {
        if (d.stage) d.stage->truncate(seq, static_cast<int>(k->keep));
        if (d.forward_end) send(*out(), in.frame, opt.io_timeout);
      } else if (in.get<proto::ErrorMessage>()) {
        // From upstream: pass it on towards the head.
        send(*out(), in.frame, opt.io_timeout);
      } else {
        fail("unexpected ", in.name(), " frame on a data link");
      }
    }
  } catch (const Error& e) {
    why = e.what();
  }
  // The ring is broken (or over). Close the output link too, so the break travels down
  // the chain to the head at once instead of leaving it waiting; the session itself (the
  // model, the control link) stays for the head to re-plan with. Links that ASSIGN
  // already replaced are not ours to touch.
  bool mine;
  {
    std::lock_guard<std::mutex> lock(s.mu);
    mine = s.in == conn && s.links_gen == gen;
    if (mine) {
      s.in.reset();
      if (s.out) s.out->interrupt();
      s.out.reset();
      s.forward_end = false;
    }
    --s.data_threads;
    s.cv.notify_all();
  }
  conn->close();
  if (!stopping.load() && !s.closed && mine)
    log(cat("session ", s.id, ": input from ", conn->peer(), " ended: ", why));
}

}  // namespace braid::dist
