// AVX-512 VNNI dot-product kernels, included by quant_simd.cpp inside the HWY_AVX3_DL
// and HWY_AVX3 target namespaces. On AVX3_DL (Ice Lake, Sapphire Rapids, Zen 4) they
// gather bytes with VBMI's vpermt2b and test bits with BITALG's vpshufbitqmb; on AVX3
// CPUs that have AVX512_VNNI without VBMI (Cascade Lake, Cooper Lake) the same kernels
// gather whole byte pairs with AVX512BW's vpermt2w (every gather here moves aligned
// pairs) and spread bits with vpshufb. Integer sums and f32 order are the same on both,
// so results are identical. Highway 1.0's target strings lack avx512vnni, hence the
// extra target attribute; avx512::Usable() checks the CPU once.
//
// Each weight type has a kernel over "units" (4 blocks of a legacy type, or one K
// super-block):
//   Dec Decode(row, u)          unpack the unit's weights into 64-byte vectors of 8-bit
//                               codes plus f32 scales (once per row and unit)
// q4_1 and q5_1 also have Consume(dec, rec, acc), which multiplies a decoded unit with
// one activation's record (quant_act.h) and accumulates, run by the tile driver of
// quant_tile-inl.h. The other types run the "lanes" kernels (quant_lanes-inl.h,
// quant_lanes_k-inl.h), which reuse Decode (q8_0: Codes) and, for decode, the integer
// sums below (Ints for the K types).
//
// Integer math: vpdpbusd multiplies unsigned by signed bytes. The nibble types' codes
// are unsigned and their offset (-8 for q4_0, -16 for q5_0) is folded in exactly through
// the activation's ebias, which starts each block's accumulator at -offset * sum(x);
// q8_0's decode (quant_lanes-inl.h) multiplies w + 128 by x and subtracts 128 * sum(x)
// from the record's block sums, exactly. Record
// offsets are constants here and checked against act_layout once per call.

// Clang takes a function's own target attribute instead of Highway's target pragma, so
// the AVX3 baseline (F, BW, DQ, VL) is spelled out too.
#if HWY_TARGET == HWY_AVX3_DL
#define BRAID_VNNI \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512vbmi,avx512bitalg")))
#define BRAID_AVX512_VBMI 1
#else
#define BRAID_VNNI __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")))
#define BRAID_AVX512_VBMI 0
#endif

