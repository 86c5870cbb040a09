// Finite-difference checks of every training kernel's backward, on small random shapes
// (sizes that are not multiples of the 8-lane and 4-row blocks, so tails run too), and
// of whole-model gradients. Each forward is also checked against a plain double
// reference, so a wrong forward cannot hide behind a backward that matches it.
//
// The objective is L = sum(R * f(x)) for a fixed random R, so dL/dout = R; central
// differences on the f32 kernels use a step of 1e-2 and are compared as a whole vector:
// ||numeric - analytic|| / ||analytic|| (f32 rounding gives ~1e-4, a wrong term ~1).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

#include "braid/train.h"
#include "braid/tune_rng.h"
#include "tune/kernels.h"

namespace braid::tune {
namespace {

std::vector<float> randn(Rng& rng, size_t n, double scale = 1.0) {
  std::vector<float> v(n);
  for (auto& x : v) x = static_cast<float>(rng.normal() * scale);
  return v;
}

double dot(const std::vector<float>& a, const std::vector<float>& r) {
  double s = 0;
  for (size_t i = 0; i < a.size(); ++i) s += double(a[i]) * r[i];
  return s;
}

// Checks `analytic` against central differences of objective() with respect to x.
void expect_fd(std::vector<float>& x, const std::vector<float>& analytic,
               const std::function<double()>& objective, const std::string& what, double step = 1e-2,
               double tol = 2e-3) {
  ASSERT_EQ(x.size(), analytic.size()) << what;
  double num2 = 0, diff2 = 0, ana2 = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const float save = x[i];
    const float up = save + float(step), down = save - float(step);
    x[i] = up;
    const double lu = objective();
    x[i] = down;
    const double ld = objective();
    x[i] = save;
    const double num = (lu - ld) / (double(up) - double(down));
    num2 += num * num;
    ana2 += double(analytic[i]) * analytic[i];
    diff2 += (num - analytic[i]) * (num - analytic[i]);
  }
  ASSERT_GT(ana2, 1e-12) << what << ": the gradient is zero, the check would be vacuous";
  EXPECT_LT(std::sqrt(diff2 / ana2), tol)
      << what << ": |numeric| " << std::sqrt(num2) << ", |analytic| " << std::sqrt(ana2);
}

void expect_close(const std::vector<float>& got, const std::vector<double>& want, double tol,
                  const std::string& what) {
  ASSERT_EQ(got.size(), want.size());
  for (size_t i = 0; i < got.size(); ++i)
    ASSERT_NEAR(got[i], want[i], tol * (1 + std::fabs(want[i]))) << what << "[" << i << "]";
}

class TuneKernelGrad : public ::testing::Test {
 protected:
  Rng rng{1234};
  ThreadPool pool{1};
};

TEST_F(TuneKernelGrad, Matmul) {
  for (int64_t n : {3, 9}) {
    const int64_t in = 13, out = 7;
    auto x = randn(rng, n * in), w = randn(rng, out * in), b = randn(rng, out);
    auto r = randn(rng, n * out);
    std::vector<float> y(n * out);
    auto f = [&] {
      matmul_forward(pool, y.data(), x.data(), w.data(), b.data(), n, in, out);
      return dot(y, r);
    };
    f();
    std::vector<double> ref(n * out);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t o = 0; o < out; ++o) {
        double s = b[o];
        for (int64_t k = 0; k < in; ++k) s += double(x[i * in + k]) * w[o * in + k];
        ref[i * out + o] = s;
      }
    expect_close(y, ref, 1e-5, "matmul forward");
    std::vector<float> dx(x.size()), dw(w.size()), db(b.size());
    matmul_backward(pool, dx.data(), dw.data(), db.data(), r.data(), x.data(), w.data(), n, in, out);
    expect_fd(x, dx, f, "matmul dx");
    expect_fd(w, dw, f, "matmul dw");
    expect_fd(b, db, f, "matmul db");
    // Backward adds: a second call doubles every gradient.
    auto dw1 = dw;
    matmul_backward(pool, nullptr, dw.data(), nullptr, r.data(), x.data(), w.data(), n, in, out);
    for (size_t i = 0; i < dw.size(); ++i) ASSERT_NEAR(dw[i], 2 * dw1[i], 1e-5 * (1 + std::fabs(dw1[i])));
  }
}

