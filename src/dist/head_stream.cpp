// Streaming the model to a worker that does not have its file (or has another one): the
// header, then only the tensors the request needs, in chunks, on the control link.
#include <mutex>

#include "braid/error.h"
#include "dist/head_ring.h"
#include "dist/worker_stream.h"

namespace braid::dist {
namespace {

constexpr size_t kChunk = 8u << 20;  // bytes per MODEL_DATA frame

}  // namespace

Incoming RingImpl::request_with_model(RemoteWorker& w, const proto::Frame& request,
                                      const std::vector<std::string>& needed) {
  Incoming reply = w.request(request, opt.io_timeout);
  const auto* e = reply.get<proto::ErrorMessage>();
  if (!e || e->code != static_cast<uint32_t>(proto::ErrorCode::kModelMismatch)) return reply;

  std::lock_guard<std::mutex> lock(w.control_mu);
  if (!file) file = MappedFile::open(model_path);
  const GgufFile& g = model->gguf();
  uint64_t bytes = 0;
  for (const auto& name : needed)
    if (!w.streamed.count(name)) bytes += g.tensor(name).nbytes;
  log(cat("streaming ", bytes >> 10, " KiB of the model to ", w.addr.str(), " (", e->message, ")"));
  if (w.streamed.empty()) {
    ModelHeader h;
    h.file_size = file->size();
    h.bytes.assign(file->data(), file->data() + g.data_offset());
    send(*w.control, h, opt.io_timeout);
  }
  for (const auto& name : needed) {
    if (w.streamed.count(name)) continue;
    const Tensor& t = g.tensor(name);
    for (size_t off = 0; off < t.nbytes; off += kChunk) {
      ModelData d;
      d.tensor = name;
      d.offset = off;
      d.bytes.assign(t.data + off, t.data + std::min(t.nbytes, off + kChunk));
      send(*w.control, d, opt.io_timeout);
    }
    w.streamed.insert(name);
  }
  send(*w.control, request, opt.io_timeout);
  return receive(*w.control, opt.io_timeout);
}

}  // namespace braid::dist
