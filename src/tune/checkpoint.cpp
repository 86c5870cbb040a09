// Trainer checkpoints. Layout (little-endian):
//   "BRAIDTRN"  u32 version (1)  u32 0  u64 header bytes
//   header: JSON {config, options, steps, rng, n_params, tensors, metadata}
//   params f32[n]  adam m f32[n]  adam v f32[n]
//   u64 FNV-1a of every byte before it
#include <bit>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "braid/error.h"
#include "braid/mapped_file.h"
#include "braid/tune_trainer.h"

namespace braid::tune {
namespace {

static_assert(std::endian::native == std::endian::little, "checkpoints are written little-endian");

constexpr char kMagic[8] = {'B', 'R', 'A', 'I', 'D', 'T', 'R', 'N'};
constexpr uint32_t kVersion = 1;
constexpr size_t kPrefix = 8 + 4 + 4 + 8;

using nlohmann::json;

struct Fnv {
  uint64_t h = 0xcbf29ce484222325ull;
  void add(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  }
};

json options_json(const TrainerOptions& o) {
  return {{"beta1", o.adamw.beta1},
          {"beta2", o.adamw.beta2},
          {"eps", o.adamw.eps},
          {"weight_decay", o.adamw.weight_decay},
          {"peak_lr", o.schedule.peak_lr},
          {"min_lr", o.schedule.min_lr},
          {"warmup_steps", o.schedule.warmup_steps},
          {"total_steps", o.schedule.total_steps},
          {"grad_clip", o.grad_clip},
          {"decay_all", o.decay_all},
          {"seed", o.seed}};
}

TrainerOptions options_from(const json& j) {
  TrainerOptions o;
  o.adamw.beta1 = j.at("beta1").get<double>();
  o.adamw.beta2 = j.at("beta2").get<double>();
  o.adamw.eps = j.at("eps").get<double>();
  o.adamw.weight_decay = j.at("weight_decay").get<double>();
  o.schedule.peak_lr = j.at("peak_lr").get<double>();
  o.schedule.min_lr = j.at("min_lr").get<double>();
  o.schedule.warmup_steps = j.at("warmup_steps").get<int64_t>();
  o.schedule.total_steps = j.at("total_steps").get<int64_t>();
  o.grad_clip = j.at("grad_clip").get<double>();
  o.decay_all = j.at("decay_all").get<bool>();
  o.seed = j.at("seed").get<uint64_t>();
  return o;
}

}  // namespace

void Trainer::save(const std::string& path) const {
  json tensors = json::array();
  for (const ParamTensor& t : model_.tensors()) tensors.push_back({{"name", t.name}, {"shape", t.shape}});
  const auto st = rng_.state();
  const json header = {{"config", json::parse(model_.config().to_json())},
                       {"options", options_json(options_)},
                       {"steps", adamw_.steps()},
                       {"rng", {st[0], st[1], st[2], st[3]}},
                       {"n_params", model_.num_params()},
                       {"tensors", tensors},
                       {"metadata", metadata_}};
  const std::string text = header.dump();
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    check(f.good(), tmp, ": cannot write checkpoint");
    Fnv fnv;
    auto put = [&](const void* data, size_t n) {
      f.write(static_cast<const char*>(data), static_cast<std::streamsize>(n));
      fnv.add(data, n);
    };
    const uint32_t version = kVersion, zero = 0;
    const uint64_t header_len = text.size();
    put(kMagic, 8);
    put(&version, 4);
    put(&zero, 4);
    put(&header_len, 8);
    put(text.data(), text.size());
    const size_t bytes = model_.num_params() * sizeof(float);
    put(model_.params().data(), bytes);
    put(adamw_.m().data(), bytes);
    put(adamw_.v().data(), bytes);
    f.write(reinterpret_cast<const char*>(&fnv.h), 8);
    f.flush();
    check(f.good(), tmp, ": write failed (disk full?)");
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    fail(path, ": cannot write checkpoint: ", ec.message());
  }
}

Trainer Trainer::load(const std::string& path, ThreadPool* pool) {
  const auto file = MappedFile::open(path);
  const uint8_t* d = file->data();
  const size_t size = file->size();
  check(size >= kPrefix + 8 && std::memcmp(d, kMagic, 8) == 0, path, ": not a braid training checkpoint");
  uint32_t version;
  uint64_t header_len;
  std::memcpy(&version, d + 8, 4);
  std::memcpy(&header_len, d + 16, 8);
  check(version == kVersion, path, ": checkpoint version ", version, " is not supported (expected ", kVersion,
        ")");
  check(header_len <= size - kPrefix - 8, path, ": checkpoint is truncated (header)");
  json h;
  try {
    h = json::parse(d + kPrefix, d + kPrefix + header_len);
  } catch (const json::exception& e) {
    fail(path, ": bad checkpoint header: ", e.what());
  }
  try {
    ModelConfig config = ModelConfig::from_json(h.at("config").dump(), path);
    TrainerOptions options = options_from(h.at("options"));
    // The file size bounds what the header may ask us to allocate.
    const uint64_t n = h.at("n_params").get<uint64_t>();
    const uint64_t data_bytes = size - kPrefix - header_len - 8;
    check(n <= data_bytes / (3 * sizeof(float)) && data_bytes == 3 * n * sizeof(float), path,
          ": checkpoint is ", size, " bytes, which does not hold ", n, " parameters (truncated or corrupt)");
    Fnv fnv;
    fnv.add(d, size - 8);
    uint64_t sum;
    std::memcpy(&sum, d + size - 8, 8);
    check(sum == fnv.h, path, ": checkpoint checksum mismatch (corrupt file)");
    TrainModel model(config);
    check(model.num_params() == n, path, ": checkpoint parameter count does not match its config");
    const json& tensors = h.at("tensors");
    check(tensors.is_array() && tensors.size() == model.tensors().size(), path,
          ": checkpoint tensor list does not match its config");
    for (size_t i = 0; i < tensors.size(); ++i) {
      const ParamTensor& t = model.tensors()[i];
      check(tensors[i].at("name").get<std::string>() == t.name &&
                tensors[i].at("shape").get<std::vector<int64_t>>() == t.shape,
            path, ": checkpoint tensor ", i, " does not match its config");
    }
    const size_t bytes = n * sizeof(float);

    const uint8_t* p = d + kPrefix + header_len;
    std::memcpy(model.params().data(), p, bytes);
    Trainer tr(std::move(model), options, pool);
    std::memcpy(tr.adamw_.m().data(), p + bytes, bytes);
    std::memcpy(tr.adamw_.v().data(), p + 2 * bytes, bytes);
    const int64_t steps = h.at("steps").get<int64_t>();
    check(steps >= 0, path, ": negative step count");
    tr.adamw_.set_steps(steps);
    const auto rng = h.at("rng").get<std::vector<uint64_t>>();
    check(rng.size() == 4, path, ": bad rng state");
    tr.rng_.set_state({rng[0], rng[1], rng[2], rng[3]});
    tr.metadata_ = h.at("metadata").get<std::string>();
    return tr;
  } catch (const json::exception& e) {
    fail(path, ": bad checkpoint header: ", e.what());
  }
}

}  // namespace braid::tune
