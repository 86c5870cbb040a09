// TrainPass: the forward and backward pass of a whole model, as a sequence of the
// kernels in tune/kernels.h over activation buffers sized for the largest batch.
//
// Per layer (Llama / GPT-2):
//   ln1 = norm(in); qkv = ln1 . Wqkv (+b); rope(q, k) [Llama]; att = attention(qkv)
//   res2 = in + att . Wo (+b); ln2 = norm(res2); fc = ln2 . Wfc (+b)
//   act = silu(gate) * up [Llama] | gelu(fc) [GPT-2]; out = res2 + act . Wproj (+b)
// The backward walks the same steps in reverse with one residual-gradient buffer that
// every branch adds into.
#include <algorithm>

#include "braid/error.h"
#include "braid/train.h"
#include "tune/kernels.h"

namespace braid::tune {
namespace {

constexpr size_t npos = ParamLayout::npos;

// A layer's saved activations.
struct LayerActs {
  std::vector<float> ln1, mean1, rstd1, qkv, att, lse, res2, ln2, mean2, rstd2, fc, act;
};

void add_inplace(ThreadPool& pool, float* y, const float* x, int64_t count) {
  parallel_for(pool, count, 1, [&](int64_t begin, int64_t end, int) {
    for (int64_t i = begin; i < end; ++i) y[i] += x[i];
  });
}

void zero(std::vector<float>& v, int64_t count) { std::fill_n(v.begin(), count, 0.0f); }

}  // namespace

struct TrainPass::Impl {
  ModelConfig cfg;
  std::string cfg_json;
  int max_b, max_t;
  ThreadPool* pool;
  std::unique_ptr<ThreadPool> own_pool;
  bool recompute;
  std::unique_ptr<RopeTable> rope;

  // Shapes.
  int64_t C, QD, QKV, F, FC, V;

  // Forward state.
  std::vector<std::vector<float>> resid;  // n_layer + 1 buffers [N][C]: each layer's input
  std::vector<LayerActs> acts;            // n_layer, or 1 with recompute
  std::vector<float> lnf, lnf_mean, lnf_rstd, logits;
  // Backward scratch.
  std::vector<float> dres, dln, dqkv, datt, dfc, dact;
  size_t bytes = 0;

  // Current batch.
  int B = 0, T = 0;
  int64_t N = 0;

  Impl(const ModelConfig& c, int mb, int mt, ThreadPool* p, bool rc)
      : cfg(c), cfg_json(c.to_json()), max_b(mb), max_t(mt), pool(p), recompute(rc) {
    cfg.validate("train pass");
    check(mb > 0 && mt > 0, "train pass: batch size and sequence length must be positive");
    if (cfg.arch == Arch::kGpt2)
      check(mt <= cfg.max_seq, "train pass: sequence length ", mt, " exceeds the model's ", cfg.max_seq,
            " learned positions");
    if (!pool) {
      own_pool = std::make_unique<ThreadPool>(1);
      pool = own_pool.get();
    }
    C = cfg.dim;
    QD = int64_t(cfg.n_head) * cfg.head_dim;
    QKV = int64_t(cfg.n_head + 2 * cfg.n_kv_head) * cfg.head_dim;
    F = cfg.ffn_dim;
    FC = cfg.arch == Arch::kLlama ? 2 * F : F;
    V = cfg.vocab;
    const int64_t n = int64_t(mb) * mt;
    const double widest = double(n) * double(std::max({V, FC, QKV, C}));
    check(widest * (cfg.n_layer + 2) < double(int64_t(1) << 40), "train pass: ", mb, " x ", mt,
          " tokens need too much activation memory");
    if (cfg.arch == Arch::kLlama) rope = std::make_unique<RopeTable>(mt, cfg.head_dim, cfg.rope_theta);

    auto alloc = [&](std::vector<float>& v, int64_t count) {
      v.assign(size_t(count), 0.0f);
      bytes += size_t(count) * sizeof(float);
    };
    resid.resize(cfg.n_layer + 1);
    for (auto& r : resid) alloc(r, n * C);
    acts.resize(recompute ? 1 : cfg.n_layer);
    const bool ln = cfg.arch == Arch::kGpt2;
    for (auto& a : acts) {
      alloc(a.ln1, n * C);
      alloc(a.mean1, ln ? n : 0);
      alloc(a.rstd1, n);
      alloc(a.qkv, n * QKV);
      alloc(a.att, n * QD);
      alloc(a.lse, n * cfg.n_head);
      alloc(a.res2, n * C);
      alloc(a.ln2, n * C);
      alloc(a.mean2, ln ? n : 0);
      alloc(a.rstd2, n);
      alloc(a.fc, n * FC);
      alloc(a.act, n * F);
    }
    alloc(lnf, n * C);
    alloc(lnf_mean, ln ? n : 0);
    alloc(lnf_rstd, n);
    alloc(logits, n * V);
    alloc(dres, n * C);
    alloc(dln, n * C);
    alloc(dqkv, n * QKV);
    alloc(datt, n * QD);
    alloc(dfc, n * FC);
    alloc(dact, n * F);
  }

