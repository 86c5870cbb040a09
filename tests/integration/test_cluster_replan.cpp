// What a re-plan costs besides the replay, with real `braid worker` processes on
// 127.0.0.1 and an in-process head: after a fixed split (no profiles) recovery and
// balancing price the workers from the stage times they reported while running, and
// profile only a worker that never ran a decode token; and workers preload the layers
// around their own within their memory budget (src/dist/worker_preload.h), giving the
// pages back when their range moves.
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>

#include "braid/cluster.h"
#include "braid/error.h"
#include "braid/generate.h"
#include "braid/model.h"
#include "braid/transport.h"
#include "dist/head_ring.h"
#include "dist/worker_preload.h"
#include "test_util.h"
#include "worker_fixture.h"
#include "worker_process.h"

namespace braid {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr const char* kStories = "models/stories260K.gguf";

std::vector<std::string> operator+(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Resident bytes of process pid's mappings of `path` (/proc/PID/smaps), or, with
// `inside` set, of the one mapping that contains that address.
uint64_t mapped_rss(pid_t pid, const std::string& path, const void* inside = nullptr) {
  std::ifstream in("/proc/" + (pid ? std::to_string(pid) : std::string("self")) + "/smaps");
  std::string line;
  bool counting = false;
  uint64_t kib = 0;
  while (std::getline(in, line)) {
    unsigned long a = 0, b = 0;
    char dash = 0;
    std::istringstream head(line);
    if ((head >> std::hex >> a >> dash >> b) && dash == '-') {  // a mapping's first line
      const auto p = reinterpret_cast<uintptr_t>(inside);
      counting = inside ? p >= a && p < b : line.size() >= path.size() &&
                                                line.compare(line.size() - path.size(), path.size(), path) == 0;
      continue;
    }
    if (counting && line.rfind("Rss:", 0) == 0) kib += std::stoull(line.substr(4));
  }
  return kib * 1024;
}

uint64_t weights(const Model& m, int layer) {
  return layer == m.config().n_layers ? m.output_weight_bytes() : m.layer_weight_bytes(layer);
}

// A model whose layers (3.75 MiB of f32 each, 6 of them) dwarf what mapping a file
// touches besides (the header, and the kernel's fault-around of 64 KiB at each small
// tensor a worker reads when it loads the model): residency can tell layers apart.
// stories260K's 178 KiB layers cannot be told apart that way.
std::string big_layers_model() {
  static const std::string path = [] {
    const std::string p = test::temp_dir() + "/big-layers.gguf";
    const test::CommandResult r =
        test::run_braid({"synth", "--preset", "tiny", "--type", "F32", "--pure", "--vocab", "none", "--n-vocab",
                         "512", "--layers", "6", "--ffn", "1024", "-o", p});
    return r.exit_code == 0 ? p : std::string();
  }();
  return path;
}

// What besides whole layers may be resident in a mapping of the model: the header, and
// 64 KiB of fault-around at every tensor that is not a layer's matrix.
uint64_t slack(const Model& m) {
  return m.gguf().data_offset() + (2 * static_cast<uint64_t>(m.config().n_layers) + 4) * (64 << 10);
}

// ---- Which layers a worker preloads ----

TEST(PreloadChoice, NearestFirstWithinTheBudget) {
  BRAID_REQUIRE_ASSET(path, kStories);
  auto model = Model::load(path);
  const Model& m = *model;
  const int n = m.config().n_layers;
  ASSERT_EQ(n, 5);
  auto layers = [&](int first, int last, bool output, uint64_t budget) {
    const dist::PreloadSet s = dist::choose_preload(m, first, last, output, budget);
    uint64_t bytes = 0;
    for (int l : s.layers) bytes += weights(m, l);
    EXPECT_EQ(s.bytes, bytes);
    EXPECT_LE(s.bytes, budget);
    return s.layers;
  };
  using V = std::vector<int>;
  EXPECT_EQ(layers(2, 3, false, 0), V{});
  // Both sides alternate, the one below first; the output (5) counts as the layer after 4.
  EXPECT_EQ(layers(2, 3, false, uint64_t{1} << 40), (V{1, 3, 0, 4, 5}));
  EXPECT_EQ(layers(2, 3, false, weights(m, 1) + weights(m, 3)), (V{1, 3}));
  EXPECT_EQ(layers(2, 3, false, weights(m, 1) + weights(m, 3) - 1), (V{1}));
  // One side only, and the output stays out when the range runs it.
  EXPECT_EQ(layers(0, 1, false, weights(m, 1) + weights(m, 2) + weights(m, 3) / 2), (V{1, 2}));
  EXPECT_EQ(layers(3, 5, true, uint64_t{1} << 40), (V{2, 1, 0}));
  EXPECT_EQ(layers(0, 5, true, uint64_t{1} << 40), V{});

  // The budget left: 90% of the device's, less the stage's weights and KV caches.
  const uint64_t kv = 2 * sizeof(float) * static_cast<uint64_t>(m.config().kv_dim());
  const uint64_t own = m.layer_weight_bytes(0) + m.layer_weight_bytes(1) + 2 * 512 * 3 * kv;
  EXPECT_EQ(dist::preload_budget(m, 0, 2, false, 512, 3, 10 * own), 9 * own - own);
  EXPECT_EQ(dist::preload_budget(m, 0, 2, false, 512, 3, own), 0u);
  EXPECT_EQ(dist::preload_budget(m, 0, 2, true, 512, 3, 10 * own), 8 * own - m.output_weight_bytes());

  EXPECT_EQ(dist::describe_layers({0, 1, 3, 5}, 5), "[0, 2), [3, 4) and the output");
  EXPECT_EQ(dist::describe_layers({}, 5), "nothing");
}

// The preloader pages the layers in (in this process: resident in its mapping of the
// file), and gives them back when a later start no longer needs them.
TEST(Preloader, WarmsTheLayersAndGivesThemBack) {
  const std::string path = big_layers_model();
  ASSERT_FALSE(path.empty());
  auto model = Model::load(path);
  const Model& m = *model;
  const void* inside = m.layer(4).w_down->data;
  const uint64_t before = mapped_rss(0, path, inside);
  const uint64_t slack = braid::slack(m);
  EXPECT_LT(before, slack);

  std::vector<std::string> lines;
  std::mutex mu;
  dist::Preloader p([&](const std::string& l) {
    std::lock_guard<std::mutex> lock(mu);
    lines.push_back(l);
  });
  // Range [1, 2); within a budget of layers 0 and 2.
  const dist::PreloadSet set = dist::choose_preload(m, 1, 2, false, weights(m, 0) + weights(m, 2));
  ASSERT_EQ(set.layers, (std::vector<int>{0, 2}));
  p.start(model, 1, 2, false, set, true, "test: ");
  ASSERT_TRUE(p.wait_done(10000));
  const uint64_t warm = weights(m, 0) + weights(m, 1) + weights(m, 2);
  const uint64_t after = mapped_rss(0, path, inside);
  EXPECT_GE(after, warm) << "before " << before;
  EXPECT_LE(after, warm + slack);
  EXPECT_LT(after, warm + weights(m, 3));
  {
    std::lock_guard<std::mutex> lock(mu);
    ASSERT_EQ(lines.size(), 1u);
    EXPECT_EQ(lines[0].rfind("test: preloaded layers [0, 1) and [2, 3) (", 0), 0u) << lines[0];
  }

  // The range moves to [4, 5) with nothing to preload: layers 0 to 2 are given back.
  p.start(model, 4, 5, false, dist::choose_preload(m, 4, 5, false, 0), true, "test: ");
  ASSERT_TRUE(p.wait_done(10000));
  const uint64_t moved = mapped_rss(0, path, inside);
  EXPECT_LE(moved, weights(m, 4) + slack) << "after the first start " << after;
  EXPECT_GE(moved, weights(m, 4));
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(lines.size(), 2u);
  EXPECT_NE(lines[1].find("preloaded no layers"), std::string::npos) << lines[1];
}

// ---- Rings of real workers ----

class ReplanTest : public test::WorkerFixture {
 protected:
  dist::HeadOptions options(std::vector<std::pair<int, int>> split) {
    dist::HeadOptions o;
    for (const auto& w : workers_) o.workers.push_back(net::Endpoint::parse(w->addr()));
    o.n_ctx = 256;
    o.split = std::move(split);
    logs_ = std::make_shared<std::string>();
    auto logs = logs_;
    auto mu = mu_;
    o.log = [logs, mu](const std::string& l) {
      std::lock_guard<std::mutex> lock(*mu);
      *logs += l + "\n";
    };
    return o;
  }
  std::string logs() const {
    std::lock_guard<std::mutex> lock(*mu_);
    return *logs_;
  }

  // Greedy decoding by hand: the tokens and every step's logits.
  static std::vector<int32_t> generate(Forward& f, int n_vocab, int n, std::vector<float>* all) {
    std::vector<int32_t> toks = {1, 403, 40, 13, 72};
    std::vector<float> logits(static_cast<size_t>(n_vocab));
    f.forward(toks.data(), static_cast<int>(toks.size()), 0, false, logits.data());
    for (int i = 0; i < n; ++i) {
      all->insert(all->end(), logits.begin(), logits.end());
      toks.push_back(static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin()));
      f.forward(&toks.back(), 1, static_cast<int>(toks.size()) - 1, false, logits.data());
    }
    return toks;
  }

  std::shared_ptr<std::string> logs_ = std::make_shared<std::string>();
  std::shared_ptr<std::mutex> mu_ = std::make_shared<std::mutex>();
};

// A worker dies mid-generation in a ring that started from a fixed split: the survivors
// are priced from their run times, nobody is profiled, and the answer is the single
// device's bit for bit. A worker that dies on the prompt leaves nobody with decode times:
// then (and only then) the survivors are profiled.
TEST_F(ReplanTest, RecoveryAfterAFixedSplitProfilesNobody) {
  BRAID_REQUIRE_ASSET(path, kStories);
  auto model = Model::load(path);
  const int n_vocab = model->config().n_vocab;
  ThreadPool pool(1);
  LocalForward local(model, 256, pool);
  std::vector<float> want;
  const std::vector<int32_t> want_toks = generate(local, n_vocab, 30, &want);
  const net::Tls tls = net::Tls::from_secret_file(secret_);

  struct Case {
    int die_after;  // batches: 0 the prompt, k decode token k
    int profiles;   // PROFILE_REQUESTs the recovery sends
  };
  for (const Case c : {Case{12, 0}, Case{0, 2}}) {
    SCOPED_TRACE(c.die_after);
    start_workers({{}, {"--die-after-batches", std::to_string(c.die_after)}, {}});
    auto ring = dist::Ring::start(model, path, tls, options({{0, 2}, {2, 4}, {4, 5}}));
    auto* impl = dynamic_cast<dist::RingImpl*>(ring.get());
    ASSERT_NE(impl, nullptr);
    EXPECT_EQ(impl->profiles_requested.load(), 0);  // a fixed split measures nothing
    std::vector<float> got;
    {
      auto fwd = ring->open_sequence();
      EXPECT_EQ(generate(*fwd, n_vocab, 30, &got), want_toks);
    }
    ASSERT_EQ(got.size(), want.size());
    EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)), 0);
    const std::string l = logs();
    EXPECT_NE(l.find("recovered in"), std::string::npos) << l;
    EXPECT_EQ(impl->profiles_requested.load(), c.profiles) << l;
    if (c.profiles == 0) {
      EXPECT_NE(l.find("re-plan: speeds from run time: " + workers_[0]->addr() + " "), std::string::npos) << l;
      EXPECT_EQ(l.find("profiling"), std::string::npos) << l;
    } else {
      EXPECT_NE(l.find("profiling"), std::string::npos) << l;
    }
  }
}

