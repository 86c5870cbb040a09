// Tests of the quantized block formats (braid/quant.h):
//  - block layouts: hand-built blocks decode to the values ggml's dequantize_row_* gives
//    (expected values derived here from ggml-quants.c, not from braid's code);
//  - golden hashes of llama.cpp's own output (ggml_quantize_chunk / dequantize_row_* /
//    quantize_row_q8_*_ref of the ggml in node-llama-cpp 3.21.1) on deterministic data;
//  - quantize -> dequantize error bounds per type;
//  - every compiled SIMD target against the scalar reference: bit-exact on data where
//    all f32 arithmetic is exact, within a tight tolerance on random data, for odd row
//    counts and block counts that leave partial SIMD units;
//  - quant_matmul_tile bit-identical to quant_dot_rows;
//  - dot(row, x) against dequantize-then-f32-dot.
#include <gtest/gtest.h>
#include <hwy/targets.h>

#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "base/aligned_vector.h"
#include "braid/dtype.h"
#include "braid/error.h"
#include "braid/quant.h"
#include "tensor/quant_act.h"
#include "tensor/quant_blocks.h"
#include "tensor/quant_internal.h"

namespace braid {
namespace {

const DType kTypes[] = {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1,
                        DType::Q2_K, DType::Q3_K, DType::Q4_K, DType::Q5_K, DType::Q6_K};
// Types with AVX-512 kernels (on AVX3_DL, q2_K and q3_K run the AVX2 ones).
bool has_avx512_kernels(DType t) { return t != DType::Q2_K && t != DType::Q3_K; }

// Test data from integer arithmetic only, so it is bit-identical on every machine:
// uniform() is a multiple of 2^-19 in [-1, 1), bell() a sum of three (exact in f32).
struct Rng {
  uint64_t s;
  uint64_t next() {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    return s;
  }
  float uniform() {
    return static_cast<float>(static_cast<int32_t>(next() >> 44) - (1 << 19)) * (1.0f / (1 << 19));
  }
  float bell() { return uniform() + uniform() + uniform(); }
};

uint64_t fnv1a(const void* p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) {
    h ^= static_cast<const uint8_t*>(p)[i];
    h *= 1099511628211ull;
  }
  return h;
}

// A 64-byte aligned buffer for quantized activations.
struct ActBuf {
  std::vector<uint8_t> mem;
  size_t bytes = 0;
  ActBuf(DType t, int64_t k, int64_t n = 1) {
    bytes = quant_activation_bytes(t, k);
    mem.resize(bytes * n + 64);
  }
  void* at(int64_t i = 0) {
    return reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(mem.data()) + 63) / 64 * 64 + i * bytes);
  }
};

std::vector<float> dequant(DType t, const std::vector<uint8_t>& q, int64_t k) {
  std::vector<float> out(static_cast<size_t>(k));
  dequantize_row(t, q.data(), out.data(), k);
  return out;
}

void put16(uint8_t* p, uint16_t v) { std::memcpy(p, &v, 2); }

// ---------------------------------------------------------------- layouts

TEST(Quant, BlockSizesMatchGgml) {
  EXPECT_EQ(row_bytes(DType::Q8_0, 32), 34u);
  EXPECT_EQ(row_bytes(DType::Q4_0, 32), 18u);
  EXPECT_EQ(row_bytes(DType::Q4_1, 32), 20u);
  EXPECT_EQ(row_bytes(DType::Q5_0, 32), 22u);
  EXPECT_EQ(row_bytes(DType::Q5_1, 32), 24u);
  EXPECT_EQ(row_bytes(DType::Q4_K, 256), 144u);
  EXPECT_EQ(row_bytes(DType::Q5_K, 256), 176u);
  EXPECT_EQ(row_bytes(DType::Q6_K, 256), 210u);
  for (DType t : kTypes) EXPECT_TRUE(quant_supported(t)) << dtype_name(t);
  EXPECT_FALSE(quant_supported(DType::F32));
  EXPECT_FALSE(quant_supported(DType::Q8_K));
  EXPECT_FALSE(quant_supported(DType::I8));
  EXPECT_EQ(quant_activation_type(DType::Q4_0), DType::Q8_0);
  EXPECT_EQ(quant_activation_type(DType::Q6_K), DType::Q8_K);
}

