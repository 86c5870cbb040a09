// braid::synthesize_model: a llama GGUF with random weights, generated in parallel a row
// at a time and written straight into the target block types.
#include "braid/synth.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <map>
#include <memory>

#include "braid/error.h"
#include "braid/gguf.h"
#include "braid/quant.h"
#include "braid/thread_pool.h"
#include "braid/tokenizer.h"
#include "convert/quantize_rows.h"
#include "convert/scratch.h"

namespace braid {

namespace {

constexpr int64_t kChunkElements = 1 << 18;
constexpr int kMaxWidth = 1 << 16;
constexpr int kMaxLayers = 1 << 10;
constexpr int kMaxVocab = 1 << 20;

size_t align32(size_t n) { return (n + 31) & ~size_t{31}; }

// SplitMix64's output function: a strong 64-bit mix, so consecutive counters give
// independent-looking values (a counter-based generator with random access).
inline uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
constexpr uint64_t kGamma = 0x9E3779B97F4A7C15ull;

uint64_t row_state(uint64_t seed, uint64_t tensor, uint64_t row) {
  return mix64(mix64(mix64(seed) + tensor) + row);
}

// Four 16-bit uniforms summed (Irwin-Hall, n = 4): mean 2, variance 1/3; centred and
// scaled to unit variance. Close enough to normal for weights nobody reads.
inline float normal_from_bits(uint64_t z) {
  const uint32_t s = static_cast<uint32_t>(z & 0xFFFF) + static_cast<uint32_t>((z >> 16) & 0xFFFF) +
                     static_cast<uint32_t>((z >> 32) & 0xFFFF) + static_cast<uint32_t>(z >> 48);
  constexpr float kScale = 1.7320508075688772f / 65536.0f;  // sqrt(3) per unit of 2^16
  return (static_cast<float>(s) + 2.0f - 2.0f * 65536.0f) * kScale;
}

void fill_row(uint64_t seed, uint64_t tensor, uint64_t row, float stddev, float* x, int64_t n) {
  const uint64_t s = row_state(seed, tensor, row);
  for (int64_t j = 0; j < n; ++j)
    x[j] = stddev * normal_from_bits(mix64(s + (static_cast<uint64_t>(j) + 1) * kGamma));
}

void check_shape(const SynthShape& s) {
  auto in = [](int v, int lo, int hi) { return v >= lo && v <= hi; };
  check(in(s.dim, 1, kMaxWidth), "synth: dim ", s.dim, " is outside [1, ", kMaxWidth, "]");
  check(in(s.n_layers, 1, kMaxLayers), "synth: layer count ", s.n_layers, " is outside [1, ", kMaxLayers,
        "]");
  check(in(s.n_heads, 1, s.dim), "synth: head count ", s.n_heads, " is outside [1, ", s.dim, "]");
  check(in(s.n_kv_heads, 1, s.n_heads), "synth: KV head count ", s.n_kv_heads, " is outside [1, ", s.n_heads,
        "]");
  check(s.dim % s.n_heads == 0, "synth: dim ", s.dim, " is not a multiple of ", s.n_heads, " heads");
  check(s.n_heads % s.n_kv_heads == 0, "synth: ", s.n_heads, " heads are not a multiple of ", s.n_kv_heads,
        " KV heads");
  check((s.dim / s.n_heads) % 2 == 0, "synth: head size ", s.dim / s.n_heads, " is odd (RoPE rotates pairs)");
  check(in(s.ffn_dim, 1, 4 * kMaxWidth), "synth: FFN width ", s.ffn_dim, " is outside [1, ", 4 * kMaxWidth,
        "]");
  check(in(s.n_vocab, 1, kMaxVocab), "synth: vocabulary size ", s.n_vocab, " is outside [1, ", kMaxVocab,
        "]");
  check(in(s.n_ctx, 1, 1 << 20), "synth: context ", s.n_ctx, " is outside [1, ", 1 << 20, "]");
  check(std::isfinite(s.rope_theta) && s.rope_theta > 0, "synth: rope theta must be positive");
  check(std::isfinite(s.norm_eps) && s.norm_eps > 0 && s.norm_eps < 1,
        "synth: norm epsilon must be in (0, 1)");
}

// The tensors of a llama model in llama.cpp's order; data unset, type F32 (the values
// are generated in f32, then quantized).
std::vector<Tensor> llama_tensors(const SynthShape& s) {
  const int64_t dim = s.dim, head = s.dim / s.n_heads, kv = head * s.n_kv_heads, ffn = s.ffn_dim;
  std::vector<Tensor> out;
  auto add = [&](std::string name, std::initializer_list<int64_t> ne) {
    Tensor t;
    t.name = std::move(name);
    t.type = DType::F32;
    t.n_dims = static_cast<int>(ne.size());
    int i = 0;
    for (int64_t v : ne) t.ne[i++] = v;
    out.push_back(std::move(t));
  };
  add("token_embd.weight", {dim, s.n_vocab});
  for (int l = 0; l < s.n_layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    add(p + "attn_norm.weight", {dim});
    add(p + "attn_q.weight", {dim, dim});
    add(p + "attn_k.weight", {dim, kv});
    add(p + "attn_v.weight", {dim, kv});
    add(p + "attn_output.weight", {dim, dim});
    add(p + "ffn_norm.weight", {dim});
    add(p + "ffn_gate.weight", {dim, ffn});
    add(p + "ffn_up.weight", {dim, ffn});
    add(p + "ffn_down.weight", {ffn, dim});
  }
  add("output_norm.weight", {dim});
  add("output.weight", {dim, s.n_vocab});
  return out;
}

void set_hparams(GgufWriter& w, const SynthShape& s, const SynthOptions& opt) {
  w.set("general.architecture", GgufValue::string("llama"));
  w.set("general.name", GgufValue::string(opt.name.empty() ? "braid-synth" : opt.name));
  w.set("general.file_type", GgufValue::u32(static_cast<uint32_t>(opt.mix)));
  w.set("general.quantization_version", GgufValue::u32(2));
  w.set("llama.vocab_size", GgufValue::u32(static_cast<uint32_t>(s.n_vocab)));
  w.set("llama.context_length", GgufValue::u32(static_cast<uint32_t>(s.n_ctx)));
  w.set("llama.embedding_length", GgufValue::u32(static_cast<uint32_t>(s.dim)));
  w.set("llama.block_count", GgufValue::u32(static_cast<uint32_t>(s.n_layers)));
  w.set("llama.feed_forward_length", GgufValue::u32(static_cast<uint32_t>(s.ffn_dim)));
  w.set("llama.rope.dimension_count", GgufValue::u32(static_cast<uint32_t>(s.dim / s.n_heads)));
  w.set("llama.attention.head_count", GgufValue::u32(static_cast<uint32_t>(s.n_heads)));
  w.set("llama.attention.head_count_kv", GgufValue::u32(static_cast<uint32_t>(s.n_kv_heads)));
  w.set("llama.attention.layer_norm_rms_epsilon", GgufValue::f32(s.norm_eps));
  w.set("llama.rope.freq_base", GgufValue::f32(s.rope_theta));
}

}  // namespace

uint64_t SynthShape::n_params() const {
  const uint64_t d = static_cast<uint64_t>(dim), head = n_heads > 0 ? d / static_cast<uint64_t>(n_heads) : 0;
  const uint64_t kv = head * static_cast<uint64_t>(n_kv_heads), f = static_cast<uint64_t>(ffn_dim);
  const uint64_t layer = 2 * d + 2 * d * d + 2 * d * kv + 3 * d * f;
  return 2 * d * static_cast<uint64_t>(n_vocab) + static_cast<uint64_t>(n_layers) * layer + d;
}

std::vector<std::string> synth_preset_names() { return {"1b", "tiny"}; }

SynthShape synth_preset(const std::string& name) {
  SynthShape s;
  if (name == "1b") {  // TinyLlama-1.1B
    s.dim = 2048;
    s.n_layers = 22;
    s.n_heads = 32;
    s.n_kv_heads = 4;
    s.ffn_dim = 5632;
    s.n_vocab = 32000;
    s.n_ctx = 2048;
  } else if (name == "tiny") {
    s.dim = 256;
    s.n_layers = 4;
    s.n_heads = 4;
    s.n_kv_heads = 2;
    s.ffn_dim = 768;
    s.n_vocab = 512;
    s.n_ctx = 512;
  } else {
    fail("unknown synth preset '", name, "' (expected 1b or tiny)");
  }
  return s;
}

float synth_normal(uint64_t seed, uint64_t tensor, uint64_t row, uint64_t j) {
  return normal_from_bits(mix64(row_state(seed, tensor, row) + (j + 1) * kGamma));
}

SynthResult synthesize_model(const std::string& out, const SynthOptions& opt) {
  convert::check_output_path(out);
  check(std::isfinite(opt.stddev) && opt.stddev > 0 && opt.stddev < 100, "synth: stddev ", opt.stddev,
        " must be in (0, 100)");
  SynthShape shape = opt.shape;
  quant_mix_base_type(opt.mix);  // throws for a value outside the enum

  GgufWriter w;
  SynthResult result;
  std::unique_ptr<GgufFile> vocab;
  if (!opt.vocab.empty()) {
    vocab = GgufFile::open(opt.vocab);
    const GgufValue* tokens = vocab->find("tokenizer.ggml.tokens");
    check(tokens != nullptr && tokens->is_array() && tokens->array_size() > 0, opt.vocab,
          ": holds no tokenizer (tokenizer.ggml.tokens)");
    Tokenizer::from_gguf(*vocab);  // a broken vocabulary fails here, not at run time
    shape.n_vocab = static_cast<int>(std::min<size_t>(tokens->array_size(), kMaxVocab + 1));
    result.has_tokenizer = true;
  }
  check_shape(shape);
  result.n_vocab = shape.n_vocab;
  result.n_params = shape.n_params();

  set_hparams(w, shape, opt);
  if (vocab)
    for (const auto& [key, value] : vocab->metadata())
      if (key.rfind("tokenizer.", 0) == 0 && !(value.is_array() && value.elem == GgufType::ARRAY))
        w.set(key, value);

  std::vector<Tensor> tensors = llama_tensors(shape);
  const std::vector<TensorTypeChoice> choices =
      choose_tensor_types(opt.mix, tensors, shape.n_layers, opt.pure);
  std::vector<int64_t> rows(tensors.size()), cols(tensors.size());
  std::vector<size_t> offsets(tensors.size()), sizes(tensors.size());
  size_t total = 0;
  std::map<DType, size_t> counts;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    const TensorTypeChoice& c = choices[i];
    rows[i] = t.rows();
    cols[i] = t.ne[0];
    sizes[i] = row_bytes(c.type, t.ne[0]) * static_cast<size_t>(t.rows());
    offsets[i] = total;
    total += align32(sizes[i]);
    result.tensor_bytes += sizes[i];
    ++counts[c.type];
    if (c.fallback)
      result.fallbacks.push_back(cat(t.name, ": rows of ", t.ne[0], " are not a multiple of ",
                                     dtype_info(c.preferred).block_size, " (", dtype_name(c.preferred),
                                     ") -> ", dtype_name(c.type)));
  }
  result.n_tensors = tensors.size();
  result.type_counts.assign(counts.begin(), counts.end());

