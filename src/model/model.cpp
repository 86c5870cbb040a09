// Model loading: binds and validates every tensor a forward pass touches, so that a
// model that loads runs, and one that cannot run fails here with one clear line.
#include "braid/model.h"

#include <memory>
#include <string>
#include <utility>

#include "braid/error.h"
#include "braid/kernels.h"

namespace braid {

namespace {

class Binder {
 public:
  explicit Binder(const GgufFile& g) : g_(g) {}

  // A weight matrix of `in` -> `out` features: ne = {in, out}.
  const Tensor* matrix(const std::string& name, int64_t in, int64_t out, bool required = true) {
    const Tensor* t = find(name, required);
    if (!t) return nullptr;
    check_shape(*t, {in, out});
    check(matmul_supported(t->type), g_.label(), ": tensor ", name, " has type ", dtype_name(t->type),
          ", which braid cannot compute yet");
    bytes_ += t->nbytes;
    flops_ += 2.0 * static_cast<double>(in) * static_cast<double>(out);
    return t;
  }

  // A vector of n (norm weight, bias), copied to f32.
  std::vector<float> vec(const std::string& name, int64_t n, bool required = true) {
    const Tensor* t = find(name, required);
    if (!t) return {};
    check_shape(*t, {n});
    check(t->type == DType::F32 || t->type == DType::F16 || t->type == DType::BF16, g_.label(), ": tensor ",
          name, " has type ", dtype_name(t->type),
          ", which braid cannot compute yet (vectors are f32/f16/bf16)");
    std::vector<float> v(static_cast<size_t>(n));
    tensor_row_f32(*t, 0, v.data());
    bytes_ += t->nbytes;
    return v;
  }

  // Bytes and flops bound since the last call.
  std::pair<size_t, double> take_costs() {
    auto r = std::make_pair(bytes_, flops_);
    bytes_ = 0;
    flops_ = 0;
    return r;
  }

 private:
  const Tensor* find(const std::string& name, bool required) {
    const Tensor* t = g_.find_tensor(name);
    check(t || !required, g_.label(), ": missing tensor ", name);
    return t;
  }

  void check_shape(const Tensor& t, std::initializer_list<int64_t> want) {
    // Trailing dimensions of 1 are the same shape ([64] == [64, 1]).
    int64_t w[4] = {1, 1, 1, 1};
    int i = 0;
    for (int64_t v : want) w[i++] = v;
    bool ok = true;
    for (int d = 0; d < 4; ++d) ok = ok && t.ne[d] == w[d];
    if (!ok) {
      std::string s = "[";
      i = 0;
      for (int64_t v : want) s += (i++ ? ", " : "") + std::to_string(v);
      fail(g_.label(), ": tensor ", t.name, " has shape ", t.shape_string(), ", expected ", s, "]");
    }
    // The reader checked the data lies in the file; make sure it is as large as the shape.
    check(t.nbytes >= t.row_size() * static_cast<size_t>(t.rows()), g_.label(), ": tensor ", t.name,
          " holds ", t.nbytes, " bytes, too few for its shape");
  }

