// The user-facing cluster commands, end to end with real `braid worker` processes on
// 127.0.0.1: `braid plan` (the assignment, predictions, the infeasible-memory error),
// --cluster files (same bytes as --workers, flags override the file, bad files are
// one-line errors), `braid bench` over the ring (the local JSON plus "cluster"), and the
// quick start's `braid cluster --local` (the same text as `braid run` on one device).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <thread>

#include "test_util.h"
#include "worker_process.h"

namespace braid {
namespace {

using namespace std::chrono_literals;
using nlohmann::json;
using test::put;
using test::run_braid;
using test::slurp;
using Worker = test::WorkerProcess;

constexpr const char* kStories = "models/stories260K.gguf";  // 5 layers


std::vector<std::string> operator+(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// The lines of s that start with `prefix`.
std::vector<std::string> lines_with(const std::string& s, const std::string& prefix) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string line;
  while (std::getline(ss, line))
    if (line.rfind(prefix, 0) == 0) out.push_back(line);
  return out;
}

class ClusterCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::temp_dir();
    secret_ = dir_ + "/secret";
    put(secret_, "cluster cli secret \x07\x08");
  }

  // Two (or n) workers on the shared secret, each with `extra` flags.
  std::vector<std::unique_ptr<Worker>> workers(size_t n, const std::vector<std::string>& extra = {}) {
    std::vector<std::unique_ptr<Worker>> v;
    for (size_t i = 0; i < n; ++i) {
      v.push_back(std::make_unique<Worker>(std::vector<std::string>{"--secret-file", secret_} + extra, dir_));
      EXPECT_TRUE(v.back()->ok());
    }
    return v;
  }
  static std::string addrs(const std::vector<std::unique_ptr<Worker>>& ws) {
    std::string s;
    for (const auto& w : ws) {
      if (!s.empty()) s.push_back(',');
      s.append(w->addr());
    }
    return s;
  }

  // `braid run` greedy on stories260K; returns ids + logits bytes.
  std::string run_stories(const std::string& model, const std::vector<std::string>& extra,
                          test::CommandResult* result = nullptr) {
    static int k = 0;
    const std::string ids = dir_ + "/ids" + std::to_string(k), logits = dir_ + "/logits" + std::to_string(k);
    ++k;
    auto r = run_braid(
        std::vector<std::string>{"run", "-m", model, "--prompt-tokens", "1,403,40,13,72", "-n", "16",
                                 "--temp", "0", "-t", "1", "--ids-out", ids, "--logits-out", logits} +
            extra,
        "", 60);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    if (result) *result = r;
    const std::string got = slurp(ids);
    EXPECT_FALSE(got.empty());
    return got + "|" + slurp(logits);
  }

  std::string dir_, secret_;
};

// ---- braid plan ----

// The JSON assignment covers every layer exactly once, one device runs the output, the
// predictions are positive, and the comparison splits are there.
void check_plan_json(const json& j, int n_layers) {
  ASSERT_TRUE(j.is_object());
  EXPECT_EQ(j["n_layers"], n_layers);
  std::vector<std::pair<int, int>> ranges;
  int outputs = 0;
  for (const auto& d : j["devices"]) {
    if (!d["layers"].is_null()) ranges.emplace_back(d["layers"][0].get<int>(), d["layers"][1].get<int>());
    outputs += d["runs_output"].get<bool>() ? 1 : 0;
    EXPECT_GE(d["busy_ms"].get<double>(), 0.0);
  }
  std::sort(ranges.begin(), ranges.end());
  int next = 0;
  for (const auto& [a, b] : ranges) {
    EXPECT_EQ(a, next) << j.dump();
    EXPECT_GT(b, a);
    next = b;
  }
  EXPECT_EQ(next, n_layers) << j.dump();
  EXPECT_EQ(outputs, 1) << j.dump();
  EXPECT_GT(j["predicted_ms_per_token"].get<double>(), 0.0);
  EXPECT_GT(j["tokens_per_s"].get<double>(), 0.0);
  EXPECT_GT(j["bottleneck_ms"].get<double>(), 0.0);
  EXPECT_GT(j["pipelined_tokens_per_s"].get<double>(), 0.0);
  EXPECT_LE(j["bottleneck_ms"].get<double>(), j["predicted_ms_per_token"].get<double>() + 1e-9);
  for (const char* split : {"even_split", "memory_split"}) {
    SCOPED_TRACE(split);
    ASSERT_TRUE(j.contains(split));
    EXPECT_GT(j[split]["ms_per_token"].get<double>(), 0.0);
    EXPECT_GT(j[split]["tokens_per_s"].get<double>(), 0.0);
    EXPECT_NE(j[split]["ring"].get<std::string>().find("-> head"), std::string::npos);
  }
}

