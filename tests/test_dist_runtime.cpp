// The distributed runtime in one process: workers serving on threads, a head driving
// them. Parsing helpers, errors that travel the ring, limits, and equality with a local
// run. (tests/integration/test_cluster.cpp runs real processes.)
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "braid/cluster.h"
#include "braid/dtype.h"
#include "braid/gguf.h"
#include "braid/error.h"
#include "braid/model.h"
#include "braid/transport.h"
#include "dist/worker_model.h"
#include "dist/worker_stream.h"
#include "test_util.h"

namespace braid::dist {
namespace {

using namespace std::chrono_literals;

TEST(DistParse, Split) {
  EXPECT_EQ(parse_split("0:2,2:5"), (std::vector<std::pair<int, int>>{{0, 2}, {2, 5}}));
  EXPECT_EQ(parse_split("3:4"), (std::vector<std::pair<int, int>>{{3, 4}}));
  for (const char* bad : {"", "0:2,", "2:2", "3:1", "a:b", "0-2", "0:2:3", ":2", "0:9999999"})
    EXPECT_THROW(parse_split(bad), Error) << bad;
}

TEST(DistParse, Endpoints) {
  auto e = parse_endpoints("127.0.0.1:7001,[::1]:7002");
  ASSERT_EQ(e.size(), 2u);
  EXPECT_EQ(e[1].str(), "[::1]:7002");
  EXPECT_THROW(parse_endpoints(""), Error);
  EXPECT_THROW(parse_endpoints("127.0.0.1"), Error);
}

TEST(DistParse, Bytes) {
  EXPECT_EQ(parse_bytes("1.5G"), uint64_t{3} << 29);
  EXPECT_EQ(parse_bytes("800M"), uint64_t{800} << 20);
  EXPECT_EQ(parse_bytes("512k"), uint64_t{512} << 10);
  EXPECT_EQ(parse_bytes("2GiB"), uint64_t{2} << 30);
  EXPECT_EQ(parse_bytes("1000"), 1000u);
  for (const char* bad : {"", "G", "1.5X", "-1G", "0", "nan"}) EXPECT_THROW(parse_bytes(bad), Error) << bad;
}

TEST(DistModel, FingerprintAndStageTensors) {
  BRAID_REQUIRE_ASSET(path, "models/stories260K.gguf");
  auto a = model_fingerprint(path), b = model_fingerprint(path);
  EXPECT_EQ(a, b);
  EXPECT_EQ(short_hex(a).size(), 16u);
  auto g = GgufFile::open(path);
  // Layers 1..2 without the output: their blocks and the small tensors, no matrices of
  // the embedding or the head.
  auto names = tensors_for_stage(*g, 1, 3, false);
  for (const auto& n : names) {
    EXPECT_NE(n, "token_embd.weight");
    EXPECT_NE(n, "output.weight");
    EXPECT_TRUE(n.rfind("blk.0.", 0) != 0 && n.rfind("blk.3.", 0) != 0) << n;
  }
  EXPECT_NE(std::find(names.begin(), names.end(), "blk.2.attn_q.weight"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "output_norm.weight"), names.end());
  auto with_output = tensors_for_stage(*g, 4, 5, true);
  EXPECT_TRUE(std::find(with_output.begin(), with_output.end(), "output.weight") != with_output.end() ||
              std::find(with_output.begin(), with_output.end(), "token_embd.weight") != with_output.end());
}

// In-process workers on loopback threads.
class Workers {
 public:
  Workers(int n, const net::Tls& tls, WorkerOptions o = {}) {
    o.log = [](const std::string&) {};
    for (int i = 0; i < n; ++i) {
      auto l = std::make_unique<net::Listener>(tls, net::Endpoint::parse("127.0.0.1:0"));
      auto w = std::make_unique<Worker>(tls, o);
      addrs_.push_back(net::Endpoint{"127.0.0.1", l->port()});
      threads_.emplace_back([w = w.get(), l = l.get()] { w->serve(*l); });
      listeners_.push_back(std::move(l));
      workers_.push_back(std::move(w));
    }
  }
  ~Workers() {
    for (auto& w : workers_) w->stop();
    for (auto& t : threads_) t.join();
  }
  const std::vector<net::Endpoint>& addrs() const { return addrs_; }

