// ModelConfig: reading Hugging Face config.json files and braid's own JSON form.
#include <nlohmann/json.hpp>

#include "braid/error.h"
#include "braid/train.h"

namespace braid::tune {
namespace {

using nlohmann::json;

json parse(const std::string& text, const std::string& label) {
  try {
    json j = json::parse(text);
    check(j.is_object(), label, ": config is not a JSON object");
    return j;
  } catch (const json::exception& e) {
    fail(label, ": invalid JSON: ", e.what());
  }
}

// The integer field `key`, or `def` when absent or null (def < 0: required).
int get_int(const json& j, const char* key, int def, const std::string& label) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) {
    check(def >= 0, label, ": config has no ", key);
    return def;
  }
  check(it->is_number_integer(), label, ": config field ", key, " is not an integer");
  const int64_t v = it->get<int64_t>();
  check(v > 0 && v <= (int64_t(1) << 24), label, ": config field ", key, " = ", v, " is out of range");
  return static_cast<int>(v);
}

double get_num(const json& j, const char* key, double def, const std::string& label) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  check(it->is_number(), label, ": config field ", key, " is not a number");
  return it->get<double>();
}

bool get_bool(const json& j, const char* key, bool def, const std::string& label) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  check(it->is_boolean(), label, ": config field ", key, " is not a boolean");
  return it->get<bool>();
}

std::string get_str(const json& j, const char* key, const std::string& def, const std::string& label) {
  auto it = j.find(key);
  if (it == j.end() || it->is_null()) return def;
  check(it->is_string(), label, ": config field ", key, " is not a string");
  return it->get<std::string>();
}

// rope_scaling (transformers 4) or rope_parameters (transformers 5) must be plain RoPE.
void read_rope(const json& j, ModelConfig& c, const std::string& label) {
  c.rope_theta = get_num(j, "rope_theta", 10000.0, label);
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    auto it = j.find(key);
    if (it == j.end() || it->is_null()) continue;
    check(it->is_object(), label, ": config field ", key, " is not an object");
    const std::string type = get_str(*it, "rope_type", get_str(*it, "type", "default", label), label);
    check(type == "default", label, ": rope type '", type, "' is not supported for training");
    c.rope_theta = get_num(*it, "rope_theta", c.rope_theta, label);
  }
}

ModelConfig llama_config(const json& j, const std::string& label) {
  ModelConfig c;
  c.arch = Arch::kLlama;
  c.dim = get_int(j, "hidden_size", -1, label);
  c.ffn_dim = get_int(j, "intermediate_size", -1, label);
  c.n_layer = get_int(j, "num_hidden_layers", -1, label);
  c.n_head = get_int(j, "num_attention_heads", -1, label);
  c.n_kv_head = get_int(j, "num_key_value_heads", c.n_head, label);
  c.head_dim = get_int(j, "head_dim", c.dim / c.n_head, label);
  c.vocab = get_int(j, "vocab_size", -1, label);
  c.max_seq = get_int(j, "max_position_embeddings", 2048, label);
  c.norm_eps = static_cast<float>(get_num(j, "rms_norm_eps", 1e-6, label));
  c.tied_head = get_bool(j, "tie_word_embeddings", false, label);
  read_rope(j, c, label);
  check(!get_bool(j, "attention_bias", false, label), label, ": attention_bias is not supported");
  check(!get_bool(j, "mlp_bias", false, label), label, ": mlp_bias is not supported");
  const std::string act = get_str(j, "hidden_act", "silu", label);
  check(act == "silu", label, ": hidden_act '", act, "' is not supported (only silu)");
  return c;
}

ModelConfig gpt2_config(const json& j, const std::string& label) {
  ModelConfig c;
  c.arch = Arch::kGpt2;
  c.dim = get_int(j, "n_embd", -1, label);
  c.n_layer = get_int(j, "n_layer", -1, label);
  c.n_head = get_int(j, "n_head", -1, label);
  c.n_kv_head = c.n_head;
  check(c.dim % c.n_head == 0, label, ": n_embd ", c.dim, " is not a multiple of n_head ", c.n_head);
  c.head_dim = c.dim / c.n_head;
  c.ffn_dim = get_int(j, "n_inner", 4 * c.dim, label);
  c.vocab = get_int(j, "vocab_size", -1, label);
  c.max_seq = get_int(j, "n_positions", 1024, label);
  c.norm_eps = static_cast<float>(get_num(j, "layer_norm_epsilon", 1e-5, label));
  c.tied_head = get_bool(j, "tie_word_embeddings", true, label);
  const std::string act = get_str(j, "activation_function", "gelu_new", label);
  check(act == "gelu_new" || act == "gelu_pytorch_tanh", label, ": activation_function '", act,
        "' is not supported (only the tanh GELU: gelu_new, gelu_pytorch_tanh)");
  check(get_bool(j, "scale_attn_weights", true, label), label, ": scale_attn_weights=false is not supported");
  check(!get_bool(j, "scale_attn_by_inverse_layer_idx", false, label), label,
        ": scale_attn_by_inverse_layer_idx is not supported");
  return c;
}

