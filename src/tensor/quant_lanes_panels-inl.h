// AVX-512 VNNI kernels for q4_0, q8_0, q4_K and q6_K matrices in panels (layout:
// quant_panels.h). Included by quant_avx512-inl.h after quant_lanes-inl.h and
// quant_lanes_k-inl.h, inside the HWY_AVX3_DL and HWY_AVX3 target namespaces; they follow
// the lanes kernels' canonical orders, so a matrix gives the same bits in panels as in
// rows (tests/test_quant.cpp checks every output).
//
// Why panels: the row decode (DecodeRows, DecodeRowsK) streams 16 rows at once, gathers
// each row's blocks into lanes with byte permutes, then transposes the per-block sums of
// 4 rows and of 4 groups. From L2 it ran 12.5-13.6 GB/s on one Cascade Lake core, about
// what the core's share of DRAM delivers, so it could not hide the memory stalls: 55-82%
// of the machine's read bandwidth at 2 threads. In panels a 64-byte load holds 4 bytes of
// each of 16 rows, a broadcast activation dword multiplies all 16 at once, and a block's
// 16 integer sums come out in the lanes, ready for one FMA: no permutes and no
// transposes (from L2: q4_0 38.5 GB/s, q4_K 24.0, q6_K 14.6). A thread's rows are one
// contiguous stream (the next panel follows its last block column), prefetched ahead.
// From DRAM at 2 threads they match a plain read loop (micro_quant BM_PanelsStreamK2048;
// docs/benchmarks.md, session 10).
namespace lanes {

// Bytes ahead of the current block column that decode prefetches (into L1: the column
// is used once, a few hundred cycles later).
constexpr int64_t kPanelAhead = 2304;

BRAID_VNNI HWY_INLINE __m512i Bcast32(const char* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// A panel's outputs (acc[h] lane i: row 16h + i), its first `rows` rows, to y.
BRAID_VNNI HWY_INLINE void StorePanel(const __m512 (&acc)[2], int64_t rows, float* y) {
  for (int h = 0; h < 2; ++h) {
    const int64_t m = std::clamp<int64_t>(rows - kPanelHalf * h, 0, kPanelHalf);
    _mm512_mask_storeu_ps(y + kPanelHalf * h, static_cast<__mmask16>((1u << m) - 1), acc[h]);
  }
}

// The K types' block columns (4.5 and 6.6 KiB) are prefetched one column ahead, a
// quarter at a time as the column's work goes on: step `step` of `steps` prefetches its
// share of the next column (a burst of a whole column's lines at once, or a distance
// shorter than a column, left decode from DRAM no faster than the row kernels).
template <int64_t kBB>
BRAID_VNNI HWY_INLINE void PrefetchAhead(const uint8_t* col, int step, int steps) {
  constexpr int64_t kLines = kBB / 64;
  const int64_t l0 = kLines * step / steps, l1 = kLines * (step + 1) / steps;
  for (int64_t l = l0; l < l1; ++l)
    _mm_prefetch(reinterpret_cast<const char*>(col) + kBB + 64 * l, _MM_HINT_T0);
}

// y[r - r0] = row r . the activation at x, for rows [r0, r1) of the panels P, r0 a
// multiple of 32: per block column, 32 rows' exact integer sums in the lanes of two
// vectors, then y = fma(float(isum), dw * dx, y) per row (the canonical order).
template <DType kType>
BRAID_VNNI void PanelDecode(const ActLayout& L, const uint8_t* P, int64_t r0, int64_t r1, const char* x,
                            float* y) {
  constexpr int kV = PanelVectors(kType);
  constexpr int64_t kBB = PanelBlockBytes(kType);
  const int64_t nb = L.nb;
  const __m512i low = _mm512_set1_epi8(0x0F);
  for (int64_t r = r0; r < r1; r += kQuantPanelRows) {
    const uint8_t* panel = P + (r / kQuantPanelRows) * nb * kBB;
    __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* col = panel + b * kBB;
      for (int l = 0; l < kBB / 64; ++l)
        _mm_prefetch(reinterpret_cast<const char*>(col) + kPanelAhead + 64 * l, _MM_HINT_T0);
      const char* rec = x + (b / 4) * static_cast<int64_t>(L.rec);
      const int j = static_cast<int>(b % 4);
      // Two chains per half panel (vpdpbusd's latency), started at the block's code
      // offset term and added at the end: integer sums, so exact in any order.
      __m512i s0[2], s1[2];
      if constexpr (kType == DType::Q4_0) {
        const char* q = rec + L.qs + 16 * j;                    // block j's elements 0..15; +64: 16..31
        const __m512i ebias = Bcast32(rec + L.ebias + 16 * j);  // -8 * sum of its x
        for (int h = 0; h < 2; ++h) s0[h] = ebias, s1[h] = _mm512_setzero_si512();
        for (int c = 0; c < kV; ++c) {
          const __m512i xl = Bcast32(q + 4 * c), xh = Bcast32(q + 64 + 4 * c);
          for (int h = 0; h < 2; ++h) {
            const __m512i v = _mm512_loadu_si512(col + 64 + 64 * (kV * h + c));
            s0[h] = _mm512_dpbusd_epi32(s0[h], _mm512_and_si512(v, low), xl);
            s1[h] = _mm512_dpbusd_epi32(s1[h], _mm512_and_si512(_mm512_srli_epi16(v, 4), low), xh);
          }
        }
      } else {  // q8_0: codes are w + 128, so start at -128 * sum(x)
        const char* q = rec + L.qs + 32 * j;
        int32_t sy;
        std::memcpy(&sy, rec + L.sy + 4 * j, 4);
        for (int h = 0; h < 2; ++h) s0[h] = _mm512_set1_epi32(-128 * sy), s1[h] = _mm512_setzero_si512();
        for (int c = 0; c < kV; c += 2) {
          const __m512i x0 = Bcast32(q + 4 * c), x1 = Bcast32(q + 4 * c + 4);
          for (int h = 0; h < 2; ++h) {
            s0[h] = _mm512_dpbusd_epi32(s0[h], _mm512_loadu_si512(col + 64 + 64 * (kV * h + c)), x0);
            s1[h] = _mm512_dpbusd_epi32(s1[h], _mm512_loadu_si512(col + 64 + 64 * (kV * h + c + 1)), x1);
          }
        }
      }
      float dxs;
      std::memcpy(&dxs, rec + L.dx + 4 * j, 4);
      const __m512 dx = _mm512_set1_ps(dxs);
      for (int h = 0; h < 2; ++h) {
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(col + 32 * h)));
        acc[h] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s0[h], s1[h])), _mm512_mul_ps(dw, dx),
                                 acc[h]);
      }
    }
    StorePanel(acc, std::min(kQuantPanelRows, r1 - r), y + (r - r0));
  }
}

