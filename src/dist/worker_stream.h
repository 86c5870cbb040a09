// A model streamed to a worker that does not have its file: the head sends the file's
// header (metadata and tensor table) and then only the tensors this worker needs. They
// land at their places in an anonymous mapping of the file's size, so the GGUF parser
// and Model work on it unchanged (zero-copy), and the tensors never sent stay untouched
// zero pages that cost no memory.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "braid/gguf.h"
#include "braid/model.h"

namespace braid::dist {

class StreamedModel {
 public:
  // Maps file_size bytes and parses `header` (the file's bytes before its tensor data).
  // Throws braid::Error for a header that does not parse or does not fit.
  StreamedModel(uint64_t file_size, const std::vector<uint8_t>& header);
  ~StreamedModel();
  StreamedModel(const StreamedModel&) = delete;
  StreamedModel& operator=(const StreamedModel&) = delete;

  // Bytes [offset, offset + n) of a tensor. Chunks of a tensor arrive in order; throws
  // for an unknown tensor, a gap or bytes beyond its end.
  void put(const std::string& tensor, uint64_t offset, const uint8_t* data, size_t n);
  bool complete(const std::string& tensor) const;
  // Layers all of whose tensors have arrived.
  std::vector<bool> layers_present(int n_layers) const;
  // The first tensor of [first, last) (and of the output, when `output`) still missing,
  // or "" when all are here.
  std::string missing(int first, int last, bool output) const;

  const GgufFile& gguf() const { return *gguf_; }
  uint64_t file_size() const { return size_; }
  uint64_t received_bytes() const { return received_total_; }
  // A Model over what has arrived; rebuilt after new tensors (vectors such as norms are
  // copied when a Model is built).
  std::shared_ptr<const Model> model();

 private:
  uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  std::shared_ptr<const GgufFile> gguf_;
  std::map<std::string, uint64_t> received_;  // bytes per tensor, in order
  uint64_t received_total_ = 0;
  std::shared_ptr<const Model> model_;
  bool dirty_ = true;
};

// The tensors a stage needs: every tensor outside the blocks ("blk.N.") except the
// embedding and output matrices, the blocks [first, last), and the output matrix
// (output.weight, or token_embd.weight when tied) when `output`.
std::vector<std::string> tensors_for_stage(const GgufFile& gguf, int first, int last, bool output);

}  // namespace braid::dist
