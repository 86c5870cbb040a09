// GgufFile: parses a GGUF v2/v3 file without trusting any field of it.
//
// Every read goes through Cursor, which bounds-checks against the end of the bytes, and
// every count is checked against the bytes left before anything is allocated for it, so a
// corrupt or hostile file can neither read out of bounds nor make us allocate gigabytes.
#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <numeric>

#include "braid/error.h"
#include "braid/gguf.h"

namespace braid {
namespace {

static_assert(std::endian::native == std::endian::little, "GGUF reading assumes a little-endian host");

constexpr size_t kMaxAlignment = size_t{1} << 30;
constexpr int kMaxArrayDepth = 8;  // nested arrays are skipped; the bound keeps recursion shallow
// The fewest bytes one metadata entry / tensor info can take: a count of impossible
// entries is refused before we reserve memory for it.
constexpr uint64_t kMinKvBytes = 8 + 4 + 1;          // key length, type, smallest value
constexpr uint64_t kMinTensorBytes = 8 + 4 + 4 + 8;  // name length, n_dims, type, offset

bool known_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufType::FLOAT64); }

// Bytes one element of `t` takes at least (a string: its length field; an array: type + count).
uint64_t min_size(GgufType t) {
  switch (t) {
    case GgufType::UINT8:
    case GgufType::INT8:
    case GgufType::BOOL:
      return 1;
    case GgufType::UINT16:
    case GgufType::INT16:
      return 2;
    case GgufType::UINT32:
    case GgufType::INT32:
    case GgufType::FLOAT32:
      return 4;
    case GgufType::UINT64:
    case GgufType::INT64:
    case GgufType::FLOAT64:
    case GgufType::STRING:
      return 8;
    case GgufType::ARRAY:
      return 12;
  }
  return 1;
}

// Little-endian reads from untrusted bytes. A short read throws
// "<label>: truncated file (<context> runs past the end)".
class Cursor {
 public:
  Cursor(const uint8_t* data, size_t size, const std::string& label)
      : data_(data), size_(size), label_(label) {}

  size_t pos() const { return pos_; }
  size_t remaining() const { return size_ - pos_; }
  void set_context(std::string c) { context_ = std::move(c); }
  const std::string& context() const { return context_; }

