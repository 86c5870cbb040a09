// GGUF reader and writer: real files from the assets, round trips, and hostile input.
#include <gtest/gtest.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "braid/error.h"
#include "braid/gguf.h"
#include "test_util.h"

namespace braid {
namespace {

std::vector<uint8_t> slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

void spit(const std::string& path, const std::vector<uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// Parses `bytes` from a heap copy of exactly that size (so ASan sees any overread) and
// returns the error message, or "" when it parsed.
std::string parse_error(const std::vector<uint8_t>& bytes) {
  auto copy = std::make_unique<uint8_t[]>(bytes.size() + 1);
  if (!bytes.empty()) std::memcpy(copy.get(), bytes.data(), bytes.size());
  try {
    GgufFile::parse(copy.get(), bytes.size(), "x.gguf");
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_GGUF_ERROR(bytes, fragment)                                    \
  do {                                                                        \
    std::string msg_ = parse_error(bytes);                                    \
    EXPECT_NE(msg_.find(fragment), std::string::npos) << "message: " << msg_; \
    EXPECT_EQ(msg_.rfind("x.gguf: ", 0), 0u) << "message: " << msg_;          \
    EXPECT_EQ(msg_.find('\n'), std::string::npos) << msg_;                    \
  } while (0)

// Builds GGUF bytes field by field, for files the writer would never produce.
class Raw {
 public:
  Raw& u8(uint8_t v) { return put(v); }
  Raw& u32(uint32_t v) { return put(v); }
  Raw& u64(uint64_t v) { return put(v); }
  Raw& str(const std::string& s) {
    u64(s.size());
    b_.insert(b_.end(), s.begin(), s.end());
    return *this;
  }
  Raw& header(uint64_t n_tensors, uint64_t n_kv, uint32_t version = 3) {
    b_.insert(b_.end(), {'G', 'G', 'U', 'F'});
    return u32(version).u64(n_tensors).u64(n_kv);
  }
  Raw& kv_u32(const std::string& key, uint32_t v) { return str(key).u32(4).u32(v); }
  // One tensor info: name, dims, type, offset.
  Raw& info(const std::string& name, std::vector<uint64_t> ne, uint32_t type, uint64_t offset) {
    str(name).u32(static_cast<uint32_t>(ne.size()));
    for (uint64_t n : ne) u64(n);
    return u32(type).u64(offset);
  }
  Raw& pad(size_t a = 32) {
    while (b_.size() % a) b_.push_back(0);
    return *this;
  }
  Raw& zeros(size_t n) {
    b_.resize(b_.size() + n);
    return *this;
  }
  const std::vector<uint8_t>& bytes() const { return b_; }

 private:
  template <class T>
  Raw& put(T v) {
    uint8_t b[sizeof(T)];
    std::memcpy(b, &v, sizeof(T));
    b_.insert(b_.end(), b, b + sizeof(T));
    return *this;
  }
  std::vector<uint8_t> b_;
};

// ---------------------------------------------------------------- real files

TEST(GgufRead, Stories260K) {
  BRAID_REQUIRE_ASSET(path, "models/stories260K.gguf");
  auto g = GgufFile::open(path);
  EXPECT_EQ(g->version(), 3u);
  EXPECT_EQ(g->label(), path);
  EXPECT_EQ(g->get_str("general.architecture"), "llama");
  EXPECT_EQ(g->get_u64("llama.block_count"), 5u);
  EXPECT_EQ(g->get_u64("llama.embedding_length"), 64u);
  EXPECT_EQ(g->get_u64("llama.feed_forward_length"), 172u);
  EXPECT_EQ(g->get_u64("llama.attention.head_count"), 8u);
  EXPECT_EQ(g->get_u64("llama.attention.head_count_kv"), 4u);
  EXPECT_EQ(g->get_u64("llama.context_length"), 2048u);
  EXPECT_EQ(g->get_strs("tokenizer.ggml.tokens").size(), 512u);
  EXPECT_EQ(g->get_floats("tokenizer.ggml.scores").size(), 512u);
  EXPECT_EQ(g->get_ints("tokenizer.ggml.token_type").size(), 512u);
  EXPECT_EQ(g->alignment(), 32u);
  EXPECT_EQ(g->data_offset() % 32, 0u);
  // 9 tensors per layer + token_embd, output_norm, output.
  ASSERT_EQ(g->tensors().size(), 48u);

  const Tensor& emb = g->tensor("token_embd.weight");
  EXPECT_EQ(emb.type, DType::F32);
  EXPECT_EQ(emb.n_dims, 2);
  EXPECT_EQ(emb.ne[0], 64);
  EXPECT_EQ(emb.ne[1], 512);
  EXPECT_EQ(emb.nbytes, 64u * 512 * 4);
  EXPECT_EQ(emb.shape_string(), "[64, 512]");
  EXPECT_EQ(g->tensor("blk.0.ffn_gate.weight").ne[0], 64);
  EXPECT_EQ(g->tensor("blk.0.ffn_gate.weight").ne[1], 172);
  EXPECT_EQ(g->tensor("blk.4.ffn_down.weight").ne[0], 172);
  EXPECT_EQ(g->tensor("blk.4.attn_k.weight").ne[1], 32);  // 4 KV heads x head_dim 8
  EXPECT_EQ(g->tensor("output_norm.weight").n_dims, 1);
  EXPECT_EQ(g->find_tensor("blk.5.attn_q.weight"), nullptr);
  EXPECT_THROW(g->tensor("nope"), Error);

  // The embedding is the same bytes as in llama2.c's checkpoint (after its 7-int header).
  BRAID_REQUIRE_ASSET(bin, "models/stories260K.bin");
  std::vector<uint8_t> ck = slurp(bin);
  ASSERT_GE(ck.size(), 28 + emb.nbytes);
  EXPECT_EQ(std::memcmp(ck.data() + 28, emb.data, emb.nbytes), 0);
}

TEST(GgufRead, TypedGetters) {
  BRAID_REQUIRE_ASSET(path, "models/stories260K.gguf");
  auto g = GgufFile::open(path);
  EXPECT_EQ(g->get_i64("llama.block_count"), 5);
  EXPECT_EQ(g->get_f64("llama.block_count"), 5.0);
  EXPECT_NEAR(g->get_f64("llama.attention.layer_norm_rms_epsilon"), 1e-5, 1e-9);
  EXPECT_EQ(g->get_u64("missing.key", 7), 7u);
  EXPECT_EQ(g->get_str("missing.key", "d"), "d");
  EXPECT_EQ(g->get_bool("missing.key", true), true);
  try {
    g->get_u64("missing.key");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), path + ": missing metadata key missing.key");
  }
  try {
    g->get_u64("general.architecture");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("has type string, expected"), std::string::npos) << e.what();
  }
  EXPECT_THROW(g->get_strs("tokenizer.ggml.scores"), Error);
  EXPECT_THROW(g->get_str("tokenizer.ggml.tokens"), Error);
}

TEST(GgufRead, VocabFilesLoadFast) {
  BRAID_REQUIRE_ASSET(spm, "vocab/ggml-vocab-llama-spm.gguf");
  BRAID_REQUIRE_ASSET(gpt2, "vocab/ggml-vocab-gpt-2.gguf");
  auto t0 = std::chrono::steady_clock::now();
  auto a = GgufFile::open(spm);
  auto b = GgufFile::open(gpt2);
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(ms, 2000.0);  // tens of ms in practice; the bound only catches pathologies
  std::printf("two vocab GGUFs parsed in %.1f ms\n", ms);
  EXPECT_EQ(a->get_str("tokenizer.ggml.model"), "llama");
  EXPECT_EQ(a->get_strs("tokenizer.ggml.tokens").size(), 32000u);
  EXPECT_EQ(a->get_strs("tokenizer.ggml.tokens")[1], "<s>");
  EXPECT_TRUE(a->tensors().empty());
  EXPECT_EQ(b->get_str("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(b->get_strs("tokenizer.ggml.tokens").size(), 50257u);
  EXPECT_EQ(b->get_strs("tokenizer.ggml.merges").size(), 50000u);
  EXPECT_EQ(b->get_strs("tokenizer.ggml.merges")[0], "\xC4\xA0 t");
}

// A 128k-entry token array (Llama 3 sized) must parse in milliseconds, not seconds.
TEST(GgufRead, LargeStringArrayIsFast) {
  std::vector<std::string> toks;
  for (int i = 0; i < 128256; ++i) toks.push_back("tok" + std::to_string(i));
  GgufWriter w;
  w.set("tokenizer.ggml.tokens", GgufValue::string_array(toks));
  std::string path = test::temp_dir() + "/big.gguf";
  w.write(path);
  auto t0 = std::chrono::steady_clock::now();
  auto g = GgufFile::open(path);
  double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  std::printf("128k-token array parsed in %.1f ms\n", ms);
  EXPECT_LT(ms, 1000.0);
  EXPECT_EQ(g->get_strs("tokenizer.ggml.tokens"), toks);
}

// ---------------------------------------------------------------- round trips

struct Sample {
  GgufWriter w;
  std::vector<float> f32 = std::vector<float>(3 * 8);
  std::vector<uint8_t> q8 = std::vector<uint8_t>(2 * 34);
  std::vector<uint8_t> q4k = std::vector<uint8_t>(144);

  explicit Sample(uint32_t alignment = 32) {
    for (size_t i = 0; i < f32.size(); ++i) f32[i] = 0.5f * static_cast<float>(i) - 3;
    for (size_t i = 0; i < q8.size(); ++i) q8[i] = static_cast<uint8_t>(i * 7);
    for (size_t i = 0; i < q4k.size(); ++i) q4k[i] = static_cast<uint8_t>(255 - i);
    w.set("general.architecture", GgufValue::string("llama"));
    w.set("general.name", GgufValue::string(std::string("nul\0inside", 10)));
    w.set("a.u32", GgufValue::u32(4000000000u));
    w.set("a.i32", GgufValue::i32(-5));
    w.set("a.u64", GgufValue::u64(~uint64_t{0}));
    w.set("a.i64", GgufValue::i64(-(int64_t{1} << 40)));
    w.set("a.f32", GgufValue::f32(0.25f));
    w.set("a.f64", GgufValue::f64(1e-300));
    w.set("a.bool", GgufValue::boolean(true));
    w.set("a.u8", [] {
      GgufValue v;
      v.type = GgufType::UINT8;
      v.i = 200;
      return v;
    }());
    w.set("a.i16", [] {
      GgufValue v;
      v.type = GgufType::INT16;
      v.i = -300;
      return v;
    }());
    w.set("arr.str", GgufValue::string_array({"", "a", "\xE2\x96\x81hello"}));
    w.set("arr.f32", GgufValue::f32_array({1.5f, -2.25f}));
    w.set("arr.i32", GgufValue::i32_array({1, -2, 3}));
    w.set("arr.u8", GgufValue::int_array(GgufType::UINT8, {0, 255}));
    w.set("arr.i64", GgufValue::int_array(GgufType::INT64, {INT64_MIN, INT64_MAX}));
    w.set("arr.bool", GgufValue::int_array(GgufType::BOOL, {1, 0, 1}));
    w.set("arr.empty", GgufValue::string_array({}));
    w.set_alignment(alignment);
    w.add_tensor("f32", DType::F32, {8, 3}, f32.data(), f32.size() * 4);
    w.add_tensor("q8", DType::Q8_0, {64}, q8.data(), q8.size());
    w.add_tensor("empty", DType::F16, {0, 5}, nullptr, 0);
    w.add_tensor("q4k", DType::Q4_K, {256, 1, 1, 1}, std::vector<uint8_t>(q4k));
    w.add_tensor("scalar", DType::I32, {}, std::vector<uint8_t>{1, 2, 3, 4});
  }
};

void expect_sample(const GgufFile& g, const Sample& s, uint32_t alignment) {
  EXPECT_EQ(g.alignment(), alignment);
  EXPECT_EQ(g.get_str("general.name"), std::string("nul\0inside", 10));
  EXPECT_EQ(g.get_u64("a.u32"), 4000000000u);
  EXPECT_EQ(g.get_i64("a.i32"), -5);
  EXPECT_EQ(g.get_u64("a.u64"), ~uint64_t{0});
  EXPECT_THROW(g.get_i64("a.u64"), Error);  // does not fit
  EXPECT_THROW(g.get_u64("a.i32"), Error);  // negative
  EXPECT_EQ(g.get_i64("a.i64"), -(int64_t{1} << 40));
  EXPECT_EQ(g.get_f64("a.f32"), 0.25);
  EXPECT_EQ(g.get_f64("a.f64"), 1e-300);
  EXPECT_EQ(g.get_bool("a.bool", false), true);
  EXPECT_EQ(g.get_u64("a.u8"), 200u);
  EXPECT_EQ(g.get_i64("a.i16"), -300);
  EXPECT_EQ(g.find("a.i16")->type, GgufType::INT16);
  EXPECT_EQ(g.get_strs("arr.str"), (std::vector<std::string>{"", "a", "\xE2\x96\x81hello"}));
  EXPECT_EQ(g.get_floats("arr.f32"), (std::vector<double>{1.5, -2.25}));
  EXPECT_EQ(g.get_ints("arr.i32"), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(g.get_ints("arr.u8"), (std::vector<int64_t>{0, 255}));
  EXPECT_EQ(g.get_ints("arr.i64"), (std::vector<int64_t>{INT64_MIN, INT64_MAX}));
  EXPECT_EQ(g.get_ints("arr.bool"), (std::vector<int64_t>{1, 0, 1}));
  EXPECT_EQ(g.find("arr.bool")->elem, GgufType::BOOL);
  EXPECT_EQ(g.find("arr.empty")->array_size(), 0u);
  EXPECT_EQ(g.find("arr.str")->array_size(), 3u);

  ASSERT_EQ(g.tensors().size(), 5u);
  EXPECT_EQ(g.tensors()[0].name, "f32");
  EXPECT_EQ(g.tensors()[4].name, "scalar");
  const Tensor& f = g.tensor("f32");
  EXPECT_EQ(f.n_dims, 2);
  EXPECT_EQ(f.ne[0], 8);
  EXPECT_EQ(f.ne[1], 3);
  ASSERT_EQ(f.nbytes, s.f32.size() * 4);
  EXPECT_EQ(std::memcmp(f.data, s.f32.data(), f.nbytes), 0);
  const Tensor& q8 = g.tensor("q8");
  EXPECT_EQ(q8.type, DType::Q8_0);
  ASSERT_EQ(q8.nbytes, s.q8.size());
  EXPECT_EQ(std::memcmp(q8.data, s.q8.data(), q8.nbytes), 0);
  const Tensor& q4k = g.tensor("q4k");
  EXPECT_EQ(q4k.n_dims, 4);
  ASSERT_EQ(q4k.nbytes, 144u);
  EXPECT_EQ(std::memcmp(q4k.data, s.q4k.data(), 144), 0);
  EXPECT_EQ(g.tensor("empty").nelements(), 0);
  EXPECT_EQ(g.tensor("empty").nbytes, 0u);
  EXPECT_EQ(g.tensor("scalar").n_dims, 0);
  EXPECT_EQ(g.tensor("scalar").nbytes, 4u);
  for (const Tensor& t : g.tensors()) {
    if (t.nbytes) {
      EXPECT_EQ(static_cast<size_t>(t.data - g.tensors()[0].data) % alignment, 0u) << t.name;
    }
  }
}

TEST(GgufWrite, RoundTrip) {
  for (uint32_t alignment : {32u, 64u, 1u, 4096u}) {
    Sample s(alignment);
    std::string path = test::temp_dir() + "/rt.gguf";
    s.w.write(path);
    EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
    auto g = GgufFile::open(path);
    EXPECT_EQ(g->version(), 3u);
    expect_sample(*g, s, alignment);
    EXPECT_EQ(g->data_offset() % alignment, 0u);
    EXPECT_EQ(g->has("general.alignment"), alignment != 32);
    // Mapped data is aligned in memory too (mmap is page-aligned).
    EXPECT_EQ(reinterpret_cast<uintptr_t>(g->tensor("q8").data) % std::min(alignment, 4096u), 0u);

    // Copying metadata into a fresh writer reproduces it (parse() path this time).
    GgufWriter w2;
    w2.copy_metadata(*g);
    for (const Tensor& t : g->tensors())
      w2.add_tensor(t.name, t.type, std::vector<int64_t>(t.ne, t.ne + t.n_dims), t.data, t.nbytes);
    std::string path2 = test::temp_dir() + "/rt2.gguf";
    w2.write(path2);
    std::vector<uint8_t> a = slurp(path), b = slurp(path2);
    EXPECT_EQ(a, b) << "alignment " << alignment;
    auto g2 = GgufFile::parse(b.data(), b.size(), "copy");
    expect_sample(*g2, s, alignment);

    // GGUF v2 has the same (little-endian) layout.
    b[4] = 2;
    auto v2 = GgufFile::parse(b.data(), b.size(), "v2");
    EXPECT_EQ(v2->version(), 2u);
    expect_sample(*v2, s, alignment);
  }
}

TEST(GgufWrite, SetReplacesInPlaceAndRemove) {
  GgufWriter w;
  w.set("a", GgufValue::u32(1));
  w.set("b", GgufValue::u32(2));
  w.set("a", GgufValue::string("x"));
  w.set("c", GgufValue::u32(3));
  w.remove("c");
  w.remove("not-there");
  std::string path = test::temp_dir() + "/set.gguf";
  w.write(path);
  auto g = GgufFile::open(path);
  ASSERT_EQ(g->metadata().size(), 2u);
  EXPECT_EQ(g->metadata()[0].first, "a");
  EXPECT_EQ(g->get_str("a"), "x");
  EXPECT_EQ(g->metadata()[1].first, "b");
  EXPECT_TRUE(g->tensors().empty());
}

TEST(GgufWrite, ProgressAndAtomicReplace) {
  Sample s;
  std::string path = test::temp_dir() + "/p.gguf";
  spit(path, {1, 2, 3});
  std::vector<std::pair<uint64_t, uint64_t>> calls;
  s.w.write(path, [&](uint64_t done, uint64_t total) { calls.emplace_back(done, total); });
  ASSERT_FALSE(calls.empty());
  for (size_t i = 1; i < calls.size(); ++i) EXPECT_GE(calls[i].first, calls[i - 1].first);
  EXPECT_EQ(calls.back().first, calls.back().second);
  EXPECT_GE(calls.back().second, 96u + 68 + 144 + 4);
  EXPECT_NO_THROW(GgufFile::open(path));

  // A failing write (here: the callback throws) leaves the old file and no .tmp.
  std::string path2 = test::temp_dir() + "/p2.gguf";
  spit(path2, {9, 9});
  EXPECT_THROW(s.w.write(path2,
                         [](uint64_t done, uint64_t) {
                           if (done > 0) throw Error("cancelled");
                         }),
               Error);
  EXPECT_EQ(slurp(path2), (std::vector<uint8_t>{9, 9}));
  EXPECT_FALSE(std::filesystem::exists(path2 + ".tmp"));
  EXPECT_THROW(s.w.write(test::temp_dir() + "/no/such/dir/x.gguf"), Error);
}

TEST(GgufWrite, ValidatesInput) {
  GgufWriter w;
  std::vector<uint8_t> buf(1024);
  EXPECT_THROW(w.add_tensor("t", DType::F32, {4, 2}, buf.data(), 31), Error);  // needs 32
  EXPECT_THROW(w.add_tensor("t", DType::Q4_0, {16}, buf.data(), 9), Error);    // not a block multiple
  EXPECT_THROW(w.add_tensor("t", DType::F32, {1, 1, 1, 1, 1}, buf.data(), 4), Error);
  EXPECT_THROW(w.add_tensor("t", DType::F32, {-1}, buf.data(), 0), Error);
  EXPECT_THROW(w.add_tensor("", DType::F32, {1}, buf.data(), 4), Error);
  EXPECT_THROW(w.add_tensor("t", DType::F32, {1}, nullptr, 4), Error);
  w.add_tensor("t", DType::Q4_0, {32, 2}, buf.data(), 36);
  EXPECT_THROW(w.add_tensor("t", DType::F32, {1}, buf.data(), 4), Error);  // duplicate
  EXPECT_THROW(w.set_alignment(0), Error);
  EXPECT_THROW(w.set_alignment(48), Error);
  EXPECT_THROW(w.set("general.alignment", GgufValue::u32(3)), Error);
  EXPECT_THROW(w.set("general.alignment", GgufValue::string("32")), Error);
  EXPECT_THROW(w.set("", GgufValue::u32(3)), Error);
  GgufValue nested;
  nested.type = GgufType::ARRAY;
  nested.elem = GgufType::ARRAY;
  w.set("nested", nested);
  std::string path = test::temp_dir() + "/bad.gguf";
  EXPECT_THROW(w.write(path), Error);
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_FALSE(std::filesystem::exists(path + ".tmp"));
}

// ---------------------------------------------------------------- hostile input

TEST(GgufBad, EmptyAndMissingFiles) {
  std::string dir = test::temp_dir();
  spit(dir + "/empty.gguf", {});
  try {
    GgufFile::open(dir + "/empty.gguf");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()), dir + "/empty.gguf: empty file, not a GGUF model");
  }
  EXPECT_THROW(GgufFile::open(dir + "/missing.gguf"), Error);
  EXPECT_THROW(GgufFile::open(dir), Error);
}

TEST(GgufBad, MagicVersionEndianness) {
  EXPECT_GGUF_ERROR((std::vector<uint8_t>{'G', 'G', 'M', 'L', 3, 0, 0, 0}), "not a GGUF file (bad magic)");
  EXPECT_GGUF_ERROR((std::vector<uint8_t>{'{', '"'}), "not a GGUF file (bad magic)");
  EXPECT_GGUF_ERROR((std::vector<uint8_t>{'G', 'G'}), "truncated file");
  EXPECT_GGUF_ERROR(Raw().header(0, 0, 1).bytes(), "version 1 is not supported");
  EXPECT_GGUF_ERROR(Raw().header(0, 0, 4).bytes(), "unsupported GGUF version 4");
  EXPECT_GGUF_ERROR(Raw().header(0, 0, 0x03000000).bytes(), "big-endian");
  EXPECT_EQ(parse_error(Raw().header(0, 0, 2).bytes()), "");
  EXPECT_EQ(parse_error(Raw().header(0, 0, 3).bytes()), "");
}

TEST(GgufBad, HugeCountsAndLengths) {
  // Huge counts reserve nothing up front; they fail where the entries run out.
  EXPECT_GGUF_ERROR(Raw().header(0, ~uint64_t{0}).bytes(),
                    "truncated file (metadata key 1 of 18446744073709551615 runs past the end)");
  EXPECT_GGUF_ERROR(Raw().header(uint64_t{1} << 60, 1).kv_u32("a", 1).bytes(),
                    "truncated file (tensor info 1 of 1152921504606846976 runs past the end)");
  EXPECT_GGUF_ERROR(Raw().header(0, 1).u64(~uint64_t{0}).u32(4).u32(1).bytes(),
                    "truncated file (metadata key 1 of 1");
  EXPECT_GGUF_ERROR(Raw().header(0, 1).str("k").u32(8).u64(uint64_t{1} << 62).bytes(), "string of");
  // An array count that cannot fit in the bytes left is refused before allocating.
  EXPECT_GGUF_ERROR(Raw().header(0, 1).str("k").u32(9).u32(8).u64(uint64_t{1} << 61).bytes(), "array of");
  EXPECT_GGUF_ERROR(Raw().header(0, 1).str("k").u32(9).u32(6).u64(~uint64_t{0}).bytes(), "array of");
  EXPECT_GGUF_ERROR(Raw().header(1, 0).u64(uint64_t{1} << 62).u32(0).u32(0).u64(0).bytes(), "string of");
}

TEST(GgufBad, BadMetadata) {
  EXPECT_GGUF_ERROR(Raw().header(0, 1).str("k").u32(13).u32(0).bytes(), "unknown value type 13");
  EXPECT_GGUF_ERROR(Raw().header(0, 1).str("k").u32(9).u32(99).u64(0).bytes(), "array of unknown type 99");
  EXPECT_GGUF_ERROR(Raw().header(0, 1).str("k").u32(7).u8(2).bytes(), "bool of value 2");
  EXPECT_GGUF_ERROR(Raw().header(0, 1).str("").u32(4).u32(0).bytes(), "empty name");
  EXPECT_GGUF_ERROR(Raw().header(0, 2).kv_u32("k", 1).kv_u32("k", 2).bytes(), "duplicate metadata key 'k'");
  EXPECT_GGUF_ERROR(Raw().header(0, 1).kv_u32("general.alignment", 48).bytes(), "general.alignment 48");
  EXPECT_GGUF_ERROR(Raw().header(0, 1).kv_u32("general.alignment", 0).bytes(), "general.alignment 0");
  EXPECT_GGUF_ERROR(Raw().header(0, 1).str("general.alignment").u32(8).str("32").bytes(),
                    "general.alignment has type string");
  // Nested arrays are validated and skipped, up to a depth bound.
  Raw ok;
  ok.header(0, 1).str("n").u32(9).u32(9).u64(2);
  ok.u32(4).u64(2).u32(1).u32(2);
  ok.u32(8).u64(1).str("s");
  auto g = GgufFile::parse(ok.bytes().data(), ok.bytes().size(), "n");
  EXPECT_EQ(g->find("n")->elem, GgufType::ARRAY);
  EXPECT_EQ(g->find("n")->array_size(), 0u);
  Raw deep;
  deep.header(0, 1).str("n").u32(9);
  for (int i = 0; i < 100; ++i) deep.u32(9).u64(1);
  deep.u32(4).u64(0);
  EXPECT_GGUF_ERROR(deep.bytes(), "nests arrays");
}

TEST(GgufBad, BadTensorInfos) {
  auto one = [](std::vector<uint64_t> ne, uint32_t type, uint64_t offset, size_t data) {
    return Raw().header(1, 0).info("t", std::move(ne), type, offset).pad().zeros(data).bytes();
  };
  EXPECT_EQ(parse_error(one({4, 2}, 0, 0, 32)), "");
  EXPECT_GGUF_ERROR(one({4, 2}, 99, 0, 32), "tensor 't' has unknown type id 99");
  EXPECT_GGUF_ERROR(one({4, 2}, 4, 0, 32), "unknown type id 4");  // Q4_2, removed from GGML
  EXPECT_GGUF_ERROR(one({1, 1, 1, 1, 1}, 0, 0, 32), "5 dimensions");
  EXPECT_GGUF_ERROR(one({uint64_t{1} << 32, uint64_t{1} << 32}, 0, 0, 32), "too many elements");
  EXPECT_GGUF_ERROR(one({~uint64_t{0}}, 0, 0, 32), "too many elements");
  EXPECT_GGUF_ERROR(one({uint64_t{1} << 62}, 0, 0, 32), "too large");  // bytes overflow
  EXPECT_GGUF_ERROR(one({uint64_t{1} << 40}, 0, 0, 32),
                    "4398046511104 bytes at data offset 0 run past the end");
  EXPECT_GGUF_ERROR(one({16}, 2, 0, 32), "not a multiple of q4_0's block size 32");
  EXPECT_GGUF_ERROR(one({4}, 0, 4, 32), "not a multiple of the alignment 32");
  EXPECT_GGUF_ERROR(one({4, 2}, 0, 0, 31), "run past the end");
  EXPECT_GGUF_ERROR(one({4, 2}, 0, 32, 32), "run past the end");
  EXPECT_GGUF_ERROR(one({4, 2}, 0, uint64_t{1} << 63, 32), "run past the end");
  EXPECT_GGUF_ERROR(Raw().header(1, 0).info("", {4}, 0, 0).pad().zeros(32).bytes(), "empty name");
  // Zero-element tensors are fine, even "at" the end of the data.
  EXPECT_EQ(parse_error(one({0, 3}, 0, 32, 32)), "");

  auto two = [](uint64_t off2, const std::string& name2) {
    return Raw().header(2, 0).info("a", {16}, 0, 0).info(name2, {16}, 0, off2).pad().zeros(128).bytes();
  };
  EXPECT_EQ(parse_error(two(64, "b")), "");
  EXPECT_GGUF_ERROR(two(32, "b"), "tensors 'a' and 'b' overlap");
  EXPECT_GGUF_ERROR(two(0, "b"), "overlap");
  EXPECT_GGUF_ERROR(two(64, "a"), "duplicate tensor name 'a'");
  // Overlap found even when the infos are out of order.
  auto rev = Raw().header(2, 0).info("a", {16}, 0, 64).info("b", {24}, 0, 0).pad().zeros(128).bytes();
  EXPECT_GGUF_ERROR(rev, "tensors 'b' and 'a' overlap");
}

TEST(GgufBad, MissingPaddingBeforeData) {
  // The infos end at byte 24+8+1+4+8+4+8 = 57; data would start at 64, past the end.
  std::vector<uint8_t> b = Raw().header(1, 0).info("t", {0}, 0, 0).bytes();
  EXPECT_GGUF_ERROR(b, "tensor data would start at byte 64");
}

// Every proper prefix of a valid file is an error (never a crash); the full file parses.
TEST(GgufBad, EveryPrefixOfAValidFile) {
  Sample s;
  std::string path = test::temp_dir() + "/prefix.gguf";
  s.w.write(path);
  std::vector<uint8_t> bytes = slurp(path);
  auto g = GgufFile::parse(bytes.data(), bytes.size(), "full");
  size_t needed = 0;  // the end of the last tensor's data: only trailing padding is optional
  for (const Tensor& t : g->tensors())
    needed = std::max(needed, static_cast<size_t>(t.data - bytes.data()) + t.nbytes);
  ASSERT_GT(needed, 300u);
  int errors = 0;
  std::set<std::string> kinds;  // the messages say where the file ends
  for (size_t n = 0; n < bytes.size(); ++n) {
    std::string msg = parse_error(std::vector<uint8_t>(bytes.begin(), bytes.begin() + n));
    if (n < needed) {
      EXPECT_FALSE(msg.empty()) << "prefix of " << n << " bytes parsed";
      EXPECT_EQ(msg.rfind("x.gguf: ", 0), 0u) << msg;
      errors += !msg.empty();
      kinds.insert(msg.substr(0, msg.find(" of ")));
    } else {
      EXPECT_EQ(msg, "") << n;
    }
  }
  EXPECT_EQ(errors, static_cast<int>(needed));
  EXPECT_TRUE(kinds.count("x.gguf: empty file, not a GGUF model"));
  EXPECT_TRUE(kinds.count("x.gguf: truncated file (header runs past the end)"));
  EXPECT_TRUE(kinds.count("x.gguf: truncated file (metadata key 1"));
  EXPECT_TRUE(kinds.count("x.gguf: truncated file (tensor info 2"));
  EXPECT_TRUE(
      kinds.count("x.gguf: truncated file (tensor data would start at byte 832, past the end at 831)"));
  EXPECT_TRUE(
      kinds.count("x.gguf: truncated file (tensor 'scalar': 4 bytes at data offset 352 run past the end"));
  EXPECT_EQ(parse_error(std::vector<uint8_t>(bytes.begin(), bytes.begin() + 200)),
            "x.gguf: truncated file (metadata key 6 of 18 ('a.i64') runs past the end)");
}

// Random byte corruption: every outcome is a parse or a braid::Error (run under ASan in CI).
TEST(GgufBad, RandomCorruption) {
  Sample s;
  std::string path = test::temp_dir() + "/corrupt.gguf";
  s.w.write(path);
  const std::vector<uint8_t> bytes = slurp(path);
  std::mt19937 rng(1234);
  int parsed = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    std::vector<uint8_t> b = bytes;
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      size_t at = rng() % b.size();
      switch (rng() % 3) {
        case 0:
          b[at] = static_cast<uint8_t>(rng());
          break;
        case 1:
          b[at] ^= static_cast<uint8_t>(1u << (rng() % 8));
          break;
        default:
          b[at] = (rng() % 2) ? 0xff : 0;
          break;
      }
    }
    parsed += parse_error(b).empty();
  }
  EXPECT_GT(parsed, 0);  // corruption in tensor data or string bytes still parses
}

}  // namespace
}  // namespace braid
