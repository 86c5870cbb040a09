// The llama block (also qwen2: the same with q/k/v biases and NEOX-style RoPE):
//   x += Wo · attention(rope(Wq·rmsnorm(x)), rope(Wk·rmsnorm(x)), Wv·rmsnorm(x))
//   x += Wdown · (silu(Wgate·rmsnorm(x)) * Wup·rmsnorm(x))
#include "model/blocks.h"

namespace braid::detail {

BlockScratch::BlockScratch(const ModelConfig& c, int n) {
  const size_t nn = static_cast<size_t>(n);
  const size_t q_width =
      c.arch == Arch::GPT2 ? 3 * static_cast<size_t>(c.dim) : static_cast<size_t>(c.q_dim());
  xn.resize(nn * static_cast<size_t>(c.dim));
  q.resize(nn * q_width);
  attn.resize(nn * static_cast<size_t>(c.q_dim()));
  proj.resize(nn * static_cast<size_t>(c.dim));
  ffn_a.resize(nn * static_cast<size_t>(c.ffn_dim));
  if (c.arch != Arch::GPT2) ffn_b.resize(nn * static_cast<size_t>(c.ffn_dim));
  rope_cos.resize(nn * static_cast<size_t>(c.rope_dim / 2));
  rope_sin.resize(rope_cos.size());
}

void llama_block(const BlockArgs& a) {
  const ModelConfig& c = a.config;
  const LayerWeights& w = a.w;
  BlockScratch& s = a.s;
  const int n = a.n;
  const int64_t kv_dim = c.kv_dim();

  // Attention. Keys and values go straight into the cache rows of their positions.
  rmsnorm(a.x, w.attn_norm.data(), n, c.dim, c.norm_eps, s.xn.data());
  float* k = a.kv.k(a.layer) + a.pos0 * kv_dim;
  float* v = a.kv.v(a.layer) + a.pos0 * kv_dim;
  const MatmulPart qkv[] = {{w.wq, s.q.data()}, {w.wk, k}, {w.wv, v}};
  matmul(qkv, s.xn.data(), n, a.pool);
  if (!w.bq.empty()) add_bias(s.q.data(), w.bq.data(), n, c.q_dim());
  if (!w.bk.empty()) add_bias(k, w.bk.data(), n, c.kv_dim());
  if (!w.bv.empty()) add_bias(v, w.bv.data(), n, c.kv_dim());
  rope_apply(a.rope, s.rope_cos.data(), s.rope_sin.data(), n, c.n_heads, s.q.data());
  rope_apply(a.rope, s.rope_cos.data(), s.rope_sin.data(), n, c.n_kv_heads, k);
  a.kv.set_n_pos(a.layer, a.pos0 + n);
  attention({c.n_heads, c.n_kv_heads, c.head_dim}, s.q.data(), n, a.pos0, a.kv.k(a.layer), a.kv.v(a.layer),
            s.attn.data(), a.pool);
  matmul(*w.wo, s.attn.data(), n, s.proj.data(), a.pool);
  if (!w.bo.empty()) add_bias(s.proj.data(), w.bo.data(), n, c.dim);
  add_inplace(a.x, s.proj.data(), static_cast<int64_t>(n) * c.dim);

  // SwiGLU feed-forward.
  rmsnorm(a.x, w.ffn_norm.data(), n, c.dim, c.norm_eps, s.xn.data());
  const MatmulPart gate_up[] = {{w.w_gate, s.ffn_a.data()}, {w.w_up, s.ffn_b.data()}};
  matmul(gate_up, s.xn.data(), n, a.pool);
  // Element-wise: a prompt's tokens are split over the pool (one token is not worth a wake).
  if (n >= 4 && a.pool.size() > 1) {
    a.pool.parallel_for(n, [&](int64_t t0, int64_t t1, int) {
      silu_mul(s.ffn_a.data() + t0 * c.ffn_dim, s.ffn_b.data() + t0 * c.ffn_dim, (t1 - t0) * c.ffn_dim);
    });
  } else {
    silu_mul(s.ffn_a.data(), s.ffn_b.data(), static_cast<int64_t>(n) * c.ffn_dim);
  }
  matmul(*w.w_down, s.ffn_a.data(), n, s.proj.data(), a.pool);
  add_inplace(a.x, s.proj.data(), static_cast<int64_t>(n) * c.dim);
}

}  // namespace braid::detail
