// `braid cluster --local N`: try a cluster on one machine. Starts N `braid worker`
// processes on free loopback ports with a fresh secret, runs `braid run` as their head
// with the remaining arguments, and stops the workers when the head ends (or on Ctrl-C).
//
//   braid cluster --local 2 -m model.gguf -p "Once upon a time" -n 64
//   braid cluster --local 3 --profile fast,slow,fast -m model.gguf -p "..." --split 0:2,2:3,3:5
#include <fcntl.h>
#include <openssl/rand.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "braid/error.h"
#include "cli/command.h"

namespace braid::cli {
namespace {

struct ClusterArgs {
  int local = 0;
  std::string profile;
  int worker_threads = 1;
};

volatile sig_atomic_t g_signal = 0;
void on_signal(int sig) { g_signal = sig; }

std::string self_exe() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  check(!ec, "cannot find the braid executable (/proc/self/exe)");
  return p.string();
}

// "fast" 1, "medium" 2, "slow" 4, or a number >= 1: each worker's --slowdown.
std::vector<std::string> parse_profile(const std::string& text, int n) {
  std::vector<std::string> out;
  size_t i = 0;
  while (!text.empty() && i <= text.size()) {
    size_t j = text.find(',', i);
    if (j == std::string::npos) j = text.size();
    std::string p = text.substr(i, j - i);
    if (p == "fast")
      p = "1";
    else if (p == "medium")
      p = "2";
    else if (p == "slow")
      p = "4";
    char* end = nullptr;
    const double v = std::strtod(p.c_str(), &end);
    check(!p.empty() && end && *end == '\0' && v >= 1 && v <= 1000, "--profile: '", text.substr(i, j - i),
          "' is not fast, medium, slow or a slowdown factor >= 1");
    out.push_back(p);
    i = j + 1;
  }
  if (out.empty()) out.assign(static_cast<size_t>(n), "1");
  check(static_cast<int>(out.size()) == n, "--profile lists ", out.size(), " devices for --local ", n);
  return out;
}

pid_t spawn(const std::string& exe, const std::vector<std::string>& args, int keep_fd) {
  std::vector<char*> argv;
  std::vector<std::string> copy = args;
  argv.push_back(const_cast<char*>("braid"));
  for (auto& a : copy) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  check(pid >= 0, "fork failed: ", std::strerror(errno));
  if (pid == 0) {
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    (void)keep_fd;
    execv(exe.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

// Stops the workers: SIGTERM, then SIGKILL for any still there after 3 s.
void stop_all(std::vector<pid_t>& pids) {
  for (pid_t p : pids) kill(p, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  for (pid_t p : pids) {
    int status;
    while (waitpid(p, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        kill(p, SIGKILL);
        waitpid(p, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  pids.clear();
}

void run(const ClusterArgs& a, const std::vector<std::string>& head_args) {
  check(a.local >= 1 && a.local <= 64, "--local takes 1..64 workers");
  const std::vector<std::string> slowdowns = parse_profile(a.profile, a.local);
  for (const auto& h : head_args)
    check(h != "--workers" && h.rfind("--workers=", 0) != 0 && h != "--secret-file",
          "braid cluster --local sets --workers and --secret-file itself");
  const std::string exe = self_exe();

  // A fresh secret, readable by us only, gone at the end.
  std::string dir_tmpl = (std::filesystem::temp_directory_path() / "braid-cluster-XXXXXX").string();
  check(mkdtemp(dir_tmpl.data()) != nullptr, "cannot make a temporary folder: ", std::strerror(errno));
  const std::string dir = dir_tmpl, secret = dir + "/secret";
  struct Cleanup {
    std::string dir;
    std::vector<pid_t> pids;
    ~Cleanup() {
      stop_all(pids);
      std::error_code ec;
      std::filesystem::remove_all(dir, ec);
    }
  } cleanup{dir, {}};
  {
    unsigned char bytes[32];
    check(RAND_bytes(bytes, sizeof bytes) == 1, "no randomness available");
    const int fd = open(secret.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0600);
    check(fd >= 0 && write(fd, bytes, sizeof bytes) == static_cast<ssize_t>(sizeof bytes), "cannot write ",
          secret);
    close(fd);
  }

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  // Workers on port 0; each reports its port on a pipe (--ready-fd).
  std::string workers;
  for (int i = 0; i < a.local; ++i) {
    int fds[2];
    check(pipe(fds) == 0, "pipe failed");
    fcntl(fds[0], F_SETFD, FD_CLOEXEC);
    const pid_t pid =
        spawn(exe,
              {"worker", "--listen", "127.0.0.1:0", "--secret-file", secret, "--threads",
               std::to_string(a.worker_threads), "--name", "local-" + std::to_string(i + 1), "--slowdown",
               slowdowns[static_cast<size_t>(i)], "--ready-fd", std::to_string(fds[1])},
              fds[1]);
    cleanup.pids.push_back(pid);
    close(fds[1]);
    std::string port;
    pollfd pfd{fds[0], POLLIN, 0};
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (port.find('\n') == std::string::npos && std::chrono::steady_clock::now() < deadline && !g_signal) {
      if (poll(&pfd, 1, 100) <= 0) continue;
      char buf[16];
      const ssize_t k = read(fds[0], buf, sizeof buf);
      if (k <= 0) break;
      port.append(buf, static_cast<size_t>(k));
    }
    close(fds[0]);
    check(!g_signal, "interrupted");
    check(port.find('\n') != std::string::npos, "worker ", i + 1, " did not start (see its messages above)");
    port.pop_back();
    workers += (i ? "," : "") + std::string("127.0.0.1:") + port;
  }

  std::vector<std::string> args = {"run"};
  args.insert(args.end(), head_args.begin(), head_args.end());
  args.insert(args.end(), {"--workers", workers, "--secret-file", secret});
  const pid_t head = spawn(exe, args, -1);
  int status = 0;
  bool forwarded = false;
  while (waitpid(head, &status, 0) < 0) {
    check(errno == EINTR, "waitpid failed");
    // Ctrl-C reaches the head (same process group); SIGTERM to us is passed on.
    if (g_signal == SIGTERM && !forwarded) {
      kill(head, SIGTERM);
      forwarded = true;
    }
  }
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  if (code != 0) throw ExitRequest{code};
}

Command reg("cluster", "Start local workers and run the model across them (try a cluster on one machine)",
            [](CLI::App& app) {
              auto a = std::make_shared<ClusterArgs>();
              app.add_option("--local", a->local, "Number of local worker processes")->required();
              app.add_option("--profile", a->profile,
                             "Per-worker speed: fast, medium, slow or a slowdown factor (e.g. fast,slow)");
              app.add_option("--worker-threads", a->worker_threads, "Threads per worker")
                  ->check(CLI::Range(1, 1024))
                  ->capture_default_str();
              app.allow_extras();
              app.footer("Every other argument goes to `braid run` (the head): -m MODEL -p TEXT -n N ...");
              app.callback([a, &app] { run(*a, app.remaining()); });
            });

}  // namespace
}  // namespace braid::cli