 private:
  std::vector<std::unique_ptr<net::Listener>> listeners_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::vector<std::thread> threads_;
  std::vector<net::Endpoint> addrs_;
};

class RingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    path_ = test::asset("models/stories260K.gguf");
    if (path_.empty()) GTEST_SKIP() << "stories260K.gguf not found";
    model_ = Model::load(path_);
  }
  HeadOptions options(const Workers& w) {
    HeadOptions o;
    o.workers = w.addrs();
    o.n_ctx = 32;
    o.log = [](const std::string&) {};
    return o;
  }
  std::string path_;
  std::shared_ptr<const Model> model_;
  net::Tls tls_ = net::Tls::from_secret("in-process");
};

TEST_F(RingTest, SameLogitsAsLocalWithManySequences) {
  Workers w(3, tls_);
  HeadOptions o = options(w);
  o.split = {{0, 1}, {1, 3}, {3, 5}};
  o.max_sequences = 3;
  auto ring = Ring::start(model_, path_, tls_, o);
  EXPECT_EQ(ring->describe(), "head -> " + w.addrs()[0].str() + " [0, 1) -> " + w.addrs()[1].str() +
                                  " [1, 3) -> " + w.addrs()[2].str() + " [3, 5) -> head (logits)");
  // Three sequences at once from three threads, each compared with a local run.
  std::vector<std::thread> ts;
  std::vector<int> ok(3, 0);
  for (int s = 0; s < 3; ++s) {
    ts.emplace_back([&, s] {
      auto fwd = ring->open_sequence();
      ThreadPool pool(1);
      LocalForward local(model_, 32, pool);
      std::vector<int32_t> toks = {1, 403 - s, 40, 13, 72, 300 + s, 31};
      std::vector<float> want(toks.size() * 512), got(toks.size() * 512);
      local.forward(toks.data(), 4, 0, true, want.data());
      fwd->forward(toks.data(), 4, 0, true, got.data());
      for (size_t i = 4; i < toks.size(); ++i) {
        local.forward(&toks[i], 1, static_cast<int>(i), false, want.data() + i * 512);
        fwd->forward(&toks[i], 1, static_cast<int>(i), false, got.data() + i * 512);
      }
      // Rewind and redo the last two positions: the caches roll back on every device.
      local.forward(&toks[5], 2, 5, true, want.data() + 5 * 512);
      fwd->forward(&toks[5], 2, 5, true, got.data() + 5 * 512);
      ok[static_cast<size_t>(s)] = std::memcmp(want.data(), got.data(), want.size() * 4) == 0;
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(ok, std::vector<int>(3, 1));
  EXPECT_THROW(
      {
        std::vector<std::unique_ptr<Forward>> four;
        for (int i = 0; i < 4; ++i) four.push_back(ring->open_sequence());
      },
      Error);
}

// A copy of the model at `path` with its f32 matrices stored as f16.
std::string write_f16_copy(const std::string& path) {
  auto g = GgufFile::open(path);
  GgufWriter w;
  w.copy_metadata(*g);
  for (const Tensor& t : g->tensors()) {
    const std::vector<int64_t> ne(t.ne, t.ne + t.n_dims);
    if (t.type != DType::F32 || t.n_dims < 2) {
      w.add_tensor(t.name, t.type, ne, t.data, t.nbytes);
      continue;
    }
    std::vector<uint8_t> half(static_cast<size_t>(t.nelements()) * 2);
    for (int64_t i = 0; i < t.nelements(); ++i) {
      float v;
      std::memcpy(&v, t.data + i * 4, 4);
      const uint16_t h = f32_to_f16(v);
      std::memcpy(&half[static_cast<size_t>(i) * 2], &h, 2);
    }
    w.add_tensor(t.name, DType::F16, ne, std::move(half));
  }
  const std::string out = test::temp_dir() + "/stories260K-f16.gguf";
  w.write(out);
  return out;
}

TEST_F(RingTest, HalfPrecisionInPanelsGivesLocalBits) {
  // f16 matrices run from copies in panels (braid/model.h), which each worker makes on
  // its range's first batch (its profile made and released them layer by layer before);
  // the output and every logit must still be the local run's, prompt and decode.
  const std::string f16 = write_f16_copy(path_);
  auto model = Model::load(f16);
  ASSERT_EQ(model->output_weight().type, DType::F16);
  Workers w(2, tls_);
  HeadOptions o = options(w);
  o.split = {{0, 2}, {2, 5}};
  auto ring = Ring::start(model, f16, tls_, o);
  auto fwd = ring->open_sequence();
  ThreadPool pool(1);
  LocalForward local(model, 32, pool);
  const std::vector<int32_t> toks = {1, 403, 40, 13, 72, 300, 31, 9};
  std::vector<float> want(toks.size() * 512), got(toks.size() * 512);
  local.forward(toks.data(), 5, 0, true, want.data());
  fwd->forward(toks.data(), 5, 0, true, got.data());
  for (size_t i = 5; i < toks.size(); ++i) {
    local.forward(&toks[i], 1, static_cast<int>(i), false, want.data() + i * 512);
    fwd->forward(&toks[i], 1, static_cast<int>(i), false, got.data() + i * 512);
  }
  EXPECT_EQ(0, std::memcmp(want.data(), got.data(), want.size() * 4));
  EXPECT_TRUE(model->is_packed(0));  // the local run's copies

  // A worker's profile times every layer, each from its copy, and keeps none of them.
  auto fresh = Model::load(f16);
  const DeviceProfile p = measure_profile(*fresh, pool, 1.0, 0);
  ASSERT_EQ(p.layer_ms.size(), 5u);
  for (double ms : p.layer_ms) EXPECT_GT(ms, 0);
  for (int l = 0; l <= 5; ++l) EXPECT_FALSE(fresh->is_packed(l)) << "layer " << l;
}

TEST_F(RingTest, ErrorsTravelTheRing) {
  Workers w(2, tls_);
  HeadOptions o = options(w);
  o.split = {{0, 2}, {2, 5}};
  auto ring = Ring::start(model_, path_, tls_, o);
  auto fwd = ring->open_sequence();
  std::vector<float> logits(512);
  const int32_t t[2] = {1, 2};
  EXPECT_THROW(fwd->forward(t, 2, 31, false, logits.data()), Error);  // beyond n_ctx: refused at the head
  EXPECT_THROW(fwd->forward(t, 2, 5, false, logits.data()), Error);   // beyond what it holds
  const int32_t bad[1] = {512};
  EXPECT_THROW(fwd->forward(bad, 1, 0, false, logits.data()), Error);
  fwd->forward(t, 2, 0, false, logits.data());  // still works afterwards
}

TEST_F(RingTest, MemoryLimitAndBadSplits) {
  WorkerOptions small;
  small.mem_limit = 64 << 10;  // 64 KiB: less than two layers of stories260K with their cache
  Workers w(2, tls_, small);
  HeadOptions o = options(w);
  o.split = {{0, 2}, {2, 5}};
  try {
    Ring::start(model_, path_, tls_, o);
    FAIL() << "a split beyond --mem-limit was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("more than this worker's --mem-limit"), std::string::npos)
        << e.what();
  }
  Workers w2(2, tls_);
  HeadOptions o2 = options(w2);
  for (auto split :
       {std::vector<std::pair<int, int>>{{0, 2}, {3, 5}}, {{0, 2}, {2, 4}}, {{0, 5}}, {{1, 2}, {2, 5}}}) {
    o2.split = split;
    EXPECT_THROW(Ring::start(model_, path_, tls_, o2), Error);
  }
  o2.split = {};
  o2.transfer = "q4";
  EXPECT_THROW(Ring::start(model_, path_, tls_, o2), Error);
}

TEST_F(RingTest, PlannerUsesProfiles) {
  // One worker 1000 times slower (its profile says so; a loaded test machine's link
  // probes can be off by milliseconds, so the gap must be far larger): the planner
  // leaves it out.
  WorkerOptions slow;
  slow.slowdown = 1000;
  Workers fast(1, tls_), slw(1, tls_, slow);
  HeadOptions o = options(fast);
  o.workers.push_back(slw.addrs()[0]);
  auto ring = Ring::start(model_, path_, tls_, o);
  EXPECT_EQ(ring->describe(), "head -> " + fast.addrs()[0].str() + " [0, 5) -> head (logits)");
  EXPECT_GT(ring->predicted_ms_per_token(), 0);
}

}  // namespace
}  // namespace braid::dist
