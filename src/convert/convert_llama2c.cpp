// llama2.c checkpoints (legacy "version 0" export of llama2.c's export.py, all float32)
// -> GGUF "llama", laid out as llama.cpp's convert-llama2c-to-ggml writes them. llama2.c
// rotates adjacent pairs, as GGUF does, so q/k need no permutation.
#include <cstring>
#include <memory>
#include <tuple>

#include "braid/error.h"
#include "braid/mapped_file.h"
#include "convert/converters.h"

namespace braid::convert {
namespace {

constexpr int64_t kMaxDim = int64_t{1} << 16;
constexpr int64_t kMaxLayers = 1024;
constexpr int64_t kMaxVocab = int64_t{1} << 22;
constexpr int64_t kMaxSeq = int64_t{1} << 22;
// export.py's version 1/2 files start with this magic ("ak42") instead of the header.
constexpr uint32_t kVersionedMagic = 0x616b3432;

int32_t read_i32(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// Empty when plausible, else what is wrong.
std::string header_problem(const uint8_t* data, size_t size, Llama2cHeader* out) {
  if (size < 28) return cat("file of ", size, " bytes is shorter than the 28-byte llama2.c header");
  if (static_cast<uint32_t>(read_i32(data)) == kVersionedMagic)
    return cat("llama2.c export version ", read_i32(data + 4),
               " is not supported; export the checkpoint with --version 0 (legacy format)");
  Llama2cHeader h;
  h.dim = read_i32(data);
  h.hidden_dim = read_i32(data + 4);
  h.n_layers = read_i32(data + 8);
  h.n_heads = read_i32(data + 12);
  h.n_kv_heads = read_i32(data + 16);
  int64_t vocab = read_i32(data + 20);
  h.seq_len = read_i32(data + 24);
  h.shared_classifier = vocab > 0;
  h.vocab_size = vocab < 0 ? -vocab : vocab;
  auto range = [](const char* what, int64_t v, int64_t max) -> std::string {
    if (v < 1 || v > max) return cat(what, " ", v, " is outside [1, ", max, "]");
    return "";
  };
  for (auto [what, v, max] : {std::tuple{"dim", h.dim, kMaxDim},
                              {"hidden_dim", h.hidden_dim, kMaxDim * 4},
                              {"n_layers", h.n_layers, kMaxLayers},
                              {"n_heads", h.n_heads, kMaxDim},
                              {"n_kv_heads", h.n_kv_heads, kMaxDim},
                              {"vocab_size", h.vocab_size, kMaxVocab},
                              {"seq_len", h.seq_len, kMaxSeq}}) {
    std::string p = range(what, v, max);
    if (!p.empty()) return p;
  }
  if (h.dim % h.n_heads != 0) return cat("n_heads ", h.n_heads, " does not divide dim ", h.dim);
  if (h.n_heads % h.n_kv_heads != 0)
    return cat("n_kv_heads ", h.n_kv_heads, " does not divide n_heads ", h.n_heads);
  if (h.head_size() % 2 != 0) return cat("head size ", h.head_size(), " is odd");
  if (out) *out = h;
  return "";
}

}  // namespace

uint64_t Llama2cHeader::file_bytes() const {
  const uint64_t d = static_cast<uint64_t>(dim), l = static_cast<uint64_t>(n_layers);
  const uint64_t v = static_cast<uint64_t>(vocab_size), kv = static_cast<uint64_t>(kv_dim());
  uint64_t floats = v * d                                                                   // token_embedding
                    + l * d                                                                 // rms_att
                    + l * d * d + 2 * l * kv * d + l * d * d                                // wq, wk, wv, wo
                    + l * d                                                                 // rms_ffn
                    + 3 * l * static_cast<uint64_t>(hidden_dim) * d                         // w1, w2, w3
                    + d                                                                     // rms_final
                    + static_cast<uint64_t>(seq_len) * static_cast<uint64_t>(head_size());  // freq_cis
  if (!shared_classifier) floats += v * d;
  return 28 + 4 * floats;
}

Llama2cHeader parse_llama2c_header(const uint8_t* data, size_t size, const std::string& label) {
  Llama2cHeader h;
  std::string problem = header_problem(data, size, &h);
  if (!problem.empty()) fail(label, ": not a llama2.c checkpoint: ", problem);
  return h;
}

bool looks_like_llama2c(const uint8_t* data, size_t size) {
  if (size >= 4 && static_cast<uint32_t>(read_i32(data)) == kVersionedMagic) return true;  // to explain it
  return header_problem(data, size, nullptr).empty();
}

void build_llama2c(const std::string& bin_path, const ConvertOptions& opt, Builder& b, ConvertResult& r) {
  if (opt.tokenizer.empty())
    fail(bin_path, ": a llama2.c checkpoint needs its tokenizer: pass --tokenizer tokenizer.bin");
  std::shared_ptr<MappedFile> file = MappedFile::open(bin_path);
  b.keep(file);
  const Llama2cHeader h = parse_llama2c_header(file->data(), file->size(), bin_path);
  const uint64_t expected = h.file_bytes();
  if (file->size() != expected)
    fail(bin_path, ": ", file->size() < expected ? "truncated" : "oversized",
         " llama2.c checkpoint: ", file->size(), " bytes, expected ", expected, " for dim ", h.dim,
         ", hidden_dim ", h.hidden_dim, ", ", h.n_layers, " layers, ", h.n_heads, " heads, ", h.n_kv_heads,
         " kv heads, vocab ", h.vocab_size, ", seq_len ", h.seq_len,
         h.shared_classifier ? "" : ", own classifier");

  GgufWriter& w = b.meta();
  w.set("general.architecture", GgufValue::string("llama"));
  w.set("general.name", GgufValue::string(opt.name.empty() ? source_name(bin_path) : opt.name));
  w.set("general.file_type", GgufValue::u32(gguf_file_type(opt.type)));
  w.set("llama.vocab_size", GgufValue::u32(static_cast<uint32_t>(h.vocab_size)));
  w.set("llama.context_length", GgufValue::u32(static_cast<uint32_t>(h.seq_len)));
  w.set("llama.embedding_length", GgufValue::u32(static_cast<uint32_t>(h.dim)));
  w.set("llama.feed_forward_length", GgufValue::u32(static_cast<uint32_t>(h.hidden_dim)));
  w.set("llama.attention.head_count", GgufValue::u32(static_cast<uint32_t>(h.n_heads)));
  w.set("llama.attention.head_count_kv", GgufValue::u32(static_cast<uint32_t>(h.n_kv_heads)));
  w.set("llama.block_count", GgufValue::u32(static_cast<uint32_t>(h.n_layers)));
  w.set("llama.rope.dimension_count", GgufValue::u32(static_cast<uint32_t>(h.head_size())));
  w.set("llama.rope.freq_base", GgufValue::f32(10000.0f));  // llama2.c's fixed theta
  w.set("llama.attention.layer_norm_rms_epsilon", GgufValue::f32(1e-5f));
  if (starts_like_json(opt.tokenizer))
    add_hf_tokenizer(opt.tokenizer, w);  // a tokenizer.json serves too
  else
    add_llama2c_tokenizer(opt.tokenizer, h.vocab_size, w);
  r.has_tokenizer = true;

  // Walk the weights in file order; every array is float32 and contiguous.
  const uint8_t* p = file->data() + 28;
  auto take = [&p](int64_t n) {
    const uint8_t* at = p;
    p += static_cast<size_t>(n) * 4;
    return at;
  };
  const int64_t d = h.dim, l = h.n_layers, kv = h.kv_dim(), f = h.hidden_dim, v = h.vocab_size;
  const uint8_t* tok = take(v * d);
  const uint8_t* rms_att = take(l * d);
  const uint8_t* wq = take(l * d * d);
  const uint8_t* wk = take(l * kv * d);
  const uint8_t* wv = take(l * kv * d);
  const uint8_t* wo = take(l * d * d);
  const uint8_t* rms_ffn = take(l * d);
  const uint8_t* w1 = take(l * f * d);
  const uint8_t* w2 = take(l * d * f);
  const uint8_t* w3 = take(l * f * d);
  const uint8_t* rms_final = take(d);
  take(h.seq_len * h.head_size());  // freq_cis_real, freq_cis_imag: recomputed at run time
  const uint8_t* wcls = h.shared_classifier ? tok : take(v * d);

  auto add = [&](std::string name, std::vector<int64_t> ne, const uint8_t* src) {
    TensorPlan t;
    t.type = output_type(opt, ne.size());
    t.name = std::move(name);
    t.ne = std::move(ne);
    t.src = src;
    t.src_type = DType::F32;
    b.add(std::move(t));
  };
  auto at = [](const uint8_t* base, int64_t layer, int64_t per_layer) {
    return base + static_cast<size_t>(layer * per_layer) * 4;
  };
  // llama.cpp's order: embeddings, output norm and head, then each block.
  add("token_embd.weight", {d, v}, tok);
  add("output_norm.weight", {d}, rms_final);
  add("output.weight", {d, v}, wcls);
  for (int64_t i = 0; i < l; ++i) {
    const std::string blk = cat("blk.", i, ".");
    add(blk + "attn_q.weight", {d, d}, at(wq, i, d * d));
    add(blk + "attn_k.weight", {d, kv}, at(wk, i, kv * d));
    add(blk + "attn_v.weight", {d, kv}, at(wv, i, kv * d));
    add(blk + "attn_output.weight", {d, d}, at(wo, i, d * d));
    add(blk + "attn_norm.weight", {d}, at(rms_att, i, d));
    add(blk + "ffn_gate.weight", {d, f}, at(w1, i, f * d));
    add(blk + "ffn_down.weight", {f, d}, at(w2, i, d * f));
    add(blk + "ffn_up.weight", {d, f}, at(w3, i, f * d));
    add(blk + "ffn_norm.weight", {d}, at(rms_ffn, i, d));
  }
  r.architecture = "llama";
}

}  // namespace braid::convert
