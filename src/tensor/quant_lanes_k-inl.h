// The K types (q4_K, q5_K, q6_K) in quant_lanes-inl.h's scheme: tokens in the lanes for
// prefill, rows in the lanes for decode, one canonical order for both. Included by
// quant_avx512-inl.h after quant_lanes-inl.h.
//
// The canonical order, per (row, token), super-block by super-block:
//
//   y = fma(float(T_s), d_s * dx_s, y)            T_s = sum_j scale_j * dot_j, exact
//   y = fma(float(M_s), (-dmin_s) * dx_s, y)      M_s = sum_j min_j * bsum_j (q4_K, q5_K)
//
// dot_j is sub-block j's integer dot product of the codes (with q6_K's -32) and the
// activation's q8_K values. Prefill computes each dot_j with vpdpbusd (weights broadcast
// as signed bytes, activations as x + 128, corrected by -128 * sum of the sub-block's
// codes), scales it with vpmulld and sums in 32-bit integers; M_s with vpdpwssd on pairs
// of activation block sums. Decode uses the tile kernels' integer forms (Ints in
// quant_avx512-inl.h). Both give the same integers.
namespace lanes {

// A super-block's bytes in a group's panel: 64 vectors of activation bytes (the record's
// 256 values), 4 of bsum pairs, 1 of scales.
constexpr int64_t kSuperPanel = 69 * 64;
constexpr int kRowsK = 6;  // rows per K prefill tile: 8 activation vectors + 3 x 6 accumulators (4: 10% slower, 8: same)

// Sums of the unsigned bytes of 16-byte chunks: 8 of a and b (lanes 0..3 / 4..7 of the
// result are a's / b's four per 256 bits, in order).
BRAID_VNNI HWY_INLINE __m256i ChunkSums16(__m512i a, __m512i b) {
  const __m512i z = _mm512_setzero_si512();
  const __m512i sa = _mm512_sad_epu8(a, z), sb = _mm512_sad_epu8(b, z);  // 8 qwords each
  const __m512i even = _mm512_setr_epi64(0, 2, 4, 6, 8, 10, 12, 14), odd = _mm512_setr_epi64(1, 3, 5, 7, 9, 11, 13, 15);
  const __m512i p = _mm512_add_epi64(_mm512_permutex2var_epi64(sa, even, sb), _mm512_permutex2var_epi64(sa, odd, sb));
  return _mm512_cvtepi64_epi32(p);
}

// Sums of the unsigned bytes of 32-byte chunks: a's two, then b's two (lanes 0..3).
BRAID_VNNI HWY_INLINE __m128i ChunkSums32(__m512i a, __m512i b) {
  const __m256i s16 = ChunkSums16(a, b);  // a0 a1 a2 a3 b0 b1 b2 b3 (16-byte chunks)
  return _mm_hadd_epi32(_mm256_castsi256_si128(s16), _mm256_extracti128_si256(s16, 1));
}

// q4_K and q5_K. Chunk c (0..7) of a super-block is 32 values in the record's order
// (quant_act.h): sub-blocks 0, 2, 1, 3, 4, 6, 5, 7.
template <DType kType>
struct LK4 {
  using K = KK4<kType>;
  static constexpr int kChunks = 8, kDwords = 8;  // per chunk
  static constexpr bool kMins = true;
  // Per (super-block, row) in the scratch: 8 corrections, 8 scales, 4 min pairs.
  static constexpr int kInts = 20, kMinAt = 16;
  K k;

  BRAID_VNNI HWY_INLINE void Partials(const uint8_t* row, int64_t sb, const char* rec, __m512i& s, __m128i& m,
                                      float& d, float& ndmin) const {
    const auto dec = k.Decode(row, sb);
    k.Ints(dec, rec, s, m);
    d = dec.d;
    ndmin = -dec.dmin;
  }