TEST_F(TuneKernelGrad, MatmulThreadsAgreeBitwise) {
  ThreadPool three(3);
  const int64_t n = 37, in = 70, out = 45;  // big enough to run in parallel
  auto x = randn(rng, n * in), w = randn(rng, out * in), g = randn(rng, n * out);
  std::vector<float> y1(n * out), y3(n * out), dx1(n * in), dx3(n * in), dw1(out * in), dw3(out * in);
  matmul_forward(pool, y1.data(), x.data(), w.data(), nullptr, n, in, out);
  matmul_forward(three, y3.data(), x.data(), w.data(), nullptr, n, in, out);
  matmul_backward(pool, dx1.data(), dw1.data(), nullptr, g.data(), x.data(), w.data(), n, in, out);
  matmul_backward(three, dx3.data(), dw3.data(), nullptr, g.data(), x.data(), w.data(), n, in, out);
  EXPECT_EQ(y1, y3);
  EXPECT_EQ(dx1, dx3);
  EXPECT_EQ(dw1, dw3);
}

TEST_F(TuneKernelGrad, RmsNorm) {
  const int64_t n = 4, c = 11;
  auto x = randn(rng, n * c), w = randn(rng, c), r = randn(rng, n * c);
  std::vector<float> y(n * c), rstd(n);
  auto f = [&] {
    rmsnorm_forward(pool, y.data(), rstd.data(), x.data(), w.data(), n, c, 1e-5f);
    return dot(y, r);
  };
  f();
  std::vector<double> ref(n * c);
  for (int64_t i = 0; i < n; ++i) {
    double ss = 0;
    for (int64_t k = 0; k < c; ++k) ss += double(x[i * c + k]) * x[i * c + k];
    const double s = 1 / std::sqrt(ss / c + 1e-5);
    for (int64_t k = 0; k < c; ++k) ref[i * c + k] = x[i * c + k] * s * w[k];
  }
  expect_close(y, ref, 1e-5, "rmsnorm forward");
  std::vector<float> dx(x.size()), dw(w.size());
  rmsnorm_backward(pool, dx.data(), dw.data(), r.data(), x.data(), w.data(), rstd.data(), n, c);
  expect_fd(x, dx, f, "rmsnorm dx");
  expect_fd(w, dw, f, "rmsnorm dw");
}

TEST_F(TuneKernelGrad, LayerNorm) {
  const int64_t n = 4, c = 11;
  auto x = randn(rng, n * c), w = randn(rng, c), b = randn(rng, c), r = randn(rng, n * c);
  std::vector<float> y(n * c), mean(n), rstd(n);
  auto f = [&] {
    layernorm_forward(pool, y.data(), mean.data(), rstd.data(), x.data(), w.data(), b.data(), n, c, 1e-5f);
    return dot(y, r);
  };
  f();
  std::vector<double> ref(n * c);
  for (int64_t i = 0; i < n; ++i) {
    double mu = 0, var = 0;
    for (int64_t k = 0; k < c; ++k) mu += x[i * c + k];
    mu /= c;
    for (int64_t k = 0; k < c; ++k) var += (x[i * c + k] - mu) * (x[i * c + k] - mu);
    const double s = 1 / std::sqrt(var / c + 1e-5);
    for (int64_t k = 0; k < c; ++k) ref[i * c + k] = (x[i * c + k] - mu) * s * w[k] + b[k];
  }
  expect_close(y, ref, 1e-5, "layernorm forward");
  std::vector<float> dx(x.size()), dw(w.size()), db(b.size());
  layernorm_backward(pool, dx.data(), dw.data(), db.data(), r.data(), x.data(), w.data(), mean.data(),
                     rstd.data(), n, c);
  expect_fd(x, dx, f, "layernorm dx");
  expect_fd(w, dw, f, "layernorm dw");
  expect_fd(b, db, f, "layernorm db");
}

