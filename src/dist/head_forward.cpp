// RemoteForward: a Forward whose layers run around the ring. The head embeds, runs its
// own layers, hands hidden states to each chain of workers and waits for what the chain
// sends back (hidden states, or logits from the stage that runs the output). One
// receiver thread per chain sorts replies by sequence, so several sequences can be in
// flight at once: while worker B runs sequence 1, worker A already runs sequence 2.
//
// Each sequence keeps the tokens it has put on the ring. When the ring breaks under a
// batch (a worker is lost), the batch waits for the supervisor to rebuild the ring and
// replay those tokens (head_recover.cpp), then runs again: the caller sees a pause.
#include <algorithm>
#include <chrono>

#include "braid/error.h"
#include "dist/head_ring.h"

namespace braid::dist {

using namespace std::chrono_literals;

void RingImpl::receive_loop(int c) {
  Chain& chain = *chains[static_cast<size_t>(c)];
  std::string why;
  try {
    while (!stopping.load()) {
      // Idle while no sequence is in flight; the waiters time out on their own, and the
      // ring's destructor interrupts this read.
      Incoming in = receive_idle(*chain.out, opt.io_timeout);
      check(in.get<proto::Activations>() || in.get<proto::Logits>() || in.get<proto::ErrorMessage>(),
            "unexpected ", in.name(), " frame from ", chain.out->peer());
      std::lock_guard<std::mutex> lock(chain.mu);
      const uint64_t seq = in.frame.sequence_id;
      chain.replies[seq] = std::move(in);
      chain.cv.notify_all();
    }
    why = "the ring was shut down";
  } catch (const Error& e) {
    why = e.what();
  }
  bool report;
  {
    std::lock_guard<std::mutex> lock(chain.mu);
    // Broken already: the ring is being rebuilt or shut down on purpose.
    report = chain.broken.empty() && !stopping.load();
    if (chain.broken.empty()) chain.broken = why;
    chain.cv.notify_all();
  }
  if (report) report_failure(-1, why, chain.epoch);
}

Incoming RingImpl::round_trip(uint64_t seq, int c, int pos, const std::vector<float>& hidden,
                              bool all_logits) {
  Chain& chain = *chains[static_cast<size_t>(c)];
  proto::Activations a = proto::Activations::from_f32(
      static_cast<uint32_t>(pos), static_cast<uint32_t>(model->config().dim), hidden, transfer);
  a.all_logits = all_logits;
  const proto::Frame h = make_frame(std::move(a), seq, static_cast<uint32_t>(pos));
  {
    std::lock_guard<std::mutex> lock(chain.mu);
    if (!chain.broken.empty()) throw RingBroken(chain.broken);
    chain.replies.erase(seq);
  }
  try {
    std::lock_guard<std::mutex> lock(chain.send_mu);
    send(*chain.in, h, opt.io_timeout);
  } catch (const Error& e) {
    report_failure(-1, e.what(), chain.epoch);
    throw RingBroken(e.what());
  }
  std::unique_lock<std::mutex> lock(chain.mu);
  const bool got = chain.cv.wait_for(lock, opt.io_timeout,
                                     [&] { return chain.replies.count(seq) > 0 || !chain.broken.empty(); });
  if (!got) {
    const RemoteWorker& last = *workers[static_cast<size_t>(chain.workers.back())];
    fail("no reply from ", last.label(), " within ", net::format_duration(opt.io_timeout));
  }
  auto it = chain.replies.find(seq);
  if (it == chain.replies.end()) throw RingBroken(chain.broken);
  Incoming reply = std::move(it->second);
  chain.replies.erase(it);
  if (const auto* e = reply.get<proto::ErrorMessage>()) fail(e->message);
  return reply;
}

void RingImpl::run_batch(uint64_t seq, const int32_t* tokens, int m, int pos, bool all_logits,
                         float* logits) {
  const ModelConfig& c = model->config();
  std::vector<float> hidden(static_cast<size_t>(m) * c.dim);
  model->embed(tokens, m, pos, hidden.data());
  bool have_logits = false;
  std::vector<std::pair<int, double>> times;  // each worker's compute time, for the balancer
  for (const Step& step : steps) {
    if (step.local) {
      stage->run(seq, pos, m, hidden.data());
      continue;
    }
    Incoming reply = round_trip(seq, step.chain, pos, hidden, all_logits);
    const auto* lt = reply.get<proto::Logits>();
    const auto* at = reply.get<proto::Activations>();
    const std::vector<proto::StageTiming>& timings = lt ? lt->timings : at->timings;
    const std::vector<int>& ws = chains[static_cast<size_t>(step.chain)]->workers;
    // Every stage of the chain appended its own, in order.
    if (timings.size() == ws.size())
      for (size_t k = 0; k < ws.size(); ++k) times.emplace_back(ws[k], timings[k].compute_ms);
    if (const auto* l = reply.get<proto::Logits>()) {
      // One row (the last token's) unless all_logits; earlier batches of a long prompt
      // without all_logits get theirs too, unused.
      const int rows = all_logits ? m : 1;
      check(l->mode == proto::LogitsMode::kFull && static_cast<int>(l->n_tokens) == rows &&
                static_cast<int>(l->n_vocab) == c.n_vocab && l->pos0 == static_cast<uint32_t>(pos + m - rows),
            "worker sent logits for ", l->n_tokens, " tokens of ", l->n_vocab, " at ", l->pos0, ", expected ",
            rows, " of ", c.n_vocab, " at ", pos + m - rows);
      if (logits) std::copy(l->full.begin(), l->full.end(), logits);
      have_logits = true;
    } else {
      const auto* a = reply.get<proto::Activations>();
      check(static_cast<int>(a->n_tokens) == m && static_cast<int>(a->dim) == c.dim &&
                a->pos0 == static_cast<uint32_t>(pos),
            "worker sent hidden states for ", a->n_tokens, " tokens of ", a->dim, " at ", a->pos0,
            ", expected ", m, " of ", c.dim, " at ", pos);
      hidden = a->to_f32();
    }
  }
  if (m == 1 && !times.empty()) note_decode(times);
  if (plan.output_at_head) {
    check(!have_logits, "internal: logits from a worker while the head runs the output");
    if (!logits) return;
    if (all_logits) {
      stage->output(hidden.data(), m, logits);
    } else {
      stage->output(hidden.data() + static_cast<size_t>(m - 1) * c.dim, 1, logits);
    }
  } else {
    check(have_logits, "internal: the ring returned no logits");
  }
}

namespace {

class RemoteForward : public Forward {
 public:
  RemoteForward(RingImpl& ring, uint64_t seq) : r_(ring), seq_(seq) { r_.register_sequence(seq_, &log_); }

