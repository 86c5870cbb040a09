// Micro benchmarks of the quantized dot-product kernels (braid/quant.h), one thread.
//
//   BM_DotRows/<type>        decode: quant_dot_rows over a 2048 x 5632 matrix (the
//                            down projection of a ~1B Llama); bytes = weight bytes, so
//                            bytes_per_second is the weight streaming rate. The matrix
//                            (6.5-12 MB) stays in a large L3 between iterations.
//   BM_DotRowsStream/<type>  the same over 64 such matrices in turn (0.4-0.8 GB), so
//                            weights come from DRAM as in real decoding.
//   BM_DotRowsStreamK2048    the same with 5632 x 2048 matrices (the up projection).
//   BM_PanelsStreamK2048     the same in panels (q4_0, q8_0, q4_K, q6_K on AVX-512 VNNI).
//   BM_DotRowsL2/<type>      decode of a 256 x 2048 matrix that stays in L2: the kernel's
//                            own speed, with no memory stalls.
//   BM_Tile/<type>           prompt processing: quant_matmul_tile of 64 activations
//                            against 512 x 5632 rows; items = multiply-adds (MAC/s).
//   BM_Matmul/<type>         prefill as the model runs it: braid::matmul of 64 tokens
//                            through a 5632 x 2048 matrix (a ~1B Llama's up projection,
//                            2-12 MB: larger than L2), one thread; items = MAC/s.
//   BM_MatmulF16             the same for F16 weights (the f32 GEMM path).
//   BM_Activation/<type>     quant_activation of one 5632-element vector.
//   BM_MemoryRead            plain sequential read of 512 MB (this machine's single-
//                            thread DRAM bandwidth, the ceiling for BM_DotRowsStream).
// Run: build/bench/micro_quant [--benchmark_filter=DotRows]
// BRAID_SIMD_TARGET=AVX2 (or any Highway target name this CPU supports) restricts the
// kernels to that target, to compare e.g. the AVX2 and AVX-512 kernels on one machine.
#include <benchmark/benchmark.h>

#include <hwy/targets.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "braid/dtype.h"
#include "braid/kernels.h"
#include "braid/quant.h"
#include "braid/tensor.h"
#include "braid/thread_pool.h"

