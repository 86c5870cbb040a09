// Hugging Face folders -> GGUF with llama.cpp's names and layouts (its
// convert_hf_to_gguf.py: LlamaModel, Qwen2Model, GPT2Model).
#include <filesystem>
#include <memory>

#include "braid/error.h"
#include "braid/mapped_file.h"
#include "convert/converters.h"
#include "convert/hf_tensors.h"

namespace braid::convert {
namespace {

namespace fs = std::filesystem;

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// Plans GGUF tensors from HF tensors.
class Mapper {
 public:
  Mapper(HfTensors& t, const ConvertOptions& opt, Builder& b) : t_(t), opt_(opt), b_(b) {}

  // HF tensor `hf` of PyTorch shape `shape` -> GGUF tensor `gguf`. kSame and
  // kPermuteRows reverse the dimensions (PyTorch [out][in] is GGUF ne {in, out});
  // kTranspose keeps them (GPT-2 Conv1D [in][out] becomes ne {in, out} by moving data).
  void map(const std::string& gguf, const std::string& hf, const std::vector<int64_t>& shape,
           Layout layout = Layout::kSame, int64_t n_head = 0) {
    const StTensor& st = t_.need(hf, shape);
    TensorPlan p;
    p.name = gguf;
    p.ne.assign(shape.rbegin(), shape.rend());
    if (layout == Layout::kTranspose) p.ne = shape;
    p.type = output_type(opt_, shape.size());
    p.src = st.data;
    p.src_type = st_float_type(st);
    p.layout = layout;
    p.n_head = n_head;
    b_.add(std::move(p));
  }

  // A tensor computed here (rope_freqs), kept alive by the builder.
  void add_f32(const std::string& gguf, std::vector<float> values) {
    auto data = std::make_shared<std::vector<float>>(std::move(values));
    TensorPlan p;
    p.name = gguf;
    p.ne = {static_cast<int64_t>(data->size())};
    p.src = reinterpret_cast<const uint8_t*>(data->data());
    b_.keep(data);
    b_.add(std::move(p));
  }

 private:
  HfTensors& t_;
  const ConvertOptions& opt_;
  Builder& b_;
};

void set_u32(GgufWriter& w, const std::string& key, int64_t v) {
  w.set(key, GgufValue::u32(static_cast<uint32_t>(v)));
}

// Llama, Mistral and Qwen2 share HF's LlamaForCausalLM naming.
void map_llama_like(const HfConfig& c, HfTensors& t, Mapper& m) {
  const bool permute = c.arch == "llama";  // qwen2 rotates halves (NEOX) as HF does
  const Layout qk = permute ? Layout::kPermuteRows : Layout::kSame;
  const int64_t h = c.hidden_size, q = c.n_heads * c.head_dim, kv = c.n_kv_heads * c.head_dim;
  const int64_t f = c.ffn_size, v = c.vocab_size;
  m.map("token_embd.weight", "model.embed_tokens.weight", {v, h});
  if (c.rope_scaling == "llama3") m.add_f32("rope_freqs.weight", llama3_rope_factors(c));
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string hf = cat("model.layers.", i, "."), gg = cat("blk.", i, ".");
    m.map(gg + "attn_norm.weight", hf + "input_layernorm.weight", {h});
    m.map(gg + "attn_q.weight", hf + "self_attn.q_proj.weight", {q, h}, qk, c.n_heads);
    m.map(gg + "attn_k.weight", hf + "self_attn.k_proj.weight", {kv, h}, qk, c.n_kv_heads);
    m.map(gg + "attn_v.weight", hf + "self_attn.v_proj.weight", {kv, h});
    if (c.attention_bias) {
      // Biases follow their rows through the permutation, as in llama.cpp.
      m.map(gg + "attn_q.bias", hf + "self_attn.q_proj.bias", {q}, qk, c.n_heads);
      m.map(gg + "attn_k.bias", hf + "self_attn.k_proj.bias", {kv}, qk, c.n_kv_heads);
      m.map(gg + "attn_v.bias", hf + "self_attn.v_proj.bias", {kv});
    }
    m.map(gg + "attn_output.weight", hf + "self_attn.o_proj.weight", {h, q});
    if (c.attention_bias && c.arch == "llama")
      m.map(gg + "attn_output.bias", hf + "self_attn.o_proj.bias", {h});
    m.map(gg + "ffn_norm.weight", hf + "post_attention_layernorm.weight", {h});
    m.map(gg + "ffn_gate.weight", hf + "mlp.gate_proj.weight", {f, h});
    m.map(gg + "ffn_down.weight", hf + "mlp.down_proj.weight", {h, f});
    m.map(gg + "ffn_up.weight", hf + "mlp.up_proj.weight", {f, h});
  }
  m.map("output_norm.weight", "model.norm.weight", {h});
  // A tied head is token_embd; llama.cpp then writes no output.weight.
  if (!c.tie_word_embeddings) m.map("output.weight", "lm_head.weight", {v, h});
}

void map_gpt2(const HfConfig& c, HfTensors& t, Mapper& m) {
  // GPT2LMHeadModel saves "transformer.h.0..."; the original checkpoints have no prefix.
  const std::string pre = t.find("transformer.wte.weight") || !t.find("wte.weight") ? "transformer." : "";
  const int64_t h = c.hidden_size, f = c.ffn_size, v = c.vocab_size;
  m.map("token_embd.weight", pre + "wte.weight", {v, h});
  m.map("position_embd.weight", pre + "wpe.weight", {c.context_length, h});
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string hf = cat(pre, "h.", i, "."), gg = cat("blk.", i, ".");
    m.map(gg + "attn_norm.weight", hf + "ln_1.weight", {h});
    m.map(gg + "attn_norm.bias", hf + "ln_1.bias", {h});
    // Conv1D stores [in][out]; GGUF wants rows of `in` values, one per output.
    m.map(gg + "attn_qkv.weight", hf + "attn.c_attn.weight", {h, 3 * h}, Layout::kTranspose);
    m.map(gg + "attn_qkv.bias", hf + "attn.c_attn.bias", {3 * h});
    m.map(gg + "attn_output.weight", hf + "attn.c_proj.weight", {h, h}, Layout::kTranspose);
    m.map(gg + "attn_output.bias", hf + "attn.c_proj.bias", {h});
    m.map(gg + "ffn_norm.weight", hf + "ln_2.weight", {h});
    m.map(gg + "ffn_norm.bias", hf + "ln_2.bias", {h});
    m.map(gg + "ffn_up.weight", hf + "mlp.c_fc.weight", {h, f}, Layout::kTranspose);
    m.map(gg + "ffn_up.bias", hf + "mlp.c_fc.bias", {f});
    m.map(gg + "ffn_down.weight", hf + "mlp.c_proj.weight", {f, h}, Layout::kTranspose);
    m.map(gg + "ffn_down.bias", hf + "mlp.c_proj.bias", {h});
  }
  m.map("output_norm.weight", pre + "ln_f.weight", {h});
  m.map("output_norm.bias", pre + "ln_f.bias", {h});
  // llama.cpp's GPT2Model writes the tied head as its own copy of the embeddings.
  m.map("output.weight", c.tie_word_embeddings ? pre + "wte.weight" : "lm_head.weight", {v, h});
}