// 4 x 4 transpose of the dwords in each 128-bit lane: out[m] lane L = dword 4L + m of
// v[0..3], i.e. with v[c] lane i = bytes 4c.. of row i, out[m] lane L = 16 bytes of
// row 4L + m.
BRAID_VNNI HWY_INLINE void RowsOf4(const __m512i (&v)[4], __m512i (&out)[4]) {
  const __m512i t0 = _mm512_unpacklo_epi32(v[0], v[1]), t1 = _mm512_unpackhi_epi32(v[0], v[1]);
  const __m512i t2 = _mm512_unpacklo_epi32(v[2], v[3]), t3 = _mm512_unpackhi_epi32(v[2], v[3]);
  out[0] = _mm512_unpacklo_epi64(t0, t2);
  out[1] = _mm512_unpackhi_epi64(t0, t2);
  out[2] = _mm512_unpacklo_epi64(t1, t3);
  out[3] = _mm512_unpackhi_epi64(t1, t3);
}

// A panel's 32 rows into the prefill scratch of 4 tiles of 8 rows (Scratch's layouts;
// tile t's at w + t * tw, corr + t * tc, dw + t * tc): signed weights in natural order,
// -128 * the block's weight sum, the block's scale.
template <DType kType>
BRAID_VNNI void PanelPrepare(const uint8_t* panel, int64_t nb, int8_t* w, int32_t* corr, float* dw,
                             int64_t tw, int64_t tc) {
  constexpr int kV = PanelVectors(kType);
  constexpr int64_t kBB = PanelBlockBytes(kType);
  const __m512i low = _mm512_set1_epi8(0x0F), ones = _mm512_set1_epi8(1);
  // Rows 4L + m of two 16-byte halves (lo: bytes 0..15 of each row, hi: 16..31) as
  // 32-byte rows: rows m, 4 + m in the first result, 8 + m, 12 + m in the second.
  const __m512i i01 = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11),
                i23 = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
  // The sum of a block's codes, as stored, less this = the sum of its signed weights.
  constexpr int32_t kCodeBias = kType == DType::Q4_0 ? 8 * kQK : 128 * kQK;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* col = panel + b * kBB;
    const int64_t wu = (b / 4) * (kRows * 128) + 32 * (b % 4);
    for (int h = 0; h < 2; ++h) {
      __m512i v[kV];
      for (int c = 0; c < kV; ++c) v[c] = _mm512_loadu_si512(col + 64 + 64 * (kV * h + c));
      __m512i sum = _mm512_setzero_si512(), lo[4], hi[4];
      if constexpr (kType == DType::Q4_0) {
        const __m512i eight = _mm512_set1_epi8(8);
        __m512i rows[4];
        for (int c = 0; c < kV; ++c) {
          sum = _mm512_dpbusd_epi32(sum, _mm512_and_si512(v[c], low), ones);
          sum = _mm512_dpbusd_epi32(sum, _mm512_and_si512(_mm512_srli_epi16(v[c], 4), low), ones);
        }
        RowsOf4({v[0], v[1], v[2], v[3]}, rows);
        for (int m = 0; m < 4; ++m) {
          lo[m] = _mm512_sub_epi8(_mm512_and_si512(rows[m], low), eight);
          hi[m] = _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(rows[m], 4), low), eight);
        }
      } else {
        const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
        for (int c = 0; c < kV; ++c) sum = _mm512_dpbusd_epi32(sum, v[c], ones);
        RowsOf4({v[0], v[1], v[2], v[3]}, lo);
        RowsOf4({v[4], v[5], v[6], v[7]}, hi);
        for (int m = 0; m < 4; ++m)
          lo[m] = _mm512_xor_si512(lo[m], flip), hi[m] = _mm512_xor_si512(hi[m], flip);
      }
      for (int m = 0; m < 4; ++m) {
        const __m512i a = _mm512_permutex2var_epi64(lo[m], i01, hi[m]),
                      c = _mm512_permutex2var_epi64(lo[m], i23, hi[m]);
        const __m256i part[4] = {_mm512_castsi512_si256(a), _mm512_extracti64x4_epi64(a, 1),
                                 _mm512_castsi512_si256(c), _mm512_extracti64x4_epi64(c, 1)};
        for (int l = 0; l < 4; ++l) {
          const int rr = kPanelHalf * h + 4 * l + m;  // row in the panel
          int8_t* dst = w + (rr / kRows) * tw + wu + 128 * (rr % kRows);
          _mm256_store_si256(reinterpret_cast<__m256i*>(dst), part[l]);
        }
      }
      // corr = -128 * (sum - kCodeBias); lanes 0..7 to tile 2h, 8..15 to tile 2h + 1.
      const __m512i cv = _mm512_sub_epi32(_mm512_set1_epi32(128 * kCodeBias), _mm512_slli_epi32(sum, 7));
      const __m512 dv = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(col + 32 * h)));
      const int64_t a0 = 2 * h * tc + 8 * b, a1 = a0 + tc;
      _mm256_store_si256(reinterpret_cast<__m256i*>(corr + a0), _mm512_extracti64x4_epi64(cv, 0));
      _mm256_store_si256(reinterpret_cast<__m256i*>(corr + a1), _mm512_extracti64x4_epi64(cv, 1));
      _mm256_store_ps(dw + a0, _mm512_castps512_ps256(dv));
      _mm256_store_ps(dw + a1, _mm512_extractf32x8_ps(dv, 1));
    }
  }
}

