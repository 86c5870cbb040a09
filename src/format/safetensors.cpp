// SafetensorsFile: parses a safetensors file without trusting its header.
#include "braid/safetensors.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "braid/dtype.h"
#include "braid/error.h"

namespace braid {
namespace {

using nlohmann::json;

constexpr uint64_t kMaxHeaderBytes = 100u << 20;  // the reference implementation's limit
constexpr int kMaxJsonDepth = 8;                  // a valid header nests 3 deep

[[noreturn]] void bad(const std::string& label, const std::string& what) { throw Error(label + ": " + what); }

// Parses the JSON header, refusing deep nesting (before it can exhaust the stack) and
// duplicate tensor names (which nlohmann would otherwise silently collapse).
json parse_header(const std::string& label, const char* begin, const char* end) {
  std::set<std::string> names;
  auto callback = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth > kMaxJsonDepth) bad(label, cat("header JSON nests deeper than ", kMaxJsonDepth, " levels"));
    if (event == json::parse_event_t::key && depth == 1) {
      const std::string& name = parsed.get_ref<const std::string&>();
      if (!names.insert(name).second) bad(label, cat("header names '", name, "' twice"));
    }
    return true;
  };
  try {
    return json::parse(begin, end, callback);
  } catch (const json::exception& e) {
    bad(label, cat("header is not valid JSON (", e.what(), ")"));
  }
}

uint64_t get_uint(const std::string& label, const std::string& what, const json& v) {
  if (v.is_number_unsigned()) return v.get<uint64_t>();
  if (v.is_number_integer()) bad(label, cat(what, " is negative (", v.dump(), ")"));
  bad(label, cat(what, " is not a non-negative integer (", v.dump(), ")"));
}

}  // namespace

size_t st_dtype_size(const std::string& dtype) {
  static const std::pair<const char*, size_t> kSizes[] = {
      {"F64", 8}, {"F32", 4},  {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4},     {"I16", 2},     {"I8", 1},
      {"U8", 1},  {"BOOL", 1}, {"U16", 2}, {"U32", 4},  {"U64", 8}, {"F8_E4M3", 1}, {"F8_E5M2", 1},
  };
  for (const auto& [name, size] : kSizes)
    if (dtype == name) return size;
  return 0;
}

int64_t StTensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;  // the parser proved this cannot overflow
  return n;
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::open(const std::string& path) {
  std::shared_ptr<MappedFile> file = MappedFile::open(path);
  auto st = parse(file->data(), file->size(), path);
  st->file_ = std::move(file);
  return st;
}

std::unique_ptr<SafetensorsFile> SafetensorsFile::parse(const uint8_t* data, size_t size,
                                                        const std::string& label) {
  std::unique_ptr<SafetensorsFile> st(new SafetensorsFile());
  st->label_ = label;
  if (size == 0) bad(label, "empty file, not a safetensors file");
  if (size >= 4 && std::memcmp(data, "GGUF", 4) == 0) bad(label, "is a GGUF file, not safetensors");
  if (data[0] == '{')
    bad(label, "not a safetensors file (it is JSON text; safetensors starts with a header length)");
  if (size < 8) bad(label, cat("truncated file (", size, " bytes, shorter than the 8-byte header length)"));
  uint64_t header_len;
  std::memcpy(&header_len, data, 8);
  if (header_len > kMaxHeaderBytes)
    bad(label, cat("header length ", header_len, " is over 100 MB: not a safetensors file, or corrupt"));
  if (header_len > size - 8)
    bad(label, cat("truncated file (header of ", header_len, " bytes, but only ", size - 8, " follow)"));
  const char* hbegin = reinterpret_cast<const char*>(data + 8);
  if (header_len == 0 || hbegin[0] != '{') bad(label, "not a safetensors file (header is not a JSON object)");
  json header = parse_header(label, hbegin, hbegin + header_len);
  if (!header.is_object()) bad(label, "not a safetensors file (header is not a JSON object)");

  const uint8_t* base = data + 8 + header_len;
  const uint64_t data_size = size - 8 - header_len;
  std::vector<std::pair<uint64_t, StTensor>> found;  // (begin offset, tensor)
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) bad(label, "__metadata__ is not a JSON object");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) bad(label, cat("__metadata__ value '", k, "' is not a string"));
        st->metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string what = cat("tensor '", name, "'");
    if (!entry.is_object()) bad(label, cat(what, " is not a JSON object"));
    auto dtype = entry.find("dtype");
    auto shape = entry.find("shape");
    auto offsets = entry.find("data_offsets");
    if (dtype == entry.end() || !dtype->is_string()) bad(label, cat(what, " has no dtype string"));
    if (shape == entry.end() || !shape->is_array()) bad(label, cat(what, " has no shape array"));
    if (offsets == entry.end() || !offsets->is_array() || offsets->size() != 2)
      bad(label, cat(what, " has no data_offsets [begin, end]"));

    StTensor t;
    t.name = name;
    t.dtype = dtype->get<std::string>();
    const size_t esize = st_dtype_size(t.dtype);
    if (esize == 0) bad(label, cat(what, " has unknown dtype '", t.dtype, "'"));
    uint64_t bytes = esize;
    for (const json& d : *shape) {
      uint64_t n = get_uint(label, cat(what, " shape entry"), d);
      if (n > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) ||
          __builtin_mul_overflow(bytes, n, &bytes))
        bad(label, cat(what, " is too large (shape ", shape->dump(), ")"));
      t.shape.push_back(static_cast<int64_t>(n));
    }
    uint64_t begin = get_uint(label, cat(what, " data offset"), (*offsets)[0]);
    uint64_t end = get_uint(label, cat(what, " data offset"), (*offsets)[1]);
    if (begin > end)
      bad(label, cat(what, " has data_offsets [", begin, ", ", end, "] that end before they begin"));
    if (end > data_size)
      bad(label, cat("truncated file (", what, " data [", begin, ", ", end, ") runs past the ", data_size,
                     "-byte data section)"));
    if (end - begin != bytes)
      bad(label, cat(what, " has ", end - begin, " bytes of data, but ", t.dtype, " ", shape->dump(),
                     " needs ", bytes));
    t.data = base + begin;
    t.nbytes = static_cast<size_t>(bytes);
    found.emplace_back(begin, std::move(t));
  }

  std::stable_sort(found.begin(), found.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  const StTensor* prev = nullptr;
  uint64_t prev_end = 0;
  for (auto& [begin, t] : found) {
    if (t.nbytes == 0) continue;
    if (prev && begin < prev_end) bad(label, cat("tensors '", prev->name, "' and '", t.name, "' overlap"));
    prev = &t;
    prev_end = begin + t.nbytes;
  }
  st->tensors_.reserve(found.size());
  for (auto& [begin, t] : found) {
    st->index_.emplace(t.name, st->tensors_.size());
    st->tensors_.push_back(std::move(t));
  }
  return st;
}

