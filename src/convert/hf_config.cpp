// config.json of a Hugging Face model -> HfConfig, every field type- and range-checked.
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>

#include "braid/convert.h"
#include "braid/error.h"
#include "convert/converters.h"

namespace braid {
namespace {

using json = nlohmann::json;

// A JSON value shortened for an error message.
std::string brief(const json& v) {
  std::string s = v.dump();
  if (s.size() > 40) s = s.substr(0, 37) + "...";
  return s;
}

// Typed access to one JSON object, with errors that name the file and the key.
class Fields {
 public:
  Fields(const json& obj, std::string label, std::string prefix)
      : obj_(obj), label_(std::move(label)), prefix_(std::move(prefix)) {}

  // The value at key, or nullptr when absent or null (HF writes null for "unset").
  const json* get(const char* key) const {
    auto it = obj_.find(key);
    if (it == obj_.end() || it->is_null()) return nullptr;
    return &*it;
  }

  [[noreturn]] void bad(const char* key, const std::string& what) const {
    fail(label_, ": key ", prefix_, key, ": ", what);
  }

  // A positive integer at most `max`. JSON floats with an integral value are accepted
  // (some exporters write 4096.0).
  int64_t pos_int(const char* key, int64_t max) const {
    const json* v = get(key);
    if (!v) fail(label_, ": missing key ", prefix_, key);
    return pos_int_value(key, *v, max);
  }
  int64_t pos_int(const char* key, int64_t max, int64_t dflt) const {
    const json* v = get(key);
    return v ? pos_int_value(key, *v, max) : dflt;
  }

  // A finite number > 0.
  double pos_num(const char* key, double dflt) const {
    const json* v = get(key);
    if (!v) return dflt;
    if (!v->is_number()) bad(key, cat("expected a number, got ", brief(*v)));
    double d = v->get<double>();
    if (!std::isfinite(d) || d <= 0) bad(key, cat("expected a positive number, got ", brief(*v)));
    return d;
  }

  bool boolean(const char* key, bool dflt) const {
    const json* v = get(key);
    if (!v) return dflt;
    if (!v->is_boolean()) bad(key, cat("expected true or false, got ", brief(*v)));
    return v->get<bool>();
  }

  std::string str(const char* key, const std::string& dflt) const {
    const json* v = get(key);
    if (!v) return dflt;
    if (!v->is_string()) bad(key, cat("expected a string, got ", brief(*v)));
    return v->get<std::string>();
  }

  bool has(const char* key) const { return get(key) != nullptr; }

 private:
  int64_t pos_int_value(const char* key, const json& v, int64_t max) const {
    int64_t n = 0;
    if (v.is_number_integer()) {
      if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(max))
        bad(key, cat("value ", brief(v), " is larger than ", max));
      n = v.get<int64_t>();
    } else if (v.is_number_float()) {
      double d = v.get<double>();
      if (!(d >= 1 && d <= static_cast<double>(max)) || d != std::floor(d))
        bad(key, cat("expected a positive integer at most ", max, ", got ", brief(v)));
      n = static_cast<int64_t>(d);
    } else {
      bad(key, cat("expected a positive integer, got ", brief(v)));
    }
    if (n < 1 || n > max) bad(key, cat("expected a positive integer at most ", max, ", got ", n));
    return n;
  }