// Expected values below follow ggml-quants.c's dequantize_row_* formulas.
TEST(Quant, KnownValuesQ8_0) {
  std::vector<uint8_t> b(34);
  put16(b.data(), 0x3800);  // 0.5
  for (int j = 0; j < 32; ++j) b[2 + j] = static_cast<uint8_t>(static_cast<int8_t>(j - 16));
  const auto v = dequant(DType::Q8_0, b, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(v[j], (j - 16) * 0.5f) << j;
  EXPECT_EQ(v[0], -8.0f);
  EXPECT_EQ(v[31], 7.5f);
}

TEST(Quant, KnownValuesQ4_0) {
  std::vector<uint8_t> b(18);
  put16(b.data(), 0x4000);  // 2.0
  for (int j = 0; j < 16; ++j) b[2 + j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  const auto v = dequant(DType::Q4_0, b, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(v[j], (j - 8) * 2.0f) << j;       // low nibble: element j
    EXPECT_EQ(v[16 + j], (7 - j) * 2.0f) << j;  // high nibble: element 16 + j
  }
  EXPECT_EQ(v[0], -16.0f);
  EXPECT_EQ(v[15], 14.0f);
  EXPECT_EQ(v[16], 14.0f);
  EXPECT_EQ(v[31], -16.0f);
}

TEST(Quant, KnownValuesQ4_1) {
  std::vector<uint8_t> b(20);
  put16(b.data(), 0x3800);      // d = 0.5
  put16(b.data() + 2, 0xBC00);  // m = -1
  for (int j = 0; j < 16; ++j) b[4 + j] = static_cast<uint8_t>((15 - j) | (j << 4));
  const auto v = dequant(DType::Q4_1, b, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(v[j], (15 - j) * 0.5f - 1.0f) << j;
    EXPECT_EQ(v[16 + j], j * 0.5f - 1.0f) << j;
  }
  EXPECT_EQ(v[0], 6.5f);
  EXPECT_EQ(v[31], 6.5f);
}

TEST(Quant, KnownValuesQ5_0) {
  std::vector<uint8_t> b(22);
  put16(b.data(), 0x3C00);          // 1.0
  const uint32_t qh = 0x0000FFFFu;  // 5th bit set for elements 0..15
  std::memcpy(b.data() + 2, &qh, 4);
  for (int j = 0; j < 16; ++j) b[6 + j] = static_cast<uint8_t>(j | (j << 4));
  const auto v = dequant(DType::Q5_0, b, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(v[j], static_cast<float>((j | 16) - 16)) << j;
    EXPECT_EQ(v[16 + j], static_cast<float>(j - 16)) << j;
  }
  EXPECT_EQ(v[5], 5.0f);
  EXPECT_EQ(v[20], -12.0f);
}

TEST(Quant, KnownValuesQ5_1) {
  std::vector<uint8_t> b(24);
  put16(b.data(), 0x3400);          // d = 0.25
  put16(b.data() + 2, 0x4000);      // m = 2
  const uint32_t qh = 0xFFFF0000u;  // 5th bit set for elements 16..31
  std::memcpy(b.data() + 4, &qh, 4);
  for (int j = 0; j < 16; ++j) b[8 + j] = static_cast<uint8_t>(1 | (2 << 4));
  const auto v = dequant(DType::Q5_1, b, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(v[j], 2.25f) << j;      // 1 * 0.25 + 2
    EXPECT_EQ(v[16 + j], 6.5f) << j;  // 18 * 0.25 + 2
  }
}

// q4_K / q5_K scales: sub-block j's 6-bit scale sc[j] and min m[j], packed as in
// quantize_row_q4_K_ref: bytes 0..3 hold sc[0..3] with sc[4..7]'s top 2 bits in bits
// 6-7, bytes 4..7 hold m[0..3] with m[4..7]'s top bits, bytes 8..11 the low nibbles of
// sc[4..7] (low) and m[4..7] (high).
constexpr int kSc[8] = {1, 2, 3, 4, 5, 6, 7, 63};
constexpr int kMin[8] = {0, 1, 2, 3, 4, 5, 6, 40};
const uint8_t kScales12[12] = {1, 2, 3, 0xC4, 0, 1, 2, 0x83, 0x45, 0x56, 0x67, 0x8F};

uint8_t kq_byte(int i) { return static_cast<uint8_t>((i % 16) | (((i / 8) % 16) << 4)); }

TEST(Quant, KnownValuesQ4_K) {
  std::vector<uint8_t> b(144);
  put16(b.data(), 0x3C00);      // d = 1
  put16(b.data() + 2, 0x3800);  // dmin = 0.5
  std::memcpy(b.data() + 4, kScales12, 12);
  for (int i = 0; i < 128; ++i) b[16 + i] = kq_byte(i);
  const auto v = dequant(DType::Q4_K, b, 256);
  for (int e = 0; e < 256; ++e) {
    // 32 quant bytes per 64 elements: low nibbles first (sub-block 2g), then high.
    const int g = e / 64, w = e % 64;
    const int q = w < 32 ? (kq_byte(32 * g + w) & 0xF) : (kq_byte(32 * g + w - 32) >> 4);
    const int s = 2 * g + (w >= 32);
    EXPECT_EQ(v[e], 1.0f * kSc[s] * q - 0.5f * kMin[s]) << e;
  }
  EXPECT_EQ(v[0], 0.0f);
  EXPECT_EQ(v[255], 925.0f);  // 63 * 15 - 0.5 * 40
}

TEST(Quant, KnownValuesQ5_K) {
  std::vector<uint8_t> b(176);
  put16(b.data(), 0x3C00);
  put16(b.data() + 2, 0x3800);
  std::memcpy(b.data() + 4, kScales12, 12);
  for (int l = 0; l < 32; ++l) b[16 + l] = l % 2 ? 0x55 : 0xAA;  // qh: bit s = 5th bit of sub-block s
  for (int i = 0; i < 128; ++i) b[48 + i] = kq_byte(i);
  const auto v = dequant(DType::Q5_K, b, 256);
  for (int e = 0; e < 256; ++e) {
    const int g = e / 64, w = e % 64, l = w % 32;
    const int s = 2 * g + (w >= 32);
    int q = w < 32 ? (kq_byte(32 * g + w) & 0xF) : (kq_byte(32 * g + w - 32) >> 4);
    if (((l % 2 ? 0x55 : 0xAA) >> s) & 1) q += 16;
    EXPECT_EQ(v[e], 1.0f * kSc[s] * q - 0.5f * kMin[s]) << e;
  }
  EXPECT_EQ(v[255], 925.0f);   // bit 7 of 0x55 is clear
  EXPECT_EQ(v[224], 1744.0f);  // (12 + 16) * 63 - 20
}

TEST(Quant, KnownValuesQ6_K) {
  std::vector<uint8_t> b(210);
  auto ql = [](int i) { return static_cast<uint8_t>((i * 7) & 0xFF); };
  auto qh = [](int i) { return static_cast<uint8_t>((i * 13) & 0xFF); };
  for (int i = 0; i < 128; ++i) b[i] = ql(i);
  for (int i = 0; i < 64; ++i) b[128 + i] = qh(i);
  for (int j = 0; j < 16; ++j) b[192 + j] = static_cast<uint8_t>(static_cast<int8_t>(j - 8));
  put16(b.data() + 208, 0x3800);  // d = 0.5
  const auto v = dequant(DType::Q6_K, b, 256);
  for (int e = 0; e < 256; ++e) {
    // Per 128 elements: 64 ql bytes, 32 qh bytes; quarter c of the 128 takes ql's low
    // (c = 0, 1) or high (c = 2, 3) nibbles and qh's bits 2c, 2c+1.
    const int n = e / 128, w = e % 128, c = w / 32, l = w % 32;
    const uint8_t lo = ql(64 * n + l + (c % 2) * 32);
    const int q = ((c < 2 ? lo & 0xF : lo >> 4) | (((qh(32 * n + l) >> (2 * c)) & 3) << 4)) - 32;
    const int sc = (8 * n + 2 * c + l / 16) - 8;
    EXPECT_EQ(v[e], 0.5f * sc * q) << e;
  }
  EXPECT_EQ(v[0], 128.0f);  // 0.5 * -8 * -32
}

// q2_K: 16 sub-blocks of 16 with a 4-bit scale (low nibble) and min (high nibble);
// per 128 elements, 32 quant bytes hold 4 groups of 32 elements in bit pairs 0-1 .. 6-7.
TEST(Quant, KnownValuesQ2_K) {
  std::vector<uint8_t> b(84);
  for (int s = 0; s < 16; ++s) b[s] = static_cast<uint8_t>(s | ((15 - s) << 4));
  for (int i = 0; i < 64; ++i) b[16 + i] = static_cast<uint8_t>((i * 37) & 0xFF);
  put16(b.data() + 80, 0x3C00);  // d = 1
  put16(b.data() + 82, 0x3800);  // dmin = 0.5
  const auto v = dequant(DType::Q2_K, b, 256);
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, j = (e % 128) / 32, r = e % 32;
    const int q = (b[16 + 32 * h + r] >> (2 * j)) & 3;
    const int s = 8 * h + 2 * j + (r >= 16);
    EXPECT_EQ(v[e], 1.0f * (b[s] & 0xF) * q - 0.5f * (b[s] >> 4)) << e;
  }
  EXPECT_EQ(v[0], -7.5f);  // q 0, scale 0, min 15
}

// q3_K: 16 6-bit scales (offset 32) packed in 12 bytes, 2 low bits per value as in q2_K
// and the high bit in hmask (bit 4h+j of byte r for group j of half h); a clear high
// bit subtracts 4.
TEST(Quant, KnownValuesQ3_K) {
  std::vector<uint8_t> b(110);
  int sc6[16];
  for (int j = 0; j < 16; ++j) sc6[j] = (j * 5 + 3) % 64;
  uint8_t* scales = b.data() + 96;
  for (int j = 0; j < 16; ++j) {
    if (j < 8) {
      scales[j] = static_cast<uint8_t>(scales[j] | (sc6[j] & 0xF));
    } else {
      scales[j - 8] = static_cast<uint8_t>(scales[j - 8] | ((sc6[j] & 0xF) << 4));
    }
    scales[8 + j % 4] = static_cast<uint8_t>(scales[8 + j % 4] | ((sc6[j] >> 4) << (2 * (j / 4))));
  }
  for (int i = 0; i < 32; ++i) b[i] = static_cast<uint8_t>((i * 29) & 0xFF);       // hmask
  for (int i = 0; i < 64; ++i) b[32 + i] = static_cast<uint8_t>((i * 53) & 0xFF);  // qs
  put16(b.data() + 108, 0x3400);                                                   // d = 0.25
  const auto v = dequant(DType::Q3_K, b, 256);
  for (int e = 0; e < 256; ++e) {
    const int h = e / 128, j = (e % 128) / 32, r = e % 32;
    const int q = ((b[32 + 32 * h + r] >> (2 * j)) & 3) - ((b[r] >> (4 * h + j)) & 1 ? 0 : 4);
    const int s = 8 * h + 2 * j + (r >= 16);
    EXPECT_EQ(v[e], 0.25f * (sc6[s] - 32) * q) << e;
  }
  EXPECT_EQ(v[0], 0.25f * (3 - 32) * -4);  // q bits 0, high bit clear
}

// ---------------------------------------------------------------- llama.cpp goldens

std::vector<float> golden_input(int64_t k) {
  Rng rng{0x9E3779B97F4A7C15ull};
  std::vector<float> x(static_cast<size_t>(4 * k));
  for (int64_t i = 0; i < k; ++i) x[i] = rng.bell();
  for (int64_t i = 0; i < k; ++i) x[k + i] = rng.bell() * 8.0f;
  for (int64_t i = 0; i < k; ++i) x[2 * k + i] = rng.bell() + 0.5f;
  for (int64_t i = 0; i < k; ++i) x[3 * k + i] = (i % 61 == 0) ? rng.bell() * 16.0f : 0.0f;
  return x;
}

TEST(Quant, MatchesLlamaCppQuantizeAndDequantize) {
  struct Golden {
    DType t;
    uint64_t quantized, dequantized;
  };
  // FNV-1a of ggml_quantize_chunk's output (4 rows of 1024) and of dequantize_row_* of it.
  const Golden golden[] = {
      {DType::Q4_0, 0x623bb0b088b9d62dull, 0xd6c2754ad4247235ull},
      {DType::Q4_1, 0xd03eac1754609111ull, 0xb8be51e9d4ebf980ull},
      {DType::Q5_0, 0x4188c31efaa5f9ecull, 0x8054eeee7fafafb0ull},
      {DType::Q5_1, 0x3c47e739193e2ef2ull, 0x0012985da94f42c5ull},
      {DType::Q8_0, 0xc2054c9b6f6fcb6aull, 0xb78a5374f4f34fa4ull},
      {DType::Q4_K, 0x20a6c154f89b68beull, 0xac3d93c0f3a3c960ull},
      {DType::Q5_K, 0xa1e9f43edf7c299cull, 0x505db2d57ed436d5ull},
      {DType::Q6_K, 0xc8d7876f0063afdcull, 0xacf43e9ac27e2d2eull},
      {DType::Q2_K, 0x8b0ad6c232e7a5f5ull, 0xd322fdef142a818aull},
      {DType::Q3_K, 0xe2c3188ef87224ffull, 0x8521e99580d45d06ull},
  };
  const int64_t k = 1024;
  const auto x = golden_input(k);
  for (const Golden& g : golden) {
    const size_t rb = row_bytes(g.t, k);
    std::vector<uint8_t> q(rb * 4);
    std::vector<float> d(static_cast<size_t>(4 * k));
    for (int r = 0; r < 4; ++r) {
      quantize_row(g.t, x.data() + r * k, q.data() + r * rb, k);
      dequantize_row(g.t, q.data() + r * rb, d.data() + r * k, k);
    }
    EXPECT_EQ(fnv1a(q.data(), q.size()), g.quantized) << dtype_name(g.t);
    EXPECT_EQ(fnv1a(d.data(), d.size() * 4), g.dequantized) << dtype_name(g.t);
  }
}

// The activation holds exactly llama.cpp's quantize_row_q8_0_ref / q8_K_ref output:
// rebuild ggml's blocks from it and compare hashes.
TEST(Quant, ActivationMatchesLlamaCppQ8) {
  const int64_t k = 1024;
  const auto x = golden_input(k);
  const float* row = x.data() + k;
  {
    ActBuf buf(DType::Q4_0, k);
    quant_activation(DType::Q4_0, row, k, buf.at());
    const auto L = quant::act_layout(DType::Q4_0, k);
    const auto a = quant::act_view(L, buf.at());
    std::vector<uint8_t> blocks;
    for (int64_t b = 0; b < k / 32; ++b) {
      const uint16_t h = f32_to_f16(a.dx(b));
      blocks.push_back(static_cast<uint8_t>(h & 0xFF));
      blocks.push_back(static_cast<uint8_t>(h >> 8));
      int sum = 0;
      for (int j = 0; j < 32; ++j) {
        const int8_t q = a.q(b * 32 + j);
        blocks.push_back(static_cast<uint8_t>(q));
        sum += q;
      }
      EXPECT_EQ(sum, a.sy(b));
    }
    EXPECT_EQ(fnv1a(blocks.data(), blocks.size()), 0x685c6a1adcc37f5aull);
  }
  {
    ActBuf buf(DType::Q4_K, k);
    quant_activation(DType::Q4_K, row, k, buf.at());
    const auto L = quant::act_layout(DType::Q4_K, k);
    const auto a = quant::act_view(L, buf.at());
    std::vector<uint8_t> blocks(static_cast<size_t>(k / 256 * 292));
    for (int64_t b = 0; b < k / 256; ++b) {
      uint8_t* p = blocks.data() + b * 292;
      const float d = a.dx(b);
      std::memcpy(p, &d, 4);
      for (int j = 0; j < 256; ++j) p[4 + j] = static_cast<uint8_t>(a.q(b * 256 + j));
      for (int j = 0; j < 16; ++j) {
        const int16_t s = a.bs16(b, j);
        std::memcpy(p + 260 + 2 * j, &s, 2);
      }
      for (int j = 0; j < 8; ++j) EXPECT_EQ(a.bs32(b, j), a.bs16(b, 2 * j) + a.bs16(b, 2 * j + 1));
    }
    EXPECT_EQ(fnv1a(blocks.data(), blocks.size()), 0x45a5360dc4d4bb71ull);
  }
}

// ---------------------------------------------------------------- round trip

TEST(Quant, RoundTripErrorBounds) {
  struct Bound {
    DType t;
    double rms;  // relative RMS error on unit normal data
  };
  const Bound bounds[] = {{DType::Q8_0, 0.0065}, {DType::Q4_0, 0.105}, {DType::Q4_1, 0.095},
                          {DType::Q5_0, 0.052},  {DType::Q5_1, 0.045}, {DType::Q4_K, 0.085},
                          {DType::Q5_K, 0.043},  {DType::Q6_K, 0.021}, {DType::Q2_K, 0.36},
                          {DType::Q3_K, 0.18}};
  std::mt19937 gen(7);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  const int64_t k = 8192;
  std::vector<float> x(static_cast<size_t>(k));
  for (auto& v : x) v = nd(gen);
  for (const Bound& b : bounds) {
    std::vector<uint8_t> q(row_bytes(b.t, k));
    quantize_row(b.t, x.data(), q.data(), k);
    const auto y = dequant(b.t, q, k);
    double se = 0, sx = 0;
    for (int64_t i = 0; i < k; ++i) {
      se += (y[i] - x[i]) * static_cast<double>(y[i] - x[i]);
      sx += x[i] * static_cast<double>(x[i]);
    }
    const double rel = std::sqrt(se / sx);
    EXPECT_LT(rel, b.rms) << dtype_name(b.t);
    EXPECT_GT(rel, b.rms / 4) << dtype_name(b.t) << " suspiciously exact";
  }
}

TEST(Quant, ZeroAndConstantRows) {
  const int64_t k = 512;
  for (DType t : kTypes) {
    std::vector<float> zeros(k, 0.0f), ones(k, 1.0f);
    std::vector<uint8_t> q(row_bytes(t, k));
    quantize_row(t, zeros.data(), q.data(), k);
    for (float v : dequant(t, q, k)) ASSERT_EQ(v, 0.0f) << dtype_name(t);
    quantize_row(t, ones.data(), q.data(), k);
    for (float v : dequant(t, q, k)) ASSERT_NEAR(v, 1.0f, t == DType::Q2_K ? 0.1 : 1e-3) << dtype_name(t);
  }
}

TEST(Quant, PlainTypesConvert) {
  const float x[4] = {1.5f, -2.25f, 65504.0f, 0.0f};
  for (DType t : {DType::F32, DType::F16, DType::BF16}) {
    std::vector<uint8_t> q(16);
    float y[4];
    quantize_row(t, x, q.data(), 4);
    dequantize_row(t, q.data(), y, 4);
    EXPECT_EQ(y[0], 1.5f);
    EXPECT_EQ(y[1], -2.25f);
    EXPECT_EQ(y[3], 0.0f);
  }
}

TEST(Quant, BadShapesThrow) {
  std::vector<uint8_t> w(4096);
  std::vector<float> x(512), y(8);
  EXPECT_THROW(quant_activation_bytes(DType::Q4_K, 100), Error);
  EXPECT_THROW(quant_activation_bytes(DType::F32, 64), Error);
  EXPECT_THROW(quantize_row(DType::Q4_0, x.data(), w.data(), 33), Error);
  EXPECT_THROW(dequantize_row(DType::Q6_K, w.data(), x.data(), 255), Error);
  ActBuf buf(DType::Q4_0, 64);
  quant_activation(DType::Q4_0, x.data(), 64, buf.at());
  EXPECT_THROW(quant_dot_rows(DType::Q4_0, w.data(), 10, 0, 2, buf.at(), 64, y.data()),
               Error);  // stride < row
  EXPECT_THROW(quant_dot_rows(DType::Q4_0, w.data(), 36, 2, 1, buf.at(), 64, y.data()), Error);  // r1 < r0
  EXPECT_THROW(quant_dot_rows(DType::Q8_K, w.data(), 292, 0, 1, buf.at(), 256, y.data()), Error);
  EXPECT_THROW(quantize_row(DType::Q3_K, x.data(), w.data(), 300), Error);
  EXPECT_THROW(dequantize_row(DType::Q8_K, w.data(), x.data(), 256), Error);
  try {
    quant_activation_bytes(DType::Q6_K, 300);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("q6_K"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------- SIMD vs reference

// Runs fn once per SIMD target compiled in and supported by this CPU.
template <class Fn>
void for_each_target(Fn fn) {
  const std::vector<int64_t> targets = quant::simd_targets();
  ASSERT_FALSE(targets.empty());
  for (int64_t target : targets) {
    hwy::SetSupportedTargetsForTest(target);
    ASSERT_STREQ(quant_simd_target(), hwy::TargetName(target));
    SCOPED_TRACE(hwy::TargetName(target));
    fn();
  }
  hwy::SetSupportedTargetsForTest(0);
}

struct Case {
  DType t;
  int64_t k, rows;
  std::vector<uint8_t> w;
  std::vector<float> x;
  size_t stride;
};

// Random weight rows: quantized normal data with a spread of scales (tolerance cases).
Case random_case(DType t, int64_t k, int64_t rows, uint32_t seed) {
  Case c{t, k, rows, {}, {}, row_bytes(t, k) + 6};  // a stride longer than a row
  std::mt19937 gen(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> row(static_cast<size_t>(k));
  c.w.resize(c.stride * rows);
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < k; ++i)
      row[i] = nd(gen) * (1.0f + static_cast<float>(i % 7)) + (r % 3 == 0 ? 0.5f : 0.0f);
    quantize_row(t, row.data(), c.w.data() + r * c.stride, k);
  }
  c.x.resize(static_cast<size_t>(k));
  for (auto& v : c.x) v = nd(gen);
  return c;
}

// Random bytes as weights (every bit pattern of the codes) with power-of-two block
// scales, and an activation of small integers times 2^-3 with one +-127 per block: every
// product and partial sum is then exact in f32, so any kernel must match the reference
// bit for bit.
Case exact_case(DType t, int64_t k, int64_t rows, uint32_t seed) {
  Case c{t, k, rows, {}, {}, row_bytes(t, k)};
  std::mt19937 gen(seed);
  c.w.resize(c.stride * rows);
  for (auto& b : c.w) b = static_cast<uint8_t>(gen());
  const int bs = dtype_info(t).block_size, bb = dtype_info(t).block_bytes;
  auto pow2 = [&](bool allow_negative) {
    const uint16_t e = static_cast<uint16_t>(15 - (gen() % 2));  // 1 or 0.5
    return static_cast<uint16_t>((e << 10) | (allow_negative && (gen() & 1) ? 0x8000 : 0));
  };
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t b = 0; b < k / bs; ++b) {
      uint8_t* blk = c.w.data() + r * c.stride + b * bb;
      switch (t) {
        case DType::Q4_1:
        case DType::Q5_1:
          put16(blk, pow2(true));
          put16(blk + 2, pow2(true));
          break;
        case DType::Q4_K:
        case DType::Q5_K:
          put16(blk, pow2(false));
          put16(blk + 2, pow2(false));
          break;
        case DType::Q2_K:
          put16(blk + 80, pow2(false));
          put16(blk + 82, pow2(false));
          break;
        case DType::Q3_K:
          put16(blk + 108, pow2(true));
          break;
        case DType::Q6_K:
          put16(blk + 208, pow2(true));
          break;
        default:
          put16(blk, pow2(true));
      }
    }
  }
  c.x.resize(static_cast<size_t>(k));
  const int ab = bs;  // activation block: 32 for legacy, 256 for K
  for (int64_t i = 0; i < k; ++i) {
    const int v = (i % ab == 5) ? 127 : static_cast<int>(gen() % 3) - 1;
    c.x[i] = static_cast<float>(v) * 0.125f;
  }
  return c;
}

std::vector<float> simd_dots(const Case& c, const void* xq, int64_t r0, int64_t r1) {
  std::vector<float> y(static_cast<size_t>(r1 - r0), -1.0f);
  quant_dot_rows(c.t, c.w.data(), c.stride, r0, r1, xq, c.k, y.data());
  return y;
}

std::vector<float> ref_dots(const Case& c, const void* xq, int64_t r0, int64_t r1) {
  std::vector<float> y(static_cast<size_t>(r1 - r0), -1.0f);
  quant::dot_rows_ref(c.t, c.w.data(), c.stride, r0, r1, xq, c.k, y.data());
  return y;
}

// Block counts that leave every kind of partial SIMD unit (4 legacy blocks, 2 for q8_0).
std::vector<int64_t> test_ks(DType t) {
  if (dtype_info(t).block_size == 256) return {256, 512, 768, 1280, 5632};
  return {32, 64, 96, 160, 224, 1184, 5632};
}

// Every type must take the hand-written x86 kernels where they exist (AVX-512 VNNI on
// AVX3_DL and on AVX3 CPUs with VNNI, AVX2 on AVX2, AVX3 without VNNI and for q2_K /
// q3_K), not silently fall back to the portable ones.
TEST(QuantSimd, X86KernelsCoverEveryType) {
#if defined(__x86_64__)
  const bool vnni = __builtin_cpu_supports("avx512vnni");
#else
  const bool vnni = false;
#endif
  for_each_target([&] {
    const std::string target = quant_simd_target();
    for (DType t : kTypes) {
      const bool avx512 = target == "AVX3_DL" || (target == "AVX3" && vnni);
      const std::string want = avx512 && has_avx512_kernels(t)                ? "avx512-vnni"
                               : avx512 || target == "AVX2" || target == "AVX3" ? "avx2"
                               : target == "SCALAR"                   ? "scalar"
                                                                      : "portable";
      EXPECT_EQ(quant::simd_kernel_name(t), want) << dtype_name(t);
    }
  });
}

// The SIMD activation quantizer writes exactly the reference's bytes, including ties
// (x*id landing on .5: roundf rounds away from zero, q8_K's nearest_int to even),
// all-zero blocks, and the largest magnitude appearing with both signs.
TEST(QuantSimd, ActivationIsBitIdenticalToReference) {
  for_each_target([] {
    std::mt19937 gen(17);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    for (DType t : kTypes) {
      for (int64_t k : {int64_t{256}, int64_t{768}, int64_t{1280}}) {
        std::vector<float> x(static_cast<size_t>(k));
        for (auto& v : x) v = nd(gen);
        for (int64_t i = 0; i < 32; ++i) x[i] = 0.0f;  // a zero legacy block
        if (k >= 512) {
          for (int64_t i = 256; i < 512; ++i) x[i] = 0.0f;  // a zero K block
        }
        for (int64_t i = 512; i < k; ++i) {  // exact ties: amax 127 makes id 1
          if (i % 32 == 0) x[i] = 127.0f;
          if (i % 32 == 1) x[i] = -127.0f;  // same magnitude, other sign, later
          if (i % 32 >= 2 && i % 32 < 12) x[i] = static_cast<float>(i % 9) - 4.5f;
        }
        ActBuf want(t, k), got(t, k);
        quant::activation_ref(t, x.data(), k, want.at());
        quant_activation(t, x.data(), k, got.at());
        ASSERT_EQ(std::memcmp(want.at(), got.at(), want.bytes), 0) << dtype_name(t) << " k=" << k;
      }
    }
  });
}

TEST(QuantSimd, BitExactOnExactData) {
  for_each_target([] {
    for (DType t : kTypes) {
      for (int64_t k : test_ks(t)) {
        if (k > 1280) continue;  // keep every partial sum below 2^24 units
        const Case c = exact_case(t, k, 7, static_cast<uint32_t>(k));
        ActBuf buf(t, k);
        quant_activation(t, c.x.data(), k, buf.at());
        const auto got = simd_dots(c, buf.at(), 1, 6);
        const auto want = ref_dots(c, buf.at(), 1, 6);
        for (size_t i = 0; i < got.size(); ++i) {
          ASSERT_EQ(got[i], want[i]) << dtype_name(t) << " k=" << k << " row " << i + 1;
        }
      }
    }
  });
}

TEST(QuantSimd, MatchesReferenceOnRandomData) {
  struct Prepared {
    Case c;
    std::unique_ptr<ActBuf> act;
    std::vector<float> want, mag;  // reference results, sum of |terms| per row
  };
  std::vector<Prepared> cases;
  for (DType t : kTypes) {
    for (int64_t k : test_ks(t)) {
      Prepared p{
          random_case(t, k, 9, static_cast<uint32_t>(k) * 31 + static_cast<uint32_t>(t)), nullptr, {}, {}};
      p.act = std::make_unique<ActBuf>(t, k);
      quant::activation_ref(t, p.c.x.data(), k, p.act->at());
      p.want = ref_dots(p.c, p.act->at(), 2, 9);
      std::vector<float> w(static_cast<size_t>(k));
      for (int64_t r = 2; r < 9; ++r) {
        dequantize_row(t, p.c.w.data() + r * p.c.stride, w.data(), k);
        double mag = 0;
        for (int64_t j = 0; j < k; ++j) mag += std::fabs(w[j] * p.c.x[j]);
        p.mag.push_back(static_cast<float>(mag));
      }
      cases.push_back(std::move(p));
    }
  }
  for_each_target([&] {
    for (auto& p : cases) {
      const auto got = simd_dots(p.c, p.act->at(), 2, 9);
      for (size_t i = 0; i < got.size(); ++i) {
        // Only the f32 summation order differs: bound by the sum of |terms|.
        ASSERT_NEAR(got[i], p.want[i], 2e-6 * p.mag[i] + 1e-6)
            << dtype_name(p.c.t) << " k=" << p.c.k << " row " << i + 2;
      }
    }
  });
}

TEST(QuantSimd, TileIsBitIdenticalToDotRows) {
  for_each_target([] {
    for (DType t : kTypes) {
      const int64_t k = dtype_info(t).block_size == 256 ? 768 : 160;
      // Rows past a multiple of 8 and token counts around the AVX-512 kernels' groups of
      // 16 (padded groups, leftovers decoded token by token, passes of 64).
      const int64_t rows = 20, n = 70;
      const Case c = random_case(t, k, rows, 99);
      ActBuf buf(t, k, n);
      std::mt19937 gen(5);
      std::normal_distribution<float> nd(0.0f, 1.0f);
      std::vector<float> x(static_cast<size_t>(k));
      for (int64_t i = 0; i < n; ++i) {
        for (auto& v : x) v = nd(gen);
        quant_activation(t, x.data(), k, buf.at(i));
      }
      for (int64_t nn : {1, 3, 4, 5, 9, 16, 17, 18, 20, 33, 64, 66, 70}) {
        const size_t ldy = rows + 2;
        std::vector<float> tile(static_cast<size_t>(nn) * ldy, -7.0f);
        quant_matmul_tile(t, c.w.data(), c.stride, 1, rows, buf.at(), buf.bytes, nn, k, tile.data(), ldy);
        for (int64_t i = 0; i < nn; ++i) {
          const auto one = simd_dots(c, buf.at(i), 1, rows);
          for (int64_t r = 0; r < rows - 1; ++r) {
            ASSERT_EQ(tile[i * ldy + r], one[r])
                << dtype_name(t) << " n=" << nn << " act " << i << " row " << r;
          }
          ASSERT_EQ(tile[i * ldy + rows - 1], -7.0f);  // past r1 - r0: untouched
        }
      }
    }
  });
}

// q4_0 / q8_0 / q4_K / q6_K matrices in panels (braid/quant.h, "Panels") give exactly
// the row kernels' results, on every target: natively with the AVX-512 VNNI kernels, by
// unpacking elsewhere. Rows around the panels of 32 and their halves of 16, block counts
// around units of 4 (and the K prefill's chunks of 3 panels), token counts around the
// groups of 16 and passes of 64, row ranges that start at a later panel, random codes
// (every bit pattern) as well as quantized data.
TEST(QuantPanels, GiveTheRowKernelsBits) {
  for_each_target([] {
    for (DType t : {DType::Q4_0, DType::Q8_0, DType::Q4_K, DType::Q6_K}) {
      EXPECT_EQ(quant_panels_supported(t), std::string(quant::simd_kernel_name(t)) == "avx512-vnni");
      const bool super = dtype_info(t).block_size == 256;
      for (int64_t k : super ? std::vector<int64_t>{256, 1280} : std::vector<int64_t>{32, 160, 1184}) {
        for (int64_t rows : super ? std::vector<int64_t>{1, 33, 100} : std::vector<int64_t>{1, 33, 50}) {
          for (bool exact : {false, true}) {
            const Case c = exact ? exact_case(t, k, rows, 17) : random_case(t, k, rows, 11);
            const size_t bytes = quant_panel_bytes(t, rows, k);
            ASSERT_EQ(bytes, static_cast<size_t>((rows + 31) / 32 * 32) * row_bytes(t, k));
            SCOPED_TRACE(std::string(dtype_name(t)) + " k=" + std::to_string(k) +
                         " rows=" + std::to_string(rows));
            AlignedVector<uint8_t> P(bytes);
            const int64_t panels = (rows + 31) / 32;
            quant_pack_panels(t, c.w.data(), c.stride, rows, k, 0, panels / 2, P.data());  // in two calls
            quant_pack_panels(t, c.w.data(), c.stride, rows, k, panels / 2, panels, P.data());
            std::vector<uint8_t> back(row_bytes(t, k));
            for (int64_t r = 0; r < rows; ++r) {
              quant_panel_row(t, P.data(), k, r, back.data());
              ASSERT_EQ(0, std::memcmp(back.data(), c.w.data() + r * c.stride, back.size())) << "row " << r;
            }
            const int64_t n = 70;
            ActBuf buf(t, k, n);
            std::mt19937 gen(5);
            std::normal_distribution<float> nd(0.0f, 1.0f);
            std::vector<float> x(static_cast<size_t>(k));
            for (int64_t i = 0; i < n; ++i) {
              for (int64_t j = 0; j < k; ++j) x[j] = exact ? c.x[(j + 7 * i) % k] : nd(gen);
              quant_activation(t, x.data(), k, buf.at(i));
            }
            for (int64_t r0 : {int64_t{0}, int64_t{32}}) {
              if (r0 >= rows) continue;
              for (int64_t nn : {1, 5, 17, 33, 70}) {
                const size_t ldy = static_cast<size_t>(rows - r0 + 1);
                std::vector<float> want(static_cast<size_t>(nn) * ldy, -7.0f), got(want);
                quant_matmul_tile(t, c.w.data(), c.stride, r0, rows, buf.at(), buf.bytes, nn, k, want.data(),
                                  ldy);
                quant_matmul_panels(t, P.data(), r0, rows, buf.at(), buf.bytes, nn, k, got.data(), ldy);
                for (size_t i = 0; i < got.size(); ++i) {
                  ASSERT_EQ(got[i], want[i])
                      << dtype_name(t) << " k=" << k << " rows=" << rows << " exact=" << exact << " r0=" << r0
                      << " n=" << nn << " token " << i / ldy << " row " << r0 + static_cast<int64_t>(i % ldy);
                }
              }
            }
          }
        }
      }
    }
  });
}

TEST(QuantPanels, BadShapesThrow) {
  std::vector<uint8_t> w(4096), P(4096);
  std::vector<float> y(64);
  EXPECT_THROW(quant_panel_bytes(DType::Q5_K, 32, 256), Error);  // no panel layout
  EXPECT_THROW(quant_panel_bytes(DType::Q4_0, 32, 48), Error);   // not whole blocks
  EXPECT_THROW(quant_pack_panels(DType::Q4_0, w.data(), 10, 2, 64, 0, 1, P.data()), Error);  // stride < row
  EXPECT_THROW(quant_pack_panels(DType::Q4_0, w.data(), 36, 2, 64, 0, 2, P.data()), Error);  // one panel only
  ActBuf buf(DType::Q4_0, 64);
  EXPECT_THROW(quant_matmul_panels(DType::Q4_0, P.data(), 16, 32, buf.at(), buf.bytes, 1, 64, y.data(), 16),
               Error);  // r0 not a panel's first row
}

TEST(QuantSimd, RowSplitDoesNotChangeResults) {
  for (DType t : kTypes) {
    const int64_t k = 1024, rows = 10;
    const Case c = random_case(t, k, rows, 3);
    ActBuf buf(t, k);
    quant_activation(t, c.x.data(), k, buf.at());
    const auto all = simd_dots(c, buf.at(), 0, rows);
    for (int64_t r = 0; r < rows; ++r)
      EXPECT_EQ(simd_dots(c, buf.at(), r, r + 1)[0], all[r]) << dtype_name(t);
  }
}

// The quantized dot approximates the f32 dot of the dequantized row with x (the only
// extra error is x's 8-bit quantization).
TEST(Quant, DotMatchesDequantizedF32Dot) {
  for (DType t : kTypes) {
    const int64_t k = 4096, rows = 6;
    const Case c = random_case(t, k, rows, 11);
    ActBuf buf(t, k);
    quant_activation(t, c.x.data(), k, buf.at());
    const auto got = simd_dots(c, buf.at(), 0, rows);
    std::vector<float> w(static_cast<size_t>(k));
    for (int64_t r = 0; r < rows; ++r) {
      dequantize_row(t, c.w.data() + r * c.stride, w.data(), k);
      double dot = 0, mag = 0;
      for (int64_t j = 0; j < k; ++j) {
        dot += static_cast<double>(w[j]) * c.x[j];
        mag += std::fabs(static_cast<double>(w[j]) * c.x[j]);
      }
      EXPECT_NEAR(got[r], dot, 3e-3 * mag) << dtype_name(t) << " row " << r;
      EXPECT_GT(std::fabs(got[r] - dot), 0.0) << dtype_name(t) << " (x was not quantized?)";
    }
  }
}

}  // namespace
}  // namespace braid
