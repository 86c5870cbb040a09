// Conversion to GGUF: llama2.c checkpoints against the GGUF llama.cpp made from the same
// weights (bit-exact), Hugging Face folders against transformers' logits, tokenizer-only
// files, and every kind of bad input (library and CLI).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>

#include "braid/convert.h"
#include "braid/error.h"
#include "braid/gguf.h"
#include "braid/kv_cache.h"
#include "braid/mapped_file.h"
#include "braid/model.h"
#include "braid/safetensors.h"
#include "braid/thread_pool.h"
#include "braid/tokenizer.h"
#include "convert/converters.h"
#include "convert/elements.h"
#include "test_util.h"

namespace braid {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// ---------------------------------------------------------------- helpers

std::string slurp(const std::string& path) { return read_file(path); }

void spit(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

// The message of the braid::Error that f throws ("" if none).
template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// A tensor to write into a safetensors file.
struct StEntry {
  std::string name;
  std::string dtype = "F32";
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;
};

std::vector<uint8_t> f32_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

void write_safetensors(const std::string& path, const std::vector<StEntry>& entries) {
  json header = json::object();
  size_t offset = 0;
  for (const StEntry& e : entries) {
    header[e.name] = {
        {"dtype", e.dtype}, {"shape", e.shape}, {"data_offsets", {offset, offset + e.data.size()}}};
    offset += e.data.size();
  }
  std::string h = header.dump();
  while (h.size() % 8) h += ' ';
  std::string bytes(8, '\0');
  uint64_t n = h.size();
  std::memcpy(bytes.data(), &n, 8);
  bytes += h;
  for (const StEntry& e : entries) bytes.append(reinterpret_cast<const char*>(e.data.data()), e.data.size());
  spit(path, bytes);
}

std::vector<StEntry> read_safetensors(const std::string& path) {
  auto f = SafetensorsFile::open(path);
  std::vector<StEntry> out;
  for (const StTensor& t : f->tensors())
    out.push_back({t.name, t.dtype, t.shape, {t.data, t.data + t.nbytes}});
  return out;
}

// A copy of an HF asset folder (config.json + model.safetensors) to edit.
std::string copy_hf(const std::string& src_dir) {
  std::string dir = test::temp_dir() + "/model";
  fs::create_directories(dir);
  fs::copy_file(src_dir + "/config.json", dir + "/config.json");
  fs::copy_file(src_dir + "/model.safetensors", dir + "/model.safetensors");
  return dir;
}

json read_json(const std::string& path) { return json::parse(slurp(path)); }
void write_json(const std::string& path, const json& j) { spit(path, j.dump(2)); }

std::vector<float> tensor_f32(const GgufFile& g, const std::string& name) {
  const Tensor& t = g.tensor(name);
  EXPECT_EQ(t.type, DType::F32) << name;
  std::vector<float> v(static_cast<size_t>(t.nelements()));
  std::memcpy(v.data(), t.data, v.size() * 4);
  return v;
}

// Logits for `ids` (all positions), from a fresh cache.
std::vector<float> all_logits(const Model& m, const std::vector<int32_t>& ids) {
  ThreadPool pool(2);
  KVCache kv(m.config(), 0, m.config().n_layers, static_cast<int>(ids.size()));
  return m.forward(ids.data(), static_cast<int>(ids.size()), 0, kv, pool, true);
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  EXPECT_EQ(a.size(), b.size());
  float m = 0;
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) m = std::max(m, std::fabs(a[i] - b[i]));
  return m;
}

// transformers' logits for input_ids and along greedy_ids (reference.json/.safetensors).
struct HfReference {
  std::vector<int32_t> input_ids, greedy_ids;
  std::vector<float> logits, greedy_logits;
};
HfReference load_reference(const std::string& dir) {
  HfReference r;
  json j = read_json(dir + "/reference.json");
  r.input_ids = j.at("input_ids").get<std::vector<int32_t>>();
  r.greedy_ids = j.at("greedy_ids").get<std::vector<int32_t>>();
  auto st = SafetensorsFile::open(dir + "/reference.safetensors");
  r.logits = st_to_f32(st->get("logits"));
  r.greedy_logits = st_to_f32(st->get("greedy_logits"));
  return r;
}

// Converts and checks the converted model's logits against transformers'.
void expect_hf_logits(const std::string& src_dir, const std::string& ref_dir, float tol) {
  std::string out = test::temp_dir() + "/m.gguf";
  convert_to_gguf(src_dir, out);
  auto model = Model::load(out);
  HfReference ref = load_reference(ref_dir);
  EXPECT_LE(max_abs_diff(all_logits(*model, ref.input_ids), ref.logits), tol);
  EXPECT_LE(max_abs_diff(all_logits(*model, ref.greedy_ids), ref.greedy_logits), tol);
}

// A CLI failure: non-zero exit, one line "braid: error: ...", containing `needle`.
void expect_cli_error(const std::vector<std::string>& args, const std::string& needle) {
  test::CommandResult r = test::run_braid(args);
  EXPECT_NE(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.signal, 0);
  EXPECT_EQ(r.err.rfind("braid: error: ", 0), 0u) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << r.err;
  EXPECT_NE(r.err.find(needle), std::string::npos) << "stderr: " << r.err << "expected: " << needle;
}

// ---------------------------------------------------------------- element operations

TEST(ConvertElements, PermuteRowsMatchesLlamaCppReshape) {
  // 2 heads of 6 rows (3 pairs), 2 columns: w.reshape(2, 2, 3, 2).swapaxes(1, 2).
  const int64_t n_head = 2, rows = 12, cols = 2;
  std::vector<float> src(rows * cols);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<float>(i);
  std::vector<float> dst(src.size());
  convert::permute_rows(reinterpret_cast<const uint8_t*>(src.data()), DType::F32,
                        reinterpret_cast<uint8_t*>(dst.data()), DType::F32, rows, cols, n_head);
  // numpy: out[h][i][j] = in[h][j][i] over (head, pair, half); rows of head 0: 0 3 1 4 2 5.
  const int expect_rows[] = {0, 3, 1, 4, 2, 5, 6, 9, 7, 10, 8, 11};
  for (int r = 0; r < rows; ++r)
    for (int c = 0; c < cols; ++c) EXPECT_EQ(dst[r * cols + c], src[expect_rows[r] * cols + c]) << r;
}

TEST(ConvertElements, TransposeAndTypeChange) {
  const int64_t rows = 37, cols = 45;  // not multiples of the tile
  std::vector<float> src(rows * cols);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<float>(i) * 0.25f - 100.0f;
  std::vector<uint16_t> dst(src.size());
  convert::transpose(reinterpret_cast<const uint8_t*>(src.data()), DType::F32,
                     reinterpret_cast<uint8_t*>(dst.data()), DType::F16, rows, cols);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) ASSERT_EQ(dst[c * rows + r], f32_to_f16(src[r * cols + c]));