// Balancing after a fixed split: the slowed worker and the others are priced from their
// recent stage times, which show the slowdown; layers move away from it without a
// profile.
TEST_F(ReplanTest, BalancingAfterAFixedSplitProfilesNobody) {
  BRAID_REQUIRE_ASSET(path, kStories);
  auto model = Model::load(path);
  const int n_vocab = model->config().n_vocab;
  ThreadPool pool(1);
  LocalForward local(model, 256, pool);
  std::vector<float> want;
  const std::vector<int32_t> want_toks = generate(local, n_vocab, 48, &want);
  // About 2 ms per stage and token (emulated), worker 1 4x slower from decode token 12.
  const std::vector<std::string> slow = {"--slowdown", "50"};
  start_workers({slow, slow + std::vector<std::string>{"--slowdown-after-batches", "12:200"}, slow});
  auto ring = dist::Ring::start(model, path, net::Tls::from_secret_file(secret_), options({{0, 2}, {2, 4}, {4, 5}}));
  auto* impl = dynamic_cast<dist::RingImpl*>(ring.get());
  ASSERT_NE(impl, nullptr);
  std::vector<float> got;
  {
    auto fwd = ring->open_sequence();
    EXPECT_EQ(generate(*fwd, n_vocab, 48, &got), want_toks);
  }
  EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)), 0);
  const std::string l = logs();
  EXPECT_NE(l.find("moved layers"), std::string::npos) << l;
  EXPECT_NE(l.find("re-plan: speeds from run time: "), std::string::npos) << l;
  EXPECT_EQ(impl->profiles_requested.load(), 0) << l;
}

