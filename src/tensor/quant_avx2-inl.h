// AVX2 + FMA + F16C dot-product kernels, included by quant_simd.cpp inside the HWY_AVX2,
// HWY_AVX3 and HWY_AVX3_DL target namespaces (on AVX3_DL for the types without AVX-512
// kernels: q2_K, q3_K). Same structure
// as quant_avx512-inl.h (Decode once per row and unit, Consume per activation, the
// shared tile driver), on 256-bit vectors: unsigned-by-signed byte products with
// vpmaddubsw, widened with vpmaddwd. vpmaddubsw saturates at 16 bits; no kernel here
// comes near (largest pair sum: 2 * 128 * 127 for q8_0, 2 * 2 * 31 * 127 when the two
// nibble halves of a q5 block are added).
//
// The activation record offsets (quant_act.h) are the same as for AVX-512: a record's
// lane-expanded arrays are laid out for 512-bit vectors, and a 256-bit vector simply
// takes half of them.

namespace avx2 {

HWY_INLINE __m256i Ones16() { return _mm256_set1_epi16(1); }

// Sum of 4 adjacent u8 * s8 products per 32-bit lane (vpdpbusd's result).
HWY_INLINE __m256i DotBytes(__m256i u8, __m256i s8) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(u8, s8), Ones16());
}

HWY_INLINE float F16(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

HWY_INLINE float HorizontalSum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// 0x10 in byte i where bit i of bits is set.
HWY_INLINE __m256i FifthBits(uint32_t bits) {
  const __m256i spread = _mm256_shuffle_epi8(
      _mm256_set1_epi32(static_cast<int>(bits)),
      _mm256_set_epi64x(0x0303030303030303, 0x0202020202020202, 0x0101010101010101, 0x0000000000000000));
  const __m256i bit = _mm256_set1_epi64x(static_cast<int64_t>(0x8040201008040201ull));
  return _mm256_and_si256(_mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit), _mm256_set1_epi8(0x10));
}

// The 8 scales (bytes 0..7) and 8 mins (bytes 8..15) of a q4_K / q5_K block from its
// 12 packed bytes (unpack_scales_k4 in registers: through memory it stalls on store
// forwarding).
HWY_INLINE __m128i ScalesK4(const uint8_t* p) {
  uint32_t u2;
  std::memcpy(&u2, p + 8, 4);
  const __m128i u =
      _mm_insert_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)), static_cast<int>(u2), 2);
  const __m128i x = _mm_shuffle_epi32(u, _MM_SHUFFLE(1, 1, 0, 0));  // u0 u0 u1 u1
  const __m128i y = _mm_shuffle_epi32(u, _MM_SHUFFLE(2, 2, 2, 2));  // u2 x4
  const __m128i even = _mm_and_si128(x, _mm_set1_epi32(0x3f3f3f3f));
  const __m128i hi = _mm_slli_epi32(_mm_and_si128(_mm_srli_epi32(x, 6), _mm_set1_epi32(0x03030303)), 4);
  const __m128i lo = _mm_and_si128(_mm_srlv_epi32(y, _mm_setr_epi32(0, 0, 0, 4)), _mm_set1_epi32(0x0f0f0f0f));
  return _mm_blend_epi32(even, _mm_or_si128(lo, hi), 0b1010);
}

struct Base {
  using Acc = __m256;
  static constexpr int kTileT = 4, kTileR = 1, kDecodeRows = 1;
  static Acc Zero() { return _mm256_setzero_ps(); }
  static float Sum(Acc a, Acc b) { return HorizontalSum(_mm256_add_ps(a, b)); }
};

// ---------------------------------------------------------------- legacy types

// q4_0, q4_1, q5_0, q5_1: a unit is 4 blocks, handled as two pairs; a pair's low
// nibbles form one 256-bit vector (16 elements of each block), matching the record's
// qs order, and its int32 lanes 0-3 / 4-7 belong to the pair's two blocks.
template <DType kType>
struct KNibble : Base {
  static constexpr int kBlock = kType == DType::Q4_0   ? 18
                                : kType == DType::Q4_1 ? 20
                                : kType == DType::Q5_0 ? 22
                                                       : 24;
  static constexpr bool kMin = kType == DType::Q4_1 || kType == DType::Q5_1;
  static constexpr bool kHigh = kType == DType::Q5_0 || kType == DType::Q5_1;
  static constexpr int kQs = kBlock - 16;
  static constexpr int kQh = kMin ? 4 : 2;
  static constexpr size_t kRec = kMin ? 384 : 320, kEbias = 128, kEscale = 192, kEmin = 256;
  static bool Matches(const ActLayout& L) {
    return L.rec == kRec && L.qs == 0 && L.ebias == kEbias && L.escale == kEscale &&
           L.emin == (kMin ? kEmin : 0);
  }
  struct Dec {
    __m256i lo[2], hi[2];
    __m256 dw[2], mw[2];
  };
  int64_t nb = 0;

