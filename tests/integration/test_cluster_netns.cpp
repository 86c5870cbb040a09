// A worker whose network goes away while it is alive: one `braid worker` runs in its own
// network namespace behind a veth pair, and the test takes the link down in the middle
// of a `braid run`. Nothing dies and nothing hangs; packets just stop arriving. The head
// must find the loss the way it finds a hung worker (heartbeats, --failure-timeout),
// re-plan on the two loopback workers, and finish with the single device's output byte
// for byte. With the link back up, the next run uses all three workers again.
//
// Needs root and iproute2 (`ip netns`, veth): in a container that refuses them, every
// test skips with the command that failed and its message.
//
// Topology: workers 0 and 1 listen on 127.0.0.1 in the root namespace, worker 2 on
// 10.213.a.(b+2) inside namespace braid-t<pid>; the root side of the veth pair is
// 10.213.a.(b+1) (a private /30 derived from the pid, so parallel test processes do not
// clash). Workers pass hidden states to each other directly, and a worker in the
// namespace cannot reach 127.0.0.1 of the root namespace, so the namespaced worker is
// last in ring order (--split 0:2,2:4,4:5: layers [4, 5) and the output): every link to
// it is dialed from the root namespace (worker 1's data link, the head's control and
// output links).
#include <unistd.h>

#include <array>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "test_util.h"
#include "worker_process.h"

namespace braid {
namespace {

using Clock = std::chrono::steady_clock;
using test::run_braid;
using test::slurp;

constexpr const char* kStories = "models/stories260K.gguf";
constexpr int kTokens = 40;
// The namespaced worker's slowdown: ~10-50 ms a token on stories260K's last layer and
// output, so that generation lasts long enough for the cut to land mid-run. Constant
// from the start, so that runtime balancing (which reacts to a change) stays out of it.
constexpr const char* kSlowdown = "1000";
// The cut comes once batch kCutAfter + 1 (the prompt, then one batch per decode token)
// reached the namespaced worker: --slowdown-after-batches N:same-factor changes nothing
// but logs "slowdown now ... (at batch N+1)", a marker the test waits for.
constexpr int kCutAfter = 10;

std::vector<std::string> operator+(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Runs `command` through /bin/sh; its output (stdout and stderr) and whether it exited 0.
struct Shell {
  bool ok = false;
  std::string out;
};
Shell sh(const std::string& command) {
  Shell r;
  FILE* p = popen((command + " 2>&1").c_str(), "r");
  if (p == nullptr) {
    r.out = "popen failed";
    return r;
  }
  std::array<char, 256> buf;
  size_t k;
  while ((k = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), k);
  r.ok = pclose(p) == 0;
  while (!r.out.empty() && r.out.back() == '\n') r.out.pop_back();
  return r;
}

// Killed outright when destroyed: a worker cut off from its head may be mid-sleep.
using Worker = test::KilledWorker;

class NetnsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (geteuid() != 0) GTEST_SKIP() << "network namespaces need root (euid " << geteuid() << ")";
    const Shell ip = sh("ip -V");
    if (!ip.ok) GTEST_SKIP() << "no usable `ip` (iproute2): " << ip.out;

    const int pid = static_cast<int>(getpid());
    ns_ = "braid-t" + std::to_string(pid);
    veth_ = "brt" + std::to_string(pid) + "r";  // at most 11 characters: IFNAMSIZ is 16
    const std::string peer = "brt" + std::to_string(pid) + "n";
    const std::string net = "10.213." + std::to_string((pid / 64) % 256) + ".";
    const int host = (pid % 64) * 4;
    root_ip_ = net + std::to_string(host + 1);
    ns_ip_ = net + std::to_string(host + 2);

    // Leftovers of an earlier process with this pid that was killed before TearDown.
    sh("ip link del " + veth_);
    sh("ip netns del " + ns_);
    const std::vector<std::string> setup = {
        "ip netns add " + ns_,
        "ip link add " + veth_ + " type veth peer name " + peer,
        "ip link set " + peer + " netns " + ns_,
        "ip addr add " + root_ip_ + "/30 dev " + veth_,
        "ip link set " + veth_ + " up",
        "ip -n " + ns_ + " addr add " + ns_ip_ + "/30 dev " + peer,
        "ip -n " + ns_ + " link set " + peer + " up",
        "ip -n " + ns_ + " link set lo up",
        // Both ends report a carrier (it comes up asynchronously) within 5 s.
        "for i in $(seq 100); do ip -o link show " + veth_ + " | grep -q LOWER_UP && ip -n " + ns_ +
            " -o link show " + peer + " | grep -q LOWER_UP && exit 0; sleep 0.05; done; " +
            "echo the veth link never came up; exit 1",
    };
    for (size_t i = 0; i < setup.size(); ++i) {
      const Shell r = sh(setup[i]);
      if (!r.ok) GTEST_SKIP() << "cannot set up a network namespace: `" << setup[i] << "` failed: " << r.out;
      made_ns_ = true;
      made_veth_ = i >= 1;
    }

    dir_ = test::temp_dir();
    secret_ = dir_ + "/secret";
    std::ofstream(secret_) << "netns tests' cluster secret";
  }