namespace avx512 {

inline bool Usable() {
  static const bool ok = __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bw") &&
                         (!BRAID_AVX512_VBMI ||
                          (__builtin_cpu_supports("avx512vbmi") && __builtin_cpu_supports("avx512bitalg")));
  return ok;
}

// The index vector for Gather2 that picks bytes[i] of the 128 bytes (l0, l1) into lane
// i. Without VBMI it becomes a word index, so every pair of lanes (2w, 2w+1) must take
// an aligned source pair (2s, 2s+1); the layouts here all do (blocks and their fields
// start at even offsets), and a violation is a bug caught by the tests' first call.
BRAID_VNNI inline __m512i GatherIndex(const uint8_t (&bytes)[64]) {
#if BRAID_AVX512_VBMI
  return _mm512_loadu_si512(bytes);
#else
  alignas(64) uint16_t w[32];
  for (int i = 0; i < 32; ++i) {
    if (bytes[2 * i] % 2 != 0 || bytes[2 * i + 1] != bytes[2 * i] + 1) __builtin_trap();
    w[i] = static_cast<uint16_t>(bytes[2 * i] / 2);
  }
  return _mm512_load_si512(w);
#endif
}

// Bytes of (l0, l1) chosen by a GatherIndex vector.
BRAID_VNNI HWY_INLINE __m512i Gather2(__m512i l0, __m512i idx, __m512i l1) {
#if BRAID_AVX512_VBMI
  return _mm512_permutex2var_epi8(l0, idx, l1);
#else
  return _mm512_permutex2var_epi16(l0, idx, l1);
#endif
}

BRAID_VNNI HWY_INLINE __m512i LoadMasked(const uint8_t* p, size_t bytes) {
  const __mmask64 m = bytes >= 64 ? ~__mmask64{0} : ((__mmask64{1} << bytes) - 1);
  return _mm512_maskz_loadu_epi8(m, p);
}

BRAID_VNNI HWY_INLINE __m512 F16x16(__m512i v) { return _mm512_cvtph_ps(_mm512_castsi512_si256(v)); }

// The f16 at p as f32 (F16C; blocks are only 2-byte aligned).
BRAID_VNNI HWY_INLINE float F16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

// ---------------------------------------------------------------- legacy types

// Legacy block types with nibble quants: q4_0, q4_1, q5_0, q5_1. A unit is 4 blocks:
// the low nibbles of the 4 blocks form one 64-byte vector (elements 0..15 of each
// block), the high nibbles another, matching the activation layout of quant_act.h.
template <DType kType>
struct KNibble {
  using Acc = __m512;
  // 8 activations per tile amortise Decode's gathers (BM_Matmul q4_0 on Cascade Lake:
  // 13.3 ms against 17.0 ms with 4).
  static constexpr int kTileT = 8, kTileR = 1, kDecodeRows = 1;
  BRAID_VNNI static Acc Zero() { return _mm512_setzero_ps(); }
  BRAID_VNNI static float Sum(Acc a, Acc b) { return _mm512_reduce_add_ps(_mm512_add_ps(a, b)); }
  static constexpr int kBlock = kType == DType::Q4_0   ? 18
                                : kType == DType::Q4_1 ? 20
                                : kType == DType::Q5_0 ? 22
                                                       : 24;
  static constexpr bool kMin = kType == DType::Q4_1 || kType == DType::Q5_1;
  static constexpr bool kHigh = kType == DType::Q5_0 || kType == DType::Q5_1;
  static constexpr int kQs = kBlock - 16;  // offset of qs in a block
  static constexpr int kQh = kMin ? 4 : 2;
  static constexpr int kUnitBytes = 4 * kBlock;
  // Activation record (quant_act.h).
  static constexpr size_t kRec = kMin ? 384 : 320, kEbias = 128, kEscale = 192, kEmin = 256;
  static bool Matches(const ActLayout& L) {
    return L.rec == kRec && L.qs == 0 && L.ebias == kEbias && L.escale == kEscale &&
           L.emin == (kMin ? kEmin : 0);
  }

  struct Dec {
    __m512i lo, hi;
    __m512 dw, mw;
  };

  __m512i idx_qs, idx_d, idx_m, idx_qh, bits_lo, bits_hi, spread_lo, spread_hi, bit_sel, nib, c16;
  int64_t nb = 0;

  BRAID_VNNI KNibble() {
    alignas(64) uint8_t q[64], d[64], m[64], h[64], bl[64], bh[64], sl[64], sh[64], sel[64];
    for (int i = 0; i < 64; ++i) {
      const int j = i / 16, e = i % 16;  // block and element (qs vector)
      q[i] = static_cast<uint8_t>(kBlock * j + kQs + e);
      const int l = (i / 2) / 4;  // f16 lane i/2 belongs to block (i/2)/4
      d[i] = static_cast<uint8_t>(kBlock * l + (i & 1));
      m[i] = static_cast<uint8_t>(kBlock * l + 2 + (i & 1));
      // qh's 4 bytes in both qwords of the block's 128-bit lane (the second qword's
      // upper half repeats bytes 0, 1 so that pairs stay aligned; it is never read).
      h[i] = static_cast<uint8_t>(kBlock * j + kQh + (i % 8 < 4 ? i % 4 : i % 2));
      bl[i] = static_cast<uint8_t>(e);
      bh[i] = static_cast<uint8_t>(16 + e);
      sl[i] = static_cast<uint8_t>(e / 8);
      sh[i] = static_cast<uint8_t>(2 + e / 8);
      sel[i] = static_cast<uint8_t>(1u << (e % 8));
    }
    idx_qs = GatherIndex(q);
    idx_d = GatherIndex(d);
    idx_m = GatherIndex(m);
    idx_qh = GatherIndex(h);
    bits_lo = _mm512_load_si512(bl);
    bits_hi = _mm512_load_si512(bh);
    spread_lo = _mm512_load_si512(sl);
    spread_hi = _mm512_load_si512(sh);
    bit_sel = _mm512_load_si512(sel);
    nib = _mm512_set1_epi8(0x0F);
    c16 = _mm512_set1_epi8(0x10);
  }

  int64_t Units() const { return (nb + 3) / 4; }