  AttnShape attn_shape() const { return {B, T, cfg.n_head, cfg.n_kv_head, cfg.head_dim}; }

  void check_batch(const TrainModel& model, const Batch& batch) {
    check(model.config().to_json() == cfg_json, "train pass: the model's shape differs from the pass's");
    check(batch.B > 0 && batch.T > 0, "batch: B and T must be positive");
    check(batch.B <= max_b && batch.T <= max_t, "batch: ", batch.B, " x ", batch.T,
          " is larger than the training pass (", max_b, " x ", max_t, ")");
    const size_t n = size_t(batch.B) * size_t(batch.T);
    check(batch.inputs.size() == n && batch.targets.size() == n, "batch: inputs/targets hold ",
          batch.inputs.size(), "/", batch.targets.size(), " tokens, expected ", n);
    for (size_t i = 0; i < n; ++i) {
      check(batch.inputs[i] >= 0 && batch.inputs[i] < cfg.vocab, "batch: token id ", batch.inputs[i],
            " is outside the vocabulary (", cfg.vocab, ")");
      check(batch.targets[i] < cfg.vocab, "batch: target id ", batch.targets[i],
            " is outside the vocabulary (", cfg.vocab, ")");
    }
    B = batch.B;
    T = batch.T;
    N = int64_t(B) * T;
  }

  void norm_forward(float* out, float* mean, float* rstd, const float* x, const float* P, size_t w,
                    size_t b) {
    if (cfg.arch == Arch::kLlama)
      rmsnorm_forward(*pool, out, rstd, x, P + w, N, C, cfg.norm_eps);
    else
      layernorm_forward(*pool, out, mean, rstd, x, P + w, P + b, N, C, cfg.norm_eps);
  }

  void norm_backward(float* dx, float* G, const float* dout, const float* x, const float* P, size_t w,
                     size_t b, const float* mean, const float* rstd) {
    if (cfg.arch == Arch::kLlama)
      rmsnorm_backward(*pool, dx, G + w, dout, x, P + w, rstd, N, C);
    else
      layernorm_backward(*pool, dx, G + w, G + b, dout, x, P + w, mean, rstd, N, C);
  }

  static const float* at(const float* base, size_t off) { return off == npos ? nullptr : base + off; }
  static float* at(float* base, size_t off) { return off == npos ? nullptr : base + off; }

  void layer_forward(const TrainModel& model, int l, const float* in, LayerActs& A, float* out) {
    const float* P = model.params().data();
    const auto& L = model.layout().layers[l];
    ThreadPool& p = *pool;
    norm_forward(A.ln1.data(), A.mean1.data(), A.rstd1.data(), in, P, L.ln1_w, L.ln1_b);
    matmul_forward(p, A.qkv.data(), A.ln1.data(), P + L.qkv_w, at(P, L.qkv_b), N, C, QKV);
    if (rope) {
      rope_forward(p, A.qkv.data(), N, T, cfg.n_head, cfg.head_dim, QKV, *rope);
      rope_forward(p, A.qkv.data() + QD, N, T, cfg.n_kv_head, cfg.head_dim, QKV, *rope);
    }
    attention_forward(p, A.att.data(), A.lse.data(), A.qkv.data(), attn_shape());
    matmul_forward(p, A.res2.data(), A.att.data(), P + L.o_w, at(P, L.o_b), N, QD, C);
    add_inplace(p, A.res2.data(), in, N * C);
    norm_forward(A.ln2.data(), A.mean2.data(), A.rstd2.data(), A.res2.data(), P, L.ln2_w, L.ln2_b);
    matmul_forward(p, A.fc.data(), A.ln2.data(), P + L.fc_w, at(P, L.fc_b), N, C, FC);
    if (cfg.arch == Arch::kLlama)
      silu_mul_forward(p, A.act.data(), A.fc.data(), N, F);
    else
      gelu_forward(p, A.act.data(), A.fc.data(), N * F);
    matmul_forward(p, out, A.act.data(), P + L.proj_w, at(P, L.proj_b), N, F, C);
    add_inplace(p, out, A.res2.data(), N * C);
  }

