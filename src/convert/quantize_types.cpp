// Quantization mixes and the per-tensor type rules of llama.cpp's llama_tensor_get_type
// (src/llama-quant.cpp), for the mixes braid writes.
#include <algorithm>
#include <cctype>
#include <cstdio>
#include <map>

#include "braid/error.h"
#include "braid/quantize.h"

namespace braid {

namespace {

struct MixInfo {
  QuantMix mix;
  const char* name;
  DType base;
};

constexpr MixInfo kMixes[] = {
    {QuantMix::kF32, "F32", DType::F32},        {QuantMix::kF16, "F16", DType::F16},
    {QuantMix::kBF16, "BF16", DType::BF16},     {QuantMix::kQ4_0, "Q4_0", DType::Q4_0},
    {QuantMix::kQ4_1, "Q4_1", DType::Q4_1},     {QuantMix::kQ5_0, "Q5_0", DType::Q5_0},
    {QuantMix::kQ5_1, "Q5_1", DType::Q5_1},     {QuantMix::kQ8_0, "Q8_0", DType::Q8_0},
    {QuantMix::kQ4_K_S, "Q4_K_S", DType::Q4_K}, {QuantMix::kQ4_K_M, "Q4_K_M", DType::Q4_K},
    {QuantMix::kQ5_K_S, "Q5_K_S", DType::Q5_K}, {QuantMix::kQ5_K_M, "Q5_K_M", DType::Q5_K},
    {QuantMix::kQ6_K, "Q6_K", DType::Q6_K},
};

const MixInfo& info(QuantMix m) {
  for (const MixInfo& i : kMixes)
    if (i.mix == m) return i;
  fail("unknown quantization mix ", static_cast<uint32_t>(m));
}

bool is_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

// Categories of llama.cpp's tensor_get_category that the rules below distinguish.
enum class Category { kTokenEmbd, kOutput, kAttnV, kFfnDown, kOther };

Category category(const std::string& name) {
  if (name == "output.weight") return Category::kOutput;
  if (name == "token_embd.weight") return Category::kTokenEmbd;
  // A fused qkv (gpt2) holds v too: llama.cpp's category_is_attn_v covers both.
  if (name.find("attn_v.weight") != std::string::npos || name.find("attn_qkv.weight") != std::string::npos)
    return Category::kAttnV;
  if (name.find("ffn_down") != std::string::npos) return Category::kFfnDown;
  return Category::kOther;
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// llama.cpp's tensor_allows_quantization, for the tensors of the architectures braid runs.
bool allows_quantization(const Tensor& t) {
  if (t.n_dims < 2) return false;
  if (!ends_with(t.name, "weight")) return false;
  if (t.name.find("_norm.weight") != std::string::npos) return false;
  if (t.name == "position_embd.weight" || t.name == "token_types.weight") return false;
  return is_float(t.type) || dtype_info(t.type).block_size > 1;
}

// The layer number of "blk.N.*", else -1.
int layer_of(const std::string& name) {
  int layer = -1;
  if (std::sscanf(name.c_str(), "blk.%d.", &layer) != 1) return -1;
  return layer;
}

bool is_block_type(DType t) { return dtype_info(t).block_size > 1; }

// llama.cpp's tensor_type_fallback: a type whose blocks fit rows of `cols`.
DType fallback_type(DType t, int64_t cols) {
  if (cols % dtype_info(t).block_size == 0) return t;
  DType r;
  switch (t) {
    case DType::Q4_K:
      r = DType::Q5_0;
      break;
    case DType::Q5_K:
      r = DType::Q5_1;
      break;
    case DType::Q6_K:
      r = DType::Q8_0;
      break;
    default:  // a 32-element type: nothing smaller to fall back to
      r = DType::F16;
  }
  if (cols % dtype_info(r).block_size != 0) r = DType::F16;
  return r;
}

}  // namespace

const char* quant_mix_name(QuantMix m) { return info(m).name; }

std::string quant_mix_names() {
  std::string s;
  for (const MixInfo& i : kMixes) s += std::string(s.empty() ? "" : ", ") + i.name;
  return s + ", Q4_K (= Q4_K_M), Q5_K (= Q5_K_M)";
}

QuantMix quant_mix_from_name(const std::string& name) {
  std::string up = name;
  for (char& c : up) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (up == "Q4_K") return QuantMix::kQ4_K_M;
  if (up == "Q5_K") return QuantMix::kQ5_K_M;
  for (const MixInfo& i : kMixes)
    if (up == i.name) return i.mix;
  fail("unknown quantization type '", name, "' (expected one of: ", quant_mix_names(), ")");
}

bool quant_mix_from_file_type(uint32_t v, QuantMix* out) {
  for (const MixInfo& i : kMixes) {
    if (static_cast<uint32_t>(i.mix) == v) {
      *out = i.mix;
      return true;
    }
  }
  return false;
}

DType quant_mix_base_type(QuantMix m) { return info(m).base; }

bool quant_use_more_bits(int i, int n) { return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2; }

std::vector<TensorTypeChoice> choose_tensor_types(QuantMix mix, const std::vector<Tensor>& tensors,
                                                  int n_layers, bool pure) {
  const DType base = quant_mix_base_type(mix);
  const bool quantized_mix = is_block_type(base);
  bool tied = true;
  for (const Tensor& t : tensors) tied = tied && t.name != "output.weight";

  // llama.cpp counts attn_v and ffn_down tensors in layer order; index i of n.
  std::map<std::string, int> attn_v_index;
  {
    std::vector<std::pair<int, std::string>> v;
    for (const Tensor& t : tensors)
      if (category(t.name) == Category::kAttnV) v.emplace_back(layer_of(t.name), t.name);
    std::sort(v.begin(), v.end());
    for (size_t i = 0; i < v.size(); ++i) attn_v_index[v[i].second] = static_cast<int>(i);
  }
  const int n_attn_v = static_cast<int>(attn_v_index.size());

  std::vector<TensorTypeChoice> out(tensors.size());
  for (size_t k = 0; k < tensors.size(); ++k) {
    const Tensor& t = tensors[k];
    TensorTypeChoice& c = out[k];
    c.quantizable = allows_quantization(t);
    if (!c.quantizable) {
      c.type = c.preferred = t.type;
      continue;
    }
    DType type = base;
    if (quantized_mix && !pure) {
      const Category cat = category(t.name);
      const bool m_mix = mix == QuantMix::kQ4_K_M || mix == QuantMix::kQ5_K_M;
      if (cat == Category::kOutput || (tied && cat == Category::kTokenEmbd)) {
        // The LM head is the most sensitive matrix: q6_K unless the mix is q8_0 already.
        if (t.ne[0] % dtype_info(base).block_size != 0) {
          type = DType::Q8_0;
        } else if (base != DType::Q8_0) {
          type = DType::Q6_K;
        }
      } else if (cat == Category::kAttnV) {
        const int i = attn_v_index[t.name];
        if (m_mix && quant_use_more_bits(i, n_attn_v)) {
          type = DType::Q6_K;
        } else if (mix == QuantMix::kQ4_K_S && i < 4) {
          type = DType::Q5_K;
        }
      } else if (cat == Category::kFfnDown) {
        const int i = std::max(0, layer_of(t.name));
        if (m_mix && quant_use_more_bits(i, n_layers)) {
          type = DType::Q6_K;
        } else if (mix == QuantMix::kQ4_K_S && i < n_layers / 8) {
          type = DType::Q5_K;
        }
      }
    }
    c.preferred = type;
    c.type = is_block_type(type) ? fallback_type(type, t.ne[0]) : type;
    c.fallback = c.type != c.preferred;
  }
  return out;
}

std::string type_counts_string(const std::vector<std::pair<DType, size_t>>& counts) {
  std::string s;
  for (const auto& [type, n] : counts) s += cat(s.empty() ? "" : ", ", dtype_name(type), ": ", n);
  return s;
}

}  // namespace braid