  // Unit u's bytes: l0 = the first 64, l1 = the rest. Blocks past the row's end read as
  // zero (zero scale).
  BRAID_VNNI HWY_INLINE void Load(const uint8_t* r, int64_t u, __m512i& l0, __m512i& l1) const {
    const uint8_t* p = r + u * kUnitBytes;
    const int64_t left = nb - 4 * u;
    if (left >= 4) {
      l0 = _mm512_loadu_si512(p);
      l1 = LoadMasked(p + 64, kUnitBytes - 64);
    } else {
      const size_t bytes = static_cast<size_t>(left) * kBlock;
      l0 = LoadMasked(p, bytes);
      l1 = bytes > 64 ? LoadMasked(p + 64, bytes - 64) : _mm512_setzero_si512();
    }
  }

  BRAID_VNNI HWY_INLINE Dec Decode(const uint8_t* r, int64_t u) const {
    __m512i l0, l1;
    Load(r, u, l0, l1);
    return Decode(l0, l1);
  }

  // The codes of a unit's bytes (l0, l1 as Load gives them), without the scales when
  // !scales (the caller gathers those itself).
  BRAID_VNNI HWY_INLINE Dec Decode(__m512i l0, __m512i l1, bool scales = true) const {
    const __m512i q = Gather2(l0, idx_qs, l1);
    Dec d;
    d.lo = _mm512_and_si512(q, nib);
    d.hi = _mm512_and_si512(_mm512_srli_epi16(q, 4), nib);
    if constexpr (kHigh) {
      // Lane i's fifth bit: bit e (lo) or 16 + e (hi) of its block's qh, e = i % 16.
      const __m512i qh = Gather2(l0, idx_qh, l1);
#if BRAID_AVX512_VBMI
      const __mmask64 lo = _mm512_bitshuffle_epi64_mask(qh, bits_lo);
      const __mmask64 hi = _mm512_bitshuffle_epi64_mask(qh, bits_hi);
#else
      const __mmask64 lo = _mm512_test_epi8_mask(_mm512_shuffle_epi8(qh, spread_lo), bit_sel);
      const __mmask64 hi = _mm512_test_epi8_mask(_mm512_shuffle_epi8(qh, spread_hi), bit_sel);
#endif
      d.lo = _mm512_mask_add_epi8(d.lo, lo, d.lo, c16);
      d.hi = _mm512_mask_add_epi8(d.hi, hi, d.hi, c16);
    }
    if (scales) {
      d.dw = F16x16(Gather2(l0, idx_d, l1));
      if constexpr (kMin) d.mw = F16x16(Gather2(l0, idx_m, l1));
    }
    return d;
  }

  BRAID_VNNI HWY_INLINE void Consume(const Dec& d, const char* rec, __m512& acc) const {
    __m512i s = _mm512_loadu_si512(rec + kEbias);
    s = _mm512_dpbusd_epi32(s, d.lo, _mm512_loadu_si512(rec));
    s = _mm512_dpbusd_epi32(s, d.hi, _mm512_loadu_si512(rec + 64));
    const __m512 scale = _mm512_mul_ps(d.dw, _mm512_loadu_ps(reinterpret_cast<const float*>(rec + kEscale)));
    acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), scale, acc);
    if constexpr (kMin) {
      acc = _mm512_fmadd_ps(d.mw, _mm512_loadu_ps(reinterpret_cast<const float*>(rec + kEmin)), acc);
    }
  }
};

// q8_0: a unit is 4 blocks (136 bytes) in two 64-byte halves of 2 blocks.
struct KQ8_0 {
  static constexpr int kBlock = 34;
  static constexpr size_t kRec = 320, kEscale = 128, kSy = 272;
  static bool Matches(const ActLayout& L) {
    return L.rec == kRec && L.qs == 0 && L.escale == kEscale && L.sy == kSy;
  }
  __m512i idx_qs, idx_d;
  int64_t nb = 0;

  BRAID_VNNI KQ8_0() {
    alignas(64) uint8_t q[64], d[64];
    for (int i = 0; i < 64; ++i) {
      q[i] = static_cast<uint8_t>(i < 32 ? 2 + i : 4 + i);
      d[i] = static_cast<uint8_t>(kBlock * ((i / 2) / 8) + (i & 1));
    }
    idx_qs = GatherIndex(q);
    idx_d = GatherIndex(d);
  }