TEST_F(ClusterCliTest, PlanShowsAssignmentAndComparisons) {
  BRAID_REQUIRE_ASSET(model, kStories);
  auto ws = workers(2);
  const std::vector<std::string> ring = {"--workers", addrs(ws), "--secret-file", secret_};

  auto r = run_braid(std::vector<std::string>{"plan", "-m", model, "--json", "--ctx", "256"} + ring, "", 60);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  check_plan_json(j, 5);
  EXPECT_EQ(j["rule"], "planner");
  EXPECT_EQ(j["n_ctx"], 256);
  // The even split on two workers: [0, 3) and [3, 5).
  EXPECT_EQ(j["even_split"]["ring"], "head -> " + j["devices"][1]["name"].get<std::string>() + " [0, 3) -> " +
                                         j["devices"][2]["name"].get<std::string>() +
                                         " [3, 5) -> head (logits)");
  EXPECT_EQ(j["devices"][1]["address"], ws[0]->addr());

  // The table: the assignment, the predictions and the two comparison lines.
  r = run_braid(std::vector<std::string>{"plan", "-m", model, "--ctx", "256"} + ring, "", 60);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (const char* want : {"assignment (planner, ", "ring: head", "predicted: ", " ms/token (",
                           "bottleneck: ", "even split: head", "memory-proportional split: head"})
    EXPECT_NE(r.out.find(want), std::string::npos) << want << "\n" << r.out;

  // A fixed split with the head's own layers is shown as given, and priced.
  r = run_braid(std::vector<std::string>{"plan", "-m", model, "--json", "--ctx", "256", "--head-layers", "1",
                                         "--split", "1:2,2:5"} +
                    ring,
                "", 60);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json f = json::parse(r.out);
  check_plan_json(f, 5);
  EXPECT_EQ(f["rule"], "fixed");
  EXPECT_EQ(f["devices"][0]["layers"], json::array({0, 1}));
  EXPECT_EQ(f["devices"][1]["layers"], json::array({1, 2}));
  EXPECT_EQ(f["devices"][2]["layers"], json::array({2, 5}));
  EXPECT_TRUE(f["devices"][2]["runs_output"].get<bool>());

  // --split even as the assignment; a throughput objective; the head may take layers.
  for (const auto& extra : {std::vector<std::string>{"--split", "even"},
                            std::vector<std::string>{"--objective", "throughput", "--sequences", "2"},
                            std::vector<std::string>{"--head-layers", "auto"}}) {
    r = run_braid(std::vector<std::string>{"plan", "-m", model, "--json", "--ctx", "256"} + ring + extra, "",
                  60);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    check_plan_json(json::parse(r.out), 5);
  }

  // Nothing ran: the sessions ended, and the workers serve the next head.
  EXPECT_NE(ws[0]->log_with("ended").find("ended"), std::string::npos);
  run_stories(model, ring);
}

TEST_F(ClusterCliTest, PlanRefusesWhatDoesNotFit) {
  BRAID_REQUIRE_ASSET(model, kStories);
  auto ws = workers(2, {"--mem-limit", "1M"});
  const auto r = run_braid(
      {"plan", "-m", model, "--ctx", "2048", "--workers", addrs(ws), "--secret-file", secret_}, "", 60);
  EXPECT_EQ(r.exit_code, 1);
  const auto errors = lines_with(r.err, "braid: error:");
  ASSERT_EQ(errors.size(), 1u) << r.err;
  EXPECT_EQ(errors[0].rfind("braid: error: cannot place the model: the model needs ", 0), 0u) << r.err;
  EXPECT_NE(errors[0].find("the largest budget is 1.0 MiB (127.0.0.1:"), std::string::npos) << r.err;
  EXPECT_TRUE(r.out.empty()) << r.out;
  // `braid run` on the same workers says the same (the head does not take the layers).
  const auto run = run_braid({"run", "-m", model, "--prompt-tokens", "1,2", "-n", "1", "--ctx", "2048",
                              "--workers", addrs(ws), "--secret-file", secret_},
                             "", 60);
  EXPECT_EQ(run.exit_code, 1);
  EXPECT_NE(run.err.find("braid: error: cannot place the model: "), std::string::npos) << run.err;
}

TEST_F(ClusterCliTest, PlanNeedsWorkers) {
  BRAID_REQUIRE_ASSET(model, kStories);
  const auto r = run_braid({"plan", "-m", model}, "", 30);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("braid: error: braid plan needs the workers: --cluster FILE"), std::string::npos)
      << r.err;
}

// ---- Cluster files ----

