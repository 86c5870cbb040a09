// The layer-range interface: embed -> run_layers -> output, and forward() on top.
#include <algorithm>
#include <vector>

#include "braid/error.h"
#include "braid/kernels.h"
#include "braid/model.h"
#include "model/blocks.h"
#include "model/packed.h"

namespace braid {

namespace {
// Long prompts run through the layers in chunks: scratch memory stays bounded, and since
// every kernel's result is independent of the batch size, the output is unchanged.
constexpr int kChunkTokens = 256;
}  // namespace

void Model::embed(const int32_t* tokens, int n_tokens, int pos0, float* hidden) const {
  const ModelConfig& c = config_;
  check(n_tokens >= 0 && pos0 >= 0, "embed: bad batch (", n_tokens, " tokens at position ", pos0, ")");
  for (int t = 0; t < n_tokens; ++t) {
    check(tokens[t] >= 0 && tokens[t] < c.n_vocab, "token id ", tokens[t], " is out of range: the model has ",
          c.n_vocab, " tokens");
  }
  if (pos_embd_) {
    check(static_cast<int64_t>(pos0) + n_tokens <= pos_embd_->rows(), "position ", pos0 + n_tokens - 1,
          " is beyond the ", pos_embd_->rows(), " positions ", arch_name(c.arch), " learned");
  }
  std::vector<float> pos_row(pos_embd_ ? static_cast<size_t>(c.dim) : 0);
  for (int t = 0; t < n_tokens; ++t) {
    float* h = hidden + static_cast<int64_t>(t) * c.dim;
    tensor_row_f32(*token_embd_, tokens[t], h);
    if (pos_embd_) {
      tensor_row_f32(*pos_embd_, pos0 + t, pos_row.data());
      add_inplace(h, pos_row.data(), c.dim);
    }
  }
}

void Model::run_layers(int first, int last, float* hidden, int n_tokens, int pos0, KVCache& kv,
                       ThreadPool& pool) const {
  const ModelConfig& c = config_;
  check(first >= 0 && first <= last && last <= c.n_layers, "run_layers: layer range [", first, ", ", last,
        ") is not inside the model's ", c.n_layers, " layers");
  if (first == last || n_tokens == 0) return;
  check(n_tokens > 0 && pos0 >= 0, "run_layers: bad batch (", n_tokens, " tokens at position ", pos0, ")");
  check(kv.first_layer() <= first && last <= kv.last_layer(), "run_layers: the KV cache holds layers [",
        kv.first_layer(), ", ", kv.last_layer(), "), not [", first, ", ", last, ")");
  if (static_cast<int64_t>(pos0) + n_tokens > kv.n_ctx()) {
    if (pos0 == 0) fail("prompt of ", n_tokens, " tokens exceeds the context of ", kv.n_ctx());
    fail(n_tokens, " tokens at position ", pos0, " exceed the context of ", kv.n_ctx());
  }
  for (int l = first; l < last; ++l) {
    check(pos0 <= kv.n_pos(l), "run_layers: layer ", l, " holds ", kv.n_pos(l),
          " positions, so it cannot continue at position ", pos0);
  }

  // The layers' copies in panels, held for the pass (release_packed may run meanwhile).
  std::vector<std::shared_ptr<const Packed>> held;
  for (int l = first; l < last; ++l) held.push_back(packed(l, pool));

  detail::BlockScratch scratch(c, std::min(n_tokens, kChunkTokens));
  RopeParams rope;
  rope.head_dim = c.head_dim;
  rope.rope_dim = c.rope_dim;
  rope.theta = c.rope_theta;
  rope.freq_scale = c.rope_freq_scale;
  rope.freq_factors = rope_factors_.empty() ? nullptr : rope_factors_.data();
  rope.neox = c.rope_neox;
  for (int t0 = 0; t0 < n_tokens; t0 += kChunkTokens) {
    const int n = std::min(kChunkTokens, n_tokens - t0);
    const int p0 = pos0 + t0;
    if (c.arch != Arch::GPT2) rope_table(rope, p0, n, scratch.rope_cos.data(), scratch.rope_sin.data());
    float* x = hidden + static_cast<int64_t>(t0) * c.dim;
    for (int l = first; l < last; ++l) {
      const std::shared_ptr<const Packed>& pk = held[static_cast<size_t>(l - first)];
      const LayerWeights& w = pk ? pk->weights : layers_[static_cast<size_t>(l)];
      const detail::BlockArgs args{c, w, l, x, n, p0, kv, rope, scratch, pool};
      if (c.arch == Arch::GPT2) {
        detail::gpt2_block(args);
      } else {
        detail::llama_block(args);
      }
    }
  }
}

void Model::output(const float* hidden, int n_tokens, float* logits, ThreadPool& pool) const {
  const ModelConfig& c = config_;
  check(n_tokens >= 0, "output: bad batch of ", n_tokens, " tokens");
  const std::shared_ptr<const Packed> pk = packed(c.n_layers, pool);
  const Tensor& head = pk ? *pk->output : *output_;
  AlignedVector<float> xn(static_cast<size_t>(std::min(n_tokens, kChunkTokens)) * static_cast<size_t>(c.dim));
  for (int t0 = 0; t0 < n_tokens; t0 += kChunkTokens) {
    const int n = std::min(kChunkTokens, n_tokens - t0);
    const float* x = hidden + static_cast<int64_t>(t0) * c.dim;
    if (c.arch == Arch::GPT2) {
      layernorm(x, output_norm_.data(), output_norm_b_.data(), n, c.dim, c.norm_eps, xn.data());
    } else {
      rmsnorm(x, output_norm_.data(), n, c.dim, c.norm_eps, xn.data());
    }
    matmul(head, xn.data(), n, logits + static_cast<int64_t>(t0) * c.n_vocab, pool);
  }
}

std::vector<float> Model::forward(const int32_t* tokens, int n_tokens, int pos0, KVCache& kv,
                                  ThreadPool& pool, bool all_logits) const {
  const ModelConfig& c = config_;
  check(n_tokens >= 1, "forward: no tokens");
  std::vector<float> hidden(static_cast<size_t>(n_tokens) * static_cast<size_t>(c.dim));
  embed(tokens, n_tokens, pos0, hidden.data());
  run_layers(0, c.n_layers, hidden.data(), n_tokens, pos0, kv, pool);
  const int n_out = all_logits ? n_tokens : 1;
  std::vector<float> logits(static_cast<size_t>(n_out) * static_cast<size_t>(c.n_vocab));
  output(hidden.data() + static_cast<int64_t>(n_tokens - n_out) * c.dim, n_out, logits.data(), pool);
  return logits;
}

}  // namespace braid
