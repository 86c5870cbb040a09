// GGUF v2/v3 files: reading (mmap, zero-copy, every field validated) and writing.
//
// Reading never trusts the file: every count, length, offset, type and dimension is
// checked against the file size and sane limits before use, so a truncated, corrupt or
// hostile file gives one braid::Error ("<path>: <what is wrong>"), never a crash.
// Spec: https://github.com/ggml-org/ggml/blob/master/docs/gguf.md
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "braid/mapped_file.h"
#include "braid/tensor.h"

namespace braid {

enum class GgufType : uint32_t {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
};

// One metadata value. Scalars: integers (and bool) in `i` (u64 values above INT64_MAX
// keep their bits), floats in `f`, strings in `str`. Arrays: `elem` is the element type
// and the elements are in `ints`, `floats` or `strs`; nested arrays are validated and
// skipped (elem == ARRAY, all three empty).
struct GgufValue {
  GgufType type = GgufType::UINT32;
  GgufType elem = GgufType::UINT32;
  int64_t i = 0;
  double f = 0;
  std::string str;
  std::vector<int64_t> ints;
  std::vector<double> floats;
  std::vector<std::string> strs;

  static GgufValue u32(uint32_t v);
  static GgufValue i32(int32_t v);
  static GgufValue u64(uint64_t v);
  static GgufValue i64(int64_t v);
  static GgufValue f32(float v);
  static GgufValue f64(double v);
  static GgufValue boolean(bool v);
  static GgufValue string(std::string v);
  static GgufValue string_array(std::vector<std::string> v);
  static GgufValue f32_array(const std::vector<float>& v);
  static GgufValue i32_array(const std::vector<int32_t>& v);
  // An array of integers of element type `elem` (UINT8 ... INT64, BOOL).
  static GgufValue int_array(GgufType elem, std::vector<int64_t> v);

  bool is_array() const { return type == GgufType::ARRAY; }
  size_t array_size() const;  // 0 for scalars and for skipped nested arrays
};

// "uint32", "string", "array", ...; "type N" for ids outside the enum.
std::string gguf_type_name(GgufType t);
// True for the integer types UINT8 ... INT64 (not BOOL, though it is kept in `i` too).
bool gguf_is_int_type(GgufType t);

class GgufFile {
 public:
  // Maps and parses the file. Throws braid::Error naming the path and the problem.
  static std::unique_ptr<GgufFile> open(const std::string& path);
  // Parses bytes someone else keeps alive (fuzzing, tests). `label` names it in errors.
  static std::unique_ptr<GgufFile> parse(const uint8_t* data, size_t size, const std::string& label);

  uint32_t version() const { return version_; }
  const std::string& label() const { return label_; }

  // Metadata, in file order.
  const std::vector<std::pair<std::string, GgufValue>>& metadata() const { return kv_; }
  const GgufValue* find(const std::string& key) const;
  bool has(const std::string& key) const { return find(key) != nullptr; }

  // Typed getters. Without a default they throw "<label>: missing metadata key K" or
  // "... key K has type T, expected ..."; integer getters accept any integer type and
  // check the range.
  std::string get_str(const std::string& key) const;
  std::string get_str(const std::string& key, const std::string& dflt) const;
  uint64_t get_u64(const std::string& key) const;
  uint64_t get_u64(const std::string& key, uint64_t dflt) const;
  int64_t get_i64(const std::string& key) const;
  int64_t get_i64(const std::string& key, int64_t dflt) const;
  double get_f64(const std::string& key) const;  // accepts float or integer types
  double get_f64(const std::string& key, double dflt) const;
  bool get_bool(const std::string& key, bool dflt) const;
  const std::vector<std::string>& get_strs(const std::string& key) const;
  const std::vector<int64_t>& get_ints(const std::string& key) const;
  const std::vector<double>& get_floats(const std::string& key) const;

  // Tensors, in file order; data points into the mapping (valid while this lives).
  const std::vector<Tensor>& tensors() const { return tensors_; }
  const Tensor* find_tensor(const std::string& name) const;
  const Tensor& tensor(const std::string& name) const;  // throws if missing

  // True when the tensors' bytes are a mapping of a file (open), whose pages can be
  // given back (MappedFile::drop_pages); false for bytes someone else keeps (parse).
  bool file_backed() const { return file_ != nullptr; }

  size_t alignment() const { return alignment_; }
  size_t data_offset() const { return data_offset_; }

 private:
  GgufFile() = default;
  void parse_all(const uint8_t* data, size_t size);

  std::shared_ptr<MappedFile> file_;
  std::string label_;
  uint32_t version_ = 0;
  size_t alignment_ = 32;
  size_t data_offset_ = 0;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::map<std::string, size_t> kv_index_;
  std::vector<Tensor> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

// Builds a GGUF v3 file. Metadata keeps insertion order (set() on an existing key
// replaces its value in place). Tensor data is either borrowed (must outlive write())
// or owned by the writer.
class GgufWriter {
 public:
  void set(const std::string& key, GgufValue value);
  void remove(const std::string& key);
  // Copies every metadata key of `src` (tensors are not copied).
  void copy_metadata(const GgufFile& src);

  // ne in GGML order (ne[0] innermost); nbytes must equal the size implied by type/ne.
  void add_tensor(const std::string& name, DType type, const std::vector<int64_t>& ne, const void* data,
                  size_t nbytes);
  void add_tensor(const std::string& name, DType type, const std::vector<int64_t>& ne,
                  std::vector<uint8_t> owned);

  void set_alignment(uint32_t a);  // also written as general.alignment when not 32

  // Writes PATH.tmp and renames it to PATH, so a failure never leaves half a file.
  // Calls progress(done_bytes, total_bytes) while writing tensor data, when given.
  void write(const std::string& path,
             const std::function<void(uint64_t, uint64_t)>& progress = nullptr) const;

 private:
  struct PendingTensor {
    std::string name;
    DType type;
    std::vector<int64_t> ne;
    const uint8_t* data;
    size_t nbytes;
    std::shared_ptr<std::vector<uint8_t>> owned;
  };
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<PendingTensor> tensors_;
  uint32_t alignment_ = 32;
};

}  // namespace braid
