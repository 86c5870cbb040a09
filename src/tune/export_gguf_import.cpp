// GGUF -> TrainModel, for fine-tuning a model braid runs: the inverse of export_gguf.
#include <cstring>

#include "braid/error.h"
#include "braid/model.h"
#include "braid/quant.h"
#include "braid/tune_export.h"

namespace braid::tune {
namespace {

// Hugging Face ModelConfig from the GGUF hyperparameters braid::ModelConfig validated.
ModelConfig train_config(const GgufFile& g) {
  const braid::ModelConfig mc = braid::ModelConfig::from_gguf(g);
  const std::string& label = g.label();
  ModelConfig c;
  switch (mc.arch) {
    case braid::Arch::Llama:
      c.arch = Arch::kLlama;
      break;
    case braid::Arch::GPT2:
      c.arch = Arch::kGpt2;
      break;
    default:
      fail(label, ": architecture '", arch_name(mc.arch), "' cannot be trained (llama and gpt2 can)");
  }
  c.n_layer = mc.n_layers;
  c.dim = mc.dim;
  c.n_head = mc.n_heads;
  c.n_kv_head = mc.n_kv_heads;
  c.head_dim = mc.head_dim;
  c.ffn_dim = mc.ffn_dim;
  c.vocab = mc.n_vocab;
  c.max_seq = mc.n_ctx_train;
  c.norm_eps = mc.norm_eps;
  c.rope_theta = mc.rope_theta;
  c.tied_head = mc.tied_output;
  if (c.arch == Arch::kGpt2) {
    // llama.cpp writes GPT-2's tied head out as a copy of the embeddings: a head equal
    // to them byte for byte is taken as tied again.
    const Tensor* head = g.find_tensor("output.weight");
    const Tensor& embd = g.tensor("token_embd.weight");
    c.tied_head = head == nullptr || (head->type == embd.type && head->nbytes == embd.nbytes &&
                                      std::memcmp(head->data, embd.data, embd.nbytes) == 0);
  }
  if (c.arch == Arch::kLlama) {
    check(!mc.rope_neox, label, ": NEOX-style RoPE is not supported for training");
    check(mc.rope_dim == mc.head_dim, label, ": partial rotary dimensions (", mc.rope_dim, " of ",
          mc.head_dim, ") are not supported for training");
    check(mc.rope_freq_scale == 1.0f && g.find_tensor("rope_freqs.weight") == nullptr, label,
          ": scaled RoPE is not supported for training");
    for (const char* b : {"attn_q.bias", "attn_k.bias", "attn_v.bias", "attn_output.bias"})
      check(g.find_tensor(cat("blk.0.", b)) == nullptr, label, ": attention biases (blk.0.", b,
            ") are not supported for training");
  }
  c.validate(label);
  return c;
}

// GGUF's interleaved rotary rows back to Hugging Face's halves, per head: GGUF row
// 2i + h of a head is Hugging Face row h * hd/2 + i (the inverse of convert's permute_rows).
void unpermute_rows(std::vector<float>& w, int64_t rows, int64_t cols, int64_t n_head) {
  std::vector<float> out(w.size());
  const int64_t hd = rows / n_head, half = hd / 2;
  for (int64_t head = 0; head < n_head; ++head)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t h = 0; h < 2; ++h) {
        const float* src = w.data() + (head * hd + 2 * i + h) * cols;
        std::copy(src, src + cols, out.begin() + (head * hd + h * half + i) * cols);
      }
  w = std::move(out);
}

class Reader {
 public:
  Reader(const GgufFile& g, TrainModel& m) : g_(g), m_(m) {}