void write_hparams(const HfConfig& c, GgufWriter& w) {
  const std::string a = c.arch + ".";
  set_u32(w, a + "vocab_size", c.vocab_size);
  set_u32(w, a + "context_length", c.context_length);
  set_u32(w, a + "embedding_length", c.hidden_size);
  set_u32(w, a + "block_count", c.n_layers);
  set_u32(w, a + "feed_forward_length", c.ffn_size);
  set_u32(w, a + "attention.head_count", c.n_heads);
  if (c.arch == "gpt2") {
    w.set(a + "attention.layer_norm_epsilon", GgufValue::f32(static_cast<float>(c.norm_eps)));
    return;
  }
  set_u32(w, a + "attention.head_count_kv", c.n_kv_heads);
  w.set(a + "rope.freq_base", GgufValue::f32(static_cast<float>(c.rope_theta)));
  w.set(a + "attention.layer_norm_rms_epsilon", GgufValue::f32(static_cast<float>(c.norm_eps)));
  set_u32(w, a + "rope.dimension_count", c.head_dim);
  if (c.head_dim_explicit) {
    set_u32(w, a + "attention.key_length", c.head_dim);
    set_u32(w, a + "attention.value_length", c.head_dim);
  }
  if (c.rope_scaling == "linear") {
    w.set(a + "rope.scaling.type", GgufValue::string("linear"));
    w.set(a + "rope.scaling.factor", GgufValue::f32(static_cast<float>(c.rope_factor)));
  }
  // llama3 scaling travels as the rope_freqs.weight tensor, as in llama.cpp.
}

}  // namespace

void build_hf(const std::string& dir, const ConvertOptions& opt, Builder& b, ConvertResult& r) {
  const std::string config_path = (fs::path(dir) / "config.json").string();
  if (!fs::exists(config_path)) fail(dir, ": no config.json (not a Hugging Face model folder)");
  const std::string config_text = read_file(config_path);
  const HfConfig c = parse_hf_config(config_text, config_path);

  HfTensors tensors(dir);
  for (const auto& f : tensors.files()) b.keep(f);
  GgufWriter& w = b.meta();
  w.set("general.architecture", GgufValue::string(c.arch));
  w.set("general.name", GgufValue::string(opt.name.empty() ? source_name(dir) : opt.name));
  w.set("general.file_type", GgufValue::u32(gguf_file_type(opt.type)));
  write_hparams(c, w);

  Mapper m(tensors, opt, b);
  if (c.arch == "gpt2")
    map_gpt2(c, tensors, m);
  else
    map_llama_like(c, tensors, m);

  // A weight nobody maps means config.json and the checkpoint disagree (or a variant
  // braid does not know); silently dropping it would give a wrong model.
  auto ignorable = [&](const std::string& n) {
    if (ends_with(n, "rotary_emb.inv_freq")) return true;  // buffers older exports saved
    if (ends_with(n, ".attn.bias") || ends_with(n, ".attn.masked_bias"))
      return c.arch == "gpt2";  // causal masks
    return n == "lm_head.weight" && c.tie_word_embeddings;
  };
  std::vector<std::string> extra = tensors.unused(ignorable);
  if (!extra.empty())
    fail(tensors.file_of(extra[0]), ": unexpected tensor ", extra[0], " (", extra.size(),
         " tensors are not part of a ", c.hf_architecture, " as config.json describes it)");

  std::string tok = opt.tokenizer;
  if (tok.empty() && fs::exists(fs::path(dir) / "tokenizer.json"))
    tok = (fs::path(dir) / "tokenizer.json").string();
  if (!tok.empty()) {
    add_hf_tokenizer(tok, w, config_text);
    r.has_tokenizer = true;
  }
  r.architecture = c.arch;
}

}  // namespace braid::convert
