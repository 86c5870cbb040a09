// The tensors of a Hugging Face folder: model.safetensors, or the shards that
// model.safetensors.index.json lists, looked up by name with shape checks.
#pragma once

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "braid/safetensors.h"
#include "convert/builder.h"

namespace braid::convert {

class HfTensors {
 public:
  // Opens the folder's weights. Throws braid::Error when there are none, the index is
  // malformed, a shard is missing or two shards hold the same tensor.
  explicit HfTensors(const std::string& dir);

  const StTensor* find(const std::string& name) const;
  // The tensor `name`, checked to have exactly `shape` (PyTorch order) and a float type
  // the converters read; marks it used. Errors name the file and the tensor.
  const StTensor& need(const std::string& name, const std::vector<int64_t>& shape);
  // Names that no need() consumed, except those `ignorable` accepts.
  template <class Pred>
  std::vector<std::string> unused(Pred ignorable) const {
    std::vector<std::string> out;
    for (const auto& [name, where] : index_)
      if (!used_.count(name) && !ignorable(name)) out.push_back(name);
    return out;
  }
  // Where tensor `name` is (or would be) stored, for error messages.
  std::string file_of(const std::string& name) const;
  // The safetensors files, to keep them mapped while the output is written.
  const std::vector<std::shared_ptr<const SafetensorsFile>>& files() const { return files_; }

 private:
  struct Where {
    const SafetensorsFile* file;
    const StTensor* tensor;
  };
  std::string dir_;
  std::string label_;  // model.safetensors or the index, for "missing tensor" errors
  std::vector<std::shared_ptr<const SafetensorsFile>> files_;
  std::map<std::string, Where> index_;
  std::set<std::string> used_;
};

// Source element type of a safetensors dtype: F32, F16 or BF16.
DType st_float_type(const StTensor& t);

}  // namespace braid::convert
