// The key/value cache of one sequence for a contiguous range of layers [first, last).
//
// One device of a cluster holds the cache of the layers it runs; a single device holds
// all of them. Keys and values are f32, per layer laid out [n_ctx][n_kv_heads * head_dim]
// (keys already rotated by RoPE), so moving a layer between devices is a plain copy of
// the first n_pos() rows. Memory is reserved up front but only touched as positions fill.
//
// Every layer remembers how many positions it holds. Model::run_layers appends at a
// position (pos0 <= what the layer holds: recomputing from an earlier position rolls the
// layer back to it), so the cache is always a prefix of the sequence.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace braid {

struct ModelConfig;

class KVCache {
 public:
  // Covers layers [first_layer, last_layer) of a model with `config`, n_ctx positions.
  // Throws braid::Error for an empty or out-of-range layer range or n_ctx < 1.
  KVCache(const ModelConfig& config, int first_layer, int last_layer, int n_ctx);

  int first_layer() const { return first_; }
  int last_layer() const { return last_; }
  bool covers(int layer) const { return layer >= first_ && layer < last_; }
  int n_ctx() const { return n_ctx_; }
  int kv_dim() const { return kv_dim_; }  // floats per position per layer, for K and for V

  // Positions every covered layer holds (the minimum over layers).
  int n_pos() const;
  int n_pos(int layer) const { return n_pos_[index(layer)]; }
  // Forgets positions >= n in every layer (rolls back a rejected draft, a new prompt ...).
  void truncate(int n);
  void clear() { truncate(0); }
  // Sets how many positions `layer` holds, after its rows were written directly
  // (e.g. a layer's cache received from a neighbour). 0 <= n <= n_ctx.
  void set_n_pos(int layer, int n);

  // Rows of `layer` (covered): [n_ctx][kv_dim] each.
  float* k(int layer) { return k_[index(layer)].get(); }
  float* v(int layer) { return v_[index(layer)].get(); }
  const float* k(int layer) const { return k_[index(layer)].get(); }
  const float* v(int layer) const { return v_[index(layer)].get(); }

  // Bytes reserved for all covered layers (K and V at full context).
  size_t bytes() const;
  // Bytes one position takes in one layer (K + V).
  size_t bytes_per_position_per_layer() const { return 2 * sizeof(float) * static_cast<size_t>(kv_dim_); }

 private:
  int index(int layer) const;

  int first_, last_, n_ctx_, kv_dim_;
  std::vector<std::unique_ptr<float[]>> k_, v_;
  std::vector<int> n_pos_;
};

}  // namespace braid
