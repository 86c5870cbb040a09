// Failure recovery: heartbeats on every worker's control link find a worker that died,
// hangs or lost its network within HeadOptions::failure_timeout; a broken data link
// reports itself at once. The supervisor thread then rebuilds the ring:
//
//   1. break every chain: batches in flight wake with RingBroken and wait (await);
//   2. ping every worker of the ring: the ones that do not answer are lost for good;
//   3. re-plan on the survivors (head_replan.cpp) with the profiles the head has, or
//      the speeds the survivors showed while they ran (no profiling);
//   4. ASSIGN each survivor its new range (fresh KV caches), relink the chains;
//   5. replay every live sequence's tokens through the new ring, which fills the caches
//      with what they held (the same computation, so the same bits);
//   6. a new epoch: the waiting batches run again, on the new ring.
//
// Where the survivors cannot hold the model, or rebuilding keeps failing, the ring is
// failed: every waiting and later batch throws the one-line reason.
#include <chrono>
#include <future>

#include "braid/error.h"
#include "dist/head_ring.h"
#include "dist/worker_stream.h"

namespace braid::dist {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

int64_t ms_since(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

// Rebuild attempts in a row that find no newly lost worker before the ring gives up.
constexpr int kMaxFruitlessAttempts = 3;

}  // namespace

void RingImpl::start_supervision() {
  if (!supervisor.joinable()) supervisor = std::thread([this] { supervise(); });
  if (opt.heartbeat_interval.count() <= 0) return;
  const auto now = Clock::now();
  for (size_t i = 0; i < workers.size(); ++i) {
    RemoteWorker& w = *workers[i];
    if (!w.in_ring() || !w.control || w.heartbeating.load()) continue;
    if (w.heartbeat.joinable()) w.heartbeat.join();  // of an earlier membership
    {
      std::lock_guard<std::mutex> lock(w.control_mu);
      w.last_ok = now;
    }
    w.heartbeating.store(true);
    w.heartbeat = std::thread([this, i] {
      heartbeat_loop(static_cast<int>(i));
      workers[i]->heartbeating.store(false);
    });
  }
}

void RingImpl::stop_supervision() {
  {
    std::lock_guard<std::mutex> lock(state_mu);
    stopping.store(true);
    state_cv.notify_all();
  }
  if (supervisor.joinable()) supervisor.join();
  for (auto& w : workers)
    if (w->heartbeat.joinable()) w->heartbeat.join();
}

void RingImpl::heartbeat_loop(int wi) {
  RemoteWorker& w = *workers[static_cast<size_t>(wi)];
  const uint32_t timeout_ms = static_cast<uint32_t>(opt.failure_timeout.count());
  while (true) {
    {
      std::unique_lock<std::mutex> lock(state_mu);
      state_cv.wait_for(lock, opt.heartbeat_interval, [&] { return stopping.load(); });
      if (stopping.load()) return;
    }
    if (w.lost.load()) return;
    std::string why;
    {
      // A request on the link already (the supervisor's): its reply is the sign of life,
      // and its own timeout bounds it.
      std::unique_lock<std::mutex> lock(w.control_mu, std::try_to_lock);
      if (!lock.owns_lock()) continue;
      if (!w.control) return;  // left out of the ring
      const auto now = Clock::now();
      // The deadline counts from the last answer, so a worker that stops answering is
      // lost failure_timeout after its last sign of life, whatever the interval.
      const auto deadline = w.last_ok + opt.failure_timeout;
      const net::Millis left = std::max(net::Millis(50), std::chrono::ceil<net::Millis>(deadline - now));
      try {
        proto::Heartbeat hb;
        hb.time_us = static_cast<uint64_t>(
            std::chrono::duration_cast<std::chrono::microseconds>(now.time_since_epoch()).count());
        hb.timeout_ms = timeout_ms;
        send(*w.control, make_frame(hb), left);
        expect<proto::Heartbeat>(receive(*w.control, left), w.label());
        w.last_ok = Clock::now();
        continue;
      } catch (const Error& e) {
        // (A read that timed out may wake a few ms early, by the transport's clock.)
        why = Clock::now() + 20ms >= deadline
                  ? cat("no answer for ", net::format_duration(opt.failure_timeout),
                        " (it hangs, or its network is gone)")
                  : std::string(e.what());
      }
    }
    report_failure(wi, why, 0);
    return;
  }
}

void RingImpl::report_failure(int worker, const std::string& why, uint64_t in_epoch) {
  std::lock_guard<std::mutex> lock(state_mu);
  if (stopping.load() || state == State::kFailed) return;
  if (in_epoch != 0 && in_epoch < epoch) return;  // a chain that was replaced already
  if (worker >= 0) {
    RemoteWorker& w = *workers[static_cast<size_t>(worker)];
    if (w.lost.load()) return;
    w.lost_label = cat(w.label(), " lost (", why, ")");
    w.lost.store(true);
  }
  failures.push_back({worker, why, in_epoch});
  state = State::kRecovering;
  state_cv.notify_all();
}

std::shared_lock<std::shared_mutex> RingImpl::use(uint64_t* epoch_out) {
  while (true) {
    {
      std::unique_lock<std::mutex> lock(state_mu);
      state_cv.wait(lock, [&] { return state != State::kRecovering || stopping.load(); });
      if (state == State::kFailed) fail(fatal);
      check(!stopping.load(), "the ring was shut down");
    }
    std::shared_lock<std::shared_mutex> topo(topo_mu);
    std::lock_guard<std::mutex> lock(state_mu);
    if (state == State::kRunning) {
      *epoch_out = epoch;
      return topo;
    }
  }
}

void RingImpl::await(uint64_t seen) {
  std::unique_lock<std::mutex> lock(state_mu);
  state_cv.wait(lock, [&] {
    return stopping.load() || state == State::kFailed || (state == State::kRunning && epoch > seen);
  });
  if (state == State::kFailed) fail(fatal);
  check(!stopping.load(), "the ring was shut down");
}

void RingImpl::supervise() {
  std::unique_lock<std::mutex> lock(state_mu);
  while (true) {
    state_cv.wait(lock, [&] { return stopping.load() || !failures.empty() || !balance_request.empty(); });
    if (stopping.load()) return;
    if (failures.empty()) {
      const std::string why = std::move(balance_request);
      balance_request.clear();
      lock.unlock();
      rebalance(why);
      lock.lock();
      continue;
    }
    std::string why;
    for (const Failure& f : failures) {
      if (!why.empty()) why += "; ";
      why += f.worker >= 0 ? workers[static_cast<size_t>(f.worker)]->lost_label
                           : cat("the ring broke (", f.why, ")");
    }
    failures.clear();
    lock.unlock();
    recover(why);
    lock.lock();
  }
}

void RingImpl::find_lost() {
  std::vector<std::future<void>> pings;
  for (size_t i = 0; i < workers.size(); ++i) {
    RemoteWorker* w = workers[i].get();
    if (w->lost.load() || !w->control) continue;
    pings.push_back(std::async(std::launch::async, [this, w, i] {
      try {
        expect<proto::Probe>(w->request(make_frame(proto::Probe{}), opt.failure_timeout), w->label());
      } catch (const Error& e) {
        report_failure(static_cast<int>(i), e.what(), 0);
      }
    }));
  }
  for (auto& p : pings) p.get();
}

void RingImpl::register_sequence(uint64_t seq, SequenceLog* log) {
  std::lock_guard<std::mutex> lock(seq_mu);
  sequences[seq] = log;
}

void RingImpl::unregister_sequence(uint64_t seq) {
  std::lock_guard<std::mutex> lock(seq_mu);
  sequences.erase(seq);
}

void RingImpl::replay_all() {
  std::vector<std::pair<uint64_t, std::vector<int32_t>>> todo;
  {
    std::lock_guard<std::mutex> lock(seq_mu);
    for (const auto& [seq, log] : sequences)
      if (!log->tokens.empty()) todo.emplace_back(seq, log->tokens);
  }
  // All sequences at once: the ring pipelines them as it does live traffic. Batches of
  // the same size as a prompt's give the same bits (the kernels are row-independent).
  for_each_parallel(todo.size(), [this, &todo](size_t i) {
    const auto& [seq, tokens] = todo[i];
    const int n = static_cast<int>(tokens.size());
    for (int start = 0; start < n; start += kBatch)
      run_batch(seq, tokens.data() + start, std::min(kBatch, n - start), start, false, nullptr);
  });
}

void RingImpl::apply_plan(const std::function<void()>& moved) {
  const auto t0 = Clock::now();
  auto next =
      std::make_unique<Stage>(model, plan.head_first, plan.head_last, opt.n_ctx, opt.max_sequences, *pool);
  if (moved && stage) next->adopt_kv(*stage);
  stage = std::move(next);
  uint64_t now;
  {
    std::lock_guard<std::mutex> lock(state_mu);
    now = ++epoch;  // chains of the new layout belong to the new generation
  }
  lay_out();
  std::vector<RemoteWorker*> used;
  for (auto& chain : chains)
    for (int wi : chain->workers) used.push_back(workers[static_cast<size_t>(wi)].get());
  std::vector<std::future<void>> fs;
  for (RemoteWorker* w : used) {
    fs.push_back(std::async(std::launch::async, [this, w, now, keep = moved != nullptr] {
      if (!w->loaded) return load(*w);
      proto::Assign a;
      a.epoch = static_cast<uint32_t>(now);
      a.first_layer = static_cast<uint32_t>(w->first);
      a.last_layer = static_cast<uint32_t>(w->last);
      a.runs_output = w->output;
      a.keep_kv = keep;
      expect<proto::Loaded>(
          request_with_model(*w, make_frame(a),
                             tensors_for_stage(model->gguf(), w->first, w->last, w->output)),
          w->label());
    }));
  }
  std::exception_ptr first;
  for (auto& f : fs) {
    try {
      f.get();
    } catch (...) {
      if (!first) first = std::current_exception();
    }
  }
  if (first) std::rethrow_exception(first);
  const int64_t assign_ms = ms_since(t0);
  bool dialed_in = false;
  for (RemoteWorker* w : used) dialed_in = dialed_in || w->dialed_in;
  if (dialed_in) start_accepting(opt.accept);  // their new data links come in there
  if (moved) moved();                          // on the control links, before the data path runs again
  const auto t1 = Clock::now();
  link_ring();
  stop_accepting();
  const int64_t link_ms = ms_since(t1);
  apply_note = cat("assign ", assign_ms, " ms, link ", link_ms, " ms");
  if (!moved) {
    size_t tokens = 0;
    {
      std::lock_guard<std::mutex> lock(seq_mu);
      for (const auto& [seq, log] : sequences) tokens += log->tokens.size();
    }
    const auto t2 = Clock::now();
    replay_all();
    apply_note += cat(", replay of ", tokens, tokens == 1 ? " token " : " tokens ", ms_since(t2), " ms");
  }
  reset_clocks();
}

void RingImpl::recover(const std::string& why) {
  const auto t0 = Clock::now();
  log(cat(why, "; rebuilding the ring"));
  // Wake every batch in flight, so that it lets go of the layout, then take it.
  break_chains("the ring is being rebuilt: " + why);
  std::unique_lock<std::shared_mutex> topo(topo_mu);
  stop_chains("the ring is being rebuilt: " + why);

  // Each failed attempt either finds another lost worker on the next one, or is one of
  // a few fruitless ones: the loop ends.
  const size_t max_attempts = workers.size() + kMaxFruitlessAttempts;
  std::string problem;
  // After an attempt on speeds derived from run time failed, the next ones profile: a
  // worker may have refused layers beyond a memory budget the head did not know.
  bool profile_derived = false;
  int64_t plan_ms = 0;
  for (size_t attempt = 0; attempt < max_attempts && !stopping.load(); ++attempt) {
    // Workers the plan had left out may take layers now: new sessions (one that does
    // not answer stays out this time).
    std::vector<std::future<void>> dials;
    for (auto& wp : workers) {
      RemoteWorker* w = wp.get();
      if (w->lost.load() || w->control || w->dialed_in) continue;
      dials.push_back(std::async(std::launch::async, [this, w] {
        try {
          reconnect(*w, opt.failure_timeout);
        } catch (const Error& e) {
          log(cat("cannot take back ", w->addr.str(), ": ", e.what()));
        }
      }));
    }
    for (auto& d : dials) d.get();
    find_lost();
    for (auto& w : workers) {
      if (!w->lost.load()) continue;
      // Its session ends (a worker that hangs finds it closed when it wakes up).
      std::lock_guard<std::mutex> lock(w->control_mu);
      if (w->control) {
        w->control->interrupt();
        w->control.reset();
      }
    }
    {
      std::lock_guard<std::mutex> lock(state_mu);
      failures.clear();  // what was reported so far is what this attempt deals with
    }
    bool derived = false;
    try {
      const auto t1 = Clock::now();
      plan = plan_survivors(profile_derived);
      plan_ms = ms_since(t1);
      for (const auto& part : plan.parts)
        derived = derived || (part.worker >= 0 && workers[static_cast<size_t>(part.worker)]->profile_derived);
      apply_plan();
      problem.clear();
      break;
    } catch (const NoPlacement& e) {
      problem = e.what();
      break;
    } catch (const Error& e) {
      // Someone else failed meanwhile (the next find_lost finds who), or the links did
      // not come up: tear down what was built and try again.
      problem = e.what();
      stop_accepting();
      break_chains(problem);
      stop_chains(problem);
      profile_derived = profile_derived || derived;
    }
  }

  // What happened, in one line: the workers lost since the last rebuild, else the break.
  std::string what;
  for (auto& w : workers) {
    if (!w->lost.load() || w->loss_logged) continue;
    w->loss_logged = true;
    std::lock_guard<std::mutex> lock(state_mu);
    what += (what.empty() ? "" : "; ") + w->lost_label;
  }
  if (what.empty()) what = why;

  std::lock_guard<std::mutex> lock(state_mu);
  if (stopping.load()) return;
  if (!problem.empty()) {
    size_t left = 0;
    for (auto& w : workers) left += !w->lost.load() && w->control != nullptr;
    fatal = cat(what, "; the ", left, left == 1 ? " surviving worker" : " surviving workers",
                " cannot go on: ", problem);
    state = State::kFailed;
    log(fatal);
  } else {
    // Failures reported while rebuilding, about workers the new ring does not use or
    // chains it replaced, are dealt with; anything else needs another round.
    std::vector<Failure> rest;
    for (const Failure& f : failures) {
      const bool handled = f.worker >= 0 ? !workers[static_cast<size_t>(f.worker)]->in_ring()
                                         : f.epoch != 0 && f.epoch < epoch;
      if (!handled) rest.push_back(f);
    }
    failures = std::move(rest);
    state = failures.empty() ? State::kRunning : State::kRecovering;
    // Where the time went: the re-plan (profiles, if any), ASSIGN, relinking, replay.
    log(cat(what, "; re-planned: ", describe_locked(), "; ",
            speeds_note.empty() ? std::string() : speeds_note + ", ", "plan ", plan_ms, " ms, ", apply_note,
            "; recovered in ", ms_since(t0), " ms"));
    start_supervision();  // heartbeats for workers that joined the ring again
  }
  state_cv.notify_all();
}

}  // namespace braid::dist
