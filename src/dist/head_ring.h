// The head's internals shared by head.cpp (setup), head_plan.cpp (who runs what),
// head_forward.cpp (RemoteForward, the data path) and head_recover.cpp / head_replan.cpp
// (heartbeats, and rebuilding the ring on the survivors when a worker is lost).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <exception>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <shared_mutex>
#include <string>
#include <thread>
#include <vector>

#include "braid/cluster.h"
#include "braid/mapped_file.h"
#include "braid/planner.h"
#include "braid/protocol.h"
#include "braid/thread_pool.h"
#include "dist/transport_frames.h"
#include "dist/worker_model.h"
#include "dist/worker_stage.h"

namespace braid::dist {

// What a worker's stage took per decode token in the range it runs now, as its replies
// reported (head_speed.cpp): a re-plan prices the worker from these when it has no
// profile, instead of profiling it.
struct RunTimes {
  int first = 0, last = 0;  // the range they were measured over
  bool output = false;      // (and the output)
  std::vector<double> ms;   // the most recent last, at most kKeep
  static constexpr size_t kKeep = 32;
};

// One worker as the head sees it.
struct RemoteWorker {
  net::Endpoint addr;
  std::string name;  // what the worker calls itself
  int threads = 0;
  std::shared_ptr<net::Connection> control;
  std::mutex control_mu;  // setup, teardown and diagnosis may overlap
  uint64_t session = 0;
  DeviceProfile profile;
  // The profile was derived from `ran` (head_speed.cpp), not measured (PROFILE): its
  // memory_bytes is 0, unknown.
  bool profile_derived = false;
  RunTimes ran;  // under RingImpl::balance_mu
  double rtt_ms = 0, bytes_per_s = 0;
  bool probed = false;  // rtt_ms and bytes_per_s are measured
  int first = 0, last = 0;         // assigned layers
  std::set<std::string> streamed;  // tensors sent to it (a worker without the model file)
  bool output = false;             // runs the output norm + head
  bool dialed_in = false;          // reached us through HeadOptions::accept: only we can reach it

  // Failure detection (head_recover.cpp). last_ok: the last reply on the control link
  // (under control_mu). lost: it died, hangs or cannot be reached; it stays out of the
  // ring from then on, and lost_label says what it ran (under RingImpl::state_mu).
  std::chrono::steady_clock::time_point last_ok{};
  std::atomic<bool> lost{false};
  std::string lost_label;    // "worker ... (layers [2, 5)) lost (why)"
  bool loss_logged = false;  // (supervisor only)
  bool loaded = false;       // its session holds layers (LOAD), so a re-plan sends ASSIGN
  std::thread heartbeat;
  std::atomic<bool> heartbeating{false};

  bool in_ring() const { return last > first || output; }
  std::string label() const;  // "worker 127.0.0.1:7001 (layers [2, 5))"
  // One request on the control link and its reply (see expect<T>() for unpacking it).
  Incoming request(const proto::Frame& f, net::Millis timeout);
  Incoming request(const LinkMessage& m, net::Millis timeout);
};

// A run of consecutive stages on workers that pass hidden states to each other
// directly; the head feeds the first and hears from the last.
struct Chain {
  std::vector<int> workers;  // indices into RingImpl::workers, in ring order
  std::shared_ptr<net::Connection> in, out;
  std::mutex send_mu;
  std::thread receiver;

