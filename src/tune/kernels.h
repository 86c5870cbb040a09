// Training kernels in the style of llm.c: every operation of the Llama and GPT-2 blocks
// is a forward function and a backward function over plain f32 arrays with explicit
// shapes. The model pass (src/tune/train_pass.cpp) strings them together; the tests
// check each backward against finite differences of its forward.
//
// Conventions:
// - Arrays are row-major; `n` is the number of rows (tokens, B*T), one row per token.
// - Every backward kernel ADDS into its gradient outputs (+=), so residual branches and
//   a weight used twice (a tied head) sum without extra code. Callers zero scratch
//   gradients first. A null gradient pointer skips that gradient.
// - Results do not depend on the pool's thread count: each output element is computed
//   by one thread in a fixed order (bit-identical with 1 or 16 threads).
#pragma once

#include <cstdint>
#include <vector>

#include "braid/thread_pool.h"

namespace braid::tune {

// pool.parallel_for, except that jobs too small to repay waking the workers (about
// `cost` flops per item) run inline on the calling thread. Results are the same either
// way: the kernels never depend on how work is split.
inline void parallel_for(ThreadPool& pool, int64_t n, int64_t cost, const ThreadPool::Fn& fn) {
  constexpr int64_t kMinParallelWork = 1 << 15;
  if (pool.size() == 1 || n < 2 || n * cost < kMinParallelWork) {
    if (n > 0) fn(0, n, 0);
    return;
  }
  pool.parallel_for(n, fn);
}

// out[n][o] = sum_i x[n][i] * w[o][i] + b[o]    (w is [out_dim][in_dim], b may be null)
void matmul_forward(ThreadPool& pool, float* out, const float* x, const float* w, const float* b, int64_t n,
                    int64_t in_dim, int64_t out_dim);
// dx += dout . w;  dw += dout^T . x;  db += column sums of dout.
void matmul_backward(ThreadPool& pool, float* dx, float* dw, float* db, const float* dout, const float* x,
                     const float* w, int64_t n, int64_t in_dim, int64_t out_dim);

// RMSNorm (Llama): out = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps); rstd is saved [n].
void rmsnorm_forward(ThreadPool& pool, float* out, float* rstd, const float* x, const float* w, int64_t n,
                     int64_t c, float eps);
void rmsnorm_backward(ThreadPool& pool, float* dx, float* dw, const float* dout, const float* x,
                      const float* w, const float* rstd, int64_t n, int64_t c);

// LayerNorm (GPT-2): out = (x - mean) * rstd * w + b; mean and rstd are saved [n].
void layernorm_forward(ThreadPool& pool, float* out, float* mean, float* rstd, const float* x, const float* w,
                       const float* b, int64_t n, int64_t c, float eps);
void layernorm_backward(ThreadPool& pool, float* dx, float* dw, float* db, const float* dout, const float* x,
                        const float* w, const float* mean, const float* rstd, int64_t n, int64_t c);

// Rotary position embedding in Hugging Face's rotate-half layout: within each head the
// pairs are (i, i + head_dim/2), rotated by pos * theta^(-2i/head_dim).
struct RopeTable {
  RopeTable(int max_pos, int head_dim, double theta);
  int max_pos;
  int half;                // head_dim / 2
  std::vector<float> cos;  // [max_pos][half]
  std::vector<float> sin;
};
// Rotates, in place, n_heads heads of head_dim floats at the start of each of n rows
// (rows row_stride floats apart). Row r holds position r % seq_len (batches of sequences).
void rope_forward(ThreadPool& pool, float* x, int64_t n, int seq_len, int n_heads, int head_dim,
                  int64_t row_stride, const RopeTable& table);
// The transpose (inverse) rotation, in place on a gradient with the same layout.
void rope_backward(ThreadPool& pool, float* dx, int64_t n, int seq_len, int n_heads, int head_dim,
                   int64_t row_stride, const RopeTable& table);

// Causal self-attention with grouped KV heads. qkv is [B*T][(H + 2*KV) * hd]: the H query
// heads, then the KV key heads, then the KV value heads; query head h reads KV head
// h / (H / KV). out is [B*T][H * hd]. Forward saves each row's log-sum-exp of the scaled
// scores, lse [B][H][T]; backward recomputes the probabilities from it (as FlashAttention
// does) instead of keeping B*H*T*T of them.
struct AttnShape {
  int batch = 0, seq = 0, n_head = 0, n_kv_head = 0, head_dim = 0;
  int64_t qkv_dim() const { return int64_t(n_head + 2 * n_kv_head) * head_dim; }
  int64_t out_dim() const { return int64_t(n_head) * head_dim; }
};
void attention_forward(ThreadPool& pool, float* out, float* lse, const float* qkv, const AttnShape& s);
void attention_backward(ThreadPool& pool, float* dqkv, const float* dout, const float* out, const float* lse,
                        const float* qkv, const AttnShape& s);

// Llama MLP gate: gu is [n][2f] (gate in the first f columns, up in the last f);
// out[n][j] = silu(gate) * up.
void silu_mul_forward(ThreadPool& pool, float* out, const float* gu, int64_t n, int64_t f);
void silu_mul_backward(ThreadPool& pool, float* dgu, const float* dout, const float* gu, int64_t n,
                       int64_t f);

// GELU, tanh approximation (GPT-2's "gelu_new"), elementwise over count floats.
void gelu_forward(ThreadPool& pool, float* out, const float* x, int64_t count);
void gelu_backward(ThreadPool& pool, float* dx, const float* dout, const float* x, int64_t count);

// Token embedding plus optional learned positions: out[r] = wte[ids[r]] + wpe[r % seq_len].
// ids must be in range (the caller validates them).
void embedding_forward(ThreadPool& pool, float* out, const int32_t* ids, const float* wte, const float* wpe,
                       int64_t n, int seq_len, int64_t c);
void embedding_backward(ThreadPool& pool, float* dwte, float* dwpe, const float* dout, const int32_t* ids,
                        int64_t n, int seq_len, int64_t c);

// Cross-entropy of logits [n][v] against targets [n]; a negative target is ignored.
// Returns the sum of the row losses (double) and sets *count to the rows that count.
double cross_entropy_forward(ThreadPool& pool, const float* logits, const int32_t* targets, int64_t n,
                             int64_t v, int64_t* count);
// dlogits += scale * (softmax(logits) - onehot(target)) on rows with a target.
void cross_entropy_backward(ThreadPool& pool, float* dlogits, const float* logits, const int32_t* targets,
                            int64_t n, int64_t v, float scale);
// Both at once, overwriting logits with scale * (softmax - onehot) (zero on ignored rows),
// so the model pass needs no second [n][v] buffer. Returns the loss sum and count.
double cross_entropy_fused(ThreadPool& pool, float* logits, const int32_t* targets, int64_t n, int64_t v,
                           float scale, int64_t* count);

}  // namespace braid::tune