  const json& obj_;
  std::string label_;
  std::string prefix_;
};

// Sane upper bounds: far above any real model, low enough that products of them cannot
// overflow 64-bit sizes.
constexpr int64_t kMaxVocab = int64_t{1} << 24;
constexpr int64_t kMaxWidth = int64_t{1} << 20;
constexpr int64_t kMaxLayers = 4096;
constexpr int64_t kMaxHeads = 4096;
constexpr int64_t kMaxContext = std::numeric_limits<int32_t>::max();
constexpr int kMaxDepth = 64;

struct ArchInfo {
  const char* hf;
  const char* gguf;
};
constexpr ArchInfo kArchs[] = {
    {"LlamaForCausalLM", "llama"},
    {"MistralForCausalLM", "llama"},
    {"Qwen2ForCausalLM", "qwen2"},
    {"GPT2LMHeadModel", "gpt2"},
};
constexpr const char* kSupported = "LlamaForCausalLM, MistralForCausalLM, Qwen2ForCausalLM, GPT2LMHeadModel";

// "architectures": ["LlamaForCausalLM"]; configs without it name model_type only.
std::string read_architecture(const Fields& f, const json& root, const std::string& label) {
  if (const json* a = f.get("architectures")) {
    if (!a->is_array() || a->empty() || !(*a)[0].is_string())
      f.bad("architectures", cat("expected a list of class names, got ", brief(*a)));
    return (*a)[0].get<std::string>();
  }
  std::string type = f.str("model_type", "");
  if (type == "llama") return "LlamaForCausalLM";
  if (type == "mistral") return "MistralForCausalLM";
  if (type == "qwen2") return "Qwen2ForCausalLM";
  if (type == "gpt2") return "GPT2LMHeadModel";
  if (type.empty()) fail(label, ": missing key architectures");
  f.bad("model_type", cat("unsupported model type \"", type, "\" (supported: ", kSupported, ")"));
}

// rope_theta and rope scaling: transformers < 5 writes "rope_theta" and "rope_scaling"
// at the top level; transformers 5 writes one "rope_parameters" object holding both.
void read_rope(const Fields& f, const json& root, const std::string& label, HfConfig& c) {
  c.rope_theta = f.pos_num("rope_theta", 10000.0);
  const char* key = nullptr;
  for (const char* k : {"rope_scaling", "rope_parameters"}) {
    if (f.has(k)) {
      key = k;
      break;
    }
  }
  if (!key) return;
  const json& rs = root[key];
  if (!rs.is_object()) f.bad(key, cat("expected an object, got ", brief(rs)));
  Fields s(rs, label, std::string(key) + ".");
  if (s.has("rope_theta")) c.rope_theta = s.pos_num("rope_theta", c.rope_theta);
  std::string type = s.str("rope_type", s.str("type", "default"));
  if (type == "default") return;
  if (type == "linear") {
    c.rope_scaling = "linear";
    if (!s.has("factor")) fail(label, ": missing key ", key, ".factor");
    c.rope_factor = s.pos_num("factor", 1.0);
    return;
  }
  if (type == "llama3") {
    c.rope_scaling = "llama3";
    c.rope_factor = s.pos_num("factor", 8.0);
    c.rope_low_freq_factor = s.pos_num("low_freq_factor", 1.0);
    c.rope_high_freq_factor = s.pos_num("high_freq_factor", 4.0);
    // Llama 3.1 keeps it inside rope_scaling; llama.cpp's converter reads the top level.
    c.rope_original_context = s.pos_int("original_max_position_embeddings", kMaxContext,
                                        f.pos_int("original_max_position_embeddings", kMaxContext, 8192));
    if (!(c.rope_high_freq_factor > c.rope_low_freq_factor))
      s.bad("high_freq_factor", cat("must be larger than low_freq_factor (", c.rope_low_freq_factor, ")"));
    return;
  }
  s.bad(s.has("rope_type") ? "rope_type" : "type",
        cat("unsupported rope scaling \"", type, "\" (supported: default, linear, llama3)"));
}

void read_llama_like(const Fields& f, const json& root, const std::string& label, HfConfig& c) {
  c.vocab_size = f.pos_int("vocab_size", kMaxVocab);
  c.hidden_size = f.pos_int("hidden_size", kMaxWidth);
  c.n_layers = f.pos_int("num_hidden_layers", kMaxLayers);
  c.n_heads = f.pos_int("num_attention_heads", kMaxHeads);
  c.n_kv_heads = f.pos_int("num_key_value_heads", kMaxHeads, c.n_heads);
  c.ffn_size = f.pos_int("intermediate_size", kMaxWidth * 4);
  c.context_length = f.pos_int("max_position_embeddings", kMaxContext);
  c.norm_eps = f.pos_num("rms_norm_eps", 1e-6);
  c.tie_word_embeddings = f.boolean("tie_word_embeddings", false);
  c.head_dim_explicit = f.has("head_dim");
  if (c.head_dim_explicit) {
    c.head_dim = f.pos_int("head_dim", kMaxWidth);
  } else {
    if (c.hidden_size % c.n_heads != 0)
      f.bad("num_attention_heads", cat(c.n_heads, " heads do not divide hidden_size ", c.hidden_size));
    c.head_dim = c.hidden_size / c.n_heads;
  }
  if (c.n_heads % c.n_kv_heads != 0)
    f.bad("num_key_value_heads",
          cat(c.n_kv_heads, " KV heads do not divide ", c.n_heads, " attention heads"));
  if (c.head_dim % 2 != 0)
    f.bad("head_dim", cat("rotary embeddings need an even head size, got ", c.head_dim));
  if (c.n_heads * c.head_dim > kMaxWidth)
    f.bad("num_attention_heads", cat(c.n_heads, " heads of ", c.head_dim, " are too wide"));
  std::string act = f.str("hidden_act", "silu");
  if (act != "silu") f.bad("hidden_act", cat("unsupported activation \"", act, "\" (supported: silu)"));
  if (c.arch == "qwen2") {
    c.attention_bias = true;  // Qwen2 always has q/k/v biases (and none on o_proj)
  } else {
    c.attention_bias = f.boolean("attention_bias", false);
    if (f.boolean("mlp_bias", false)) f.bad("mlp_bias", "MLP biases are not supported");
  }
  read_rope(f, root, label, c);
}

void read_gpt2(const Fields& f, HfConfig& c) {
  c.vocab_size = f.pos_int("vocab_size", kMaxVocab);
  c.hidden_size = f.pos_int("n_embd", kMaxWidth);
  c.n_layers = f.pos_int("n_layer", kMaxLayers);
  c.n_heads = f.pos_int("n_head", kMaxHeads);
  c.n_kv_heads = c.n_heads;
  if (c.hidden_size % c.n_heads != 0)
    f.bad("n_head", cat(c.n_heads, " heads do not divide n_embd ", c.hidden_size));
  c.head_dim = c.hidden_size / c.n_heads;
  c.ffn_size = f.pos_int("n_inner", kMaxWidth * 4, 4 * c.hidden_size);
  c.context_length =
      f.has("n_positions") ? f.pos_int("n_positions", kMaxContext) : f.pos_int("n_ctx", kMaxContext);
  c.norm_eps = f.pos_num("layer_norm_epsilon", 1e-5);
  c.tie_word_embeddings = f.boolean("tie_word_embeddings", true);
  c.attention_bias = true;
  // llama.cpp's gpt2 graph: tanh-approximated GELU, attention scaled by 1/sqrt(head_dim).
  std::string act = f.str("activation_function", "gelu_new");
  if (act != "gelu_new" && act != "gelu_pytorch_tanh")
    f.bad("activation_function",
          cat("unsupported activation \"", act, "\" (supported: gelu_new, gelu_pytorch_tanh)"));
  if (!f.boolean("scale_attn_weights", true))
    f.bad("scale_attn_weights", "unscaled attention is not supported");
  if (f.boolean("scale_attn_by_inverse_layer_idx", false))
    f.bad("scale_attn_by_inverse_layer_idx", "per-layer attention scaling is not supported");
  if (f.boolean("add_cross_attention", false))
    f.bad("add_cross_attention", "cross-attention is not supported");
}

}  // namespace