  // Tears down even after a failed assertion or a skip half-way through SetUp: the
  // workers first (the namespaced one holds the namespace open), then the veth pair and
  // the namespace.
  void TearDown() override {
    workers_.clear();
    if (made_veth_) sh("ip link del " + veth_);
    if (made_ns_) {
      const Shell del = sh("ip netns del " + ns_);
      EXPECT_TRUE(del.ok) << "ip netns del " << ns_ << ": " << del.out;
    }
  }

  void start_workers() {
    workers_.clear();
    const std::vector<std::string> base = {"--secret-file", secret_};
    workers_.push_back(std::make_unique<Worker>(base, dir_));
    workers_.push_back(std::make_unique<Worker>(base, dir_));
    test::WorkerProcess::Options in_ns;
    in_ns.prefix = {"ip", "netns", "exec", ns_};
    in_ns.host = ns_ip_;
    workers_.push_back(std::make_unique<Worker>(
        base + std::vector<std::string>{"--slowdown", kSlowdown, "--slowdown-after-batches",
                                        std::to_string(kCutAfter) + ":" + kSlowdown},
        dir_, in_ns));
    for (const auto& w : workers_) ASSERT_TRUE(w->ok()) << w->log();
  }
  Worker& ns_worker() { return *workers_[2]; }
  std::string addrs() const {
    std::string s;
    for (const auto& w : workers_) s += (s.empty() ? "" : ",") + w->addr();
    return s;
  }

  void link(bool up) {
    const std::string c = "ip link set " + veth_ + (up ? " up" : " down");
    const Shell r = sh(c);
    ASSERT_TRUE(r.ok) << c << ": " << r.out;
  }

  struct Run {
    std::string ids, logits;
    test::CommandResult r;
    double seconds = 0;
  };
  // `braid run` of stories260K, greedy, f32 logits out; over the workers when cluster
  // is set (the namespaced one runs layers [4, 5) and the output).
  Run run(const std::string& model, bool cluster) {
    Run out;
    const std::string tag = std::to_string(runs_++);
    const std::string ids = dir_ + "/ids" + tag, logits = dir_ + "/logits" + tag;
    std::vector<std::string> args = {"run", "-m", model, "--prompt-tokens", "1,403,40,13,72"};
    args = args + std::vector<std::string>{"-n", std::to_string(kTokens), "--temp", "0", "-t", "1"};
    args = args + std::vector<std::string>{"--ids-out", ids, "--logits-out", logits, "--ctx", "256"};
    if (cluster)
      args = args + std::vector<std::string>{"--workers", addrs(),       "--secret-file",     secret_,
                                             "--split",   "0:2,2:4,4:5", "--failure-timeout", "1"};
    const auto t0 = Clock::now();
    out.r = run_braid(args, "", 60);
    out.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    out.ids = slurp(ids);
    out.logits = slurp(logits);
    return out;
  }

  // A cluster run during which the veth link goes down once the namespaced worker has
  // seen kCutAfter + 1 batches. Sets *cut_to_end to the seconds from the cut to the
  // head's exit (negative if the marker never came).
  Run run_with_cut(const std::string& model, double* cut_to_end) {
    Run r;
    std::thread head([&] { r = run(model, true); });
    const std::string marker = "(at batch " + std::to_string(kCutAfter + 1) + ")";
    const std::string log = ns_worker().log_with(marker, 30);
    Clock::time_point cut{};
    if (log.find(marker) != std::string::npos) {
      link(false);
      cut = Clock::now();
    }
    head.join();
    *cut_to_end = cut == Clock::time_point{} ? -1 : std::chrono::duration<double>(Clock::now() - cut).count();
    return r;
  }

  // The head reported one loss of the namespaced worker and one recovery.
  void expect_recovered(const std::string& err) {
    EXPECT_NE(err.find("braid head: worker " + ns_worker().addr() + " (layers [4, 5)) lost ("),
              std::string::npos)
        << err;
    EXPECT_NE(err.find("; re-planned: head -> "), std::string::npos) << err;
    const size_t first = err.find("recovered in ");
    EXPECT_NE(first, std::string::npos) << err;
    EXPECT_EQ(err.find("recovered in ", first + 1), std::string::npos) << "one recovery:\n" << err;
  }
  // N in the head's "recovered in N ms", in seconds (0 if absent).
  static double recovery_seconds(const std::string& err) {
    const size_t at = err.find("recovered in ");
    return at == std::string::npos ? 0 : std::atof(err.c_str() + at + 13) / 1000;
  }