TEST_F(TuneKernelGrad, Rope) {
  const int B = 2, T = 5, H = 3, hd = 6;
  const int64_t stride = H * hd + 4;  // extra columns the kernel must leave alone
  const RopeTable table(T, hd, 10000.0);
  auto x = randn(rng, B * T * stride), r = randn(rng, B * T * stride);
  std::vector<float> y;
  auto f = [&] {
    y = x;
    rope_forward(pool, y.data(), B * T, T, H, hd, stride, table);
    return dot(y, r);
  };
  f();
  std::vector<double> ref(x.begin(), x.end());
  for (int row = 0; row < B * T; ++row) {
    const int pos = row % T;
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < hd / 2; ++i) {
        const double ang = pos * std::pow(10000.0, -2.0 * i / hd);
        const double a = x[row * stride + h * hd + i], b = x[row * stride + h * hd + i + hd / 2];
        ref[row * stride + h * hd + i] = a * std::cos(ang) - b * std::sin(ang);
        ref[row * stride + h * hd + i + hd / 2] = b * std::cos(ang) + a * std::sin(ang);
      }
  }
  expect_close(y, ref, 1e-5, "rope forward");
  std::vector<float> dx = r;  // backward is in place on the gradient
  rope_backward(pool, dx.data(), B * T, T, H, hd, stride, table);
  expect_fd(x, dx, f, "rope dx");
}

// Plain double attention for the forward check.
std::vector<double> attention_ref(const std::vector<float>& qkv, const AttnShape& s) {
  const int T = s.seq, H = s.n_head, KV = s.n_kv_head, hd = s.head_dim;
  const int64_t qd = s.qkv_dim();
  std::vector<double> out(size_t(s.batch) * T * H * hd, 0.0);
  for (int b = 0; b < s.batch; ++b)
    for (int h = 0; h < H; ++h) {
      const int kvh = h / (H / KV);
      for (int t = 0; t < T; ++t) {
        std::vector<double> p(t + 1);
        double mx = -1e300, sum = 0;
        for (int j = 0; j <= t; ++j) {
          double d = 0;
          for (int i = 0; i < hd; ++i)
            d += double(qkv[(b * T + t) * qd + h * hd + i]) * qkv[(b * T + j) * qd + (H + kvh) * hd + i];
          p[j] = d / std::sqrt(double(hd));
          mx = std::max(mx, p[j]);
        }
        for (auto& v : p) sum += (v = std::exp(v - mx));
        for (int j = 0; j <= t; ++j)
          for (int i = 0; i < hd; ++i)
            out[((b * T + t) * H + h) * hd + i] +=
                p[j] / sum * qkv[(b * T + j) * qd + (H + KV + kvh) * hd + i];
      }
    }
  return out;
}

TEST_F(TuneKernelGrad, AttentionCausalGqaAndMha) {
  for (int kv : {2, 4, 1}) {
    const AttnShape s{2, 5, 4, kv, 3};
    auto qkv = randn(rng, s.batch * s.seq * s.qkv_dim());
    auto r = randn(rng, s.batch * s.seq * s.out_dim());
    std::vector<float> out(r.size()), lse(s.batch * s.n_head * s.seq);
    auto f = [&] {
      attention_forward(pool, out.data(), lse.data(), qkv.data(), s);
      return dot(out, r);
    };
    f();
    expect_close(out, attention_ref(qkv, s), 1e-5, "attention forward");
    std::vector<float> dqkv(qkv.size());
    attention_backward(pool, dqkv.data(), r.data(), out.data(), lse.data(), qkv.data(), s);
    expect_fd(qkv, dqkv, f, "attention dqkv, kv heads " + std::to_string(kv));
  }
}