  const GgufFile& g_;
  size_t bytes_ = 0;
  double flops_ = 0;
};

}  // namespace

std::shared_ptr<const Model> Model::load(const std::string& gguf_path) {
  return from_gguf(std::shared_ptr<const GgufFile>(GgufFile::open(gguf_path)));
}

std::shared_ptr<const Model> Model::from_gguf(std::shared_ptr<const GgufFile> gguf) {
  check(gguf != nullptr, "Model::from_gguf: no file");
  std::shared_ptr<Model> m(new Model());
  m->gguf_ = std::move(gguf);
  m->config_ = ModelConfig::from_gguf(*m->gguf_);
  m->bind_weights();
  m->find_packable();
  return m;
}

void Model::bind_weights() {
  const ModelConfig& c = config_;
  const GgufFile& g = *gguf_;
  Binder b(g);
  const bool gpt2 = c.arch == Arch::GPT2;

  token_embd_ = b.matrix("token_embd.weight", c.dim, c.n_vocab);
  if (gpt2) pos_embd_ = b.matrix("position_embd.weight", c.dim, c.n_ctx_train);
  embed_bytes_ = b.take_costs().first;

  layers_.resize(static_cast<size_t>(c.n_layers));
  layer_bytes_.resize(layers_.size());
  layer_flops_.resize(layers_.size());
  for (int i = 0; i < c.n_layers; ++i) {
    LayerWeights& L = layers_[static_cast<size_t>(i)];
    const std::string p = "blk." + std::to_string(i) + ".";
    L.attn_norm = b.vec(p + "attn_norm.weight", c.dim);
    L.ffn_norm = b.vec(p + "ffn_norm.weight", c.dim);
    if (gpt2) {
      L.attn_norm_b = b.vec(p + "attn_norm.bias", c.dim);
      L.ffn_norm_b = b.vec(p + "ffn_norm.bias", c.dim);
      L.wqkv = b.matrix(p + "attn_qkv.weight", c.dim, 3 * static_cast<int64_t>(c.dim));
      L.bqkv = b.vec(p + "attn_qkv.bias", 3 * static_cast<int64_t>(c.dim));
      L.wo = b.matrix(p + "attn_output.weight", c.dim, c.dim);
      L.bo = b.vec(p + "attn_output.bias", c.dim);
      L.w_up = b.matrix(p + "ffn_up.weight", c.dim, c.ffn_dim);
      L.b_up = b.vec(p + "ffn_up.bias", c.ffn_dim);
      L.w_down = b.matrix(p + "ffn_down.weight", c.ffn_dim, c.dim);
      L.b_down = b.vec(p + "ffn_down.bias", c.dim);
    } else {
      // qwen2 always has q/k/v biases; some llama variants have them (and an output bias).
      const bool qkv_bias = c.arch == Arch::Qwen2;
      L.wq = b.matrix(p + "attn_q.weight", c.dim, c.q_dim());
      L.wk = b.matrix(p + "attn_k.weight", c.dim, c.kv_dim());
      L.wv = b.matrix(p + "attn_v.weight", c.dim, c.kv_dim());
      L.bq = b.vec(p + "attn_q.bias", c.q_dim(), qkv_bias);
      L.bk = b.vec(p + "attn_k.bias", c.kv_dim(), qkv_bias);
      L.bv = b.vec(p + "attn_v.bias", c.kv_dim(), qkv_bias);
      L.wo = b.matrix(p + "attn_output.weight", c.q_dim(), c.dim);
      L.bo = b.vec(p + "attn_output.bias", c.dim, false);
      L.w_gate = b.matrix(p + "ffn_gate.weight", c.dim, c.ffn_dim);
      L.w_up = b.matrix(p + "ffn_up.weight", c.dim, c.ffn_dim);
      L.w_down = b.matrix(p + "ffn_down.weight", c.ffn_dim, c.dim);
    }
    std::tie(layer_bytes_[static_cast<size_t>(i)], layer_flops_[static_cast<size_t>(i)]) = b.take_costs();
  }

  output_norm_ = b.vec("output_norm.weight", c.dim);
  if (gpt2) output_norm_b_ = b.vec("output_norm.bias", c.dim);
  output_ = b.matrix("output.weight", c.dim, c.n_vocab, false);
  auto head = b.take_costs();
  output_bytes_ = head.first;
  if (!output_) {
    output_ = token_embd_;
    output_bytes_ += token_embd_->nbytes;
  }

  if (!gpt2) {
    if (g.find_tensor("rope_freqs.weight")) {
      rope_factors_ = b.vec("rope_freqs.weight", c.rope_dim / 2);
    } else if (g.get_str(std::string(arch_name(c.arch)) + ".rope.scaling.type", "none") == "llama3") {
      check(c.rope_orig_ctx > 0, g.label(),
            ": llama3 rope scaling needs rope.scaling.original_context_length");
      rope_factors_ = llama3_rope_factors(c.rope_theta, c.rope_dim, c.rope_factor, c.rope_low_freq_factor,
                                          c.rope_high_freq_factor, c.rope_orig_ctx);
    }
    for (float f : rope_factors_) {
      check(f > 0 && f < 1e30f, g.label(), ": rope_freqs.weight holds ", f, ", expected positive factors");
    }
  }
}

size_t Model::layer_weight_bytes(int layer) const { return layer_bytes_.at(static_cast<size_t>(layer)); }
size_t Model::embed_weight_bytes() const { return embed_bytes_; }
size_t Model::output_weight_bytes() const { return output_bytes_; }
double Model::layer_flops_per_token(int layer) const { return layer_flops_.at(static_cast<size_t>(layer)); }

}  // namespace braid