  std::mutex mu;
  std::condition_variable cv;
  std::map<uint64_t, Incoming> replies;  // by sequence: at most one batch is in flight
  std::string broken;                    // why the chain stopped, once it has
  uint64_t epoch = 0;                    // the ring generation it belongs to
};

// The chain broke under a batch: the ring is being rebuilt. Callers wait for it
// (RingImpl::await) and retry the batch.
struct RingBroken : Error {
  using Error::Error;
};

// The survivors of a failure cannot hold the model (head_replan.cpp).
struct NoPlacement : Error {
  using Error::Error;
};

// The tokens a live sequence holds on the ring ([0, tokens.size())), so that it can be
// replayed into rebuilt KV caches. Written by its Forward under a shared RingImpl::topo_mu,
// read by the recovery under the exclusive one.
struct SequenceLog {
  std::vector<int32_t> tokens;
};

// One step of the ring: the head's own layers, or a chain of workers.
struct Step {
  bool local = false;
  int first = 0, last = 0;
  int chain = -1;
};

struct PlanResult {
  int head_first = 0, head_last = 0;
  bool output_at_head = false;
  // Ring order: worker index and its range; workers left out are absent.
  struct Part {
    int worker = -1;  // -1: the head
    int first = 0, last = 0;
  };
  std::vector<Part> parts;
  double predicted_ms = 0;
  std::string summary;  // the planner's description, when it planned
};

class RingImpl : public Ring {
 public:
  ~RingImpl() override;
  std::unique_ptr<Forward> open_sequence() override;
  std::string describe() const override;
  std::string describe_locked() const;  // describe() for a caller that holds topo_mu
  double predicted_ms_per_token() const override {
    std::shared_lock<std::shared_mutex> lock(topo_mu);  // a re-plan may replace it
    return plan.predicted_ms;
  }

  void log(const std::string& line) const;
  void receive_loop(int c);  // chain c's receiver thread

  // Dial-in workers (head_accept.cpp): a listener that takes their control links and,
  // later, the data links they open on request.
  void start_accepting(const std::string& at);
  void accept_loop();
  void stop_accepting();
  // Waits for n control links; adds a RemoteWorker for each.
  void wait_for_workers(int n, net::Millis timeout);
  // The data link of `kind` a dial-in worker opened for its session.
  std::shared_ptr<net::Connection> take_link(uint64_t session, LinkKind kind, net::Millis timeout);
  // Sends a request that needs the model (PROFILE_REQUEST, LOAD) and returns the reply.
  // A worker without the model file answers ERROR (model mismatch): it then gets the
  // file's header and the tensors `needed` (head_stream.cpp), and the request again.
  Incoming request_with_model(RemoteWorker& w, const proto::Frame& request,
                              const std::vector<std::string>& needed);
  // Input/output link of worker w: dialed by us, or by it on request.
  std::shared_ptr<net::Connection> link_to(RemoteWorker& w, LinkKind kind);

  // ---- Layout (head.cpp), shared by setup and recovery ----
  // LOAD of w's range (a new session, or one that had no layers).
  void load(RemoteWorker& w);
  // A new control link to a worker the plan had left out (its old session ended).
  void reconnect(RemoteWorker& w, net::Millis timeout);
  // plan -> steps and chains; sets every worker's range and output flag.
  void lay_out();
  // Links the chains (ROUTE), ends the sessions of workers the plan leaves out, opens the
  // head's links and starts the chains' receivers. Workers hold their layers already.
  void link_ring();
  // Breaks every chain: waiters get RingBroken, links are interrupted. Thread-safe
  // against batches in flight.
  void break_chains(const std::string& why);
  // break_chains, then joins the receivers and closes the links (no batch may run).
  void stop_chains(const std::string& why);

  // ---- The data path (head_forward.cpp) ----
  // Tokens [pos0, pos0 + n) of sequence seq (n <= kBatch) through the ring: embed, every
  // step, the output. logits: n x n_vocab rows with all_logits, else the last token's; null
  // to drop them. The caller holds topo_mu. Throws RingBroken when the ring broke.
  static constexpr int kBatch = 512;
  void run_batch(uint64_t seq, const int32_t* tokens, int n, int pos0, bool all_logits, float* logits);
  Incoming round_trip(uint64_t seq, int c, int pos, const std::vector<float>& hidden, bool all_logits);

