// GgufValue constructors and GGUF type names.
#include <utility>

#include "braid/error.h"
#include "braid/gguf.h"

namespace braid {

std::string gguf_type_name(GgufType t) {
  switch (t) {
    case GgufType::UINT8:
      return "uint8";
    case GgufType::INT8:
      return "int8";
    case GgufType::UINT16:
      return "uint16";
    case GgufType::INT16:
      return "int16";
    case GgufType::UINT32:
      return "uint32";
    case GgufType::INT32:
      return "int32";
    case GgufType::FLOAT32:
      return "float32";
    case GgufType::BOOL:
      return "bool";
    case GgufType::STRING:
      return "string";
    case GgufType::ARRAY:
      return "array";
    case GgufType::UINT64:
      return "uint64";
    case GgufType::INT64:
      return "int64";
    case GgufType::FLOAT64:
      return "float64";
  }
  return "type " + std::to_string(static_cast<uint32_t>(t));
}

bool gguf_is_int_type(GgufType t) {
  switch (t) {
    case GgufType::UINT8:
    case GgufType::INT8:
    case GgufType::UINT16:
    case GgufType::INT16:
    case GgufType::UINT32:
    case GgufType::INT32:
    case GgufType::UINT64:
    case GgufType::INT64:
      return true;
    default:
      return false;
  }
}

namespace {

GgufValue scalar_int(GgufType t, int64_t v) {
  GgufValue r;
  r.type = t;
  r.i = v;
  return r;
}

GgufValue scalar_float(GgufType t, double v) {
  GgufValue r;
  r.type = t;
  r.f = v;
  return r;
}

GgufValue array_of(GgufType elem) {
  GgufValue r;
  r.type = GgufType::ARRAY;
  r.elem = elem;
  return r;
}

}  // namespace

GgufValue GgufValue::u32(uint32_t v) { return scalar_int(GgufType::UINT32, v); }
GgufValue GgufValue::i32(int32_t v) { return scalar_int(GgufType::INT32, v); }
GgufValue GgufValue::u64(uint64_t v) { return scalar_int(GgufType::UINT64, static_cast<int64_t>(v)); }
GgufValue GgufValue::i64(int64_t v) { return scalar_int(GgufType::INT64, v); }
GgufValue GgufValue::f32(float v) { return scalar_float(GgufType::FLOAT32, v); }
GgufValue GgufValue::f64(double v) { return scalar_float(GgufType::FLOAT64, v); }
GgufValue GgufValue::boolean(bool v) { return scalar_int(GgufType::BOOL, v ? 1 : 0); }

GgufValue GgufValue::string(std::string v) {
  GgufValue r;
  r.type = GgufType::STRING;
  r.str = std::move(v);
  return r;
}

GgufValue GgufValue::string_array(std::vector<std::string> v) {
  GgufValue r = array_of(GgufType::STRING);
  r.strs = std::move(v);
  return r;
}

GgufValue GgufValue::f32_array(const std::vector<float>& v) {
  GgufValue r = array_of(GgufType::FLOAT32);
  r.floats.assign(v.begin(), v.end());
  return r;
}

GgufValue GgufValue::i32_array(const std::vector<int32_t>& v) {
  GgufValue r = array_of(GgufType::INT32);
  r.ints.assign(v.begin(), v.end());
  return r;
}

GgufValue GgufValue::int_array(GgufType elem, std::vector<int64_t> v) {
  check(gguf_is_int_type(elem) || elem == GgufType::BOOL, "GgufValue::int_array: ", gguf_type_name(elem),
        " is not an integer type");
  GgufValue r = array_of(elem);
  r.ints = std::move(v);
  return r;
}

size_t GgufValue::array_size() const {
  if (type != GgufType::ARRAY) return 0;
  switch (elem) {
    case GgufType::STRING:
      return strs.size();
    case GgufType::FLOAT32:
    case GgufType::FLOAT64:
      return floats.size();
    case GgufType::ARRAY:
      return 0;
    default:
      return ints.size();
  }
}

}  // namespace braid