// m tokens (a multiple of kGroup, or the pass's padded last group) x rows [r0, r1) of
// the panels P: each panel is prepared once, then its 4 tiles of 8 rows run the lanes
// prefill's GroupTile (the same operations as for rows).
template <DType kType, class T>
BRAID_VNNI void PanelPrefill(const ActLayout& L, const uint8_t* P, int64_t r0, int64_t r1, const char* x,
                             size_t xq_stride, int64_t m, float* y, size_t ldy) {
  Scratch& s = ThreadScratch();
  const int64_t units = L.units, nb = L.nb;
  const int64_t groups = (m + kGroup - 1) / kGroup;
  const int64_t tw = units * kRows * 128, tc = units * 4 * kRows;
  s.panel.resize(static_cast<size_t>(groups * units * kUnitPanel));
  s.w.resize(static_cast<size_t>(4 * tw));
  s.corr.resize(static_cast<size_t>(4 * tc));
  s.dw.resize(static_cast<size_t>(4 * tc));
  BuildPanel<T>(L, x, xq_stride, m, s.panel.data());
  const int64_t panel_bytes = nb * PanelBlockBytes(kType);
  for (int64_t r = r0; r < r1; r += kQuantPanelRows) {
    const uint8_t* panel = P + (r / kQuantPanelRows) * panel_bytes;
    PanelPrepare<kType>(panel, nb, s.w.data(), s.corr.data(), s.dw.data(), tw, tc);
    // Each tile's first group prefetches a quarter of the next panel.
    const bool more = r + kQuantPanelRows < r1;
    const int64_t quarter = panel_bytes / 4;
    for (int t = 0; t < 4 && r + kRows * t < r1; ++t) {
      const int rows = static_cast<int>(std::min<int64_t>(kRows, r1 - r - kRows * t));
      const int8_t* w = s.w.data() + t * tw;
      const int32_t* corr = s.corr.data() + t * tc;
      const float* dw = s.dw.data() + t * tc;
      for (int64_t g = 0; g < groups; ++g) {
        __m512 acc[kRows];
        const char* group = s.panel.data() + g * units * kUnitPanel;
        if (g == 0 && more) {
          GroupTile<true>(w, corr, dw, nb, group,
                          reinterpret_cast<const char*>(panel + panel_bytes + t * quarter), quarter / 64,
                          acc);
        } else {
          GroupTile<false>(w, corr, dw, nb, group, nullptr, 0, acc);
        }
        StoreTile(acc, rows, std::min<int64_t>(kGroup, m - g * kGroup),
                  y + g * kGroup * static_cast<int64_t>(ldy) + (r - r0) + kRows * t, ldy);
      }
    }
  }
}