  int64_t Units() const { return (nb + 3) / 4; }

  // Unit u's codes: q[h] holds blocks 2h, 2h+1 (natural order), dw[h] their scales in
  // lanes 0..7 and 8..15. Blocks past the row's end read as zero.
  BRAID_VNNI HWY_INLINE void Codes(const uint8_t* r, int64_t u, __m512i (&q)[2], __m512 (&dw)[2]) const {
    for (int h = 0; h < 2; ++h) {
      __m512i l0, l1;
      Half(r, u, h, l0, l1);
      q[h] = Gather2(l0, idx_qs, l1);
      dw[h] = F16x16(Gather2(l0, idx_d, l1));
    }
  }

  // The bytes of half h of unit u (blocks 2h, 2h+1): l0 = the first 64, l1 = the last 4.
  // Blocks past the row's end read as zero.
  BRAID_VNNI HWY_INLINE void Half(const uint8_t* r, int64_t u, int h, __m512i& l0, __m512i& l1) const {
    const uint8_t* ph = r + (4 * u + 2 * h) * kBlock;
    const int64_t blocks = nb - 4 * u - 2 * h;  // blocks present in this half
    if (blocks >= 2) {
      l0 = _mm512_loadu_si512(ph);
      l1 = LoadMasked(ph + 64, 2 * kBlock - 64);
    } else {  // partial last unit
      l0 = LoadMasked(ph, blocks > 0 ? kBlock : 0);
      l1 = _mm512_setzero_si512();
    }
  }
};

// ---------------------------------------------------------------- K types

// The 8 scales (bytes 0..7) and 8 mins (bytes 8..15) of a q4_K / q5_K block from its
// 12 packed bytes at p (unpack_scales_k4 in registers: a scalar version through memory
// stalls on store forwarding).
BRAID_VNNI HWY_INLINE __m128i ScalesK4(const uint8_t* p) {
  uint32_t u2;
  std::memcpy(&u2, p + 8, 4);
  const __m128i u = _mm_insert_epi32(_mm_loadu_si64(p), static_cast<int>(u2), 2);  // u0 u1 u2
  const __m128i x = _mm_shuffle_epi32(u, _MM_SHUFFLE(1, 1, 0, 0));                 // u0 u0 u1 u1
  const __m128i y = _mm_shuffle_epi32(u, _MM_SHUFFLE(2, 2, 2, 2));                 // u2 x4
  const __m128i even = _mm_and_si128(x, _mm_set1_epi32(0x3f3f3f3f));
  const __m128i hi = _mm_slli_epi32(_mm_and_si128(_mm_srli_epi32(x, 6), _mm_set1_epi32(0x03030303)), 4);
  const __m128i lo = _mm_and_si128(_mm_srlv_epi32(y, _mm_setr_epi32(0, 0, 0, 4)), _mm_set1_epi32(0x0f0f0f0f));
  return _mm_blend_epi32(even, _mm_or_si128(lo, hi), 0b1010);
}

// vpermw index vectors: lane i of output v takes 16-bit lane idx[v][i] of the input.
BRAID_VNNI inline __m512i WordIndex(int first, int second, int per) {
  alignas(64) uint16_t w[32];
  for (int i = 0; i < 32; ++i) {
    if (per == 16) {
      w[i] = static_cast<uint16_t>(i < 16 ? first : second);
    } else {  // 4 sub-blocks of 8 lanes: first, first+1, first+2, first+3
      w[i] = static_cast<uint16_t>(first + i / 8);
    }
  }
  return _mm512_load_si512(w);
}

// q4_K and q5_K: one super-block per unit. The 128 quant bytes are two 64-byte vectors
// whose low nibbles hold sub-blocks (0, 2) / (4, 6) and high nibbles (1, 3) / (5, 7),
// which is the activation's element order (quant_act.h).
template <DType kType>
struct KK4 {
  static constexpr bool kQ5 = kType == DType::Q5_K;
  static constexpr int kBlock = kQ5 ? 176 : 144;
  static constexpr int kQs = kBlock - 128;
  static constexpr size_t kRec = 320, kBs32 = 288, kD = 304;
  static bool Matches(const ActLayout& L) {
    return L.rec == kRec && L.qs == 0 && L.bs32 == kBs32 && L.d == kD;
  }
  struct Dec {
    __m512i v[4];   // codes of sub-blocks (0,2), (1,3), (4,6), (5,7)
    __m512i sc[4];  // their scales as 16-bit lanes
    __m128i mins;   // 8 mins as 16-bit lanes
    float d, dmin;
  };
  __m512i sidx[4], hbit[4], nib, c16;
  int64_t nb = 0;

