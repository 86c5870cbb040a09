// GgufWriter: serialises metadata and tensors as GGUF v3, atomically (PATH.tmp + rename).
#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <set>

#include "braid/error.h"
#include "braid/gguf.h"

namespace braid {
namespace {

constexpr uint32_t kDefaultAlignment = 32;
constexpr uint64_t kMaxAlignment = uint64_t{1} << 30;
constexpr size_t kChunkBytes = size_t{16} << 20;  // progress granularity for large tensors

void check_alignment(uint64_t a) {
  check(a > 0 && std::has_single_bit(a) && a <= kMaxAlignment, "GGUF alignment ", a,
        " is not a power of two between 1 and ", kMaxAlignment);
}

// Little-endian serialisation of the header (metadata and tensor infos).
class Buffer {
 public:
  template <class T>
  void put(T v) {
    char b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    s_.append(b, sizeof(T));
  }
  void put_string(const std::string& v) {
    put<uint64_t>(v.size());
    s_.append(v);
  }
  void put_int(GgufType t, int64_t v) {
    switch (t) {
      case GgufType::UINT8:
        return put(static_cast<uint8_t>(v));
      case GgufType::INT8:
        return put(static_cast<int8_t>(v));
      case GgufType::UINT16:
        return put(static_cast<uint16_t>(v));
      case GgufType::INT16:
        return put(static_cast<int16_t>(v));
      case GgufType::UINT32:
        return put(static_cast<uint32_t>(v));
      case GgufType::INT32:
        return put(static_cast<int32_t>(v));
      case GgufType::UINT64:
        return put(static_cast<uint64_t>(v));
      case GgufType::INT64:
        return put(v);
      case GgufType::BOOL:
        return put(static_cast<uint8_t>(v != 0));
      default:
        fail("GGUF writer: ", gguf_type_name(t), " is not an integer type");
    }
  }
  void put_float(GgufType t, double v) {
    if (t == GgufType::FLOAT32) {
      put(static_cast<float>(v));
    } else {
      put(v);
    }
  }
  void put_value(const std::string& key, const GgufValue& v) {
    put(static_cast<uint32_t>(v.type));
    switch (v.type) {
      case GgufType::STRING:
        return put_string(v.str);
      case GgufType::FLOAT32:
      case GgufType::FLOAT64:
        return put_float(v.type, v.f);
      case GgufType::ARRAY:
        return put_array(key, v);
      default:
        return put_int(v.type, v.i);
    }
  }
  void put_array(const std::string& key, const GgufValue& v) {
    put(static_cast<uint32_t>(v.elem));
    switch (v.elem) {
      case GgufType::STRING:
        put<uint64_t>(v.strs.size());
        for (const auto& s : v.strs) put_string(s);
        return;
      case GgufType::FLOAT32:
      case GgufType::FLOAT64:
        put<uint64_t>(v.floats.size());
        for (double f : v.floats) put_float(v.elem, f);
        return;
      case GgufType::ARRAY:
        fail("GGUF writer: metadata key ", key, " is a nested array, which braid cannot write");
      default:
        check(gguf_is_int_type(v.elem) || v.elem == GgufType::BOOL, "GGUF writer: metadata key ", key,
              " has unknown array type ", static_cast<uint32_t>(v.elem));
        put<uint64_t>(v.ints.size());
        for (int64_t x : v.ints) put_int(v.elem, x);
        return;
    }
  }
  const std::string& str() const { return s_; }

 private:
  std::string s_;
};

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

// An open PATH.tmp that is removed unless commit() renamed it to PATH.
class AtomicFile {
 public:
  explicit AtomicFile(const std::string& path) : path_(path), tmp_(path + ".tmp") {
    f_ = std::fopen(tmp_.c_str(), "wb");
    if (!f_) fail("cannot create ", tmp_, ": ", std::strerror(errno));
  }
  ~AtomicFile() {
    if (f_) std::fclose(f_);
    if (!committed_) std::remove(tmp_.c_str());
  }
  void write(const void* p, size_t n) {
    if (n && std::fwrite(p, 1, n, f_) != n) fail("cannot write ", tmp_, ": ", std::strerror(errno));
  }
  void zeros(size_t n) {
    static const char kZeros[64] = {};
    while (n > 0) {
      size_t k = n < sizeof(kZeros) ? n : sizeof(kZeros);
      write(kZeros, k);
      n -= k;
    }
  }
  void commit() {
    std::FILE* f = f_;
    f_ = nullptr;
    if (std::fclose(f) != 0) fail("cannot write ", tmp_, ": ", std::strerror(errno));
    if (std::rename(tmp_.c_str(), path_.c_str()) != 0)
      fail("cannot rename ", tmp_, " to ", path_, ": ", std::strerror(errno));
    committed_ = true;
  }