// A worker warms the layers next to its own up to --mem-limit: its mapping of the model
// then holds its layers and the ones it names, and no more than the limit. A worker with
// --no-preload holds none before its first batch.
TEST_F(ReplanTest, WorkersPreloadWithinTheirMemLimit) {
  const std::string path = big_layers_model();
  ASSERT_FALSE(path.empty());
  auto model = Model::load(path);
  const Model& m = *model;
  ASSERT_EQ(m.config().n_layers, 6);
  // KV caches of a layer: n_ctx 256 (options()) for every sequence the head may run.
  const uint64_t kv_layer = 256 * static_cast<uint64_t>(dist::HeadOptions{}.max_sequences) * 2 * sizeof(float) *
                            static_cast<uint64_t>(m.config().kv_dim());
  // Worker 0 runs [0, 1): room for its layer and caches and 2.5 more layers, in 90%.
  const uint64_t own = weights(m, 0) + kv_layer;
  const uint64_t limit = (own + weights(m, 1) + weights(m, 2) + weights(m, 3) / 2) * 10 / 9 + 10;
  start_workers({{"--mem-limit", std::to_string(limit)}, {"--no-preload"}});
  auto ring = dist::Ring::start(model, path, net::Tls::from_secret_file(secret_), options({{0, 1}, {1, 6}}));
  const std::string log0 = workers_[0]->log_with("preloaded", 20);
  const size_t at = log0.find("preloaded ");
  ASSERT_NE(at, std::string::npos) << log0;
  const std::string line = log0.substr(at, log0.find('\n', at) - at);
  EXPECT_EQ(line.rfind("preloaded layers [1, 3) (", 0), 0u) << line;

  const std::string abs = std::filesystem::canonical(path).string();
  const uint64_t held = weights(m, 0) + weights(m, 1) + weights(m, 2);
  const uint64_t rss0 = mapped_rss(workers_[0]->pid(), abs);
  EXPECT_GE(rss0, held);
  EXPECT_LE(rss0, held + slack(m));
  EXPECT_LE(rss0 + kv_layer, limit);
  // Worker 1 ([1, 6) and the output) warmed nothing: only what mapping the model touched.
  const uint64_t rss1 = mapped_rss(workers_[1]->pid(), abs);
  EXPECT_GT(rss1, 0u);
  EXPECT_LT(rss1, slack(m)) << "worker 1 preloaded with --no-preload";
  EXPECT_EQ(workers_[1]->log().find("preloaded"), std::string::npos) << workers_[1]->log();
}

}  // namespace
}  // namespace braid
