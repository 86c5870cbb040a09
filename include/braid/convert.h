// Converting models to GGUF, the format braid runs, following llama.cpp's conventions
// exactly (metadata keys, tensor names and layouts), so the files also load in llama.cpp.
//
// Sources:
//   - a Hugging Face folder: config.json + model.safetensors (or shards listed in
//     model.safetensors.index.json), and tokenizer.json (+ tokenizer_config.json) when
//     present. Architectures: LlamaForCausalLM and MistralForCausalLM (GGUF "llama",
//     including GQA and llama3 rope scaling), Qwen2ForCausalLM ("qwen2"), GPT2LMHeadModel
//     ("gpt2").
//   - a llama2.c checkpoint (.bin, the legacy "version 0" export) with its tokenizer
//     (tokenizer.bin) given as ConvertOptions::tokenizer.
//   - a lone tokenizer.json: a tokenizer-only GGUF (no tensors).
//
// Example:
//   braid::ConvertOptions opt;
//   opt.type = braid::DType::F16;
//   braid::convert_to_gguf("models/Llama-3.2-1B", "llama-3.2-1b-f16.gguf", opt);
//
// Every problem with the input (missing file, malformed config.json, unsupported
// architecture, a tensor missing or of the wrong shape, a truncated checkpoint) throws one
// braid::Error naming the file and the key or tensor at fault. The output is written
// atomically: a failed conversion never leaves a partial OUT.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "braid/dtype.h"

namespace braid {

enum class SourceKind {
  kHfFolder,       // a folder holding config.json
  kLlama2c,        // a llama2.c checkpoint
  kTokenizerJson,  // a Hugging Face tokenizer.json
};
const char* source_kind_name(SourceKind k);  // "Hugging Face folder", ...

// Says what `path` is, from its contents: a directory with config.json; a file whose
// first non-blank byte is '{' (tokenizer.json); else a file whose header passes llama2.c's
// sanity checks. Throws braid::Error when the path is missing or is none of these.
SourceKind detect_source(const std::string& path);

struct ConvertOptions {
  // llama2.c: its tokenizer.bin (required; a tokenizer.json also works). Hugging Face
  // folder: a tokenizer.json used instead of the folder's own. Unused for a tokenizer.json
  // source.
  std::string tokenizer;
  // Type of the weight matrices (2-D tensors): F32, F16 or BF16. Norms, biases and other
  // 1-D tensors are always F32. F32 is exact for every source (F16/BF16 widen losslessly).
  DType type = DType::F32;
  // general.name; empty: the source's file or folder name.
  std::string name;
  // Called while tensors are converted (stage "converting": bytes of converted tensors
  // done and total) and written (stage "writing": bytes of tensor data), for a progress
  // line. Conversion happens only for tensors that change type or layout.
  std::function<void(const char* stage, uint64_t done, uint64_t total)> progress;
};

struct ConvertResult {
  SourceKind kind = SourceKind::kHfFolder;
  std::string architecture;  // general.architecture ("llama", "qwen2", "gpt2"); empty for tokenizer-only
  size_t n_tensors = 0;
  uint64_t tensor_bytes = 0;   // bytes of tensor data written
  bool has_tokenizer = false;  // whether tokenizer.ggml.* metadata was written
};

// Converts `src` (detected with detect_source) to the GGUF file `out`.
ConvertResult convert_to_gguf(const std::string& src, const std::string& out, const ConvertOptions& opt = {});

// The parts of a Hugging Face config.json that the conversion uses, validated.
struct HfConfig {
  std::string hf_architecture;  // "LlamaForCausalLM", ...
  std::string arch;             // GGUF architecture: "llama", "qwen2", "gpt2"
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;  // n_embd
  int64_t n_layers = 0;
  int64_t n_heads = 0;
  int64_t n_kv_heads = 0;  // == n_heads without GQA
  int64_t head_dim = 0;    // hidden_size / n_heads unless config.json sets head_dim
  bool head_dim_explicit = false;
  int64_t ffn_size = 0;        // intermediate_size (gpt2: n_inner, else 4 * n_embd)
  int64_t context_length = 0;  // max_position_embeddings (gpt2: n_positions)
  double rope_theta = 10000.0;
  double norm_eps = 1e-5;  // rms_norm_eps (llama, qwen2) or layer_norm_epsilon (gpt2)
  bool tie_word_embeddings = false;
  bool attention_bias = false;  // q/k/v(/o) projection biases (always true for qwen2)

  // rope scaling: "" (none), "linear" or "llama3".
  std::string rope_scaling;
  double rope_factor = 1.0;
  double rope_low_freq_factor = 1.0;     // llama3
  double rope_high_freq_factor = 4.0;    // llama3
  int64_t rope_original_context = 8192;  // llama3
};

// Parses and validates config.json text. `label` (the file's path) starts every error
// message, followed by the key at fault: "<label>: key num_attention_heads: expected a
// positive integer, got \"8\"". Unsupported architectures and activations are errors.
HfConfig parse_hf_config(const std::string& json_text, const std::string& label);

}  // namespace braid