const char* arch_name(Arch a) { return a == Arch::kLlama ? "llama" : "gpt2"; }

}  // namespace

ModelConfig ModelConfig::from_hf_json(const std::string& json_text, const std::string& label) {
  const json j = parse(json_text, label);
  const std::string type = get_str(j, "model_type", "", label);
  ModelConfig c;
  if (type == "llama") {
    c = llama_config(j, label);
  } else if (type == "gpt2") {
    c = gpt2_config(j, label);
  } else {
    fail(label, ": model_type '", type, "' is not supported for training (llama, gpt2)");
  }
  c.validate(label);
  return c;
}

std::string ModelConfig::to_json() const {
  json j = {{"arch", arch_name(arch)}, {"n_layer", n_layer},       {"dim", dim},
            {"n_head", n_head},        {"n_kv_head", n_kv_head},   {"head_dim", head_dim},
            {"ffn_dim", ffn_dim},      {"vocab", vocab},           {"max_seq", max_seq},
            {"norm_eps", norm_eps},    {"rope_theta", rope_theta}, {"tied_head", tied_head}};
  return j.dump();
}

ModelConfig ModelConfig::from_json(const std::string& json_text, const std::string& label) {
  const json j = parse(json_text, label);
  ModelConfig c;
  const std::string arch = get_str(j, "arch", "", label);
  if (arch == "llama") {
    c.arch = Arch::kLlama;
  } else if (arch == "gpt2") {
    c.arch = Arch::kGpt2;
  } else {
    fail(label, ": unknown arch '", arch, "'");
  }
  c.n_layer = get_int(j, "n_layer", -1, label);
  c.dim = get_int(j, "dim", -1, label);
  c.n_head = get_int(j, "n_head", -1, label);
  c.n_kv_head = get_int(j, "n_kv_head", -1, label);
  c.head_dim = get_int(j, "head_dim", -1, label);
  c.ffn_dim = get_int(j, "ffn_dim", -1, label);
  c.vocab = get_int(j, "vocab", -1, label);
  c.max_seq = get_int(j, "max_seq", -1, label);
  c.norm_eps = static_cast<float>(get_num(j, "norm_eps", 0.0, label));
  c.rope_theta = get_num(j, "rope_theta", 10000.0, label);
  c.tied_head = get_bool(j, "tied_head", false, label);
  c.validate(label);
  return c;
}

void ModelConfig::validate(const std::string& label) const {
  check(n_layer > 0 && dim > 0 && n_head > 0 && n_kv_head > 0 && head_dim > 0 && ffn_dim > 0 && vocab > 0 &&
            max_seq > 0,
        label, ": model sizes must be positive");
  check(n_head % n_kv_head == 0, label, ": n_head ", n_head, " is not a multiple of n_kv_head ", n_kv_head);
  check(norm_eps > 0.0f, label, ": norm epsilon must be positive");
  if (arch == Arch::kLlama) {
    check(head_dim % 2 == 0, label, ": head_dim ", head_dim, " must be even for RoPE");
    check(rope_theta > 0.0, label, ": rope_theta must be positive");
  } else {
    check(n_kv_head == n_head && int64_t(n_head) * head_dim == dim, label,
          ": GPT-2 needs n_head * head_dim == dim and no grouped KV heads");
  }
  // Keep every buffer size far from overflow (1 << 40 floats is 4 TiB); in double,
  // since the products of unchecked sizes could overflow any integer.
  const double per_layer = double(n_head + 2.0 * n_kv_head) * head_dim * dim +
                           double(n_head) * head_dim * dim + 3.0 * ffn_dim * dim;
  const double total = per_layer * n_layer + 2.0 * vocab * dim + double(max_seq) * dim;
  check(total < double(int64_t(1) << 40), label, ": model is too large (", total, " parameters)");
}

}  // namespace braid::tune