 private:
  std::string path_, tmp_;
  std::FILE* f_ = nullptr;
  bool committed_ = false;
};

}  // namespace

void GgufWriter::set(const std::string& key, GgufValue value) {
  check(!key.empty(), "GGUF writer: empty metadata key");
  if (key == "general.alignment") {
    check(gguf_is_int_type(value.type), "GGUF writer: general.alignment must be an integer");
    check(value.i > 0, "GGUF writer: general.alignment must be positive");
    check_alignment(static_cast<uint64_t>(value.i));
    alignment_ = static_cast<uint32_t>(value.i);
  }
  for (auto& kv : kv_) {
    if (kv.first == key) {
      kv.second = std::move(value);
      return;
    }
  }
  kv_.emplace_back(key, std::move(value));
}

void GgufWriter::remove(const std::string& key) {
  for (auto it = kv_.begin(); it != kv_.end(); ++it) {
    if (it->first == key) {
      kv_.erase(it);
      break;
    }
  }
  if (key == "general.alignment") alignment_ = kDefaultAlignment;
}

void GgufWriter::copy_metadata(const GgufFile& src) {
  for (const auto& [key, value] : src.metadata()) {
    // The reader keeps nested arrays only as placeholders; there is nothing to copy.
    if (value.is_array() && value.elem == GgufType::ARRAY) continue;
    set(key, value);
  }
}

void GgufWriter::set_alignment(uint32_t a) {
  check_alignment(a);
  bool present = false;
  for (const auto& kv : kv_) present = present || kv.first == "general.alignment";
  if (a != kDefaultAlignment || present) set("general.alignment", GgufValue::u32(a));
  alignment_ = a;
}

void GgufWriter::add_tensor(const std::string& name, DType type, const std::vector<int64_t>& ne,
                            const void* data, size_t nbytes) {
  const std::string what = cat("GGUF writer: tensor '", name, "'");
  check(!name.empty(), "GGUF writer: empty tensor name");
  for (const auto& t : tensors_) check(t.name != name, what, " added twice");
  check(ne.size() <= 4, what, " has ", ne.size(), " dimensions (at most 4)");
  const DTypeInfo& info = dtype_info(type);
  for (int64_t n : ne) check(n >= 0, what, " has a negative dimension ", n);
  int64_t ne0 = ne.empty() ? 1 : ne[0];
  check(ne0 % info.block_size == 0, what, " has ", ne0, " columns, not a multiple of ", info.name,
        "'s block size ", info.block_size);
  uint64_t expect = row_bytes(type, ne0);
  for (size_t d = 1; d < ne.size(); ++d)
    check(!__builtin_mul_overflow(expect, static_cast<uint64_t>(ne[d]), &expect), what, " is too large");
  check(expect == nbytes, what, " ", info.name, " with ", ne.size(), " dims needs ", expect, " bytes, got ",
        nbytes);
  check(data != nullptr || nbytes == 0, what, " has no data");
  tensors_.push_back({name, type, ne, static_cast<const uint8_t*>(data), nbytes, nullptr});
}

void GgufWriter::add_tensor(const std::string& name, DType type, const std::vector<int64_t>& ne,
                            std::vector<uint8_t> owned) {
  auto buf = std::make_shared<std::vector<uint8_t>>(std::move(owned));
  add_tensor(name, type, ne, buf->data(), buf->size());
  tensors_.back().owned = std::move(buf);
}

void GgufWriter::write(const std::string& path,
                       const std::function<void(uint64_t, uint64_t)>& progress) const {
  Buffer h;
  h.put<uint32_t>(0x46554747u);  // "GGUF"
  h.put<uint32_t>(3);
  h.put<uint64_t>(tensors_.size());
  h.put<uint64_t>(kv_.size());
  for (const auto& [key, value] : kv_) {
    h.put_string(key);
    h.put_value(key, value);
  }
  uint64_t offset = 0;
  std::vector<uint64_t> offsets;
  for (const auto& t : tensors_) {
    h.put_string(t.name);
    h.put<uint32_t>(static_cast<uint32_t>(t.ne.size()));
    for (int64_t n : t.ne) h.put<uint64_t>(static_cast<uint64_t>(n));
    h.put<uint32_t>(static_cast<uint32_t>(t.type));
    offsets.push_back(offset);
    h.put<uint64_t>(offset);
    offset = align_up(offset + t.nbytes, alignment_);
  }
  const uint64_t total = offset;

  AtomicFile f(path);
  f.write(h.str().data(), h.str().size());
  f.zeros(align_up(h.str().size(), alignment_) - h.str().size());
  uint64_t done = 0;
  if (progress) progress(0, total);
  for (size_t k = 0; k < tensors_.size(); ++k) {
    const PendingTensor& t = tensors_[k];
    for (size_t pos = 0; pos < t.nbytes; pos += kChunkBytes) {
      size_t n = std::min(kChunkBytes, t.nbytes - pos);
      f.write(t.data + pos, n);
      if (progress) progress(done + pos + n, total);
    }
    uint64_t end = k + 1 < tensors_.size() ? offsets[k + 1] : total;
    f.zeros(static_cast<size_t>(end - offsets[k] - t.nbytes));
    done = end;
  }
  if (progress && done != 0) progress(total, total);
  f.commit();
}

}  // namespace braid
