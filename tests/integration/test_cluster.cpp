// Multi-process clusters on 127.0.0.1: real `braid worker` processes (fork/exec of the
// braid binary on free ports), driven by `braid run --workers` or by an in-process head.
// Asserts byte-identical outputs to a single-device run, refusal of strangers and junk,
// and clean errors in bounded time. Every child is killed when its test ends.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "braid/cluster.h"
#include "braid/error.h"
#include "braid/generate.h"
#include "braid/model.h"
#include "braid/protocol.h"
#include "braid/transport.h"
#include "dist/transport_frames.h"
#include "test_util.h"
#include "worker_process.h"

namespace braid {
namespace {

using namespace std::chrono_literals;
using test::put;
using test::run_braid;
using test::slurp;
using test::WorkerProcess;

constexpr const char* kStories = "models/stories260K.gguf";


class Cluster {
 public:
  // n workers sharing the secret in file `secret`.
  Cluster(size_t n, const std::string& dir, const std::string& secret) : dir_(dir) {
    for (size_t i = 0; i < n; ++i)
      workers_.push_back(
          std::make_unique<WorkerProcess>(std::vector<std::string>{"--secret-file", secret}, dir));
  }
  bool ok() const {
    return std::all_of(workers_.begin(), workers_.end(), [](const auto& w) { return w->ok(); });
  }
  std::string addrs() const {
    std::string s;
    for (const auto& w : workers_) {
      if (!s.empty()) s.push_back(',');
      s.append(w->addr());
    }
    return s;
  }
  ~Cluster() {
    for (auto& w : workers_) w->terminate();
  }
  WorkerProcess& operator[](size_t i) { return *workers_[i]; }
  size_t size() const { return workers_.size(); }

 private:
  std::string dir_;
  std::vector<std::unique_ptr<WorkerProcess>> workers_;
};

class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::temp_dir();
    secret_ = dir_ + "/secret";
    put(secret_, "the cluster secret \x01\x02\x03");
  }

  // `braid run` on stories260K, greedy, ids and logits written; returns {ids, logits}.
  std::pair<std::string, std::string> run_stories(const std::string& model, std::vector<std::string> extra,
                                                  const std::string& prompt = "1,403,40,13,72", int n = 24,
                                                  test::CommandResult* result = nullptr) {
    static int k = 0;
    const std::string ids = dir_ + "/ids" + std::to_string(k), logits = dir_ + "/logits" + std::to_string(k);
    ++k;
    std::vector<std::string> args = {
        "run", "-m",        model, "--prompt-tokens", prompt, "-n", std::to_string(n), "--temp", "0", "-t",
        "1",   "--ids-out", ids,   "--logits-out",    logits};
    args.insert(args.end(), extra.begin(), extra.end());
    test::CommandResult r = run_braid(args, "", 60);
    if (result) *result = r;
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return {slurp(ids), slurp(logits)};
  }

  std::vector<std::string> ring_flags(const Cluster& c) {
    return {"--workers", c.addrs(), "--secret-file", secret_};
  }

  std::string dir_, secret_;
};