  template <class T>
  T read() {
    need(sizeof(T));
    T v;
    std::memcpy(&v, data_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string read_string() {
    uint64_t n = read<uint64_t>();
    if (n > remaining()) truncated(cat("a string of ", n, " bytes with ", remaining(), " left"));
    std::string s(reinterpret_cast<const char*>(data_ + pos_), static_cast<size_t>(n));
    pos_ += static_cast<size_t>(n);
    return s;
  }

  void skip(size_t n) {
    need(n);
    pos_ += n;
  }

  void skip_string() {
    uint64_t n = read<uint64_t>();
    if (n > remaining()) truncated(cat("a string of ", n, " bytes with ", remaining(), " left"));
    pos_ += static_cast<size_t>(n);
  }

  // Refuses `count` elements of at least `min_bytes` each when they cannot fit.
  void need_elements(uint64_t count, uint64_t min_bytes, const char* what) {
    if (count > remaining() / min_bytes)
      truncated(cat("an array of ", count, " ", what, " with ", remaining(), " bytes left"));
  }

  [[noreturn]] void fail(const std::string& what) const { throw Error(label_ + ": " + what); }

  [[noreturn]] void truncated(const std::string& detail = "") const {
    fail(cat("truncated file (", context_, " runs past the end", detail.empty() ? "" : ": ", detail, ")"));
  }

 private:
  void need(size_t n) const {
    if (n > remaining()) truncated();
  }

  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  const std::string& label_;
  std::string context_ = "header";
};

// Reads one value of type `t`; `key` names it in errors.
class ValueReader {
 public:
  ValueReader(Cursor& c, const std::string& key) : c_(c), key_(key) {}

  GgufValue read(GgufType t) {
    GgufValue v;
    v.type = t;
    if (t == GgufType::ARRAY) {
      read_array(v);
    } else if (t == GgufType::STRING) {
      v.str = c_.read_string();
    } else if (t == GgufType::FLOAT32 || t == GgufType::FLOAT64) {
      v.f = read_float(t);
    } else {
      v.i = read_int(t);
    }
    return v;
  }

 private:
  int64_t read_int(GgufType t) {
    switch (t) {
      case GgufType::UINT8:
        return c_.read<uint8_t>();
      case GgufType::INT8:
        return c_.read<int8_t>();
      case GgufType::UINT16:
        return c_.read<uint16_t>();
      case GgufType::INT16:
        return c_.read<int16_t>();
      case GgufType::UINT32:
        return c_.read<uint32_t>();
      case GgufType::INT32:
        return c_.read<int32_t>();
      case GgufType::UINT64:
        return static_cast<int64_t>(c_.read<uint64_t>());  // keeps the bits
      case GgufType::INT64:
        return c_.read<int64_t>();
      case GgufType::BOOL: {
        uint8_t b = c_.read<uint8_t>();
        if (b > 1)
          c_.fail(cat("metadata key '", key_, "' has a bool of value ", int{b}, " (must be 0 or 1)"));
        return b;
      }
      default:
        break;
    }
    c_.fail(cat("metadata key '", key_, "': internal error reading ", gguf_type_name(t)));
  }

  double read_float(GgufType t) {
    if (t == GgufType::FLOAT32) return c_.read<float>();
    return c_.read<double>();
  }

  GgufType read_elem_type() {
    uint32_t e = c_.read<uint32_t>();
    if (!known_type(e)) c_.fail(cat("metadata key '", key_, "' is an array of unknown type ", e));
    return static_cast<GgufType>(e);
  }

  void read_array(GgufValue& v) {
    v.elem = read_elem_type();
    uint64_t n = c_.read<uint64_t>();
    c_.need_elements(n, min_size(v.elem), "elements");
    switch (v.elem) {
      case GgufType::STRING:
        v.strs.resize(static_cast<size_t>(n));
        for (auto& s : v.strs) s = c_.read_string();
        break;
      case GgufType::FLOAT32:
      case GgufType::FLOAT64:
        v.floats.resize(static_cast<size_t>(n));
        for (auto& f : v.floats) f = read_float(v.elem);
        break;
      case GgufType::ARRAY:
        for (uint64_t k = 0; k < n; ++k) skip_array(1);
        break;
      default:
        v.ints.resize(static_cast<size_t>(n));
        for (auto& x : v.ints) x = read_int(v.elem);
        break;
    }
  }

  // Validates a nested array (element type, count, contents) without keeping it.
  void skip_array(int depth) {
    if (depth > kMaxArrayDepth)
      c_.fail(cat("metadata key '", key_, "' nests arrays more than ", kMaxArrayDepth, " deep"));
    GgufType elem = read_elem_type();
    uint64_t n = c_.read<uint64_t>();
    c_.need_elements(n, min_size(elem), "elements");
    for (uint64_t k = 0; k < n; ++k) {
      if (elem == GgufType::ARRAY) {
        skip_array(depth + 1);
      } else if (elem == GgufType::STRING) {
        c_.skip_string();
      } else if (elem == GgufType::BOOL) {
        read_int(elem);  // checks 0/1
      } else {
        c_.skip(static_cast<size_t>((n - k) * min_size(elem)));  // need_elements proved they fit
        break;
      }
    }
  }

  Cursor& c_;
  const std::string& key_;
};

bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_mul_overflow(a, b, out); }

}  // namespace

std::unique_ptr<GgufFile> GgufFile::open(const std::string& path) {
  std::shared_ptr<MappedFile> file = MappedFile::open(path);
  std::unique_ptr<GgufFile> g(new GgufFile());
  g->label_ = path;
  g->file_ = file;
  g->parse_all(file->data(), file->size());
  return g;
}

std::unique_ptr<GgufFile> GgufFile::parse(const uint8_t* data, size_t size, const std::string& label) {
  std::unique_ptr<GgufFile> g(new GgufFile());
  g->label_ = label;
  g->parse_all(data, size);
  return g;
}

