// The flags that turn a model-running subcommand (`braid run`, `braid bench`, `braid
// plan`) into the head of a cluster, and the Forward they select: local, or the ring over
// --workers (or the workers of a --cluster file).
//
//   ClusterFlags cluster;  add_cluster_options(app, cluster);
//   app.callback([&] { apply_cluster_file(app, cluster); ... });
//   std::unique_ptr<Forward> fwd = make_forward(cluster, model, model_path, n_ctx, pool);
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>
#include <vector>

#include "braid/cluster.h"
#include "braid/generate.h"
#include "braid/model.h"
#include "braid/sampler.h"
#include "braid/thread_pool.h"

namespace braid::cli {

struct ClusterFlags {
  std::string cluster_file;               // --cluster: workers and settings (cli/cluster_file.h)
  std::string workers;                    // "HOST:PORT,HOST:PORT"
  std::vector<std::string> worker_names;  // from the cluster file, per worker ("" = unnamed)
  std::string accept;                     // HOST:PORT where `braid worker --connect` workers join
  int accept_count = 1;
  std::string secret_file;            // shared secret ...
  std::string ca, cert, key;          // ... or certificates from `braid keygen`
  std::string split;                  // "0:2,2:5": fixed ranges per worker; "even", "memory", "planner"
  std::string objective = "latency";  // the planner's: latency or throughput
  std::string head_layers = "0";      // N, or "auto" (the planner may give the head layers)
  bool output_at_head = false;
  std::string transfer = "f32";
  int timeout_s = 120;
  int connect_timeout_s = 10;
  double failure_timeout_s = 3;  // a worker silent this long is lost (the ring recovers)
  std::string batch_file;        // several prompts at once (see run_batch)

  bool active() const { return !workers.empty() || !accept.empty(); }
};

// --cluster, --workers, --accept, --accept-count, --secret-file, --ca/--cert/--key,
// --split, --objective, --head-layers, --output-at-head, --transfer, --connect-timeout,
// --net-timeout, and with `batch` --batch-file.
void add_cluster_options(CLI::App& app, ClusterFlags& flags, bool batch = true);

// After parsing: fills in what the --cluster file gives and the command line does not
// (flags given override the file; --workers replaces its worker list, and any of
// --secret-file/--ca/--cert/--key its credentials). Throws braid::Error naming the file,
// line and key for a bad file. Without --cluster it does nothing.
void apply_cluster_file(const CLI::App& app, ClusterFlags& flags);

// The head's options for a ring of n_seqs sequences of n_ctx positions (the head runs
// its own layers with `threads`), and the cluster's credentials. Throw braid::Error.
dist::HeadOptions head_options(const ClusterFlags& flags, int n_ctx, int threads, int n_seqs);
net::Tls cluster_tls(const ClusterFlags& flags);

// The ring over the workers, for n sequences (see make_ring_forwards), and a Forward on a
// new sequence of it that keeps the ring alive. Throws unless flags.active().
std::shared_ptr<dist::Ring> start_ring(const ClusterFlags& flags, std::shared_ptr<const Model> model,
                                       const std::string& model_path, int n_ctx, int threads, int n);
std::unique_ptr<Forward> ring_forward(std::shared_ptr<dist::Ring> ring);

// LocalForward when no --workers; else a Forward over a ring of the workers (which it
// owns: destroying the Forward ends the cluster session). Up to max_sequences Forwards
// may share one ring: see make_ring_forwards.
std::unique_ptr<Forward> make_forward(const ClusterFlags& flags, std::shared_ptr<const Model> model,
                                      const std::string& model_path, int n_ctx, ThreadPool& pool);

// n Forwards (sequences) over one ring, usable from n threads at once: the ring
// pipelines them. Throws unless flags.active().
std::vector<std::unique_ptr<Forward>> make_ring_forwards(const ClusterFlags& flags,
                                                         std::shared_ptr<const Model> model,
                                                         const std::string& model_path, int n_ctx,
                                                         int threads, int n);

// `braid run --batch-file FILE`: every line of FILE is a prompt; they are generated
// concurrently (up to 16 sequences in flight), which on a cluster pipelines them through
// the ring: while one worker runs a token of one prompt, the next runs another's.
// stdout: for each prompt, in file order, "=== N ===" on its own line, then its
// continuation and a newline. --ids-out: one line of ids per prompt. Sampling as for one
// prompt; prompt N's seed is the seed + N.
struct BatchArgs {
  std::string model;
  SamplerParams sampling;
  int64_t seed = -1;
  int n_predict = 256;
  int threads = 1;
  int ctx = 0;
  std::vector<std::string> stop;
  std::string ids_out;
  bool no_bos = false;
  bool ignore_eos = false;
};
// `app` is the run subcommand: single-prompt flags (-p, -f, --prompt-tokens,
// --logits-out) are refused alongside --batch-file.
void run_batch(const ClusterFlags& flags, const BatchArgs& args, const CLI::App& app);

}  // namespace braid::cli
