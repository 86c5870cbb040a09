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
  net::Millis handshake_timeout{10000};  // TLS + proof + first frame of a connection
  net::Millis io_timeout{120000};        // finishing a frame once it has started
  int max_connections = 64;              // connections served at once; more are refused
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
  // The head runs the output norm + head (the last worker sends hidden states back).
  bool output_at_head = false;
  std::string transfer = "f32";  // hidden states on the wire: f32, f16 or q8
  net::Millis connect_timeout{10000};
  net::Millis io_timeout{120000};  // a reply to one batch must come within this
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

// Parses "0:2,2:5,5:8" (ranges) into pairs. Throws braid::Error.
std::vector<std::pair<int, int>> parse_split(const std::string& text);
// "127.0.0.1:7001,127.0.0.1:7002" -> endpoints. Throws braid::Error.
std::vector<net::Endpoint> parse_endpoints(const std::string& text);

}  // namespace braid::dist