void GgufFile::parse_all(const uint8_t* data, size_t size) {
  Cursor c(data, size, label_);
  if (size == 0) c.fail("empty file, not a GGUF model");
  static const char kMagic[4] = {'G', 'G', 'U', 'F'};
  if (std::memcmp(data, kMagic, std::min<size_t>(size, 4)) != 0) c.fail("not a GGUF file (bad magic)");
  c.read<uint32_t>();  // the magic (a short file throws "truncated" here)

  version_ = c.read<uint32_t>();
  if (version_ == 1)
    c.fail("GGUF version 1 is not supported (re-convert the model with a current converter)");
  if (version_ == 0x02000000u || version_ == 0x03000000u)
    c.fail("big-endian GGUF file, not supported (braid reads little-endian GGUF only)");
  if (version_ != 2 && version_ != 3)
    c.fail(cat("unsupported GGUF version ", version_, " (braid reads 2 and 3)"));

  uint64_t n_tensors = c.read<uint64_t>();
  uint64_t n_kv = c.read<uint64_t>();
  // Counts come from the file: reserve no more than the bytes left could hold (a huge
  // count then fails as truncation at the first entry past the end).
  const uint64_t max_kv = c.remaining() / kMinKvBytes;
  const uint64_t max_tensors = c.remaining() / kMinTensorBytes;

  // Metadata.
  kv_.reserve(static_cast<size_t>(std::min(n_kv, max_kv)));
  for (uint64_t k = 0; k < n_kv; ++k) {
    c.set_context(cat("metadata key ", k + 1, " of ", n_kv));
    std::string key = c.read_string();
    if (key.empty()) c.fail(cat(c.context(), " has an empty name"));
    c.set_context(cat(c.context(), " ('", key, "')"));
    if (kv_index_.count(key)) c.fail(cat("duplicate metadata key '", key, "'"));
    uint32_t type = c.read<uint32_t>();
    if (!known_type(type)) c.fail(cat("metadata key '", key, "' has unknown value type ", type));
    GgufValue v = ValueReader(c, key).read(static_cast<GgufType>(type));
    kv_index_.emplace(key, kv_.size());
    kv_.emplace_back(std::move(key), std::move(v));
  }

  if (const GgufValue* a = find("general.alignment")) {
    if (!gguf_is_int_type(a->type))
      c.fail(cat("general.alignment has type ", gguf_type_name(a->type), ", expected an integer"));
    uint64_t al = static_cast<uint64_t>(a->i);
    if (a->i <= 0 || !std::has_single_bit(al) || al > kMaxAlignment)
      c.fail(cat("general.alignment ", a->i, " is not a power of two between 1 and ", kMaxAlignment));
    alignment_ = static_cast<size_t>(al);
  }

  // Tensor infos; offsets are relative to the data section, which starts after them.
  std::vector<uint64_t> offsets;
  tensors_.reserve(static_cast<size_t>(std::min(n_tensors, max_tensors)));
  offsets.reserve(tensors_.capacity());
  for (uint64_t k = 0; k < n_tensors; ++k) {
    c.set_context(cat("tensor info ", k + 1, " of ", n_tensors));
    Tensor t;
    t.name = c.read_string();
    if (t.name.empty()) c.fail(cat(c.context(), " has an empty name"));
    c.set_context(cat(c.context(), " ('", t.name, "')"));
    const std::string what = cat("tensor '", t.name, "'");
    if (tensor_index_.count(t.name)) c.fail(cat("duplicate tensor name '", t.name, "'"));

    uint32_t n_dims = c.read<uint32_t>();
    if (n_dims > 4) c.fail(cat(what, " has ", n_dims, " dimensions (at most 4)"));
    t.n_dims = static_cast<int>(n_dims);
    uint64_t nel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      uint64_t ne = c.read<uint64_t>();
      if (ne > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()) || mul_overflows(nel, ne, &nel) ||
          nel > static_cast<uint64_t>(std::numeric_limits<int64_t>::max()))
        c.fail(cat(what, " has too many elements (dimension ", d, " is ", ne, ")"));
      t.ne[d] = static_cast<int64_t>(ne);
    }

    uint32_t type = c.read<uint32_t>();
    const DTypeInfo* info = dtype_info(type);
    if (!info) c.fail(cat(what, " has unknown type id ", type));
    t.type = info->type;

    uint64_t offset = c.read<uint64_t>();
    if (offset % alignment_ != 0)
      c.fail(cat(what, " has data offset ", offset, ", not a multiple of the alignment ", alignment_));

    if (t.ne[0] % info->block_size != 0)
      c.fail(cat(what, " has ", t.ne[0], " columns, not a multiple of ", info->name, "'s block size ",
                 info->block_size));
    uint64_t nbytes = 0;
    bool overflow = mul_overflows(static_cast<uint64_t>(t.ne[0] / info->block_size),
                                  static_cast<uint64_t>(info->block_bytes), &nbytes);
    for (int d = 1; d < 4; ++d)
      overflow = overflow || mul_overflows(nbytes, static_cast<uint64_t>(t.ne[d]), &nbytes);
    if (overflow) c.fail(cat(what, " is too large"));
    t.nbytes = static_cast<size_t>(nbytes);

    tensor_index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
    offsets.push_back(offset);
  }

  // The data section: after the infos, padded to the alignment.
  size_t pos = c.pos();
  data_offset_ = (pos + alignment_ - 1) / alignment_ * alignment_;
  if (tensors_.empty()) return;
  if (data_offset_ > size)
    c.fail(cat("truncated file (tensor data would start at byte ", data_offset_, ", past the end at ", size,
               ")"));
  const uint64_t data_size = size - data_offset_;
  for (size_t k = 0; k < tensors_.size(); ++k) {
    Tensor& t = tensors_[k];
    if (offsets[k] > data_size || t.nbytes > data_size - offsets[k])
      c.fail(cat("truncated file (tensor '", t.name, "': ", t.nbytes, " bytes at data offset ", offsets[k],
                 " run past the end of the ", data_size, "-byte data section)"));
    t.data = data + data_offset_ + offsets[k];
  }

  // No two tensors may share bytes (empty tensors own none).
  std::vector<size_t> order(tensors_.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return offsets[a] < offsets[b]; });
  const Tensor* prev = nullptr;
  uint64_t prev_end = 0;
  for (size_t k : order) {
    const Tensor& t = tensors_[k];
    if (t.nbytes == 0) continue;
    if (prev && offsets[k] < prev_end) c.fail(cat("tensors '", prev->name, "' and '", t.name, "' overlap"));
    prev = &t;
    prev_end = offsets[k] + t.nbytes;
  }
}