namespace {

using braid::DType;

const DType kTypes[] = {DType::Q8_0, DType::Q4_0, DType::Q4_1, DType::Q5_0, DType::Q5_1,
                        DType::Q4_K, DType::Q5_K, DType::Q6_K, DType::Q2_K, DType::Q3_K};
constexpr int64_t kRows = 2048, kCols = 5632;

std::vector<uint8_t> random_matrix(DType t, int64_t rows, int64_t k, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> row(static_cast<size_t>(k));
  const size_t rb = braid::row_bytes(t, k);
  std::vector<uint8_t> w(rb * static_cast<size_t>(rows));
  if (t == DType::F16) {
    auto* h = reinterpret_cast<uint16_t*>(w.data());
    for (size_t i = 0; i < w.size() / 2; ++i) h[i] = braid::f32_to_f16(nd(gen));
    return w;
  }
  // Quantizing every row with the reference quantizer is slow for K types: quantize
  // 16 distinct rows and repeat them (speed does not depend on the values).
  std::vector<uint8_t> distinct(rb * 16);
  for (int r = 0; r < 16; ++r) {
    for (auto& v : row) v = nd(gen);
    braid::quantize_row(t, row.data(), distinct.data() + r * rb, k);
  }
  for (int64_t r = 0; r < rows; ++r) std::copy_n(distinct.data() + (r % 16) * rb, rb, w.data() + r * rb);
  return w;
}

struct Act {
  std::vector<uint8_t> mem;
  size_t bytes;
  Act(DType t, int64_t k, int64_t n) : bytes(braid::quant_activation_bytes(t, k)) {
    mem.resize(bytes * n + 64);
    std::mt19937 gen(1);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    std::vector<float> x(static_cast<size_t>(k));
    for (int64_t i = 0; i < n; ++i) {
      for (auto& v : x) v = nd(gen);
      braid::quant_activation(t, x.data(), k, at(i));
    }
  }
  void* at(int64_t i) {
    return reinterpret_cast<void*>((reinterpret_cast<uintptr_t>(mem.data()) + 63) / 64 * 64 + i * bytes);
  }
};

void DotRowsOf(benchmark::State& state, int64_t rows, int64_t cols, uint32_t seed) {
  const DType t = kTypes[state.range(0)];
  const auto w = random_matrix(t, rows, cols, seed);
  Act act(t, cols, 1);
  std::vector<float> y(rows);
  const size_t rb = braid::row_bytes(t, cols);
  for (auto _ : state) {
    braid::quant_dot_rows(t, w.data(), rb, 0, rows, act.at(0), cols, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(w.size()));
  state.SetLabel(std::string(braid::dtype_name(t)) + " " + braid::quant_simd_target());
}

void BM_DotRows(benchmark::State& state) { DotRowsOf(state, kRows, kCols, 1); }
// Decode from L2: a 256 x 2048 matrix (72-256 KB) repeated, so the kernel's own speed
// (not the memory's) sets the rate.
void BM_DotRowsL2(benchmark::State& state) { DotRowsOf(state, 256, 2048, 5); }

// panels: the matrices in panels (braid/quant.h), as a Model runs q4_0 / q8_0 / q4_K /
// q6_K on AVX-512 VNNI; skipped for other types and CPUs.
void DotRowsStream(benchmark::State& state, int64_t rows, int64_t cols, bool panels = false) {
  const DType t = kTypes[state.range(0)];
  if (panels && !braid::quant_panels_supported(t)) {
    state.SkipWithError("no panel kernels for this type on this CPU");
    return;
  }
  const int kMats = static_cast<int>(64 * kRows * kCols / (rows * cols));
  const size_t rb = braid::row_bytes(t, cols);
  const auto one = random_matrix(t, rows, cols, 2);
  std::vector<uint8_t> packed;
  if (panels) {
    packed.resize(braid::quant_panel_bytes(t, rows, cols));
    braid::quant_pack_panels(t, one.data(), rb, rows, cols, 0, (rows + 31) / 32, packed.data());
  }
  std::vector<std::vector<uint8_t>> mats(kMats, panels ? packed : one);
  Act act(t, cols, 1);
  std::vector<float> y(rows);
  int i = 0;
  for (auto _ : state) {
    if (panels) {
      braid::quant_matmul_panels(t, mats[i].data(), 0, rows, act.at(0), act.bytes, 1, cols, y.data(), rows);
    } else {
      braid::quant_dot_rows(t, mats[i].data(), rb, 0, rows, act.at(0), cols, y.data());
    }
    benchmark::DoNotOptimize(y.data());
    i = (i + 1) % kMats;
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(one.size()));
  state.SetLabel(std::string(braid::dtype_name(t)) + " " + braid::quant_simd_target());
}

void BM_DotRowsStream(benchmark::State& state) { DotRowsStream(state, kRows, kCols); }
// The up projection's shape (5632 rows of 2048): the model's rows are mostly this short.
void BM_DotRowsStreamK2048(benchmark::State& state) { DotRowsStream(state, kCols, kRows); }
void BM_PanelsStreamK2048(benchmark::State& state) { DotRowsStream(state, kCols, kRows, true); }

void BM_Tile(benchmark::State& state) {
  const DType t = kTypes[state.range(0)];
  constexpr int64_t kTileRows = 512, kTokens = 64;
  const auto w = random_matrix(t, kTileRows, kCols, 3);
  Act act(t, kCols, kTokens);
  std::vector<float> y(kTileRows * kTokens);
  const size_t rb = braid::row_bytes(t, kCols);
  for (auto _ : state) {
    braid::quant_matmul_tile(t, w.data(), rb, 0, kTileRows, act.at(0), act.bytes, kTokens, kCols, y.data(),
                             kTileRows);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * kTileRows * kTokens * kCols);
  state.SetLabel(std::string(braid::dtype_name(t)) + " MAC/s");
}

void MatmulOf(benchmark::State& state, DType t) {
  constexpr int64_t kOut = 5632, kIn = 2048, kTokens = 64;
  const auto w = random_matrix(t, kOut, kIn, 4);
  braid::Tensor W;
  W.name = "up";
  W.type = t;
  W.n_dims = 2;
  W.ne[0] = kIn;
  W.ne[1] = kOut;
  W.data = w.data();
  W.nbytes = w.size();
  std::vector<float> x(kIn * kTokens, 0.25f), y(kOut * kTokens);
  braid::ThreadPool pool(1);
  for (auto _ : state) {
    braid::matmul(W, x.data(), kTokens, y.data(), pool);
    benchmark::DoNotOptimize(y.data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * kOut * kIn * kTokens);
  state.SetLabel(std::string(braid::dtype_name(t)) + " MAC/s");
}

void BM_Matmul(benchmark::State& state) { MatmulOf(state, kTypes[state.range(0)]); }
void BM_MatmulF16(benchmark::State& state) { MatmulOf(state, DType::F16); }

void BM_Activation(benchmark::State& state) {
  const DType t = kTypes[state.range(0)];
  std::vector<float> x(kCols, 0.5f);
  Act act(t, kCols, 1);
  for (auto _ : state) {
    braid::quant_activation(t, x.data(), kCols, act.at(0));
    benchmark::DoNotOptimize(act.mem.data());
  }
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * kCols);
  state.SetLabel(braid::dtype_name(t));
}

void BM_MemoryRead(benchmark::State& state) {
  std::vector<uint64_t> buf((size_t{512} << 20) / sizeof(uint64_t), 1);
  for (auto _ : state) {
    uint64_t acc[8] = {};
    for (size_t i = 0; i < buf.size(); i += 8) {
      for (int j = 0; j < 8; ++j) acc[j] += buf[i + j];
    }
    benchmark::DoNotOptimize(acc);
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * static_cast<int64_t>(buf.size() * 8));
}

BENCHMARK(BM_MemoryRead)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_DotRows)->DenseRange(0, 9);
BENCHMARK(BM_DotRowsL2)->DenseRange(0, 9);
BENCHMARK(BM_DotRowsStream)->DenseRange(0, 9);
BENCHMARK(BM_DotRowsStreamK2048)->DenseRange(0, 9);
BENCHMARK(BM_PanelsStreamK2048)->DenseRange(0, 9);
BENCHMARK(BM_Tile)->DenseRange(0, 9)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Matmul)->DenseRange(0, 9)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MatmulF16)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Activation)->DenseRange(0, 9)->Unit(benchmark::kMicrosecond);

}  // namespace

int main(int argc, char** argv) {
  if (const char* want = std::getenv("BRAID_SIMD_TARGET")) {
    for (int64_t t = hwy::SupportedTargets(); t != 0; t &= t - 1) {
      const int64_t bit = t & -t;
      if (std::strcmp(hwy::TargetName(bit), want) == 0) hwy::SetSupportedTargetsForTest(bit);
    }
  }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