  // Codes (chunk order), corrections, scales and min pairs of super-block sb.
  BRAID_VNNI HWY_INLINE void Weights(const uint8_t* row, int64_t sb, int8_t* codes, int32_t* ints, float* f) const {
    const auto dec = k.Decode(row, sb);
    for (int v = 0; v < 4; ++v) _mm512_store_si512(codes + 64 * v, dec.v[v]);
    const __m128i sum_lo = ChunkSums32(dec.v[0], dec.v[1]);  // chunks 0, 1, 2, 3
    const __m128i sum_hi = ChunkSums32(dec.v[2], dec.v[3]);  // chunks 4..7
    const __m256i sums = _mm256_set_m128i(sum_hi, sum_lo);
    _mm256_store_si256(reinterpret_cast<__m256i*>(ints), _mm256_sub_epi32(_mm256_setzero_si256(), _mm256_slli_epi32(sums, 7)));
    // Scales by sub-block (bytes 0..7 of ScalesK4) in chunk order.
    const __m128i sc = _mm_shuffle_epi8(ScalesK4(row + sb * K::kBlock + 4), _mm_setr_epi8(0, 2, 1, 3, 4, 6, 5, 7, -1, -1, -1, -1, -1, -1, -1, -1));
    _mm256_store_si256(reinterpret_cast<__m256i*>(ints + 8), _mm256_cvtepu8_epi32(sc));
    _mm_store_si128(reinterpret_cast<__m128i*>(ints + kMinAt), dec.mins);  // (min_2k, min_2k+1) pairs
    f[0] = dec.d;
    f[1] = -dec.dmin;
  }
};

// q6_K: chunk c (0..15) is sub-block c, 16 values in natural order; weights -32..31.
struct LQ6K {
  using K = KQ6K;
  static constexpr int kChunks = 16, kDwords = 4;
  static constexpr bool kMins = false;
  static constexpr int kInts = 32, kMinAt = 0;
  K k;

  BRAID_VNNI HWY_INLINE void Partials(const uint8_t* row, int64_t sb, const char* rec, __m512i& s, __m128i& m,
                                      float& d, float& ndmin) const {
    const auto dec = k.Decode(row, sb);
    s = k.Ints(dec, rec);
    m = _mm_setzero_si128();
    d = dec.d;
    ndmin = 0.0f;
  }

