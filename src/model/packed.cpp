// Model's copies of its matrices in panels (F16 / BF16, and Q4_0 / Q8_0 / Q4_K / Q6_K where
// supported; braid/model.h, "Panels").
#include "model/packed.h"

#include <algorithm>
#include <memory>
#include <utility>
#include <vector>

#include "braid/error.h"
#include "braid/kernels.h"
#include "braid/mapped_file.h"

namespace braid {

namespace {

// F16 / BF16 always (their panels compute in another order than their rows, and every
// device must compute a layer alike). Block types give the same bits either way, so they
// are packed only when the file's pages can be given back: a model parsed from memory
// (a streamed one) would hold those layers twice.
bool packable(const Tensor* t, bool file_backed) {
  if (!t || !panels_supported(t->type)) return false;
  return file_backed || t->type == DType::F16 || t->type == DType::BF16;
}

}  // namespace

std::shared_ptr<const Model::Packed> Model::packed(int layer, ThreadPool& pool) const {
  check(layer >= 0 && layer <= config_.n_layers, "packed: no layer ", layer);
  const size_t i = static_cast<size_t>(layer);
  if (!packs_[i]) return nullptr;
  std::lock_guard<std::mutex> lock(packed_mu_);
  if (packed_[i]) return packed_[i];
  auto p = std::make_shared<Packed>();
  // The panel copy of t (t itself when it has no panel layout here).
  auto copy = [&](const Tensor* t) -> const Tensor* {
    if (!packable(t, gguf_->file_backed())) return t;
    auto view = std::make_unique<Tensor>(*t);
    p->buffers.emplace_back(panel_bytes(*t));
    uint8_t* dst = p->buffers.back().data();
    // In slices of about 8 MiB, each slice's pages of the file given back once it is
    // packed, so that a tensor's file pages and its copy are never both resident (a
    // 150k-word output matrix is a quarter of a 0.5B model). The file's pages are read
    // again only if something reads the rows (a tied output's embedding lookups).
    const int64_t n_panels = (t->rows() + kPanelRows - 1) / kPanelRows;
    const size_t panel_file_bytes = static_cast<size_t>(kPanelRows) * t->row_size();
    const int64_t slice = std::max<int64_t>(1, static_cast<int64_t>((size_t{8} << 20) / panel_file_bytes));
    for (int64_t p0 = 0; p0 < n_panels; p0 += slice) {
      const int64_t p1 = std::min(n_panels, p0 + slice);
      pack_panels(*t, dst, pool, p0, p1);
      if (gguf_->file_backed()) {
        const size_t begin = static_cast<size_t>(p0) * panel_file_bytes;
        const size_t end = std::min(t->nbytes, static_cast<size_t>(p1) * panel_file_bytes);
        MappedFile::drop_pages(t->data + begin, end - begin);
      }
    }
    // And the pages that straddled two slices.
    if (gguf_->file_backed()) MappedFile::drop_pages(t->data, t->nbytes);
    view->data = dst;
    view->nbytes = p->buffers.back().size();
    view->panels = true;
    p->tensors.push_back(std::move(view));
    return p->tensors.back().get();
  };
  if (layer == config_.n_layers) {
    p->output = copy(output_);
  } else {
    LayerWeights& w = p->weights;
    w = layers_[i];
    for (const Tensor** m : {&w.wq, &w.wk, &w.wv, &w.wqkv, &w.wo, &w.w_gate, &w.w_up, &w.w_down}) *m = copy(*m);
  }
  packed_[i] = std::move(p);
  return packed_[i];
}

void Model::release_packed(int layer) const {
  check(layer >= 0 && layer <= config_.n_layers, "release_packed: no layer ", layer);
  std::lock_guard<std::mutex> lock(packed_mu_);
  packed_[static_cast<size_t>(layer)].reset();
}

bool Model::is_packed(int layer) const {
  check(layer >= 0 && layer <= config_.n_layers, "is_packed: no layer ", layer);
  std::lock_guard<std::mutex> lock(packed_mu_);
  return packed_[static_cast<size_t>(layer)] != nullptr;
}

void Model::find_packable() {
  const size_t n = static_cast<size_t>(config_.n_layers);
  packs_.assign(n + 1, false);
  packed_.assign(n + 1, nullptr);
  for (size_t i = 0; i < n; ++i) {
    const LayerWeights& w = layers_[i];
    for (const Tensor* m : {w.wq, w.wk, w.wv, w.wqkv, w.wo, w.w_gate, w.w_up, w.w_down})
      if (packable(m, gguf_->file_backed())) packs_[i] = true;
  }
  packs_[n] = packable(output_, gguf_->file_backed());
}

}  // namespace braid