// Rows [r0, r1) of the panels P x n activations (r0 a multiple of 32). Returns false if
// the activation layout is not the one T's kernels read (the caller falls back).
template <DType kType, class T>
BRAID_VNNI bool RunPanels(const ActLayout& L, const uint8_t* P, int64_t r0, int64_t r1, const void* xq,
                          size_t xq_stride, int64_t n, float* y, size_t ldy) {
  if (!T::K::Matches(L) || L.dx == 0 || (kType == DType::Q4_0 ? L.ebias == 0 : L.sy == 0)) return false;
  const char* x = static_cast<const char*>(xq);
  const int64_t xs = static_cast<int64_t>(xq_stride), ys = static_cast<int64_t>(ldy);
  ForPasses(
      n,
      [&](int64_t t0, int64_t m) {
        PanelPrefill<kType, T>(L, P, r0, r1, x + t0 * xs, xq_stride, m, y + t0 * ys, ldy);
      },
      [&](int64_t t) { PanelDecode<kType>(L, P, r0, r1, x + t * xs, y + t * ys); });
  return true;
}

// ---------------------------------------------------------------- K types

// Rows [r0, r1) of the panels P (nb block columns of type kType; r0 a multiple of 32)
// back in the row layout at dst, rows rb bytes apart: per half panel, 16 payload
// vectors at a time transposed (Transpose16) so that each row's 64 bytes come out
// together. For the K types' prefill, which prepares its tiles from rows.
template <DType kType>
BRAID_VNNI void PanelsToRows(const uint8_t* P, int64_t nb, int64_t r0, int64_t r1, uint8_t* dst, size_t rb) {
  constexpr PanelFormat kF = PanelFormatOf(kType);
  static_assert(kF.flip == 0, "flipped payloads are not restored here");
  constexpr int kV = PanelVectors(kType);
  constexpr int64_t kBB = PanelBlockBytes(kType);
  const int64_t block = static_cast<int64_t>(rb) / (nb > 0 ? nb : 1);
  for (int64_t r = r0; r < r1; r += kQuantPanelRows) {
    const uint8_t* panel = P + (r / kQuantPanelRows) * nb * kBB;
    const int rows = static_cast<int>(std::min(kQuantPanelRows, r1 - r));
    for (int64_t b = 0; b < nb; ++b) {
      const uint8_t* col = panel + b * kBB;
      for (int rr = 0; rr < rows; ++rr) {
        uint8_t* out = dst + (r - r0 + rr) * static_cast<int64_t>(rb) + b * block;
        for (int h = 0; h < kF.heads; ++h) std::memcpy(out + kF.head_at + 2 * h, col + PanelHeadAt(h, rr), 2);
      }
      for (int h = 0; h < 2 && kPanelHalf * h < rows; ++h) {
        for (int v0 = 0; v0 < kV; v0 += 16) {
          const int cnt = std::min(16, kV - v0);
          __m512i in[16], out[16];
          for (int i = 0; i < 16; ++i)
            in[i] = i < cnt ? _mm512_loadu_si512(col + 64 * kF.heads + 64 * (kV * h + v0 + i))
                            : _mm512_setzero_si512();
          Transpose16(in, out);  // out[i]: row 16h + i's payload dwords v0 .. v0 + 15
          for (int i = 0; i < kPanelHalf && kPanelHalf * h + i < rows; ++i) {
            uint8_t* o = dst + (r - r0 + kPanelHalf * h + i) * static_cast<int64_t>(rb) + b * block +
                         kF.payload_at + 4 * v0;
            _mm512_mask_storeu_epi32(o, static_cast<__mmask16>((1u << cnt) - 1), out[i]);
          }
        }
      }
    }
  }
}

