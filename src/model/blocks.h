// One transformer block per architecture, over a batch of n tokens at positions
// pos0..pos0+n-1. Internal to the model module: Model::run_layers validates inputs,
// splits long batches into chunks and calls these.
#pragma once

#include <vector>

#include "braid/kernels.h"
#include "braid/kv_cache.h"
#include "braid/model.h"
#include "braid/thread_pool.h"
#include "base/aligned_vector.h"

namespace braid::detail {

// Buffers for one chunk of tokens, reused across the blocks of a run_layers call;
// cache-line aligned, as the kernels read them with 64-byte loads.
struct BlockScratch {
  BlockScratch(const ModelConfig& c, int n_tokens);
  AlignedVector<float> xn;                  // normalized input [n][dim]
  AlignedVector<float> q;                   // queries [n][q_dim] (gpt2: fused qkv [n][3 dim])
  AlignedVector<float> attn;                // attention output [n][q_dim]
  AlignedVector<float> proj;                // projection back to the residual [n][dim]
  AlignedVector<float> ffn_a, ffn_b;        // [n][ffn_dim]
  AlignedVector<float> rope_cos, rope_sin;  // [n][rope_dim / 2]
};

struct BlockArgs {
  const ModelConfig& config;
  const LayerWeights& w;
  int layer;
  float* x;  // residual stream [n][dim], updated in place
  int n;
  int pos0;
  KVCache& kv;
  const RopeParams& rope;  // llama / qwen2
  BlockScratch& s;
  ThreadPool& pool;
};

void llama_block(const BlockArgs& a);  // llama and qwen2
void gpt2_block(const BlockArgs& a);

}  // namespace braid::detail