HfConfig parse_hf_config(const std::string& json_text, const std::string& label) {
  json root;
  try {
    // Refuse deep nesting before anything recursive (dump() in messages) can meet it.
    root = json::parse(json_text, [&](int depth, json::parse_event_t, json&) {
      if (depth > kMaxDepth) fail(label, ": JSON nests deeper than ", kMaxDepth, " levels");
      return true;
    });
  } catch (const json::exception& e) {
    // nlohmann's message starts with "[json.exception.parse_error.101] ".
    std::string what = e.what();
    size_t p = what.find("] ");
    if (what.rfind("[json.", 0) == 0 && p != std::string::npos) what = what.substr(p + 2);
    fail(label, ": malformed JSON: ", what);
  }
  if (!root.is_object()) fail(label, ": expected a JSON object, got ", brief(root));
  Fields f(root, label, "");

  HfConfig c;
  c.hf_architecture = read_architecture(f, root, label);
  for (const ArchInfo& a : kArchs)
    if (c.hf_architecture == a.hf) c.arch = a.gguf;
  if (c.arch.empty())
    f.bad("architectures",
          cat("unsupported architecture \"", c.hf_architecture, "\" (supported: ", kSupported, ")"));

  if (c.arch == "gpt2") {
    read_gpt2(f, c);
  } else {
    read_llama_like(f, root, label, c);
  }
  return c;
}

namespace convert {

std::vector<float> llama3_rope_factors(const HfConfig& c) {
  // convert_hf_to_gguf.py computes this with float32 torch tensors; python scalars enter
  // each operation rounded to float32, and `scalar / tensor` is reciprocal(t) * scalar.
  const int64_t dim = c.head_dim;
  const float factor = static_cast<float>(c.rope_factor);
  const float low = static_cast<float>(c.rope_low_freq_factor);
  const double old_ctx = static_cast<double>(c.rope_original_context);
  const float low_freq_wavelen = static_cast<float>(old_ctx / c.rope_low_freq_factor);
  const float high_freq_wavelen = static_cast<float>(old_ctx / c.rope_high_freq_factor);
  const float two_pi = static_cast<float>(2 * M_PI);
  const float band = static_cast<float>(c.rope_high_freq_factor - c.rope_low_freq_factor);
  std::vector<float> out;
  out.reserve(static_cast<size_t>(dim / 2));
  for (int64_t i = 0; i < dim; i += 2) {
    float expo = static_cast<float>(i) / static_cast<float>(dim);
    float freq = 1.0f / std::pow(static_cast<float>(c.rope_theta), expo);
    float wavelen = (1.0f / freq) * two_pi;
    if (wavelen < high_freq_wavelen) {
      out.push_back(1.0f);
    } else if (wavelen > low_freq_wavelen) {
      out.push_back(factor);
    } else {
      float smooth = ((1.0f / wavelen) * static_cast<float>(old_ctx) - low) / band;
      out.push_back(1.0f / ((1.0f - smooth) / factor + smooth));
    }
  }
  return out;
}

}  // namespace convert
}  // namespace braid