// q4_K decode, rows in lanes: per super-block and half panel, the 8 sub-blocks' integer
// dot products (vpdpbusd of the codes against broadcast activation dwords), scaled by the
// 6-bit scales unpacked in the lanes (ScalesK4's steps, 4 rows' bytes per dword) and
// summed (T), and the mins against the activation's 32-value sums (M, vpdpwssd on
// pairs); then the canonical y = fma(T, d * dx, y), y = fma(M, (-dmin) * dx, y).
BRAID_VNNI void PanelDecodeQ4K(const ActLayout& L, const uint8_t* P, int64_t r0, int64_t r1, const char* x,
                               float* y) {
  constexpr DType kT = DType::Q4_K;
  constexpr int kV = PanelVectors(kT);
  constexpr int64_t kBB = PanelBlockBytes(kT);
  constexpr int kQsAt = 3;  // payload vectors 0..2: the 12 scale bytes; 3..34: the codes
  const int64_t nb = L.nb;
  const __m512i low = _mm512_set1_epi8(0x0F), m6 = _mm512_set1_epi8(0x3F), m2 = _mm512_set1_epi8(0x03);
  const __m512i byte = _mm512_set1_epi32(0xFF), words = _mm512_set1_epi32(0x00FF00FF);
  const __m512 sign = _mm512_set1_ps(-0.0f);
  // Sub-block j's 32 activation values in the record (quant_act.h: 32-value chunks
  // 0, 2, 1, 3 of each 128).
  constexpr int kAt[8] = {0, 64, 32, 96, 128, 192, 160, 224};
  for (int64_t r = r0; r < r1; r += kQuantPanelRows) {
    const uint8_t* panel = P + (r / kQuantPanelRows) * nb * kBB;
    __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int64_t sb = 0; sb < nb; ++sb) {
      const uint8_t* col = panel + sb * kBB;
      const char* rec = x + sb * static_cast<int64_t>(L.rec);
      const char* q = rec + L.qs;
      const uint8_t* pay[2] = {col + 128, col + 128 + 64 * kV};
      __m512i sc[2][2], mn[2][2];  // [half][sub-blocks 0..3 / 4..7]: 4 rows' bytes per lane
      for (int h = 0; h < 2; ++h) {
        const __m512i a = _mm512_loadu_si512(pay[h]), b = _mm512_loadu_si512(pay[h] + 64),
                      c = _mm512_loadu_si512(pay[h] + 128);
        sc[h][0] = _mm512_and_si512(a, m6);
        mn[h][0] = _mm512_and_si512(b, m6);
        sc[h][1] = _mm512_or_si512(_mm512_and_si512(c, low),
                                   _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(a, 6), m2), 4));
        mn[h][1] = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi32(c, 4), low),
                                   _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(b, 6), m2), 4));
      }
      __m512i t[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
      for (int ch = 0; ch < 4; ++ch) {  // code bytes 32ch..: low nibbles sub-block 2ch, high 2ch + 1
        PrefetchAhead<kBB>(col, ch, 4);
        __m512i dlo[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()}, dhi[2] = {dlo[0], dlo[0]};
        for (int c = 0; c < 8; ++c) {
          const __m512i xl = Bcast32(q + kAt[2 * ch] + 4 * c), xh = Bcast32(q + kAt[2 * ch + 1] + 4 * c);
          for (int h = 0; h < 2; ++h) {
            const __m512i v = _mm512_loadu_si512(pay[h] + 64 * (kQsAt + 8 * ch + c));
            dlo[h] = _mm512_dpbusd_epi32(dlo[h], _mm512_and_si512(v, low), xl);
            dhi[h] = _mm512_dpbusd_epi32(dhi[h], _mm512_and_si512(_mm512_srli_epi16(v, 4), low), xh);
          }
        }
        for (int h = 0; h < 2; ++h) {
          for (int half = 0; half < 2; ++half) {
            const int j = 2 * ch + half;
            const __m512i s4 = sc[h][j / 4];
            const int sh = 8 * (j % 4);
            const __m512i scale =
                sh == 24 ? _mm512_srli_epi32(s4, 24) : _mm512_and_si512(_mm512_srli_epi32(s4, sh), byte);
            t[h] = _mm512_add_epi32(t[h], _mm512_mullo_epi32(half == 0 ? dlo[h] : dhi[h], scale));
          }
        }
      }
      // M = sum_j min_j * bsum_j: mins as 16-bit pairs (j, j + 2) against the pairs of sums.
      int16_t bs[8];
      std::memcpy(bs, rec + L.bs32, sizeof(bs));
      auto pair = [&](int a, int b) {
        return _mm512_set1_epi32(static_cast<int32_t>(
            static_cast<uint16_t>(bs[a]) | (static_cast<uint32_t>(static_cast<uint16_t>(bs[b])) << 16)));
      };
      const __m512i p02 = pair(0, 2), p13 = pair(1, 3), p46 = pair(4, 6), p57 = pair(5, 7);
      float dxs;
      std::memcpy(&dxs, rec + L.d, 4);
      const __m512 dx = _mm512_set1_ps(dxs);
      for (int h = 0; h < 2; ++h) {
        __m512i m = _mm512_dpwssd_epi32(_mm512_setzero_si512(), _mm512_and_si512(mn[h][0], words), p02);
        m = _mm512_dpwssd_epi32(m, _mm512_and_si512(_mm512_srli_epi32(mn[h][0], 8), words), p13);
        m = _mm512_dpwssd_epi32(m, _mm512_and_si512(mn[h][1], words), p46);
        m = _mm512_dpwssd_epi32(m, _mm512_and_si512(_mm512_srli_epi32(mn[h][1], 8), words), p57);
        const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(col + 32 * h)));
        const __m512 nd = _mm512_xor_ps(
            _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(col + 64 + 32 * h))), sign);
        acc[h] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(t[h]), _mm512_mul_ps(d, dx), acc[h]);
        acc[h] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(m), _mm512_mul_ps(nd, dx), acc[h]);
      }
    }
    StorePanel(acc, std::min(kQuantPanelRows, r1 - r), y + (r - r0));
  }
}

