// TrainModel: the parameter layout of each architecture, loading from a Hugging Face
// folder, random initialisation, and access by Hugging Face name.
#include <cmath>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "braid/error.h"
#include "braid/mapped_file.h"
#include "braid/safetensors.h"
#include "braid/train.h"
#include "braid/tune_rng.h"

namespace braid::tune {
namespace {

std::string shape_str(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

// The safetensors files of a folder: model.safetensors, or the shards that
// model.safetensors.index.json names.
std::vector<std::unique_ptr<SafetensorsFile>> open_weights(const std::string& dir) {
  namespace fs = std::filesystem;
  std::vector<std::unique_ptr<SafetensorsFile>> files;
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  if (fs::exists(single)) {
    files.push_back(SafetensorsFile::open(single.string()));
    return files;
  }
  check(fs::exists(index), dir, ": no model.safetensors or model.safetensors.index.json");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_file(index.string()));
  } catch (const nlohmann::json::exception& e) {
    fail(index.string(), ": invalid JSON: ", e.what());
  }
  auto map = j.find("weight_map");
  check(map != j.end() && map->is_object(), index.string(), ": no weight_map object");
  std::map<std::string, bool> shards;
  for (auto& [name, file] : map->items()) {
    check(file.is_string(), index.string(), ": weight_map entry ", name, " is not a file name");
    const std::string f = file.get<std::string>();
    check(f.find('/') == std::string::npos && f.find("..") == std::string::npos, index.string(),
          ": shard name '", f, "' is not a plain file name");
    shards[f] = true;
  }
  for (auto& [f, unused] : shards) files.push_back(SafetensorsFile::open((fs::path(dir) / f).string()));
  return files;
}

// The tensors of an architecture, in Hugging Face order; returns the total element count.
// Allocates nothing, so a file's claims can be checked before memory is committed.
size_t build_layout(const ModelConfig& c, ParamLayout& layout, std::vector<ParamTensor>& tensors) {
  const int64_t C = c.dim, QD = int64_t(c.n_head) * c.head_dim, KD = int64_t(c.n_kv_head) * c.head_dim;
  const int64_t F = c.ffn_dim, V = c.vocab;
  size_t off = 0;
  auto add = [&](std::string name, std::vector<int64_t> shape, bool transposed = false) {
    ParamTensor t;
    t.name = std::move(name);
    t.shape = std::move(shape);
    t.size = 1;
    for (int64_t d : t.shape) t.size *= size_t(d);
    t.offset = off;
    t.transposed = transposed;
    off += t.size;
    tensors.push_back(std::move(t));
    return tensors.back().offset;
  };
  layout.layers.resize(c.n_layer);
  if (c.arch == Arch::kLlama) {
    layout.wte = add("model.embed_tokens.weight", {V, C});
    for (int l = 0; l < c.n_layer; ++l) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      auto& L = layout.layers[l];
      // q, k, v adjacent: one fused [(H + 2*KV) * hd][C] matrix; gate, up likewise.
      L.qkv_w = add(p + "self_attn.q_proj.weight", {QD, C});
      add(p + "self_attn.k_proj.weight", {KD, C});
      add(p + "self_attn.v_proj.weight", {KD, C});
      L.o_w = add(p + "self_attn.o_proj.weight", {C, QD});
      L.fc_w = add(p + "mlp.gate_proj.weight", {F, C});
      add(p + "mlp.up_proj.weight", {F, C});
      L.proj_w = add(p + "mlp.down_proj.weight", {C, F});
      L.ln1_w = add(p + "input_layernorm.weight", {C});
      L.ln2_w = add(p + "post_attention_layernorm.weight", {C});
    }
    layout.lnf_w = add("model.norm.weight", {C});
  } else {
    layout.wte = add("transformer.wte.weight", {V, C});
    layout.wpe = add("transformer.wpe.weight", {c.max_seq, C});
    for (int l = 0; l < c.n_layer; ++l) {
      const std::string p = "transformer.h." + std::to_string(l) + ".";
      auto& L = layout.layers[l];
      L.ln1_w = add(p + "ln_1.weight", {C});
      L.ln1_b = add(p + "ln_1.bias", {C});
      L.qkv_w = add(p + "attn.c_attn.weight", {C, 3 * C}, true);
      L.qkv_b = add(p + "attn.c_attn.bias", {3 * C});
      L.o_w = add(p + "attn.c_proj.weight", {C, C}, true);
      L.o_b = add(p + "attn.c_proj.bias", {C});
      L.ln2_w = add(p + "ln_2.weight", {C});
      L.ln2_b = add(p + "ln_2.bias", {C});
      L.fc_w = add(p + "mlp.c_fc.weight", {C, F}, true);
      L.fc_b = add(p + "mlp.c_fc.bias", {F});
      L.proj_w = add(p + "mlp.c_proj.weight", {F, C}, true);
      L.proj_b = add(p + "mlp.c_proj.bias", {C});
    }
    layout.lnf_w = add("transformer.ln_f.weight", {C});
    layout.lnf_b = add("transformer.ln_f.bias", {C});
  }
  layout.head = c.tied_head ? layout.wte : add("lm_head.weight", {V, C});
  return off;
}

}  // namespace

