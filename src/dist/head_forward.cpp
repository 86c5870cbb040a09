// RemoteForward: a Forward whose layers run around the ring. The head embeds, runs its
// own layers, hands hidden states to each chain of workers and waits for what the chain
// sends back (hidden states, or logits from the stage that runs the output). One
// receiver thread per chain sorts replies by sequence, so several sequences can be in
// flight at once: while worker B runs sequence 1, worker A already runs sequence 2.
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
  if (!stopping.load()) why = diagnose(c, why);
  std::lock_guard<std::mutex> lock(chain.mu);
  chain.broken = why;
  chain.cv.notify_all();
}

namespace {

class RemoteForward : public Forward {
 public:
  RemoteForward(RingImpl& ring, uint64_t seq) : r_(ring), seq_(seq) {}

  ~RemoteForward() override {
    // Workers free this sequence's caches; nothing comes back, and a ring that broke
    // meanwhile has nothing left to free.
    const proto::Frame end = make_frame(proto::SeqReset{}, seq_);
    for (auto& chain : r_.chains) {
      try {
        std::lock_guard<std::mutex> lock(chain->send_mu);
        send(*chain->in, end, r_.opt.io_timeout);
      } catch (const Error&) {
      }
    }
    r_.stage->end(seq_);
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
    for (int start = 0; start < n; start += kBatch) {
      const int m = std::min(kBatch, n - start);
      const bool last_batch = start + m == n;
      hidden_.resize(static_cast<size_t>(m) * c.dim);
      r_.model->embed(tokens + start, m, pos0 + start, hidden_.data());
      bool have_logits = false;
      for (const Step& step : r_.steps) {
        if (step.local) {
          r_.stage->run(seq_, pos0 + start, m, hidden_.data());
          continue;
        }
        Incoming reply = round_trip(step.chain, pos0 + start, m, all_logits);
        if (const auto* l = reply.get<proto::Logits>()) {
          // One row (the last token's) unless all_logits; earlier batches of a long
          // prompt without all_logits get theirs too, unused.
          const int rows = all_logits ? m : 1;
          check(l->mode == proto::LogitsMode::kFull && static_cast<int>(l->n_tokens) == rows &&
                    static_cast<int>(l->n_vocab) == c.n_vocab &&
                    l->pos0 == static_cast<uint32_t>(pos0 + start + m - rows),
                "worker sent logits for ", l->n_tokens, " tokens of ", l->n_vocab, " at ", l->pos0,
                ", expected ", rows, " of ", c.n_vocab, " at ", pos0 + start + m - rows);
          if (all_logits) {
            std::copy(l->full.begin(), l->full.end(), logits + static_cast<size_t>(start) * c.n_vocab);
          } else if (last_batch) {
            std::copy(l->full.begin(), l->full.end(), logits);
          }
          have_logits = true;
        } else {
          const auto* a = reply.get<proto::Activations>();
          check(static_cast<int>(a->n_tokens) == m && static_cast<int>(a->dim) == c.dim &&
                    a->pos0 == static_cast<uint32_t>(pos0 + start),
                "worker sent hidden states for ", a->n_tokens, " tokens of ", a->dim, " at ", a->pos0,
                ", expected ", m, " of ", c.dim, " at ", pos0 + start);
          hidden_ = a->to_f32();
        }
      }
      if (r_.plan.output_at_head) {
        check(!have_logits, "internal: logits from a worker while the head runs the output");
        if (all_logits) {
          r_.stage->output(hidden_.data(), m, logits + static_cast<size_t>(start) * c.n_vocab);
        } else if (last_batch) {
          r_.stage->output(hidden_.data() + static_cast<size_t>(m - 1) * c.dim, 1, logits);
        }
      } else {
        check(have_logits, "internal: the ring returned no logits");
      }
      n_pos_ = pos0 + start + m;
    }
  }

 private:
  // Long prompts go in batches: frames stay a bounded size and prefill of a later batch
  // overlaps nothing it depends on. Results do not depend on the batch size.
  static constexpr int kBatch = 512;

  Incoming round_trip(int c, int pos, int m, bool all_logits) {
    Chain& chain = *r_.chains[static_cast<size_t>(c)];
    proto::Activations a = proto::Activations::from_f32(
        static_cast<uint32_t>(pos), static_cast<uint32_t>(r_.model->config().dim), hidden_, r_.transfer);
    a.all_logits = all_logits;
    const proto::Frame h = make_frame(std::move(a), seq_, static_cast<uint32_t>(pos));
    {
      std::lock_guard<std::mutex> lock(chain.mu);
      check(chain.broken.empty(), chain.broken);
      chain.replies.erase(seq_);
    }
    try {
      std::lock_guard<std::mutex> lock(chain.send_mu);
      send(*chain.in, h, r_.opt.io_timeout);
    } catch (const Error& e) {
      fail(r_.diagnose(c, e.what()));
    }
    std::unique_lock<std::mutex> lock(chain.mu);
    const bool got = chain.cv.wait_for(
        lock, r_.opt.io_timeout, [&] { return chain.replies.count(seq_) > 0 || !chain.broken.empty(); });
    if (!got) {
      const RemoteWorker& last = *r_.workers[static_cast<size_t>(chain.workers.back())];
      fail("no reply from ", last.label(), " within ", net::format_duration(r_.opt.io_timeout));
    }
    auto it = chain.replies.find(seq_);
    if (it == chain.replies.end()) fail(chain.broken);
    Incoming reply = std::move(it->second);
    chain.replies.erase(it);
    if (const auto* e = reply.get<proto::ErrorMessage>()) fail(e->message);
    return reply;
  }

  RingImpl& r_;
  uint64_t seq_;
  int n_pos_ = 0;
  std::vector<float> hidden_;
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
