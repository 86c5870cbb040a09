#include "braid/kv_cache.h"

#include <algorithm>
#include <new>

#include "braid/error.h"
#include "braid/model.h"

namespace braid {

KVCache::KVCache(const ModelConfig& config, int first_layer, int last_layer, int n_ctx)
    : first_(first_layer), last_(last_layer), n_ctx_(n_ctx), kv_dim_(config.kv_dim()) {
  check(first_layer >= 0 && first_layer < last_layer && last_layer <= config.n_layers,
        "KV cache: layer range [", first_layer, ", ", last_layer, ") is not inside the model's ",
        config.n_layers, " layers");
  check(n_ctx >= 1, "KV cache: context must be at least 1 position, got ", n_ctx);
  check(kv_dim_ >= 1, "KV cache: the model has no key/value width");
  const size_t floats = static_cast<size_t>(n_ctx) * static_cast<size_t>(kv_dim_);
  // Uninitialized on purpose: pages are touched only as positions fill, so a cache for
  // a long context costs memory as the sequence grows, not up front.
  try {
    for (int l = first_; l < last_; ++l) {
      k_.emplace_back(new float[floats]);
      v_.emplace_back(new float[floats]);
    }
  } catch (const std::bad_alloc&) {
    fail("KV cache: ", bytes() >> 20, " MiB for a context of ", n_ctx, " do not fit in memory");
  }
  n_pos_.assign(static_cast<size_t>(last_ - first_), 0);
}

int KVCache::index(int layer) const {
  check(covers(layer), "KV cache holds layers [", first_, ", ", last_, "), not layer ", layer);
  return layer - first_;
}

int KVCache::n_pos() const { return *std::min_element(n_pos_.begin(), n_pos_.end()); }

void KVCache::truncate(int n) {
  n = std::max(n, 0);
  for (int& p : n_pos_) p = std::min(p, n);
}

void KVCache::set_n_pos(int layer, int n) {
  check(n >= 0 && n <= n_ctx_, "KV cache: ", n, " positions do not fit its context of ", n_ctx_);
  n_pos_[static_cast<size_t>(index(layer))] = n;
}

size_t KVCache::bytes() const {
  return static_cast<size_t>(last_ - first_) * static_cast<size_t>(n_ctx_) * bytes_per_position_per_layer();
}

}  // namespace braid