TEST_F(TuneKernelGrad, CausalityHoldsInTheGradient) {
  // The loss on position 0 alone must not reach any later position's q, k or v.
  const AttnShape s{1, 4, 2, 1, 4};
  auto qkv = randn(rng, s.seq * s.qkv_dim());
  std::vector<float> out(s.seq * s.out_dim()), lse(s.n_head * s.seq), g(out.size(), 0.0f);
  for (int i = 0; i < s.out_dim(); ++i) g[i] = 1.0f;
  attention_forward(pool, out.data(), lse.data(), qkv.data(), s);
  std::vector<float> dqkv(qkv.size());
  attention_backward(pool, dqkv.data(), g.data(), out.data(), lse.data(), qkv.data(), s);
  for (int64_t i = s.qkv_dim(); i < int64_t(dqkv.size()); ++i) ASSERT_EQ(dqkv[i], 0.0f) << i;
}

TEST_F(TuneKernelGrad, SiluMul) {
  const int64_t n = 3, f = 10;
  auto gu = randn(rng, n * 2 * f, 2.0), r = randn(rng, n * f);
  std::vector<float> y(n * f);
  auto obj = [&] {
    silu_mul_forward(pool, y.data(), gu.data(), n, f);
    return dot(y, r);
  };
  obj();
  std::vector<double> ref(n * f);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < f; ++j) {
      const double g = gu[i * 2 * f + j], u = gu[i * 2 * f + f + j];
      ref[i * f + j] = g / (1 + std::exp(-g)) * u;
    }
  expect_close(y, ref, 1e-5, "silu_mul forward");
  std::vector<float> dgu(gu.size());
  silu_mul_backward(pool, dgu.data(), r.data(), gu.data(), n, f);
  expect_fd(gu, dgu, obj, "silu_mul dgu");
}

TEST_F(TuneKernelGrad, Gelu) {
  auto x = randn(rng, 40, 2.0), r = randn(rng, 40);
  std::vector<float> y(40);
  auto f = [&] {
    gelu_forward(pool, y.data(), x.data(), 40);
    return dot(y, r);
  };
  f();
  std::vector<double> ref(40);
  for (int i = 0; i < 40; ++i) {
    const double v = x[i];
    ref[i] = 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
  }
  expect_close(y, ref, 1e-5, "gelu forward");
  std::vector<float> dx(40);
  gelu_backward(pool, dx.data(), r.data(), x.data(), 40);
  expect_fd(x, dx, f, "gelu dx");
}

TEST_F(TuneKernelGrad, Embedding) {
  const int64_t n = 8, c = 5, vocab = 6;
  const int T = 4;
  const std::vector<int32_t> ids = {1, 3, 1, 5, 0, 3, 3, 2};  // repeats must add up
  auto wte = randn(rng, vocab * c), wpe = randn(rng, T * c), r = randn(rng, n * c);
  std::vector<float> y(n * c);
  auto f = [&] {
    embedding_forward(pool, y.data(), ids.data(), wte.data(), wpe.data(), n, T, c);
    return dot(y, r);
  };
  f();
  for (int64_t i = 0; i < n; ++i)
    for (int64_t k = 0; k < c; ++k) ASSERT_EQ(y[i * c + k], wte[ids[i] * c + k] + wpe[(i % T) * c + k]);
  std::vector<float> dwte(wte.size()), dwpe(wpe.size());
  embedding_backward(pool, dwte.data(), dwpe.data(), r.data(), ids.data(), n, T, c);
  expect_fd(wte, dwte, f, "embedding dwte");
  expect_fd(wpe, dwpe, f, "embedding dwpe");
  for (int64_t k = 0; k < c; ++k) ASSERT_EQ(dwte[4 * c + k], 0.0f);  // token 4 never appears
}

