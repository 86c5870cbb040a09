#include "dist/worker_stream.h"

#include <sys/mman.h>

#include <cstring>

#include "braid/error.h"

namespace braid::dist {
namespace {

// The layer of "blk.N.something", or -1.
int layer_of(const std::string& name) {
  if (name.rfind("blk.", 0) != 0) return -1;
  size_t i = 4;
  int n = 0;
  bool digits = false;
  while (i < name.size() && name[i] >= '0' && name[i] <= '9' && n < 1000000) {
    n = n * 10 + (name[i] - '0');
    digits = true;
    ++i;
  }
  return digits && i < name.size() && name[i] == '.' ? n : -1;
}

bool is_big_matrix(const std::string& name) { return name == "token_embd.weight" || name == "output.weight"; }

}  // namespace

std::vector<std::string> tensors_for_stage(const GgufFile& gguf, int first, int last, bool output) {
  std::vector<std::string> out;
  const bool has_output = gguf.find_tensor("output.weight") != nullptr;
  for (const Tensor& t : gguf.tensors()) {
    const int l = layer_of(t.name);
    bool want;
    if (l >= 0) {
      want = l >= first && l < last;
    } else if (is_big_matrix(t.name)) {
      want = output && (t.name == "output.weight" || !has_output);
    } else {
      want = true;  // norms, rope factors, position table: small
    }
    if (want) out.push_back(t.name);
  }
  return out;
}

StreamedModel::StreamedModel(uint64_t file_size, const std::vector<uint8_t>& header) : size_(file_size) {
  check(file_size >= header.size() && file_size < (uint64_t{1} << 44), "streamed model of ", file_size,
        " bytes with a header of ", header.size());
  void* p =
      mmap(nullptr, file_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  check(p != MAP_FAILED, "cannot reserve ", file_size >> 20, " MiB of address space for the streamed model");
  base_ = static_cast<uint8_t*>(p);
  std::memcpy(base_, header.data(), header.size());
  gguf_ = GgufFile::parse(base_, file_size, "streamed model");
  check(gguf_->data_offset() <= header.size() || gguf_->tensors().empty(), "streamed header of ",
        header.size(), " bytes ends before the tensor data at ", gguf_->data_offset());
}

StreamedModel::~StreamedModel() {
  model_.reset();
  gguf_.reset();
  if (base_) munmap(base_, size_);
}

void StreamedModel::put(const std::string& tensor, uint64_t offset, const uint8_t* data, size_t n) {
  const Tensor* t = gguf_->find_tensor(tensor);
  check(t != nullptr, "streamed data for unknown tensor ", tensor);
  uint64_t& got = received_[tensor];
  check(offset == got, "streamed data for ", tensor, " at ", offset, ", expected ", got);
  check(n <= t->nbytes - got, "streamed data for ", tensor, " goes beyond its ", t->nbytes, " bytes");
  // The parser checked that every tensor lies inside [0, file_size) of our mapping.
  std::memcpy(const_cast<uint8_t*>(t->data) + got, data, n);
  got += n;
  received_total_ += n;
  dirty_ = true;
}

bool StreamedModel::complete(const std::string& tensor) const {
  const Tensor* t = gguf_->find_tensor(tensor);
  auto it = received_.find(tensor);
  return t && (t->nbytes == 0 || (it != received_.end() && it->second == t->nbytes));
}

std::vector<bool> StreamedModel::layers_present(int n_layers) const {
  std::vector<bool> present(static_cast<size_t>(n_layers), true);
  std::vector<bool> seen(static_cast<size_t>(n_layers), false);
  for (const Tensor& t : gguf_->tensors()) {
    const int l = layer_of(t.name);
    if (l < 0 || l >= n_layers) continue;
    seen[static_cast<size_t>(l)] = true;
    if (!complete(t.name)) present[static_cast<size_t>(l)] = false;
  }
  for (int l = 0; l < n_layers; ++l)
    present[static_cast<size_t>(l)] = present[static_cast<size_t>(l)] && seen[static_cast<size_t>(l)];
  return present;
}

std::string StreamedModel::missing(int first, int last, bool output) const {
  for (const std::string& name : tensors_for_stage(*gguf_, first, last, output))
    if (!complete(name)) return name;
  return "";
}

std::shared_ptr<const Model> StreamedModel::model() {
  if (dirty_ || !model_) {
    model_ = Model::from_gguf(gguf_);
    dirty_ = false;
  }
  return model_;
}

}  // namespace braid::dist