  BRAID_VNNI KK4() {
    static constexpr int kSub[4][2] = {{0, 2}, {1, 3}, {4, 6}, {5, 7}};
    for (int v = 0; v < 4; ++v) {
      // Byte shuffle of the 8 scale bytes (in every 128-bit lane) into 16-bit lanes:
      // lanes 0..15 sub-block kSub[v][0]'s, 16..31 kSub[v][1]'s (high bytes zero).
      alignas(64) uint8_t b[64], x[64];
      for (int i = 0; i < 64; ++i) {
        b[i] = static_cast<uint8_t>(1u << kSub[v][i / 32]);
        x[i] = i % 2 == 0 ? static_cast<uint8_t>(kSub[v][i / 32]) : 0x80;
      }
      hbit[v] = _mm512_load_si512(b);
      sidx[v] = _mm512_load_si512(x);
    }
    nib = _mm512_set1_epi8(0x0F);
    c16 = _mm512_set1_epi8(0x10);
  }

  int64_t Units() const { return nb; }

  BRAID_VNNI HWY_INLINE Dec Decode(const uint8_t* r, int64_t u) const {
    const uint8_t* p = r + u * kBlock;
    Dec d;
    const __m128i sm = ScalesK4(p + 4);
    const __m512i s512 = _mm512_broadcast_i32x4(sm);
    for (int v = 0; v < 4; ++v) d.sc[v] = _mm512_shuffle_epi8(s512, sidx[v]);
    d.mins = _mm_cvtepu8_epi16(_mm_srli_si128(sm, 8));
    const __m512i q01 = _mm512_loadu_si512(p + kQs);
    const __m512i q23 = _mm512_loadu_si512(p + kQs + 64);
    d.v[0] = _mm512_and_si512(q01, nib);
    d.v[1] = _mm512_and_si512(_mm512_srli_epi16(q01, 4), nib);
    d.v[2] = _mm512_and_si512(q23, nib);
    d.v[3] = _mm512_and_si512(_mm512_srli_epi16(q23, 4), nib);
    if constexpr (kQ5) {
      const __m512i qh = _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16)));
      for (int v = 0; v < 4; ++v) {
        d.v[v] = _mm512_mask_add_epi8(d.v[v], _mm512_test_epi8_mask(qh, hbit[v]), d.v[v], c16);
      }
    }
    d.d = F16(p);
    d.dmin = F16(p + 2);
    return d;
  }

  // The super-block's integer sums against activation record y, exactly: s (16 lanes)
  // sums to sum_j scale_j * dot_j, m (4 lanes) to sum_j min_j * bsum_j.
  BRAID_VNNI HWY_INLINE void Ints(const Dec& d, const char* y, __m512i& s, __m128i& m) const {
    // Two independent chains of vpdpwssd (latency), joined at the end.
    __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
    s0 = _mm512_dpwssd_epi32(s0, _mm512_maddubs_epi16(d.v[0], _mm512_loadu_si512(y)), d.sc[0]);
    s1 = _mm512_dpwssd_epi32(s1, _mm512_maddubs_epi16(d.v[1], _mm512_loadu_si512(y + 64)), d.sc[1]);
    s0 = _mm512_dpwssd_epi32(s0, _mm512_maddubs_epi16(d.v[2], _mm512_loadu_si512(y + 128)), d.sc[2]);
    s1 = _mm512_dpwssd_epi32(s1, _mm512_maddubs_epi16(d.v[3], _mm512_loadu_si512(y + 192)), d.sc[3]);
    s = _mm512_add_epi32(s0, s1);
    m = _mm_madd_epi16(d.mins, _mm_loadu_si128(reinterpret_cast<const __m128i*>(y + kBs32)));
  }

};

