// The model engine against real oracles: llama2.c's stories260K golden output, and
// transformers' logits for tiny random llama / qwen2-style / gpt2 models (their HF
// weights written to GGUF right here, llama.cpp-style). Plus the properties the
// distributed runtime relies on, and clear errors for bad files and bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <functional>
#include <iterator>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "braid/dtype.h"
#include "braid/error.h"
#include "braid/gguf.h"
#include "braid/kv_cache.h"
#include "braid/mapped_file.h"
#include "braid/model.h"
#include "braid/quant.h"
#include "braid/safetensors.h"
#include "braid/thread_pool.h"
#include "test_util.h"

namespace braid {
namespace {

int argmax(const float* x, int n) { return static_cast<int>(std::max_element(x, x + n) - x); }

float max_abs_diff(const float* a, const float* b, size_t n) {
  float m = 0;
  for (size_t i = 0; i < n; ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

std::vector<int32_t> golden_ids() {
  const std::string path = test::asset("golden/stories260K.json");
  auto j = nlohmann::json::parse(read_file(path));
  return j.at("greedy_ids").get<std::vector<int32_t>>();
}

// ---------------------------------------------------------------- stories260K

TEST(Stories260K, Config) {
  BRAID_REQUIRE_ASSET(path, "models/stories260K.gguf");
  auto m = Model::load(path);
  const ModelConfig& c = m->config();
  EXPECT_EQ(c.arch, Arch::Llama);
  EXPECT_EQ(c.n_vocab, 512);
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_EQ(c.ffn_dim, 172);
  EXPECT_EQ(c.rope_dim, 8);
  EXPECT_FALSE(c.rope_neox);
  // Per layer: 2 norms of 64 + q,o 64x64 + k,v 32x64 + gate,up,down 172x64, all f32.
  const size_t layer = 4 * (2 * 64 + 2 * 64 * 64 + 2 * 32 * 64 + 3 * 172 * 64);
  for (int l = 0; l < 5; ++l) EXPECT_EQ(m->layer_weight_bytes(l), layer);
  EXPECT_DOUBLE_EQ(m->layer_flops_per_token(0), 2.0 * (2 * 64 * 64 + 2 * 32 * 64 + 3 * 172 * 64));
  EXPECT_EQ(m->embed_weight_bytes(), 4u * 512 * 64);
  EXPECT_GE(m->output_weight_bytes(), 4u * 512 * 64);
}

TEST(Stories260K, GreedyMatchesGolden) {
  BRAID_REQUIRE_ASSET(path, "models/stories260K.gguf");
  BRAID_REQUIRE_ASSET(json, "golden/stories260K.json");
  auto m = Model::load(path);
  const std::vector<int32_t> want = golden_ids();
  ASSERT_EQ(want.size(), 257u);
  ThreadPool pool(2);
  KVCache kv(m->config(), 0, m->config().n_layers, 512);
  std::vector<int32_t> got = {want[0]};  // BOS
  for (int pos = 0; pos < 256; ++pos) {
    std::vector<float> logits = m->forward(&got.back(), 1, pos, kv, pool);
    got.push_back(argmax(logits.data(), m->config().n_vocab));
  }
  EXPECT_EQ(got, want);
}

TEST(Stories260K, LogitsMatchGoldenInPrefillAndDecode) {
  BRAID_REQUIRE_ASSET(path, "models/stories260K.gguf");
  BRAID_REQUIRE_ASSET(json, "golden/stories260K.json");
  BRAID_REQUIRE_ASSET(logits_path, "golden/stories260K_logits64.f32");
  auto m = Model::load(path);
  const int V = m->config().n_vocab, T = 64;
  const std::vector<float> want = test::read_f32_file(logits_path);
  ASSERT_EQ(want.size(), static_cast<size_t>(T * V));
  const std::vector<int32_t> ids = golden_ids();
  ThreadPool pool(2);

  KVCache kv_prefill(m->config(), 0, m->config().n_layers, 512);
  std::vector<float> prefill = m->forward(ids.data(), T, 0, kv_prefill, pool, /*all_logits=*/true);
  ASSERT_EQ(prefill.size(), want.size());
  EXPECT_LT(max_abs_diff(prefill.data(), want.data(), want.size()), 1e-4f);

  KVCache kv_decode(m->config(), 0, m->config().n_layers, 512);
  std::vector<float> decode;
  for (int t = 0; t < T; ++t) {
    std::vector<float> l = m->forward(&ids[t], 1, t, kv_decode, pool);
    decode.insert(decode.end(), l.begin(), l.end());
  }
  EXPECT_LT(max_abs_diff(decode.data(), want.data(), want.size()), 1e-4f);
  // Stronger than the tolerance: the kernels make prefill and decode bit-identical.
  EXPECT_EQ(0, std::memcmp(prefill.data(), decode.data(), want.size() * sizeof(float)));
}

// Runs ids through [0,2) and [2,5) with a KV cache each, as two devices would.
TEST(Stories260K, LayerRangesAreBitIdenticalToOneRun) {
  BRAID_REQUIRE_ASSET(path, "models/stories260K.gguf");
  BRAID_REQUIRE_ASSET(json, "golden/stories260K.json");
  auto m = Model::load(path);
  const ModelConfig& c = m->config();
  const std::vector<int32_t> ids = golden_ids();
  ThreadPool pool(2), pool1(1);
  KVCache full(c, 0, c.n_layers, 128), a(c, 0, 2, 128), b(c, 2, 5, 128);
  EXPECT_EQ(a.bytes(), 2u * 128 * 2 * 32 * 4);

  auto step = [&](int pos0, int n) {
    std::vector<float> h1(static_cast<size_t>(n * c.dim)), h2(h1.size());
    m->embed(&ids[pos0], n, pos0, h1.data());
    h2 = h1;
    m->run_layers(0, c.n_layers, h1.data(), n, pos0, full, pool);
    m->run_layers(0, 2, h2.data(), n, pos0, a, pool1);  // another device, other thread count
    m->run_layers(2, 5, h2.data(), n, pos0, b, pool);
    std::vector<float> l1(static_cast<size_t>(n * c.n_vocab)), l2(l1.size());
    m->output(h1.data(), n, l1.data(), pool);
    m->output(h2.data(), n, l2.data(), pool);
    EXPECT_EQ(0, std::memcmp(l1.data(), l2.data(), l1.size() * sizeof(float))) << "pos0 " << pos0;
  };
  step(0, 40);                                       // prefill
  for (int pos = 40; pos < 60; ++pos) step(pos, 1);  // decode
  EXPECT_EQ(full.n_pos(), 60);
  EXPECT_EQ(a.n_pos(), 60);
  EXPECT_EQ(b.n_pos(), 60);
  EXPECT_EQ(0, std::memcmp(full.k(3), b.k(3), 60 * c.kv_dim() * sizeof(float)));
}

TEST(Stories260K, TruncateRollsBack) {
  BRAID_REQUIRE_ASSET(path, "models/stories260K.gguf");
  BRAID_REQUIRE_ASSET(json, "golden/stories260K.json");
  auto m = Model::load(path);
  const std::vector<int32_t> ids = golden_ids();
  ThreadPool pool(2);
  KVCache kv(m->config(), 0, m->config().n_layers, 64);
  std::vector<float> first = m->forward(ids.data(), 30, 0, kv, pool, true);
  // Rewind to 20 and take another path, then rewind again and redo the original one.
  kv.truncate(20);
  EXPECT_EQ(kv.n_pos(), 20);
  std::vector<int32_t> other(10, 5);
  m->forward(other.data(), 10, 20, kv, pool);
  kv.truncate(20);
  std::vector<float> again = m->forward(ids.data() + 20, 10, 20, kv, pool, true);
  const size_t V = static_cast<size_t>(m->config().n_vocab);
  EXPECT_EQ(0, std::memcmp(first.data() + 20 * V, again.data(), 10 * V * sizeof(float)));
}

TEST(Stories260K, BadInputIsAnError) {
  BRAID_REQUIRE_ASSET(path, "models/stories260K.gguf");
  auto m = Model::load(path);
  const ModelConfig& c = m->config();
  ThreadPool pool(1);
  KVCache kv(c, 0, c.n_layers, 8);
  std::vector<int32_t> ids(10, 1);
  auto message = [&](const std::function<void()>& f) {
    try {
      f();
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_EQ(message([&] { m->forward(ids.data(), 10, 0, kv, pool); }),
            "prompt of 10 tokens exceeds the context of 8");
  EXPECT_EQ(message([&] { m->forward(ids.data(), 3, 6, kv, pool); }),
            "3 tokens at position 6 exceed the context of 8");
  ids[1] = 512;
  EXPECT_EQ(message([&] { m->forward(ids.data(), 2, 0, kv, pool); }),
            "token id 512 is out of range: the model has 512 tokens");
  ids[1] = -1;
  EXPECT_NE(message([&] { m->forward(ids.data(), 2, 0, kv, pool); }).find("token id -1 is out of range"),
            std::string::npos);
  ids[1] = 1;
  // A gap in the sequence (position 5 when the cache holds 0).
  EXPECT_NE(message([&] { m->forward(ids.data(), 1, 5, kv, pool); }).find("cannot continue at position 5"),
            std::string::npos);
  KVCache part(c, 2, 5, 8);
  std::vector<float> h(static_cast<size_t>(c.dim));
  EXPECT_NE(
      message([&] { m->run_layers(0, 3, h.data(), 1, 0, part, pool); }).find("KV cache holds layers [2, 5)"),
      std::string::npos);
  EXPECT_NE(message([&] { KVCache bad(c, 3, 9, 8); }).find("not inside the model's 5 layers"),
            std::string::npos);
}

// ---------------------------------------------------------------- HF tiny models

// Converts a Hugging Face checkpoint to GGUF the way llama.cpp's converter does.
class HfToGguf {
 public:
  explicit HfToGguf(const std::string& dir) : st_(SafetensorsFile::open(dir + "/model.safetensors")) {}

  std::vector<float> get(const std::string& name) const { return st_to_f32(st_->get(name)); }
  std::vector<int64_t> shape(const std::string& name) const { return st_->get(name).shape; }

  // Adds a [rows][cols] matrix (PyTorch order) as ne = {cols, rows}, stored as `type`.
  void matrix(const std::string& name, std::vector<float> v, int64_t rows, int64_t cols, DType type) {
    ASSERT_EQ(v.size(), static_cast<size_t>(rows * cols)) << name;
    add(name, std::move(v), {cols, rows}, type);
  }
  void vec(const std::string& name, std::vector<float> v) {
    const int64_t n = static_cast<int64_t>(v.size());
    add(name, std::move(v), {n}, DType::F32);
  }
  GgufWriter& writer() { return w_; }

 private:
  void add(const std::string& name, std::vector<float> v, std::vector<int64_t> ne, DType type) {
    std::vector<uint8_t> bytes;
    if (type == DType::F32) {
      bytes.resize(v.size() * 4);
      std::memcpy(bytes.data(), v.data(), bytes.size());
    } else {
      bytes.resize(v.size() * 2);
      for (size_t i = 0; i < v.size(); ++i) {
        const uint16_t h = type == DType::F16 ? f32_to_f16(v[i]) : f32_to_bf16(v[i]);
        std::memcpy(&bytes[2 * i], &h, 2);
      }
    }
    w_.add_tensor(name, type, ne, std::move(bytes));
  }

  std::unique_ptr<SafetensorsFile> st_;
  GgufWriter w_;
};

// llama.cpp's permutation of q/k rows so that RoPE on adjacent pairs matches HF's
// rotate_half (which pairs x[i] with x[i + head_dim/2]).
std::vector<float> permute_qk(const std::vector<float>& w, int n_heads, int head_dim, int cols) {
  std::vector<float> out(w.size());
  for (int h = 0; h < n_heads; ++h)
    for (int s = 0; s < 2; ++s)
      for (int i = 0; i < head_dim / 2; ++i) {
        const int from = h * head_dim + s * head_dim / 2 + i, to = h * head_dim + 2 * i + s;
        std::copy_n(&w[static_cast<size_t>(from) * cols], cols, &out[static_cast<size_t>(to) * cols]);
      }
  return out;
}

std::vector<float> transpose(const std::vector<float>& w, int64_t rows, int64_t cols) {
  std::vector<float> out(w.size());
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) out[c * rows + r] = w[r * cols + c];
  return out;
}

// llama-tiny as arch "llama" (permuted q/k, adjacent-pair RoPE) or as arch "qwen2"
// (weights as they are, NEOX RoPE, zero q/k/v biases): both must reproduce HF's logits.
std::string write_llama_tiny(const std::string& dir, const std::string& arch, DType type) {
  HfToGguf g(dir);
  const int dim = 64, n_heads = 8, n_kv = 4, hd = 8, ffn = 172, layers = 3, vocab = 320;
  GgufWriter& w = g.writer();
  w.set("general.architecture", GgufValue::string(arch));
  w.set(arch + ".context_length", GgufValue::u32(256));
  w.set(arch + ".embedding_length", GgufValue::u32(dim));
  w.set(arch + ".block_count", GgufValue::u32(layers));
  w.set(arch + ".feed_forward_length", GgufValue::u32(ffn));
  w.set(arch + ".attention.head_count", GgufValue::u32(n_heads));
  w.set(arch + ".attention.head_count_kv", GgufValue::u32(n_kv));
  w.set(arch + ".attention.layer_norm_rms_epsilon", GgufValue::f32(1e-5f));
  w.set(arch + ".rope.freq_base", GgufValue::f32(10000.0f));
  const bool llama = arch == "llama";
  g.matrix("token_embd.weight", g.get("model.embed_tokens.weight"), vocab, dim, type);
  g.matrix("output.weight", g.get("lm_head.weight"), vocab, dim, type);
  g.vec("output_norm.weight", g.get("model.norm.weight"));
  for (int l = 0; l < layers; ++l) {
    const std::string hf = "model.layers." + std::to_string(l) + ".", p = "blk." + std::to_string(l) + ".";
    auto q = g.get(hf + "self_attn.q_proj.weight"), k = g.get(hf + "self_attn.k_proj.weight");
    if (llama) {
      q = permute_qk(q, n_heads, hd, dim);
      k = permute_qk(k, n_kv, hd, dim);
    } else {
      g.vec(p + "attn_q.bias", std::vector<float>(n_heads * hd, 0.0f));
      g.vec(p + "attn_k.bias", std::vector<float>(n_kv * hd, 0.0f));
      g.vec(p + "attn_v.bias", std::vector<float>(n_kv * hd, 0.0f));
    }
    g.vec(p + "attn_norm.weight", g.get(hf + "input_layernorm.weight"));
    g.matrix(p + "attn_q.weight", q, n_heads * hd, dim, type);
    g.matrix(p + "attn_k.weight", k, n_kv * hd, dim, type);
    g.matrix(p + "attn_v.weight", g.get(hf + "self_attn.v_proj.weight"), n_kv * hd, dim, type);
    g.matrix(p + "attn_output.weight", g.get(hf + "self_attn.o_proj.weight"), dim, n_heads * hd, type);
    g.vec(p + "ffn_norm.weight", g.get(hf + "post_attention_layernorm.weight"));
    g.matrix(p + "ffn_gate.weight", g.get(hf + "mlp.gate_proj.weight"), ffn, dim, type);
    g.matrix(p + "ffn_up.weight", g.get(hf + "mlp.up_proj.weight"), ffn, dim, type);
    g.matrix(p + "ffn_down.weight", g.get(hf + "mlp.down_proj.weight"), dim, ffn, type);
  }
  const std::string out = test::temp_dir() + "/" + arch + ".gguf";
  w.write(out);
  return out;
}

std::string write_gpt2_tiny(const std::string& dir) {
  HfToGguf g(dir);
  const int dim = 64, ffn = 256, layers = 3, vocab = 320, n_pos = 128;
  GgufWriter& w = g.writer();
  w.set("general.architecture", GgufValue::string("gpt2"));
  w.set("gpt2.context_length", GgufValue::u32(n_pos));
  w.set("gpt2.embedding_length", GgufValue::u32(dim));
  w.set("gpt2.block_count", GgufValue::u32(layers));
  w.set("gpt2.feed_forward_length", GgufValue::u32(ffn));
  w.set("gpt2.attention.head_count", GgufValue::u32(4));
  w.set("gpt2.attention.layer_norm_epsilon", GgufValue::f32(1e-5f));
  g.matrix("token_embd.weight", g.get("transformer.wte.weight"), vocab, dim, DType::F32);
  g.matrix("position_embd.weight", g.get("transformer.wpe.weight"), n_pos, dim, DType::F32);
  g.vec("output_norm.weight", g.get("transformer.ln_f.weight"));
  g.vec("output_norm.bias", g.get("transformer.ln_f.bias"));
  // HF GPT-2 uses Conv1D: weights stored [in][out], so transpose to [out][in].
  auto conv = [&](const std::string& hf, const std::string& name, int64_t in, int64_t out) {
    g.matrix(name + ".weight", transpose(g.get(hf + ".weight"), in, out), out, in, DType::F32);
    g.vec(name + ".bias", g.get(hf + ".bias"));
  };
  for (int l = 0; l < layers; ++l) {
    const std::string hf = "transformer.h." + std::to_string(l) + ".", p = "blk." + std::to_string(l) + ".";
    g.vec(p + "attn_norm.weight", g.get(hf + "ln_1.weight"));
    g.vec(p + "attn_norm.bias", g.get(hf + "ln_1.bias"));
    conv(hf + "attn.c_attn", p + "attn_qkv", dim, 3 * dim);
    conv(hf + "attn.c_proj", p + "attn_output", dim, dim);
    g.vec(p + "ffn_norm.weight", g.get(hf + "ln_2.weight"));
    g.vec(p + "ffn_norm.bias", g.get(hf + "ln_2.bias"));
    conv(hf + "mlp.c_fc", p + "ffn_up", dim, ffn);
    conv(hf + "mlp.c_proj", p + "ffn_down", ffn, dim);
  }
  const std::string out = test::temp_dir() + "/gpt2.gguf";
  w.write(out);
  return out;
}

// Checks logits of the prompt and of the whole greedy sequence against transformers,
// and that greedy decoding reproduces generate().
void check_against_hf(const std::string& gguf, const std::string& dir, float tol, bool check_greedy = true) {
  auto m = Model::load(gguf);
  auto ref = SafetensorsFile::open(dir + "/reference.safetensors");
  const std::vector<int32_t> input = st_to_i32(ref->get("input_ids"));
  const std::vector<int32_t> greedy = st_to_i32(ref->get("greedy_ids"));
  const std::vector<float> want = st_to_f32(ref->get("logits"));
  const std::vector<float> want_greedy = st_to_f32(ref->get("greedy_logits"));
  const int V = m->config().n_vocab, n = static_cast<int>(input.size());
  ASSERT_EQ(V, 320);
  ThreadPool pool(2);

  KVCache kv(m->config(), 0, m->config().n_layers, 64);
  std::vector<float> got = m->forward(input.data(), n, 0, kv, pool, true);
  ASSERT_EQ(got.size(), want.size());
  EXPECT_LT(max_abs_diff(got.data(), want.data(), got.size()), tol);

  kv.clear();
  got = m->forward(greedy.data(), static_cast<int>(greedy.size()), 0, kv, pool, true);
  ASSERT_EQ(got.size(), want_greedy.size());
  EXPECT_LT(max_abs_diff(got.data(), want_greedy.data(), got.size()), tol);

  if (!check_greedy) return;
  kv.clear();
  std::vector<int32_t> seq = input;
  std::vector<float> logits = m->forward(seq.data(), n, 0, kv, pool);
  while (seq.size() < greedy.size()) {
    seq.push_back(argmax(logits.data(), V));
    logits = m->forward(&seq.back(), 1, static_cast<int>(seq.size()) - 1, kv, pool);
  }
  EXPECT_EQ(seq, greedy);
}

TEST(HfTiny, LlamaMatchesTransformers) {
  BRAID_REQUIRE_ASSET(dir, "hf/llama-tiny/model.safetensors");
  const std::string d = dir.substr(0, dir.rfind('/'));
  check_against_hf(write_llama_tiny(d, "llama", DType::F32), d, 5e-5f);
}

TEST(HfTiny, Qwen2StyleNeoxRopeWithBiasesMatchesTransformers) {
  BRAID_REQUIRE_ASSET(dir, "hf/llama-tiny/model.safetensors");
  const std::string d = dir.substr(0, dir.rfind('/'));
  const std::string path = write_llama_tiny(d, "qwen2", DType::F32);
  EXPECT_TRUE(Model::load(path)->config().rope_neox);
  check_against_hf(path, d, 5e-5f);
}

TEST(HfTiny, Gpt2MatchesTransformers) {
  BRAID_REQUIRE_ASSET(dir, "hf/gpt2-tiny/model.safetensors");
  const std::string d = dir.substr(0, dir.rfind('/'));
  const std::string path = write_gpt2_tiny(d);
  auto m = Model::load(path);
  EXPECT_TRUE(m->config().tied_output);
  EXPECT_EQ(m->config().head_dim, 16);
  check_against_hf(path, d, 5e-5f);
  // Learned positions end at 128.
  std::vector<float> h(64);
  const int32_t id = 5;
  m->embed(&id, 1, 127, h.data());
  try {
    m->embed(&id, 1, 128, h.data());
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_STREQ(e.what(), "position 128 is beyond the 128 positions gpt2 learned");
  }
}

TEST(HfTiny, HalfPrecisionWeightsStayClose) {
  // f16 / bf16 weights round every weight, so compare loosely; greedy may diverge.
  BRAID_REQUIRE_ASSET(dir, "hf/llama-tiny/model.safetensors");
  const std::string d = dir.substr(0, dir.rfind('/'));
  check_against_hf(write_llama_tiny(d, "llama", DType::F16), d, 2e-2f, false);
  check_against_hf(write_llama_tiny(d, "llama", DType::BF16), d, 1.5e-1f, false);
}

TEST(HfTiny, HalfPrecisionRunsInPanelsTheSameInPrefillDecodeAndAfterARelease) {
  // f16 matrices run from a copy in panels, made on a layer's first run; the bits must
  // not depend on the batch (recovery replays a sequence as a prompt) or on whether the
  // copy was released and made again (a worker's range moving away and back).
  BRAID_REQUIRE_ASSET(dir, "hf/llama-tiny/model.safetensors");
  const std::string d = dir.substr(0, dir.rfind('/'));
  auto m = Model::load(write_llama_tiny(d, "llama", DType::F16));
  const int L = m->config().n_layers;
  for (int l = 0; l <= L; ++l) EXPECT_FALSE(m->is_packed(l)) << "layer " << l;
  ThreadPool pool(2);
  const std::vector<int32_t> ids = {1, 5, 9, 2, 7, 3, 11, 4, 8, 6, 10, 12, 13};
  const int n = static_cast<int>(ids.size());
  auto run = [&](bool prefill) {
    KVCache kv(m->config(), 0, L, 32);
    if (prefill) return m->forward(ids.data(), n, 0, kv, pool, true);
    std::vector<float> all;
    for (int t = 0; t < n; ++t) {
      const std::vector<float> lg = m->forward(&ids[static_cast<size_t>(t)], 1, t, kv, pool);
      all.insert(all.end(), lg.begin(), lg.end());
    }
    return all;
  };
  const std::vector<float> prompt = run(true);
  for (int l = 0; l <= L; ++l) EXPECT_TRUE(m->is_packed(l)) << "layer " << l;
  const std::vector<float> decode = run(false);
  ASSERT_EQ(prompt.size(), decode.size());
  EXPECT_EQ(0, std::memcmp(prompt.data(), decode.data(), prompt.size() * 4));
  for (int l = 0; l <= L; ++l) m->release_packed(l);
  for (int l = 0; l <= L; ++l) EXPECT_FALSE(m->is_packed(l)) << "layer " << l;
  const std::vector<float> again = run(true);
  EXPECT_EQ(0, std::memcmp(prompt.data(), again.data(), prompt.size() * 4));
}

// ---------------------------------------------------------------- bad files

// A tiny random llama, with a hook to corrupt it before writing.
struct TinySpec {
  std::string arch = "llama";
  std::map<std::string, std::vector<int64_t>> shape_override;
  std::map<std::string, DType> type_override;
  std::set<std::string> skip;
};

std::string write_tiny(const TinySpec& s) {
  const int dim = 16, heads = 4, kv = 2, ffn = 24, vocab = 40, layers = 2;
  GgufWriter w;
  w.set("general.architecture", GgufValue::string(s.arch));
  w.set(s.arch + ".context_length", GgufValue::u32(64));
  w.set(s.arch + ".embedding_length", GgufValue::u32(dim));
  w.set(s.arch + ".block_count", GgufValue::u32(layers));
  w.set(s.arch + ".feed_forward_length", GgufValue::u32(ffn));
  w.set(s.arch + ".attention.head_count", GgufValue::u32(heads));
  w.set(s.arch + ".attention.head_count_kv", GgufValue::u32(kv));
  std::mt19937 rng(1);
  std::normal_distribution<float> nd(0.0f, 0.3f);
  auto add = [&](const std::string& name, std::vector<int64_t> ne) {
    if (s.skip.count(name)) return;
    if (auto it = s.shape_override.find(name); it != s.shape_override.end()) ne = it->second;
    DType type = DType::F32;
    if (auto it = s.type_override.find(name); it != s.type_override.end()) type = it->second;
    int64_t count = 1;
    for (int64_t e : ne) count *= e;
    std::vector<uint8_t> bytes(row_bytes(type, ne[0]) * static_cast<size_t>(count / ne[0]));
    if (type == DType::F32) {
      for (int64_t i = 0; i < count; ++i) {
        const float v = nd(rng);
        std::memcpy(&bytes[static_cast<size_t>(i) * 4], &v, 4);
      }
    }
    w.add_tensor(name, type, ne, std::move(bytes));
  };
  add("token_embd.weight", {dim, vocab});
  add("output_norm.weight", {dim});
  for (int l = 0; l < layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    add(p + "attn_norm.weight", {dim});
    add(p + "attn_q.weight", {dim, dim});
    add(p + "attn_k.weight", {dim, dim / heads * kv});
    add(p + "attn_v.weight", {dim, dim / heads * kv});
    add(p + "attn_output.weight", {dim, dim});
    add(p + "ffn_norm.weight", {dim});
    add(p + "ffn_gate.weight", {dim, ffn});
    add(p + "ffn_up.weight", {dim, ffn});
    add(p + "ffn_down.weight", {ffn, dim});
  }
  const std::string path = test::temp_dir() + "/tiny.gguf";
  w.write(path);
  return path;
}

std::string load_error(const TinySpec& s) {
  const std::string path = write_tiny(s);
  try {
    Model::load(path);
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_EQ(msg.rfind(path + ": ", 0), 0u) << "message should start with the path: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos);
    return msg.substr(path.size() + 2);
  }
  return "no error";
}

TEST(BadFiles, TinyModelLoadsAndRuns) {
  auto m = Model::load(write_tiny({}));
  EXPECT_TRUE(m->config().tied_output);
  EXPECT_EQ(m->config().head_dim, 4);
  ThreadPool pool(1);
  KVCache kv(m->config(), 0, 2, 16);
  std::vector<int32_t> ids = {1, 2, 39};
  auto logits = m->forward(ids.data(), 3, 0, kv, pool);
  ASSERT_EQ(logits.size(), 40u);
  for (float v : logits) EXPECT_TRUE(std::isfinite(v));
  // f32 weights have nothing to put in panels.
  for (int l = 0; l <= 2; ++l) EXPECT_FALSE(m->is_packed(l));
}

TEST(BadFiles, UnknownArchitecture) {
  TinySpec s;
  s.arch = "bert";
  EXPECT_EQ(load_error(s), "unsupported architecture 'bert' (braid runs llama, qwen2 and gpt2)");
}

TEST(BadFiles, MissingTensor) {
  TinySpec s;
  s.skip = {"blk.1.ffn_up.weight"};
  EXPECT_EQ(load_error(s), "missing tensor blk.1.ffn_up.weight");
  TinySpec q;  // qwen2 requires the q/k/v biases llama files lack
  q.arch = "qwen2";
  EXPECT_EQ(load_error(q), "missing tensor blk.0.attn_q.bias");
}

TEST(BadFiles, WrongShape) {
  TinySpec s;
  s.shape_override["blk.0.attn_k.weight"] = {16, 16};
  EXPECT_EQ(load_error(s), "tensor blk.0.attn_k.weight has shape [16, 16], expected [16, 8]");
  TinySpec n;
  n.shape_override["blk.1.ffn_norm.weight"] = {15};
  EXPECT_EQ(load_error(n), "tensor blk.1.ffn_norm.weight has shape [15], expected [16]");
}

TEST(BadFiles, UncomputableType) {
  TinySpec s;
  s.type_override["blk.1.attn_q.weight"] = DType::I32;
  EXPECT_EQ(load_error(s), "tensor blk.1.attn_q.weight has type i32, which braid cannot compute yet");
}

TEST(BadFiles, HalfPrecisionIsAccepted) {
  TinySpec s;
  s.type_override["blk.0.ffn_down.weight"] = DType::F16;
  s.type_override["token_embd.weight"] = DType::BF16;
  EXPECT_EQ(load_error(s), "no error");
}

TEST(BadFiles, InconsistentHyperparameters) {
  GgufWriter w;
  w.set("general.architecture", GgufValue::string("llama"));
  w.set("llama.context_length", GgufValue::u32(64));
  w.set("llama.embedding_length", GgufValue::u32(16));
  w.set("llama.block_count", GgufValue::u32(2));
  w.set("llama.feed_forward_length", GgufValue::u32(24));
  w.set("llama.attention.head_count", GgufValue::u32(4));
  w.set("llama.attention.head_count_kv", GgufValue::u32(3));
  const std::string path = test::temp_dir() + "/bad.gguf";
  w.write(path);
  try {
    Model::load(path);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), path + ": 4 attention heads are not a multiple of 3 key/value heads");
  }
}

// ---------------------------------------------------------------- quantized weights

// A random llama whose matrices are stored as `type` (block-quantized with braid's
// llama.cpp-compatible quantizers), or, with as_f32, the very same values dequantized
// to f32. The two differ only in how activations are handled (q8 for block types).
std::string write_random_llama(DType type, bool as_f32) {
  const int dim = 256, heads = 4, kv = 2, ffn = 512, vocab = 300, layers = 2;
  GgufWriter w;
  w.set("general.architecture", GgufValue::string("llama"));
  w.set("llama.context_length", GgufValue::u32(128));
  w.set("llama.embedding_length", GgufValue::u32(dim));
  w.set("llama.block_count", GgufValue::u32(layers));
  w.set("llama.feed_forward_length", GgufValue::u32(ffn));
  w.set("llama.attention.head_count", GgufValue::u32(heads));
  w.set("llama.attention.head_count_kv", GgufValue::u32(kv));
  std::mt19937 rng(42);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  auto add = [&](const std::string& name, int64_t cols, int64_t rows, bool matrix) {
    const float scale = matrix ? 1.0f / std::sqrt(static_cast<float>(cols)) : 0.1f;
    std::vector<float> v(static_cast<size_t>(cols * rows));
    for (auto& x : v) x = matrix ? nd(rng) * scale : 1.0f + nd(rng) * scale;
    if (!matrix) {
      w.add_tensor(name, DType::F32, {cols},
                   std::vector<uint8_t>(reinterpret_cast<uint8_t*>(v.data()),
                                        reinterpret_cast<uint8_t*>(v.data() + v.size())));
      return;
    }
    const size_t rb = row_bytes(type, cols);
    std::vector<uint8_t> q(rb * static_cast<size_t>(rows));
    for (int64_t r = 0; r < rows; ++r) quantize_row(type, &v[r * cols], &q[r * rb], cols);
    if (!as_f32) {
      w.add_tensor(name, type, {cols, rows}, std::move(q));
      return;
    }
    for (int64_t r = 0; r < rows; ++r) dequantize_row(type, &q[r * rb], &v[r * cols], cols);
    w.add_tensor(name, DType::F32, {cols, rows},
                 std::vector<uint8_t>(reinterpret_cast<uint8_t*>(v.data()),
                                      reinterpret_cast<uint8_t*>(v.data() + v.size())));
  };
  add("token_embd.weight", dim, vocab, true);  // also the (tied) LM head
  add("output_norm.weight", dim, 1, false);
  for (int l = 0; l < layers; ++l) {
    const std::string p = "blk." + std::to_string(l) + ".";
    add(p + "attn_norm.weight", dim, 1, false);
    add(p + "attn_q.weight", dim, dim, true);
    add(p + "attn_k.weight", dim, dim / heads * kv, true);
    add(p + "attn_v.weight", dim, dim / heads * kv, true);
    add(p + "attn_output.weight", dim, dim, true);
    add(p + "ffn_norm.weight", dim, 1, false);
    add(p + "ffn_gate.weight", dim, ffn, true);
    add(p + "ffn_up.weight", dim, ffn, true);
    add(p + "ffn_down.weight", ffn, dim, true);
  }
  const std::string path = test::temp_dir() + "/rand-" + dtype_name(type) + (as_f32 ? "-f32" : "") + ".gguf";
  w.write(path);
  return path;
}

class QuantModelTest : public ::testing::TestWithParam<DType> {};

TEST_P(QuantModelTest, MatchesDequantizedF32AndPrefillEqualsDecode) {
  const DType type = GetParam();
  if (!quant_supported(type)) GTEST_SKIP() << dtype_name(type) << " has no kernels in this build";
  const std::string qpath = write_random_llama(type, false);
  auto qm = Model::load(qpath);
  auto fm = Model::load(write_random_llama(type, true));
  EXPECT_EQ(qm->token_embd().type, type);
  EXPECT_LT(qm->layer_weight_bytes(0), fm->layer_weight_bytes(0));
  const std::vector<int32_t> ids = {1, 17, 42, 299, 7, 250, 3, 88, 64, 200, 5, 31};
  const int n = static_cast<int>(ids.size()), V = 300;
  ThreadPool pool(2);
  KVCache kq(qm->config(), 0, 2, 32), kf(fm->config(), 0, 2, 32);
  const std::vector<float> q = qm->forward(ids.data(), n, 0, kq, pool, true);
  const std::vector<float> f = fm->forward(ids.data(), n, 0, kf, pool, true);
  // q4_0 / q8_0 / q4_K / q6_K run from a copy in panels where the CPU has the kernels for
  // them (the quant tests check that panels give the row kernels' bits).
  for (int l = 0; l <= 2; ++l) EXPECT_EQ(qm->is_packed(l), quant_panels_supported(type)) << "layer " << l;
  // Same weights; only the 8-bit activations differ (each matmul is off by ~0.6% of its
  // largest output, which two random layers grow to ~3% of the largest logit).
  float max_err = 0, max_mag = 0;
  for (size_t i = 0; i < q.size(); ++i) {
    max_err = std::max(max_err, std::fabs(q[i] - f[i]));
    max_mag = std::max(max_mag, std::fabs(f[i]));
  }
  EXPECT_GT(max_mag, 0.3f);
  EXPECT_LT(max_err, 0.05f * max_mag) << "max |logit| " << max_mag;
  // Decode token by token gives the prefill's bits (quant kernels are deterministic too).
  KVCache kd(qm->config(), 0, 2, 32);
  for (int t = 0; t < n; ++t) {
    const std::vector<float> l = qm->forward(&ids[t], 1, t, kd, pool);
    ASSERT_EQ(0, std::memcmp(l.data(), &q[static_cast<size_t>(t) * V], V * sizeof(float))) << "token " << t;
  }
  // Parsed from memory (as a worker's streamed layers are), block types keep their rows
  // (a copy could not replace the bytes) and give the same bits as the panels above.
  std::ifstream in(qpath, std::ios::binary);
  const std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  auto mm = Model::from_gguf(GgufFile::parse(bytes.data(), bytes.size(), "memory"));
  KVCache km(mm->config(), 0, 2, 32);
  const std::vector<float> mq = mm->forward(ids.data(), n, 0, km, pool, true);
  for (int l = 0; l <= 2; ++l) EXPECT_FALSE(mm->is_packed(l)) << "layer " << l;
  ASSERT_EQ(mq.size(), q.size());
  EXPECT_EQ(0, std::memcmp(mq.data(), q.data(), q.size() * sizeof(float)));
}

INSTANTIATE_TEST_SUITE_P(Types, QuantModelTest,
                         ::testing::Values(DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q6_K),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(Llama3Rope, FactorsFollowTransformers) {
  // Llama 3.1 8B's parameters: factor 8, low 1, high 4, original context 8192.
  auto f = llama3_rope_factors(500000.0f, 128, 8.0f, 1.0f, 4.0f, 8192);
  ASSERT_EQ(f.size(), 64u);
  EXPECT_FLOAT_EQ(f[0], 1.0f);   // short wavelengths keep their frequency
  EXPECT_FLOAT_EQ(f[63], 8.0f);  // long ones slow down by the factor
  for (size_t i = 1; i < f.size(); ++i) EXPECT_GE(f[i], f[i - 1]);
  // A band in between is interpolated smoothly: some factor strictly inside (1, 8).
  EXPECT_TRUE(std::any_of(f.begin(), f.end(), [](float v) { return v > 1.01f && v < 7.99f; }));
}

}  // namespace
}  // namespace braid