const StTensor* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

const StTensor& SafetensorsFile::get(const std::string& name) const {
  const StTensor* t = find(name);
  if (!t) bad(label_, cat("no tensor ", name));
  return *t;
}

namespace {

template <class T>
T load(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// Converts every element of t with f(pointer to element) -> Out.
template <class Out, class Elem, class F>
std::vector<Out> convert(const StTensor& t, F f) {
  const size_t n = t.nbytes / sizeof(Elem);
  std::vector<Out> out(n);
  for (size_t i = 0; i < n; ++i) out[i] = f(load<Elem>(t.data + i * sizeof(Elem)));
  return out;
}

template <class In>
int32_t narrow_i32(const StTensor& t, In v) {
  if (v < static_cast<In>(std::numeric_limits<int32_t>::min()) ||
      (v > 0 && static_cast<uint64_t>(v) > static_cast<uint64_t>(std::numeric_limits<int32_t>::max())))
    fail("tensor '", t.name, "': value ", v, " does not fit in int32");
  return static_cast<int32_t>(v);
}

}  // namespace

std::vector<float> st_to_f32(const StTensor& t) {
  if (t.dtype == "F32") return convert<float, float>(t, [](float v) { return v; });
  if (t.dtype == "F16") return convert<float, uint16_t>(t, [](uint16_t v) { return f16_to_f32(v); });
  if (t.dtype == "BF16") return convert<float, uint16_t>(t, [](uint16_t v) { return bf16_to_f32(v); });
  if (t.dtype == "F64") return convert<float, double>(t, [](double v) { return static_cast<float>(v); });
  fail("tensor '", t.name, "' has dtype ", t.dtype, ", which does not convert to f32");
}

std::vector<int32_t> st_to_i32(const StTensor& t) {
  if (t.dtype == "I32") return convert<int32_t, int32_t>(t, [](int32_t v) { return v; });
  if (t.dtype == "I64") return convert<int32_t, int64_t>(t, [&](int64_t v) { return narrow_i32(t, v); });
  if (t.dtype == "U32") return convert<int32_t, uint32_t>(t, [&](uint32_t v) { return narrow_i32(t, v); });
  if (t.dtype == "U64") return convert<int32_t, uint64_t>(t, [&](uint64_t v) { return narrow_i32(t, v); });
  if (t.dtype == "I16") return convert<int32_t, int16_t>(t, [](int16_t v) { return int32_t{v}; });
  if (t.dtype == "U16") return convert<int32_t, uint16_t>(t, [](uint16_t v) { return int32_t{v}; });
  if (t.dtype == "I8") return convert<int32_t, int8_t>(t, [](int8_t v) { return int32_t{v}; });
  if (t.dtype == "U8" || t.dtype == "BOOL")
    return convert<int32_t, uint8_t>(t, [](uint8_t v) { return int32_t{v}; });
  fail("tensor '", t.name, "' has dtype ", t.dtype, ", which does not convert to int32");
}

}  // namespace braid