// q6_K: one super-block per unit; each half of 128 elements is two 64-byte vectors of
// 6-bit codes (0..63, the -32 folded in through bsums), natural element order.
struct KQ6K {
  static constexpr int kBlock = 210;
  static constexpr size_t kRec = 320, kBs16 = 256, kD = 304;
  static bool Matches(const ActLayout& L) {
    return L.rec == kRec && L.qs == 0 && L.bs16 == kBs16 && L.d == kD;
  }
  struct Dec {
    __m512i v[4];   // elements 0..63, 64..127, 128..191, 192..255
    __m512i sc[4];  // scales as 16-bit lanes, 8 lanes per sub-block of 16
    __m256i sc16;   // the 16 scales
    float d;
  };
  __m512i widx[4], shl, shr, nib, c30;
  int64_t nb = 0;

  BRAID_VNNI KQ6K() {
    for (int v = 0; v < 4; ++v) widx[v] = WordIndex(4 * v, 0, 8);
    alignas(64) uint16_t l[32], r[32];
    for (int i = 0; i < 32; ++i) {
      l[i] = i < 16 ? 4 : 2;  // qh bits 0-1 -> 4-5 (first 32 bytes), bits 2-3 -> 4-5
      r[i] = i < 16 ? 0 : 2;  // qh bits 4-5 stay, bits 6-7 -> 4-5
    }
    shl = _mm512_load_si512(l);
    shr = _mm512_load_si512(r);
    nib = _mm512_set1_epi8(0x0F);
    c30 = _mm512_set1_epi8(0x30);
  }

  int64_t Units() const { return nb; }

  BRAID_VNNI HWY_INLINE Dec Decode(const uint8_t* r, int64_t u) const {
    const uint8_t* p = r + u * kBlock;
    Dec d;
    for (int h = 0; h < 2; ++h) {
      const __m512i ql = _mm512_loadu_si512(p + 64 * h);
      const __m512i qh =
          _mm512_broadcast_i64x4(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 128 + 32 * h)));
      // 0xF8: a | (b & c)
      d.v[2 * h] =
          _mm512_ternarylogic_epi32(_mm512_and_si512(ql, nib), _mm512_sllv_epi16(qh, shl), c30, 0xF8);
      d.v[2 * h + 1] = _mm512_ternarylogic_epi32(_mm512_and_si512(_mm512_srli_epi16(ql, 4), nib),
                                                 _mm512_srlv_epi16(qh, shr), c30, 0xF8);
    }
    d.sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 192)));
    const __m512i s512 = _mm512_castsi256_si512(d.sc16);
    for (int v = 0; v < 4; ++v) d.sc[v] = _mm512_permutexvar_epi16(widx[v], s512);
    d.d = F16(p + 208);
    return d;
  }

  // The super-block's integer sum against activation record y, exactly, in 16 lanes.
  BRAID_VNNI HWY_INLINE __m512i Ints(const Dec& d, const char* y) const {
    // -32 * sum_j scale_j * bsum16_j: the codes' offset, exactly.
    const __m256i corr = _mm256_slli_epi32(
        _mm256_madd_epi16(d.sc16, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y + kBs16))), 5);
    __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
    s0 = _mm512_dpwssd_epi32(s0, _mm512_maddubs_epi16(d.v[0], _mm512_loadu_si512(y)), d.sc[0]);
    s1 = _mm512_dpwssd_epi32(s1, _mm512_maddubs_epi16(d.v[1], _mm512_loadu_si512(y + 64)), d.sc[1]);
    s0 = _mm512_dpwssd_epi32(s0, _mm512_maddubs_epi16(d.v[2], _mm512_loadu_si512(y + 128)), d.sc[2]);
    s1 = _mm512_dpwssd_epi32(s1, _mm512_maddubs_epi16(d.v[3], _mm512_loadu_si512(y + 192)), d.sc[3]);
    return _mm512_sub_epi32(_mm512_add_epi32(s0, s1), _mm512_zextsi256_si512(corr));
  }

};

#define BRAID_TILE_ATTR BRAID_VNNI
#include "tensor/quant_tile-inl.h"
#undef BRAID_TILE_ATTR
#include "tensor/quant_lanes-inl.h"
#include "tensor/quant_lanes_k-inl.h"
#include "tensor/quant_lanes_panels-inl.h"