  convert::Scratch scratch;
  scratch.reserve(out, total);
  ThreadPool pool(opt.threads > 0 ? opt.threads : physical_cores());
  const int64_t max_cols = *std::max_element(cols.begin(), cols.end());
  std::vector<std::vector<float>> bufs(static_cast<size_t>(pool.size()),
                                       std::vector<float>(static_cast<size_t>(max_cols)));
  std::atomic<uint64_t> done{0};
  if (opt.progress) opt.progress("generating", 0, result.tensor_bytes);
  convert::run_row_chunks(
      pool, convert::make_row_chunks(rows, cols, kChunkElements),
      [&](const convert::RowChunk& ch, int thread) {
        const Tensor& t = tensors[ch.tensor];
        const TensorTypeChoice& c = choices[ch.tensor];
        const size_t row_size = row_bytes(c.type, t.ne[0]);
        float* x = bufs[static_cast<size_t>(thread)].data();
        uint8_t* dst = scratch.data() + offsets[ch.tensor];
        for (int64_t r = ch.r0; r < ch.r1; ++r) {
          if (t.n_dims == 1) {
            std::fill(x, x + t.ne[0], 1.0f);  // norm weights: identity scale
          } else {
            fill_row(opt.seed, ch.tensor, static_cast<uint64_t>(r), opt.stddev, x, t.ne[0]);
          }
          quantize_row(c.type, x, dst + static_cast<size_t>(r) * row_size, t.ne[0]);
        }
        const uint64_t now = done.fetch_add(row_size * static_cast<size_t>(ch.r1 - ch.r0)) +
                             row_size * static_cast<size_t>(ch.r1 - ch.r0);
        if (opt.progress && thread == 0) opt.progress("generating", now, result.tensor_bytes);
      });
  if (opt.progress) opt.progress("generating", result.tensor_bytes, result.tensor_bytes);

  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    w.add_tensor(t.name, choices[i].type, std::vector<int64_t>(t.ne, t.ne + t.n_dims),
                 scratch.data() + offsets[i], sizes[i]);
  }
  if (opt.progress)
    w.write(out, [&](uint64_t d, uint64_t all) { opt.progress("writing", d, all); });
  else
    w.write(out);
  return result;
}

}  // namespace braid