  std::vector<uint16_t> bf(3);
  const float in[3] = {1.5f, -2.0f, 3.140625f};
  convert::convert_run(reinterpret_cast<const uint8_t*>(in), DType::F32,
                       reinterpret_cast<uint8_t*>(bf.data()), DType::BF16, 3);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(bf16_to_f32(bf[i]), in[i]);
}

// ---------------------------------------------------------------- config.json

const char* kLlamaConfig = R"({
  "architectures": ["LlamaForCausalLM"], "hidden_size": 64, "intermediate_size": 172,
  "max_position_embeddings": 256, "num_attention_heads": 8, "num_hidden_layers": 3,
  "num_key_value_heads": 4, "rms_norm_eps": 1e-05, "rope_theta": 500000.0, "vocab_size": 320,
  "tie_word_embeddings": false, "head_dim": null, "rope_scaling": null})";

TEST(HfConfig, ParsesLlama) {
  HfConfig c = parse_hf_config(kLlamaConfig, "config.json");
  EXPECT_EQ(c.arch, "llama");
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.head_dim, 8);
  EXPECT_FALSE(c.head_dim_explicit);
  EXPECT_EQ(c.ffn_size, 172);
  EXPECT_EQ(c.rope_theta, 500000.0);
  EXPECT_EQ(c.rope_scaling, "");
}

TEST(HfConfig, ReadsBothRopeLayouts) {
  // transformers 5 folds rope_theta and the scaling into rope_parameters.
  json j = json::parse(kLlamaConfig);
  j.erase("rope_theta");
  j["rope_parameters"] = {{"rope_theta", 1e6},       {"rope_type", "llama3"},
                          {"factor", 32.0},          {"low_freq_factor", 1.0},
                          {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 8192}};
  HfConfig c = parse_hf_config(j.dump(), "config.json");
  EXPECT_EQ(c.rope_theta, 1e6);
  EXPECT_EQ(c.rope_scaling, "llama3");
  EXPECT_EQ(c.rope_factor, 32.0);
  EXPECT_EQ(c.rope_original_context, 8192);

  j = json::parse(kLlamaConfig);
  j["rope_scaling"] = {{"type", "linear"}, {"factor", 2.0}};
  c = parse_hf_config(j.dump(), "config.json");
  EXPECT_EQ(c.rope_scaling, "linear");
  EXPECT_EQ(c.rope_factor, 2.0);
}

TEST(HfConfig, Llama3FactorsMatchTheModelsFormula) {
  // Llama 3.1 8B's scaling; the model module computes the same factors in double.
  json j = json::parse(kLlamaConfig);
  j["hidden_size"] = 4096;
  j["num_attention_heads"] = 32;
  j["rope_scaling"] = {{"rope_type", "llama3"},
                       {"factor", 8.0},
                       {"low_freq_factor", 1.0},
                       {"high_freq_factor", 4.0},
                       {"original_max_position_embeddings", 8192}};
  HfConfig c = parse_hf_config(j.dump(), "config.json");
  std::vector<float> f = convert::llama3_rope_factors(c);
  std::vector<float> ref = braid::llama3_rope_factors(500000.0f, 128, 8.0f, 1.0f, 4.0f, 8192);
  ASSERT_EQ(f.size(), 64u);
  ASSERT_EQ(ref.size(), 64u);
  for (size_t i = 0; i < f.size(); ++i) EXPECT_NEAR(f[i], ref[i], 1e-5f * ref[i]) << i;
  EXPECT_EQ(f[0], 1.0f);   // short wavelengths keep their frequency
  EXPECT_EQ(f[63], 8.0f);  // long ones are slowed by `factor`
  int smooth = 0;
  for (float x : f) smooth += x > 1.0f && x < 8.0f;
  EXPECT_GT(smooth, 0);
}

