// Safetensors reader: the HF assets, conversions, and hostile input.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <random>

#include "braid/dtype.h"
#include "braid/error.h"
#include "braid/safetensors.h"
#include "test_util.h"

namespace braid {
namespace {

std::vector<uint8_t> slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

// A safetensors file: 8-byte length, `header`, then `data`.
std::vector<uint8_t> st_file(const std::string& header, const std::vector<uint8_t>& data = {},
                             uint64_t len_override = ~uint64_t{0}) {
  uint64_t len = len_override != ~uint64_t{0} ? len_override : header.size();
  std::vector<uint8_t> b(8 + header.size() + data.size());
  std::memcpy(b.data(), &len, 8);
  if (!header.empty()) std::memcpy(b.data() + 8, header.data(), header.size());
  if (!data.empty()) std::memcpy(b.data() + 8 + header.size(), data.data(), data.size());
  return b;
}

std::string parse_error(const std::vector<uint8_t>& bytes) {
  auto copy = std::make_unique<uint8_t[]>(bytes.size() + 1);
  if (!bytes.empty()) std::memcpy(copy.get(), bytes.data(), bytes.size());
  try {
    SafetensorsFile::parse(copy.get(), bytes.size(), "x.safetensors");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_ST_ERROR(bytes, fragment)                                      \
  do {                                                                        \
    std::string msg_ = parse_error(bytes);                                    \
    EXPECT_NE(msg_.find(fragment), std::string::npos) << "message: " << msg_; \
    EXPECT_EQ(msg_.rfind("x.safetensors: ", 0), 0u) << "message: " << msg_;   \
    EXPECT_EQ(msg_.find('\n'), std::string::npos) << msg_;                    \
  } while (0)

TEST(Safetensors, LlamaTinyModel) {
  BRAID_REQUIRE_ASSET(path, "hf/llama-tiny/model.safetensors");
  auto st = SafetensorsFile::open(path);
  EXPECT_EQ(st->label(), path);
  EXPECT_EQ(st->metadata().at("format"), "pt");
  // lm_head, embed_tokens, final norm + 9 per layer x 3 layers.
  ASSERT_EQ(st->tensors().size(), 30u);
  for (size_t i = 1; i < st->tensors().size(); ++i)
    EXPECT_GT(st->tensors()[i].data, st->tensors()[i - 1].data);  // sorted by offset
  EXPECT_EQ(st->tensors()[0].name, "lm_head.weight");

  const StTensor& emb = st->get("model.embed_tokens.weight");
  EXPECT_EQ(emb.dtype, "F32");
  EXPECT_EQ(emb.shape, (std::vector<int64_t>{320, 64}));
  EXPECT_EQ(emb.numel(), 320 * 64);
  EXPECT_EQ(emb.nbytes, 320u * 64 * 4);
  std::vector<float> e = st_to_f32(emb);
  ASSERT_EQ(e.size(), 320u * 64);
  EXPECT_EQ(e[0], 0.0f);  // padding row
  EXPECT_FLOAT_EQ(e[64], -0.05638971924781799f);

  const StTensor& k = st->get("model.layers.2.self_attn.k_proj.weight");
  EXPECT_EQ(k.shape, (std::vector<int64_t>{32, 64}));  // 4 KV heads x head_dim 8, by hidden 64
  std::vector<float> kf = st_to_f32(k);
  EXPECT_FLOAT_EQ(kf[0], -0.3694143295288086f);
  EXPECT_FLOAT_EQ(kf[2], -0.12427239865064621f);
  EXPECT_EQ(st->get("model.norm.weight").shape, (std::vector<int64_t>{64}));
  EXPECT_EQ(st->find("model.layers.3.mlp.up_proj.weight"), nullptr);
  try {
    st->get("nope");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), path + ": no tensor nope");
  }
  EXPECT_THROW(st_to_i32(emb), Error);
}

TEST(Safetensors, LlamaTinyReference) {
  BRAID_REQUIRE_ASSET(path, "hf/llama-tiny/reference.safetensors");
  auto st = SafetensorsFile::open(path);
  const StTensor& logits = st->get("logits");
  EXPECT_EQ(logits.dtype, "F32");
  EXPECT_EQ(logits.shape, (std::vector<int64_t>{12, 320}));
  std::vector<float> l = st_to_f32(logits);
  ASSERT_EQ(l.size(), 12u * 320);
  EXPECT_FLOAT_EQ(l[0], -1.4247406721115112f);
  EXPECT_FLOAT_EQ(l[1], 0.9243177175521851f);
  EXPECT_FLOAT_EQ(l[319], 0.4573385715484619f);
  EXPECT_FLOAT_EQ(l[11 * 320 + 319], -0.09751910716295242f);
  EXPECT_EQ(st->get("greedy_logits").shape, (std::vector<int64_t>{36, 320}));
  const StTensor& ids = st->get("input_ids");
  EXPECT_EQ(ids.dtype, "I32");
  EXPECT_EQ(st_to_i32(ids), (std::vector<int32_t>{1, 17, 42, 99, 7, 250, 3, 88, 64, 200, 5, 31}));
  std::vector<int32_t> greedy = st_to_i32(st->get("greedy_ids"));
  ASSERT_EQ(greedy.size(), 36u);
  EXPECT_EQ(greedy[12], 71);
  EXPECT_EQ(greedy[35], 281);
  EXPECT_THROW(st_to_f32(ids), Error);
}

TEST(Safetensors, EveryHfAssetParses) {
  const char* files[] = {"hf/gpt2-tiny/model.safetensors",
                         "hf/gpt2-tiny/reference.safetensors",
                         "hf/llama-tiny-lora/adapter_model.safetensors",
                         "hf/roberta-tiny-cls/model.safetensors",
                         "hf/t5-tiny/model.safetensors",
                         "hf/clip-vision-tiny/model.safetensors",
                         "hf/llama-tiny-train/reference.safetensors"};
  int seen = 0;
  for (const char* rel : files) {
    std::string p = test::asset(rel);
    if (p.empty()) continue;
    auto st = SafetensorsFile::open(p);
    EXPECT_FALSE(st->tensors().empty()) << rel;
    for (const StTensor& t : st->tensors()) EXPECT_EQ(t.nbytes, t.numel() * st_dtype_size(t.dtype)) << t.name;
    ++seen;
  }
  if (seen == 0) GTEST_SKIP() << "no hf assets";
}

TEST(Safetensors, ConversionsOfEveryDtype) {
  // One file holding a small tensor of each convertible dtype.
  std::vector<uint8_t> data;
  auto put = [&](const void* p, size_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    data.insert(data.end(), b, b + n);
  };
  float f32[2] = {1.5f, -2.0f};
  uint16_t f16[2] = {f32_to_f16(0.5f), f32_to_f16(-65504.0f)};
  uint16_t bf16[2] = {f32_to_bf16(3.0f), f32_to_bf16(-0.125f)};
  double f64[2] = {1e-3, 7.0};
  int64_t i64[2] = {-5, 2147483647};
  int16_t i16[2] = {-32768, 32767};
  int8_t i8[2] = {-128, 127};
  uint8_t u8[2] = {0, 255};
  int64_t big[1] = {int64_t{1} << 31};
  put(f32, 8), put(f16, 4), put(bf16, 4), put(f64, 16), put(i64, 16), put(i16, 4), put(i8, 2), put(u8, 2),
      put(big, 8);
  std::string header = R"({"f32":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                       R"("f16":{"dtype":"F16","shape":[2],"data_offsets":[8,12]},)"
                       R"("bf16":{"dtype":"BF16","shape":[1,2],"data_offsets":[12,16]},)"
                       R"("f64":{"dtype":"F64","shape":[2],"data_offsets":[16,32]},)"
                       R"("i64":{"dtype":"I64","shape":[2],"data_offsets":[32,48]},)"
                       R"("i16":{"dtype":"I16","shape":[2],"data_offsets":[48,52]},)"
                       R"("i8":{"dtype":"I8","shape":[2],"data_offsets":[52,54]},)"
                       R"("u8":{"dtype":"U8","shape":[2],"data_offsets":[54,56]},)"
                       R"("big":{"dtype":"I64","shape":[],"data_offsets":[56,64]},)"
                       R"("empty":{"dtype":"F32","shape":[0,4],"data_offsets":[64,64]},)"
                       R"("__metadata__":{"a":"b"}})";
  std::vector<uint8_t> file = st_file(header, data);
  auto st = SafetensorsFile::parse(file.data(), file.size(), "mem");
  EXPECT_EQ(st->metadata().at("a"), "b");
  EXPECT_EQ(st_to_f32(st->get("f32")), (std::vector<float>{1.5f, -2.0f}));
  EXPECT_EQ(st_to_f32(st->get("f16")), (std::vector<float>{0.5f, -65504.0f}));
  EXPECT_EQ(st_to_f32(st->get("bf16")), (std::vector<float>{3.0f, -0.125f}));
  EXPECT_EQ(st_to_f32(st->get("f64")), (std::vector<float>{1e-3f, 7.0f}));
  EXPECT_EQ(st_to_i32(st->get("i64")), (std::vector<int32_t>{-5, 2147483647}));
  EXPECT_EQ(st_to_i32(st->get("i16")), (std::vector<int32_t>{-32768, 32767}));
  EXPECT_EQ(st_to_i32(st->get("i8")), (std::vector<int32_t>{-128, 127}));
  EXPECT_EQ(st_to_i32(st->get("u8")), (std::vector<int32_t>{0, 255}));
  EXPECT_EQ(st->get("big").numel(), 1);
  EXPECT_THROW(st_to_i32(st->get("big")), Error);  // 2^31 does not fit
  EXPECT_EQ(st->get("empty").numel(), 0);
  EXPECT_TRUE(st_to_f32(st->get("empty")).empty());
  EXPECT_EQ(st_dtype_size("BF16"), 2u);
  EXPECT_EQ(st_dtype_size("Q4"), 0u);
}

TEST(SafetensorsBad, FramingAndJson) {
  EXPECT_ST_ERROR({}, "empty file");
  EXPECT_ST_ERROR((std::vector<uint8_t>{2, 0, 0}), "truncated file");
  EXPECT_ST_ERROR((std::vector<uint8_t>{'G', 'G', 'U', 'F', 3, 0, 0, 0, 0, 0}), "GGUF file");
  EXPECT_ST_ERROR((std::vector<uint8_t>{'{', '"', 'a', '"', ':', '1', '}', '\n', ' '}), "it is JSON text");
  EXPECT_ST_ERROR(st_file("{}", {}, uint64_t{200} << 20), "over 100 MB");
  EXPECT_ST_ERROR(st_file("{}", {}, ~uint64_t{0} - 1), "over 100 MB");
  EXPECT_ST_ERROR(st_file("{}", {}, 3), "truncated file (header of 3 bytes");
  EXPECT_ST_ERROR(st_file("", {}), "not a JSON object");
  EXPECT_ST_ERROR(st_file("[1,2]"), "not a JSON object");
  EXPECT_ST_ERROR(st_file("{\"a\": "), "not valid JSON");
  EXPECT_ST_ERROR(st_file("{} trailing"), "not valid JSON");
  EXPECT_ST_ERROR(st_file("{\"a\":\"\xff\"}"), "not valid JSON");
  EXPECT_ST_ERROR(st_file(std::string("{\"a\":") + std::string(100000, '[') + std::string(100000, ']') + "}"),
                  "nests deeper");
  EXPECT_EQ(parse_error(st_file("{}")), "");
  EXPECT_EQ(parse_error(st_file("{}   ")), "");  // HF pads the header with spaces
}

TEST(SafetensorsBad, TensorEntries) {
  std::vector<uint8_t> d16(16);
  auto one = [&](const std::string& entry) { return st_file("{\"t\":" + entry + "}", d16); };
  EXPECT_EQ(parse_error(one(R"({"dtype":"F32","shape":[2,2],"data_offsets":[0,16]})")), "");
  EXPECT_ST_ERROR(one("7"), "tensor 't' is not a JSON object");
  EXPECT_ST_ERROR(one(R"({"shape":[4],"data_offsets":[0,16]})"), "no dtype");
  EXPECT_ST_ERROR(one(R"({"dtype":"F32","data_offsets":[0,16]})"), "no shape");
  EXPECT_ST_ERROR(one(R"({"dtype":"F32","shape":[4]})"), "no data_offsets");
  EXPECT_ST_ERROR(one(R"({"dtype":"F32","shape":[4],"data_offsets":[0]})"), "no data_offsets");
  EXPECT_ST_ERROR(one(R"({"dtype":"Q4","shape":[4],"data_offsets":[0,16]})"), "unknown dtype 'Q4'");
  EXPECT_ST_ERROR(one(R"({"dtype":"F32","shape":[-4],"data_offsets":[0,16]})"), "negative");
  EXPECT_ST_ERROR(one(R"({"dtype":"F32","shape":[4.0],"data_offsets":[0,16]})"),
                  "not a non-negative integer");
  EXPECT_ST_ERROR(one(R"({"dtype":"F32","shape":["4"],"data_offsets":[0,16]})"),
                  "not a non-negative integer");
  EXPECT_ST_ERROR(one(R"({"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16]})"),
                  "too large");
  EXPECT_ST_ERROR(one(R"({"dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,16]})"),
                  "too large");
  EXPECT_ST_ERROR(one(R"({"dtype":"F32","shape":[4],"data_offsets":[0,12]})"), "needs 16");
  EXPECT_ST_ERROR(one(R"({"dtype":"F32","shape":[4],"data_offsets":[16,0]})"), "end before they begin");
  EXPECT_ST_ERROR(one(R"({"dtype":"F32","shape":[4],"data_offsets":[4,20]})"), "runs past the 16-byte");
  EXPECT_ST_ERROR(one(R"({"dtype":"F32","shape":[4],"data_offsets":[-1,15]})"), "negative");
  EXPECT_ST_ERROR(one(R"({"dtype":"F32","shape":[4],"data_offsets":[0,18446744073709551615]})"), "runs past");
  EXPECT_ST_ERROR(st_file(R"({"__metadata__":{"a":1}})"), "__metadata__ value 'a' is not a string");
  EXPECT_ST_ERROR(st_file(R"({"__metadata__":[]})"), "__metadata__ is not a JSON object");
  EXPECT_ST_ERROR(st_file(R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                          R"("a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                          d16),
                  "header names 'a' twice");
  EXPECT_ST_ERROR(st_file(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                          R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                          d16),
                  "tensors 'a' and 'b' overlap");
  EXPECT_ST_ERROR(st_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                          R"("b":{"dtype":"U8","shape":[1],"data_offsets":[15,16]}})",
                          d16),
                  "overlap");
  // Empty tensors own no bytes and overlap nothing.
  EXPECT_EQ(parse_error(st_file(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]},)"
                                R"("b":{"dtype":"U8","shape":[0],"data_offsets":[8,8]}})",
                                d16)),
            "");
}