  // ---- Failure recovery (head_recover.cpp) ----
  enum class State { kRunning, kRecovering, kFailed };
  // After setup: a heartbeat thread per worker in the ring, and the supervisor.
  void start_supervision();
  void stop_supervision();
  // A worker (or, with worker < 0, the data path of ring generation `in_epoch`) failed.
  // Thread-safe; the supervisor rebuilds the ring.
  void report_failure(int worker, const std::string& why, uint64_t in_epoch);
  // The ring for one batch: waits while it is rebuilt, throws its fatal error, and
  // returns a shared lock on the layout and the generation it holds.
  std::shared_lock<std::shared_mutex> use(uint64_t* epoch_out);
  // Waits until the ring runs in a generation after `seen`; throws the fatal error.
  void await(uint64_t seen);
  void heartbeat_loop(int w);
  void supervise();
  // One rebuild: find who is lost, re-plan, reassign, relink, replay. Under topo_mu.
  void recover(const std::string& why);
  // Pings every worker of the ring; marks the ones that do not answer lost.
  void find_lost();
  // Who runs what now, over the workers not lost (head_replan.cpp). Throws NoPlacement.
  // Workers without a profile are priced from their run times where they have them
  // (their memory budgets then unknown, unbounded), else profiled; with profile_derived
  // every worker whose profile was derived is profiled now (a plan on derived speeds
  // failed: a worker may have refused layers it cannot hold). speeds_note says which.
  PlanResult plan_survivors(bool profile_derived = false);
  std::string speeds_note;  // "speeds from run time" / "profiled 2 workers" (last re-plan)
  // Every live sequence's tokens through the rebuilt ring (fills the KV caches).
  void replay_all();
  // Puts `plan` in place: the head's stage, ASSIGN (or LOAD), links, replay, a new epoch.
  // Under topo_mu, with the old chains stopped. With `moved` (balancing) the caches of
  // layers that stay on a device are kept (ASSIGN keep_kv), moved() stores the rows of
  // the layers that changed hands, and nothing is replayed. apply_note says where its
  // time went ("assign 12 ms, link 3 ms, replay of 40 tokens 610 ms").
  void apply_plan(const std::function<void()>& moved = nullptr);
  std::string apply_note;

  // ---- Runtime balancing (head_balance.cpp) ----
  // One decode token's stage times (worker index, ms), from run_batch.
  void note_decode(const std::vector<std::pair<int, double>>& times);
  // Forget the stage times of the previous layout (under topo_mu).
  void reset_clocks();
  // The supervisor's move: re-plan with the measured speeds and apply it if it differs.
  void rebalance(const std::string& why);
  // Moves to `next` carrying the KV caches of the layers that change hands from their old
  // owner to the new one (KV_ROWS, through the head) instead of replaying. Returns what
  // it moved for the log ("KV of 2 sequences, layers [2, 3): 81920 bytes in 1.2 ms").
  std::string move_with_kv(const PlanResult& next);

  struct StageClock {
    std::vector<double> first;   // the first balance_window times after a (re)plan
    double baseline_ms = 0;      // their median: what the stage takes in this layout
    std::vector<double> recent;  // the last balance_window times
    int off = 0;                 // tokens in a row beyond balance_margin of the baseline
  };
  std::mutex balance_mu;
  std::map<int, StageClock> clocks;  // by worker index
  int64_t decode_tokens = 0;         // decode batches so far
  int64_t quiet_until = 0;           // no move is asked for before this many
  std::map<int, double> balance_ratio;  // measured / baseline per worker, for the move
  std::string balance_request;          // for the supervisor (under state_mu)
  void register_sequence(uint64_t seq, SequenceLog* log);
  void unregister_sequence(uint64_t seq);

  mutable std::shared_mutex topo_mu;  // plan, chains, steps, stage: shared per batch
  std::mutex state_mu;
  std::condition_variable state_cv;
  State state = State::kRunning;
  uint64_t epoch = 1;  // the ring's generation; each rebuild adds one
  std::string fatal;   // kFailed: what every caller gets
  struct Failure {
    int worker;  // -1: the data path
    std::string why;
    uint64_t epoch;
  };
  std::vector<Failure> failures;  // reported, not yet handled
  std::thread supervisor;
  std::mutex seq_mu;
  std::map<uint64_t, SequenceLog*> sequences;
  std::atomic<int> profiles_requested{0};  // PROFILE_REQUESTs sent (setup and re-plans)
  std::vector<double> head_layer_ms;  // the head's profile, once measured for a re-plan
  double head_output_ms = 0;
  uint64_t head_memory = 0;

