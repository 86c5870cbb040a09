#include "test_util.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

namespace braid::test {

std::string assets_dir() {
  const char* env = std::getenv("BRAID_ASSETS");
  if (env && *env) return env;
  return BRAID_DEFAULT_ASSETS;
}

std::string asset(const std::string& rel) {
  std::string p = assets_dir() + "/" + rel;
  return std::filesystem::exists(p) ? p : std::string();
}

std::string temp_dir() {
  static std::string root = [] {
    std::string tmpl = (std::filesystem::temp_directory_path() / "braid-test-XXXXXX").string();
    char* d = mkdtemp(tmpl.data());
    std::string r = d ? d : "/tmp";
    return r;
  }();
  static int counter = 0;
  std::string d = root + "/" + std::to_string(getpid()) + "-" + std::to_string(counter++);
  std::filesystem::create_directories(d);
  return d;
}

namespace {
struct CleanupTemp {
  ~CleanupTemp() {
    std::error_code ec;
    auto base = std::filesystem::temp_directory_path();
    for (auto& e : std::filesystem::directory_iterator(base, ec)) {
      if (e.path().filename().string().rfind("braid-test-", 0) != 0) continue;
      struct stat st {};
      if (stat(e.path().c_str(), &st) == 0 && st.st_uid == getuid()) {
        // Only our own process's dirs: they contain "<pid>-" subfolders.
        bool mine = false;
        for (auto& s : std::filesystem::directory_iterator(e.path(), ec))
          if (s.path().filename().string().rfind(std::to_string(getpid()) + "-", 0) == 0) mine = true;
        if (mine) std::filesystem::remove_all(e.path(), ec);
      }
    }
  }
} cleanup_temp;
}  // namespace

std::vector<float> read_f32_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::vector<char> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<float> v(bytes.size() / 4);
  std::memcpy(v.data(), bytes.data(), v.size() * 4);
  return v;
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void put(const std::string& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out << data;
}

std::string braid_binary() {
  const char* env = std::getenv("BRAID_BINARY");
  if (env && *env) return env;
  return BRAID_BINARY;
}

CommandResult run_braid(const std::vector<std::string>& args, const std::string& input, int timeout_s) {
  CommandResult r;
  int in_pipe[2], out_pipe[2], err_pipe[2];
  if (pipe(in_pipe) || pipe(out_pipe) || pipe(err_pipe)) return r;
  pid_t pid = fork();
  if (pid == 0) {
    dup2(in_pipe[0], 0);
    dup2(out_pipe[1], 1);
    dup2(err_pipe[1], 2);
    for (int fd : {in_pipe[0], in_pipe[1], out_pipe[0], out_pipe[1], err_pipe[0], err_pipe[1]}) close(fd);
    std::vector<char*> argv;
    std::string bin = braid_binary();
    argv.push_back(bin.data());
    std::vector<std::string> copy = args;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  close(in_pipe[0]);
  close(out_pipe[1]);
  close(err_pipe[1]);
  // Feed stdin (small inputs; a large one would need polling too).
  signal(SIGPIPE, SIG_IGN);
  if (!input.empty()) {
    ssize_t w = write(in_pipe[1], input.data(), input.size());
    (void)w;
  }
  close(in_pipe[1]);
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  pollfd fds[2] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}};
  int open_fds = 2;
  bool killed = false;
  while (open_fds > 0) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      kill(pid, SIGKILL);
      killed = true;
      break;
    }
    int n = poll(fds, 2, static_cast<int>(left.count()));
    if (n <= 0) continue;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[65536];
      ssize_t k = read(fds[i].fd, buf, sizeof buf);
      if (k <= 0) {
        close(fds[i].fd);
        fds[i].fd = -1;
        --open_fds;
      } else {
        (i == 0 ? r.out : r.err).append(buf, static_cast<size_t>(k));
      }
    }
  }
  for (auto& f : fds)
    if (f.fd >= 0) close(f.fd);
  int status = 0;
  waitpid(pid, &status, 0);
  if (WIFEXITED(status)) r.exit_code = WEXITSTATUS(status);
  if (WIFSIGNALED(status)) r.signal = WTERMSIG(status);
  if (killed) r.signal = SIGKILL;
  return r;
}

}  // namespace braid::test