// Every proper prefix of a real file is an error, never a crash.
TEST(SafetensorsBad, EveryPrefixOfARealFile) {
  BRAID_REQUIRE_ASSET(path, "hf/llama-tiny/reference.safetensors");
  std::vector<uint8_t> bytes = slurp(path);
  ASSERT_EQ(parse_error(bytes), "");
  for (size_t n = 0; n < bytes.size(); n += (n < 400 ? 1 : 97)) {
    std::string msg = parse_error(std::vector<uint8_t>(bytes.begin(), bytes.begin() + n));
    EXPECT_FALSE(msg.empty()) << n;
    EXPECT_EQ(msg.rfind("x.safetensors: ", 0), 0u) << msg;
  }
}

TEST(SafetensorsBad, RandomCorruption) {
  BRAID_REQUIRE_ASSET(path, "hf/llama-tiny/reference.safetensors");
  std::vector<uint8_t> bytes = slurp(path);
  bytes.resize(8 + 288 + 64);  // header + a little data keeps each iteration cheap
  uint64_t len = 288;
  std::memcpy(bytes.data(), &len, 8);
  std::string header(bytes.begin() + 8, bytes.begin() + 8 + 288);
  std::mt19937 rng(99);
  for (int iter = 0; iter < 5000; ++iter) {
    std::vector<uint8_t> b = bytes;
    int flips = 1 + static_cast<int>(rng() % 3);
    for (int k = 0; k < flips; ++k) {
      size_t at = rng() % (8 + 288);
      b[at] =
          (rng() % 2) ? static_cast<uint8_t>(rng()) : static_cast<uint8_t>("0123456789[]{},:\"-"[rng() % 18]);
    }
    parse_error(b);  // must not crash; usually an error (the data is cut short)
  }
}

}  // namespace
}  // namespace braid
