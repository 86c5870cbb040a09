// The converters behind convert_to_gguf, one per source kind. Each fills a Builder with
// metadata and tensor plans; convert_to_gguf writes the file.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "braid/convert.h"
#include "braid/gguf.h"
#include "convert/builder.h"

namespace braid::convert {

// ---- llama2.c ----

// The 7 int32 header of a llama2.c checkpoint, checked for plausibility.
struct Llama2cHeader {
  int64_t dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0;
  int64_t vocab_size = 0;         // absolute value
  bool shared_classifier = true;  // header vocab_size > 0
  int64_t seq_len = 0;

  int64_t head_size() const { return dim / n_heads; }
  int64_t kv_dim() const { return n_kv_heads * head_size(); }
  // Bytes of a checkpoint with this header (header, weights, freq_cis tables, classifier).
  uint64_t file_bytes() const;
};

// Parses the header; an implausible one is a braid::Error naming `label` and the first
// bad field. Does not check the file size.
Llama2cHeader parse_llama2c_header(const uint8_t* data, size_t size, const std::string& label);
// True when the first bytes look like a llama2.c header (for detect_source).
bool looks_like_llama2c(const uint8_t* data, size_t size);

void build_llama2c(const std::string& bin_path, const ConvertOptions& opt, Builder& b, ConvertResult& r);

// llama2.c tokenizer.bin (int32 max_token_len, then n_vocab x {f32 score, int32 len,
// bytes}) -> SentencePiece ("llama") tokenizer metadata, as llama.cpp's
// convert-llama2c-to-ggml writes it.
void add_llama2c_tokenizer(const std::string& path, int64_t n_vocab, GgufWriter& w);

// ---- Hugging Face ----

void build_hf(const std::string& dir, const ConvertOptions& opt, Builder& b, ConvertResult& r);

// llama3 rope scaling: the head_dim / 2 frequency factors llama.cpp stores as
// rope_freqs.weight, computed as its convert_hf_to_gguf.py does (float32 arithmetic).
std::vector<float> llama3_rope_factors(const HfConfig& c);

// ---- tokenizer.json ----

// Adds tokenizer.ggml.* metadata from a tokenizer.json (+ tokenizer_config.json beside
// it, when present). config_json_text: the model's config.json (special token ids), or "".
void add_hf_tokenizer(const std::string& tokenizer_json_path, GgufWriter& w,
                      const std::string& config_json_text = "");

// ---- shared ----

// Whether the file's first non-blank byte is '{' (a JSON object). Throws if unreadable.
bool starts_like_json(const std::string& path);

// "stories260K" for "/a/stories260K.bin", "llama-tiny" for "/a/llama-tiny/".
std::string source_name(const std::string& path);

}  // namespace braid::convert