  std::shared_ptr<const Model> model;
  net::Tls tls;
  HeadOptions opt;
  proto::WireType transfer = proto::WireType::kF32;
  std::string model_path;            // absolute, as the workers are told
  std::shared_ptr<MappedFile> file;  // the model file's bytes, when streaming
  proto::Sha256 fingerprint{};
  std::vector<std::unique_ptr<RemoteWorker>> workers;
  std::vector<std::unique_ptr<Chain>> chains;
  std::vector<Step> steps;
  PlanResult plan;
  std::unique_ptr<ThreadPool> pool;
  std::unique_ptr<Stage> stage;  // the head's own layers (maybe none) and the output
  std::atomic<bool> stopping{false};
  std::atomic<uint64_t> next_seq{1};
  std::atomic<int> open{0};

  std::unique_ptr<net::Listener> listener;
  std::thread acceptor;
  std::atomic<bool> accepting{false};
  std::mutex accept_mu;
  std::condition_variable accept_cv;
  std::vector<std::pair<std::shared_ptr<net::Connection>, uint64_t>> joined;   // control links, sessions
  std::map<std::pair<uint64_t, int>, std::shared_ptr<net::Connection>> links;  // (session, kind)
};

// "f32", "f16", "q8" -> the wire type. Throws braid::Error.
proto::WireType transfer_from_name(const std::string& name);

// Ring::start up to planning (also `braid plan`, head_plan.cpp): checks the options,
// dials and authenticates every worker and waits for the ones that dial in.
std::unique_ptr<RingImpl> connect_ring(std::shared_ptr<const Model> model, const std::string& model_path,
                                       const net::Tls& tls, const HeadOptions& options);

// Decides who runs which layers: opt.split as given, or the planner over the workers'
// profiles (head_plan.cpp).
// Runs fn(i) for every i in [0, n) on its own thread, waits for all of them, and
// rethrows the first failure (in index order, so the message does not depend on timing).
template <class Fn>
void for_each_parallel(size_t n, Fn fn) {
  std::vector<std::future<void>> fs;
  for (size_t i = 0; i < n; ++i) fs.push_back(std::async(std::launch::async, [&fn, i] { fn(i); }));
  std::exception_ptr first;
  for (auto& f : fs) {
    try {
      f.get();
    } catch (...) {
      if (!first) first = std::current_exception();
    }
  }
  if (first) std::rethrow_exception(first);
}

// Has worker w profile the ring's model (time per layer, output, memory budget), unless
// it already has a profile, and probes its link (round trip, bandwidth), unless it was
// probed. A worker without the model file gets the small tensors and the first layer to
// time.
void measure_worker(RingImpl& r, RemoteWorker& w);

// ---- Speeds from run time (head_speed.cpp) ----
// Adds one decode token's time of w's stage (under balance_mu, with w's range stable:
// under a shared topo_mu). A new range starts a new record.
void record_run_time(RemoteWorker& w, double ms);
// w.profile from its last `window` run times: the median stage time spread over every
// layer and the output by their weight bytes (ms per byte, as measure_profile estimates
// layers it cannot time), memory_bytes 0 (unknown); sets w.profile_derived. False (w
// unchanged) with fewer than kMinRunTimes of them. Under balance_mu.
constexpr size_t kMinRunTimes = 3;
bool derive_profile(const Model& model, RemoteWorker& w, size_t window);
// The median of w.ran's last `window` times (0 when none), for the log.
double recent_run_ms(const RemoteWorker& w, size_t window);

// The planner's assignment in the model's layer numbers, as the ring runs it: the head
// runs layers [0, first_layer) itself before the planned ones (the planner's layer 0 is
// the model's first_layer); the planner's device d > 0 is worker worker_of[d - 1]
// (worker d - 1 when worker_of is empty). A plan ending at the head runs the output there.
PlanResult ring_plan_from(const planner::Plan& plan, const planner::Cluster& cluster, int first_layer,
                          bool output_at_head, const std::vector<int>& worker_of = {});
PlanResult plan_ring(const Model& model, RingImpl& ring);

}  // namespace braid::dist