TEST(HfConfig, ErrorsNameTheFileAndKey) {
  auto err = [](const std::string& text) {
    return error_of([&] { parse_hf_config(text, "m/config.json"); });
  };
  EXPECT_NE(err("{\"architectures\": [").find("m/config.json: malformed JSON"), std::string::npos);
  EXPECT_NE(err("[1, 2]").find("m/config.json: expected a JSON object"), std::string::npos);

  json j = json::parse(kLlamaConfig);
  j.erase("hidden_size");
  EXPECT_EQ(err(j.dump()), "m/config.json: missing key hidden_size");

  j = json::parse(kLlamaConfig);
  j["num_hidden_layers"] = "3";
  EXPECT_EQ(err(j.dump()), "m/config.json: key num_hidden_layers: expected a positive integer, got \"3\"");
  j["num_hidden_layers"] = -3;
  EXPECT_NE(err(j.dump()).find("key num_hidden_layers: expected a positive integer"), std::string::npos);
  j["num_hidden_layers"] = 2.5;
  EXPECT_NE(err(j.dump()).find("key num_hidden_layers"), std::string::npos);

  j = json::parse(kLlamaConfig);
  j["architectures"] = {"BertForMaskedLM"};
  EXPECT_NE(
      err(j.dump()).find("m/config.json: key architectures: unsupported architecture \"BertForMaskedLM\""),
      std::string::npos);
  j["architectures"] = "LlamaForCausalLM";
  EXPECT_NE(err(j.dump()).find("key architectures: expected a list"), std::string::npos);

  j = json::parse(kLlamaConfig);
  j["num_key_value_heads"] = 3;
  EXPECT_NE(err(j.dump()).find("key num_key_value_heads: 3 KV heads do not divide 8"), std::string::npos);
  j = json::parse(kLlamaConfig);
  j["hidden_act"] = "gelu";
  EXPECT_NE(err(j.dump()).find("key hidden_act: unsupported activation"), std::string::npos);
  j = json::parse(kLlamaConfig);
  j["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 4.0}};
  EXPECT_NE(err(j.dump()).find("key rope_scaling.rope_type: unsupported rope scaling \"yarn\""),
            std::string::npos);
  j = json::parse(kLlamaConfig);
  j["rms_norm_eps"] = "tiny";
  EXPECT_NE(err(j.dump()).find("key rms_norm_eps: expected a number"), std::string::npos);
  // Deep nesting is refused, not recursed into.
  std::string deep = "{\"a\":" + std::string(100000, '[') + std::string(100000, ']') + "}";
  EXPECT_NE(err(deep).find("nests deeper"), std::string::npos);
}

TEST(HfConfig, ParsesGpt2) {
  BRAID_REQUIRE_ASSET(cfg, "hf/gpt2-tiny/config.json");
  HfConfig c = parse_hf_config(slurp(cfg), cfg);
  EXPECT_EQ(c.arch, "gpt2");
  EXPECT_EQ(c.ffn_size, 256);  // n_inner null -> 4 * n_embd
  EXPECT_EQ(c.context_length, 128);
  EXPECT_TRUE(c.tie_word_embeddings);
  json j = read_json(cfg);
  j["activation_function"] = "relu";
  EXPECT_NE(error_of([&] { parse_hf_config(j.dump(), "c.json"); }).find("key activation_function"),
            std::string::npos);
}

// ---------------------------------------------------------------- detection

TEST(ConvertDetect, KindsAndMisfits) {
  BRAID_REQUIRE_ASSET(bin, "models/stories260K.bin");
  BRAID_REQUIRE_ASSET(hf, "hf/llama-tiny");
  BRAID_REQUIRE_ASSET(gguf, "models/stories260K.gguf");
  BRAID_REQUIRE_ASSET(tok, "vocab/tokenizers/llama3/tokenizer.json");
  EXPECT_EQ(detect_source(bin), SourceKind::kLlama2c);
  EXPECT_EQ(detect_source(hf), SourceKind::kHfFolder);
  EXPECT_EQ(detect_source(tok), SourceKind::kTokenizerJson);
  EXPECT_NE(error_of([&] { detect_source(gguf); }).find("already a GGUF file"), std::string::npos);
  EXPECT_NE(error_of([&] { detect_source(hf + "/model.safetensors"); }).find("safetensors file"),
            std::string::npos);
  EXPECT_EQ(error_of([] { detect_source("/no/such/path"); }), "/no/such/path: no such file or directory");
  std::string empty_dir = test::temp_dir();
  EXPECT_NE(error_of([&] { detect_source(empty_dir); }).find("folder has no config.json"), std::string::npos);
}

// ---------------------------------------------------------------- llama2.c

TEST(ConvertLlama2c, TensorsBitIdenticalToLlamaCpp) {
  BRAID_REQUIRE_ASSET(bin, "models/stories260K.bin");
  BRAID_REQUIRE_ASSET(tok, "models/tok512.bin");
  BRAID_REQUIRE_ASSET(ref_path, "models/stories260K.gguf");
  std::string out = test::temp_dir() + "/stories.gguf";
  ConvertOptions opt;
  opt.tokenizer = tok;
  ConvertResult r = convert_to_gguf(bin, out, opt);
  EXPECT_EQ(r.kind, SourceKind::kLlama2c);
  EXPECT_EQ(r.architecture, "llama");
  EXPECT_TRUE(r.has_tokenizer);

  auto ref = GgufFile::open(ref_path);
  auto got = GgufFile::open(out);
  ASSERT_EQ(got->tensors().size(), ref->tensors().size());
  EXPECT_EQ(r.n_tensors, ref->tensors().size());
  for (size_t i = 0; i < ref->tensors().size(); ++i) {
    const Tensor& a = ref->tensors()[i];
    const Tensor& b = got->tensors()[i];
    EXPECT_EQ(b.name, a.name);  // llama.cpp's order too
    ASSERT_EQ(b.type, a.type) << a.name;
    ASSERT_EQ(b.n_dims, a.n_dims) << a.name;
    for (int d = 0; d < 4; ++d) ASSERT_EQ(b.ne[d], a.ne[d]) << a.name;
    ASSERT_EQ(b.nbytes, a.nbytes) << a.name;
    EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes), 0) << a.name << " differs";
  }

  // Tokenizer metadata as llama.cpp wrote it.
  EXPECT_EQ(got->get_str("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(got->get_strs("tokenizer.ggml.tokens"), ref->get_strs("tokenizer.ggml.tokens"));
  EXPECT_EQ(got->get_ints("tokenizer.ggml.token_type"), ref->get_ints("tokenizer.ggml.token_type"));
  EXPECT_EQ(got->find("tokenizer.ggml.token_type")->elem, ref->find("tokenizer.ggml.token_type")->elem);
  const auto& sa = ref->get_floats("tokenizer.ggml.scores");
  const auto& sb = got->get_floats("tokenizer.ggml.scores");
  ASSERT_EQ(sa.size(), sb.size());
  for (size_t i = 0; i < sa.size(); ++i) {
    float fa = static_cast<float>(sa[i]), fb = static_cast<float>(sb[i]);
    EXPECT_EQ(std::memcmp(&fa, &fb, 4), 0) << "score of token " << i;  // -0.0 stays -0.0
  }
  for (const char* k :
       {"tokenizer.ggml.unknown_token_id", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"})
    EXPECT_EQ(got->get_u64(k), ref->get_u64(k)) << k;

  // Hyperparameters as llama.cpp wrote them; context_length is the checkpoint's seq_len
  // (llama.cpp's converter wrote its default of 2048).
  EXPECT_EQ(got->get_str("general.architecture"), "llama");
  for (const char* k : {"llama.embedding_length", "llama.feed_forward_length", "llama.attention.head_count",
                        "llama.attention.head_count_kv", "llama.block_count", "llama.rope.dimension_count"})
    EXPECT_EQ(got->get_u64(k), ref->get_u64(k)) << k;
  EXPECT_EQ(got->get_f64("llama.attention.layer_norm_rms_epsilon"),
            ref->get_f64("llama.attention.layer_norm_rms_epsilon"));
  EXPECT_EQ(got->get_u64("llama.context_length"), 512u);
  EXPECT_EQ(got->get_str("general.name"), "stories260K");
}

TEST(ConvertLlama2c, GreedyMatchesGolden) {
  BRAID_REQUIRE_ASSET(bin, "models/stories260K.bin");
  BRAID_REQUIRE_ASSET(tok, "models/tok512.bin");
  BRAID_REQUIRE_ASSET(golden, "golden/stories260K.json");
  std::string out = test::temp_dir() + "/stories.gguf";
  ConvertOptions opt;
  opt.tokenizer = tok;
  convert_to_gguf(bin, out, opt);

  auto model = Model::load(out);
  std::vector<int32_t> want = read_json(golden).at("greedy_ids").get<std::vector<int32_t>>();
  ASSERT_EQ(want.size(), 257u);
  ThreadPool pool(2);
  KVCache kv(model->config(), 0, model->config().n_layers, 512);
  std::vector<int32_t> ids = {want[0]};
  for (int pos = 0; ids.size() < want.size(); ++pos) {
    std::vector<float> logits = model->forward(&ids[static_cast<size_t>(pos)], 1, pos, kv, pool);
    ids.push_back(static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin()));
  }
  EXPECT_EQ(ids, want);

  // The converted tokenizer encodes like the golden file says.
  auto t = Tokenizer::from_gguf(model->gguf());
  EXPECT_EQ(t->encode("Once upon a time", false), (std::vector<int32_t>{403, 407, 261, 378}));
}

TEST(ConvertLlama2c, HalfTypesRoundWeightsAndKeepNormsF32) {
  BRAID_REQUIRE_ASSET(bin, "models/stories260K.bin");
  BRAID_REQUIRE_ASSET(tok, "models/tok512.bin");
  BRAID_REQUIRE_ASSET(ref_path, "models/stories260K.gguf");
  auto ref = GgufFile::open(ref_path);
  for (DType type : {DType::F16, DType::BF16}) {
    std::string out = test::temp_dir() + "/stories-half.gguf";
    ConvertOptions opt;
    opt.tokenizer = tok;
    opt.type = type;
    convert_to_gguf(bin, out, opt);
    auto got = GgufFile::open(out);
    EXPECT_EQ(got->get_u64("general.file_type"), type == DType::F16 ? 1u : 32u);
    for (const Tensor& a : ref->tensors()) {
      const Tensor& b = got->tensor(a.name);
      if (a.n_dims == 1) {
        EXPECT_EQ(b.type, DType::F32) << a.name;
        EXPECT_EQ(std::memcmp(a.data, b.data, a.nbytes), 0) << a.name;
        continue;
      }
      ASSERT_EQ(b.type, type) << a.name;
      for (int64_t i = 0; i < a.nelements(); ++i) {
        float f;
        uint16_t h;
        std::memcpy(&f, a.data + i * 4, 4);
        std::memcpy(&h, b.data + i * 2, 2);
        ASSERT_EQ(h, type == DType::F16 ? f32_to_f16(f) : f32_to_bf16(f)) << a.name << "[" << i << "]";
      }
    }
    // And the model still runs, close to the f32 logits.
    auto model = Model::load(out);
    std::vector<float> golden = test::read_f32_file(test::asset("golden/stories260K_logits64.f32"));
    std::vector<int32_t> ids =
        read_json(test::asset("golden/stories260K.json")).at("greedy_ids").get<std::vector<int32_t>>();
    ids.resize(64);
    // Rounding the weights moves the logits by 0.011 (f16) and 0.088 (bf16).
    EXPECT_LE(max_abs_diff(all_logits(*model, ids), golden), type == DType::F16 ? 0.03f : 0.2f);
  }
}

TEST(ConvertLlama2c, BadCheckpointsAndTokenizers) {
  BRAID_REQUIRE_ASSET(bin, "models/stories260K.bin");
  BRAID_REQUIRE_ASSET(tok, "models/tok512.bin");
  const std::string dir = test::temp_dir();
  const std::string out = dir + "/out.gguf";
  auto convert = [&](const std::string& src, const std::string& tokenizer) {
    ConvertOptions opt;
    opt.tokenizer = tokenizer;
    return error_of([&] { convert_to_gguf(src, out, opt); });
  };
  const std::string full = slurp(bin);

  spit(dir + "/cut.bin", full.substr(0, 500000));
  EXPECT_NE(convert(dir + "/cut.bin", tok)
                .find("cut.bin: truncated llama2.c checkpoint: 500000 bytes, expected "
                      "1056540"),
            std::string::npos);
  spit(dir + "/long.bin", full + "junk");
  EXPECT_NE(convert(dir + "/long.bin", tok).find("oversized llama2.c checkpoint"), std::string::npos);
  EXPECT_NE(convert(bin, "").find("needs its tokenizer"), std::string::npos);
  EXPECT_NE(convert(bin, dir + "/missing.bin").find("cannot open"), std::string::npos);

  const std::string t = slurp(tok);
  spit(dir + "/tok-cut.bin", t.substr(0, 3000));
  EXPECT_NE(convert(bin, dir + "/tok-cut.bin").find("truncated llama2.c tokenizer"), std::string::npos);
  spit(dir + "/tok-long.bin", t + "more");
  EXPECT_NE(convert(bin, dir + "/tok-long.bin").find("4 bytes follow the 512 tokens"), std::string::npos);
  std::string bad_len = t;
  int32_t huge = 1 << 20;
  std::memcpy(bad_len.data() + 4 + 4, &huge, 4);  // token 0's length
  spit(dir + "/tok-bad.bin", bad_len);
  EXPECT_NE(convert(bin, dir + "/tok-bad.bin").find("token 0 has length 1048576"), std::string::npos);

  // Implausible headers are not taken for llama2.c at all.
  std::string bad = full;
  int32_t zero = 0;
  std::memcpy(bad.data() + 12, &zero, 4);  // n_heads = 0
  spit(dir + "/bad.bin", bad);
  EXPECT_NE(convert(dir + "/bad.bin", tok).find("not a Hugging Face folder, tokenizer.json or llama2.c"),
            std::string::npos);
  // The versioned export format is recognised and explained.
  std::string v1 = full;
  uint32_t magic = 0x616b3432;
  std::memcpy(v1.data(), &magic, 4);
  spit(dir + "/v1.bin", v1);
  EXPECT_NE(convert(dir + "/v1.bin", tok).find("--version 0"), std::string::npos);

  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(fs::exists(out + ".tmp"));
  EXPECT_FALSE(fs::exists(out + ".scratch"));
}

// ---------------------------------------------------------------- Hugging Face

TEST(ConvertHf, LlamaLogitsMatchTransformers) {
  BRAID_REQUIRE_ASSET(dir, "hf/llama-tiny");
  expect_hf_logits(dir, dir, 1e-4f);
}

TEST(ConvertHf, Gpt2LogitsMatchTransformers) {
  BRAID_REQUIRE_ASSET(dir, "hf/gpt2-tiny");
  expect_hf_logits(dir, dir, 1e-4f);
}

TEST(ConvertHf, LlamaTensorLayout) {
  BRAID_REQUIRE_ASSET(dir, "hf/llama-tiny");
  std::string out = test::temp_dir() + "/l.gguf";
  ConvertResult r = convert_to_gguf(dir, out);
  EXPECT_FALSE(r.has_tokenizer);
  auto g = GgufFile::open(out);
  EXPECT_EQ(g->get_str("general.architecture"), "llama");
  EXPECT_EQ(g->get_str("general.name"), "llama-tiny");
  EXPECT_EQ(g->get_u64("llama.attention.head_count_kv"), 4u);
  EXPECT_EQ(g->get_u64("llama.context_length"), 256u);
  EXPECT_EQ(g->get_u64("llama.attention.key_length"), 8u);
  EXPECT_EQ(g->get_f64("llama.rope.freq_base"), 10000.0);
  // 3 layers x 9 + embeddings, norm, head.
  EXPECT_EQ(g->tensors().size(), 30u);
  const Tensor& k = g->tensor("blk.1.attn_k.weight");
  EXPECT_EQ(k.ne[0], 64);
  EXPECT_EQ(k.ne[1], 32);
  // k rows are permuted per KV head (4 heads of 8 rows): GGUF row 1 is HF row 4.
  auto st = SafetensorsFile::open(dir + "/model.safetensors");
  const StTensor& hk = st->get("model.layers.1.self_attn.k_proj.weight");
  EXPECT_EQ(std::memcmp(k.data + 1 * 64 * 4, hk.data + 4 * 64 * 4, 64 * 4), 0);
  EXPECT_EQ(std::memcmp(k.data + 8 * 64 * 4, hk.data + 8 * 64 * 4, 64 * 4), 0);
  const Tensor& v = g->tensor("blk.1.attn_v.weight");  // not permuted
  EXPECT_EQ(std::memcmp(v.data, st->get("model.layers.1.self_attn.v_proj.weight").data, v.nbytes), 0);
}

TEST(ConvertHf, Gpt2TransposesConv1DAndCopiesTiedHead) {
  BRAID_REQUIRE_ASSET(dir, "hf/gpt2-tiny");
  std::string out = test::temp_dir() + "/g.gguf";
  convert_to_gguf(dir, out);
  auto g = GgufFile::open(out);
  EXPECT_EQ(g->get_str("general.architecture"), "gpt2");
  EXPECT_EQ(g->get_u64("gpt2.feed_forward_length"), 256u);
  EXPECT_EQ(g->get_u64("gpt2.context_length"), 128u);
  auto st = SafetensorsFile::open(dir + "/model.safetensors");
  const Tensor& qkv = g->tensor("blk.0.attn_qkv.weight");
  EXPECT_EQ(qkv.ne[0], 64);
  EXPECT_EQ(qkv.ne[1], 192);
  std::vector<float> hf = st_to_f32(st->get("transformer.h.0.attn.c_attn.weight"));  // [64 in][192 out]
  std::vector<float> gg = tensor_f32(*g, "blk.0.attn_qkv.weight");                   // [192 out][64 in]
  for (int o = 0; o < 192; ++o)
    for (int i = 0; i < 64; ++i) ASSERT_EQ(gg[o * 64 + i], hf[i * 192 + o]);
  const Tensor& out_w = g->tensor("output.weight");
  const Tensor& emb = g->tensor("token_embd.weight");
  EXPECT_EQ(std::memcmp(out_w.data, emb.data, emb.nbytes), 0);
  EXPECT_TRUE(g->find_tensor("position_embd.weight"));
  EXPECT_TRUE(g->find_tensor("output_norm.bias"));
}

TEST(ConvertHf, ShardedCheckpointEqualsSingleFile) {
  BRAID_REQUIRE_ASSET(src, "hf/llama-tiny");
  std::string dir = copy_hf(src);
  std::vector<StEntry> all = read_safetensors(dir + "/model.safetensors");
  fs::remove(dir + "/model.safetensors");
  std::vector<StEntry> a(all.begin(), all.begin() + all.size() / 2),
      b(all.begin() + all.size() / 2, all.end());
  write_safetensors(dir + "/model-00001-of-00002.safetensors", a);
  write_safetensors(dir + "/model-00002-of-00002.safetensors", b);
  json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", json::object()}};
  for (const auto& e : a) index["weight_map"][e.name] = "model-00001-of-00002.safetensors";
  for (const auto& e : b) index["weight_map"][e.name] = "model-00002-of-00002.safetensors";
  write_json(dir + "/model.safetensors.index.json", index);

  std::string one = test::temp_dir() + "/one.gguf", two = test::temp_dir() + "/two.gguf";
  convert_to_gguf(src, one);
  convert_to_gguf(dir, two);
  auto g1 = GgufFile::open(one), g2 = GgufFile::open(two);
  ASSERT_EQ(g1->tensors().size(), g2->tensors().size());
  for (const Tensor& t : g1->tensors()) {
    const Tensor& u = g2->tensor(t.name);
    ASSERT_EQ(t.nbytes, u.nbytes);
    EXPECT_EQ(std::memcmp(t.data, u.data, t.nbytes), 0) << t.name;
  }

  // A shard the index names must exist.
  fs::remove(dir + "/model-00002-of-00002.safetensors");
  EXPECT_NE(
      error_of([&] { convert_to_gguf(dir, two + "2"); }).find("lists shard model-00002-of-00002.safetensors"),
      std::string::npos);
}

// A Qwen2 folder made from llama-tiny: same weights, qwen2's config, q/k/v biases.
std::string make_qwen2(const std::string& llama_dir, float bias_scale,
                       std::vector<StEntry>* biases_out = nullptr) {
  std::string dir = copy_hf(llama_dir);
  json cfg = read_json(dir + "/config.json");
  cfg["architectures"] = {"Qwen2ForCausalLM"};
  cfg["model_type"] = "qwen2";
  cfg.erase("attention_bias");
  cfg.erase("mlp_bias");
  write_json(dir + "/config.json", cfg);
  std::vector<StEntry> t = read_safetensors(dir + "/model.safetensors");
  std::mt19937 rng(7);
  std::normal_distribution<float> nd(0.0f, bias_scale);
  for (int l = 0; l < 3; ++l)
    for (auto [proj, n] : {std::pair{"q_proj", 64}, {"k_proj", 32}, {"v_proj", 32}}) {
      std::vector<float> b(static_cast<size_t>(n));
      for (float& x : b) x = bias_scale == 0 ? 0.0f : nd(rng);
      StEntry e{cat("model.layers.", l, ".self_attn.", proj, ".bias"), "F32", {n}, f32_bytes(b)};
      t.push_back(e);
      if (biases_out) biases_out->push_back(e);
    }
  write_safetensors(dir + "/model.safetensors", t);
  return dir;
}

TEST(ConvertHf, Qwen2WithZeroBiasesReproducesLlamaReference) {
  // HF's Qwen2 is Llama plus q/k/v biases; with zero biases it must give llama-tiny's
  // transformers logits, through qwen2's own path (no q/k permutation, NEOX rope).
  BRAID_REQUIRE_ASSET(src, "hf/llama-tiny");
  std::string dir = make_qwen2(src, 0.0f);
  std::string out = test::temp_dir() + "/q.gguf";
  ConvertResult r = convert_to_gguf(dir, out);
  EXPECT_EQ(r.architecture, "qwen2");
  auto g = GgufFile::open(out);
  EXPECT_EQ(g->get_str("general.architecture"), "qwen2");
  EXPECT_EQ(g->get_u64("qwen2.attention.head_count_kv"), 4u);
  for (const char* n : {"blk.0.attn_q.bias", "blk.2.attn_k.bias", "blk.1.attn_v.bias"})
    EXPECT_TRUE(g->find_tensor(n)) << n;
  EXPECT_FALSE(g->find_tensor("blk.0.attn_output.bias"));
  // qwen2 q/k keep HF's row order.
  auto st = SafetensorsFile::open(src + "/model.safetensors");
  EXPECT_EQ(std::memcmp(g->tensor("blk.0.attn_q.weight").data,
                        st->get("model.layers.0.self_attn.q_proj.weight").data, 64 * 64 * 4),
            0);
  expect_hf_logits(dir, src, 1e-4f);
}

TEST(ConvertHf, Qwen2BiasesMatchLlamaWithAttentionBias) {
  // The same biases through qwen2 (unpermuted, NEOX rope) and through llama with
  // attention_bias (rows and biases permuted, adjacent-pair rope) must agree, and must
  // change the output.
  BRAID_REQUIRE_ASSET(src, "hf/llama-tiny");
  std::vector<StEntry> biases;
  std::string qdir = make_qwen2(src, 0.5f, &biases);
  std::string ldir = copy_hf(src);
  json cfg = read_json(ldir + "/config.json");
  cfg["attention_bias"] = true;
  write_json(ldir + "/config.json", cfg);
  std::vector<StEntry> t = read_safetensors(ldir + "/model.safetensors");
  t.insert(t.end(), biases.begin(), biases.end());
  for (int l = 0; l < 3; ++l)
    t.push_back(
        {cat("model.layers.", l, ".self_attn.o_proj.bias"), "F32", {64}, f32_bytes(std::vector<float>(64))});
  write_safetensors(ldir + "/model.safetensors", t);

  std::string qout = test::temp_dir() + "/q.gguf", lout = test::temp_dir() + "/l.gguf";
  convert_to_gguf(qdir, qout);
  convert_to_gguf(ldir, lout);
  auto lg = GgufFile::open(lout);
  EXPECT_TRUE(lg->find_tensor("blk.0.attn_output.bias"));
  HfReference ref = load_reference(src);
  std::vector<float> q = all_logits(*Model::load(qout), ref.input_ids);
  std::vector<float> l = all_logits(*Model::load(lout), ref.input_ids);
  EXPECT_LE(max_abs_diff(q, l), 1e-4f);
  EXPECT_GT(max_abs_diff(q, ref.logits), 1e-2f);  // the biases matter
}

TEST(ConvertHf, Llama3RopeScalingWritesRopeFreqs) {
  BRAID_REQUIRE_ASSET(src, "hf/llama-tiny");
  std::string dir = copy_hf(src);
  json cfg = read_json(dir + "/config.json");
  // head_dim 8: wavelengths 6.3, 63, 628, 6283 against a band of [16, 64].
  cfg["rope_parameters"] = {{"rope_theta", 10000.0},   {"rope_type", "llama3"},
                            {"factor", 8.0},           {"low_freq_factor", 1.0},
                            {"high_freq_factor", 4.0}, {"original_max_position_embeddings", 64}};
  write_json(dir + "/config.json", cfg);
  std::string out = test::temp_dir() + "/r.gguf";
  convert_to_gguf(dir, out);
  auto g = GgufFile::open(out);
  std::vector<float> f = tensor_f32(*g, "rope_freqs.weight");
  std::vector<float> ref = braid::llama3_rope_factors(10000.0f, 8, 8.0f, 1.0f, 4.0f, 64);
  ASSERT_EQ(f.size(), 4u);
  EXPECT_EQ(f[0], 1.0f);
  EXPECT_GT(f[1], 1.0f);
  EXPECT_LT(f[1], 8.0f);
  EXPECT_EQ(f[2], 8.0f);
  EXPECT_EQ(f[3], 8.0f);
  for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(f[i], ref[i], 1e-5f * ref[i]);
  // The model takes the factors; they change positions > 0.
  HfReference r = load_reference(src);
  EXPECT_GT(max_abs_diff(all_logits(*Model::load(out), r.input_ids), r.logits), 1e-3f);
}

TEST(ConvertHf, HalfPrecisionSources) {
  // An F16 checkpoint converts exactly to F32 (widening is lossless) and keeps F16 bits.
  BRAID_REQUIRE_ASSET(src, "hf/llama-tiny");
  std::string dir = copy_hf(src);
  std::vector<StEntry> t = read_safetensors(dir + "/model.safetensors");
  for (StEntry& e : t) {
    std::vector<float> f(e.data.size() / 4);
    std::memcpy(f.data(), e.data.data(), e.data.size());
    std::vector<uint16_t> h(f.size());
    for (size_t i = 0; i < f.size(); ++i) h[i] = f32_to_f16(f[i]);
    e.dtype = "F16";
    e.data.assign(reinterpret_cast<uint8_t*>(h.data()), reinterpret_cast<uint8_t*>(h.data() + h.size()));
  }
  write_safetensors(dir + "/model.safetensors", t);
  std::string out32 = test::temp_dir() + "/a.gguf", out16 = test::temp_dir() + "/b.gguf";
  convert_to_gguf(dir, out32);
  ConvertOptions opt;
  opt.type = DType::F16;
  convert_to_gguf(dir, out16, opt);
  auto g32 = GgufFile::open(out32), g16 = GgufFile::open(out16);
  auto st = SafetensorsFile::open(dir + "/model.safetensors");
  const StTensor& hv = st->get("model.layers.0.self_attn.v_proj.weight");
  std::vector<float> v32 = tensor_f32(*g32, "blk.0.attn_v.weight");
  for (size_t i = 0; i < v32.size(); ++i) {
    uint16_t h;
    std::memcpy(&h, hv.data + 2 * i, 2);
    ASSERT_EQ(v32[i], f16_to_f32(h));
  }
  EXPECT_EQ(g16->tensor("blk.0.attn_v.weight").type, DType::F16);
  EXPECT_EQ(std::memcmp(g16->tensor("blk.0.attn_v.weight").data, hv.data, hv.nbytes), 0);
  EXPECT_EQ(g16->tensor("blk.0.attn_norm.weight").type, DType::F32);
  // Both run and agree with each other closely (same f16-rounded weights).
  HfReference r = load_reference(src);
  std::vector<float> a = all_logits(*Model::load(out32), r.input_ids);
  std::vector<float> b = all_logits(*Model::load(out16), r.input_ids);
  EXPECT_LE(max_abs_diff(a, b), 1e-3f);
  EXPECT_LE(max_abs_diff(a, r.logits), 0.02f);  // f16 rounding of the weights: measured 0.005
}

TEST(ConvertHf, BadFoldersNameTheFileAndTensor) {
  BRAID_REQUIRE_ASSET(src, "hf/llama-tiny");
  const std::string out = test::temp_dir() + "/o.gguf";
  auto err = [&](const std::string& dir) { return error_of([&] { convert_to_gguf(dir, out); }); };

  std::string dir = copy_hf(src);
  std::vector<StEntry> t = read_safetensors(dir + "/model.safetensors");
  std::vector<StEntry> missing;
  for (const StEntry& e : t)
    if (e.name != "model.layers.1.mlp.up_proj.weight") missing.push_back(e);
  write_safetensors(dir + "/model.safetensors", missing);
  EXPECT_EQ(err(dir), dir + "/model.safetensors: missing tensor model.layers.1.mlp.up_proj.weight");

  std::vector<StEntry> extra = t;
  extra.push_back({"model.layers.0.self_attn.q_norm.weight", "F32", {8}, f32_bytes(std::vector<float>(8))});
  write_safetensors(dir + "/model.safetensors", extra);
  EXPECT_NE(err(dir).find("unexpected tensor model.layers.0.self_attn.q_norm.weight"), std::string::npos);

  std::vector<StEntry> ints = t;
  for (StEntry& e : ints)
    if (e.name == "model.norm.weight") e.dtype = "I32";
  write_safetensors(dir + "/model.safetensors", ints);
  EXPECT_NE(err(dir).find("tensor model.norm.weight has dtype I32"), std::string::npos);

  write_safetensors(dir + "/model.safetensors", t);
  json cfg = read_json(dir + "/config.json");
  cfg["intermediate_size"] = 170;
  write_json(dir + "/config.json", cfg);
  EXPECT_EQ(err(dir),
            dir +
                "/model.safetensors: tensor model.layers.0.mlp.gate_proj.weight has shape [172, 64], "
                "expected [170, 64] from config.json");

  std::string cut = copy_hf(src);
  std::string bytes = slurp(cut + "/model.safetensors");
  spit(cut + "/model.safetensors", bytes.substr(0, bytes.size() / 2));
  EXPECT_NE(err(cut).find(cut + "/model.safetensors: "), std::string::npos);

  std::string none = copy_hf(src);
  fs::remove(none + "/model.safetensors");
  EXPECT_NE(err(none).find("no model.safetensors or model.safetensors.index.json"), std::string::npos);

  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(fs::exists(out + ".scratch"));
}

// ---------------------------------------------------------------- tokenizer.json

TEST(ConvertTokenizer, Llama3TokenizerOnlyGgufViaCli) {
  BRAID_REQUIRE_ASSET(tok, "vocab/tokenizers/llama3/tokenizer.json");
  BRAID_REQUIRE_ASSET(inp, "vocab/ggml-vocab-llama-bpe.gguf.inp");
  BRAID_REQUIRE_ASSET(outp, "vocab/ggml-vocab-llama-bpe.gguf.out");
  std::string out = test::temp_dir() + "/llama3-vocab.gguf";
  test::CommandResult r = test::run_braid({"convert", tok, "-o", out});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("tokenizer"), std::string::npos) << r.out;
  auto g = GgufFile::open(out);
  EXPECT_TRUE(g->tensors().empty());
  EXPECT_EQ(g->get_str("general.name"), "llama3");
  EXPECT_EQ(g->get_str("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(g->get_str("tokenizer.ggml.pre"), "llama-bpe");
  EXPECT_EQ(g->get_strs("tokenizer.ggml.tokens").size(), 128256u);
  EXPECT_EQ(g->get_u64("tokenizer.ggml.bos_token_id"), 128000u);

  // The file tokenizes llama.cpp's test strings as llama.cpp does.
  auto t = Tokenizer::from_gguf(*g);
  std::string texts = slurp(inp), ids = slurp(outp);
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> cases;
  for (size_t p = 0;;) {
    size_t q = texts.find(sep, p);
    if (q == std::string::npos) break;
    cases.push_back(texts.substr(p, q - p));
    p = q + sep.size();
  }
  std::istringstream lines(ids);
  std::string line;
  size_t checked = 0;
  for (size_t i = 0; i < cases.size() && std::getline(lines, line); ++i) {
    std::vector<int32_t> want;
    std::istringstream ls(line);
    for (int32_t x; ls >> x;) want.push_back(x);
    EXPECT_EQ(t->encode(cases[i], false), want) << "case " << i;
    ++checked;
  }
  EXPECT_GT(checked, 10u);
}

// ---------------------------------------------------------------- CLI

TEST(ConvertCli, Llama2cEndToEnd) {
  BRAID_REQUIRE_ASSET(bin, "models/stories260K.bin");
  BRAID_REQUIRE_ASSET(tok, "models/tok512.bin");
  BRAID_REQUIRE_ASSET(ref_path, "models/stories260K.gguf");
  std::string out = test::temp_dir() + "/s.gguf";
  test::CommandResult r = test::run_braid({"convert", bin, "--tokenizer", tok, "-o", out, "--type", "f32"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("wrote " + out + ": llama, 48 tensors", 0), 0u) << r.out;
  auto ref = GgufFile::open(ref_path);
  auto got = GgufFile::open(out);
  for (const Tensor& a : ref->tensors())
    EXPECT_EQ(std::memcmp(a.data, got->tensor(a.name).data, a.nbytes), 0) << a.name;
}

TEST(ConvertCli, HfFolderWithoutTokenizerWarns) {
  BRAID_REQUIRE_ASSET(dir, "hf/gpt2-tiny");
  std::string out = test::temp_dir() + "/g.gguf";
  test::CommandResult r = test::run_braid({"convert", dir, "-o", out, "--type", "bf16"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("warning: "), std::string::npos);
  EXPECT_NE(r.err.find("has no tokenizer.json"), std::string::npos);
  auto g = GgufFile::open(out);
  EXPECT_EQ(g->tensor("blk.0.attn_qkv.weight").type, DType::BF16);
  EXPECT_EQ(g->tensor("blk.0.attn_qkv.bias").type, DType::F32);
}

TEST(ConvertCli, BadInputsFailWithOneLine) {
  BRAID_REQUIRE_ASSET(bin, "models/stories260K.bin");
  BRAID_REQUIRE_ASSET(tok, "models/tok512.bin");
  BRAID_REQUIRE_ASSET(hf, "hf/llama-tiny");
  const std::string dir = test::temp_dir();
  const std::string out = dir + "/o.gguf";

  expect_cli_error({"convert", dir + "/missing-model", "-o", out},
                   "missing-model: no such file or directory");

  std::string malformed = copy_hf(hf);
  spit(malformed + "/config.json", "{\"architectures\": [\"LlamaForCausalLM\"], \"hidden_size\": 64,,}");
  expect_cli_error({"convert", malformed, "-o", out}, malformed + "/config.json: malformed JSON");

  std::string bert = copy_hf(hf);
  json cfg = read_json(bert + "/config.json");
  cfg["architectures"] = {"BertModel"};
  write_json(bert + "/config.json", cfg);
  expect_cli_error({"convert", bert, "-o", out}, "unsupported architecture \"BertModel\"");

  std::string cut = copy_hf(hf);
  std::string bytes = slurp(cut + "/model.safetensors");
  spit(cut + "/model.safetensors", bytes.substr(0, bytes.size() - 1000));
  expect_cli_error({"convert", cut, "-o", out}, cut + "/model.safetensors");

  spit(dir + "/cut.bin", slurp(bin).substr(0, 100000));
  expect_cli_error({"convert", dir + "/cut.bin", "--tokenizer", tok, "-o", out},
                   "truncated llama2.c checkpoint");
  expect_cli_error({"convert", bin, "-o", out}, "pass --tokenizer");
  expect_cli_error({"convert", bin, "--tokenizer", tok, "-o", out, "--type", "q4_0"}, "--type: expected f32");
  EXPECT_FALSE(fs::exists(out));
}

}  // namespace
}  // namespace braid
