





// The tile driver shared by the hand-written x86 kernels (quant_avx512-inl.h,
// quant_avx2-inl.h): rows x activations in register tiles, each weight unit decoded once
// per row and reused for kTileT activations. Included inside a Highway target
// namespace; K supplies Acc (an f32 vector), Zero, Sum, Units, Decode, Consume, kRec,
// kTileT x kTileR (activations x rows per prefill tile) and kDecodeRows (rows per tile
// for one activation).
//
// Every (row, activation) pair sees the same operations in the same order whatever the
// tile shape, so quant_matmul_tile and quant_dot_rows agree bit for bit: units alternate
// between two accumulators (even units, odd units), summed once at the end.
namespace tile {

// Bytes ahead of the current weight that decode prefetches (24 KiB: 6 pages; 3 to 48 KiB
// were tried, gains flatten from ~6 KiB on).
constexpr int64_t kPrefetchAhead = 24576;

// Rows [r, r+R) x activations xb[0..T) (record pointers): y[t][i] = dot(row r+i, xb[t]).
template <class K, int R, int T>
BRAID_TILE_ATTR void RunTile(const K& k, const uint8_t* W, size_t stride, int64_t r, const char* const* xb,
                             float* const* y) {
  typename K::Acc acc[R][T][2];
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < T; ++t) acc[i][t][0] = acc[i][t][1] = K::Zero();
  // One running offset into every activation's records, not T pointers stepped each
  // unit: GCC vectorised those T increments and then extracted each pointer with
  // shuffles, ~2T extra port-5 operations per step (q4_0 prefill ran 1.8x slower at T=8).
  const char* const* x = xb;
  int64_t off = 0;
  const int64_t units = k.Units();
  // Decode streams every weight from DRAM once. The hardware prefetchers alone left it
  // at ~40% of the read bandwidth (they stop at 4 KiB pages, and a TLB miss stalls the
  // stream), so prefetch kPrefetchAhead bytes ahead, past the row's end into the next
  // rows, which follow it in memory (micro_quant DotRowsStream: 4.7 -> 9.8 GB/s q4_0).
  const int64_t unit_bytes = static_cast<int64_t>(stride) / (units > 0 ? units : 1);
  int64_t u = 0;
  for (; u + 1 < units; u += 2) {
    if constexpr (T == 1) {
      for (int i = 0; i < R; ++i) {
        const char* pf = reinterpret_cast<const char*>(W + (r + i) * stride + u * unit_bytes) + kPrefetchAhead;
        _mm_prefetch(pf, _MM_HINT_T0);
        _mm_prefetch(pf + 64, _MM_HINT_T0);
        if (2 * unit_bytes > 128) _mm_prefetch(pf + 128, _MM_HINT_T0);
      }
    }
    for (int i = 0; i < R; ++i) {
      const uint8_t* row = W + (r + i) * stride;
      const auto d0 = k.Decode(row, u);
      for (int t = 0; t < T; ++t) k.Consume(d0, x[t] + off, acc[i][t][0]);
      const auto d1 = k.Decode(row, u + 1);
      for (int t = 0; t < T; ++t) k.Consume(d1, x[t] + off + K::kRec, acc[i][t][1]);
    }
    off += 2 * K::kRec;
  }
  if (u < units) {
    for (int i = 0; i < R; ++i) {
      const auto d0 = k.Decode(W + (r + i) * stride, u);
      for (int t = 0; t < T; ++t) k.Consume(d0, x[t] + off, acc[i][t][0]);
    }
  }
  for (int i = 0; i < R; ++i)
    for (int t = 0; t < T; ++t) y[t][i] = K::Sum(acc[i][t][0], acc[i][t][1]);
}

// Rows [r0, r1) x n activations, tiled R x T with smaller tiles for the remainders.
template <class K, int R, int T>
BRAID_TILE_ATTR void RunBlock(const K& k, const uint8_t* W, size_t stride, int64_t r0, int64_t r1,
                              const char* const* xb, int64_t n, float* y, size_t ldy) {
  int64_t t0 = 0;
  for (; t0 + T <= n; t0 += T) {
    float* ys[T];
    int64_t r = r0;
    for (; r + R <= r1; r += R) {
      for (int t = 0; t < T; ++t) ys[t] = y + (t0 + t) * ldy + (r - r0);
      RunTile<K, R, T>(k, W, stride, r, xb + t0, ys);
    }
    for (; r < r1; ++r) {
      for (int t = 0; t < T; ++t) ys[t] = y + (t0 + t) * ldy + (r - r0);
      RunTile<K, 1, T>(k, W, stride, r, xb + t0, ys);
    }
  }
  for (; t0 < n; ++t0) {
    float* ys[1];
    int64_t r = r0;
    for (; r + R <= r1; r += R) {
      ys[0] = y + t0 * ldy + (r - r0);
      RunTile<K, R, 1>(k, W, stride, r, xb + t0, ys);
    }
    for (; r < r1; ++r) {
      ys[0] = y + t0 * ldy + (r - r0);
      RunTile<K, 1, 1>(k, W, stride, r, xb + t0, ys);
    }
  }
}

// Rows [r0, r1) x n activations in blocks of rows that stay in L2 while every
// activation passes over them: without blocking, each group of T activations streamed
// the whole matrix from DRAM again (prefill ran at half the tile kernel's speed).
template <class K, int R, int T>
BRAID_TILE_ATTR void RunAll(const K& k, const uint8_t* W, size_t stride, int64_t r0, int64_t r1,
                            const char* const* xb, int64_t n, float* y, size_t ldy) {
  if (n <= T) {
    RunBlock<K, R, T>(k, W, stride, r0, r1, xb, n, y, ldy);
    return;
  }
  constexpr int64_t kBlockBytes = 96 * 1024;
  const int64_t rows = std::max<int64_t>(R, kBlockBytes / static_cast<int64_t>(std::max<size_t>(stride, 1)) / R * R);
  for (int64_t b = r0; b < r1; b += rows) {
    RunBlock<K, R, T>(k, W, stride, b, std::min(b + rows, r1), xb, n, y + (b - r0), ldy);
  }
}

// Returns false (caller falls back to the portable kernels) if the activation layout
// is not the one K was written for.
template <class K>
BRAID_TILE_ATTR bool Run(K& k, const ActLayout& L, const uint8_t* W, size_t stride, int64_t r0, int64_t r1,
                         const void* xq, size_t xq_stride, int64_t n, float* y, size_t ldy) {
  if (!K::Matches(L)) return false;
  k.nb = L.nb;
  constexpr int64_t kMaxAct = 64;  // activations per pass
  const char* xb[kMaxAct];
  const char* x = static_cast<const char*>(xq);
  for (int64_t t0 = 0; t0 < n; t0 += kMaxAct) {
    const int64_t m = std::min(kMaxAct, n - t0);
    for (int64_t t = 0; t < m; ++t) xb[t] = x + (t0 + t) * xq_stride;
    if (m == 1) {
      RunAll<K, K::kDecodeRows, 1>(k, W, stride, r0, r1, xb, 1, y + t0 * ldy, ldy);
    } else {
      RunAll<K, K::kTileR, K::kTileT>(k, W, stride, r0, r1, xb, m, y + t0 * ldy, ldy);
    }
  }
  return true;
}

}  // namespace tile
