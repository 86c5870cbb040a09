// Model's copies of its F16 / BF16 matrices in panels (braid/model.h, "Panels").
#include "model/packed.h"

#include <memory>
#include <utility>
#include <vector>

#include "braid/error.h"
#include "braid/kernels.h"
#include "braid/mapped_file.h"

namespace braid {

namespace {

bool packable(const Tensor* t) { return t && panels_supported(t->type); }

}  // namespace

std::shared_ptr<const Model::Packed> Model::packed(int layer, ThreadPool& pool) const {
  check(layer >= 0 && layer <= config_.n_layers, "packed: no layer ", layer);
  const size_t i = static_cast<size_t>(layer);
  if (!packs_[i]) return nullptr;
  std::lock_guard<std::mutex> lock(packed_mu_);
  if (packed_[i]) return packed_[i];
  auto p = std::make_shared<Packed>();
  // The panel copy of t (t itself when it is not F16 / BF16).
  auto copy = [&](const Tensor* t) -> const Tensor* {
    if (!packable(t)) return t;
    auto view = std::make_unique<Tensor>(*t);
    p->buffers.emplace_back(panel_bytes(*t));
    pack_panels(*t, p->buffers.back().data(), pool);
    view->data = p->buffers.back().data();
    view->nbytes = p->buffers.back().size();
    view->panels = true;
    // The file's pages are read again only if something reads the rows (a tied
    // output's embedding lookups); the copy is what runs.
    if (gguf_->file_backed()) MappedFile::drop_pages(t->data, t->nbytes);
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
      if (packable(m)) packs_[i] = true;
  }
  packs_[n] = packable(output_);
}

}  // namespace braid