TrainModel::TrainModel(const ModelConfig& config) : config_(config) {
  config_.validate("model config");
  const size_t n = build_layout(config_, layout_, tensors_);
  params_.assign(n, 0.0f);
  grads_.assign(n, 0.0f);
}

TrainModel TrainModel::load_hf(const std::string& dir) {
  const std::string config_path = (std::filesystem::path(dir) / "config.json").string();
  const ModelConfig config = ModelConfig::from_hf_json(read_file(config_path), config_path);
  const auto files = open_weights(dir);
  auto find = [&](const std::string& name) -> const StTensor* {
    // The original gpt2 checkpoints name "h.0.attn..." without "transformer.".
    std::vector<std::string> names = {name};
    for (const char* prefix : {"transformer.", "model."})
      if (name.rfind(prefix, 0) == 0) names.push_back(name.substr(std::string(prefix).size()));
    for (const auto& n : names)
      for (const auto& f : files)
        if (const StTensor* t = f->find(n)) return t;
    return nullptr;
  };
  // Check every tensor against the config before allocating what the config asks for.
  ParamLayout layout;
  std::vector<ParamTensor> wanted;
  build_layout(config, layout, wanted);
  std::vector<const StTensor*> found;
  for (const ParamTensor& t : wanted) {
    const StTensor* st = find(t.name);
    check(st != nullptr, dir, ": the weights have no tensor ", t.name);
    check(st->shape == t.shape, dir, ": tensor ", t.name, " has shape ", shape_str(st->shape), ", expected ",
          shape_str(t.shape));
    found.push_back(st);
  }
  TrainModel m(config);
  for (size_t i = 0; i < wanted.size(); ++i) m.set_hf(wanted[i].name, st_to_f32(*found[i]));
  return m;
}

TrainModel TrainModel::random(const ModelConfig& config, uint64_t seed, float init_std) {
  TrainModel m(config);
  Rng rng(seed);
  const float proj_std = init_std / std::sqrt(2.0f * float(config.n_layer));
  auto fill = [&](size_t off, size_t count, float std) {
    for (size_t i = 0; i < count; ++i) m.params_[off + i] = static_cast<float>(rng.normal() * std);
  };
  for (const ParamTensor& t : m.tensors_) {
    const std::string& n = t.name;
    auto ends = [&](const char* s) {
      const std::string suf(s);
      return n.size() >= suf.size() && n.compare(n.size() - suf.size(), suf.size(), suf) == 0;
    };
    if (t.shape.size() == 1) {
      // Norm weights start at 1, biases at 0.
      const bool norm_weight =
          ends("norm.weight") || ends("ln_1.weight") || ends("ln_2.weight") || ends("ln_f.weight");
      std::fill_n(m.params_.begin() + t.offset, t.size, norm_weight ? 1.0f : 0.0f);
    } else if (ends("o_proj.weight") || ends("down_proj.weight") || ends("c_proj.weight")) {
      fill(t.offset, t.size, proj_std);  // residual outputs: GPT-2's 1/sqrt(2L) scaling
    } else {
      fill(t.offset, t.size, init_std);
    }
  }
  return m;
}

const ParamTensor& TrainModel::tensor(const std::string& hf_name) const {
  for (const ParamTensor& t : tensors_)
    if (t.name == hf_name) return t;
  fail("model has no parameter ", hf_name);
}

void TrainModel::zero_grads() { std::fill(grads_.begin(), grads_.end(), 0.0f); }

std::vector<float> TrainModel::read_hf(const ParamTensor& t, const std::vector<float>& buf) const {
  std::vector<float> out(t.size);
  const float* src = buf.data() + t.offset;
  if (!t.transposed) {
    std::copy(src, src + t.size, out.begin());
    return out;
  }
  const int64_t rows = t.shape[0], cols = t.shape[1];  // HF [in][out]; here [out][in]
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t o = 0; o < cols; ++o) out[i * cols + o] = src[o * rows + i];
  return out;
}

std::vector<float> TrainModel::get_hf(const std::string& hf_name) const {
  return read_hf(tensor(hf_name), params_);
}

std::vector<float> TrainModel::grad_hf(const std::string& hf_name) const {
  return read_hf(tensor(hf_name), grads_);
}

void TrainModel::set_hf(const std::string& hf_name, std::span<const float> values) {
  const ParamTensor& t = tensor(hf_name);
  check(values.size() == t.size, "parameter ", hf_name, ": got ", values.size(), " values, expected ",
        t.size);
  float* dst = params_.data() + t.offset;
  if (!t.transposed) {
    std::copy(values.begin(), values.end(), dst);
    return;
  }
  const int64_t rows = t.shape[0], cols = t.shape[1];
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t o = 0; o < cols; ++o) dst[o * rows + i] = values[i * cols + o];
}

}  // namespace braid::tune
