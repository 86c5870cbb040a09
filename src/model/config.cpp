// Hyperparameters from GGUF metadata, with llama.cpp's key names and defaults.
#include <cmath>
#include <string>

#include "braid/error.h"
#include "braid/model.h"

namespace braid {

const char* arch_name(Arch a) {
  switch (a) {
    case Arch::Llama:
      return "llama";
    case Arch::Qwen2:
      return "qwen2";
    case Arch::GPT2:
      return "gpt2";
  }
  return "?";
}

namespace {

// Bounds that keep every size computation far from overflow, yet fit any real model.
constexpr int64_t kMaxWidth = 1 << 20;
constexpr int64_t kMaxLayers = 1 << 12;
constexpr int64_t kMaxVocab = 1 << 24;
constexpr int64_t kMaxCtx = 1 << 24;

int get_int(const GgufFile& g, const std::string& key, int64_t lo, int64_t hi) {
  const int64_t v = g.get_i64(key);
  check(v >= lo && v <= hi, g.label(), ": metadata key ", key, " = ", v, " is outside [", lo, ", ", hi, "]");
  return static_cast<int>(v);
}

int get_int(const GgufFile& g, const std::string& key, int64_t lo, int64_t hi, int64_t dflt) {
  if (!g.has(key)) return static_cast<int>(dflt);
  return get_int(g, key, lo, hi);
}

float get_float(const GgufFile& g, const std::string& key, double lo, double hi, double dflt) {
  const double v = g.get_f64(key, dflt);
  check(std::isfinite(v) && v >= lo && v <= hi, g.label(), ": metadata key ", key, " = ", v, " is outside [",
        lo, ", ", hi, "]");
  return static_cast<float>(v);
}

}  // namespace

ModelConfig ModelConfig::from_gguf(const GgufFile& g) {
  const std::string& label = g.label();
  const std::string a = g.get_str("general.architecture");
  ModelConfig c;
  if (a == "llama") {
    c.arch = Arch::Llama;
  } else if (a == "qwen2") {
    c.arch = Arch::Qwen2;
  } else if (a == "gpt2") {
    c.arch = Arch::GPT2;
  } else {
    fail(label, ": unsupported architecture '", a, "' (braid runs llama, qwen2 and gpt2)");
  }
  const std::string p = a + ".";
  c.dim = get_int(g, p + "embedding_length", 1, kMaxWidth);
  c.n_layers = get_int(g, p + "block_count", 1, kMaxLayers);
  c.ffn_dim = get_int(g, p + "feed_forward_length", 1, kMaxWidth);
  c.n_heads = get_int(g, p + "attention.head_count", 1, kMaxWidth);
  c.n_kv_heads = get_int(g, p + "attention.head_count_kv", 1, kMaxWidth, c.n_heads);
  c.n_ctx_train = get_int(g, p + "context_length", 1, kMaxCtx);
  check(c.n_heads % c.n_kv_heads == 0, label, ": ", c.n_heads, " attention heads are not a multiple of ",
        c.n_kv_heads, " key/value heads");
  if (c.arch == Arch::GPT2) {
    check(c.n_kv_heads == c.n_heads, label, ": gpt2 has no grouped-query attention");
    check(c.dim % c.n_heads == 0, label, ": embedding width ", c.dim, " is not a multiple of ", c.n_heads,
          " heads");
    c.head_dim = c.dim / c.n_heads;
    c.norm_eps = get_float(g, p + "attention.layer_norm_epsilon", 0, 1, 1e-5);
    c.rope_dim = 0;
  } else {
    const int dflt_head = c.dim % c.n_heads == 0 ? c.dim / c.n_heads : 0;
    c.head_dim = get_int(g, p + "attention.key_length", 1, kMaxWidth, dflt_head);
    check(c.head_dim > 0, label, ": embedding width ", c.dim, " is not a multiple of ", c.n_heads,
          " heads and attention.key_length is not given");
    const int vlen = get_int(g, p + "attention.value_length", 1, kMaxWidth, c.head_dim);
    check(vlen == c.head_dim, label, ": key length ", c.head_dim, " differs from value length ", vlen,
          ", which braid does not support");
    check(static_cast<int64_t>(c.n_heads) * c.head_dim <= kMaxWidth, label, ": attention is too wide");
    c.norm_eps = get_float(g, p + "attention.layer_norm_rms_epsilon", 0, 1, 1e-5);
    c.rope_theta = get_float(g, p + "rope.freq_base", 1e-3, 1e12, 10000.0);
    c.rope_dim = get_int(g, p + "rope.dimension_count", 2, c.head_dim, c.head_dim);
    check(c.rope_dim % 2 == 0, label, ": rope.dimension_count ", c.rope_dim, " is odd");
    c.rope_neox = c.arch == Arch::Qwen2;
    // Context scaling: "linear" divides positions by the factor; llama3's per-frequency
    // scaling arrives as the rope_freqs.weight tensor (read with the weights).
    const std::string type = g.get_str(p + "rope.scaling.type", "none");
    if (type == "linear") {
      c.rope_factor = get_float(g, p + "rope.scaling.factor", 1e-6, 1e6, 1.0);
      c.rope_freq_scale = 1.0f / c.rope_factor;
    } else if (type == "llama3") {
      c.rope_factor = get_float(g, p + "rope.scaling.factor", 1e-6, 1e6, 8.0);
      c.rope_low_freq_factor = get_float(g, p + "rope.scaling.low_freq_factor", 1e-6, 1e6, 1.0);
      c.rope_high_freq_factor = get_float(g, p + "rope.scaling.high_freq_factor", 1e-6, 1e6, 4.0);
      check(c.rope_high_freq_factor > c.rope_low_freq_factor, label,
            ": llama3 rope scaling needs high_freq_factor > low_freq_factor");
    } else if (type != "none") {
      fail(label, ": rope scaling '", type, "' is not supported (braid knows none, linear and llama3)");
    } else if (g.has(p + "rope.scale_linear")) {  // older llama.cpp files
      c.rope_factor = get_float(g, p + "rope.scale_linear", 1e-6, 1e6, 1.0);
      c.rope_freq_scale = 1.0f / c.rope_factor;
    }
    c.rope_orig_ctx = get_int(g, p + "rope.scaling.original_context_length", 1, kMaxCtx, 0);
  }
  // n_vocab comes from token_embd (the tokenizer may list a different count).
  const Tensor* embd = g.find_tensor("token_embd.weight");
  check(embd != nullptr, label, ": missing tensor token_embd.weight");
  check(embd->n_dims == 2 && embd->ne[0] == c.dim && embd->ne[1] >= 1 && embd->ne[1] <= kMaxVocab, label,
        ": tensor token_embd.weight has shape ", embd->shape_string(), ", expected [", c.dim, ", n_vocab]");
  c.n_vocab = static_cast<int>(embd->ne[1]);
  c.tied_output = g.find_tensor("output.weight") == nullptr;
  return c;
}

std::vector<float> llama3_rope_factors(float theta, int rope_dim, float factor, float low_freq_factor,
                                       float high_freq_factor, int orig_ctx) {
  // As transformers' _compute_llama3_parameters: long wavelengths slow down by `factor`,
  // short ones stay, and the band between is interpolated smoothly.
  const double pi = 3.14159265358979323846;
  const double low_wavelen = orig_ctx / static_cast<double>(low_freq_factor);
  const double high_wavelen = orig_ctx / static_cast<double>(high_freq_factor);
  std::vector<float> out(static_cast<size_t>(rope_dim / 2));
  for (int i = 0; i < rope_dim / 2; ++i) {
    const double freq = std::pow(static_cast<double>(theta), -2.0 * i / rope_dim);
    const double wavelen = 2 * pi / freq;
    double f;
    if (wavelen < high_wavelen) {
      f = 1;
    } else if (wavelen > low_wavelen) {
      f = factor;
    } else {
      const double smooth = (orig_ctx / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
      f = 1.0 / ((1 - smooth) / factor + smooth);
    }
    out[static_cast<size_t>(i)] = static_cast<float>(f);
  }
  return out;
}

}  // namespace braid
