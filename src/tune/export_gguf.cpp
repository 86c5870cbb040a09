// TrainModel -> GGUF through the converter's Builder, which does the type conversion,
// the rotary row permutation and the atomic write exactly as `braid convert` does for a
// Hugging Face folder with the same weights.
#include "braid/convert.h"
#include "braid/error.h"
#include "braid/tune_export.h"
#include "convert/builder.h"

namespace braid::tune {
namespace {

using convert::Layout;
using convert::TensorPlan;

class Planner {
 public:
  Planner(const TrainModel& m, const ConvertOptions& opt, convert::Builder& b) : m_(m), opt_(opt), b_(b) {}

  // GGUF tensor `gguf` from parameter `hf`. Parameters are kept [out][in] (GPT-2's Conv1D
  // weights included), which is GGUF's ne {in, out}.
  void map(const std::string& gguf, const std::string& hf, Layout layout = Layout::kSame,
           int64_t n_head = 0) {
    const ParamTensor& t = m_.tensor(hf);
    TensorPlan p;
    p.name = gguf;
    if (t.transposed)
      p.ne = t.shape;  // HF [in][out] -> ne {in, out}
    else
      p.ne.assign(t.shape.rbegin(), t.shape.rend());
    p.type = convert::output_type(opt_, t.shape.size());
    p.src = reinterpret_cast<const uint8_t*>(m_.params().data() + t.offset);
    p.src_type = DType::F32;
    p.layout = layout;
    p.n_head = n_head;
    b_.add(std::move(p));
  }

 private:
  const TrainModel& m_;
  const ConvertOptions& opt_;
  convert::Builder& b_;
};

void set_u32(GgufWriter& w, const std::string& key, int64_t v) {
  w.set(key, GgufValue::u32(static_cast<uint32_t>(v)));
}

void write_hparams(const ModelConfig& c, GgufWriter& w) {
  const std::string a = c.arch == Arch::kLlama ? "llama." : "gpt2.";
  set_u32(w, a + "vocab_size", c.vocab);
  set_u32(w, a + "context_length", c.max_seq);
  set_u32(w, a + "embedding_length", c.dim);
  set_u32(w, a + "block_count", c.n_layer);
  set_u32(w, a + "feed_forward_length", c.ffn_dim);
  set_u32(w, a + "attention.head_count", c.n_head);
  if (c.arch == Arch::kGpt2) {
    w.set(a + "attention.layer_norm_epsilon", GgufValue::f32(c.norm_eps));
    return;
  }
  set_u32(w, a + "attention.head_count_kv", c.n_kv_head);
  w.set(a + "rope.freq_base", GgufValue::f32(static_cast<float>(c.rope_theta)));
  w.set(a + "attention.layer_norm_rms_epsilon", GgufValue::f32(c.norm_eps));
  set_u32(w, a + "rope.dimension_count", c.head_dim);
  if (int64_t(c.head_dim) * c.n_head != c.dim) {
    set_u32(w, a + "attention.key_length", c.head_dim);
    set_u32(w, a + "attention.value_length", c.head_dim);
  }
}

void map_llama(const ModelConfig& c, Planner& p) {
  p.map("token_embd.weight", "model.embed_tokens.weight");
  for (int i = 0; i < c.n_layer; ++i) {
    const std::string hf = cat("model.layers.", i, "."), gg = cat("blk.", i, ".");
    p.map(gg + "attn_norm.weight", hf + "input_layernorm.weight");
    // Hugging Face rotates halves of each head; GGUF's llama rotates adjacent pairs.
    p.map(gg + "attn_q.weight", hf + "self_attn.q_proj.weight", Layout::kPermuteRows, c.n_head);
    p.map(gg + "attn_k.weight", hf + "self_attn.k_proj.weight", Layout::kPermuteRows, c.n_kv_head);
    p.map(gg + "attn_v.weight", hf + "self_attn.v_proj.weight");
    p.map(gg + "attn_output.weight", hf + "self_attn.o_proj.weight");
    p.map(gg + "ffn_norm.weight", hf + "post_attention_layernorm.weight");
    p.map(gg + "ffn_gate.weight", hf + "mlp.gate_proj.weight");
    p.map(gg + "ffn_down.weight", hf + "mlp.down_proj.weight");
    p.map(gg + "ffn_up.weight", hf + "mlp.up_proj.weight");
  }
  p.map("output_norm.weight", "model.norm.weight");
  if (!c.tied_head) p.map("output.weight", "lm_head.weight");  // tied: token_embd is the head
}

void map_gpt2(const ModelConfig& c, Planner& p) {
  p.map("token_embd.weight", "transformer.wte.weight");
  p.map("position_embd.weight", "transformer.wpe.weight");
  for (int i = 0; i < c.n_layer; ++i) {
    const std::string hf = cat("transformer.h.", i, "."), gg = cat("blk.", i, ".");
    p.map(gg + "attn_norm.weight", hf + "ln_1.weight");
    p.map(gg + "attn_norm.bias", hf + "ln_1.bias");
    p.map(gg + "attn_qkv.weight", hf + "attn.c_attn.weight");
    p.map(gg + "attn_qkv.bias", hf + "attn.c_attn.bias");
    p.map(gg + "attn_output.weight", hf + "attn.c_proj.weight");
    p.map(gg + "attn_output.bias", hf + "attn.c_proj.bias");
    p.map(gg + "ffn_norm.weight", hf + "ln_2.weight");
    p.map(gg + "ffn_norm.bias", hf + "ln_2.bias");
    p.map(gg + "ffn_up.weight", hf + "mlp.c_fc.weight");
    p.map(gg + "ffn_up.bias", hf + "mlp.c_fc.bias");
    p.map(gg + "ffn_down.weight", hf + "mlp.c_proj.weight");
    p.map(gg + "ffn_down.bias", hf + "mlp.c_proj.bias");
  }
  p.map("output_norm.weight", "transformer.ln_f.weight");
  p.map("output_norm.bias", "transformer.ln_f.bias");
  // As llama.cpp's GPT2Model: the head is written out even when tied.
  p.map("output.weight", c.tied_head ? "transformer.wte.weight" : "lm_head.weight");
}

}  // namespace

void export_gguf(const TrainModel& model, const GgufFile* tokenizer, const std::string& path,
                 const ExportOptions& options) {
  const ModelConfig& c = model.config();
  check(options.type == DType::F32 || options.type == DType::F16 || options.type == DType::BF16,
        "cannot export ", dtype_name(options.type), " weights: export writes f32, f16 or bf16");
  ConvertOptions opt;
  opt.type = options.type;
  convert::Builder b;
  GgufWriter& w = b.meta();
  w.set("general.architecture", GgufValue::string(c.arch == Arch::kLlama ? "llama" : "gpt2"));
  w.set("general.name", GgufValue::string(options.name));
  w.set("general.file_type", GgufValue::u32(convert::gguf_file_type(options.type)));
  write_hparams(c, w);
  if (tokenizer != nullptr) {
    if (const GgufValue* toks = tokenizer->find("tokenizer.ggml.tokens"))
      check(toks->array_size() <= size_t(c.vocab), tokenizer->label(), ": the tokenizer has ",
            toks->array_size(), " tokens, more than the model's vocabulary of ", c.vocab);
    for (const auto& [key, value] : tokenizer->metadata())
      if (key.rfind("tokenizer.", 0) == 0) w.set(key, value);
  }
  Planner p(model, opt, b);
  if (c.arch == Arch::kLlama)
    map_llama(c, p);
  else
    map_gpt2(c, p);
  ConvertResult r;
  b.write(path, opt, r);
}

}  // namespace braid::tune
