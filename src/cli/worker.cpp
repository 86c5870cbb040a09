// `braid worker`: serve layers of a model to a head over the network.
//
//   braid worker --listen 0.0.0.0:7000 --secret-file cluster.key [--threads N]
//   braid worker --connect head.local:7100 --secret-file cluster.key   (behind NAT)
//
// Logs one line per event to stderr; runs until SIGINT/SIGTERM. SIGUSR1 doubles the
// emulated --slowdown (a device that throttles, for benchmarks of runtime balancing).
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <thread>

#include "braid/cluster.h"
#include "braid/error.h"
#include "braid/thread_pool.h"
#include "braid/transport.h"
#include "cli/cli_util.h"
#include "cli/command.h"
#include "dist/worker_model.h"

namespace braid::cli {
namespace {

struct WorkerArgs {
  std::string listen, connect, name, mem_limit, secret_file, ca, cert, key, model_dir;
  int threads = 1;
  double slowdown = 1.0;
  bool no_preload = false;
  int ready_fd = -1;
  int die_after_batches = -1, hang_after_batches = -1;  // test hooks
  std::string slowdown_after;                           // test hook: "N:X"
};

// SIGINT/SIGTERM end the worker cleanly: a thread waits for them (blocked everywhere
// else) and stops the serve loop. SIGUSR1 doubles the slowdown (at most 1000).
class SignalStop {
 public:
  explicit SignalStop(dist::Worker& w) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGUSR2);  // our own wake-up at exit
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    thread_ = std::thread([&w, set] {
      int sig = 0;
      while (sigwait(&set, &sig) == 0 && sig == SIGUSR1) w.set_slowdown(std::min(1000.0, 2 * w.slowdown()));
      if (sig != SIGUSR2) w.stop();
    });
  }
  ~SignalStop() {
    pthread_kill(thread_.native_handle(), SIGUSR2);
    thread_.join();
  }

 private:
  std::thread thread_;
};

void run(const WorkerArgs& a) {
  check(a.listen.empty() != a.connect.empty(), "give --listen ADDR:PORT or --connect HEAD_ADDR");
  const bool certs = !a.ca.empty() || !a.cert.empty() || !a.key.empty();
  check(certs || !a.secret_file.empty(), "a worker needs --secret-file (or --ca/--cert/--key)");
  check(!(certs && !a.secret_file.empty()), "give either --secret-file or --ca/--cert/--key, not both");
  check(!certs || (!a.ca.empty() && !a.cert.empty() && !a.key.empty()),
        "certificate mode needs --ca, --cert and --key");
  const net::Tls tls =
      certs ? net::Tls::from_certificates(a.ca, a.cert, a.key) : net::Tls::from_secret_file(a.secret_file);
  signal(SIGPIPE, SIG_IGN);

  dist::WorkerOptions o;
  o.threads = a.threads;
  o.slowdown = a.slowdown;
  o.preload = !a.no_preload;
  if (!a.mem_limit.empty()) o.mem_limit = dist::parse_bytes(a.mem_limit);
  o.name = a.name;
  o.model_dir = a.model_dir;
  o.die_after_batches = a.die_after_batches;
  o.hang_after_batches = a.hang_after_batches;
  if (!a.slowdown_after.empty()) {
    const size_t colon = a.slowdown_after.find(':');
    try {
      check(colon != std::string::npos, "no colon");
      o.slowdown_after_batches = std::stoi(a.slowdown_after.substr(0, colon));
      o.slowdown_then = std::stod(a.slowdown_after.substr(colon + 1));
    } catch (const std::exception&) {
      fail("--slowdown-after-batches takes N:FACTOR, got '", a.slowdown_after, "'");
    }
  }

  if (!a.listen.empty()) {
    net::Listener listener(tls, net::Endpoint::parse(a.listen));
    const net::Endpoint at = net::Endpoint::parse(a.listen);
    if (o.name.empty()) {
      char host[256] = {};
      gethostname(host, sizeof host - 1);
      o.name = cat(host, ":", listener.port());
    }
    dist::Worker worker(tls, o);
    SignalStop stop(worker);  // before anyone learns the port and might signal us
    std::fprintf(stderr, "braid worker %s: listening on %s (%d threads%s)\n", o.name.c_str(),
                 net::Endpoint{at.host, listener.port()}.str().c_str(), a.threads,
                 a.slowdown > 1 ? cat(", slowdown ", a.slowdown).c_str() : "");
    if (a.ready_fd >= 0) {
      // `braid cluster` learns the port this way when it asked for port 0.
      const std::string line = std::to_string(listener.port()) + "\n";
      if (write(a.ready_fd, line.data(), line.size()) < 0) {
      }
      close(a.ready_fd);
    }
    worker.serve(listener);
  } else {
    if (o.name.empty()) {
      char host[256] = {};
      gethostname(host, sizeof host - 1);
      o.name = host;
    }
    dist::Worker worker(tls, o);
    SignalStop stop(worker);
    worker.serve_head(net::Endpoint::parse(a.connect));
  }
  std::fprintf(stderr, "braid worker %s: stopped\n", o.name.c_str());
}

Command reg("worker", "Serve layers of a model to a cluster head", [](CLI::App& app) {
  auto a = std::make_shared<WorkerArgs>();
  app.add_option("--listen", a->listen, "Accept the head's connections on ADDR:PORT (port 0: any free port)");
  app.add_option("--connect", a->connect, "Dial out to the head at HOST:PORT instead (a device behind NAT)");
  app.add_option("--name", a->name, "Name shown in the head's plan (default: host:port)");
  app.add_option("--model-dir", a->model_dir,
                 "Look up the head's model by file name here (default: at the head's path); "
                 "a model not found is streamed by the head");
  app.add_option("--mem-limit", a->mem_limit, "Memory braid may use here, e.g. 1.5G (default: what is free)");
  app.add_flag("--no-preload", a->no_preload,
               "Do not warm the layers around this worker's own in the background (they make "
               "moving layers here cheap; within --mem-limit)");
  add_threads_option(app, a->threads);
  app.add_option("--secret-file", a->secret_file, "Cluster secret: any bytes, the same file on every device");
  app.add_option("--ca", a->ca, "Certificate mode: the cluster CA (from braid keygen)");
  app.add_option("--cert", a->cert, "Certificate mode: this device's certificate");
  app.add_option("--key", a->key, "Certificate mode: this device's key");
  app.add_option("--slowdown", a->slowdown, "Emulate a device this many times slower (benchmarks)")
      ->check(CLI::Range(1.0, 1000.0))
      ->capture_default_str();
  app.add_option("--ready-fd", a->ready_fd, "Write the listening port to this fd when ready")->group("");
  // Failure-recovery tests: lose this worker at an exact batch (SIGKILL or SIGSTOP itself).
  app.add_option("--die-after-batches", a->die_after_batches, "Kill this process when batch N+1 arrives")
      ->group("");
  app.add_option("--hang-after-batches", a->hang_after_batches, "Stop (SIGSTOP) this process at batch N+1")
      ->group("");
  app.add_option("--slowdown-after-batches", a->slowdown_after, "N:X: the slowdown becomes X at batch N+1")
      ->group("");
  app.callback([a] { run(*a); });
});

}  // namespace
}  // namespace braid::cli