  BRAID_VNNI HWY_INLINE void Weights(const uint8_t* row, int64_t sb, int8_t* codes, int32_t* ints, float* f) const {
    const auto dec = k.Decode(row, sb);
    const __m512i c32 = _mm512_set1_epi8(32);
    for (int v = 0; v < 4; ++v) _mm512_store_si512(codes + 64 * v, _mm512_sub_epi8(dec.v[v], c32));
    // sum(code - 32) over 16 values = sum(code) - 512.
    const __m256i off = _mm256_set1_epi32(16 * 32);
    const __m256i s01 = _mm256_sub_epi32(ChunkSums16(dec.v[0], dec.v[1]), off);
    const __m256i s23 = _mm256_sub_epi32(ChunkSums16(dec.v[2], dec.v[3]), off);
    const __m256i zero = _mm256_setzero_si256();
    _mm256_store_si256(reinterpret_cast<__m256i*>(ints), _mm256_sub_epi32(zero, _mm256_slli_epi32(s01, 7)));
    _mm256_store_si256(reinterpret_cast<__m256i*>(ints + 8), _mm256_sub_epi32(zero, _mm256_slli_epi32(s23, 7)));
    _mm512_store_si512(ints + 16, _mm512_cvtepi16_epi32(dec.sc16));
    f[0] = dec.d;
    f[1] = 0.0f;
  }
};

// ---------------------------------------------------------------- decode

// Passes of 16 rows in 4 groups of 4, prefetching the next pass, as DecodeRows
// (quant_lanes-inl.h): one FMA per super-block (two with mins) serves all 16 rows.
template <class T>
BRAID_VNNI void DecodeRowsK(const T& kt, const ActLayout& L, const uint8_t* W, size_t stride, int64_t r0, int64_t r1,
                            const char* x, float* y) {
  constexpr int kG = kPassGroups, kR = kPassRows;
  const int64_t nb = L.nb;
  const int64_t sb_bytes = static_cast<int64_t>(stride) / (nb > 0 ? nb : 1);
  for (int64_t r = r0; r < r1; r += kR) {
    const Pass pass(W, stride, r, r1);
    __m512 acc = _mm512_setzero_ps();  // lane 4g + i: row r + 4g + i
    for (int64_t sb = 0; sb < nb; ++sb) {
      const char* rec = x + sb * static_cast<int64_t>(L.rec);
      __m512 z[kG];
      __m128i mm[kG];
      alignas(64) float d[kR], nd[kR];
      for (int g = 0; g < kG; ++g) {
        __m512i s[4];
        __m128i m[4];
        pass.Prefetch(g, sb * sb_bytes, (T::K::kBlock + 63) / 64);
        for (int i = 0; i < 4; ++i) {
          kt.Partials(pass.p[g][i], sb, rec, s[i], m[i], d[4 * g + i], nd[4 * g + i]);
        }
        z[g] = _mm512_castsi512_ps(TransposeReduce(s[0], s[1], s[2], s[3]));  // lane 4l + i: row i
        if constexpr (T::kMins) mm[g] = _mm_hadd_epi32(_mm_hadd_epi32(m[0], m[1]), _mm_hadd_epi32(m[2], m[3]));
      }
      __m512 zt[4];
      Transpose4x128(z, zt);  // zt[l] lane 4g + i: group g's lane 4l + i
      const __m512i t = _mm512_add_epi32(_mm512_add_epi32(_mm512_castps_si512(zt[0]), _mm512_castps_si512(zt[1])),
                                         _mm512_add_epi32(_mm512_castps_si512(zt[2]), _mm512_castps_si512(zt[3])));
      float dx;
      std::memcpy(&dx, rec + L.d, 4);
      const __m512 vdx = _mm512_set1_ps(dx);
      acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(t), _mm512_mul_ps(_mm512_load_ps(d), vdx), acc);
      if constexpr (T::kMins) {
        __m512i mv = _mm512_castsi128_si512(mm[0]);
        mv = _mm512_inserti32x4(mv, mm[1], 1);
        mv = _mm512_inserti32x4(mv, mm[2], 2);
        mv = _mm512_inserti32x4(mv, mm[3], 3);
        acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(mv), _mm512_mul_ps(_mm512_load_ps(nd), vdx), acc);
      }
    }
    const int64_t rows = std::min<int64_t>(kR, r1 - r);
    _mm512_mask_storeu_ps(y + (r - r0), static_cast<__mmask16>((1u << rows) - 1), acc);
  }
}

// ---------------------------------------------------------------- prefill

// Panel of m tokens: per group of 16 and super-block, the record's 256 values (64
// vectors, dword d of the record's 64-byte piece p in slot 16p + d, as x + 128), the 4
// pairs of 32-value block sums (q4_K, q5_K) and the scales.
BRAID_VNNI inline void BuildPanelK(const ActLayout& L, const char* x, size_t xq_stride, int64_t m, char* panel) {
  const int64_t nb = L.nb;
  const int64_t groups = (m + kGroup - 1) / kGroup;
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t t0 = g * kGroup, valid = std::min<int64_t>(kGroup, m - t0);
    for (int64_t sb = 0; sb < nb; ++sb) {
      char* out = panel + (g * nb + sb) * kSuperPanel;
      auto rec = [&](int64_t t) { return x + (t0 + t) * static_cast<int64_t>(xq_stride) + sb * static_cast<int64_t>(L.rec); };
      for (int piece = 0; piece < 4; ++piece) {
        __m512i r[16], c[16];
        for (int t = 0; t < kGroup; ++t)
          r[t] = t < valid ? _mm512_loadu_si512(rec(t) + L.qs + 64 * piece) : _mm512_setzero_si512();
        Transpose16(r, c);
        for (int d = 0; d < 16; ++d) _mm512_store_si512(out + (16 * piece + d) * 64, _mm512_xor_si512(c[d], flip));
      }
      int32_t* bs = reinterpret_cast<int32_t*>(out + 64 * 64);
      float* dx = reinterpret_cast<float*>(out + 68 * 64);
      for (int t = 0; t < kGroup; ++t) {
        for (int k = 0; k < 4; ++k) {
          int32_t v = 0;
          if (t < valid && L.bs32 != 0) std::memcpy(&v, rec(t) + L.bs32 + 4 * k, 4);
          bs[16 * k + t] = v;
        }
        float v = 0.0f;
        if (t < valid) std::memcpy(&v, rec(t) + L.d, 4);
        dx[t] = v;
      }
    }
  }
}

