// The head's internals shared by head.cpp (setup), head_plan.cpp (who runs what) and
// head_forward.cpp (RemoteForward, the data path).
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "braid/cluster.h"
#include "braid/mapped_file.h"
#include "braid/protocol.h"
#include "braid/thread_pool.h"
#include "dist/transport_frames.h"
#include "dist/worker_model.h"
#include "dist/worker_stage.h"

namespace braid::dist {

// One worker as the head sees it.
struct RemoteWorker {
  net::Endpoint addr;
  std::string name;  // what the worker calls itself
  int threads = 0;
  std::shared_ptr<net::Connection> control;
  std::mutex control_mu;  // setup, teardown and diagnosis may overlap
  uint64_t session = 0;
  DeviceProfile profile;
  double rtt_ms = 0, bytes_per_s = 0;
  int first = 0, last = 0;         // assigned layers
  std::set<std::string> streamed;  // tensors sent to it (a worker without the model file)
  bool output = false;             // runs the output norm + head
  bool dialed_in = false;          // reached us through HeadOptions::accept: only we can reach it

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
  double predicted_ms_per_token() const override { return plan.predicted_ms; }

  void log(const std::string& line) const;
  // Why chain c failed, naming the first worker that no longer answers when one does not.
  std::string diagnose(int c, const std::string& what);
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

// Decides who runs which layers: opt.split as given, or the planner over the workers'
// profiles (head_plan.cpp).
PlanResult plan_ring(const Model& model, RingImpl& ring);

}  // namespace braid::dist