// ---- lookups ----

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = kv_index_.find(key);
  return it == kv_index_.end() ? nullptr : &kv_[it->second].second;
}

const Tensor* GgufFile::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const Tensor& GgufFile::tensor(const std::string& name) const {
  const Tensor* t = find_tensor(name);
  if (!t) fail(label_, ": missing tensor '", name, "'");
  return *t;
}

namespace {

std::string describe(const GgufValue& v) {
  if (v.is_array()) return "array of " + gguf_type_name(v.elem);
  return gguf_type_name(v.type);
}

[[noreturn]] void wrong_type(const std::string& label, const std::string& key, const GgufValue& v,
                             const char* expected) {
  fail(label, ": metadata key ", key, " has type ", describe(v), ", expected ", expected);
}

}  // namespace

#define BRAID_GGUF_REQUIRE(key)   \
  const GgufValue* v = find(key); \
  if (!v) fail(label_, ": missing metadata key ", key)

std::string GgufFile::get_str(const std::string& key) const {
  BRAID_GGUF_REQUIRE(key);
  if (v->type != GgufType::STRING) wrong_type(label_, key, *v, "string");
  return v->str;
}

std::string GgufFile::get_str(const std::string& key, const std::string& dflt) const {
  return has(key) ? get_str(key) : dflt;
}

uint64_t GgufFile::get_u64(const std::string& key) const {
  BRAID_GGUF_REQUIRE(key);
  if (!gguf_is_int_type(v->type)) wrong_type(label_, key, *v, "an unsigned integer");
  if (v->type != GgufType::UINT64 && v->i < 0)
    fail(label_, ": metadata key ", key, " is negative (", v->i, ")");
  return static_cast<uint64_t>(v->i);
}

uint64_t GgufFile::get_u64(const std::string& key, uint64_t dflt) const {
  return has(key) ? get_u64(key) : dflt;
}

int64_t GgufFile::get_i64(const std::string& key) const {
  BRAID_GGUF_REQUIRE(key);
  if (!gguf_is_int_type(v->type)) wrong_type(label_, key, *v, "an integer");
  if (v->type == GgufType::UINT64 && v->i < 0)
    fail(label_, ": metadata key ", key, " is too large (", static_cast<uint64_t>(v->i), ")");
  return v->i;
}

int64_t GgufFile::get_i64(const std::string& key, int64_t dflt) const {
  return has(key) ? get_i64(key) : dflt;
}

double GgufFile::get_f64(const std::string& key) const {
  BRAID_GGUF_REQUIRE(key);
  if (v->type == GgufType::FLOAT32 || v->type == GgufType::FLOAT64) return v->f;
  if (v->type == GgufType::UINT64) return static_cast<double>(static_cast<uint64_t>(v->i));
  if (gguf_is_int_type(v->type)) return static_cast<double>(v->i);
  wrong_type(label_, key, *v, "a number");
}

double GgufFile::get_f64(const std::string& key, double dflt) const { return has(key) ? get_f64(key) : dflt; }

bool GgufFile::get_bool(const std::string& key, bool dflt) const {
  const GgufValue* v = find(key);
  if (!v) return dflt;
  if (v->type != GgufType::BOOL) wrong_type(label_, key, *v, "bool");
  return v->i != 0;
}

const std::vector<std::string>& GgufFile::get_strs(const std::string& key) const {
  BRAID_GGUF_REQUIRE(key);
  if (!v->is_array() || v->elem != GgufType::STRING) wrong_type(label_, key, *v, "array of string");
  return v->strs;
}

const std::vector<int64_t>& GgufFile::get_ints(const std::string& key) const {
  BRAID_GGUF_REQUIRE(key);
  if (!v->is_array() || !(gguf_is_int_type(v->elem) || v->elem == GgufType::BOOL))
    wrong_type(label_, key, *v, "array of integers");
  return v->ints;
}

const std::vector<double>& GgufFile::get_floats(const std::string& key) const {
  BRAID_GGUF_REQUIRE(key);
  if (!v->is_array() || (v->elem != GgufType::FLOAT32 && v->elem != GgufType::FLOAT64))
    wrong_type(label_, key, *v, "array of floats");
  return v->floats;
}

#undef BRAID_GGUF_REQUIRE

}  // namespace braid
