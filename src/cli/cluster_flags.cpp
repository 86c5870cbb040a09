#include "cli/cluster_flags.h"

#include <signal.h>

#include <algorithm>

#include "braid/cluster.h"
#include "braid/error.h"
#include "braid/transport.h"
#include "cli/cluster_file.h"

namespace braid::cli {

void add_cluster_options(CLI::App& app, ClusterFlags& f, bool batch) {
  const char* group = "Cluster (run the layers on `braid worker` devices)";
  app.add_option("--cluster", f.cluster_file,
                 "Cluster file (TOML): the workers and these settings; flags given override it")
      ->group(group);
  app.add_option("--workers", f.workers, "Worker addresses HOST:PORT,HOST:PORT (ring order for --split)")
      ->group(group);
  app.add_option("--accept", f.accept, "Also take workers that dial in (braid worker --connect) on HOST:PORT")
      ->group(group);
  app.add_option("--accept-count", f.accept_count, "How many workers to wait for on --accept")
      ->group(group)
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  app.add_option("--secret-file", f.secret_file, "Cluster secret: any bytes, the same file on every device")
      ->group(group);
  app.add_option("--ca", f.ca, "Certificate mode: the cluster CA (from braid keygen)")->group(group);
  app.add_option("--cert", f.cert, "Certificate mode: this device's certificate")->group(group);
  app.add_option("--key", f.key, "Certificate mode: this device's key")->group(group);
  app.add_option("--split", f.split,
                 "Layer ranges per worker, e.g. 0:2,2:5; or even, memory (proportional) or planner (default)")
      ->group(group);
  app.add_option("--objective", f.objective, "What the planner minimises: latency or throughput (pipelined)")
      ->group(group)
      ->check(CLI::IsMember({"latency", "throughput"}))
      ->capture_default_str();
  app.add_option("--head-layers", f.head_layers, "Layers the head runs itself first: N, or auto (planner)")
      ->group(group)
      ->capture_default_str();
  app.add_flag("--output-at-head", f.output_at_head, "The head runs the output norm + head")->group(group);
  app.add_option("--transfer", f.transfer, "Hidden states on the wire: f32 (exact), f16 or q8")
      ->group(group)
      ->capture_default_str();
  if (batch) {
    app.add_option("--batch-file", f.batch_file,
                   "Generate for every line of FILE at once (pipelined on a cluster)")
        ->group(group);
  }
  app.add_option("--connect-timeout", f.connect_timeout_s,
                 "Seconds to connect to a worker (TCP + TLS + proof)")
      ->group(group)
      ->check(CLI::Range(1, 3600))
      ->capture_default_str();
  app.add_option("--net-timeout", f.timeout_s, "Seconds to wait for a worker's reply")
      ->group(group)
      ->check(CLI::Range(1, 86400))
      ->capture_default_str();
  app.add_option("--failure-timeout", f.failure_timeout_s,
                 "Seconds without a heartbeat before a worker counts as lost (the ring then "
                 "re-plans on the others)")
      ->group(group)
      ->check(CLI::Range(0.2, 3600.0))
      ->capture_default_str();
}

void apply_cluster_file(const CLI::App& app, ClusterFlags& f) {
  if (f.cluster_file.empty()) return;
  const ClusterFile file = read_cluster_file(f.cluster_file);
  auto given = [&](const char* flag) { return app.count(flag) > 0; };
  auto take = [&](const char* flag, auto& dst, const auto& src) {
    if (src && !given(flag)) dst = *src;
  };
  if (!given("--workers") && !file.workers.empty()) {
    f.workers.clear();
    f.worker_names.clear();
    for (const auto& w : file.workers) {
      f.workers += (f.workers.empty() ? "" : ",") + w.address;
      f.worker_names.push_back(w.name);
    }
  }
  if (!given("--secret-file") && !given("--ca") && !given("--cert") && !given("--key")) {
    take("--secret-file", f.secret_file, file.secret_file);
    take("--ca", f.ca, file.ca);
    take("--cert", f.cert, file.cert);
    take("--key", f.key, file.key);
  }
  take("--transfer", f.transfer, file.transfer);
  take("--head-layers", f.head_layers, file.head_layers);
  take("--split", f.split, file.split);
  take("--objective", f.objective, file.objective);
  take("--output-at-head", f.output_at_head, file.output_at_head);
  take("--accept", f.accept, file.accept);
  take("--accept-count", f.accept_count, file.accept_count);
  take("--connect-timeout", f.connect_timeout_s, file.connect_timeout_s);
  take("--net-timeout", f.timeout_s, file.net_timeout_s);
  check(f.active(), "cluster file '", f.cluster_file,
        "' lists no workers ([[worker]] address = \"HOST:PORT\") and no --workers or --accept was given");
}

net::Tls cluster_tls(const ClusterFlags& f) {
  const bool certs = !f.ca.empty() || !f.cert.empty() || !f.key.empty();
  check(!(certs && !f.secret_file.empty()), "give either --secret-file or --ca/--cert/--key, not both");
  if (certs) {
    check(!f.ca.empty() && !f.cert.empty() && !f.key.empty(),
          "certificate mode needs --ca, --cert and --key");
    return net::Tls::from_certificates(f.ca, f.cert, f.key);
  }
  check(!f.secret_file.empty(),
        "--workers needs --secret-file (or --ca/--cert/--key): devices must prove "
        "they belong to the cluster");
  return net::Tls::from_secret_file(f.secret_file);
}

dist::HeadOptions head_options(const ClusterFlags& f, int n_ctx, int threads, int n_seqs) {
  dist::HeadOptions o;
  if (!f.workers.empty()) o.workers = dist::parse_endpoints(f.workers);
  if (!f.accept.empty()) {
    o.accept = f.accept;
    o.accept_count = f.accept_count;
  }
  o.n_ctx = n_ctx;
  o.max_sequences = n_seqs;
  o.threads = threads;
  const bool ranges = !f.split.empty() && f.split != "planner" && f.split != "even" && f.split != "memory";
  if (ranges) o.split = dist::parse_split(f.split);
  if (f.split == "even") o.split_rule = dist::HeadOptions::SplitRule::kEven;
  if (f.split == "memory") o.split_rule = dist::HeadOptions::SplitRule::kMemory;
  check(f.objective == "latency" || f.objective == "throughput",
        "--objective is latency or throughput (got '", f.objective, "')");
  if (f.objective == "throughput") o.objective = dist::HeadOptions::Objective::kThroughput;
  if (f.head_layers == "auto") {
    check(!ranges, "--head-layers auto asks the planner; it does not combine with --split ranges");
    o.head_layers = -1;
  } else {
    bool digits = !f.head_layers.empty() && f.head_layers.size() <= 6;
    for (char c : f.head_layers) digits = digits && c >= '0' && c <= '9';
    check(digits, "--head-layers takes a layer count or 'auto' (got '", f.head_layers, "')");
    o.head_layers = std::stoi(f.head_layers);
  }
  o.output_at_head = f.output_at_head;
  o.transfer = f.transfer;
  o.io_timeout = net::Millis(static_cast<int64_t>(f.timeout_s) * 1000);
  o.connect_timeout = net::Millis(static_cast<int64_t>(f.connect_timeout_s) * 1000);
  o.failure_timeout = net::Millis(static_cast<int64_t>(f.failure_timeout_s * 1000));
  // Heartbeats several times per timeout, so one late answer is not a loss.
  o.heartbeat_interval = std::min(o.heartbeat_interval, net::Millis(o.failure_timeout.count() / 4 + 1));
  return o;
}

namespace {

// A sequence's Forward that also keeps the ring alive (the last one ends it).
class OwningForward : public Forward {
 public:
  OwningForward(std::shared_ptr<dist::Ring> ring, std::unique_ptr<Forward> inner)
      : ring_(std::move(ring)), inner_(std::move(inner)) {}
  ~OwningForward() override { inner_.reset(); }  // before the ring
  int n_vocab() const override { return inner_->n_vocab(); }
  int n_ctx() const override { return inner_->n_ctx(); }
  void forward(const int32_t* tokens, int n, int pos0, bool all_logits, float* logits) override {
    inner_->forward(tokens, n, pos0, all_logits, logits);
  }

