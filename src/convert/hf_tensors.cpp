#include "convert/hf_tensors.h"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "braid/error.h"
#include "braid/mapped_file.h"

namespace braid::convert {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

std::string shape_str(const std::vector<int64_t>& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// The shard file names of model.safetensors.index.json, in first-mention order.
std::vector<std::string> read_index(const std::string& path) {
  const std::string text = read_file(path);
  json root;
  try {
    root = json::parse(text, [&](int depth, json::parse_event_t, json&) {
      if (depth > 8) fail(path, ": JSON nests deeper than 8 levels");
      return true;
    });
  } catch (const json::exception& e) {
    fail(path, ": malformed JSON (", e.what(), ")");
  }
  if (!root.is_object() || !root.contains("weight_map") || !root["weight_map"].is_object())
    fail(path, ": missing key weight_map (an object of tensor name -> shard file)");
  std::vector<std::string> shards;
  for (const auto& [name, file] : root["weight_map"].items()) {
    if (!file.is_string()) fail(path, ": key weight_map.", name, ": expected a file name");
    const std::string f = file.get<std::string>();
    // Shards sit beside the index; a path elsewhere is a broken (or hostile) index.
    if (f.empty() || f.find('/') != std::string::npos || f == "." || f == "..")
      fail(path, ": key weight_map.", name, ": \"", f, "\" is not a file name in the same folder");
    if (std::find(shards.begin(), shards.end(), f) == shards.end()) shards.push_back(f);
  }
  if (shards.empty()) fail(path, ": weight_map lists no tensors");
  return shards;
}

}  // namespace

DType st_float_type(const StTensor& t) {
  if (t.dtype == "F32") return DType::F32;
  if (t.dtype == "F16") return DType::F16;
  if (t.dtype == "BF16") return DType::BF16;
  return DType::I8;  // not a float type; need() rejects it
}

HfTensors::HfTensors(const std::string& dir) : dir_(dir) {
  const std::string index = (fs::path(dir) / "model.safetensors.index.json").string();
  const std::string single = (fs::path(dir) / "model.safetensors").string();
  std::vector<std::string> paths;
  if (fs::exists(index)) {
    label_ = index;
    for (const std::string& shard : read_index(index)) {
      std::string p = (fs::path(dir) / shard).string();
      if (!fs::exists(p)) fail(index, ": lists shard ", shard, ", which is missing from ", dir);
      paths.push_back(p);
    }
  } else if (fs::exists(single)) {
    label_ = single;
    paths.push_back(single);
  } else {
    fail(dir,
         ": no model.safetensors or model.safetensors.index.json (braid converts safetensors "
         "checkpoints, not PyTorch .bin files)");
  }
  for (const std::string& p : paths) {
    std::shared_ptr<const SafetensorsFile> f = SafetensorsFile::open(p);
    for (const StTensor& t : f->tensors()) {
      auto [it, fresh] = index_.emplace(t.name, Where{f.get(), &t});
      if (!fresh) fail(p, ": tensor ", t.name, " is also in ", it->second.file->label());
    }
    files_.push_back(std::move(f));
  }
}

const StTensor* HfTensors::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : it->second.tensor;
}

std::string HfTensors::file_of(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? label_ : it->second.file->label();
}

const StTensor& HfTensors::need(const std::string& name, const std::vector<int64_t>& shape) {
  const StTensor* t = find(name);
  if (!t) fail(label_, ": missing tensor ", name);
  if (t->shape != shape)
    fail(file_of(name), ": tensor ", name, " has shape ", shape_str(t->shape), ", expected ",
         shape_str(shape), " from config.json");
  if (st_float_type(*t) == DType::I8)
    fail(file_of(name), ": tensor ", name, " has dtype ", t->dtype, "; braid converts F32, F16 and BF16");
  used_.insert(name);
  return *t;
}

}  // namespace braid::convert