  int64_t Units() const { return (nb + 3) / 4; }

  HWY_INLINE Dec Decode(const uint8_t* r, int64_t u) const {
    const uint8_t* p = r + u * 4 * kBlock;
    const int64_t left = nb - 4 * u;
    const __m256i nib = _mm256_set1_epi8(0x0F);
    Dec d;
    for (int h = 0; h < 2; ++h) {
      __m128i q[2] = {_mm_setzero_si128(), _mm_setzero_si128()};
      float dw[2] = {0, 0}, mw[2] = {0, 0};
      uint32_t qh[2] = {0, 0};
      for (int j = 0; j < 2; ++j) {
        if (2 * h + j >= left) break;  // partial last unit: missing blocks are zero
        const uint8_t* b = p + (2 * h + j) * kBlock;
        q[j] = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b + kQs));
        dw[j] = F16(b);
        if constexpr (kMin) mw[j] = F16(b + 2);
        if constexpr (kHigh) std::memcpy(&qh[j], b + kQh, 4);
      }
      const __m256i q2 = _mm256_set_m128i(q[1], q[0]);
      d.lo[h] = _mm256_and_si256(q2, nib);
      d.hi[h] = _mm256_and_si256(_mm256_srli_epi16(q2, 4), nib);
      if constexpr (kHigh) {
        d.lo[h] = _mm256_or_si256(d.lo[h], FifthBits((qh[0] & 0xFFFF) | (qh[1] << 16)));
        d.hi[h] = _mm256_or_si256(d.hi[h], FifthBits((qh[0] >> 16) | (qh[1] & 0xFFFF0000u)));
      }
      d.dw[h] = _mm256_set_m128(_mm_set1_ps(dw[1]), _mm_set1_ps(dw[0]));
      if constexpr (kMin) d.mw[h] = _mm256_set_m128(_mm_set1_ps(mw[1]), _mm_set1_ps(mw[0]));
    }
    return d;
  }

  HWY_INLINE void Consume(const Dec& d, const char* rec, Acc& acc) const {
    for (int h = 0; h < 2; ++h) {
      const __m256i ylo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rec + 32 * h));
      const __m256i yhi = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rec + 64 + 32 * h));
      const __m256i p =
          _mm256_add_epi16(_mm256_maddubs_epi16(d.lo[h], ylo), _mm256_maddubs_epi16(d.hi[h], yhi));
      const __m256i s =
          _mm256_add_epi32(_mm256_madd_epi16(p, Ones16()),
                           _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rec + kEbias + 32 * h)));
      const __m256 scale =
          _mm256_mul_ps(d.dw[h], _mm256_loadu_ps(reinterpret_cast<const float*>(rec + kEscale + 32 * h)));
      acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), scale, acc);
      if constexpr (kMin) {
        acc = _mm256_fmadd_ps(d.mw[h], _mm256_loadu_ps(reinterpret_cast<const float*>(rec + kEmin + 32 * h)),
                              acc);
      }
    }
  }
};

// q8_0: a unit is 4 blocks, one 256-bit vector each; |w| times x with w's sign.
struct KQ8_0 : Base {
  static constexpr int kBlock = 34;
  static constexpr size_t kRec = 320, kEscale = 128;
  static bool Matches(const ActLayout& L) { return L.rec == kRec && L.qs == 0 && L.escale == kEscale; }
  struct Dec {
    __m256i w[4], wabs[4];
    __m256 dw[4];
  };
  int64_t nb = 0;

  int64_t Units() const { return (nb + 3) / 4; }

