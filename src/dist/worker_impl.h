// The worker's internals shared by worker.cpp (connections, control requests) and
// worker_data.cpp (the data path).
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include "braid/cluster.h"
#include "braid/model.h"
#include "braid/protocol.h"
#include "braid/thread_pool.h"
#include "braid/transport.h"
#include "dist/transport_frames.h"
#include "dist/worker_preload.h"
#include "dist/worker_stage.h"
#include "dist/worker_stream.h"

namespace braid::dist {

// The model a request names is not here (or differs): the head may stream it.
struct ModelMissing : Error {
  using Error::Error;
};

// What one head asked of this worker: a model, a layer range, the links around it.
// Lives while the head's control connection does.
struct Session {
  // First, so that it goes last: a streamed model's Model and Stage point into it.
  std::shared_ptr<StreamedModel> streamed;
  uint64_t id = 0;
  std::string head;  // the control peer, for log lines
  std::shared_ptr<const Model> model;
  std::string model_path;
  std::unique_ptr<ThreadPool> pool;
  // Set by LOAD and ROUTE on the control thread, under mu; the data thread reads them
  // through data_path().
  std::unique_ptr<Stage> stage;
  bool run_output = false;
  bool forward_end = false;  // the successor is a worker (it needs SEQ_RESET too)
  proto::WireType transfer = proto::WireType::kF32;
  std::string label;            // "layers [2, 5)" for messages
  int n_ctx = 0, max_seqs = 0;  // from LOAD, for the stages ASSIGN makes

  struct DataPath {
    Stage* stage = nullptr;  // null until LOAD
    bool run_output = false, forward_end = false;
    proto::WireType transfer = proto::WireType::kF32;
    std::string label;
  };
  DataPath data_path() {
    std::lock_guard<std::mutex> lock(mu);
    return {stage.get(), run_output, forward_end, transfer, label};
  }

  std::mutex mu;
  std::condition_variable cv;
  std::shared_ptr<net::Connection> out;  // the successor, or the head's output link
  std::shared_ptr<net::Connection> in;   // the predecessor's link
  std::shared_ptr<net::Connection> control;
  std::atomic<bool> closed{false};
  // The data links' generation: ASSIGN drops them and bumps it, which ends every input
  // loop of the old generation (they wait for data_threads to reach 0 before the stage
  // is replaced, so none runs a stage that is gone).
  uint64_t links_gen = 0;
  int data_threads = 0;

  // Warms the layers around the stage's range (worker_preload.h). Last, so that its
  // thread stops first.
  std::unique_ptr<Preloader> preloader;

  // Interrupts every link and ends the stage's padding; threads serving them end soon
  // after.
  void close();
};

struct Worker::Impl {
  Impl(net::Tls tls, WorkerOptions options);

  void log(const std::string& line) const;
  // Runs one accepted connection to its end (own thread).
  void handle(std::shared_ptr<net::Connection> conn, bool handshake);
  // A new, empty session for a control link (its id goes back in LINKED).
  std::shared_ptr<Session> new_session(const std::shared_ptr<net::Connection>& conn);
  void control_loop(const std::shared_ptr<net::Connection>& conn, const std::shared_ptr<Session>& s);
  // Serves a predecessor's link: frames in, through the stage, out to the successor.
  void input_loop(const std::shared_ptr<net::Connection>& conn, const std::shared_ptr<Session>& s);
  void attach_output(const std::shared_ptr<net::Connection>& conn, Session& s);
  // One control request and its reply (an ERROR frame when it fails).
  void handle_request(Incoming& in, Session& s, net::Connection& conn);
  // Maps and checks the model a request names (once per session).
  void ensure_model(Session& s, const std::string& path, const proto::Sha256& fingerprint);
  // Bytes of weights a stage of [first, last) (+ output) holds; throws when it and its KV
  // caches would not fit --mem-limit.
  uint64_t stage_bytes(const Session& s, int first, int last, bool output) const;
  // ASSIGN (worker_assign.cpp): a new layer range for a session after the head re-planned.
  void assign(Session& s, const proto::Assign& a, net::Connection& conn);
  // After LOAD or ASSIGN: warm the neighbouring layers within the memory budget, in the
  // background (worker_preload.cpp; off with WorkerOptions::preload false).
  void start_preload(Session& s);
  // KV_ROWS (worker_assign.cpp): a sequence's cache rows leave (kFetch) or arrive (kRows)
  // when balancing moves layers.
  void kv_rows(Session& s, const proto::KvRows& k, uint64_t seq, net::Connection& conn);
  // Interrupts and forgets the session's data links and waits until no input loop runs.
  void drop_data_links(Session& s);
  // The test hooks of WorkerOptions, for the batch that just arrived.
  void count_batch();
  // Worker::set_slowdown: every stage from its next batch on, and new stages.
  void set_slowdown(double factor);
  std::shared_ptr<Session> find_session(uint64_t id);
  void spawn(std::function<void()> fn);

  net::Tls tls;
  WorkerOptions opt;
  std::optional<net::Endpoint> head_addr;  // dial-out mode: where data links go
  std::atomic<bool> stopping{false};

  std::mutex mu;
  std::condition_variable cv;
  std::map<uint64_t, std::shared_ptr<Session>> sessions;
  std::atomic<double> slowdown{1.0};  // opt.slowdown, changed at run time
  std::atomic<int> batches{0};                      // ACTIVATIONS frames received, for the test hooks
  std::set<std::shared_ptr<net::Connection>> live;  // interrupted on stop()
  int running = 0;                                  // connection threads
};

}  // namespace braid::dist
