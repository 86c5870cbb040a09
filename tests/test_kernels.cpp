// Kernels against scalar references (double precision, written for clarity), on odd
// shapes that exercise every SIMD tail, plus the determinism the runtime relies on.
#include <gtest/gtest.h>
#include <hwy/highway.h>
#include <hwy/targets.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "braid/dtype.h"
#include "braid/error.h"
#include "braid/kernels.h"
#include "braid/quant.h"
#include "braid/thread_pool.h"

namespace braid {
namespace {

std::vector<float> random_vec(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(-scale, scale);
  std::vector<float> v(n);
  for (auto& x : v) x = u(rng);
  return v;
}

// A weight matrix of `rows` x `cols` stored as `type`, and the f32 values it holds.
struct Weights {
  std::vector<uint8_t> bytes;
  std::vector<float> values;  // what the stored numbers are, after rounding to `type`
  Tensor t;
};

Weights make_weights(DType type, int64_t rows, int64_t cols, uint32_t seed) {
  Weights w;
  w.values = random_vec(static_cast<size_t>(rows * cols), seed);
  const size_t esize = type == DType::F32 ? 4 : 2;
  w.bytes.resize(w.values.size() * esize);
  for (size_t i = 0; i < w.values.size(); ++i) {
    if (type == DType::F32) {
      std::memcpy(&w.bytes[i * 4], &w.values[i], 4);
    } else {
      const uint16_t h = type == DType::F16 ? f32_to_f16(w.values[i]) : f32_to_bf16(w.values[i]);
      std::memcpy(&w.bytes[i * 2], &h, 2);
      w.values[i] = type == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
    }
  }
  w.t.name = std::string("weights");
  w.t.type = type;
  w.t.n_dims = 2;
  w.t.ne[0] = cols;
  w.t.ne[1] = rows;
  w.t.data = w.bytes.data();
  w.t.nbytes = w.bytes.size();
  return w;
}

class MatmulTest : public ::testing::TestWithParam<DType> {};

TEST_P(MatmulTest, MatchesScalarReferenceOnOddShapes) {
  const DType type = GetParam();
  ThreadPool pool(3);
  uint32_t seed = 1;
  for (int64_t rows : {1, 7, 33, 100}) {
    for (int64_t cols : {1, 3, 8, 17, 64, 129, 1000}) {
      for (int n : {1, 3, 4, 5, 9}) {
        SCOPED_TRACE(testing::Message() << "rows " << rows << " cols " << cols << " n " << n);
        Weights w = make_weights(type, rows, cols, seed++);
        std::vector<float> x = random_vec(static_cast<size_t>(n * cols), seed++);
        std::vector<float> y(static_cast<size_t>(n * rows), NAN);
        matmul(w.t, x.data(), n, y.data(), pool);
        for (int t = 0; t < n; ++t) {
          for (int64_t r = 0; r < rows; ++r) {
            double ref = 0, mag = 0;
            for (int64_t c = 0; c < cols; ++c) {
              ref += static_cast<double>(w.values[r * cols + c]) * x[t * cols + c];
              mag += std::fabs(static_cast<double>(w.values[r * cols + c]) * x[t * cols + c]);
            }
            ASSERT_NEAR(y[t * rows + r], ref, 1e-6 * mag + 1e-7) << "token " << t << " row " << r;
          }
        }
      }
    }
  }
}

TEST_P(MatmulTest, BatchAndThreadsDoNotChangeBits) {
  // Prefill (n tokens at once) and decode (one at a time) must agree exactly, on any
  // thread count: the distributed runtime's recovery replays a sequence as a prefill.
  // The shapes make every tile kind: groups of 6 tokens and the smaller last groups,
  // tiles of 4 rows and the single rows at a block's end, inputs over several spans of
  // 1024 with a partial last vector, and blocks split between threads.
  // On every SIMD target this CPU runs (CI's machine may pick another than ours).
  const DType type = GetParam();
  struct Shape {
    int64_t rows, cols;
    int n;
  };
  for (int64_t targets = hwy::SupportedTargets() & HWY_TARGETS; targets != 0; targets &= targets - 1) {
    const int64_t target = targets & -targets;
    hwy::SetSupportedTargetsForTest(target);
    SCOPED_TRACE(hwy::TargetName(target));
    uint32_t seed = 7;
    for (const Shape& s :
         {Shape{300, 515, 11}, Shape{301, 1100, 13}, Shape{67, 2048, 64}, Shape{18, 40, 5}}) {
      SCOPED_TRACE(testing::Message() << "rows " << s.rows << " cols " << s.cols << " n " << s.n);
      Weights w = make_weights(type, s.rows, s.cols, seed++);
      std::vector<float> x = random_vec(static_cast<size_t>(s.n * s.cols), seed++);
      ThreadPool one(1), four(4);
      std::vector<float> batched(static_cast<size_t>(s.n * s.rows)), threaded(batched.size()),
          single(batched.size());
      matmul(w.t, x.data(), s.n, batched.data(), one);
      matmul(w.t, x.data(), s.n, threaded.data(), four);
      for (int t = 0; t < s.n; ++t) matmul(w.t, x.data() + t * s.cols, 1, single.data() + t * s.rows, four);
      EXPECT_EQ(0, std::memcmp(batched.data(), threaded.data(), batched.size() * 4));
      EXPECT_EQ(0, std::memcmp(batched.data(), single.data(), batched.size() * 4));
      // And each equals dot_rows_f32 on the stored values as f32: f16 and bf16 rows are
      // converted exactly on load, so the same order gives the same bits.
      std::vector<float> wf(w.values), xs(x.begin(), x.begin() + s.cols);
      std::vector<float> rows_y(static_cast<size_t>(s.rows));
      dot_rows_f32(wf.data(), s.cols, s.rows, xs.data(), s.cols, rows_y.data());
      EXPECT_EQ(0, std::memcmp(rows_y.data(), single.data(), rows_y.size() * 4));
    }
  }
  hwy::SetSupportedTargetsForTest(0);
}

TEST_P(MatmulTest, RowToF32GivesStoredValues) {
  Weights w = make_weights(GetParam(), 5, 37, 3);
  std::vector<float> row(37);
  for (int64_t r = 0; r < 5; ++r) {
    tensor_row_f32(w.t, r, row.data());
    for (int64_t c = 0; c < 37; ++c) ASSERT_EQ(row[c], w.values[r * 37 + c]);
  }
}

INSTANTIATE_TEST_SUITE_P(Types, MatmulTest, ::testing::Values(DType::F32, DType::F16, DType::BF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

// ---- Panels (pack_panels): F16 / BF16 rows repacked k-major in groups of 32. ----

// W in panels, and the buffer holding them.
struct Panels {
  std::vector<uint8_t> bytes;
  Tensor t;
};
Panels make_panels(const Weights& w, ThreadPool& pool) {
  Panels p;
  p.bytes.resize(panel_bytes(w.t));
  pack_panels(w.t, p.bytes.data(), pool);
  p.t = w.t;
  p.t.data = p.bytes.data();
  p.t.nbytes = p.bytes.size();
  p.t.panels = true;
  return p;
}

class PanelTest : public ::testing::TestWithParam<DType> {};

TEST_P(PanelTest, EachOutputIsOneMultiplyAddChain) {
  // The oracle: for each (row, token), acc = w[0] x[0], then acc = w[i] x[i] + acc for
  // i = 1 .. k-1 in order, in f32, each step fused (targets with FMA) or a rounded
  // product and a rounded sum (SSE4, SSSE3, scalar). The whole of a matmul must equal
  // one of the two exactly: decode and prefill alike, on every thread count and on every
  // SIMD target this CPU runs. Shapes cover partial panels (rows % 32), a last group of
  // fewer than 12 tokens, and pairs of panels split between threads (decode).
  const DType type = GetParam();
  for (int64_t targets = hwy::SupportedTargets() & HWY_TARGETS; targets != 0; targets &= targets - 1) {
    const int64_t target = targets & -targets;
    hwy::SetSupportedTargetsForTest(target);
    SCOPED_TRACE(hwy::TargetName(target));
    ThreadPool one(1), three(3);
    uint32_t seed = 11;
    for (int64_t rows : {1, 31, 33, 96, 130}) {
      for (int64_t cols : {1, 3, 17, 130}) {
        for (int n : {1, 2, 7, 12, 13, 25}) {
          SCOPED_TRACE(testing::Message() << "rows " << rows << " cols " << cols << " n " << n);
          Weights w = make_weights(type, rows, cols, seed++);
          Panels p = make_panels(w, three);
          std::vector<float> x = random_vec(static_cast<size_t>(n * cols), seed++);
          for (ThreadPool* pool : {&one, &three}) {
            std::vector<float> y(static_cast<size_t>(n * rows), NAN);
            matmul(p.t, x.data(), n, y.data(), *pool);
            int fused = 0, split = 0;
            for (int t = 0; t < n; ++t) {
              for (int64_t r = 0; r < rows; ++r) {
                float f = 0, s = 0;
                for (int64_t i = 0; i < cols; ++i) {
                  const float wv = w.values[r * cols + i], xv = x[t * cols + i];
                  f = std::fma(wv, xv, f);
                  const float prod = wv * xv;  // rounded, then added
                  s = prod + s;
                }
                const float got = y[t * rows + r];
                fused += std::memcmp(&got, &f, 4) == 0;
                split += std::memcmp(&got, &s, 4) == 0;
              }
            }
            EXPECT_TRUE(fused == n * rows || split == n * rows)
                << fused << " of " << n * rows << " outputs equal the fused chain, " << split << " the split one";
          }
        }
      }
    }
  }
  hwy::SetSupportedTargetsForTest(0);
}

TEST_P(PanelTest, RowsReadBackAsStored) {
  ThreadPool pool(1);
  Weights w = make_weights(GetParam(), 70, 37, 5);
  Panels p = make_panels(w, pool);
  EXPECT_EQ(p.bytes.size(), size_t{96} * 37 * 2);  // rows padded to 3 panels
  // Packed in slices of panels (as Model does), the same bytes.
  std::vector<uint8_t> sliced(p.bytes.size(), 0xff);
  pack_panels(w.t, sliced.data(), pool, 0, 1);
  pack_panels(w.t, sliced.data(), pool, 1, 3);
  EXPECT_EQ(sliced, p.bytes);
  EXPECT_THROW(pack_panels(w.t, sliced.data(), pool, 2, 4), Error);
  std::vector<float> row(37);
  for (int64_t r = 0; r < 70; ++r) {
    tensor_row_f32(p.t, r, row.data());
    for (int64_t c = 0; c < 37; ++c) ASSERT_EQ(row[c], w.values[r * 37 + c]) << "row " << r;
  }
}

TEST_P(PanelTest, MixedPartsGiveWhatSeparateCallsGive) {
  // q, k and v in one call, one in panels, one in rows, one quantized (as a model whose
  // types differ per tensor runs them), split between threads.
  ThreadPool pool(2);
  const int64_t cols = 64;
  const int n = 9;
  Weights a = make_weights(GetParam(), 40, cols, 1), b = make_weights(DType::F32, 24, cols, 2);
  Panels pa = make_panels(a, pool);
  std::vector<float> bf(b.values);
  std::vector<uint8_t> q8(static_cast<size_t>(b.t.rows()) * row_bytes(DType::Q8_0, cols));
  for (int64_t r = 0; r < b.t.rows(); ++r)
    quantize_row(DType::Q8_0, bf.data() + r * cols, q8.data() + r * row_bytes(DType::Q8_0, cols), cols);
  Tensor tq = b.t;
  tq.type = DType::Q8_0;
  tq.data = q8.data();
  tq.nbytes = q8.size();
  std::vector<float> x = random_vec(static_cast<size_t>(n * cols), 3);
  std::vector<float> y0(static_cast<size_t>(n * 40)), y1(static_cast<size_t>(n * 24)), y2(y1.size());
  const MatmulPart parts[] = {{&pa.t, y0.data()}, {&b.t, y1.data()}, {&tq, y2.data()}};
  matmul(std::span<const MatmulPart>(parts), x.data(), n, pool);
  std::vector<float> s0(y0.size()), s1(y1.size()), s2(y2.size());
  matmul(pa.t, x.data(), n, s0.data(), pool);
  matmul(b.t, x.data(), n, s1.data(), pool);
  matmul(tq, x.data(), n, s2.data(), pool);
  EXPECT_EQ(0, std::memcmp(y0.data(), s0.data(), y0.size() * 4));
  EXPECT_EQ(0, std::memcmp(y1.data(), s1.data(), y1.size() * 4));
  EXPECT_EQ(0, std::memcmp(y2.data(), s2.data(), y2.size() * 4));
}

INSTANTIATE_TEST_SUITE_P(Types, PanelTest, ::testing::Values(DType::F16, DType::BF16),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(Panels, SupportedTypes) {
  EXPECT_TRUE(panels_supported(DType::F16));
  EXPECT_TRUE(panels_supported(DType::BF16));
  EXPECT_FALSE(panels_supported(DType::F32));
  // Block types: where this CPU has the panel kernels (AVX-512 VNNI), q4_0, q8_0, q4_K
  // and q6_K.
  for (DType t : {DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q6_K})
    EXPECT_EQ(panels_supported(t), quant_panels_supported(t));
  EXPECT_FALSE(panels_supported(DType::Q5_K));
  EXPECT_FALSE(panels_supported(DType::Q4_1));
}

// Quantized matrices in panels inside one matmul(parts) call, next to rows and f16
// panels, split between threads: each part gives the bits of its rows' own matmul (the
// quant tests check the kernels on every target; this checks the plumbing: activation
// sharing, the job split in whole panels, tensor_row_f32).
TEST(Panels, QuantizedPartsGiveTheirRowsBits) {
  ThreadPool pool(2);
  const int64_t cols = 96;
  Weights f = make_weights(DType::F32, 70, cols, 4), h = make_weights(DType::F16, 33, cols, 5);
  Panels hp = make_panels(h, pool);
  struct Quantized {
    Weights w;  // rows
    Panels p;
  };
  auto quantized = [&](DType type) {
    Quantized q;
    const size_t rb = row_bytes(type, cols);
    q.w.bytes.resize(static_cast<size_t>(f.t.rows()) * rb);
    for (int64_t r = 0; r < f.t.rows(); ++r)
      quantize_row(type, f.values.data() + r * cols, q.w.bytes.data() + r * rb, cols);
    q.w.t = f.t;
    q.w.t.type = type;
    q.w.t.data = q.w.bytes.data();
    q.w.t.nbytes = q.w.bytes.size();
    q.p = make_panels(q.w, pool);
    return q;
  };
  const Quantized q4 = quantized(DType::Q4_0), q8 = quantized(DType::Q8_0);
  for (int n : {1, 9, 20}) {
    std::vector<float> x = random_vec(static_cast<size_t>(n * cols), 6 + n);
    const size_t big = static_cast<size_t>(n * 70);
    std::vector<float> y0(big), y1(big), y2(big), y3(static_cast<size_t>(n * 33)), y4(big);
    const MatmulPart parts[] = {{&q4.p.t, y0.data()},
                                {&q8.w.t, y1.data()},
                                {&q8.p.t, y2.data()},
                                {&hp.t, y3.data()},
                                {&q4.w.t, y4.data()}};
    matmul(std::span<const MatmulPart>(parts), x.data(), n, pool);
    std::vector<float> s4(big), s8(big), sh(y3.size());
    matmul(q4.w.t, x.data(), n, s4.data(), pool);
    matmul(q8.w.t, x.data(), n, s8.data(), pool);
    matmul(hp.t, x.data(), n, sh.data(), pool);
    EXPECT_EQ(0, std::memcmp(y0.data(), s4.data(), big * 4)) << "n=" << n;
    EXPECT_EQ(0, std::memcmp(y1.data(), s8.data(), big * 4)) << "n=" << n;
    EXPECT_EQ(0, std::memcmp(y2.data(), s8.data(), big * 4)) << "n=" << n;
    EXPECT_EQ(0, std::memcmp(y3.data(), sh.data(), y3.size() * 4)) << "n=" << n;
    EXPECT_EQ(0, std::memcmp(y4.data(), s4.data(), big * 4)) << "n=" << n;
  }
  std::vector<float> a(cols), b(cols);
  for (const Quantized* q : {&q4, &q8}) {
    for (int64_t r : {0, 31, 32, 69}) {
      tensor_row_f32(q->w.t, r, a.data());
      tensor_row_f32(q->p.t, r, b.data());
      EXPECT_EQ(0, std::memcmp(a.data(), b.data(), cols * 4)) << dtype_name(q->w.t.type) << " row " << r;
    }
  }
}

TEST(Matmul, SupportedTypes) {
  EXPECT_TRUE(matmul_supported(DType::F32));
  EXPECT_TRUE(matmul_supported(DType::F16));
  EXPECT_TRUE(matmul_supported(DType::BF16));
  EXPECT_FALSE(matmul_supported(DType::I32));
  EXPECT_FALSE(matmul_supported(DType::F64));
}

TEST(Matmul, UnsupportedTypeIsAnError) {
  std::vector<uint8_t> bytes(4 * 8 * 2);
  Tensor t;
  t.name = "blk.0.attn_q.weight";
  t.type = DType::I32;
  t.n_dims = 2;
  t.ne[0] = 8;
  t.ne[1] = 2;
  t.data = bytes.data();
  t.nbytes = bytes.size();
  std::vector<float> x(8), y(2);
  ThreadPool pool(1);
  try {
    matmul(t, x.data(), 1, y.data(), pool);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("blk.0.attn_q.weight has type i32"), std::string::npos) << e.what();
  }
}

// q, k and v (or gate and up) as one call: every part gets exactly the bits of its own
// matmul, with the parts' types mixed (two share a quantized activation, one a float
// path) and row counts that are not whole row blocks, on 1 to 3 threads, decode and
// prefill.
TEST(Matmul, PartsSharingAnInputEqualSeparateCalls) {
  const int64_t cols = 256;  // one q*_K super-block, 8 q8_0 blocks
  struct Spec {
    DType type;
    int64_t rows;
  };
  const Spec specs[] = {
      {DType::Q4_0, 70}, {DType::Q6_K, 9}, {DType::Q4_0, 33}, {DType::F16, 17}, {DType::Q8_0, 48}};
  std::vector<std::vector<uint8_t>> bytes;
  std::vector<Tensor> tensors;
  uint32_t seed = 40;
  for (const Spec& s : specs) {
    const std::vector<float> v = random_vec(static_cast<size_t>(s.rows * cols), seed++);
    const size_t rb = row_bytes(s.type, cols);
    bytes.emplace_back(rb * static_cast<size_t>(s.rows));
    if (s.type == DType::F16) {
      for (size_t i = 0; i < v.size(); ++i) {
        const uint16_t h = f32_to_f16(v[i]);
        std::memcpy(&bytes.back()[2 * i], &h, 2);
      }
    } else {
      for (int64_t r = 0; r < s.rows; ++r)
        quantize_row(s.type, v.data() + r * cols, bytes.back().data() + r * rb, cols);
    }
    Tensor t;
    t.name = "part";
    t.type = s.type;
    t.n_dims = 2;
    t.ne[0] = cols;
    t.ne[1] = s.rows;
    t.data = bytes.back().data();
    t.nbytes = bytes.back().size();
    tensors.push_back(t);
  }
  for (int threads : {1, 2, 3}) {
    ThreadPool pool(threads);
    for (int n : {1, 5, 19}) {
      SCOPED_TRACE(testing::Message() << threads << " threads, " << n << " tokens");
      const std::vector<float> x = random_vec(static_cast<size_t>(n * cols), seed++);
      std::vector<std::vector<float>> separate, joint;
      std::vector<MatmulPart> parts;
      for (const Tensor& t : tensors) {
        separate.emplace_back(static_cast<size_t>(n * t.rows()));
        joint.emplace_back(separate.back().size(), NAN);
        matmul(t, x.data(), n, separate.back().data(), pool);
      }
      for (size_t i = 0; i < tensors.size(); ++i) parts.push_back({&tensors[i], joint[i].data()});
      matmul(parts, x.data(), n, pool);
      for (size_t i = 0; i < tensors.size(); ++i) {
        ASSERT_EQ(0, std::memcmp(separate[i].data(), joint[i].data(), joint[i].size() * 4))
            << "part " << i << " (" << dtype_name(tensors[i].type) << ")";
      }
    }
  }
}

// Rows of no elements are empty sums: every result is written, as 0 (an unwritten y kept
// whatever the buffer held, found by the sanitizer build on another machine).
TEST(Matmul, EmptyRowsGiveZeros) {
  uint8_t none[64] = {};
  for (DType type : {DType::F32, DType::F16, DType::BF16, DType::Q8_0, DType::Q4_0, DType::Q4_K}) {
    Tensor t;
    t.name = "w";
    t.type = type;
    t.n_dims = 2;
    t.ne[0] = 0;
    t.ne[1] = 37;
    t.data = none;
    for (int n : {1, 7}) {
      for (int threads : {1, 2}) {
        ThreadPool pool(threads);
        std::vector<float> x(1), y(static_cast<size_t>(37 * n), NAN);
        matmul(t, x.data(), n, y.data(), pool);
        for (float v : y) ASSERT_EQ(v, 0.0f) << dtype_name(type) << " n=" << n << " threads=" << threads;
      }
    }
  }
  EXPECT_EQ(dot_f32(nullptr, nullptr, 0), 0.0f);
}

TEST(Matmul, PartsOfDifferentWidthsAreAnError) {
  std::vector<float> a(4 * 8), b(4 * 16), x(16), y(8);
  Tensor ta, tb;
  ta.name = "blk.0.attn_q.weight";
  tb.name = "blk.0.attn_k.weight";
  for (Tensor* t : {&ta, &tb}) {
    t->type = DType::F32;
    t->n_dims = 2;
    t->ne[1] = 4;
  }
  ta.ne[0] = 8;
  tb.ne[0] = 16;
  ta.data = reinterpret_cast<const uint8_t*>(a.data());
  tb.data = reinterpret_cast<const uint8_t*>(b.data());
  const MatmulPart parts[] = {{&ta, y.data()}, {&tb, y.data()}};
  ThreadPool pool(1);
  try {
    matmul(parts, x.data(), 1, pool);
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("blk.0.attn_k.weight has rows of 16 elements"), std::string::npos)
        << e.what();
  }
}

TEST(Dot, MatchesReference) {
  for (int64_t n : {0, 1, 5, 16, 31, 64, 77, 1003}) {
    auto a = random_vec(static_cast<size_t>(n), 10), b = random_vec(static_cast<size_t>(n), 11);
    double ref = 0;
    for (int64_t i = 0; i < n; ++i) ref += static_cast<double>(a[i]) * b[i];
    EXPECT_NEAR(dot_f32(a.data(), b.data(), n), ref, 1e-5) << n;
  }
  // Strided rows give each row's dot_f32 exactly.
  const int64_t rows = 9, stride = 40, n = 37;
  auto a = random_vec(rows * stride, 12), x = random_vec(n, 13);
  std::vector<float> y(rows);
  dot_rows_f32(a.data(), stride, rows, x.data(), n, y.data());
  for (int64_t r = 0; r < rows; ++r) EXPECT_EQ(y[r], dot_f32(a.data() + r * stride, x.data(), n));
}

TEST(Norms, RmsNorm) {
  const int n = 3, d = 37;
  auto x = random_vec(n * d, 1, 3.0f), w = random_vec(d, 2);
  std::vector<float> y(n * d);
  rmsnorm(x.data(), w.data(), n, d, 1e-5f, y.data());
  for (int t = 0; t < n; ++t) {
    double ss = 0;
    for (int i = 0; i < d; ++i) ss += static_cast<double>(x[t * d + i]) * x[t * d + i];
    const double s = 1.0 / std::sqrt(ss / d + 1e-5);
    for (int i = 0; i < d; ++i) EXPECT_NEAR(y[t * d + i], x[t * d + i] * s * w[i], 1e-6);
  }
  // In place gives the same.
  rmsnorm(x.data(), w.data(), n, d, 1e-5f, x.data());
  EXPECT_EQ(x, y);
}

TEST(Norms, LayerNorm) {
  const int n = 2, d = 41;
  auto x = random_vec(n * d, 3, 2.0f), w = random_vec(d, 4), b = random_vec(d, 5);
  for (int t = 0; t < n; ++t) x[t * d] += 10.0f;  // a large mean must not hurt accuracy
  std::vector<float> y(n * d), y_nob(n * d);
  layernorm(x.data(), w.data(), b.data(), n, d, 1e-5f, y.data());
  layernorm(x.data(), w.data(), nullptr, n, d, 1e-5f, y_nob.data());
  for (int t = 0; t < n; ++t) {
    double mean = 0, var = 0;
    for (int i = 0; i < d; ++i) mean += x[t * d + i];
    mean /= d;
    for (int i = 0; i < d; ++i) var += (x[t * d + i] - mean) * (x[t * d + i] - mean);
    var /= d;
    for (int i = 0; i < d; ++i) {
      const double ref = (x[t * d + i] - mean) / std::sqrt(var + 1e-5) * w[i];
      EXPECT_NEAR(y_nob[t * d + i], ref, 1e-5);
      EXPECT_NEAR(y[t * d + i], ref + b[i], 1e-5);
    }
  }
}

// Reference RoPE: rotate each pair by its angle, in double.
void rope_reference(const RopeParams& p, int pos0, int n, int n_heads, std::vector<double>& x) {
  const int half = p.rope_dim / 2;
  for (int t = 0; t < n; ++t) {
    for (int h = 0; h < n_heads; ++h) {
      for (int i = 0; i < half; ++i) {
        double ang = (pos0 + t) * p.freq_scale * std::pow(p.theta, -2.0 * i / p.rope_dim);
        if (p.freq_factors) ang /= p.freq_factors[i];
        const size_t base = (static_cast<size_t>(t) * n_heads + h) * p.head_dim;
        const size_t a = base + (p.neox ? i : 2 * i), b = base + (p.neox ? i + half : 2 * i + 1);
        const double x0 = x[a], x1 = x[b];
        x[a] = x0 * std::cos(ang) - x1 * std::sin(ang);
        x[b] = x0 * std::sin(ang) + x1 * std::cos(ang);
      }
    }
  }
}

TEST(Rope, BothStylesWithPartialDimsAndFactors) {
  const int n = 4, n_heads = 3, head_dim = 12, pos0 = 37;
  std::vector<float> factors = {1.0f, 2.0f, 4.5f, 8.0f, 1.5f, 3.0f};  // rope_dim / 2 at most
  for (bool neox : {false, true}) {
    for (int rope_dim : {12, 8}) {
      for (const float* ff :
           {static_cast<const float*>(nullptr), static_cast<const float*>(factors.data())}) {
        RopeParams p;
        p.head_dim = head_dim;
        p.rope_dim = rope_dim;
        p.theta = 500000.0f;
        p.freq_scale = 0.5f;
        p.freq_factors = ff;
        p.neox = neox;
        auto x = random_vec(n * n_heads * head_dim, 9);
        std::vector<double> ref(x.begin(), x.end());
        rope(p, pos0, n, n_heads, x.data());
        rope_reference(p, pos0, n, n_heads, ref);
        for (size_t i = 0; i < x.size(); ++i) ASSERT_NEAR(x[i], ref[i], 2e-6) << i;
      }
    }
  }
}

TEST(Rope, PositionZeroIsIdentity) {
  RopeParams p;
  p.head_dim = p.rope_dim = 8;
  auto x = random_vec(8, 1);
  auto y = x;
  rope(p, 0, 1, 1, y.data());
  EXPECT_EQ(x, y);
}

TEST(Activations, SoftmaxIsStable) {
  std::vector<float> x = {1000.0f, 1001.0f, 999.0f, -1e30f};
  softmax(x.data(), 4);
  const double e0 = std::exp(-1.0), e2 = std::exp(-2.0), z = e0 + 1 + e2;
  EXPECT_NEAR(x[0], e0 / z, 1e-7);
  EXPECT_NEAR(x[1], 1 / z, 1e-7);
  EXPECT_NEAR(x[2], e2 / z, 1e-7);
  EXPECT_EQ(x[3], 0.0f);
}

TEST(Activations, SiluMulAndGelu) {
  auto g = random_vec(101, 1, 6.0f), u = random_vec(101, 2);
  auto out = g;
  silu_mul(out.data(), u.data(), 101);
  for (int i = 0; i < 101; ++i) {
    const double ref = g[i] / (1 + std::exp(-static_cast<double>(g[i]))) * u[i];
    EXPECT_NEAR(out[i], ref, 1e-6);
  }
  auto x = g;
  gelu_tanh(x.data(), 101);
  for (int i = 0; i < 101; ++i) {
    const double v = g[i];
    const double ref = 0.5 * v * (1 + std::tanh(std::sqrt(2 / M_PI) * (v + 0.044715 * v * v * v)));
    EXPECT_NEAR(x[i], ref, 1e-6);
  }
  std::vector<float> y = {1, 2, 3, 4, 5, 6}, b = {10, 20, 30};
  add_bias(y.data(), b.data(), 2, 3);
  EXPECT_EQ(y, (std::vector<float>{11, 22, 33, 14, 25, 36}));
  add_inplace(y.data(), b.data(), 3);
  EXPECT_EQ(y, (std::vector<float>{21, 42, 63, 14, 25, 36}));
}

// Reference causal GQA attention in double.
std::vector<double> attention_reference(const AttentionShape& s, const std::vector<float>& q, int n, int pos0,
                                        const std::vector<float>& k, const std::vector<float>& v) {
  const int hd = s.head_dim, qd = s.n_heads * hd, kvd = s.n_kv_heads * hd;
  std::vector<double> out(static_cast<size_t>(n * qd));
  for (int t = 0; t < n; ++t) {
    for (int h = 0; h < s.n_heads; ++h) {
      const int g = h / (s.n_heads / s.n_kv_heads);
      const int len = pos0 + t + 1;
      std::vector<double> sc(static_cast<size_t>(len));
      double mx = -1e300;
      for (int j = 0; j < len; ++j) {
        double d = 0;
        for (int i = 0; i < hd; ++i)
          d += static_cast<double>(q[t * qd + h * hd + i]) * k[j * kvd + g * hd + i];
        sc[j] = d / std::sqrt(static_cast<double>(hd));
        mx = std::max(mx, sc[j]);
      }
      double z = 0;
      for (auto& e : sc) z += (e = std::exp(e - mx));
      for (int i = 0; i < hd; ++i) {
        double acc = 0;
        for (int j = 0; j < len; ++j) acc += sc[j] / z * v[j * kvd + g * hd + i];
        out[t * qd + h * hd + i] = acc;
      }
    }
  }
  return out;
}

TEST(Attention, MatchesReferenceWithGqa) {
  ThreadPool pool(3);
  for (auto s : {AttentionShape{8, 2, 12}, AttentionShape{4, 4, 5}, AttentionShape{6, 1, 16}}) {
    for (int pos0 : {0, 3, 70}) {
      for (int n : {1, 6}) {
        const int qd = s.n_heads * s.head_dim, kvd = s.n_kv_heads * s.head_dim, ctx = pos0 + n;
        auto q = random_vec(static_cast<size_t>(n * qd), 1, 2.0f);
        auto k = random_vec(static_cast<size_t>(ctx * kvd), 2, 2.0f);
        auto v = random_vec(static_cast<size_t>(ctx * kvd), 3);
        std::vector<float> out(static_cast<size_t>(n * qd));
        attention(s, q.data(), n, pos0, k.data(), v.data(), out.data(), pool);
        auto ref = attention_reference(s, q, n, pos0, k, v);
        for (size_t i = 0; i < out.size(); ++i) ASSERT_NEAR(out[i], ref[i], 2e-6) << i;
      }
    }
  }
}

TEST(Attention, BatchAndThreadsDoNotChangeBits) {
  // Decode on 4 threads splits a KV head's query heads into parts (a group of 2 into
  // 2 x 1, a group of 8 into 4 x 2); the batch keeps them whole: the bits must agree.
  for (const AttentionShape s : {AttentionShape{8, 4, 16}, AttentionShape{8, 1, 16}}) {
    const int n = 40, pos0 = 200, qd = s.n_heads * s.head_dim, kvd = s.n_kv_heads * s.head_dim,
              ctx = pos0 + n;
    auto q = random_vec(static_cast<size_t>(n * qd), 4), k = random_vec(static_cast<size_t>(ctx * kvd), 5),
         v = random_vec(static_cast<size_t>(ctx * kvd), 6);
    ThreadPool one(1), four(4);
    std::vector<float> a(static_cast<size_t>(n * qd)), b(a.size()), c(a.size());
    attention(s, q.data(), n, pos0, k.data(), v.data(), a.data(), one);
    attention(s, q.data(), n, pos0, k.data(), v.data(), b.data(), four);
    for (int t = 0; t < n; ++t)
      attention(s, q.data() + t * qd, 1, pos0 + t, k.data(), v.data(), c.data() + t * qd, four);
    EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * 4));
    EXPECT_EQ(0, std::memcmp(a.data(), c.data(), a.size() * 4));
  }
}

}  // namespace
}  // namespace braid