  HWY_INLINE Dec Decode(const uint8_t* r, int64_t u) const {
    const uint8_t* p = r + u * 4 * kBlock;
    const int64_t left = nb - 4 * u;
    Dec d;
    for (int j = 0; j < 4; ++j) {
      if (j < left) {
        d.w[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + j * kBlock + 2));
        d.dw[j] = _mm256_set1_ps(F16(p + j * kBlock));
      } else {
        d.w[j] = _mm256_setzero_si256();
        d.dw[j] = _mm256_setzero_ps();
      }
      d.wabs[j] = _mm256_abs_epi8(d.w[j]);
    }
    return d;
  }

  HWY_INLINE void Consume(const Dec& d, const char* rec, Acc& acc) const {
    for (int j = 0; j < 4; ++j) {
      const __m256i y = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rec + 32 * j));
      const __m256i s = DotBytes(d.wabs[j], _mm256_sign_epi8(y, d.w[j]));
      const __m256 scale =
          _mm256_mul_ps(d.dw[j], _mm256_loadu_ps(reinterpret_cast<const float*>(rec + kEscale + 32 * j)));
      acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), scale, acc);
    }
  }
};

// ---------------------------------------------------------------- K types

// q4_K and q5_K: 32 quant bytes hold sub-blocks 2g (low nibbles) and 2g+1 (high); the
// record stores sub-blocks in the order 0, 2, 1, 3, 4, 6, 5, 7.
template <DType kType>
struct KK4 : Base {
  static constexpr bool kQ5 = kType == DType::Q5_K;
  static constexpr int kBlock = kQ5 ? 176 : 144;
  static constexpr int kQs = kBlock - 128;
  static constexpr size_t kRec = 320, kBs32 = 288, kD = 304;
  static bool Matches(const ActLayout& L) {
    return L.rec == kRec && L.qs == 0 && L.bs32 == kBs32 && L.d == kD;
  }
  // Where sub-block s sits in the record.
  static constexpr int kPos[8] = {0, 64, 32, 96, 128, 192, 160, 224};
  struct Dec {
    __m256i v[8];   // codes of sub-block s
    __m256i sc[8];  // its scale in every 16-bit lane
    __m128i mins;
    float d, dmin;
  };
  int64_t nb = 0;

  int64_t Units() const { return nb; }

  HWY_INLINE Dec Decode(const uint8_t* r, int64_t u) const {
    const uint8_t* p = r + u * kBlock;
    Dec d;
    const __m128i sm = ScalesK4(p + 4);
    const __m256i s16 = _mm256_broadcastsi128_si256(_mm_cvtepu8_epi16(sm));  // 8 scales, both halves
    for (int s = 0; s < 8; ++s)
      d.sc[s] =
          _mm256_shuffle_epi8(s16, _mm256_set1_epi16(static_cast<int16_t>(((2 * s + 1) << 8) | (2 * s))));
    d.mins = _mm_cvtepu8_epi16(_mm_srli_si128(sm, 8));
    const __m256i nib = _mm256_set1_epi8(0x0F);
    __m256i qh = _mm256_setzero_si256();
    if constexpr (kQ5) qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 16));
    for (int g = 0; g < 4; ++g) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + kQs + 32 * g));
      d.v[2 * g] = _mm256_and_si256(q, nib);
      d.v[2 * g + 1] = _mm256_and_si256(_mm256_srli_epi16(q, 4), nib);
      if constexpr (kQ5) {
        for (int h = 0; h < 2; ++h) {
          const __m256i bit = _mm256_set1_epi8(static_cast<char>(1u << (2 * g + h)));
          const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit);
          d.v[2 * g + h] = _mm256_or_si256(d.v[2 * g + h], _mm256_and_si256(set, _mm256_set1_epi8(0x10)));
        }
      }
    }
    d.d = F16(p);
    d.dmin = F16(p + 2);
    return d;
  }

  HWY_INLINE void Consume(const Dec& d, const char* y, Acc& acc) const {
    __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
    for (int s = 0; s < 8; s += 2) {
      const __m256i p0 =
          _mm256_maddubs_epi16(d.v[s], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y + kPos[s])));
      const __m256i p1 = _mm256_maddubs_epi16(
          d.v[s + 1], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y + kPos[s + 1])));
      s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(p0, d.sc[s]));
      s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(p1, d.sc[s + 1]));
    }
    const __m128i m = _mm_madd_epi16(d.mins, _mm_loadu_si128(reinterpret_cast<const __m128i*>(y + kBs32)));
    float dy;
    std::memcpy(&dy, y + kD, 4);
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_add_epi32(s0, s1)), _mm256_set1_ps(d.d * dy), acc);
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_zextsi128_si256(m)), _mm256_set1_ps(-(d.dmin * dy)), acc);
  }
};