std::vector<std::string> operator+(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// ---- Output equality: every split gives the single device's bytes. ----

TEST_F(ClusterTest, SplitsGiveByteIdenticalOutput) {
  BRAID_REQUIRE_ASSET(model, kStories);
  const auto local = run_stories(model, {});
  ASSERT_FALSE(local.first.empty());
  ASSERT_EQ(local.second.size(), (5 + 24) * 512 * sizeof(float));

  Cluster c(4, dir_, secret_);
  ASSERT_TRUE(c.ok());
  const std::string w2 = c[0].addr() + "," + c[1].addr();
  const std::string w3 = w2 + "," + c[2].addr();
  struct Case {
    const char* what;
    std::vector<std::string> flags;
  };
  const std::vector<Case> cases = {
      {"2 workers", {"--workers", w2, "--split", "0:2,2:5"}},
      {"2 workers, head runs the output", {"--workers", w2, "--split", "0:4,4:5", "--output-at-head"}},
      {"3 workers, head runs layer 0", {"--workers", w3, "--head-layers", "1", "--split", "1:3,3:4,4:5"}},
      {"4 workers, one layer each, head runs layer 0",
       {"--workers", c.addrs(), "--head-layers", "1", "--split", "1:2,2:3,3:4,4:5"}},
      {"4 workers, one layer each + head output",
       {"--workers", c.addrs(), "--split", "0:1,1:2,2:3,3:5", "--output-at-head"}},
      {"planner, 3 workers", {"--workers", w3}},
      {"planner, head may take layers", {"--workers", w2, "--head-layers", "auto"}},
  };
  for (const auto& cs : cases) {
    SCOPED_TRACE(cs.what);
    const auto remote = run_stories(model, cs.flags + std::vector<std::string>{"--secret-file", secret_});
    EXPECT_EQ(remote.first, local.first);
    EXPECT_TRUE(remote.second == local.second) << "logits differ";
  }
}

TEST_F(ClusterTest, LongPromptInBatches) {
  // 700 prompt tokens: more than one 512-token batch per frame, still the same bytes.
  BRAID_REQUIRE_ASSET(model, kStories);
  std::string prompt = "1";
  for (int i = 0; i < 699; ++i) {
    prompt.push_back(',');
    prompt.append(std::to_string(3 + (i * 37) % 500));
  }
  const auto local = run_stories(model, {}, prompt, 3);
  Cluster c(2, dir_, secret_);
  ASSERT_TRUE(c.ok());
  const auto remote =
      run_stories(model, ring_flags(c) + std::vector<std::string>{"--split", "0:3,3:5"}, prompt, 3);
  EXPECT_EQ(remote.first, local.first);
  EXPECT_TRUE(remote.second == local.second);
}

TEST_F(ClusterTest, CompressedTransferWithinTolerance) {
  // Teacher-forced rows (the prompt's logits) compare like for like. Measured on this
  // model: f16 hidden states move logits by at most ~2e-3, q8_0 by ~0.12 (logits span
  // about +-15).
  BRAID_REQUIRE_ASSET(model, kStories);
  const std::string prompt = "1,403,40,13,72,300,31,99,45,260,410,12,7,88,144,201";
  const auto local = run_stories(model, {}, prompt, 1);
  Cluster c(2, dir_, secret_);
  ASSERT_TRUE(c.ok());
  for (auto [format, tol] : {std::pair<const char*, float>{"f16", 1e-2f}, {"q8", 0.25f}}) {
    SCOPED_TRACE(format);
    const auto remote = run_stories(
        model, ring_flags(c) + std::vector<std::string>{"--split", "0:2,2:5", "--transfer", format}, prompt,
        1);
    ASSERT_EQ(remote.second.size(), local.second.size());
    const size_t n = local.second.size() / 4;
    std::vector<float> a(n), b(n);
    std::memcpy(a.data(), local.second.data(), n * 4);
    std::memcpy(b.data(), remote.second.data(), n * 4);
    float max_diff = 0;
    for (size_t i = 0; i < n; ++i) max_diff = std::max(max_diff, std::fabs(a[i] - b[i]));
    EXPECT_LT(max_diff, tol);
    std::printf("%s transfer: max |logit difference| %g\n", format, max_diff);
    EXPECT_GT(max_diff, 0.0f) << "a lossy format gave exact results: was it used?";
  }
}

// Several prompts in flight through one ring (pipelined): every prompt's ids are those
// of the local run.
TEST_F(ClusterTest, BatchOfPromptsPipelined) {
  BRAID_REQUIRE_ASSET(model, kStories);
  const std::string prompts = dir_ + "/prompts.txt";
  put(prompts, "Once upon a time\nThe cat sat\nLily and Tom went to\n\nThe sun was\nA big red ball\n");
  auto batch = [&](std::vector<std::string> extra) {
    const std::string ids = dir_ + "/batch" + std::to_string(extra.size()) + ".ids";
    std::vector<std::string> args = {"run", "-m", model, "--batch-file", prompts, "-n", "24", "--temp",
                                     "0",   "-t", "1",   "--ids-out",    ids};
    args.insert(args.end(), extra.begin(), extra.end());
    auto r = run_braid(args, "", 60);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    EXPECT_NE(r.out.find("=== 5 ==="), std::string::npos) << r.out;
    return slurp(ids);
  };
  const std::string local = batch({});
  EXPECT_EQ(std::count(local.begin(), local.end(), '\n'), 5);
  Cluster c(2, dir_, secret_);
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(batch(ring_flags(c) + std::vector<std::string>{"--split", "0:2,2:5"}), local);
  EXPECT_EQ(batch(ring_flags(c) + std::vector<std::string>{"--head-layers", "2", "--split", "2:3,3:5"}),
            local);
}

// ---- Other architectures, through an in-process head (converted HF models have no
// tokenizer, which `braid run` needs; the ring does not). ----

void compare_in_process(const std::string& gguf, const std::string& secret, const std::string& dir,
                        const std::vector<std::pair<int, int>>& split, int head_layers, bool output_at_head) {
  auto model = Model::load(gguf);
  const ModelConfig& c = model->config();
  std::vector<int32_t> tokens;
  for (int i = 0; i < 20; ++i) tokens.push_back((1 + i * 53) % c.n_vocab);
  ThreadPool pool(1);
  LocalForward local(model, 64, pool);
  std::vector<float> want(tokens.size() * static_cast<size_t>(c.n_vocab));
  local.forward(tokens.data(), 12, 0, true, want.data());
  // Then decode the rest one token at a time.
  for (size_t i = 12; i < tokens.size(); ++i)
    local.forward(&tokens[i], 1, static_cast<int>(i), false, want.data() + i * c.n_vocab);

  Cluster cl(split.size(), dir, secret);
  ASSERT_TRUE(cl.ok());
  dist::HeadOptions o;
  for (size_t i = 0; i < cl.size(); ++i) o.workers.push_back(net::Endpoint::parse(cl[i].addr()));
  o.n_ctx = 64;
  o.split = split;
  o.head_layers = head_layers;
  o.output_at_head = output_at_head;
  o.log = [](const std::string&) {};
  auto ring = dist::Ring::start(model, gguf, net::Tls::from_secret_file(secret), o);
  auto fwd = ring->open_sequence();
  std::vector<float> got(want.size());
  fwd->forward(tokens.data(), 12, 0, true, got.data());
  for (size_t i = 12; i < tokens.size(); ++i)
    fwd->forward(&tokens[i], 1, static_cast<int>(i), false, got.data() + i * c.n_vocab);
  EXPECT_EQ(std::memcmp(got.data(), want.data(), want.size() * sizeof(float)), 0) << gguf;
}

TEST_F(ClusterTest, ConvertedHfModelsByteIdentical) {
  for (const char* name : {"hf/gpt2-tiny", "hf/llama-tiny"}) {
    SCOPED_TRACE(name);
    BRAID_REQUIRE_ASSET(src, name);
    const std::string gguf = dir_ + "/" + std::filesystem::path(name).filename().string() + ".gguf";
    auto r = run_braid({"convert", src, "-o", gguf}, "", 60);
    ASSERT_EQ(r.exit_code, 0) << r.err;
    // Both have 3 layers: one per worker; then the head runs layer 0 and the output.
    compare_in_process(gguf, secret_, dir_, {{0, 1}, {1, 2}, {2, 3}}, 0, false);
    compare_in_process(gguf, secret_, dir_, {{1, 3}}, 1, true);
  }
}

// Two workers dial in (`--connect`, as behind NAT) and one is dialed; the head relays to
// the dial-in ones. Same bytes.
TEST_F(ClusterTest, WorkersThatDialIn) {
  BRAID_REQUIRE_ASSET(model, kStories);
  const auto local = run_stories(model, {});
  int port;
  {
    net::Listener l(net::Tls::from_secret("x"), net::Endpoint::parse("127.0.0.1:0"));
    port = l.port();
  }
  const std::string head = "127.0.0.1:" + std::to_string(port);
  Cluster listed(1, dir_, secret_);
  ASSERT_TRUE(listed.ok());
  WorkerProcess a({"--secret-file", secret_}, dir_, head), b({"--secret-file", secret_}, dir_, head);
  for (int run = 0; run < 2; ++run) {  // the dial-in workers rejoin for the next run
    SCOPED_TRACE(run);
    const auto remote = run_stories(model, {"--workers", listed.addrs(), "--accept", head, "--accept-count",
                                            "2", "--secret-file", secret_, "--split", "0:2,2:3,3:5"});
    EXPECT_EQ(remote.first, local.first);
    EXPECT_TRUE(remote.second == local.second);
  }
  EXPECT_NE(a.log().find("joined the head at " + head), std::string::npos) << a.log();
}

// Workers that do not have the model file (an empty --model-dir), or have another file
// under its name, get the tensors they need streamed by the head.
TEST_F(ClusterTest, ModelStreamedToWorkersWithoutIt) {
  BRAID_REQUIRE_ASSET(model, kStories);
  BRAID_REQUIRE_ASSET(other, "vocab/ggml-vocab-llama-spm.gguf");
  const auto local = run_stories(model, {});
  const std::string empty = dir_ + "/no-models", wrong = dir_ + "/wrong-models";
  std::filesystem::create_directories(empty);
  std::filesystem::create_directories(wrong);
  std::filesystem::copy_file(other, wrong + "/stories260K.gguf");
  WorkerProcess a({"--secret-file", secret_, "--model-dir", empty}, dir_),
      b({"--secret-file", secret_, "--model-dir", wrong}, dir_);
  ASSERT_TRUE(a.ok() && b.ok());
  const std::string ws = a.addr() + "," + b.addr();
  for (const auto& flags : {std::vector<std::string>{"--split", "0:2,2:5"},
                            std::vector<std::string>{"--head-layers", "1"}}) {  // the planner: profiles too
    const auto remote =
        run_stories(model, flags + std::vector<std::string>{"--workers", ws, "--secret-file", secret_});
    EXPECT_EQ(remote.first, local.first);
    EXPECT_TRUE(remote.second == local.second);
  }
  EXPECT_NE(a.log().find("not found on worker"), std::string::npos) << a.log();
  EXPECT_NE(a.log().find("receiving the model from the head"), std::string::npos) << a.log();
  EXPECT_NE(b.log().find("cannot be used"), std::string::npos) << b.log();
}

// ---- Membership. ----

TEST_F(ClusterTest, WrongSecretIsRefused) {
  BRAID_REQUIRE_ASSET(model, kStories);
  Cluster c(1, dir_, secret_);
  ASSERT_TRUE(c.ok());
  put(dir_ + "/other", "another cluster's secret");
  test::CommandResult r;
  std::vector<std::string> args = {"run", "-m",        model,     "--prompt-tokens", "1,2,3",        "-n",
                                   "2",   "--workers", c.addrs(), "--secret-file",   dir_ + "/other"};
  r = run_braid(args, "", 30);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("braid: error: worker " + c[0].addr() + " refused us: wrong cluster secret"),
            std::string::npos)
      << r.err;
  const std::string log = c[0].log_with(": wrong cluster secret");
  EXPECT_NE(log.find(": wrong cluster secret"), std::string::npos) << log;
  EXPECT_NE(log.find("refused 127.0.0.1:"), std::string::npos) << log;
}

