// Failure recovery with real processes on 127.0.0.1: `braid worker` children that die
// (SIGKILL) or hang (SIGSTOP) at an exact batch (the hidden --die-after-batches and
// --hang-after-batches flags) or when the test kills them, under `braid run --workers`
// or an in-process head. Greedy output must equal the single-device run byte for byte
// (ids and, with f32 transfer, logits); survivors that cannot hold the model must give
// one clear error line and a non-zero exit, in bounded time.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "braid/cluster.h"
#include "braid/error.h"
#include "braid/generate.h"
#include "braid/model.h"
#include "braid/transport.h"
#include "dist/worker_stage.h"
#include "test_util.h"
#include "worker_fixture.h"
#include "worker_process.h"

namespace braid {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using test::run_braid;
using test::slurp;

constexpr const char* kStories = "models/stories260K.gguf";

std::vector<std::string> operator+(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

class RecoveryTest : public test::WorkerFixture {
 protected:
  std::string addrs() const {
    std::string s;
    for (const auto& w : workers_) {
      if (!s.empty()) s.push_back(',');
      s.append(w->addr());
    }
    return s;
  }

  struct Run {
    std::string ids, logits;
    test::CommandResult r;
    double seconds = 0;
  };
  // `braid run` of stories260K, greedy; with the workers when cluster is set.
  Run run(const std::string& model, bool cluster, const std::vector<std::string>& extra,
          const std::string& prompt = "1,403,40,13,72", int n = 24) {
    static int k = 0;
    Run out;
    const std::string ids = dir_ + "/ids" + std::to_string(k), logits = dir_ + "/logits" + std::to_string(k);
    ++k;
    std::vector<std::string> args = {"run",
                                     "-m",
                                     model,
                                     "--prompt-tokens",
                                     prompt,
                                     "-n",
                                     std::to_string(n),
                                     "--temp",
                                     "0",
                                     "-t",
                                     "1",
                                     "--ids-out",
                                     ids,
                                     "--logits-out",
                                     logits,
                                     "--ctx",
                                     "2048"};
    if (cluster) args = args + std::vector<std::string>{"--workers", addrs(), "--secret-file", secret_};
    args = args + extra;
    const auto t0 = Clock::now();
    out.r = run_braid(args, "", 90);
    out.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    out.ids = slurp(ids);
    out.logits = slurp(logits);
    return out;
  }

  // Recovery happened and was reported as the issue asks.
  static void expect_recovered(const Run& r, const std::string& lost_addr) {
    EXPECT_NE(r.r.err.find("braid head: worker " + lost_addr), std::string::npos) << r.r.err;
    EXPECT_NE(r.r.err.find(" lost ("), std::string::npos) << r.r.err;
    EXPECT_NE(r.r.err.find("; re-planned: head -> "), std::string::npos) << r.r.err;
    EXPECT_NE(r.r.err.find("; recovered in "), std::string::npos) << r.r.err;
    const size_t first = r.r.err.find("recovered in ");
    EXPECT_EQ(r.r.err.find("recovered in ", first + 1), std::string::npos) << "one recovery:\n" << r.r.err;
  }

};

const std::vector<std::string> kNone;
std::vector<std::string> die_after(int n) { return {"--die-after-batches", std::to_string(n)}; }
std::vector<std::string> hang_after(int n) { return {"--hang-after-batches", std::to_string(n)}; }

// SIGKILL at the start (the first batch: the prompt), in the middle of generation, and
// on the last stage (the one that runs the output): the answer completes and is the
// single device's, bit for bit.
TEST_F(RecoveryTest, KilledWorkerAtStartAndMidGeneration) {
  BRAID_REQUIRE_ASSET(model, kStories);
  const Run local = run(model, false, {});
  ASSERT_EQ(local.r.exit_code, 0) << local.r.err;
  ASSERT_FALSE(local.ids.empty());
  struct Case {
    const char* what;
    int victim;  // -1: every worker has the hook
    std::vector<std::string> hook;
    std::vector<std::string> flags;
  };
  const std::vector<Case> cases = {
      {"at the start, fixed split", 1, die_after(0), {"--split", "0:2,2:4,4:5"}},
      {"mid generation, fixed split", 1, die_after(12), {"--split", "0:2,2:4,4:5"}},
      {"mid generation, the output's stage", 2, die_after(12), {"--split", "0:1,1:3,3:5"}},
      {"mid generation, the head runs layer 0",
       0,
       die_after(12),
       {"--head-layers", "1", "--split", "1:2,2:4,4:5"}},
      // The planner puts the model on one worker (which one depends on the profiles)
      // and leaves the others out: whichever it uses dies after 14 tokens, and a worker
      // it had left out takes over (its 11 batches stay under the hook's 14).
      {"mid generation, planner", -1, die_after(14), {}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    std::vector<std::vector<std::string>> extra(3);
    for (size_t i = 0; i < extra.size(); ++i)
      if (c.victim < 0 || static_cast<int>(i) == c.victim) extra[i] = c.hook;
    start_workers(extra);
    const Run r = run(model, true, c.flags);
    ASSERT_EQ(r.r.exit_code, 0) << r.r.err;
    EXPECT_EQ(r.ids, local.ids);
    EXPECT_TRUE(r.logits == local.logits) << "logits differ";
    int died = -1;
    for (size_t i = 0; i < workers_.size(); ++i)
      if (workers_[i]->log().find("test hook: dying") != std::string::npos) died = static_cast<int>(i);
    ASSERT_GE(died, 0) << r.r.err;
    if (c.victim >= 0) {
      EXPECT_EQ(died, c.victim);
    }
    expect_recovered(r, workers_[static_cast<size_t>(died)]->addr());
    EXPECT_TRUE(workers_[static_cast<size_t>(died)]->stopped_or_gone());
  }
}

// A long prompt (3 batches of at most 512 tokens): the worker dies on the second batch,
// mid-prefill. The survivors replay the first batch and go on.
TEST_F(RecoveryTest, KilledWorkerDuringPrefill) {
  BRAID_REQUIRE_ASSET(model, kStories);
  std::string prompt = "1";
  for (int i = 0; i < 1299; ++i) {
    prompt.push_back(',');
    prompt.append(std::to_string(3 + (i * 37) % 500));
  }
  const Run local = run(model, false, {}, prompt, 6);
  ASSERT_EQ(local.r.exit_code, 0) << local.r.err;
  start_workers({kNone, die_after(1), kNone});
  const Run r = run(model, true, {"--split", "0:2,2:4,4:5"}, prompt, 6);
  ASSERT_EQ(r.r.exit_code, 0) << r.r.err;
  EXPECT_EQ(r.ids, local.ids);
  EXPECT_TRUE(r.logits == local.logits) << "logits differ";
  expect_recovered(r, workers_[1]->addr());
}

// A worker that hangs (SIGSTOP: alive, silent) mid-generation is found by heartbeats
// within --failure-timeout, and the ring recovers the same way.
TEST_F(RecoveryTest, HungWorkerIsDetectedAndRecovered) {
  BRAID_REQUIRE_ASSET(model, kStories);
  const Run local = run(model, false, {});
  ASSERT_EQ(local.r.exit_code, 0) << local.r.err;
  start_workers({kNone, hang_after(10), kNone});
  const Run r = run(model, true, {"--split", "0:2,2:4,4:5", "--failure-timeout", "1"});
  ASSERT_EQ(r.r.exit_code, 0) << r.r.err;
  EXPECT_EQ(r.ids, local.ids);
  EXPECT_TRUE(r.logits == local.logits) << "logits differ";
  expect_recovered(r, workers_[1]->addr());
  EXPECT_NE(r.r.err.find("no answer for 1 s"), std::string::npos) << r.r.err;
  EXPECT_TRUE(workers_[1]->stopped_or_gone());
  // Detection within the timeout (plus a heartbeat), not the 120 s --net-timeout.
  EXPECT_LT(r.seconds, local.seconds + 8) << r.r.err;
  workers_[1]->kill_now();
}

// A healthy worker busy with one long batch is not lost: a batch holds its stage for
// the whole compute, and the worker answers heartbeats without waiting for the stage
// (Stage::open_sequences() once took the stage's mutex, so a batch longer than
// --failure-timeout made the worker look lost: "lost (no answer for 1 s)", then the
// re-plan's survivor too, on the same replayed prompt). The batches must take that long
// in real compute: --slowdown pads a batch after the stage is released, so it cannot
// stand in here. The prompt's last batch of 512 tokens attends over 1536 positions:
// about 1.3 s on worker 0's 4 layers on one core here (~3x the timeout), longer on a
// loaded machine.
TEST_F(RecoveryTest, LongBatchDoesNotMakeAWorkerLookLost) {
  BRAID_REQUIRE_ASSET(model, kStories);
  std::string prompt = "1";
  for (int i = 0; i < 1535; ++i) {
    prompt.push_back(',');
    prompt.append(std::to_string(3 + (i * 37) % 500));
  }
  const Run local = run(model, false, {}, prompt, 8);
  ASSERT_EQ(local.r.exit_code, 0) << local.r.err;
  ASSERT_FALSE(local.ids.empty());
  start_workers({kNone, kNone});
  const Run r = run(model, true, {"--split", "0:4,4:5", "--failure-timeout", "0.4"}, prompt, 8);
  // Batches of 1, 3 and 5 units of attention: the last is 5/9 of the prompt's time.
  std::printf("single device %.2f s (worker 0's last batch ~%.2f s), cluster %.2f s\n", local.seconds,
              local.seconds * 4 / 5 * 5 / 9, r.seconds);
  ASSERT_EQ(r.r.exit_code, 0) << r.r.err;
  EXPECT_EQ(r.r.err.find(" lost ("), std::string::npos) << r.r.err;
  EXPECT_EQ(r.r.err.find("rebuilding the ring"), std::string::npos) << r.r.err;
  EXPECT_EQ(r.ids, local.ids);
  EXPECT_TRUE(r.logits == local.logits) << "logits differ";
  for (const auto& w : workers_) EXPECT_TRUE(w->alive());
}

// Several sequences in flight (--batch-file pipelines them): every live sequence is
// replayed into the rebuilt ring.
TEST_F(RecoveryTest, EveryLiveSequenceIsReplayed) {
  BRAID_REQUIRE_ASSET(model, kStories);
  const std::string prompts = dir_ + "/prompts.txt";
  std::ofstream(prompts) << "Once upon a time\nThe cat sat\nLily and Tom went to\nThe sun was\n";
  auto batch = [&](bool cluster, const std::vector<std::string>& extra) {
    const std::string ids = dir_ + "/batch" + std::to_string(cluster) + ".ids";
    std::vector<std::string> args = {"run", "-m", model, "--batch-file", prompts, "-n", "20", "--temp",
                                     "0",   "-t", "1",   "--ids-out",    ids};
    if (cluster) args = args + std::vector<std::string>{"--workers", addrs(), "--secret-file", secret_};
    auto r = run_braid(args + extra, "", 90);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return std::make_pair(slurp(ids), r.err);
  };
  const auto local = batch(false, {});
  EXPECT_EQ(std::count(local.first.begin(), local.first.end(), '\n'), 4);
  start_workers({kNone, kNone, die_after(30)});
  const auto remote = batch(true, {"--split", "0:2,2:4,4:5"});
  EXPECT_EQ(remote.first, local.first);
  EXPECT_NE(remote.second.find("recovered in"), std::string::npos) << remote.second;
}

// Survivors that cannot hold the model (--mem-limit): a clear one-line error, a non-zero
// exit, in bounded time.
TEST_F(RecoveryTest, SurvivorsThatCannotHoldTheModelGiveAnError) {
  BRAID_REQUIRE_ASSET(model, kStories);
  // A layer of stories260K is 178 KiB of weights and 512 KiB of KV cache at --ctx 2048:
  // 1600 KiB hold two layers but not three, so three workers hold the five layers and
  // two do not.
  const std::vector<std::string> limit = {"--mem-limit", "1600k"};
  start_workers({limit, limit + die_after(5), limit});
  const Run r = run(model, true, {"--split", "0:2,2:4,4:5", "--failure-timeout", "1"});
  EXPECT_EQ(r.r.exit_code, 1) << r.r.err;
  const std::string prefix = "braid: error: worker " + workers_[1]->addr() + " (layers [2, 4)) lost (";
  const size_t at = r.r.err.find(prefix);
  ASSERT_NE(at, std::string::npos) << r.r.err;
  const std::string line = r.r.err.substr(at, r.r.err.find('\n', at) - at);
  EXPECT_NE(line.find("the 2 surviving workers cannot go on: "), std::string::npos) << line;
  EXPECT_LT(r.seconds, 20) << r.r.err;
}

// Runtime balancing: a worker that gets 4x slower mid-generation (it throttles) has its
// layers moved away within a bounded number of tokens, once, and the answer does not
// change.
TEST_F(RecoveryTest, SlowedWorkerLosesItsLayers) {
  BRAID_REQUIRE_ASSET(model, kStories);
  const Run local = run(model, false, {}, "1,403,40,13,72", 48);
  ASSERT_EQ(local.r.exit_code, 0) << local.r.err;
  // Every stage takes ~2 ms per token (emulated), so that 4x stands out of the noise;
  // worker 1 goes from 50 to 200 at its batch 13 (decode token 12).
  const std::vector<std::string> slow = {"--slowdown", "50"};
  start_workers({slow, slow + std::vector<std::string>{"--slowdown-after-batches", "12:200"}, slow});
  const Run r = run(model, true, {"--split", "0:2,2:4,4:5"}, "1,403,40,13,72", 48);
  ASSERT_EQ(r.r.exit_code, 0) << r.r.err;
  EXPECT_EQ(r.ids, local.ids);
  EXPECT_TRUE(r.logits == local.logits) << "logits differ";
  EXPECT_NE(workers_[1]->log().find("slowdown now 200 (at batch 13)"), std::string::npos)
      << workers_[1]->log();
  const std::string want = "braid head: balance: worker " + workers_[1]->addr() + " (layers [2, 4)) takes ";
  const size_t at = r.r.err.find(want);
  ASSERT_NE(at, std::string::npos) << r.r.err;
  const std::string line = r.r.err.substr(at, r.r.err.find('\n', at) - at);
  // Detected after balance_window (8) slow tokens, with a little slack: on a loaded
  // machine a token or two just before the slowdown can be slow too and count towards
  // the window (seen once in CI-like runs: detected at token 18).
  const size_t k = line.find("(decode token ");
  ASSERT_NE(k, std::string::npos) << line;
  const int token = std::stoi(line.substr(k + 14));
  EXPECT_GE(token, 12 + 8 - 3) << line;
  EXPECT_LE(token, 12 + 8 + 4) << line;
  // The move takes layers off the slow worker; hysteresis: only once.
  const size_t arrow = line.find(" => ");
  ASSERT_NE(arrow, std::string::npos) << line;
  const std::string after = line.substr(arrow);
  const size_t w1 = after.find(workers_[1]->addr());
  if (w1 != std::string::npos) {
    int a = 0, b = 0;
    ASSERT_EQ(std::sscanf(after.c_str() + w1 + workers_[1]->addr().size(), " [%d, %d)", &a, &b), 2) << line;
    EXPECT_LT(b - a, 2) << line;
  }
  const size_t first = r.r.err.find("moved layers");
  EXPECT_EQ(r.r.err.find("moved layers", first + 1), std::string::npos) << r.r.err;
  // The KV caches of the layers that changed hands moved with them (KV_ROWS), not by
  // replaying: "KV of 1 sequence, layers [3, 4) transferred: 53248 bytes in 0.41 ms".
  std::printf("%s\n", line.c_str());
  const size_t kv = line.find("; KV of 1 sequence, layers [");
  ASSERT_NE(kv, std::string::npos) << line;
  const size_t moved = line.find(" transferred: ", kv);
  ASSERT_NE(moved, std::string::npos) << line;
  long bytes = 0;
  double took = -1;
  ASSERT_EQ(std::sscanf(line.c_str() + moved, " transferred: %ld bytes in %lf ms (no replay)", &bytes, &took),
            2)
      << line;
  // Every moved layer carries K and V of every position the sequence holds: 2 x 4 bytes
  // x kv_dim per position and layer, at least the prompt's 5 positions.
  EXPECT_GE(bytes, 5 * 2 * 4 * 16) << line;
  EXPECT_GE(took, 0) << line;
  for (const auto& w : workers_)
    if (w->log().find("caches of the layers that stay kept") != std::string::npos) return;
  ADD_FAILURE() << "no worker kept its caches on ASSIGN";
}

// What balancing does to KV caches, on stages in this process: layers [2, 4) move from
// one stage to its neighbour (export_kv -> import_kv, the KV_ROWS payload) while the
// layers that stay are adopted, and decoding goes on bit for bit as on one stage. Bad
// requests are refused with an error, not a read out of bounds.
TEST(StageKv, MovedCachesDecodeExactly) {
  BRAID_REQUIRE_ASSET(path, kStories);
  auto model = Model::load(path);
  const int dim = model->config().dim, n_vocab = model->config().n_vocab;
  ThreadPool pool(1);
  dist::Stage whole(model, 0, 5, 64, 2, pool);
  auto a = std::make_unique<dist::Stage>(model, 0, 2, 64, 2, pool);
  auto b = std::make_unique<dist::Stage>(model, 2, 5, 64, 2, pool);
  std::vector<int32_t> toks = {1, 403, 40, 13, 72};
  auto step = [&](int pos0, int n, bool moved_yet) {
    std::vector<float> h1(static_cast<size_t>(n) * dim), h2;
    model->embed(toks.data() + pos0, n, pos0, h1.data());
    h2 = h1;
    whole.run(7, pos0, n, h1.data());
    a->run(7, pos0, n, h2.data());
    b->run(7, pos0, n, h2.data());
    EXPECT_EQ(std::memcmp(h1.data(), h2.data(), h1.size() * sizeof(float)), 0) << "moved " << moved_yet;
    std::vector<float> logits(static_cast<size_t>(n_vocab));
    whole.output(h1.data() + static_cast<size_t>(n - 1) * dim, 1, logits.data());
    toks.push_back(static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin()));
  };
  step(0, 5, false);
  for (int i = 0; i < 6; ++i) step(static_cast<int>(toks.size()) - 1, 1, false);
  const int held = static_cast<int>(toks.size()) - 1;
  ASSERT_EQ(b->positions(7, 2), held);

  // Layers [2, 4) go from b to a: a becomes [0, 4), b [4, 5). Two pieces, in order.
  auto a2 = std::make_unique<dist::Stage>(model, 0, 4, 64, 2, pool);
  auto b2 = std::make_unique<dist::Stage>(model, 4, 5, 64, 2, pool);
  a2->adopt_kv(*a);
  b2->adopt_kv(*b);
  const std::vector<float> first = b->export_kv(7, 2, 4, 0, 4);
  const std::vector<float> rest = b->export_kv(7, 2, 4, 4, held - 4);
  EXPECT_EQ(first.size(), 2u * 2 * 4 * static_cast<size_t>(model->config().kv_dim()));
  EXPECT_THROW(a2->import_kv(7, 2, 4, 4, held - 4, rest.data(), rest.size()), Error);  // a gap
  a2->import_kv(7, 2, 4, 0, 4, first.data(), first.size());
  a2->import_kv(7, 2, 4, 4, held - 4, rest.data(), rest.size());
  EXPECT_EQ(a2->positions(7, 3), held);
  EXPECT_EQ(b2->positions(7, 4), held);
  a = std::move(a2);
  b = std::move(b2);
  for (int i = 0; i < 6; ++i) step(static_cast<int>(toks.size()) - 1, 1, true);

  // Refused: an unknown sequence, layers outside the stage, positions it does not hold,
  // rows of the wrong size.
  EXPECT_THROW(a->export_kv(8, 0, 1, 0, 1), Error);
  EXPECT_THROW(a->export_kv(7, 3, 5, 0, 1), Error);
  EXPECT_THROW(a->export_kv(7, 0, 1, 0, 100), Error);
  EXPECT_THROW(a->export_kv(7, 0, 1, -1, 1), Error);
  EXPECT_THROW(a->import_kv(7, 0, 1, 0, 1, first.data(), 3), Error);
  EXPECT_THROW(a->import_kv(7, 0, 1, 60, 10, first.data(), first.size()), Error);
  EXPECT_EQ(a->positions(9, 0), -1);
}

// SIGUSR1 doubles a worker's slowdown while it runs (emulated throttling).
TEST_F(RecoveryTest, SignalChangesTheSlowdown) {
  start_workers({{"--slowdown", "3"}});
  kill(workers_[0]->pid(), SIGUSR1);
  const auto deadline = Clock::now() + 5s;
  while (workers_[0]->log().find("slowdown now 6") == std::string::npos && Clock::now() < deadline)
    std::this_thread::sleep_for(20ms);
  EXPECT_NE(workers_[0]->log().find("slowdown now 6 (at batch 0)"), std::string::npos) << workers_[0]->log();
}

// A real external SIGKILL at a random moment while an in-process head generates: the
// tokens and every logit equal the single device's.
TEST_F(RecoveryTest, ExternalKillWhileGenerating) {
  BRAID_REQUIRE_ASSET(path, kStories);
  auto model = Model::load(path);
  const int n_vocab = model->config().n_vocab;
  // Greedy decoding by hand, so that both runs take the same steps.
  std::atomic<int> step{0};
  auto generate = [&](Forward& f, int n, std::vector<float>* all) {
    std::vector<int32_t> toks = {1, 403, 40, 13, 72};
    std::vector<float> logits(static_cast<size_t>(n_vocab));
    f.forward(toks.data(), static_cast<int>(toks.size()), 0, false, logits.data());
    for (int i = 0; i < n; ++i) {
      all->insert(all->end(), logits.begin(), logits.end());
      const int32_t next =
          static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      toks.push_back(next);
      step.store(i);
      f.forward(&toks.back(), 1, static_cast<int>(toks.size()) - 1, false, logits.data());
    }
    return toks;
  };
  ThreadPool pool(1);
  LocalForward local(model, 256, pool);
  std::vector<float> want;
  const std::vector<int32_t> want_toks = generate(local, 60, &want);

  step.store(0);
  start_workers({kNone, kNone, kNone});
  dist::HeadOptions o;
  for (const auto& w : workers_) o.workers.push_back(net::Endpoint::parse(w->addr()));
  o.n_ctx = 256;
  o.split = {{0, 1}, {1, 3}, {3, 5}};
  auto logs = std::make_shared<std::string>();
  auto mu = std::make_shared<std::mutex>();
  o.log = [logs, mu](const std::string& l) {
    std::lock_guard<std::mutex> lock(*mu);
    *logs += l + "\n";
  };
  auto ring = dist::Ring::start(model, path, net::Tls::from_secret_file(secret_), o);
  auto fwd = ring->open_sequence();
  // Mid-generation, without waiting for the head: the signal lands while a token is in
  // flight or between two, whichever comes.
  std::thread killer([&] {
    while (step.load() < 20) std::this_thread::sleep_for(100us);
    kill(workers_[1]->pid(), SIGKILL);
  });
  std::vector<float> got;
  const std::vector<int32_t> got_toks = generate(*fwd, 60, &got);
  killer.join();
  EXPECT_EQ(got_toks, want_toks);
  ASSERT_EQ(got.size(), want.size());
  EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)), 0);
  std::lock_guard<std::mutex> lock(*mu);
  EXPECT_NE(logs->find("worker " + workers_[1]->addr() + " (layers [1, 3)) lost ("), std::string::npos)
      << *logs;
  EXPECT_NE(logs->find("recovered in"), std::string::npos) << *logs;
}