// q6_K: per 128 elements, four 32-element quarters of 6-bit codes (0..63, the -32
// folded in through bsums); each quarter spans two sub-blocks of 16.
struct KQ6K : Base {
  static constexpr int kBlock = 210;
  static constexpr size_t kRec = 320, kBs16 = 256, kD = 304;
  static bool Matches(const ActLayout& L) {
    return L.rec == kRec && L.qs == 0 && L.bs16 == kBs16 && L.d == kD;
  }
  struct Dec {
    __m256i v[8];   // elements 32q .. 32q+31
    __m256i sc[8];  // 16-bit lanes 0-7: scale of sub-block 2q, 8-15: of 2q+1
    __m256i sc16;
    float d;
  };
  int64_t nb = 0;

  int64_t Units() const { return nb; }

  HWY_INLINE Dec Decode(const uint8_t* r, int64_t u) const {
    const uint8_t* p = r + u * kBlock;
    Dec d;
    const __m256i m4 = _mm256_set1_epi8(0x0F), m2 = _mm256_set1_epi8(0x03), m2s = _mm256_set1_epi8(0x0C);
    const __m256i m2t = _mm256_set1_epi8(0x30), m2u = _mm256_set1_epi8(static_cast<char>(0xC0));
    for (int h = 0; h < 2; ++h) {
      const __m256i l0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 64 * h));
      const __m256i l1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 64 * h + 32));
      const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + 128 + 32 * h));
      d.v[4 * h + 0] =
          _mm256_or_si256(_mm256_and_si256(l0, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m2), 4));
      d.v[4 * h + 1] =
          _mm256_or_si256(_mm256_and_si256(l1, m4), _mm256_slli_epi16(_mm256_and_si256(qh, m2s), 2));
      d.v[4 * h + 2] =
          _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), _mm256_and_si256(qh, m2t));
      d.v[4 * h + 3] = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4),
                                       _mm256_srli_epi16(_mm256_and_si256(qh, m2u), 2));
    }
    d.sc16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + 192)));
    // Quarter q needs scales 2q and 2q+1 (of 8 per half) spread over the two 128-bit lanes.
    const __m256i half[2] = {_mm256_permute2x128_si256(d.sc16, d.sc16, 0x00),
                             _mm256_permute2x128_si256(d.sc16, d.sc16, 0x11)};
    for (int q = 0; q < 8; ++q) {
      const int w0 = (2 * q) % 8, w1 = w0 + 1;  // 16-bit words within the half
      const __m256i idx =
          _mm256_set_m128i(_mm_set1_epi16(static_cast<int16_t>(((2 * w1 + 1) << 8) | (2 * w1))),
                           _mm_set1_epi16(static_cast<int16_t>(((2 * w0 + 1) << 8) | (2 * w0))));
      d.sc[q] = _mm256_shuffle_epi8(half[q / 4], idx);
    }
    d.d = F16(p + 208);
    return d;
  }

  HWY_INLINE void Consume(const Dec& d, const char* y, Acc& acc) const {
    const __m256i corr = _mm256_slli_epi32(
        _mm256_madd_epi16(d.sc16, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y + kBs16))), 5);
    __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
    for (int q = 0; q < 8; q += 2) {
      const __m256i p0 =
          _mm256_maddubs_epi16(d.v[q], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y + 32 * q)));
      const __m256i p1 = _mm256_maddubs_epi16(
          d.v[q + 1], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y + 32 * q + 32)));
      s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(p0, d.sc[q]));
      s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(p1, d.sc[q + 1]));
    }
    float dy;
    std::memcpy(&dy, y + kD, 4);
    const __m256i s = _mm256_sub_epi32(_mm256_add_epi32(s0, s1), corr);
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(d.d * dy), acc);
  }
};

// Two sub-blocks of 16 per 32-element group: 16-bit lanes 0-7 get scale 2g, 8-15 get
// scale 2g+1, from 16 scales as 16-bit lanes.
HWY_INLINE void PairScales(__m256i sc16, __m256i* out) {
  const __m256i half[2] = {_mm256_permute2x128_si256(sc16, sc16, 0x00),
                           _mm256_permute2x128_si256(sc16, sc16, 0x11)};
  for (int g = 0; g < 8; ++g) {
    const int w0 = (2 * g) % 8, w1 = w0 + 1;  // 16-bit words within the half
    const __m256i idx =
        _mm256_set_m128i(_mm_set1_epi16(static_cast<int16_t>(((2 * w1 + 1) << 8) | (2 * w1))),
                         _mm_set1_epi16(static_cast<int16_t>(((2 * w0 + 1) << 8) | (2 * w0))));
    out[g] = _mm256_shuffle_epi8(half[g / 4], idx);
  }
}

