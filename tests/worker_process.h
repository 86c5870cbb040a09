// A `braid worker` child process for the cluster tests: started on a free loopback port
// (its port comes back through --ready-fd) or dialing out to a head, its stderr in a log
// file (or discarded), stopped when destroyed.
//
//   test::WorkerProcess w({"--secret-file", secret}, dir);
//   ASSERT_TRUE(w.ok());
//   run_braid({"run", ..., "--workers", w.addr(), ...});
//   EXPECT_NE(w.log_with("session"), ...);
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

namespace braid::test {

class WorkerProcess {
 public:
  // `braid worker --threads 1` plus `extra`: listening on 127.0.0.1:`port` (0: a free
  // port), or with `connect_to` set, dialing out to a head there (ok() at once: it keeps
  // dialing until the head is up). stderr goes to a new file in `log_dir`, or nowhere if
  // it is empty.
  explicit WorkerProcess(std::vector<std::string> extra, const std::string& log_dir = "",
                         const std::string& connect_to = "", int port = 0);

  // How to launch a listening worker somewhere other than plain 127.0.0.1.
  struct Options {
    // Run before the braid binary, e.g. {"ip", "netns", "exec", "ns1"}: a worker in a
    // network namespace. The prefix must exec the command in place (ip netns exec,
    // taskset, nice do), so that pid() and the signals reach the worker itself.
    std::vector<std::string> prefix;
    // The address it listens on (and addr() reports).
    std::string host = "127.0.0.1";
  };
  WorkerProcess(std::vector<std::string> extra, const std::string& log_dir, Options options);
  ~WorkerProcess();  // stop()
  WorkerProcess(const WorkerProcess&) = delete;
  WorkerProcess& operator=(const WorkerProcess&) = delete;

  bool ok() const { return port_ > 0; }
  int port() const { return port_; }
  std::string addr() const { return host_ + ":" + std::to_string(port_); }
  pid_t pid() const { return pid_; }

  std::string log() const;
  // The log once it contains `text` (or after `seconds`): a worker may answer before it
  // logs.
  std::string log_with(const std::string& text, double seconds = 5) const;

  bool alive() const;
  // True once the process is stopped (SIGSTOP) or gone.
  bool stopped_or_gone() const;

  // SIGTERM now; stop() then waits for it (so many workers stop in parallel).
  void terminate();
  // SIGCONT + SIGTERM, then SIGKILL if it has not exited within 5 s; waits for it.
  void stop();
  // SIGKILL (and SIGCONT, in case it is stopped); waits for it.
  void kill_now();
  // kill_now(), then the same command again on the same port (a device that comes
  // back), its stderr appended to the same log; ok() says whether it listens again.
  bool restart();
  void signal(int sig);
  int starts() const { return starts_; }

 private:
  void start(bool append_log);

  std::vector<std::string> extra_;
  std::string connect_to_;
  std::vector<std::string> prefix_;
  std::string host_ = "127.0.0.1";
  int port_wanted_ = 0;
  pid_t pid_ = -1;
  int port_ = 0;
  int starts_ = 0;
  std::string log_path_;
};

// A worker killed outright (SIGKILL) when destroyed, for tests that hang or stop workers
// on purpose (a stopped worker would not exit on the polite signal).
struct KilledWorker : WorkerProcess {
  using WorkerProcess::WorkerProcess;
  ~KilledWorker() { kill_now(); }
};

}  // namespace braid::test