TEST_F(ClusterTest, CertificateMode) {
  BRAID_REQUIRE_ASSET(model, kStories);
  const std::string certs = dir_ + "/certs";
  auto r = run_braid({"keygen", "--dir", certs, "head", "w1", "w2"}, "", 30);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto dev = [&](const std::string& n) {
    return std::vector<std::string>{"--ca",  certs + "/ca.crt",       "--cert", certs + "/" + n + ".crt",
                                    "--key", certs + "/" + n + ".key"};
  };
  const auto local = run_stories(model, {});
  WorkerProcess w1(dev("w1"), dir_), w2(dev("w2"), dir_);
  ASSERT_TRUE(w1.ok() && w2.ok());
  const auto remote = run_stories(
      model,
      std::vector<std::string>{"--workers", w1.addr() + "," + w2.addr(), "--split", "0:3,3:5"} + dev("head"));
  EXPECT_EQ(remote.first, local.first);
  EXPECT_TRUE(remote.second == local.second);
  // A device of another cluster (its own CA) is refused.
  const std::string other = dir_ + "/other";
  ASSERT_EQ(run_braid({"keygen", "--dir", other, "mallory"}, "", 30).exit_code, 0);
  test::CommandResult bad =
      run_braid({"run", "-m", model, "--prompt-tokens", "1,2", "-n", "1", "--workers", w1.addr(), "--ca",
                 other + "/ca.crt", "--cert", other + "/mallory.crt", "--key", other + "/mallory.key"},
                "", 30);
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("cannot connect to worker " + w1.addr() + ": TLS handshake failed"),
            std::string::npos)
      << bad.err;
}

