// The distributed runtime: workers that each run a range of a model's layers, and the
// head that drives them as a ring (docs/architecture.md, docs/protocol.md).
//
//   head: tokens -> embed -> [head's own layers] -> worker A -> worker B -> ... -> head
//                                      logits (or hidden states) come back ^
//
// On each device:
//   braid::net::Tls tls = braid::net::Tls::from_secret_file("cluster.key");
//   braid::net::Listener listener(tls, braid::net::Endpoint::parse("0.0.0.0:7000"));
//   braid::dist::Worker worker(tls, {});
//   worker.serve(listener);                           // until worker.stop()
//
// On the head:
//   braid::dist::HeadOptions opt;
//   opt.workers = {Endpoint::parse("10.0.0.2:7000"), Endpoint::parse("10.0.0.3:7000")};
//   auto ring = braid::dist::Ring::start(model, "model.gguf", tls, opt);
//   std::unique_ptr<braid::Forward> fwd = ring->open_sequence();
//   braid::Generator gen(*fwd, tokenizer);          // unchanged: local or remote
//
// Each worker maps the same model file (the head sends its path and a fingerprint of
// its header); a worker without it gets the tensors it needs streamed by the head. The
// layer assignment comes from the planner (each worker measures its
// time per layer after loading) or from a fixed split. Several sequences may be in
// flight at once (one Forward each, used from different threads): the ring pipelines
// them, each worker keeping one KV cache per sequence. Outputs are bit-identical to a
// single-device run when hidden states travel as f32 (the default).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "braid/generate.h"
#include "braid/model.h"
#include "braid/planner.h"
#include "braid/transport.h"

namespace braid::dist {

// One line per event ("refused 10.0.0.9:5555: wrong cluster secret"). The default
// writes "braid worker: <line>" / "braid head: <line>" to stderr.
using LogFn = std::function<void(const std::string& line)>;

struct WorkerOptions {
  std::string name;        // shown in the head's plan; default: host name
  int threads = 1;         // compute threads per session
  uint64_t mem_limit = 0;  // bytes braid may use here; 0 = the memory available
  double slowdown = 1.0;   // >= 1: emulate a device this many times slower
  // Where models are: a model the head names is looked up by its file name here. Empty:
  // at the head's path. A model that is not found (or differs) is streamed by the head:
  // only the tensors this worker needs, kept in memory for the session.
  std::string model_dir;
  // Once it holds layers, warm its neighbours' boundary layers (read the model file's
  // pages of the layers around its range, nearest first) in the background, within
  // mem_limit (else the memory available) less what its own layers and KV caches need,
  // so that a re-plan that gives it some of them does not wait for storage.
  bool preload = true;
  net::Millis handshake_timeout{10000};  // TLS + proof + first frame of a connection
  net::Millis io_timeout{120000};        // finishing a frame once it has started
  int max_connections = 64;              // connections served at once; more are refused
  // Test hooks (`braid worker --die-after-batches N` and --hang-after-batches, hidden):
  // when batch N + 1 arrives (counting every ACTIVATIONS frame this worker received),
  // the process kills itself with SIGKILL or stops itself with SIGSTOP, so tests can
  // lose a worker at an exact point of a run. Negative: never.
  int die_after_batches = -1;
  int hang_after_batches = -1;
  // Likewise (--slowdown-after-batches N:X): the slowdown becomes slowdown_then.
  int slowdown_after_batches = -1;
  double slowdown_then = 1.0;
  LogFn log;
};

class Worker {
 public:
  Worker(net::Tls tls, WorkerOptions options);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Accepts and serves connections until stop(). Every connection runs on its own
  // thread; a peer that fails the handshake or sends a malformed frame is logged and
  // dropped, and the others go on.
  void serve(net::Listener& listener);
  // Dial-out mode (a device behind NAT): connects to the head's --accept address and
  // serves the sessions it gets, one after another, opening data links to the head on
  // request. Returns when stop() is called.
  void serve_head(const net::Endpoint& head);
  // Ends serve() / serve_head() and every session within about a second. Thread-safe.
  void stop();
  // Changes the emulated slowdown (WorkerOptions::slowdown) while it runs, from each
  // stage's next batch on: a device that heats up and throttles, or cools down (`braid
  // worker` doubles it on SIGUSR1). Profiles measured later see it too. Thread-safe.
  void set_slowdown(double factor);
  double slowdown() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

struct HeadOptions {
  std::vector<net::Endpoint> workers;  // in ring order for a fixed split
  // Workers may also dial in (`braid worker --connect`, for devices behind NAT): listen
  // on `accept` and wait up to accept_timeout for accept_count of them. They follow the
  // listed workers in ring order; the head relays their hidden states (nobody else can
  // reach them).
  std::string accept;
  int accept_count = 0;
  net::Millis accept_timeout{60000};
  int n_ctx = 2048;       // positions per sequence
  int max_sequences = 8;  // sequences in flight at once
  int threads = 1;        // for the head's own layers and the output
  // Fixed split instead of the planner: the head runs layers [0, head_layers), then
  // worker i runs split[i] (contiguous ranges covering the rest, in order). Empty: the
  // planner decides from the workers' profiles (head_layers < 0 lets it put layers on
  // the head too; >= 0 keeps the head's share fixed).
  std::vector<std::pair<int, int>> split;
  int head_layers = 0;
  // Without a fixed split, who decides the ranges: the planner, or one of the simple
  // splits it is compared with (docs/planner.md), over the workers in the order given
  // (after the head when head_layers < 0): the same number of layers each (kEven), or
  // layers in proportion to each device's memory budget (kMemory). Benchmarks use these.
  enum class SplitRule { kPlanner, kEven, kMemory };
  SplitRule split_rule = SplitRule::kPlanner;
  // What the planner minimises: one stream's ms/token (kLatency), or the busiest
  // device's time per token, which limits pipelined tokens/s (kThroughput).
  enum class Objective { kLatency, kThroughput };
  Objective objective = Objective::kLatency;
  // The head runs the output norm + head (the last worker sends hidden states back).
  bool output_at_head = false;
  std::string transfer = "f32";  // hidden states on the wire: f32, f16 or q8
  net::Millis connect_timeout{10000};
  net::Millis io_timeout{120000};  // a reply to one batch must come within this
  // Failure recovery. The head sends every worker in the ring a HEARTBEAT each
  // heartbeat_interval on its control link; a worker that has not answered for
  // failure_timeout (it died, hangs, or its network is gone), or whose links broke, is
  // lost. The head then re-plans on the survivors with the profiles it has (after a fixed
  // split, with the speeds their stages showed while running, profiling only a survivor
  // that never ran a decode token; the head takes layers only when head_layers < 0),
  // reassigns their layers (ASSIGN), relinks the ring, replays every live sequence's
  // tokens to rebuild the KV caches and retries the batch in flight: callers see a pause,
  // and greedy output is that of an uninterrupted run. When the survivors cannot hold the
  // model, every caller gets the error instead. heartbeat_interval 0: no heartbeats
  // (a lost worker is then noticed only when its links break).
  net::Millis heartbeat_interval{500};
  net::Millis failure_timeout{3000};
  // Runtime balancing. The head times every stage on every decode token (replies carry
  // the stages' timings). The first balance_window tokens after a plan set each worker's
  // baseline; when a worker then takes more than balance_margin times its baseline (it
  // throttles, or got busy), or less than 1 / balance_margin (it got faster), and by at
  // least balance_min_ms, for balance_window tokens in a row, the head re-plans with the
  // measured speeds and, if the plan changes, moves layers between two decode steps,
  // with the KV caches of every live sequence (sent from the old owner to the new one),
  // so the output does not change. Every move is logged with why. balance_window 0: off.
  int balance_window = 8;
  double balance_margin = 2.0;
  double balance_min_ms = 1.0;
  LogFn log;
};

// The head's side of a running ring: it dialed and configured the workers and holds the
// links. Destroying it ends the sessions (workers free the model and caches).
class Ring {
 public:
  // Connects to every worker, has them load `model_path` (the same file `model` was
  // loaded from, or an identical copy at that path), plans or applies the split and
  // links the ring. Throws braid::Error with one line: "cannot connect to worker
  // 10.0.0.2:7000: connection refused", "worker 10.0.0.2:7000: model file ... not
  // found", "cannot place the model: ...".
  static std::unique_ptr<Ring> start(std::shared_ptr<const Model> model, const std::string& model_path,
                                     const net::Tls& tls, const HeadOptions& options);
  virtual ~Ring() = default;