TEST_F(ClusterCliTest, ClusterFileEqualsWorkers) {
  BRAID_REQUIRE_ASSET(model, kStories);
  auto ws = workers(2);
  const std::string local = run_stories(model, {});
  const std::string by_flags =
      run_stories(model, {"--workers", addrs(ws), "--secret-file", secret_, "--split", "0:2,2:5"});
  EXPECT_EQ(by_flags, local);

  // The secret is named relative to the file, which is in another folder than the
  // test's working directory.
  const std::string conf = dir_ + "/conf";
  std::filesystem::create_directories(conf);
  std::filesystem::copy_file(secret_, conf + "/cluster.key");
  put(conf + "/cluster.toml",
      "# two workers on loopback\n"
      "secret-file = \"cluster.key\"\n"
      "split = \"0:2,2:5\"\n"
      "transfer = \"f32\"\n"
      "net-timeout = 60\n\n"
      "[[worker]]\n"
      "address = \"" +
          ws[0]->addr() +
          "\"\n"
          "name = \"alpha\"\n\n"
          "[[worker]]\n"
          "address = \"" +
          ws[1]->addr() + "\"\n");
  test::CommandResult r;
  EXPECT_EQ(run_stories(model, {"--cluster", conf + "/cluster.toml"}, &r), local);
  EXPECT_NE(r.err.find("ring: head -> " + ws[0]->addr() + " [0, 2) -> " + ws[1]->addr() + " [2, 5)"),
            std::string::npos)
      << r.err;

  // Flags override the file: another split, and a transfer the file does not ask for.
  std::string text = slurp(conf + "/cluster.toml");
  text.replace(text.find("\"f32\""), 5, "\"f16\"");
  put(conf + "/f16.toml", text);
  EXPECT_EQ(
      run_stories(model, {"--cluster", conf + "/f16.toml", "--transfer", "f32", "--split", "0:3,3:5"}, &r),
      local);
  EXPECT_NE(r.err.find(ws[0]->addr() + " [0, 3) -> " + ws[1]->addr() + " [3, 5)"), std::string::npos)
      << r.err;
  // ... and without the override the file's f16 is used: not the same bytes.
  EXPECT_NE(run_stories(model, {"--cluster", conf + "/f16.toml"}), local);

  // The plan shows the file's worker names.
  const auto p = run_braid({"plan", "-m", model, "--cluster", conf + "/cluster.toml", "--split", "planner",
                            "--json", "--ctx", "256"},
                           "", 60);
  ASSERT_EQ(p.exit_code, 0) << p.err;
  const json j = json::parse(p.out);
  check_plan_json(j, 5);
  EXPECT_EQ(j["devices"][1]["name"], "alpha");
  EXPECT_EQ(j["devices"][1]["address"], ws[0]->addr());
}