// ---- A worker continued after the head gave up on it ----

// Open descriptors of process pid (-1 when it is gone).
int count_fds(pid_t pid) {
  std::error_code ec;
  std::filesystem::directory_iterator it("/proc/" + std::to_string(pid) + "/fd", ec), end;
  int n = 0;
  for (; !ec && it != end; it.increment(ec)) ++n;
  return ec ? -1 : n;
}

// The threads of process pid in state R (running or about to), by tid.
std::set<std::string> running_threads(pid_t pid) {
  std::set<std::string> out;
  std::error_code ec;
  std::filesystem::directory_iterator it("/proc/" + std::to_string(pid) + "/task", ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    std::ifstream st(it->path() / "stat");
    std::string s;
    std::getline(st, s);
    const size_t p = s.rfind(')');
    if (p != std::string::npos && p + 2 < s.size() && s[p + 2] == 'R') out.insert(it->path().filename());
  }
  return out;
}

// A worker hung (SIGSTOP) while it computes a batch, and continued only after the head
// gave up on it, finished without it and closed the ring, ends that session at once:
// its descriptors (the session's links and their event loops) are back to what they
// were before within a few seconds. Its emulated slowdown pads every batch by
// (slowdown - 1) x the batch's measured time, and that time then includes the whole
// hang: the padding must end with the session, not minutes later (issue 5: the soak's
// "known leak" of a resumed worker).
TEST_F(RecoveryTest, WorkerContinuedAfterTheHeadGaveUpClosesItsLinks) {
  BRAID_REQUIRE_ASSET(path, kStories);
  auto model = Model::load(path);
  const int n_vocab = model->config().n_vocab;
  // Worker 0 is slow, so that a hang of a few seconds would pad for minutes.
  start_workers({{"--slowdown", "30"}, kNone, kNone});
  const pid_t pid = workers_[0]->pid();
  dist::HeadOptions o;
  for (const auto& w : workers_) o.workers.push_back(net::Endpoint::parse(w->addr()));
  o.n_ctx = 512;
  o.split = {{0, 2}, {2, 4}, {4, 5}};
  o.heartbeat_interval = 200ms;
  o.failure_timeout = 2000ms;
  o.io_timeout = 20000ms;
  auto logs = std::make_shared<std::string>();
  auto mu = std::make_shared<std::mutex>();
  o.log = [logs, mu](const std::string& l) {
    std::lock_guard<std::mutex> lock(*mu);
    *logs += l + "\n";
  };
  const net::Tls tls = net::Tls::from_secret_file(secret_);
  // before_prompt() runs once the ring is up.
  auto generate = [&](const std::vector<int32_t>& prompt, int n, const std::function<void()>& before_prompt) {
    auto ring = dist::Ring::start(model, path, tls, o);
    auto fwd = ring->open_sequence();
    if (before_prompt) before_prompt();
    std::vector<float> logits(static_cast<size_t>(n_vocab));
    std::vector<int32_t> toks = prompt;
    fwd->forward(toks.data(), static_cast<int>(toks.size()), 0, false, logits.data());
    for (int i = 0; i < n; ++i) {
      toks.push_back(static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin()));
      fwd->forward(&toks.back(), 1, static_cast<int>(toks.size()) - 1, false, logits.data());
    }
  };

  // A warm-up run, so that whatever a first session sets up for good is in the baseline.
  generate({1, 403, 40, 13, 72}, 2, nullptr);
  int before = count_fds(pid);
  for (const auto deadline = Clock::now() + 5s; Clock::now() < deadline;) {
    std::this_thread::sleep_for(200ms);  // the session ends after the head's goodbye
    const int now = count_fds(pid);
    if (now == before) break;
    before = now;
  }
  ASSERT_GT(before, 0);

  // A prompt of 300 tokens: worker 0 computes it for a while (tens of ms), and is stopped
  // in the middle of that (a thread of it seen running twice in a row). The head finds it
  // silent, recovers without it and finishes.
  std::vector<int32_t> prompt = {1};
  for (int i = 0; i < 299; ++i) prompt.push_back(3 + (i * 37) % 500);
  std::atomic<bool> stopped{false}, done{false};
  std::thread stopper;
  auto stop_while_computing = [&] {
    stopper = std::thread([&] {
      std::set<std::string> last;
      while (!done.load()) {
        const std::set<std::string> now = running_threads(pid);
        for (const auto& tid : now) {
          if (!last.count(tid)) continue;
          kill(pid, SIGSTOP);
          stopped.store(true);
          return;
        }
        last = now;
        std::this_thread::sleep_for(1ms);
      }
    });
  };
  try {
    generate(prompt, 3, stop_while_computing);
  } catch (const Error& e) {
    ADD_FAILURE() << e.what() << "\n" << *logs;
  }
  done.store(true);
  if (stopper.joinable()) stopper.join();
  ASSERT_TRUE(stopped.load()) << "worker 0 was never seen computing";
  {
    std::lock_guard<std::mutex> lock(*mu);
    EXPECT_NE(logs->find("worker " + workers_[0]->addr() + " (layers [0, 2)) lost ("), std::string::npos)
        << *logs;
  }

  // The ring is closed. Continued now, worker 0 finds its session's links closed and ends
  // the session: every link and thread of it, padding or not, within a few seconds.
  EXPECT_TRUE(workers_[0]->stopped_or_gone());
  kill(pid, SIGCONT);
  const auto continued = Clock::now();
  int after = count_fds(pid);
  for (const auto deadline = continued + 8s; after > before && Clock::now() < deadline;) {
    std::this_thread::sleep_for(50ms);
    after = count_fds(pid);
  }
  std::printf("worker 0: %d descriptors before the run, %d %.2f s after it was continued\n", before, after,
              std::chrono::duration<double>(Clock::now() - continued).count());
  EXPECT_LE(after, before) << workers_[0]->log();
  EXPECT_TRUE(workers_[0]->alive());
}

}  // namespace
}  // namespace braid