  // A new sequence: a Forward whose KV caches live on the ring's devices. Thread-safe;
  // each returned Forward is used by one thread at a time. Throws when max_sequences
  // are open.
  virtual std::unique_ptr<Forward> open_sequence() = 0;

  // "head [0, 2) -> 127.0.0.1:7001 [2, 5) -> 127.0.0.1:7002 [5, 8) -> head (logits)"
  virtual std::string describe() const = 0;
  // The planner's predicted ms per token, when it planned (else 0).
  virtual double predicted_ms_per_token() const = 0;
};

// What Ring::start would run, measured and priced but not run (`braid plan`): the
// planner's inputs as the workers profiled them and the head probed the links, the plan
// (or the split the options fix) and, priced by the same cost model, an even split and a
// memory-proportional split to compare it with.
struct ClusterPlan {
  // Layers [0, first_layer) stay on the head (HeadOptions::head_layers >= 0); the
  // planner's layer l below is the model's layer first_layer + l.
  int first_layer = 0;
  planner::ModelCost cost;
  // Device 0 is the head; device i is the i-th worker (listed, then dialed in). Device
  // names are addresses ("head" for the head).
  planner::Cluster cluster;
  planner::Options options;
  std::vector<std::string> names;  // what each device calls itself (`braid worker --name`)
  std::vector<int> threads;        // each device's compute threads
  bool head_computes = false;      // the head was profiled and may run layers
  std::string rule;                // "planner", "even", "memory" or "fixed" (HeadOptions::split)
  planner::Plan plan;              // what would run; solver = `rule` except for the planner
  planner::Assignment even, memory;
  planner::Prediction even_prediction, memory_prediction;
};

// Connects to the workers as Ring::start does, has them load the model and profile it,
// probes the links, plans, and ends the sessions. Throws braid::Error like Ring::start,
// including "cannot place the model: ..." when nothing fits the memory budgets.
ClusterPlan plan_cluster(std::shared_ptr<const Model> model, const std::string& model_path,
                         const net::Tls& tls, const HeadOptions& options);

// Parses "0:2,2:5,5:8" (ranges) into pairs. Throws braid::Error.
std::vector<std::pair<int, int>> parse_split(const std::string& text);
// "127.0.0.1:7001,127.0.0.1:7002" -> endpoints. Throws braid::Error.
std::vector<net::Endpoint> parse_endpoints(const std::string& text);

}  // namespace braid::dist
