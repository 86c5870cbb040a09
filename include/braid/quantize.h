// Requantizing GGUF models (GGUF -> GGUF), with llama.cpp's quantization mixes.
//
//   braid::QuantizeOptions opt;
//   opt.mix = braid::QuantMix::kQ4_K_M;
//   braid::quantize_gguf("model-f16.gguf", "model-q4_k_m.gguf", opt);
//
// A mix ("file type", llama.cpp's llama_ftype) names a base block type and rules that
// give a few sensitive tensors more bits. The rules are llama.cpp's llama_tensor_get_type
// (src/llama-quant.cpp) for the mixes below, so a file quantized by braid has the same
// tensor types as one made by llama-quantize, and (through braid::quantize_row, which
// follows llama.cpp's reference quantizers) the same bytes:
//
//   - Only matrices are quantized: tensors of 2+ dimensions whose name ends in "weight",
//     except norms and learned position embeddings. Everything else (norms, biases,
//     rope_freqs) is copied unchanged, usually f32.
//   - output.weight (and token_embd.weight when the head is tied to it) gets q6_K, except
//     in Q8_0 (stays q8_0) and the float mixes; q8_0 when its rows do not fit the base
//     type's blocks.
//   - Q4_K_M / Q5_K_M: attn_v and ffn_down get q6_K in the layers where llama.cpp's
//     use_more_bits(i, n) holds: the first n/8 layers, the last n/8, and every third
//     layer in between ((i - n/8) % 3 == 2): about half of them.
//   - Q4_K_S: attn_v of the first 4 layers and ffn_down of the first n/8 get q5_K.
//   - A matrix whose row length is not a multiple of its type's block size falls back as
//     llama.cpp does: q4_K -> q5_0, q5_K -> q5_1, q6_K -> q8_0, and to f16 when even the
//     32-element blocks do not fit.
// Tensors already of their target type are copied byte for byte (zero work).
//
// Errors (unknown mix, missing or corrupt input, a quantized input without
// allow_requantize, unwritable output) throw one-line braid::Errors; the output is
// written atomically (OUT.tmp, then renamed), so a failure never leaves a partial file.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "braid/dtype.h"
#include "braid/tensor.h"

namespace braid {

// llama.cpp's file types; the values are what general.file_type holds.
enum class QuantMix : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ4_1 = 3,
  kQ8_0 = 7,
  kQ5_0 = 8,
  kQ5_1 = 9,
  kQ4_K_S = 14,
  kQ4_K_M = 15,
  kQ5_K_S = 16,
  kQ5_K_M = 17,
  kQ6_K = 18,
  kBF16 = 32,
};

// "F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K_S", "Q4_K_M",
// "Q5_K_S", "Q5_K_M", "Q6_K".
const char* quant_mix_name(QuantMix m);
// Parses a mix name, case-insensitively; "Q4_K" and "Q5_K" are llama-quantize's aliases
// of Q4_K_M and Q5_K_M. Throws braid::Error "unknown quantization type 'X' (expected
// one of: ...)".
QuantMix quant_mix_from_name(const std::string& name);
// Every accepted name, comma-separated, for help texts.
std::string quant_mix_names();
// The mix general.file_type = v denotes; false when v is not one of the mixes above.
bool quant_mix_from_file_type(uint32_t v, QuantMix* out);
// The block (or float) type most matrices of the mix get.
DType quant_mix_base_type(QuantMix m);

// Where the mix puts one tensor.
struct TensorTypeChoice {
  DType type = DType::F32;       // the type the tensor is written in
  bool quantizable = false;      // a matrix the mix applies to (false: copied unchanged)
  bool fallback = false;         // the preferred type did not fit the row length
  DType preferred = DType::F32;  // the rules' choice before any fallback
};

// The type of every tensor of a model (names, shapes and current types; data unused) in
// `mix`: llama.cpp's rules above. n_layers counts the blocks (for use_more_bits); pure
// gives every matrix the base type (llama-quantize --pure), with fallbacks still applied.
std::vector<TensorTypeChoice> choose_tensor_types(QuantMix mix, const std::vector<Tensor>& tensors,
                                                  int n_layers, bool pure = false);

// llama.cpp's use_more_bits: whether layer i of n gets the larger type in the _M mixes.
bool quant_use_more_bits(int i, int n);

struct QuantizeOptions {
  QuantMix mix = QuantMix::kQ8_0;
  bool pure = false;
  // Quantized inputs lose precision twice; like llama-quantize, refuse them unless asked.
  bool allow_requantize = false;
  int threads = 0;  // <= 0: the machine's physical cores
  // Called as source tensors are processed (bytes of source tensor data done, total) and
  // then while the file is written (stage "writing").
  std::function<void(const char* stage, uint64_t done, uint64_t total)> progress;
};

struct QuantizeResult {
  size_t n_tensors = 0;
  size_t n_converted = 0;   // tensors whose type changed
  uint64_t bytes_in = 0;    // tensor data of the input
  uint64_t bytes_out = 0;   // tensor data of the output
  uint64_t n_elements = 0;  // of all tensors
  // One line per fallback: "blk.0.attn_q.weight: rows of 64 are not a multiple of 256
  // (q4_K) -> q5_0".
  std::vector<std::string> fallbacks;
  // How many tensors of each type the output holds, in type id order.
  std::vector<std::pair<DType, size_t>> type_counts;
};

// Quantizes the GGUF model `in` into `out` (may not be the same file as `in`). Metadata
// is copied, with general.file_type and general.quantization_version (2) set.
QuantizeResult quantize_gguf(const std::string& in, const std::string& out, const QuantizeOptions& opt);

// "q4_K: 155, q6_K: 46, f32: 45" from type counts, for logs.
std::string type_counts_string(const std::vector<std::pair<DType, size_t>>& counts);

}  // namespace braid