  // Parameter `hf` from GGUF tensor `gguf`, whose ne must be the parameter's [out][in]
  // shape reversed (GPT-2's transposed Conv1D weights: the Hugging Face shape as is).
  void read(const std::string& gguf, const std::string& hf, int64_t permute_heads = 0) {
    const ParamTensor& t = m_.tensor(hf);
    const Tensor* src = g_.find_tensor(gguf);
    check(src != nullptr, g_.label(), ": missing tensor ", gguf);
    std::vector<int64_t> ne = t.transposed ? t.shape : std::vector<int64_t>(t.shape.rbegin(), t.shape.rend());
    std::vector<int64_t> got(src->ne, src->ne + src->n_dims);
    check(got == ne, g_.label(), ": tensor ", gguf, " has shape ", src->shape_string(), ", expected ",
          shape_str(ne));
    const int64_t cols = src->ne[0], rows = src->rows();
    std::vector<float> v(size_t(rows * cols));
    // dequantize_row checks nothing itself: the row must be whole blocks.
    check(src->type == DType::F32 || src->type == DType::F16 || src->type == DType::BF16 ||
              quant_supported(src->type),
          g_.label(), ": tensor ", gguf, " has type ", dtype_name(src->type),
          ", which cannot be read for training");
    check(cols % dtype_info(src->type).block_size == 0, g_.label(), ": tensor ", gguf,
          " rows are not whole blocks");
    for (int64_t r = 0; r < rows; ++r) dequantize_row(src->type, src->row(r), v.data() + r * cols, cols);
    if (permute_heads > 0) unpermute_rows(v, rows, cols, permute_heads);
    if (t.transposed) {  // set_hf wants the Hugging Face [in][out] order
      std::vector<float> hf_order(v.size());
      for (int64_t o = 0; o < rows; ++o)
        for (int64_t i = 0; i < cols; ++i) hf_order[size_t(i * rows + o)] = v[size_t(o * cols + i)];
      v = std::move(hf_order);
    }
    m_.set_hf(hf, v);
  }

 private:
  static std::string shape_str(const std::vector<int64_t>& ne) {
    std::string s = "[";
    for (size_t i = 0; i < ne.size(); ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
    return s + "]";
  }
  const GgufFile& g_;
  TrainModel& m_;
};

}  // namespace

TrainModel import_gguf(const GgufFile& g) {
  const ModelConfig c = train_config(g);
  TrainModel m(c);
  Reader r(g, m);
  if (c.arch == Arch::kLlama) {
    r.read("token_embd.weight", "model.embed_tokens.weight");
    for (int i = 0; i < c.n_layer; ++i) {
      const std::string hf = cat("model.layers.", i, "."), gg = cat("blk.", i, ".");
      r.read(gg + "attn_norm.weight", hf + "input_layernorm.weight");
      r.read(gg + "attn_q.weight", hf + "self_attn.q_proj.weight", c.n_head);
      r.read(gg + "attn_k.weight", hf + "self_attn.k_proj.weight", c.n_kv_head);
      r.read(gg + "attn_v.weight", hf + "self_attn.v_proj.weight");
      r.read(gg + "attn_output.weight", hf + "self_attn.o_proj.weight");
      r.read(gg + "ffn_norm.weight", hf + "post_attention_layernorm.weight");
      r.read(gg + "ffn_gate.weight", hf + "mlp.gate_proj.weight");
      r.read(gg + "ffn_down.weight", hf + "mlp.down_proj.weight");
      r.read(gg + "ffn_up.weight", hf + "mlp.up_proj.weight");
    }
    r.read("output_norm.weight", "model.norm.weight");
    if (!c.tied_head) r.read("output.weight", "lm_head.weight");
    return m;
  }
  r.read("token_embd.weight", "transformer.wte.weight");
  r.read("position_embd.weight", "transformer.wpe.weight");
  for (int i = 0; i < c.n_layer; ++i) {
    const std::string hf = cat("transformer.h.", i, "."), gg = cat("blk.", i, ".");
    r.read(gg + "attn_norm.weight", hf + "ln_1.weight");
    r.read(gg + "attn_norm.bias", hf + "ln_1.bias");
    r.read(gg + "attn_qkv.weight", hf + "attn.c_attn.weight");
    r.read(gg + "attn_qkv.bias", hf + "attn.c_attn.bias");
    r.read(gg + "attn_output.weight", hf + "attn.c_proj.weight");
    r.read(gg + "attn_output.bias", hf + "attn.c_proj.bias");
    r.read(gg + "ffn_norm.weight", hf + "ln_2.weight");
    r.read(gg + "ffn_norm.bias", hf + "ln_2.bias");
    r.read(gg + "ffn_up.weight", hf + "mlp.c_fc.weight");
    r.read(gg + "ffn_up.bias", hf + "mlp.c_fc.bias");
    r.read(gg + "ffn_down.weight", hf + "mlp.c_proj.weight");
    r.read(gg + "ffn_down.bias", hf + "mlp.c_proj.bias");
  }
  r.read("output_norm.weight", "transformer.ln_f.weight");
  r.read("output_norm.bias", "transformer.ln_f.bias");
  if (!c.tied_head) r.read("output.weight", "lm_head.weight");
  return m;
}

}  // namespace braid::tune