 private:
  std::shared_ptr<dist::Ring> ring_;
  std::unique_ptr<Forward> inner_;
};

}  // namespace

std::shared_ptr<dist::Ring> start_ring(const ClusterFlags& flags, std::shared_ptr<const Model> model,
                                       const std::string& model_path, int n_ctx, int threads, int n) {
  check(flags.active(), "no --workers, --accept or --cluster given");
  // A worker that goes away mid-write must be an error message, not SIGPIPE.
  signal(SIGPIPE, SIG_IGN);
  return dist::Ring::start(std::move(model), model_path, cluster_tls(flags),
                           head_options(flags, n_ctx, threads, n));
}

std::unique_ptr<Forward> ring_forward(std::shared_ptr<dist::Ring> ring) {
  std::unique_ptr<Forward> inner = ring->open_sequence();
  return std::make_unique<OwningForward>(std::move(ring), std::move(inner));
}

std::vector<std::unique_ptr<Forward>> make_ring_forwards(const ClusterFlags& flags,
                                                         std::shared_ptr<const Model> model,
                                                         const std::string& model_path, int n_ctx,
                                                         int threads, int n) {
  std::shared_ptr<dist::Ring> ring = start_ring(flags, std::move(model), model_path, n_ctx, threads, n);
  std::vector<std::unique_ptr<Forward>> out;
  for (int i = 0; i < n; ++i) out.push_back(ring_forward(ring));
  return out;
}

std::unique_ptr<Forward> make_forward(const ClusterFlags& flags, std::shared_ptr<const Model> model,
                                      const std::string& model_path, int n_ctx, ThreadPool& pool) {
  if (!flags.active()) {
    check(
        flags.split.empty() && flags.secret_file.empty() && flags.head_layers == "0" && !flags.output_at_head,
        "cluster flags (--secret-file, --split, --head-layers, --output-at-head) need --workers, --accept or "
        "--cluster");
    return std::make_unique<LocalForward>(std::move(model), n_ctx, pool);
  }
  auto v = make_ring_forwards(flags, std::move(model), model_path, n_ctx, pool.size(), 1);
  return std::move(v.front());
}

}  // namespace braid::cli