BRAID_VNNI bool Dispatch(DType t, const uint8_t* W, size_t stride, int64_t r0, int64_t r1, const void* xq,
                         size_t xq_stride, int64_t n, int64_t k, float* y, size_t ldy) {
  if (!Usable()) return false;
  const ActLayout L = act_layout(t, k);
  switch (t) {
    case DType::Q8_0: {
      lanes::LQ8_0 kern;
      return lanes::Run(kern, L, W, stride, r0, r1, xq, xq_stride, n, y, ldy);
    }
    case DType::Q4_0: {
      lanes::LNibble<DType::Q4_0> kern;
      return lanes::Run(kern, L, W, stride, r0, r1, xq, xq_stride, n, y, ldy);
    }
    case DType::Q4_1: {
      KNibble<DType::Q4_1> kern;
      return tile::Run(kern, L, W, stride, r0, r1, xq, xq_stride, n, y, ldy);
    }
    case DType::Q5_0: {
      lanes::LNibble<DType::Q5_0> kern;
      return lanes::Run(kern, L, W, stride, r0, r1, xq, xq_stride, n, y, ldy);
    }
    case DType::Q5_1: {
      KNibble<DType::Q5_1> kern;
      return tile::Run(kern, L, W, stride, r0, r1, xq, xq_stride, n, y, ldy);
    }
    case DType::Q4_K: {
      lanes::LK4<DType::Q4_K> kern;
      return lanes::RunK(kern, L, W, stride, r0, r1, xq, xq_stride, n, y, ldy);
    }
    case DType::Q5_K: {
      lanes::LK4<DType::Q5_K> kern;
      return lanes::RunK(kern, L, W, stride, r0, r1, xq, xq_stride, n, y, ldy);
    }
    case DType::Q6_K: {
      lanes::LQ6K kern;
      return lanes::RunK(kern, L, W, stride, r0, r1, xq, xq_stride, n, y, ldy);
    }
    default:
      return false;
  }
}

// Rows [r0, r1) of a q4_0 / q8_0 / q4_K / q6_K matrix in panels (quant_panels.h); false when this CPU
// or the type has no panel kernel.
BRAID_VNNI bool DispatchPanels(DType t, const uint8_t* P, int64_t r0, int64_t r1, const void* xq, size_t xq_stride,
                               int64_t n, int64_t k, float* y, size_t ldy) {
  if (!Usable()) return false;
  const ActLayout L = act_layout(t, k);
  switch (t) {
    case DType::Q4_0:
      return lanes::RunPanels<DType::Q4_0, lanes::LNibble<DType::Q4_0>>(L, P, r0, r1, xq, xq_stride, n, y, ldy);
    case DType::Q8_0:
      return lanes::RunPanels<DType::Q8_0, lanes::LQ8_0>(L, P, r0, r1, xq, xq_stride, n, y, ldy);
    case DType::Q4_K: {
      lanes::LK4<DType::Q4_K> kern;
      return lanes::RunPanelsK<DType::Q4_K>(kern, L, P, r0, r1, xq, xq_stride, n, y, ldy);
    }
    case DType::Q6_K: {
      lanes::LQ6K kern;
      return lanes::RunPanelsK<DType::Q6_K>(kern, L, P, r0, r1, xq, xq_stride, n, y, ldy);
    }
    default:
      return false;
  }
}

// Whether Dispatch handles type t on this CPU (for tests).
template <class K>
bool Handles(DType t) {
  return Usable() && K::Matches(act_layout(t, 256 * 4));
}

inline bool HandlesType(DType t) {
  switch (t) {
    case DType::Q8_0:
      return Handles<KQ8_0>(t);
    case DType::Q4_0:
      return Handles<KNibble<DType::Q4_0>>(t);
    case DType::Q4_1:
      return Handles<KNibble<DType::Q4_1>>(t);
    case DType::Q5_0:
      return Handles<KNibble<DType::Q5_0>>(t);
    case DType::Q5_1:
      return Handles<KNibble<DType::Q5_1>>(t);
    case DType::Q4_K:
      return Handles<KK4<DType::Q4_K>>(t);
    case DType::Q5_K:
      return Handles<KK4<DType::Q5_K>>(t);
    case DType::Q6_K:
      return Handles<KQ6K>(t);
    default:
      return false;
  }
}

}  // namespace avx512

#undef BRAID_VNNI
#undef BRAID_AVX512_VBMI