// Scratch of one K tile: per super-block, kRowsK rows of 256 code bytes, T::kInts ints
// and 2 floats (d, -dmin).
template <class T>
BRAID_VNNI void PrepareK(const T& kt, const uint8_t* W, size_t stride, int64_t r, int64_t r1, int64_t nb, Scratch& s) {
  for (int i = 0; i < kRowsK; ++i) {
    const uint8_t* row = W + std::min(r + i, r1 - 1) * stride;
    for (int64_t sb = 0; sb < nb; ++sb) {
      kt.Weights(row, sb, s.w.data() + (sb * kRowsK + i) * 256, s.corr.data() + (sb * kRowsK + i) * 32,
                 s.dw.data() + (sb * kRowsK + i) * 2);
    }
  }
}

// kPrefetch: as GroupTile's (the tile's first group prefetches the next tile's rows).
template <class T, bool kPrefetch>
BRAID_VNNI HWY_INLINE void GroupTileK(const Scratch& s, int64_t nb, const char* group, const char* pf, int64_t pf_lines,
                                      __m512 (&acc)[kRowsK]) {
  for (int i = 0; i < kRowsK; ++i) acc[i] = _mm512_setzero_ps();
  const int64_t pf_per_sb = kPrefetch && nb > 0 ? (pf_lines + nb - 1) / nb : 0;
  for (int64_t sb = 0; sb < nb; ++sb) {
    if constexpr (kPrefetch) {
      for (int64_t l = sb * pf_per_sb; l < std::min(pf_lines, (sb + 1) * pf_per_sb); ++l)
        _mm_prefetch(pf + 64 * l, _MM_HINT_T0);
    }
    const char* pb = group + sb * kSuperPanel;
    const int8_t* w = s.w.data() + sb * (kRowsK * 256);
    const int32_t* ints = s.corr.data() + sb * (kRowsK * 32);
    const float* f = s.dw.data() + sb * (kRowsK * 2);
    __m512i tot[kRowsK];
    for (int i = 0; i < kRowsK; ++i) tot[i] = _mm512_setzero_si512();
    for (int c = 0; c < T::kChunks; ++c) {
      __m512i xv[T::kDwords];
      for (int g = 0; g < T::kDwords; ++g) xv[g] = _mm512_load_si512(pb + (c * T::kDwords + g) * 64);
      __m512i v[kRowsK];
      for (int i = 0; i < kRowsK; ++i) v[i] = _mm512_set1_epi32(ints[32 * i + c]);
      for (int g = 0; g < T::kDwords; ++g) {
        for (int i = 0; i < kRowsK; ++i) {
          int32_t q;
          std::memcpy(&q, w + 256 * i + 4 * (c * T::kDwords + g), 4);
          v[i] = _mm512_dpbusd_epi32(v[i], xv[g], _mm512_set1_epi32(q));
        }
      }
      for (int i = 0; i < kRowsK; ++i)
        tot[i] = _mm512_add_epi32(tot[i], _mm512_mullo_epi32(v[i], _mm512_set1_epi32(ints[32 * i + T::kChunks + c])));
    }
    const __m512 dx = _mm512_load_ps(reinterpret_cast<const float*>(pb + 68 * 64));
    for (int i = 0; i < kRowsK; ++i)
      acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(tot[i]), _mm512_mul_ps(dx, _mm512_set1_ps(f[2 * i])), acc[i]);
    if constexpr (T::kMins) {
      __m512i bs[4];
      for (int k = 0; k < 4; ++k) bs[k] = _mm512_load_si512(pb + (64 + k) * 64);
      for (int i = 0; i < kRowsK; ++i) {
        __m512i mv = _mm512_setzero_si512();
        for (int k = 0; k < 4; ++k) mv = _mm512_dpwssd_epi32(mv, bs[k], _mm512_set1_epi32(ints[32 * i + T::kMinAt + k]));
        acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(mv), _mm512_mul_ps(dx, _mm512_set1_ps(f[2 * i + 1])), acc[i]);
      }
    }
  }
}

