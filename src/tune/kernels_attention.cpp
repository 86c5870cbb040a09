// Causal multi-head attention with grouped KV heads, forward and backward.
// Forward keeps only each row's log-sum-exp; backward recomputes every probability from
// it and uses D_t = dout_t . out_t = sum_s p_ts dp_ts (the FlashAttention identity), so
// memory is O(B*H*T) instead of O(B*H*T*T).
#include <cmath>
#include <limits>
#include <vector>

#include "tune/kernels.h"

namespace braid::tune {
namespace {

inline float dot(const float* a, const float* b, int n) {
  float s = 0.0f;
  for (int i = 0; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace

void attention_forward(ThreadPool& pool, float* out, float* lse, const float* qkv, const AttnShape& s) {
  const int T = s.seq, H = s.n_head, KV = s.n_kv_head, hd = s.head_dim;
  const int rep = H / KV;
  const int64_t qkv_dim = s.qkv_dim(), out_dim = s.out_dim();
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  parallel_for(pool, int64_t(s.batch) * H, int64_t(T) * T * hd * 2, [&](int64_t begin, int64_t end, int) {
    std::vector<float> p(T);
    for (int64_t u = begin; u < end; ++u) {
      const int64_t b = u / H;
      const int h = int(u % H), kvh = h / rep;
      const float* base = qkv + b * T * qkv_dim;
      for (int t = 0; t < T; ++t) {
        const float* q = base + t * qkv_dim + int64_t(h) * hd;
        float mx = -std::numeric_limits<float>::infinity();
        for (int j = 0; j <= t; ++j) {
          const float* k = base + j * qkv_dim + int64_t(H + kvh) * hd;
          p[j] = dot(q, k, hd) * scale;
          if (p[j] > mx) mx = p[j];
        }
        float sum = 0.0f;
        for (int j = 0; j <= t; ++j) {
          p[j] = std::exp(p[j] - mx);
          sum += p[j];
        }
        float* o = out + (b * T + t) * out_dim + int64_t(h) * hd;
        for (int i = 0; i < hd; ++i) o[i] = 0.0f;
        for (int j = 0; j <= t; ++j) {
          const float* v = base + j * qkv_dim + int64_t(H + KV + kvh) * hd;
          for (int i = 0; i < hd; ++i) o[i] += p[j] * v[i];
        }
        const float inv = 1.0f / sum;
        for (int i = 0; i < hd; ++i) o[i] *= inv;
        lse[(b * H + h) * T + t] = mx + std::log(sum);
      }
    }
  });
}

void attention_backward(ThreadPool& pool, float* dqkv, const float* dout, const float* out, const float* lse,
                        const float* qkv, const AttnShape& s) {
  const int T = s.seq, H = s.n_head, KV = s.n_kv_head, hd = s.head_dim;
  const int rep = H / KV;
  const int64_t qkv_dim = s.qkv_dim(), out_dim = s.out_dim();
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  // One unit per (sequence, KV head): the query heads of a group all add into that KV
  // head's dk and dv, so they must run on the same thread.
  parallel_for(pool, int64_t(s.batch) * KV, int64_t(rep) * T * T * hd * 4,
               [&](int64_t begin, int64_t end, int) {
                 for (int64_t u = begin; u < end; ++u) {
                   const int64_t b = u / KV;
                   const int kvh = int(u % KV);
                   const float* base = qkv + b * T * qkv_dim;
                   float* dbase = dqkv + b * T * qkv_dim;
                   for (int h = kvh * rep; h < (kvh + 1) * rep; ++h) {
                     for (int t = 0; t < T; ++t) {
                       const int64_t row = b * T + t;
                       const float* q = base + t * qkv_dim + int64_t(h) * hd;
                       const float* g = dout + row * out_dim + int64_t(h) * hd;
                       const float* o = out + row * out_dim + int64_t(h) * hd;
                       const float row_lse = lse[(b * H + h) * T + t];
                       const float d = dot(g, o, hd);
                       float* dq = dbase + t * qkv_dim + int64_t(h) * hd;
                       for (int j = 0; j <= t; ++j) {
                         const float* k = base + j * qkv_dim + int64_t(H + kvh) * hd;
                         const float* v = base + j * qkv_dim + int64_t(H + KV + kvh) * hd;
                         const float p = std::exp(dot(q, k, hd) * scale - row_lse);
                         const float ds = p * (dot(g, v, hd) - d) * scale;
                         float* dk = dbase + j * qkv_dim + int64_t(H + kvh) * hd;
                         float* dv = dbase + j * qkv_dim + int64_t(H + KV + kvh) * hd;
                         for (int i = 0; i < hd; ++i) {
                           dq[i] += ds * k[i];
                           dk[i] += ds * q[i];
                           dv[i] += p * g[i];
                         }
                       }
                     }
                   }
                 }
               });
}

}  // namespace braid::tune