// ---- Hostile input: the worker drops it and keeps serving. ----

// Plain TCP to the worker port, bytes, then close.
void raw_tcp(int port, const std::string& bytes) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0) {
    if (write(fd, bytes.data(), bytes.size()) < 0) {
    }
    char buf[256];
    timeval tv{2, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    while (read(fd, buf, sizeof buf) > 0) {
    }
  }
  close(fd);
}

// An authenticated client (right secret) that sends `bytes` as its first frame.
void tls_junk(const std::string& secret_file, const std::string& addr, const std::string& bytes,
              bool then_close) {
  auto conn = net::Connection::dial(net::Tls::from_secret_file(secret_file), net::Endpoint::parse(addr), 5s);
  conn->write(bytes.data(), bytes.size(), 5s);
  if (then_close) {
    conn->close();
    return;
  }
  char b;
  try {
    conn->read(&b, 1, 5s);  // the worker hangs up
  } catch (const Error&) {
  }
}

TEST_F(ClusterTest, JunkIsRefusedAndTheWorkerGoesOn) {
  BRAID_REQUIRE_ASSET(model, kStories);
  const auto local = run_stories(model, {});
  Cluster c(2, dir_, secret_);
  ASSERT_TRUE(c.ok());
  // Not TLS at all.
  raw_tcp(c[0].port(), "GET / HTTP/1.0\r\n\r\n");
  raw_tcp(c[0].port(), std::string(100000, '\0'));
  // TLS with the right secret, then frames that are wrong in every way.
  auto bytes = [](const std::vector<uint8_t>& v) { return std::string(v.begin(), v.end()); };
  const std::string hello = bytes(proto::encode(dist::make_hello(proto::Role::kHead, "tester")));
  const std::string good = hello + bytes(dist::encode_link(dist::Link{dist::LinkKind::kControl, 0}));
  std::string bad_magic = hello;
  bad_magic[0] = 'X';
  std::string bad_version = hello;
  bad_version[4] = 9;
  std::string bad_type = hello;
  bad_type[6] = 77;
  std::string oversized = hello;
  oversized[24] = oversized[25] = oversized[26] = oversized[27] = '\xff';
  std::string truncated = hello;
  truncated.resize(truncated.size() - 3);
  tls_junk(secret_, c[0].addr(), bad_magic, false);
  tls_junk(secret_, c[0].addr(), bad_version, false);
  tls_junk(secret_, c[0].addr(), bad_type, false);
  tls_junk(secret_, c[0].addr(), oversized, false);
  tls_junk(secret_, c[0].addr(), truncated, true);
  tls_junk(secret_, c[0].addr(), std::string(5000, 'z'), false);
  // A valid control link, then garbage after it: the session ends, the worker stays.
  tls_junk(secret_, c[0].addr(), good + "garbage-garbage-garbage-garbage", false);

  EXPECT_TRUE(c[0].alive());
  const auto remote = run_stories(model, ring_flags(c) + std::vector<std::string>{"--split", "0:2,2:5"});
  EXPECT_EQ(remote.first, local.first);
  EXPECT_TRUE(remote.second == local.second);
  for (const char* want : {"TLS handshake failed", "not a braid frame", "protocol version 9",
                           "unknown frame type 77", "exceeds the limit", "closed the connection"}) {
    const std::string log = c[0].log_with(want);
    EXPECT_NE(log.find(want), std::string::npos) << log;
  }
}