// The tiles of rows [r0, r1) of W (rows stride bytes apart) x the activation panel
// (BuildPanelK's, groups groups of m tokens): y + (r - r0) for row r.
template <class T>
BRAID_VNNI void TilesK(const T& kt, int64_t nb, const uint8_t* W, size_t stride, int64_t r0, int64_t r1,
                       int64_t m, float* y, size_t ldy, Scratch& s) {
  const int64_t groups = (m + kGroup - 1) / kGroup;
  for (int64_t r = r0; r < r1; r += kRowsK) {
    PrepareK(kt, W, stride, r, r1, nb, s);
    const int rows = static_cast<int>(std::min<int64_t>(kRowsK, r1 - r));
    int64_t next;
    const int64_t next_lines = NextTileLines(r, r1, kRowsK, stride, &next);
    for (int64_t g = 0; g < groups; ++g) {
      __m512 acc[kRowsK];
      const char* group = s.panel.data() + g * nb * kSuperPanel;
      if (g == 0) {
        GroupTileK<T, true>(s, nb, group, reinterpret_cast<const char*>(W + next * stride), next_lines, acc);
      } else {
        GroupTileK<T, false>(s, nb, group, nullptr, 0, acc);
      }
      StoreTile(acc, rows, std::min<int64_t>(kGroup, m - g * kGroup),
                y + g * kGroup * static_cast<int64_t>(ldy) + (r - r0), ldy);
    }
  }
}

// The scratch for PrefillK's tiles (and BuildPanelK's panel of m tokens).
inline void SizeScratchK(int64_t nb, int64_t m, Scratch& s) {
  const int64_t groups = (m + kGroup - 1) / kGroup;
  s.panel.resize(static_cast<size_t>(groups * nb * kSuperPanel));
  s.w.resize(static_cast<size_t>(nb * kRowsK * 256));
  s.corr.resize(static_cast<size_t>(nb * kRowsK * 32));
  s.dw.resize(static_cast<size_t>(nb * kRowsK * 2));
}

template <class T>
BRAID_VNNI void PrefillK(const T& kt, const ActLayout& L, const uint8_t* W, size_t stride, int64_t r0, int64_t r1,
                         const char* x, size_t xq_stride, int64_t m, float* y, size_t ldy) {
  Scratch& s = ThreadScratch();
  SizeScratchK(L.nb, m, s);
  BuildPanelK(L, x, xq_stride, m, s.panel.data());
  TilesK(kt, L.nb, W, stride, r0, r1, m, y, ldy, s);
}

template <class T>
BRAID_VNNI bool RunK(T& kt, const ActLayout& L, const uint8_t* W, size_t stride, int64_t r0, int64_t r1,
                     const void* xq, size_t xq_stride, int64_t n, float* y, size_t ldy) {
  if (!T::K::Matches(L)) return false;
  kt.k.nb = L.nb;
  const char* x = static_cast<const char*>(xq);
  const int64_t xs = static_cast<int64_t>(xq_stride), ys = static_cast<int64_t>(ldy);
  ForPasses(
      n, [&](int64_t t0, int64_t m) { PrefillK(kt, L, W, stride, r0, r1, x + t0 * xs, xq_stride, m, y + t0 * ys, ldy); },
      [&](int64_t t) { DecodeRowsK(kt, L, W, stride, r0, r1, x + t * xs, y + t * ys); });
  return true;
}

}  // namespace lanes