// q6_K decode, rows in lanes: codes rebuilt in the lanes from ql's nibbles and qh's 2-bit
// pairs (16 rows' 4 bytes per vector, as llama.cpp's dequantize_row_q6_K pairs them),
// multiplied as unsigned 0..63 against the activation, each sub-block of 16 started at
// -32 * its activation sum (so dot_j carries the code offset), then scaled by the
// sign-extended 8-bit scales and summed (T); y = fma(T, d * dx, y).
BRAID_VNNI void PanelDecodeQ6K(const ActLayout& L, const uint8_t* P, int64_t r0, int64_t r1, const char* x,
                               float* y) {
  constexpr DType kT = DType::Q6_K;
  constexpr int kV = PanelVectors(kT);
  constexpr int64_t kBB = PanelBlockBytes(kT);
  constexpr int kQh = 32, kScales = 48;  // payload vectors: ql 0..31, qh 32..47, scales 48..51
  const int64_t nb = L.nb;
  const __m512i low = _mm512_set1_epi8(0x0F), top = _mm512_set1_epi8(0x30);
  for (int64_t r = r0; r < r1; r += kQuantPanelRows) {
    const uint8_t* panel = P + (r / kQuantPanelRows) * nb * kBB;
    __m512 acc[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int64_t sb = 0; sb < nb; ++sb) {
      const uint8_t* col = panel + sb * kBB;
      const char* rec = x + sb * static_cast<int64_t>(L.rec);
      const char* q = rec + L.qs;
      int16_t bs[16];
      std::memcpy(bs, rec + L.bs16, sizeof(bs));
      const uint8_t* pay[2] = {col + 64, col + 64 + 64 * kV};
      __m512i t[2] = {_mm512_setzero_si512(), _mm512_setzero_si512()};
      // Sub-block j's scale (int8) in the lanes.
      auto scale = [&](int h, int j) {
        const __m512i s4 = _mm512_loadu_si512(pay[h] + 64 * (kScales + j / 4));
        return _mm512_srai_epi32(_mm512_slli_epi32(s4, 24 - 8 * (j % 4)), 24);
      };
      for (int nh = 0; nh < 2; ++nh) {          // elements 128 nh + 32 k + l, l = 0..31 (4c .. 4c + 3)
        for (int part = 0; part < 2; ++part) {  // l < 16, l >= 16: sub-blocks 8 nh + 2k + part
          PrefetchAhead<kBB>(col, 2 * nh + part, 4);
          __m512i d[4][2];
          for (int k = 0; k < 4; ++k) d[k][0] = d[k][1] = _mm512_set1_epi32(-32 * bs[8 * nh + 2 * k + part]);
          for (int c = 4 * part; c < 4 * part + 4; ++c) {
            __m512i xv[4];
            for (int k = 0; k < 4; ++k) xv[k] = Bcast32(q + 128 * nh + 32 * k + 4 * c);
            for (int h = 0; h < 2; ++h) {
              const __m512i a = _mm512_loadu_si512(pay[h] + 64 * (16 * nh + c));      // ql[l]
              const __m512i b = _mm512_loadu_si512(pay[h] + 64 * (16 * nh + 8 + c));  // ql[l + 32]
              const __m512i hb = _mm512_loadu_si512(pay[h] + 64 * (kQh + 8 * nh + c));
              const __m512i code[4] = {
                  _mm512_or_si512(_mm512_and_si512(a, low), _mm512_and_si512(_mm512_slli_epi16(hb, 4), top)),
                  _mm512_or_si512(_mm512_and_si512(b, low), _mm512_and_si512(_mm512_slli_epi16(hb, 2), top)),
                  _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(a, 4), low), _mm512_and_si512(hb, top)),
                  _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(b, 4), low),
                                  _mm512_and_si512(_mm512_srli_epi16(hb, 2), top))};
              for (int k = 0; k < 4; ++k) d[k][h] = _mm512_dpbusd_epi32(d[k][h], code[k], xv[k]);
            }
          }
          for (int h = 0; h < 2; ++h) {
            for (int k = 0; k < 4; ++k)
              t[h] = _mm512_add_epi32(t[h], _mm512_mullo_epi32(d[k][h], scale(h, 8 * nh + 2 * k + part)));
          }
        }
      }
      float dxs;
      std::memcpy(&dxs, rec + L.d, 4);
      const __m512 dx = _mm512_set1_ps(dxs);
      for (int h = 0; h < 2; ++h) {
        const __m512 dw = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(col + 32 * h)));
        acc[h] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(t[h]), _mm512_mul_ps(dw, dx), acc[h]);
      }
    }
    StorePanel(acc, std::min(kQuantPanelRows, r1 - r), y + (r - r0));
  }
}