  // dres holds d(loss)/d(out) on entry and d(loss)/d(in) on return.
  void layer_backward(TrainModel& model, int l, const float* in, const LayerActs& A) {
    const float* P = model.params().data();
    float* G = model.grads().data();
    const auto& L = model.layout().layers[l];
    ThreadPool& p = *pool;
    // out = res2 + act . Wproj
    zero(dact, N * F);
    matmul_backward(p, dact.data(), G + L.proj_w, at(G, L.proj_b), dres.data(), A.act.data(), P + L.proj_w, N,
                    F, C);
    zero(dfc, N * FC);
    if (cfg.arch == Arch::kLlama)
      silu_mul_backward(p, dfc.data(), dact.data(), A.fc.data(), N, F);
    else
      gelu_backward(p, dfc.data(), dact.data(), A.fc.data(), N * F);
    zero(dln, N * C);
    matmul_backward(p, dln.data(), G + L.fc_w, at(G, L.fc_b), dfc.data(), A.ln2.data(), P + L.fc_w, N, C, FC);
    norm_backward(dres.data(), G, dln.data(), A.res2.data(), P, L.ln2_w, L.ln2_b, A.mean2.data(),
                  A.rstd2.data());
    // res2 = in + att . Wo
    zero(datt, N * QD);
    matmul_backward(p, datt.data(), G + L.o_w, at(G, L.o_b), dres.data(), A.att.data(), P + L.o_w, N, QD, C);
    zero(dqkv, N * QKV);
    attention_backward(p, dqkv.data(), datt.data(), A.att.data(), A.lse.data(), A.qkv.data(), attn_shape());
    if (rope) {
      rope_backward(p, dqkv.data(), N, T, cfg.n_head, cfg.head_dim, QKV, *rope);
      rope_backward(p, dqkv.data() + QD, N, T, cfg.n_kv_head, cfg.head_dim, QKV, *rope);
    }
    zero(dln, N * C);
    matmul_backward(p, dln.data(), G + L.qkv_w, at(G, L.qkv_b), dqkv.data(), A.ln1.data(), P + L.qkv_w, N, C,
                    QKV);
    norm_backward(dres.data(), G, dln.data(), in, P, L.ln1_w, L.ln1_b, A.mean1.data(), A.rstd1.data());
  }

  LayerActs& acts_for(int l) { return acts[recompute ? 0 : l]; }

  // Embedding, layers, final norm and head: leaves the logits in `logits`.
  void forward(const TrainModel& model, const Batch& batch) {
    const float* P = model.params().data();
    const ParamLayout& lay = model.layout();
    embedding_forward(*pool, resid[0].data(), batch.inputs.data(), P + lay.wte, at(P, lay.wpe), N, T, C);
    for (int l = 0; l < cfg.n_layer; ++l)
      layer_forward(model, l, resid[l].data(), acts_for(l), resid[l + 1].data());
    norm_forward(lnf.data(), lnf_mean.data(), lnf_rstd.data(), resid[cfg.n_layer].data(), P, lay.lnf_w,
                 lay.lnf_b);
    matmul_forward(*pool, logits.data(), lnf.data(), P + lay.head, nullptr, N, C, V);
  }

  // Expects `logits` to hold the logit gradients.
  void backward(TrainModel& model, const Batch& batch) {
    const float* P = model.params().data();
    float* G = model.grads().data();
    const ParamLayout& lay = model.layout();
    zero(dln, N * C);
    matmul_backward(*pool, dln.data(), G + lay.head, nullptr, logits.data(), lnf.data(), P + lay.head, N, C,
                    V);
    zero(dres, N * C);
    norm_backward(dres.data(), G, dln.data(), resid[cfg.n_layer].data(), P, lay.lnf_w, lay.lnf_b,
                  lnf_mean.data(), lnf_rstd.data());
    for (int l = cfg.n_layer - 1; l >= 0; --l) {
      // Recomputing rewrites resid[l + 1] with the same values; nothing reads it again.
      if (recompute) layer_forward(model, l, resid[l].data(), acts[0], resid[l + 1].data());
      layer_backward(model, l, resid[l].data(), acts_for(l));
    }
    embedding_backward(*pool, G + lay.wte, at(G, lay.wpe), dres.data(), batch.inputs.data(), N, T, C);
  }
};

TrainPass::TrainPass(const ModelConfig& config, int max_batch, int max_seq, ThreadPool* pool, bool recompute)
    : impl_(std::make_unique<Impl>(config, max_batch, max_seq, pool, recompute)) {}

TrainPass::~TrainPass() = default;

float TrainPass::forward(const TrainModel& model, const Batch& batch) {
  Impl& m = *impl_;
  m.check_batch(model, batch);
  m.forward(model, batch);
  int64_t count = 0;
  const double sum = cross_entropy_forward(*m.pool, m.logits.data(), batch.targets.data(), m.N, m.V, &count);
  return count ? static_cast<float>(sum / double(count)) : 0.0f;
}

float TrainPass::forward_backward(TrainModel& model, const Batch& batch, double normalizer) {
  Impl& m = *impl_;
  m.check_batch(model, batch);
  const int64_t targets = batch.count_targets();
  if (targets == 0) return 0.0f;  // no loss, no gradient
  const double norm = normalizer > 0 ? normalizer : double(targets);
  m.forward(model, batch);
  int64_t count = 0;
  const double sum = cross_entropy_fused(*m.pool, m.logits.data(), batch.targets.data(), m.N, m.V,
                                         static_cast<float>(1.0 / norm), &count);
  m.backward(model, batch);
  return static_cast<float>(sum / double(count));
}

const float* TrainPass::logits() const { return impl_->logits.data(); }
size_t TrainPass::activation_bytes() const { return impl_->bytes; }
bool TrainPass::recompute() const { return impl_->recompute; }

}  // namespace braid::tune