// q2_K and q3_K: per 128 elements, 32 bytes of 2-bit codes, bit pair j of byte r being
// element 32j + r; group g = 4h + j of 32 elements spans sub-blocks 2g and 2g+1. q3_K's
// codes are read as q + 4 (0..7, the high bit of hmask[r] bit g adding 4) and the -4
// folded in through bsums.
template <DType kType>
struct KQ23K : Base {
  static constexpr bool kQ3 = kType == DType::Q3_K;
  static constexpr int kBlock = kQ3 ? 110 : 84;
  static constexpr int kQs = kQ3 ? 32 : 16;
  static constexpr size_t kRec = 320, kBs16 = 256, kD = 304;
  static bool Matches(const ActLayout& L) {
    return L.rec == kRec && L.qs == 0 && L.bs16 == kBs16 && L.d == kD;
  }
  struct Dec {
    __m256i v[8];   // codes of group g
    __m256i sc[8];  // scales of its two sub-blocks
    __m256i aux16;  // q2_K: the 16 mins; q3_K: the 16 scales (for the bsums term)
    float d, dmin;
  };
  int64_t nb = 0;

  int64_t Units() const { return nb; }

  HWY_INLINE Dec Decode(const uint8_t* r, int64_t u) const {
    const uint8_t* p = r + u * kBlock;
    Dec d;
    const __m256i m3 = _mm256_set1_epi8(3);
    __m256i hm = _mm256_setzero_si256();
    if constexpr (kQ3) hm = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
    for (int h = 0; h < 2; ++h) {
      const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p + kQs + 32 * h));
      for (int j = 0; j < 4; ++j) {
        const int g = 4 * h + j;
        __m256i c = _mm256_and_si256(_mm256_srl_epi16(q, _mm_cvtsi32_si128(2 * j)), m3);
        if constexpr (kQ3) {
          const __m256i bit = _mm256_set1_epi8(static_cast<char>(1u << g));
          const __m256i set = _mm256_cmpeq_epi8(_mm256_and_si256(hm, bit), bit);
          c = _mm256_or_si256(c, _mm256_and_si256(set, _mm256_set1_epi8(4)));
        }
        d.v[g] = c;
      }
    }
    __m256i sc16;
    if constexpr (kQ3) {
      // unpack_scales_q3k in registers (through memory it stalls on store forwarding).
      constexpr uint32_t kmask1 = 0x03030303, kmask2 = 0x0f0f0f0f;
      uint32_t a[3];
      std::memcpy(a, p + 96, 12);
      const __m128i s8 =
          _mm_setr_epi32(static_cast<int>((a[0] & kmask2) | (((a[2] >> 0) & kmask1) << 4)),
                         static_cast<int>((a[1] & kmask2) | (((a[2] >> 2) & kmask1) << 4)),
                         static_cast<int>(((a[0] >> 4) & kmask2) | (((a[2] >> 4) & kmask1) << 4)),
                         static_cast<int>(((a[1] >> 4) & kmask2) | (((a[2] >> 6) & kmask1) << 4)));
      sc16 = _mm256_sub_epi16(_mm256_cvtepi8_epi16(s8), _mm256_set1_epi16(32));
      d.aux16 = sc16;
      d.d = F16(p + 108);
      d.dmin = 0;
    } else {
      const __m128i raw = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
      const __m128i m4 = _mm_set1_epi8(0x0F);
      sc16 = _mm256_cvtepu8_epi16(_mm_and_si128(raw, m4));
      d.aux16 = _mm256_cvtepu8_epi16(_mm_and_si128(_mm_srli_epi16(raw, 4), m4));
      d.d = F16(p + 80);
      d.dmin = F16(p + 82);
    }
    PairScales(sc16, d.sc);
    return d;
  }

  HWY_INLINE void Consume(const Dec& d, const char* y, Acc& acc) const {
    __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
    for (int g = 0; g < 8; g += 2) {
      const __m256i p0 =
          _mm256_maddubs_epi16(d.v[g], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y + 32 * g)));
      const __m256i p1 = _mm256_maddubs_epi16(
          d.v[g + 1], _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y + 32 * g + 32)));
      s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(p0, d.sc[g]));
      s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(p1, d.sc[g + 1]));
    }
    // q2_K: sum_j min_j * bsum16_j (scaled by -dmin); q3_K: 4 * sum_j scale_j * bsum16_j
    // (the codes' +4), subtracted in integers.
    const __m256i b =
        _mm256_madd_epi16(d.aux16, _mm256_loadu_si256(reinterpret_cast<const __m256i*>(y + kBs16)));
    float dy;
    std::memcpy(&dy, y + kD, 4);
    __m256i s = _mm256_add_epi32(s0, s1);
    if constexpr (kQ3) s = _mm256_sub_epi32(s, _mm256_slli_epi32(b, 2));
    acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_set1_ps(d.d * dy), acc);
    if constexpr (!kQ3) acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(b), _mm256_set1_ps(-(d.dmin * dy)), acc);
  }
};

