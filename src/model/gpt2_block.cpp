// The GPT-2 block (pre-LayerNorm, fused qkv projection, GELU MLP, biases everywhere):
//   x += Wo · attention(split(Wqkv · layernorm(x) + b)) + bo
//   x += Wdown · gelu(Wup · layernorm(x) + bup) + bdown
#include <algorithm>

#include "model/blocks.h"

namespace braid::detail {

void gpt2_block(const BlockArgs& a) {
  const ModelConfig& c = a.config;
  const LayerWeights& w = a.w;
  BlockScratch& s = a.s;
  const int n = a.n;
  const int64_t dim = c.dim;

  layernorm(a.x, w.attn_norm.data(), w.attn_norm_b.data(), n, c.dim, c.norm_eps, s.xn.data());
  matmul(*w.wqkv, s.xn.data(), n, s.q.data(), a.pool);
  add_bias(s.q.data(), w.bqkv.data(), n, 3 * c.dim);
  // Rows of qkv are [q | k | v]: keys and values move to their cache rows, queries are
  // compacted to [n][dim] for attention.
  float* k = a.kv.k(a.layer) + a.pos0 * dim;
  float* v = a.kv.v(a.layer) + a.pos0 * dim;
  for (int t = 0; t < n; ++t) {
    const float* row = s.q.data() + t * 3 * dim;
    std::copy(row + dim, row + 2 * dim, k + t * dim);
    std::copy(row + 2 * dim, row + 3 * dim, v + t * dim);
    std::copy(row, row + dim, s.attn.data() + t * dim);
  }
  std::copy(s.attn.begin(), s.attn.begin() + n * dim, s.q.begin());
  a.kv.set_n_pos(a.layer, a.pos0 + n);
  attention({c.n_heads, c.n_kv_heads, c.head_dim}, s.q.data(), n, a.pos0, a.kv.k(a.layer), a.kv.v(a.layer),
            s.attn.data(), a.pool);
  matmul(*w.wo, s.attn.data(), n, s.proj.data(), a.pool);
  add_bias(s.proj.data(), w.bo.data(), n, c.dim);
  add_inplace(a.x, s.proj.data(), n * dim);

  layernorm(a.x, w.ffn_norm.data(), w.ffn_norm_b.data(), n, c.dim, c.norm_eps, s.xn.data());
  matmul(*w.w_up, s.xn.data(), n, s.ffn_a.data(), a.pool);
  add_bias(s.ffn_a.data(), w.b_up.data(), n, c.ffn_dim);
  gelu_tanh(s.ffn_a.data(), static_cast<int64_t>(n) * c.ffn_dim);
  matmul(*w.w_down, s.ffn_a.data(), n, s.proj.data(), a.pool);
  add_bias(s.proj.data(), w.b_down.data(), n, c.dim);
  add_inplace(a.x, s.proj.data(), n * dim);
}

}  // namespace braid::detail