  std::string dir_, secret_, ns_, veth_, root_ip_, ns_ip_;
  bool made_ns_ = false, made_veth_ = false;
  int runs_ = 0;
  std::vector<std::unique_ptr<Worker>> workers_;
};

// The link goes down mid-generation: the head hears nothing more from the namespaced
// worker, declares it lost within --failure-timeout, re-plans on the loopback workers,
// replays, and the output is the single device's, bit for bit. The worker itself stays
// alive (nothing died) and, cut off from the head, ends its session on its own.
TEST_F(NetnsTest, LinkCutMidGenerationIsDetectedAndRecovered) {
  BRAID_REQUIRE_ASSET(model, kStories);
  const Run local = run(model, false);
  ASSERT_EQ(local.r.exit_code, 0) << local.r.err;
  ASSERT_FALSE(local.ids.empty());
  start_workers();
  double cut_to_end = -1;
  const Run r = run_with_cut(model, &cut_to_end);
  ASSERT_GE(cut_to_end, 0) << "the namespaced worker never reached batch " << kCutAfter + 1 << ":\n"
                           << r.r.err << ns_worker().log();
  ASSERT_EQ(r.r.exit_code, 0) << r.r.err;
  EXPECT_EQ(r.ids, local.ids);
  EXPECT_TRUE(r.logits == local.logits) << "logits differ";
  expect_recovered(r.r.err);
  // Detected by silence, as a hang is: the cut drops packets without an error.
  EXPECT_NE(r.r.err.find("no answer for 1 s"), std::string::npos) << r.r.err;
  // Bounded: the failure timeout, a heartbeat interval's slack, the recovery itself and
  // the rest of the generation on the loopback workers; nowhere near --net-timeout.
  EXPECT_LT(cut_to_end, 1.0 + 1.0 + recovery_seconds(r.r.err) + 3.0) << r.r.err;
  std::printf("cut to exit %.2f s, run %.2f s (local %.2f s)\n", cut_to_end, r.seconds, local.seconds);
  EXPECT_TRUE(ns_worker().alive()) << ns_worker().log();
  // The worker notices its head went quiet (twice the failure timeout) and frees the
  // session, though the head's goodbye never reached it.
  EXPECT_NE(ns_worker().log_with("(heartbeats stopped)", 5).find("(heartbeats stopped)"), std::string::npos)
      << ns_worker().log();
}

// Cut, then the link comes back: the same worker process (it never went away) takes
// layers [4, 5) again in the next run, with no loss and the same output.
TEST_F(NetnsTest, RestoredLinkBringsTheWorkerBack) {
  BRAID_REQUIRE_ASSET(model, kStories);
  const Run local = run(model, false);
  ASSERT_EQ(local.r.exit_code, 0) << local.r.err;
  start_workers();
  double cut_to_end = -1;
  const Run cut = run_with_cut(model, &cut_to_end);
  ASSERT_GE(cut_to_end, 0) << cut.r.err << ns_worker().log();
  ASSERT_EQ(cut.r.exit_code, 0) << cut.r.err;
  EXPECT_EQ(cut.ids, local.ids);
  expect_recovered(cut.r.err);

  link(true);
  const Run again = run(model, true);
  ASSERT_EQ(again.r.exit_code, 0) << again.r.err;
  EXPECT_EQ(again.ids, local.ids);
  EXPECT_TRUE(again.logits == local.logits) << "logits differ";
  EXPECT_EQ(again.r.err.find(" lost ("), std::string::npos) << again.r.err;
  // The head's ring runs through all three again, the namespaced worker last.
  EXPECT_NE(again.r.err.find(" [2, 4) -> " + ns_worker().addr() + " [4, 5) -> head (logits)"),
            std::string::npos)
      << again.r.err;
  EXPECT_TRUE(ns_worker().alive());
  EXPECT_EQ(ns_worker().starts(), 1);  // the same process: the device came back
  // Two sessions ran the last layer and the output on it: before the cut and after.
  const std::string log = ns_worker().log();
  const std::string label = ": layers [4, 5) + output of ";
  const size_t first = log.find(label);
  ASSERT_NE(first, std::string::npos) << log;
  EXPECT_NE(log.find(label, first + 1), std::string::npos) << log;
}

}  // namespace
}  // namespace braid