#define BRAID_TILE_ATTR
#include "tensor/quant_tile-inl.h"
#undef BRAID_TILE_ATTR

inline bool Dispatch(DType t, const uint8_t* W, size_t stride, int64_t r0, int64_t r1, const void* xq,
                     size_t xq_stride, int64_t n, int64_t k, float* y, size_t ldy) {
  const ActLayout L = act_layout(t, k);
  switch (t) {
    case DType::Q8_0: {
      KQ8_0 kern;
      return tile::Run(kern, L, W, stride, r0, r1, xq, xq_stride, n, y, ldy);
    }
    case DType::Q4_0: {
      KNibble<DType::Q4_0> kern;
      return tile::Run(kern, L, W, stride, r0, r1, xq, xq_stride, n, y, ldy);
    }
    case DType::Q4_1: {
      KNibble<DType::Q4_1> kern;
      return tile::Run(kern, L, W, stride, r0, r1, xq, xq_stride, n, y, ldy);
    }
    case DType::Q5_0: {
      KNibble<DType::Q5_0> kern;
      return tile::Run(kern, L, W, stride, r0, r1, xq, xq_stride, n, y, ldy);
    }
    case DType::Q5_1: {
      KNibble<DType::Q5_1> kern;
      return tile::Run(kern, L, W, stride, r0, r1, xq, xq_stride, n, y, ldy);
    }
    case DType::Q4_K: {
      KK4<DType::Q4_K> kern;
      return tile::Run(kern, L, W, stride, r0, r1, xq, xq_stride, n, y, ldy);
    }
    case DType::Q5_K: {
      KK4<DType::Q5_K> kern;
      return tile::Run(kern, L, W, stride, r0, r1, xq, xq_stride, n, y, ldy);
    }
    case DType::Q6_K: {
      KQ6K kern;
      return tile::Run(kern, L, W, stride, r0, r1, xq, xq_stride, n, y, ldy);
    }
    case DType::Q2_K: {
      KQ23K<DType::Q2_K> kern;
      return tile::Run(kern, L, W, stride, r0, r1, xq, xq_stride, n, y, ldy);
    }
    case DType::Q3_K: {
      KQ23K<DType::Q3_K> kern;
      return tile::Run(kern, L, W, stride, r0, r1, xq, xq_stride, n, y, ldy);
    }
    default:
      return false;
  }
}

inline bool HandlesType(DType t) {
  const ActLayout L = act_layout(t, 1024);
  switch (t) {
    case DType::Q8_0:
      return KQ8_0::Matches(L);
    case DType::Q4_0:
      return KNibble<DType::Q4_0>::Matches(L);
    case DType::Q4_1:
      return KNibble<DType::Q4_1>::Matches(L);
    case DType::Q5_0:
      return KNibble<DType::Q5_0>::Matches(L);
    case DType::Q5_1:
      return KNibble<DType::Q5_1>::Matches(L);
    case DType::Q4_K:
      return KK4<DType::Q4_K>::Matches(L);
    case DType::Q5_K:
      return KK4<DType::Q5_K>::Matches(L);
    case DType::Q6_K:
      return KQ6K::Matches(L);
    case DType::Q2_K:
      return KQ23K<DType::Q2_K>::Matches(L);
    case DType::Q3_K:
      return KQ23K<DType::Q3_K>::Matches(L);
    default:
      return false;
  }
}

}  // namespace avx2
