// The planner: which device runs which layers of a model, and in what ring order.
//
// A token travels around a ring that starts and ends at the head device: the head
// embeds it, each stage runs a contiguous range of layers on one device and sends the
// hidden state on, the last stage (or the head) runs the output norm and head, and the
// logits come back to the head, which samples. The planner picks the devices (a slow
// device may be left out), their order and their layer ranges, so that the model and
// its KV cache at full context fit every device's memory budget and the chosen
// objective is minimal:
//
//   latency    = the time of one token around the ring: every stage's compute plus
//                every hop's transfer (what one chat user feels), and
//   bottleneck = the busiest device's time per token (compute + what it sends), the
//                limit of tokens/s when several sequences are pipelined.
//
// Two solvers give the same optimum: a mixed-integer program solved with COIN-OR CBC
// (when braid is built with it) and an exact enumeration + dynamic program, which is
// the test oracle and the fallback. docs/planner.md states the model and the maths.
//
//   braid::planner::ModelCost model = ...;   // from the GGUF file
//   braid::planner::Cluster cluster = ...;   // from the device profiles
//   braid::planner::Plan p = braid::planner::solve(model, cluster, {});
//   for (const auto& s : p.assignment.stages) ... s.device, s.first, s.last ...
//   p.prediction.latency_ms, p.prediction.bottleneck_ms
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace braid::planner {

// What the model costs, independent of the devices. Sizes in bytes.
struct ModelCost {
  // Per layer; both vectors have one entry per layer (their length is the layer count).
  std::vector<uint64_t> layer_bytes;         // weights resident for the layer
  std::vector<uint64_t> kv_bytes_per_token;  // K + V cache of one token of context
  int64_t context_length = 0;                // the KV cache is sized for this many tokens
  uint64_t hidden_bytes = 0;                 // one token's hidden state on the wire between stages
  uint64_t logits_bytes = 0;                 // what the output stage sends the head per token
  uint64_t embed_bytes = 0;                  // token embeddings: always resident on the head
  uint64_t output_bytes = 0;                 // output norm + head matrix, on whichever device runs them
  // What the head needs for the output when it runs it itself; less than output_bytes
  // when the head matrix is tied to the embeddings it holds anyway. Unset: output_bytes.
  std::optional<uint64_t> output_bytes_on_head;

  int n_layers() const { return static_cast<int>(layer_bytes.size()); }
  uint64_t head_output_bytes() const { return output_bytes_on_head.value_or(output_bytes); }
};

// One device as its profile measured it for this model.
struct Device {
  std::string name;
  std::vector<double> layer_ms;          // decode: one token through layer l, in ms
  std::vector<double> prefill_layer_ms;  // prefill, per prompt token per layer; may be empty
  double output_ms = 0;                  // output norm + head for one token
  uint64_t memory_bytes = 0;             // what braid may use on this device
};

// A directed link. Sending b bytes takes latency_ms + 1000 * b / bytes_per_s ms.
struct Link {
  double latency_ms = 0;
  double bytes_per_s = 0;
};

struct Cluster {
  std::vector<Device> devices;
  std::vector<std::vector<Link>> links;  // links[from][to]; the diagonal is not used
  int head = 0;                          // index of the head device

  // Every link the same (convenience for tests and examples).
  void set_all_links(double latency_ms, double bytes_per_s);
};

struct Options {
  // The objective: latency_weight * latency + bottleneck_weight * bottleneck. The
  // default optimises latency and lets the bottleneck break ties (among plans equally
  // fast for one user, the one that pipelines best).
  double latency_weight = 1.0;
  double bottleneck_weight = 1e-3;
  // Weights + KV cache (+ embeddings, output) times (1 + memory_margin) must fit a
  // device's memory_bytes: room for activations, scratch buffers, allocator slack.
  double memory_margin = 0.10;
  // Whether the head may run the output norm + head itself (the last stage then sends
  // it the hidden state instead of the logits: far fewer bytes on a slow link).
  bool allow_output_at_head = true;
  // kAuto: the MILP when built with CBC, except for throughput-first objectives on
  // clusters the exact search handles (much faster there); the exact search also takes
  // over when the MILP stops at its time limit without a proven optimum.
  enum class Solver { kAuto, kExact, kMilp };
  Solver solver = Solver::kAuto;
  double time_limit_s = 10;  // for the MILP; with kMilp its best plan so far is used after

  static Options latency() { return {}; }
  static Options throughput() {
    Options o;
    o.latency_weight = 1e-3;
    o.bottleneck_weight = 1.0;
    return o;
  }
};

// A contiguous range of layers [first, last) on one device.
struct Segment {
  int device = 0;
  int first = 0;
  int last = 0;
};

// The decision: stages in ring order (the ring starts and ends at the head, which need
// not run layers; it may also appear as a stage anywhere in the ring), layer ranges
// contiguous, increasing, covering every layer.
struct Assignment {
  std::vector<Segment> stages;
  // True: the last stage sends the hidden state to the head, which runs the output.
  // False: the last stage runs the output and sends the logits.
  bool output_at_head = false;
};

// What one device does per token under an assignment.
struct DeviceLoad {
  bool used = false;          // runs layers, or is the head
  double compute_ms = 0;      // its layers, and the output where it runs it
  double send_ms = 0;         // everything it sends per token
  double busy_ms = 0;         // compute_ms + send_ms
  uint64_t memory_bytes = 0;  // what it holds, before the margin
  bool fits = true;           // memory_bytes * (1 + margin) <= its budget
};

struct Prediction {
  double latency_ms = 0;     // one token around the ring
  double bottleneck_ms = 0;  // busiest device per token (1000 / this = pipelined tokens/s)
  int bottleneck_device = -1;
  double objective = 0;             // latency_weight * latency + bottleneck_weight * bottleneck
  std::vector<DeviceLoad> devices;  // indexed like Cluster::devices
  bool fits_memory = true;
  std::string memory_problem;  // the first device that does not fit; empty when all do
};

struct Plan {
  Assignment assignment;
  Prediction prediction;
  std::string solver;          // "cbc" or "exact"
  bool proven_optimal = true;  // false when the MILP stopped at its time limit
};

// Checks the inputs (sizes agree, numbers finite and non-negative, bandwidths positive,
// the head a valid index); throws braid::Error naming the first problem.
void validate(const ModelCost& model, const Cluster& cluster, const Options& options);

// The best plan. Throws braid::Error when no assignment fits the memory budgets, with a
// message that says what does not fit (totals, the largest layer, the head's share).
Plan solve(const ModelCost& model, const Cluster& cluster, const Options& options = {});

// The two solvers on their own (tests compare them). solve_exact enumerates every
// ordered subset of devices, so it is for clusters of up to kExactMaxDevices devices.
// solve_milp throws braid::Error when braid was built without CBC.
constexpr int kExactMaxDevices = 7;
Plan solve_exact(const ModelCost& model, const Cluster& cluster, const Options& options = {});
Plan solve_milp(const ModelCost& model, const Cluster& cluster, const Options& options = {});
bool have_milp();  // built with CBC

// The prediction for any assignment (memory that does not fit is reported, not thrown).
// Throws braid::Error when the assignment is malformed: unknown or repeated devices,
// ranges empty, out of order or not covering every layer.
Prediction evaluate(const ModelCost& model, const Cluster& cluster, const Assignment& a,
                    const Options& options = {});

// Time to prefill a prompt of n_tokens in one batch through the ring, with the devices'
// prefill_layer_ms (their layer_ms where a device has none) and the hops carrying
// n_tokens hidden states; the output runs for the last token only.
double predict_prefill_ms(const ModelCost& model, const Cluster& cluster, const Assignment& a,
                          int64_t n_tokens);

// The splits that simpler schedulers use, to compare with the plan. Both use the
// devices in `order` (default: the head, then the others by index), the last stage runs
// the output. even_split gives each device the same number of layers (the first ones
// one more when it does not divide); memory_split gives each a number of layers
// proportional to its memory budget (largest remainders), dropping devices that get none.
Assignment even_split(const ModelCost& model, const Cluster& cluster, std::vector<int> order = {});
Assignment memory_split(const ModelCost& model, const Cluster& cluster, std::vector<int> order = {});

// "head -> gpu0 [0, 12) -> phone [12, 22) -> head (logits)" style one-line summary.
std::string describe(const Cluster& cluster, const Assignment& a);

}  // namespace braid::planner