TEST_F(ClusterCliTest, BadClusterFilesAreOneLineErrors) {
  BRAID_REQUIRE_ASSET(model, kStories);
  struct Case {
    const char* name;
    std::string text;
    std::string error;  // after "braid: error: FILE"
  };
  const std::vector<Case> cases = {
      {"bad-toml.toml", "secret-file = \"key\n", ":1:"},  // then toml++'s reason
      {"unknown.toml", "secret-file = \"key\"\nsecrets = 2\n", ":2: unknown key 'secrets' (known: worker, "},
      {"type.toml", "\n\nnet-timeout = \"60\"\n", ":3: 'net-timeout' must be an integer, not a string"},
      {"range.toml", "connect-timeout = 0\n", ":1: 'connect-timeout' is 0, outside 1..3600"},
      {"bool.toml", "output-at-head = 1\n", ":1: 'output-at-head' must be true or false, not an integer"},
      {"transfer.toml", "transfer = \"f8\"\n", ":1: 'transfer' is 'f8'; use one of f32, f16, q8, q8_0"},
      {"worker-table.toml", "[worker]\naddress = \"127.0.0.1:1\"\n",
       ":1: 'worker' must be an array of tables ([[worker]]), not a table"},
      {"worker-key.toml", "[[worker]]\naddress = \"127.0.0.1:1\"\nport = 7\n",
       ":3: unknown key 'port' in a [[worker]] (known: address, name)"},
      {"worker-address.toml", "[[worker]]\naddress = \"nowhere\"\n", ":2: 'address': bad address 'nowhere'"},
      {"worker-none.toml", "[[worker]]\nname = \"x\"\n", ":1: a [[worker]] has no address"},
      {"split.toml", "split = \"0-2\"\n", ":1: 'split' is not planner, even, memory or ranges: "},
      {"no-workers.toml", "secret-file = \"key\"\n", "' lists no workers"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string path = dir_ + "/" + c.name;
    put(path, c.text);
    for (const char* cmd : {"run", "plan", "bench"}) {
      SCOPED_TRACE(cmd);
      std::vector<std::string> args = {cmd, "-m", model, "--cluster", path};
      if (std::string(cmd) == "run") args.insert(args.end(), {"-p", "x", "-n", "1"});
      const auto r = run_braid(args, "", 30);
      EXPECT_EQ(r.exit_code, 1) << r.err;
      EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
      const std::string prefix = std::string(c.name) == "no-workers.toml"
                                     ? "braid: error: cluster file '" + path
                                     : "braid: error: " + path;
      EXPECT_EQ(r.err.rfind(prefix + c.error, 0), 0u) << r.err;
    }
  }
  const auto missing = run_braid({"plan", "-m", model, "--cluster", dir_ + "/absent.toml"}, "", 30);
  EXPECT_EQ(missing.exit_code, 1);
  EXPECT_EQ(missing.err, "braid: error: cluster file '" + dir_ + "/absent.toml' not found\n");
}

// ---- braid bench over the ring ----

TEST_F(ClusterCliTest, BenchOverWorkersHasTheLocalJsonAndTheRing) {
  BRAID_REQUIRE_ASSET(model, kStories);
  const std::vector<std::string> bench = {
      "bench", "-m", model, "-t", "1", "-p", "8", "-n", "8", "-r", "1", "--no-bandwidth", "--json"};
  auto local = run_braid(bench, "", 60);
  ASSERT_EQ(local.exit_code, 0) << local.err;
  const json lj = json::parse(local.out);
  EXPECT_EQ(lj["engine"], "local");

  auto ws = workers(2);
  for (const char* split : {"planner", "even", "memory"}) {
    SCOPED_TRACE(split);
    const auto r = run_braid(
        bench + std::vector<std::string>{"--workers", addrs(ws), "--secret-file", secret_, "--split", split},
        "", 60);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    const json j = json::parse(r.out);
    for (const auto& [key, value] : lj.items()) EXPECT_TRUE(j.contains(key)) << key;
    EXPECT_EQ(j["engine"], "cluster");
    EXPECT_GT(j["gen_tokens_per_s"].get<double>(), 0.0);
    EXPECT_GT(j["prompt_tokens_per_s"].get<double>(), 0.0);
    ASSERT_TRUE(j["cluster"].is_object());
    EXPECT_EQ(j["cluster"]["split"], split);
    EXPECT_EQ(j["cluster"]["workers"], json::array({ws[0]->addr(), ws[1]->addr()}));
    EXPECT_GT(j["cluster"]["predicted_ms_per_token"].get<double>(), 0.0);
    const std::string ring = j["cluster"]["ring"];
    EXPECT_EQ(ring.rfind("head -> ", 0), 0u) << ring;
    if (std::string(split) == "even") {
      EXPECT_EQ(ring,
                "head -> " + ws[0]->addr() + " [0, 3) -> " + ws[1]->addr() + " [3, 5) -> head (logits)");
    }
  }
  // A fixed split: no prediction.
  const auto r = run_braid(bench + std::vector<std::string>{"--workers", addrs(ws), "--secret-file", secret_,
                                                            "--split", "0:1,1:5"},
                           "", 60);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const json j = json::parse(r.out);
  EXPECT_EQ(j["cluster"]["split"], "fixed 0:1,1:5");
  EXPECT_TRUE(j["cluster"]["predicted_ms_per_token"].is_null());
}

// ---- The quick start: `braid cluster --local 2` prints what `braid run` prints. ----

TEST_F(ClusterCliTest, QuickStartClusterEqualsOneDevice) {
  std::vector<std::string> models;
  if (const char* d = std::getenv("BRAID_DEFAULT_MODEL"); d && std::filesystem::exists(d))
    models.push_back(d);
  if (const std::string s = test::asset(kStories); !s.empty()) models.push_back(s);
  if (models.empty()) GTEST_SKIP() << "neither the default model nor " << kStories << " is here";
  for (const auto& model : models) {
    SCOPED_TRACE(model);
    // scripts/quickstart.sh's command, shorter.
    const std::vector<std::string> gen = {
        "-m", model, "-p", "Once upon a time", "-n", "48", "--temp", "0.8", "--seed", "42", "-t", "1"};
    const auto one = run_braid(std::vector<std::string>{"run"} + gen, "", 60);
    ASSERT_EQ(one.exit_code, 0) << one.err;
    ASSERT_FALSE(one.out.empty());
    for (const auto& extra : {std::vector<std::string>{"--split", "even"}, std::vector<std::string>{}}) {
      const auto cl = run_braid(std::vector<std::string>{"cluster", "--local", "2"} + gen + extra, "", 60);
      ASSERT_EQ(cl.exit_code, 0) << cl.err;
      EXPECT_EQ(cl.out, one.out);
      EXPECT_NE(cl.err.find("braid head: ring: head -> 127.0.0.1:"), std::string::npos) << cl.err;
    }
  }
}

}  // namespace
}  // namespace braid
