#include "worker_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>

#include "test_util.h"

namespace braid::test {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

// A new log file name per worker, whichever constructor made it.
std::string next_log_path(const std::string& log_dir) {
  static std::atomic<int> counter{0};
  return log_dir + "/worker" + std::to_string(counter++) + ".log";
}

}  // namespace

WorkerProcess::WorkerProcess(std::vector<std::string> extra, const std::string& log_dir,
                             const std::string& connect_to, int port)
    : extra_(std::move(extra)), connect_to_(connect_to), port_wanted_(port) {
  if (!log_dir.empty()) log_path_ = next_log_path(log_dir);
  start(false);
}

WorkerProcess::WorkerProcess(std::vector<std::string> extra, const std::string& log_dir, Options options)
    : extra_(std::move(extra)), prefix_(std::move(options.prefix)), host_(std::move(options.host)) {
  if (!log_dir.empty()) log_path_ = next_log_path(log_dir);
  start(false);
}

void WorkerProcess::start(bool append_log) {
  port_ = 0;
  int fds[2];
  if (pipe(fds) != 0) return;
  std::vector<std::string> args = prefix_;
  args.insert(args.end(), {braid_binary(), "worker", "--threads", "1"});
  if (connect_to_.empty()) {
    args.insert(args.end(), {"--listen", host_ + ":" + std::to_string(port_wanted_), "--ready-fd",
                             std::to_string(fds[1])});
  } else {
    args.insert(args.end(), {"--connect", connect_to_});
  }
  args.insert(args.end(), extra_.begin(), extra_.end());
  ++starts_;
  pid_ = fork();
  if (pid_ == 0) {
    close(fds[0]);
    const int flags = O_WRONLY | O_CREAT | (append_log ? O_APPEND : O_TRUNC);
    const int log = log_path_.empty() ? open("/dev/null", O_WRONLY) : open(log_path_.c_str(), flags, 0644);
    dup2(log, 2);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execvp(argv[0], argv.data());  // a prefix such as "ip" is found on PATH
    _exit(127);
  }
  close(fds[1]);
  if (!connect_to_.empty()) {
    close(fds[0]);
    port_ = 1;  // nothing to wait for
    return;
  }
  std::string got;
  pollfd p{fds[0], POLLIN, 0};
  const auto deadline = Clock::now() + 20s;
  while (got.find('\n') == std::string::npos && Clock::now() < deadline) {
    if (poll(&p, 1, 100) <= 0) continue;
    char buf[16];
    const ssize_t k = read(fds[0], buf, sizeof buf);
    if (k <= 0) break;
    got.append(buf, static_cast<size_t>(k));
  }
  close(fds[0]);
  if (got.find('\n') == std::string::npos) return;
  const int port = std::stoi(got);
  if (port_wanted_ == 0 || port == port_wanted_) port_ = port;
}

bool WorkerProcess::restart() {
  kill_now();
  start(true);
  return ok();
}

void WorkerProcess::signal(int sig) {
  if (pid_ > 0) kill(pid_, sig);
}

WorkerProcess::~WorkerProcess() { stop(); }

std::string WorkerProcess::log() const {
  if (log_path_.empty()) return "";
  std::ifstream in(log_path_, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string WorkerProcess::log_with(const std::string& text, double seconds) const {
  const auto deadline = Clock::now() + std::chrono::duration<double>(seconds);
  std::string l = log();
  while (l.find(text) == std::string::npos && Clock::now() < deadline) {
    std::this_thread::sleep_for(20ms);
    l = log();
  }
  return l;
}

bool WorkerProcess::alive() const { return pid_ > 0 && waitpid(pid_, nullptr, WNOHANG) == 0; }

bool WorkerProcess::stopped_or_gone() const {
  if (pid_ <= 0) return true;
  std::ifstream st("/proc/" + std::to_string(pid_) + "/stat");
  std::string s;
  std::getline(st, s);
  const size_t p = s.rfind(')');
  return p == std::string::npos || p + 2 >= s.size() || s[p + 2] == 'T' || s[p + 2] == 'Z';
}

void WorkerProcess::terminate() {
  if (pid_ > 0) kill(pid_, SIGTERM);
}

void WorkerProcess::stop() {
  if (pid_ <= 0) return;
  kill(pid_, SIGCONT);
  kill(pid_, SIGTERM);
  const auto deadline = Clock::now() + 5s;
  int status;
  while (waitpid(pid_, &status, WNOHANG) == 0) {
    if (Clock::now() > deadline) {
      kill(pid_, SIGKILL);
      waitpid(pid_, &status, 0);
      break;
    }
    std::this_thread::sleep_for(10ms);
  }
  pid_ = -1;
}

void WorkerProcess::kill_now() {
  if (pid_ <= 0) return;
  kill(pid_, SIGKILL);
  kill(pid_, SIGCONT);
  waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

}  // namespace braid::test