TEST_F(TuneKernelGrad, CrossEntropy) {
  const int64_t n = 5, v = 9;
  auto logits = randn(rng, n * v, 3.0);
  const std::vector<int32_t> targets = {2, kIgnore, 0, 8, 8};
  const float scale = 0.37f;
  auto f = [&] { return scale * cross_entropy_forward(pool, logits.data(), targets.data(), n, v, nullptr); };
  int64_t count = 0;
  const double sum = cross_entropy_forward(pool, logits.data(), targets.data(), n, v, &count);
  EXPECT_EQ(count, 4);
  double ref = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (targets[i] < 0) continue;
    double s = 0;
    for (int64_t j = 0; j < v; ++j) s += std::exp(double(logits[i * v + j]));
    ref += std::log(s) - logits[i * v + targets[i]];
  }
  EXPECT_NEAR(sum, ref, 1e-9 * std::fabs(ref) + 1e-9);
  std::vector<float> dl(logits.size());
  cross_entropy_backward(pool, dl.data(), logits.data(), targets.data(), n, v, scale);
  expect_fd(logits, dl, f, "cross-entropy dlogits");
  for (int64_t j = 0; j < v; ++j) ASSERT_EQ(dl[1 * v + j], 0.0f);  // the ignored row
  // The fused form gives the same loss and overwrites the logits with the same gradient.
  auto fused = logits;
  int64_t fused_count = 0;
  EXPECT_EQ(cross_entropy_fused(pool, fused.data(), targets.data(), n, v, scale, &fused_count), sum);
  EXPECT_EQ(fused_count, 4);
  for (size_t i = 0; i < dl.size(); ++i) ASSERT_NEAR(fused[i], dl[i], 1e-7);
}

// --- whole models: analytic gradients of the mean loss against finite differences ---

void check_model(const ModelConfig& c, bool with_mask) {
  TrainModel m = TrainModel::random(c, 21, 0.3f);
  Rng rng(5);
  const int B = 2, T = 6;
  std::vector<int32_t> tokens(B * T);
  for (auto& t : tokens) t = int32_t(rng.below(uint64_t(c.vocab)));
  std::vector<uint8_t> mask(tokens.size(), 1);
  if (with_mask) mask[0] = mask[1] = mask[T + 4] = 0;
  const Batch batch = Batch::causal_lm(tokens, B, T, mask);
  TrainPass pass(c, B, T);
  pass.forward_backward(m, batch);
  const std::vector<float> grads = m.grads();
  // A few elements of every tensor (all of the small ones).
  for (const ParamTensor& t : m.tensors()) {
    // Up to 6 distinct elements; of wpe only the first T positions are used.
    const size_t span = t.name.find("wpe") != std::string::npos ? size_t(T) * c.dim : t.size;
    std::vector<size_t> idx;
    while (idx.size() < std::min<size_t>(span, 6)) {
      const size_t i = t.offset + rng.below(span);
      if (std::find(idx.begin(), idx.end(), i) == idx.end()) idx.push_back(i);
    }
    std::vector<float> x(idx.size()), ana(idx.size());
    for (size_t k = 0; k < idx.size(); ++k) {
      x[k] = m.params()[idx[k]];
      ana[k] = grads[idx[k]];
    }
    auto f = [&] {
      for (size_t k = 0; k < idx.size(); ++k) m.params()[idx[k]] = x[k];
      return double(pass.forward(m, batch));
    };
    double ana2 = 0;
    for (float g : ana) ana2 += double(g) * g;
    if (ana2 < 1e-14) continue;  // e.g. rows of tokens absent from the batch
    expect_fd(x, ana, f, t.name, 1e-2, 1e-2);
    f();
  }
}

ModelConfig small(Arch arch, bool tied) {
  ModelConfig c;
  c.arch = arch;
  c.n_layer = 2;
  c.dim = 12;
  c.n_head = arch == Arch::kLlama ? 4 : 3;
  c.n_kv_head = arch == Arch::kLlama ? 2 : 3;
  c.head_dim = 4;
  c.ffn_dim = 20;
  c.vocab = 17;
  c.max_seq = 8;
  c.tied_head = tied;
  return c;
}

TEST(TuneModelGrad, Llama) { check_model(small(Arch::kLlama, false), false); }
TEST(TuneModelGrad, LlamaTiedWithLossMask) { check_model(small(Arch::kLlama, true), true); }
TEST(TuneModelGrad, Gpt2) { check_model(small(Arch::kGpt2, true), false); }
TEST(TuneModelGrad, Gpt2UntiedWithLossMask) { check_model(small(Arch::kGpt2, false), true); }

}  // namespace
}  // namespace braid::tune
