#include "dist/worker_model.h"

#include <openssl/evp.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "braid/error.h"
#include "braid/gguf.h"

namespace braid::dist {

std::array<uint8_t, 32> model_fingerprint(const GgufFile& gguf, uint64_t file_size) {
  // Offsets are taken relative to the first tensor's data so the hash depends only on
  // the file's layout, not on where it was mapped.
  check(!gguf.tensors().empty(), gguf.label(), ": no tensors");
  const uint8_t* lowest = gguf.tensors().front().data;
  for (const Tensor& t : gguf.tensors()) lowest = std::min(lowest, t.data);
  // Hash the tensor table (names, types, shapes, sizes and relative positions) and the
  // metadata through the parsed view: equal inputs, equal bytes.
  EVP_MD_CTX* md = EVP_MD_CTX_new();
  check(md && EVP_DigestInit_ex(md, EVP_sha256(), nullptr) == 1, "sha256 unavailable");
  auto put = [&](const void* p, size_t n) { EVP_DigestUpdate(md, p, n); };
  auto put_str = [&](const std::string& s) {
    const uint64_t n = s.size();
    put(&n, 8);
    put(s.data(), s.size());
  };
  put(&file_size, 8);
  const uint32_t version = gguf.version();
  put(&version, 4);
  for (const auto& [key, v] : gguf.metadata()) {
    put_str(key);
    const uint32_t ty = static_cast<uint32_t>(v.type), el = static_cast<uint32_t>(v.elem);
    put(&ty, 4);
    put(&el, 4);
    put(&v.i, 8);
    put(&v.f, 8);
    put_str(v.str);
    const uint64_t ni = v.ints.size(), nf = v.floats.size(), ns = v.strs.size();
    put(&ni, 8);
    if (ni) put(v.ints.data(), ni * 8);
    put(&nf, 8);
    if (nf) put(v.floats.data(), nf * 8);
    put(&ns, 8);
    for (const auto& s : v.strs) put_str(s);
  }
  for (const Tensor& t : gguf.tensors()) {
    put_str(t.name);
    const uint32_t ty = static_cast<uint32_t>(t.type);
    put(&ty, 4);
    put(t.ne, sizeof t.ne);
    const uint64_t off = static_cast<uint64_t>(t.data - lowest), n = t.nbytes;
    put(&off, 8);
    put(&n, 8);
  }
  std::array<uint8_t, 32> digest{};
  unsigned int len = 0;
  EVP_DigestFinal_ex(md, digest.data(), &len);
  EVP_MD_CTX_free(md);
  return digest;
}

std::string short_hex(const std::array<uint8_t, 32>& d, int n) {
  static const char* hex = "0123456789abcdef";
  std::string s;
  for (int i = 0; i < n && i < 32; ++i) {
    s += hex[d[static_cast<size_t>(i)] >> 4];
    s += hex[d[static_cast<size_t>(i)] & 15];
  }
  return s;
}

std::array<uint8_t, 32> model_fingerprint(const std::string& path) {
  std::error_code ec;
  const uint64_t size = std::filesystem::file_size(path, ec);
  check(!ec, "model file '", path, "' not found");
  auto g = GgufFile::open(path);
  return model_fingerprint(*g, size);
}

DeviceProfile measure_profile(const Model& model, ThreadPool& pool, double slowdown, uint64_t mem_limit,
                              const std::vector<bool>* present, bool output_present) {
  using Clock = std::chrono::steady_clock;
  const ModelConfig& c = model.config();
  auto has = [&](int l) { return !present || (*present)[static_cast<size_t>(l)]; };
  DeviceProfile p;
  constexpr int kPositions = 8;
  constexpr int kRuns = 3;
  KVCache kv(c, 0, c.n_layers, kPositions + 1);
  std::vector<float> logits(static_cast<size_t>(c.n_vocab));
  const int32_t token = c.n_vocab > 1 ? 1 : 0;
  p.layer_ms.assign(static_cast<size_t>(c.n_layers), 1e30);
  // Layer by layer: a warm-up step at position 0 (pages in the weights, makes the
  // layer's copy in panels if it has one, sizes the scratch), then the best of kRuns decode steps at
  // positions 1.. (attention grows with the position; a few are negligible), each
  // position's hidden state carried from layer to layer. A copy in panels the profile
  // made is given back once its layer is timed, so that the profile never holds more
  // than one layer's copy (the worker's range gets its own when it first runs).
  // Every layer runs so that the cache positions line up; absent ones are not timed.
  std::vector<std::vector<float>> hidden(kRuns + 1, std::vector<float>(static_cast<size_t>(c.dim)));
  for (int r = 0; r <= kRuns; ++r) model.embed(&token, 1, r, hidden[static_cast<size_t>(r)].data());
  for (int l = 0; l < c.n_layers; ++l) {
    const bool had_copy = model.is_packed(l);
    model.run_layers(l, l + 1, hidden[0].data(), 1, 0, kv, pool);
    for (int r = 1; r <= kRuns; ++r) {
      const auto t0 = Clock::now();
      model.run_layers(l, l + 1, hidden[static_cast<size_t>(r)].data(), 1, r, kv, pool);
      const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
      p.layer_ms[static_cast<size_t>(l)] = std::min(p.layer_ms[static_cast<size_t>(l)], ms);
    }
    if (!had_copy) model.release_packed(l);
  }
  const std::vector<float>& last = hidden[static_cast<size_t>(kRuns)];
  // ms per byte of the layers that were timed, for the ones that were not.
  double timed_ms = 0, timed_bytes = 0;
  for (int l = 0; l < c.n_layers; ++l) {
    if (!has(l)) continue;
    timed_ms += p.layer_ms[static_cast<size_t>(l)];
    timed_bytes += static_cast<double>(model.layer_weight_bytes(l));
  }
  const double ms_per_byte = timed_bytes > 0 ? timed_ms / timed_bytes : 0;
  for (int l = 0; l < c.n_layers; ++l)
    if (!has(l))
      p.layer_ms[static_cast<size_t>(l)] = ms_per_byte * static_cast<double>(model.layer_weight_bytes(l));
  if (output_present) {
    const bool had_copy = model.is_packed(c.n_layers);
    model.output(last.data(), 1, logits.data(), pool);  // warm-up
    p.output_ms = 1e30;
    for (int r = 0; r < kRuns; ++r) {
      const auto t0 = Clock::now();
      model.output(last.data(), 1, logits.data(), pool);
      p.output_ms =
          std::min(p.output_ms, std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
    }
    if (!had_copy) model.release_packed(c.n_layers);
  } else {
    p.output_ms = ms_per_byte * static_cast<double>(model.output_weight_bytes());
  }
  for (double& ms : p.layer_ms) ms *= slowdown;
  p.output_ms *= slowdown;
  p.memory_bytes = mem_limit ? mem_limit : available_memory();
  p.memory_total = total_memory();
  return p;
}

uint64_t available_memory() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t kb;
  std::string unit;
  while (in >> key >> kb) {
    std::getline(in, unit);
    if (key == "MemAvailable:") return kb * 1024;
  }
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : 0;
}

uint64_t total_memory() {
  const long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
  return pages > 0 && page > 0 ? static_cast<uint64_t>(pages) * static_cast<uint64_t>(page) : 0;
}

uint64_t parse_bytes(const std::string& text) {
  size_t used = 0;
  double v = 0;
  try {
    v = std::stod(text, &used);
  } catch (const std::exception&) {
    fail("bad size '", text, "': expected a number with an optional K/M/G/T suffix, e.g. 1.5G");
  }
  std::string suffix = text.substr(used);
  if (!suffix.empty() && (suffix.back() == 'B' || suffix.back() == 'b')) suffix.pop_back();
  if (suffix.size() == 2 && (suffix[1] == 'i' || suffix[1] == 'I')) suffix.pop_back();
  double mul = 1;
  if (suffix.empty()) {
  } else if (suffix == "k" || suffix == "K") {
    mul = 1024.0;
  } else if (suffix == "m" || suffix == "M") {
    mul = 1024.0 * 1024;
  } else if (suffix == "g" || suffix == "G") {
    mul = 1024.0 * 1024 * 1024;
  } else if (suffix == "t" || suffix == "T") {
    mul = 1024.0 * 1024 * 1024 * 1024;
  } else {
    fail("bad size '", text, "': unknown suffix '", suffix, "' (use K, M, G or T)");
  }
  const double bytes = v * mul;
  check(std::isfinite(bytes) && bytes >= 1 && bytes < 1.8e19, "bad size '", text, "'");
  return static_cast<uint64_t>(bytes);
}

}  // namespace braid::dist