  ~RemoteForward() override {
    {
      // Workers free this sequence's caches; nothing comes back, and a ring that broke
      // meanwhile has nothing left to free.
      std::shared_lock<std::shared_mutex> lock(r_.topo_mu);
      const proto::Frame end = make_frame(proto::SeqReset{}, seq_);
      for (auto& chain : r_.chains) {
        if (!chain->in) continue;  // a rebuild that failed half-way
        try {
          std::lock_guard<std::mutex> send_lock(chain->send_mu);
          send(*chain->in, end, r_.opt.io_timeout);
        } catch (const Error&) {
        }
      }
      r_.stage->end(seq_);
      r_.unregister_sequence(seq_);
    }
    r_.open.fetch_sub(1);
  }

  int n_vocab() const override { return r_.model->config().n_vocab; }
  int n_ctx() const override { return r_.opt.n_ctx; }

  void forward(const int32_t* tokens, int n, int pos0, bool all_logits, float* logits) override {
    const ModelConfig& c = r_.model->config();
    check(n >= 1, "forward: no tokens");
    check(pos0 >= 0 && pos0 <= n_pos_, "forward: position ", pos0, " is beyond the ", n_pos_,
          " the sequence holds");
    check(static_cast<int64_t>(pos0) + n <= n_ctx(), "prompt of ", static_cast<int64_t>(pos0) + n,
          " tokens exceeds the context of ", n_ctx());
    for (int i = 0; i < n; ++i)
      check(tokens[i] >= 0 && tokens[i] < c.n_vocab, "token id ", tokens[i],
            " is outside the vocabulary [0, ", c.n_vocab, ")");
    // Until this call completes the devices may hold different prefixes; a retry from
    // pos0 truncates them all back.
    n_pos_ = pos0;
    for (int start = 0; start < n; start += RingImpl::kBatch) {
      const int m = std::min(RingImpl::kBatch, n - start);
      const bool last_batch = start + m == n;
      float* out = all_logits   ? logits + static_cast<size_t>(start) * c.n_vocab
                   : last_batch ? logits
                                : nullptr;
      // A batch that the ring's failure interrupted runs again on the rebuilt ring, which
      // holds this sequence's first n_pos_ tokens again (replayed).
      while (true) {
        uint64_t epoch;
        {
          std::shared_lock<std::shared_mutex> lock = r_.use(&epoch);
          log_.tokens.resize(static_cast<size_t>(n_pos_));
          try {
            r_.run_batch(seq_, tokens + start, m, pos0 + start, all_logits, out);
            log_.tokens.insert(log_.tokens.end(), tokens + start, tokens + start + m);
            break;
          } catch (const RingBroken&) {
          }
        }
        r_.await(epoch);
      }
      n_pos_ = pos0 + start + m;
    }
  }

 private:
  RingImpl& r_;
  uint64_t seq_;
  int n_pos_ = 0;
  SequenceLog log_;
};

}  // namespace

std::unique_ptr<Forward> RingImpl::open_sequence() {
  const int now = open.fetch_add(1) + 1;
  if (now > opt.max_sequences) {
    open.fetch_sub(1);
    fail("too many sequences at once (the ring was set up for ", opt.max_sequences, ")");
  }
  return std::make_unique<RemoteForward>(*this, next_seq.fetch_add(1));
}

}  // namespace braid::dist