// ---- Failures end in bounded time with a clear message. ----

TEST_F(ClusterTest, UnreachableWorker) {
  BRAID_REQUIRE_ASSET(model, kStories);
  int port;
  {
    net::Listener l(net::Tls::from_secret("x"), net::Endpoint::parse("127.0.0.1:0"));
    port = l.port();
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto r = run_braid({"run", "-m", model, "--prompt-tokens", "1,2", "-n", "1", "--workers",
                      "127.0.0.1:" + std::to_string(port), "--secret-file", secret_},
                     "", 30);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("braid: error: cannot connect to worker 127.0.0.1:" + std::to_string(port) +
                       ": connection refused"),
            std::string::npos)
      << r.err;
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 10s);
}

// A worker that dies (SIGKILL) or hangs (SIGSTOP) between two tokens: the ring
// recovers on the survivor (heartbeats find the hung one within failure_timeout) and the
// next token's logits are those of one device. (Before failure recovery, these were
// errors; tests/integration/test_cluster_recovery.cpp covers recovery in depth.)
TEST_F(ClusterTest, LostAndStuckWorkersAreSurvived) {
  BRAID_REQUIRE_ASSET(model, kStories);
  auto m = Model::load(model);
  ThreadPool pool(1);
  const int32_t toks[4] = {1, 403, 40, 13};
  std::vector<float> want(512), want0(512);
  {
    LocalForward local(m, 64, pool);
    local.forward(toks, 3, 0, false, want0.data());
    local.forward(toks + 3, 1, 3, false, want.data());
  }
  for (const bool stuck : {false, true}) {
    SCOPED_TRACE(stuck ? "stuck" : "killed");
    Cluster c(2, dir_, secret_);
    ASSERT_TRUE(c.ok());
    dist::HeadOptions o;
    o.workers = {net::Endpoint::parse(c[0].addr()), net::Endpoint::parse(c[1].addr())};
    o.n_ctx = 64;
    o.split = {{0, 2}, {2, 5}};
    o.failure_timeout = 1500ms;
    o.heartbeat_interval = 250ms;
    auto logs = std::make_shared<std::vector<std::string>>();
    auto mu = std::make_shared<std::mutex>();
    o.log = [logs, mu](const std::string& l) {
      std::lock_guard<std::mutex> lock(*mu);
      logs->push_back(l);
    };
    auto ring = dist::Ring::start(m, model, net::Tls::from_secret_file(secret_), o);
    auto fwd = ring->open_sequence();
    std::vector<float> logits(512);
    fwd->forward(toks, 3, 0, false, logits.data());
    EXPECT_EQ(logits, want0);
    if (stuck) {
      kill(c[1].pid(), SIGSTOP);
      int st = 0;
      waitpid(c[1].pid(), &st, WUNTRACED);  // stopped for sure before the next token
    } else {
      kill(c[1].pid(), SIGKILL);
      waitpid(c[1].pid(), nullptr, 0);
    }
    const auto t0 = std::chrono::steady_clock::now();
    fwd->forward(toks + 3, 1, 3, false, logits.data());
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
    EXPECT_TRUE(std::memcmp(logits.data(), want.data(), want.size() * sizeof(float)) == 0);
    EXPECT_NE(ring->describe().find(c[0].addr() + " [0, 5)"), std::string::npos) << ring->describe();
    {
      std::lock_guard<std::mutex> lock(*mu);
      std::string all;
      for (const auto& l : *logs) all += l + "\n";
      EXPECT_NE(all.find("worker " + c[1].addr() + " (layers [2, 5)) lost ("), std::string::npos) << all;
      EXPECT_NE(all.find("recovered in"), std::string::npos) << all;
    }
    if (stuck) kill(c[1].pid(), SIGCONT);
    fwd.reset();
    ring.reset();
  }
}