// K-type prefill from panels: rows back in the row layout, three panels at a time (96
// rows: 16 whole tiles of 6, 300 KiB at most for a 5632-wide q4_K matrix, in L2), then
// the row prefill's tiles (TilesK), whose operations per (row, token) these are.
template <DType kType, class T>
BRAID_VNNI void PanelPrefillK(const T& kt, const ActLayout& L, const uint8_t* P, int64_t r0, int64_t r1,
                              const char* x, size_t xq_stride, int64_t m, float* y, size_t ldy) {
  constexpr int64_t kChunk = 3 * kQuantPanelRows;
  static_assert(kChunk % kRowsK == 0);
  Scratch& s = ThreadScratch();
  SizeScratchK(L.nb, m, s);
  BuildPanelK(L, x, xq_stride, m, s.panel.data());
  static thread_local AlignedVector<uint8_t> rows;
  const size_t rb = static_cast<size_t>(L.nb * T::K::kBlock);
  rows.resize(rb * kChunk);
  for (int64_t c0 = r0; c0 < r1; c0 += kChunk) {
    const int64_t c1 = std::min(r1, c0 + kChunk);
    PanelsToRows<kType>(P, L.nb, c0, c1, rows.data(), rb);
    TilesK(kt, L.nb, rows.data(), rb, 0, c1 - c0, m, y + (c0 - r0), ldy, s);
  }
}

template <DType kType, class T>
BRAID_VNNI bool RunPanelsK(T& kt, const ActLayout& L, const uint8_t* P, int64_t r0, int64_t r1,
                           const void* xq, size_t xq_stride, int64_t n, float* y, size_t ldy) {
  if (!T::K::Matches(L) || (kType == DType::Q4_K ? L.bs32 == 0 : L.bs16 == 0)) return false;
  kt.k.nb = L.nb;
  const char* x = static_cast<const char*>(xq);
  const int64_t xs = static_cast<int64_t>(xq_stride), ys = static_cast<int64_t>(ldy);
  ForPasses(
      n,
      [&](int64_t t0, int64_t m) {
        PanelPrefillK<kType>(kt, L, P, r0, r1, x + t0 * xs, xq_stride, m, y + t0 * ys, ldy);
      },
      [&](int64_t t) {
        if constexpr (kType == DType::Q4_K) {
          PanelDecodeQ4K(L, P, r0, r1, x + t * xs, y + t * ys);
        } else {
          PanelDecodeQ6K(L, P, r0, r1, x + t * xs, y + t * ys);
        }
      });
  return true;
}

}  // namespace lanes
