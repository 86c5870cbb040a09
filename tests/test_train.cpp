// Training against transformers: loss, logits, every parameter's gradient and six
// AdamW steps for hf/llama-tiny-train and hf/gpt2-tiny-train; then the properties the
// training loop relies on (recompute, threads, accumulation, loss masks, checkpoints).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>

#include "braid/error.h"
#include "braid/mapped_file.h"
#include "braid/safetensors.h"
#include "braid/train.h"
#include "braid/tune_optim.h"
#include "braid/tune_trainer.h"
#include "test_util.h"

namespace braid::tune {
namespace {

struct Reference {
  std::unique_ptr<SafetensorsFile> file;
  nlohmann::json json;
  std::vector<int32_t> input_ids;
  int B = 0, T = 0;

  std::vector<float> f32(const std::string& name) const { return st_to_f32(file->get(name)); }
};

Reference load_reference(const std::string& dir) {
  Reference r;
  r.file = SafetensorsFile::open(dir + "/reference.safetensors");
  r.json = nlohmann::json::parse(read_file(dir + "/reference.json"));
  const StTensor& ids = r.file->get("input_ids");
  EXPECT_EQ(ids.shape.size(), 2u);
  r.B = int(ids.shape[0]);
  r.T = int(ids.shape[1]);
  r.input_ids = st_to_i32(ids);
  return r;
}

// |a - b| within 1e-4 relative or 1e-6 absolute, element by element.
void expect_grad_near(const std::vector<float>& got, const std::vector<float>& want,
                      const std::string& name) {
  ASSERT_EQ(got.size(), want.size()) << name;
  int bad = 0;
  double worst = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(double(got[i]) - want[i]);
    if (err > 1e-6) worst = std::max(worst, err / std::fabs(double(want[i])));
    if (err > 1e-6 && err > 1e-4 * std::fabs(double(want[i]))) {
      if (bad++ < 3) ADD_FAILURE() << name << "[" << i << "]: got " << got[i] << ", transformers " << want[i];
    }
  }
  EXPECT_EQ(bad, 0) << name << ": " << bad << " of " << got.size() << " elements off, worst relative "
                    << worst;
}

// Loss, logits and all gradients for the oracle's batch, then its six AdamW losses.
void check_oracle(const std::string& train_dir, const std::string& base_dir, int threads) {
  const Reference ref = load_reference(train_dir);
  ThreadPool pool(threads);
  TrainModel model = TrainModel::load_hf(base_dir);
  TrainPass pass(model.config(), ref.B, ref.T, &pool);
  const Batch batch = Batch::causal_lm(ref.input_ids, ref.B, ref.T);
  EXPECT_EQ(batch.count_targets(), ref.B * (ref.T - 1));

  const float loss = pass.forward(model, batch);
  EXPECT_NEAR(loss, ref.f32("loss")[0], 1e-4);
  EXPECT_NEAR(loss, ref.json["loss0"].get<double>(), 1e-4);
  const std::vector<float> want_logits = ref.f32("logits");
  ASSERT_EQ(want_logits.size(), size_t(ref.B) * ref.T * model.config().vocab);
  double worst = 0.0;
  for (size_t i = 0; i < want_logits.size(); ++i)
    worst = std::max(worst, std::fabs(double(pass.logits()[i]) - want_logits[i]));
  EXPECT_LT(worst, 1e-4) << "max logit difference";

  model.zero_grads();
  EXPECT_NEAR(pass.forward_backward(model, batch), loss, 1e-6);
  const auto& names = ref.json["parameters"];
  // Every trained parameter has a gradient in the oracle and vice versa (tied once).
  EXPECT_EQ(names.size(), model.tensors().size());
  for (const auto& n : names) {
    const std::string name = n.get<std::string>();
    expect_grad_near(model.grad_hf(name), ref.f32("grad." + name), name);
  }

  // Six full-batch AdamW steps over all parameters (decay everywhere, no clipping).
  TrainerOptions opt;
  opt.adamw = {0.9, 0.999, 1e-8, 0.01};
  opt.schedule = {.peak_lr = 1e-3, .min_lr = 0, .warmup_steps = 0, .total_steps = 0};
  opt.grad_clip = 0;
  opt.decay_all = true;
  Trainer trainer(TrainModel::load_hf(base_dir), opt, &pool);
  const std::vector<float> want = ref.f32("adamw_losses");
  ASSERT_EQ(want.size(), 6u);
  for (size_t k = 0; k < want.size(); ++k) {
    const StepStats s = trainer.step(pass, std::span<const Batch>(&batch, 1));
    EXPECT_NEAR(s.loss, want[k], 1e-4) << "AdamW step " << k;
    EXPECT_EQ(s.step, int64_t(k + 1));
    EXPECT_DOUBLE_EQ(s.lr, 1e-3);
    EXPECT_EQ(s.targets, batch.count_targets());
  }
}

TEST(TuneOracle, LlamaTiny) {
  BRAID_REQUIRE_ASSET(train, "hf/llama-tiny-train");
  BRAID_REQUIRE_ASSET(base, "hf/llama-tiny");
  check_oracle(train, base, 1);
}

TEST(TuneOracle, Gpt2Tiny) {
  BRAID_REQUIRE_ASSET(train, "hf/gpt2-tiny-train");
  BRAID_REQUIRE_ASSET(base, "hf/gpt2-tiny");
  check_oracle(train, base, 1);
}

// --- properties on small random models (no assets needed) ---

ModelConfig tiny_llama() {
  ModelConfig c;
  c.arch = Arch::kLlama;
  c.n_layer = 2;
  c.dim = 32;
  c.n_head = 4;
  c.n_kv_head = 2;
  c.head_dim = 8;
  c.ffn_dim = 48;
  c.vocab = 64;
  c.max_seq = 64;
  c.norm_eps = 1e-5f;
  return c;
}

ModelConfig tiny_gpt2() {
  ModelConfig c;
  c.arch = Arch::kGpt2;
  c.n_layer = 2;
  c.dim = 32;
  c.n_head = 4;
  c.n_kv_head = 4;
  c.head_dim = 8;
  c.ffn_dim = 128;
  c.vocab = 64;
  c.max_seq = 32;
  c.tied_head = true;
  return c;
}

std::vector<int32_t> random_tokens(Rng& rng, size_t n, int vocab) {
  std::vector<int32_t> t(n);
  for (auto& x : t) x = int32_t(rng.below(uint64_t(vocab)));
  return t;
}

std::vector<float> grads_of(const ModelConfig& c, int B, int T, ThreadPool* pool, bool recompute,
                            float* loss_out = nullptr) {
  TrainModel m = TrainModel::random(c, 7, 0.1f);
  Rng rng(3);
  const Batch b = Batch::causal_lm(random_tokens(rng, size_t(B) * T, c.vocab), B, T);
  TrainPass pass(c, B, T, pool, recompute);
  const float loss = pass.forward_backward(m, b);
  if (loss_out) *loss_out = loss;
  return m.grads();
}

TEST(TuneTrainPass, RecomputeAndThreadCountAreBitIdentical) {
  for (const ModelConfig& c : {tiny_llama(), tiny_gpt2()}) {
    ThreadPool one(1), three(3);
    float l0, l1, l2;
    const auto g0 = grads_of(c, 3, 12, &one, false, &l0);
    const auto g1 = grads_of(c, 3, 12, &three, false, &l1);
    const auto g2 = grads_of(c, 3, 12, &three, true, &l2);
    EXPECT_EQ(l0, l1);
    EXPECT_EQ(l0, l2);
    EXPECT_TRUE(g0 == g1) << "1 vs 3 threads";
    EXPECT_TRUE(g0 == g2) << "recompute";
  }
}

TEST(TuneTrainPass, RecomputeUsesLessActivationMemory) {
  const ModelConfig c = tiny_llama();
  TrainPass full(c, 4, 32, nullptr, false), rc(c, 4, 32, nullptr, true);
  EXPECT_LT(rc.activation_bytes(), full.activation_bytes());
}

TEST(TuneTrainPass, GradientAccumulationEqualsFullBatch) {
  const ModelConfig c = tiny_llama();
  const int B = 4, T = 10;
  Rng rng(11);
  const auto tokens = random_tokens(rng, size_t(B) * T, c.vocab);
  // A loss mask makes the rows' target counts differ, so the normaliser matters.
  std::vector<uint8_t> mask(tokens.size(), 1);
  for (int t = 0; t < 6; ++t) mask[t] = 0;
  const Batch full = Batch::causal_lm(tokens, B, T, mask);
  TrainModel a = TrainModel::random(c, 5, 0.1f);
  TrainModel m = a;
  TrainPass pass(c, B, T);
  const float full_loss = pass.forward_backward(a, full);

  double loss_sum = 0;
  const int64_t total = full.count_targets();
  for (int half = 0; half < 2; ++half) {
    const std::span<const int32_t> toks(tokens.data() + half * 2 * T, 2 * T);
    const std::span<const uint8_t> mk(mask.data() + half * 2 * T, 2 * T);
    const Batch micro = Batch::causal_lm(toks, 2, T, mk);
    loss_sum += double(pass.forward_backward(m, micro, double(total))) * micro.count_targets();
  }
  EXPECT_NEAR(loss_sum / double(total), full_loss, 1e-6);
  const double norm = grad_norm(a.grads());
  double diff = 0;
  for (size_t i = 0; i < a.grads().size(); ++i)
    diff = std::max(diff, double(std::fabs(a.grads()[i] - m.grads()[i])));
  EXPECT_GT(norm, 1e-3);
  EXPECT_LT(diff, 1e-6 * std::max(1.0, norm));
}

TEST(TuneTrainPass, LossMaskCountsOnlyMaskedTargets) {
  const ModelConfig c = tiny_gpt2();
  const int B = 2, T = 8;
  Rng rng(2);
  const auto tokens = random_tokens(rng, size_t(B) * T, c.vocab);
  // Row 0: prompt of 3 tokens, completion after; row 1: everything.
  std::vector<uint8_t> mask(tokens.size(), 1);
  mask[0] = mask[1] = mask[2] = 0;
  const Batch b = Batch::causal_lm(tokens, B, T, mask);
  EXPECT_EQ(b.count_targets(), (T - 3) + (T - 1));
  EXPECT_EQ(b.targets[0], kIgnore);
  EXPECT_EQ(b.targets[1], kIgnore);
  EXPECT_EQ(b.targets[2], tokens[3]);
  EXPECT_EQ(b.targets[T - 1], kIgnore);

  const TrainModel m = TrainModel::random(c, 1, 0.2f);
  TrainPass pass(c, B, T);
  const float loss = pass.forward(m, b);
  double sum = 0;
  int count = 0;
  for (int r = 0; r < B * T; ++r) {
    if (b.targets[r] < 0) continue;
    const float* l = pass.logits() + size_t(r) * c.vocab;
    double mx = l[0], s = 0;
    for (int j = 0; j < c.vocab; ++j) mx = std::max(mx, double(l[j]));
    for (int j = 0; j < c.vocab; ++j) s += std::exp(l[j] - mx);
    sum += std::log(s) + mx - l[b.targets[r]];
    ++count;
  }
  EXPECT_NEAR(loss, sum / count, 1e-5);

  // A batch with no targets contributes nothing.
  std::vector<uint8_t> none(tokens.size(), 0);
  TrainModel m2 = m;
  EXPECT_EQ(pass.forward_backward(m2, Batch::causal_lm(tokens, B, T, none)), 0.0f);
  EXPECT_EQ(grad_norm(m2.grads()), 0.0);
}

TEST(TuneTrainPass, RejectsBadBatches) {
  const ModelConfig c = tiny_gpt2();
  TrainModel m = TrainModel::random(c, 1);
  TrainPass pass(c, 2, 8);
  std::vector<int32_t> tokens(16, 1);
  tokens[5] = c.vocab;  // out of range
  EXPECT_THROW(pass.forward(m, Batch::causal_lm(tokens, 2, 8)), Error);
  tokens[5] = -1;
  EXPECT_THROW(pass.forward(m, Batch::causal_lm(tokens, 2, 8)), Error);
  tokens[5] = 3;
  EXPECT_THROW(pass.forward(m, Batch::causal_lm(std::vector<int32_t>(27, 1), 3, 9)), Error);  // too big
  EXPECT_THROW(Batch::causal_lm(tokens, 3, 8), Error);                                        // wrong count
  EXPECT_THROW(TrainPass(c, 1, c.max_seq + 1), Error);  // past the learned positions
  TrainModel other = TrainModel::random(tiny_llama(), 1);
  EXPECT_THROW(pass.forward(other, Batch::causal_lm(tokens, 2, 8)), Error);
}

// --- optimizer pieces ---

TEST(TuneAdamW, MatchesPyTorchFormula) {
  // Two parameters, three steps, computed by hand in double with PyTorch's formula.
  AdamWConfig cfg{0.9, 0.999, 1e-8, 0.1};
  AdamW opt(2, cfg);
  opt.set_no_decay({{1, 2}});
  std::vector<float> p = {0.5f, -0.25f};
  double ref_p[2] = {0.5, -0.25}, m[2] = {0, 0}, v[2] = {0, 0};
  const float grads[3][2] = {{0.1f, -0.2f}, {0.05f, 0.3f}, {-0.4f, 0.01f}};
  const double lr = 0.01;
  for (int t = 1; t <= 3; ++t) {
    opt.step(p, std::span<const float>(grads[t - 1], 2), lr);
    for (int i = 0; i < 2; ++i) {
      const double g = grads[t - 1][i];
      if (i == 0) ref_p[i] *= 1 - lr * cfg.weight_decay;
      m[i] = 0.9 * m[i] + 0.1 * g;
      v[i] = 0.999 * v[i] + 0.001 * g * g;
      const double denom = std::sqrt(v[i]) / std::sqrt(1 - std::pow(0.999, t)) + 1e-8;
      ref_p[i] -= lr / (1 - std::pow(0.9, t)) * m[i] / denom;
      EXPECT_NEAR(p[i], ref_p[i], 1e-6) << "step " << t << " param " << i;
    }
  }
  EXPECT_EQ(opt.steps(), 3);
  std::vector<float> wrong(3);
  EXPECT_THROW(opt.step(wrong, wrong, lr), Error);
}

TEST(TuneOptim, ClipGradNorm) {
  std::vector<float> g = {3.0f, 4.0f};
  EXPECT_DOUBLE_EQ(clip_grad_norm(g, 10.0), 5.0);  // below the limit: unchanged
  EXPECT_EQ(g[0], 3.0f);
  EXPECT_DOUBLE_EQ(clip_grad_norm(g, 1.0), 5.0);
  EXPECT_NEAR(g[0], 0.6f, 1e-6);
  EXPECT_NEAR(g[1], 0.8f, 1e-6);
  // Thread count does not change the norm's bits.
  Rng rng(9);
  std::vector<float> big(100000);
  for (auto& x : big) x = float(rng.normal());
  ThreadPool pool(3);
  EXPECT_EQ(grad_norm(big), grad_norm(big, &pool));
}

TEST(TuneOptim, WarmupCosineSchedule) {
  LrSchedule s{.peak_lr = 1.0, .min_lr = 0.1, .warmup_steps = 4, .total_steps = 14};
  EXPECT_DOUBLE_EQ(s.at(0), 0.25);
  EXPECT_DOUBLE_EQ(s.at(3), 1.0);
  EXPECT_DOUBLE_EQ(s.at(4), 1.0);
  EXPECT_NEAR(s.at(9), 0.55, 1e-12);  // halfway through the cosine
  EXPECT_NEAR(s.at(14), 0.1, 1e-12);
  EXPECT_NEAR(s.at(100), 0.1, 1e-12);
  for (int64_t i = 4; i < 14; ++i) EXPECT_GE(s.at(i), s.at(i + 1));
  LrSchedule constant{.peak_lr = 0.5};
  EXPECT_DOUBLE_EQ(constant.at(0), 0.5);
  EXPECT_DOUBLE_EQ(constant.at(1000), 0.5);
}

TEST(TuneTrainer, SkipsStepsWithNonFiniteGradients) {
  const ModelConfig c = tiny_llama();
  Trainer tr(TrainModel::random(c, 3), TrainerOptions{});
  TrainPass pass(c, 1, 8);
  tr.model().params()[tr.model().layout().lnf_w] = std::numeric_limits<float>::infinity();
  const std::vector<float> before = tr.model().params();
  Rng rng(1);
  const Batch b = Batch::causal_lm(random_tokens(rng, 8, c.vocab), 1, 8);
  const StepStats s = tr.step(pass, std::span<const Batch>(&b, 1));
  EXPECT_TRUE(s.skipped);
  EXPECT_EQ(tr.steps(), 0);
  EXPECT_TRUE(tr.model().params() == before);
}

// --- checkpoints ---

std::vector<Batch> sample_batches(Trainer& tr, int n, int B, int T) {
  std::vector<Batch> out;
  for (int i = 0; i < n; ++i)
    out.push_back(Batch::causal_lm(random_tokens(tr.rng(), size_t(B) * T, tr.model().config().vocab), B, T));
  return out;
}

TEST(TuneCheckpoint, ResumeGivesIdenticalLosses) {
  for (const ModelConfig& c : {tiny_llama(), tiny_gpt2()}) {
    TrainerOptions opt;
    opt.schedule = {.peak_lr = 3e-3, .min_lr = 1e-4, .warmup_steps = 2, .total_steps = 8};
    opt.grad_clip = 0.5;
    opt.decay_all = false;
    opt.seed = 42;
    const int B = 2, T = 12;
    TrainPass pass(c, B, T);
    Trainer tr(TrainModel::random(c, 3), opt);
    tr.metadata() = R"({"data":"x.jsonl"})";
    for (int i = 0; i < 3; ++i) tr.step(pass, sample_batches(tr, 2, B, T));
    const std::string path = test::temp_dir() + "/run.ckpt";
    tr.save(path);
    std::vector<float> after;
    for (int i = 0; i < 4; ++i) after.push_back(tr.step(pass, sample_batches(tr, 2, B, T)).loss);

    Trainer resumed = Trainer::load(path);
    EXPECT_EQ(resumed.steps(), 3);
    EXPECT_EQ(resumed.metadata(), R"({"data":"x.jsonl"})");
    EXPECT_EQ(resumed.options().schedule.total_steps, 8);
    for (int i = 0; i < 4; ++i) {
      const StepStats s = resumed.step(pass, sample_batches(resumed, 2, B, T));
      EXPECT_EQ(s.loss, after[i]) << "step " << s.step;
    }
    EXPECT_TRUE(resumed.model().params() == tr.model().params());
    EXPECT_TRUE(resumed.optimizer().v() == tr.optimizer().v());
  }
}

TEST(TuneCheckpoint, RejectsDamagedFiles) {
  Trainer tr(TrainModel::random(tiny_llama(), 3), TrainerOptions{});
  const std::string dir = test::temp_dir();
  const std::string path = dir + "/a.ckpt";
  tr.save(path);
  std::string bytes = read_file(path);
  auto write = [&](const std::string& name, const std::string& data) {
    std::ofstream(dir + "/" + name, std::ios::binary) << data;
    return dir + "/" + name;
  };
  EXPECT_NO_THROW(Trainer::load(path));
  EXPECT_THROW(Trainer::load(write("trunc", bytes.substr(0, bytes.size() - 100))), Error);
  EXPECT_THROW(Trainer::load(write("short", bytes.substr(0, 10))), Error);
  std::string flipped = bytes;
  flipped[flipped.size() / 2] ^= 0x40;
  EXPECT_THROW(Trainer::load(write("flip", flipped)), Error);
  std::string magic = bytes;
  magic[0] = 'X';
  EXPECT_THROW(Trainer::load(write("magic", magic)), Error);
  EXPECT_THROW(Trainer::load(dir + "/missing"), Error);
}

// --- configs ---

TEST(TuneModelConfig, ParsesAndRejects) {
  BRAID_REQUIRE_ASSET(llama, "hf/llama-tiny/config.json");
  BRAID_REQUIRE_ASSET(gpt2, "hf/gpt2-tiny/config.json");
  const ModelConfig l = ModelConfig::from_hf_json(read_file(llama), "llama");
  EXPECT_EQ(l.arch, Arch::kLlama);
  EXPECT_EQ(l.n_layer, 3);
  EXPECT_EQ(l.n_head, 8);
  EXPECT_EQ(l.n_kv_head, 4);
  EXPECT_EQ(l.head_dim, 8);
  EXPECT_EQ(l.ffn_dim, 172);
  EXPECT_FALSE(l.tied_head);
  EXPECT_DOUBLE_EQ(l.rope_theta, 10000.0);
  const ModelConfig g = ModelConfig::from_hf_json(read_file(gpt2), "gpt2");
  EXPECT_EQ(g.arch, Arch::kGpt2);
  EXPECT_EQ(g.ffn_dim, 256);
  EXPECT_EQ(g.max_seq, 128);
  EXPECT_TRUE(g.tied_head);
  const ModelConfig back = ModelConfig::from_json(l.to_json(), "round trip");
  EXPECT_EQ(back.to_json(), l.to_json());

  auto bad = [](const std::string& json) { return ModelConfig::from_hf_json(json, "cfg"); };
  EXPECT_THROW(bad("not json"), Error);
  EXPECT_THROW(bad(R"({"model_type": "bert"})"), Error);
  const std::string base =
      R"("model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
         "num_attention_heads": 4, "vocab_size": 100)";
  EXPECT_NO_THROW(bad("{" + base + "}"));
  EXPECT_THROW(bad("{" + base + R"(, "rope_scaling": {"rope_type": "yarn", "factor": 4})" + "}"), Error);
  EXPECT_THROW(bad("{" + base + R"(, "attention_bias": true})"), Error);
  EXPECT_THROW(bad("{" + base + R"(, "num_key_value_heads": 3})"), Error);
  EXPECT_THROW(bad("{" + base + R"(, "hidden_act": "gelu"})"), Error);
  EXPECT_THROW(bad(R"({"model_type": "llama", "hidden_size": -4})"), Error);
  EXPECT_THROW(TrainModel::load_hf("/nonexistent/model"), Error);
}

TEST(TuneTrainModel, HfLayoutRoundTrips) {
  TrainModel m = TrainModel::random(tiny_gpt2(), 4);
  const std::string name = "transformer.h.1.attn.c_attn.weight";  // Conv1D [in][out]
  std::vector<float> hf = m.get_hf(name);
  const ParamTensor& t = m.tensor(name);
  ASSERT_TRUE(t.transposed);
  // Element [i][o] in the HF layout is element [o][i] inside.
  EXPECT_EQ(hf[1 * t.shape[1] + 5], m.params()[t.offset + 5 * t.shape[0] + 1]);
  hf[7] = 123.0f;
  m.set_hf(name, hf);
  EXPECT_EQ(m.get_hf(name), hf);
  EXPECT_THROW(m.tensor("nope"), Error);
  EXPECT_THROW(m.set_hf(name, std::vector<float>(3)), Error);
  EXPECT_EQ(m.layout().head, m.layout().wte);  // tied
}

}  // namespace
}  // namespace braid::tune