// With nobody left to run the layers, the caller gets one clear line, in bounded time.
TEST_F(ClusterTest, LostOnlyWorkerGivesError) {
  BRAID_REQUIRE_ASSET(model, kStories);
  auto m = Model::load(model);
  Cluster c(1, dir_, secret_);
  ASSERT_TRUE(c.ok());
  dist::HeadOptions o;
  o.workers = {net::Endpoint::parse(c[0].addr())};
  o.n_ctx = 64;
  o.failure_timeout = 1s;
  o.log = [](const std::string&) {};
  auto ring = dist::Ring::start(m, model, net::Tls::from_secret_file(secret_), o);
  auto fwd = ring->open_sequence();
  std::vector<float> logits(512);
  const int32_t toks[3] = {1, 403, 40};
  fwd->forward(toks, 3, 0, false, logits.data());
  kill(c[0].pid(), SIGKILL);
  waitpid(c[0].pid(), nullptr, 0);
  const auto t0 = std::chrono::steady_clock::now();
  try {
    fwd->forward(toks, 1, 3, false, logits.data());
    ADD_FAILURE() << "forward went on without a worker";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("worker " + c[0].addr() + " (layers [0, 5)) lost ("), std::string::npos) << msg;
    EXPECT_NE(msg.find("no worker is left"), std::string::npos) << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 4s);
  // Later calls fail the same way, at once.
  EXPECT_THROW(fwd->forward(toks, 1, 3, false, logits.data()), Error);
}

// ---- `braid cluster --local`. ----

TEST_F(ClusterTest, LocalClusterCommand) {
  BRAID_REQUIRE_ASSET(model, kStories);
  const auto local = run_stories(model, {});
  const std::string ids = dir_ + "/cluster.ids", logits = dir_ + "/cluster.f32";
  auto r = run_braid({"cluster",
                      "--local",
                      "3",
                      "--profile",
                      "fast,slow,fast",
                      "-m",
                      model,
                      "--prompt-tokens",
                      "1,403,40,13,72",
                      "-n",
                      "24",
                      "--temp",
                      "0",
                      "-t",
                      "1",
                      "--ids-out",
                      ids,
                      "--logits-out",
                      logits,
                      "--split",
                      "0:1,1:3,3:5"},
                     "", 60);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(slurp(ids), local.first);
  EXPECT_TRUE(slurp(logits) == local.second);
  EXPECT_NE(r.err.find("slowdown 4"), std::string::npos) << r.err;
  // The workers are gone and so is the secret.
  EXPECT_NE(r.err.find("stopped"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace braid
