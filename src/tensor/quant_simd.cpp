// SIMD dot products of quantized weight rows with quantized activations, and the SIMD
// activation quantizer, compiled once per Highway target and chosen at run time.
//
// Three kinds of dot kernels:
//  - AVX-512 VNNI (quant_avx512-inl.h) on the AVX3_DL target (Ice Lake, Sapphire Rapids,
//    Zen 4) and on AVX3 CPUs that have VNNI (Cascade Lake): 64 weights decoded per
//    instruction, vpdpbusd / vpmaddubsw + vpdpwssd products;
//  - AVX2 (quant_avx2-inl.h) on the AVX2 target and AVX3 CPUs without VNNI (Skylake-X):
//    the same design on 256-bit vectors with vpmaddubsw + vpmaddwd;
//  - portable ones (this file), Highway ops on 128-bit vectors, for every other target
//    (SSE4, NEON, SVE, ...) and as the fallback.
// All produce per-block integer sums exactly; only the f32 scaling and summation order
// differ from the scalar reference (quant_ref*.cpp), which the tests check them against.

// AVX3_DL (AVX-512 VNNI/VBMI) is opt-in in Highway 1.0.
#ifndef HWY_WANT_AVX3_DL
#define HWY_WANT_AVX3_DL
#endif
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "tensor/quant_simd.cpp"
#include <hwy/foreach_target.h>  // must come before highway.h
#include <hwy/highway.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "base/aligned_vector.h"
#include "braid/dtype.h"
#include "tensor/quant_act.h"
#include "tensor/quant_blocks.h"
#include "tensor/quant_internal.h"
#include "tensor/quant_panels.h"

HWY_BEFORE_NAMESPACE();
namespace braid::quant {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

#if HWY_TARGET == HWY_SCALAR

// No 128-bit vectors on this target: the scalar reference is the kernel.
void DotRows(DType t, const uint8_t* W, size_t stride, int64_t r0, int64_t r1, const void* xq, int64_t k,
             float* y) {
  dot_rows_ref(t, W, stride, r0, r1, xq, k, y);
}

void QuantizeActivation(DType t, const float* x, int64_t k, void* xq) { activation_ref(t, x, k, xq); }

#else  // HWY_TARGET != HWY_SCALAR

using DU8 = hn::Full128<uint8_t>;
using DI8 = hn::Full128<int8_t>;
using DI16 = hn::Full128<int16_t>;
using DI32 = hn::Full128<int32_t>;
using DF32 = hn::Full128<float>;
using VU8 = hn::Vec<DU8>;
using VI8 = hn::Vec<DI8>;
using VI32 = hn::Vec<DI32>;
using VF32 = hn::Vec<DF32>;

// Adds a[i]*b[i] for 16 int8 pairs into the lanes of acc (lane order unspecified: only
// the sum of all lanes is meaningful).
HWY_INLINE VI32 Dot16(VI8 a, VI8 b, VI32 acc) {
  const DI32 d32;
  const DI16 d16;
  const hn::Half<DI8> d8h;
  const auto a0 = hn::PromoteTo(d16, hn::LowerHalf(d8h, a));
  const auto a1 = hn::PromoteTo(d16, hn::UpperHalf(d8h, a));
  const auto b0 = hn::PromoteTo(d16, hn::LowerHalf(d8h, b));
  const auto b1 = hn::PromoteTo(d16, hn::UpperHalf(d8h, b));
  VI32 odd = hn::Zero(d32);
  acc = hn::ReorderWidenMulAccumulate(d32, a0, b0, acc, odd);
  acc = hn::ReorderWidenMulAccumulate(d32, a1, b1, acc, odd);
  return hn::Add(acc, odd);
}

HWY_INLINE VI8 LoadI8(const int8_t* p) { return hn::LoadU(DI8(), p); }

// The 5th bits of 16 elements of a q5_0/q5_1 block: bits [first, first+16) of qh,
// as 0x10 in each byte that has its bit set.
HWY_INLINE VU8 HighBits16(uint32_t qh, int first) {
  const DU8 du8;
  const hn::Full128<uint32_t> du32;
  const auto bytes = hn::BitCast(du8, hn::Set(du32, qh));
  alignas(16) static constexpr uint8_t kLo[16] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1};
  alignas(16) static constexpr uint8_t kHi[16] = {2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3};
  alignas(16) static constexpr uint8_t kBit[16] = {1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128};
  const auto spread = hn::TableLookupBytes(bytes, hn::Load(du8, first == 0 ? kLo : kHi));
  return hn::IfThenElseZero(hn::TestBit(spread, hn::Load(du8, kBit)), hn::Set(du8, 0x10));
}

// ---------------------------------------------------------------- legacy types

HWY_INLINE float LoadF32(const char* p) {
  float v;
  std::memcpy(&v, p, 4);
  return v;
}

template <DType kType>
float DotRowLegacy(const uint8_t* row, const ActView& a, int64_t nb) {
  const ActLayout& L = *a.L;
  const DU8 du8;
  const DI8 di8;
  const DI32 di32;
  const DF32 df;
  constexpr size_t kBytes = kType == DType::Q8_0   ? sizeof(BlockQ8_0)
                            : kType == DType::Q4_0 ? sizeof(BlockQ4_0)
                            : kType == DType::Q4_1 ? sizeof(BlockQ4_1)
                            : kType == DType::Q5_0 ? sizeof(BlockQ5_0)
                                                   : sizeof(BlockQ5_1);
  constexpr bool kHasMin = kType == DType::Q4_1 || kType == DType::Q5_1;
  constexpr bool kHasHigh = kType == DType::Q5_0 || kType == DType::Q5_1;
  constexpr int kOffset = kType == DType::Q4_0 ? 8 : kType == DType::Q5_0 ? 16 : 0;
  VF32 acc = hn::Zero(df);
  float acc_min = 0.0f;
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = row + b * kBytes;
    const char* rec = a.unit(b / 4);
    const int j = static_cast<int>(b % 4);
    VI32 isum = hn::Zero(di32);
    if constexpr (kType == DType::Q8_0) {
      const int8_t* qs = reinterpret_cast<const int8_t*>(blk + 2);
      const int8_t* y = reinterpret_cast<const int8_t*>(rec + L.qs) + 32 * j;
      isum = Dot16(LoadI8(qs), LoadI8(y), isum);
      isum = Dot16(LoadI8(qs + 16), LoadI8(y + 16), isum);
    } else {
      // Nibble types: low nibbles are elements 0..15, high 16..31; the activation keeps
      // them in two 16-byte runs (see quant_act.h).
      const uint8_t* qs = blk + kBytes - 16;
      const auto q = hn::LoadU(du8, qs);
      auto lo = hn::And(q, hn::Set(du8, 0x0F));
      auto hi = hn::ShiftRight<4>(q);
      if constexpr (kHasHigh) {
        uint32_t qh;
        std::memcpy(&qh, qs - 4, 4);
        lo = hn::Or(lo, HighBits16(qh, 0));
        hi = hn::Or(hi, HighBits16(qh, 16));
      }
      const auto off = hn::Set(di8, static_cast<int8_t>(kOffset));
      const int8_t* y = reinterpret_cast<const int8_t*>(rec + L.qs) + 16 * j;
      isum = Dot16(hn::Sub(hn::BitCast(di8, lo), off), LoadI8(y), isum);
      isum = Dot16(hn::Sub(hn::BitCast(di8, hi), off), LoadI8(y + 64), isum);
    }
    const float dw = load_fp16(blk);
    const float dx = LoadF32(rec + L.dx + 4 * j);
    acc = hn::MulAdd(hn::ConvertTo(df, isum), hn::Set(df, dw * dx), acc);
    if constexpr (kHasMin) {
      int32_t sy;
      std::memcpy(&sy, rec + L.sy + 4 * j, 4);
      acc_min += load_fp16(blk + 2) * (dx * static_cast<float>(sy));
    }
  }
  return hn::GetLane(hn::SumOfLanes(df, acc)) + acc_min;
}

// ---------------------------------------------------------------- K types

// q4_K and q5_K: 8 sub-blocks of 32 with 6-bit scales and mins.
template <DType kType>
float DotRowK4(const uint8_t* row, const ActView& a, int64_t nb) {
  const DU8 du8;
  const DI8 di8;
  const DI32 di32;
  const DF32 df;
  constexpr bool kQ5 = kType == DType::Q5_K;
  constexpr size_t kBytes = kQ5 ? sizeof(BlockQ5_K) : sizeof(BlockQ4_K);
  VF32 acc = hn::Zero(df);
  float acc_min = 0.0f;
  const auto mask4 = hn::Set(du8, 0x0F);
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = row + b * kBytes;
    const uint8_t* qs = blk + kBytes - kQKK / 2;
    const uint8_t* qh = blk + 4 + kScaleBytesK;  // q5_K only
    uint8_t sm[16];
    unpack_scales_k4(blk + 4, sm);
    const char* rec = a.unit(b);
    const int8_t* y = reinterpret_cast<const int8_t*>(rec + a.L->qs);
    VI32 isum = hn::Zero(di32);
    for (int g = 0; g < 4; ++g) {  // 32 weight bytes: sub-blocks 2g (low) and 2g+1 (high)
      const auto q0 = hn::LoadU(du8, qs + 32 * g);
      const auto q1 = hn::LoadU(du8, qs + 32 * g + 16);
      auto l0 = hn::And(q0, mask4), l1 = hn::And(q1, mask4);
      auto h0 = hn::ShiftRight<4>(q0), h1 = hn::ShiftRight<4>(q1);
      if constexpr (kQ5) {
        const auto b0 = hn::LoadU(du8, qh), b1 = hn::LoadU(du8, qh + 16);
        const auto bit_lo = hn::Set(du8, static_cast<uint8_t>(1u << (2 * g)));
        const auto bit_hi = hn::Set(du8, static_cast<uint8_t>(2u << (2 * g)));
        const auto v16 = hn::Set(du8, 16);
        l0 = hn::Or(l0, hn::IfThenElseZero(hn::TestBit(b0, bit_lo), v16));
        l1 = hn::Or(l1, hn::IfThenElseZero(hn::TestBit(b1, bit_lo), v16));
        h0 = hn::Or(h0, hn::IfThenElseZero(hn::TestBit(b0, bit_hi), v16));
        h1 = hn::Or(h1, hn::IfThenElseZero(hn::TestBit(b1, bit_hi), v16));
      }
      // Activation order per 128 elements: sub-blocks 0, 2, 1, 3 (quant_act.h).
      const int8_t* ylo = y + (g >> 1) * 128 + (g & 1) * 32;
      const int8_t* yhi = ylo + 64;
      VI32 slo = hn::Zero(di32), shi = hn::Zero(di32);
      slo = Dot16(hn::BitCast(di8, l0), LoadI8(ylo), slo);
      slo = Dot16(hn::BitCast(di8, l1), LoadI8(ylo + 16), slo);
      shi = Dot16(hn::BitCast(di8, h0), LoadI8(yhi), shi);
      shi = Dot16(hn::BitCast(di8, h1), LoadI8(yhi + 16), shi);
      isum = hn::Add(isum, hn::Mul(slo, hn::Set(di32, sm[2 * g])));
      isum = hn::Add(isum, hn::Mul(shi, hn::Set(di32, sm[2 * g + 1])));
    }
    int isum_min = 0;
    for (int j = 0; j < 8; ++j) isum_min += sm[8 + j] * a.bs32(b, j);
    const float dy = LoadF32(rec + a.L->d);
    acc = hn::MulAdd(hn::ConvertTo(df, isum), hn::Set(df, load_fp16(blk) * dy), acc);
    acc_min += load_fp16(blk + 2) * dy * static_cast<float>(isum_min);
  }
  return hn::GetLane(hn::SumOfLanes(df, acc)) - acc_min;
}

float DotRowQ6K(const uint8_t* row, const ActView& a, int64_t nb) {
  const DU8 du8;
  const DI8 di8;
  const DI32 di32;
  const DF32 df;
  VF32 acc = hn::Zero(df);
  const auto m4 = hn::Set(du8, 0x0F), m2 = hn::Set(du8, 0x03), m2s = hn::Set(du8, 0x0C);
  const auto m2t = hn::Set(du8, 0x30), m2u = hn::Set(du8, 0xC0);
  const auto off = hn::Set(di8, 32);
  for (int64_t b = 0; b < nb; ++b) {
    const BlockQ6_K* x = reinterpret_cast<const BlockQ6_K*>(row + b * sizeof(BlockQ6_K));
    const char* rec = a.unit(b);
    const int8_t* y = reinterpret_cast<const int8_t*>(rec + a.L->qs);
    VI32 isum = hn::Zero(di32);
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = x->ql + 64 * h;
      const uint8_t* qh = x->qh + 32 * h;
      const int8_t* sc = x->scales + 8 * h;
      const int8_t* yh = y + 128 * h;
      for (int c = 0; c < 32; c += 16) {  // elements c..c+15 of each quarter
        const auto l0 = hn::LoadU(du8, ql + c), l1 = hn::LoadU(du8, ql + 32 + c);
        const auto hb = hn::LoadU(du8, qh + c);
        const auto q1 = hn::Or(hn::And(l0, m4), hn::ShiftLeft<4>(hn::And(hb, m2)));
        const auto q2 = hn::Or(hn::And(l1, m4), hn::ShiftLeft<2>(hn::And(hb, m2s)));
        const auto q3 = hn::Or(hn::ShiftRight<4>(l0), hn::And(hb, m2t));
        const auto q4 = hn::Or(hn::ShiftRight<4>(l1), hn::ShiftRight<2>(hn::And(hb, m2u)));
        const int s = c / 16;  // sub-block within the quarter
        const VI32 z = hn::Zero(di32);
        const VI32 d1 = Dot16(hn::Sub(hn::BitCast(di8, q1), off), LoadI8(yh + c), z);
        const VI32 d2 = Dot16(hn::Sub(hn::BitCast(di8, q2), off), LoadI8(yh + 32 + c), z);
        const VI32 d3 = Dot16(hn::Sub(hn::BitCast(di8, q3), off), LoadI8(yh + 64 + c), z);
        const VI32 d4 = Dot16(hn::Sub(hn::BitCast(di8, q4), off), LoadI8(yh + 96 + c), z);
        isum = hn::Add(isum, hn::Mul(d1, hn::Set(di32, sc[s + 0])));
        isum = hn::Add(isum, hn::Mul(d2, hn::Set(di32, sc[s + 2])));
        isum = hn::Add(isum, hn::Mul(d3, hn::Set(di32, sc[s + 4])));
        isum = hn::Add(isum, hn::Mul(d4, hn::Set(di32, sc[s + 6])));
      }
    }
    acc = hn::MulAdd(hn::ConvertTo(df, isum), hn::Set(df, load_fp16(&x->d) * LoadF32(rec + a.L->d)), acc);
  }
  return hn::GetLane(hn::SumOfLanes(df, acc));
}

// q2_K and q3_K: per 128 elements, 32 bytes of 2-bit codes (bit pair j of byte r is
// element 32j + r); q3_K subtracts 4 where its hmask bit (4h + j of byte r) is clear.
template <DType kType>
float DotRowQ23K(const uint8_t* row, const ActView& a, int64_t nb) {
  const DU8 du8;
  const DI8 di8;
  const DI32 di32;
  const DF32 df;
  constexpr bool kQ3 = kType == DType::Q3_K;
  constexpr size_t kBytes = kQ3 ? sizeof(BlockQ3_K) : sizeof(BlockQ2_K);
  VF32 acc = hn::Zero(df);
  float acc_min = 0.0f;
  const auto m3 = hn::Set(du8, 3);
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = row + b * kBytes;
    const char* rec = a.unit(b);
    const int8_t* y = reinterpret_cast<const int8_t*>(rec + a.L->qs);
    const uint8_t* qs =
        kQ3 ? reinterpret_cast<const BlockQ3_K*>(blk)->qs : reinterpret_cast<const BlockQ2_K*>(blk)->qs;
    int scale[16];
    float d, dmin = 0.0f;
    int summs = 0;
    if constexpr (kQ3) {
      const BlockQ3_K* x = reinterpret_cast<const BlockQ3_K*>(blk);
      int8_t sc[16];
      unpack_scales_q3k(x->scales, sc);
      for (int j = 0; j < 16; ++j) scale[j] = sc[j] - 32;
      d = load_fp16(&x->d);
    } else {
      const BlockQ2_K* x = reinterpret_cast<const BlockQ2_K*>(blk);
      for (int j = 0; j < 16; ++j) {
        scale[j] = x->scales[j] & 0xF;
        summs += (x->scales[j] >> 4) * a.bs16(b, j);
      }
      d = load_fp16(&x->d);
      dmin = load_fp16(&x->dmin);
    }
    VI32 isum = hn::Zero(di32);
    for (int h = 0; h < 2; ++h) {
      for (int half = 0; half < 2; ++half) {  // bytes r = 16*half .. 16*half+15
        const auto q = hn::LoadU(du8, qs + 32 * h + 16 * half);
        hn::Vec<DU8> hm = hn::Zero(du8);
        if constexpr (kQ3) hm = hn::LoadU(du8, reinterpret_cast<const BlockQ3_K*>(blk)->hmask + 16 * half);
        // Group j: codes in bit pair j (a lambda, not an array: SVE vectors are sizeless).
        auto group = [&](auto codes, int j) {
          auto w = hn::BitCast(di8, codes);
          if constexpr (kQ3) {
            const auto set = hn::TestBit(hm, hn::Set(du8, static_cast<uint8_t>(1u << (4 * h + j))));
            w = hn::Sub(w, hn::IfThenZeroElse(hn::RebindMask(di8, set), hn::Set(di8, 4)));
          }
          const int sub = 8 * h + 2 * j + half;
          const VI32 dot = Dot16(w, LoadI8(y + 128 * h + 32 * j + 16 * half), hn::Zero(di32));
          isum = hn::Add(isum, hn::Mul(dot, hn::Set(di32, scale[sub])));
        };
        group(hn::And(q, m3), 0);
        group(hn::And(hn::ShiftRight<2>(q), m3), 1);
        group(hn::And(hn::ShiftRight<4>(q), m3), 2);
        group(hn::ShiftRight<6>(q), 3);
      }
    }
    float dy;
    std::memcpy(&dy, rec + a.L->d, 4);
    acc = hn::MulAdd(hn::ConvertTo(df, isum), hn::Set(df, d * dy), acc);
    acc_min += dmin * dy * static_cast<float>(summs);
  }
  return hn::GetLane(hn::SumOfLanes(df, acc)) - acc_min;
}

// ---------------------------------------------------------------- activation

// llama.cpp's activation quantizers, vectorized with bit-identical results to
// activation_ref (quant_ref.cpp): q8_0's roundf (half away from zero) is rebuilt from
// Trunc, q8_K's nearest_int is round-to-nearest-even (NearestInt).
using DF16 = hn::CappedTag<float, 16>;

// Quantizes x[0..16) * scale into dst; returns the sum of the 16 values.
template <bool kHalfAway>
HWY_INLINE int32_t Quantize16(const float* x, float scale, char* dst) {
  const DF16 d;
  const hn::RebindToSigned<DF16> di;
  const hn::Rebind<int8_t, DF16> d8;
  const size_t N = hn::Lanes(d);
  auto sum = hn::Zero(di);
  for (size_t i = 0; i < 16; i += N) {
    const auto v = hn::Mul(hn::LoadU(d, x + i), hn::Set(d, scale));
    hn::Vec<decltype(di)> q;
    if constexpr (kHalfAway) {
      const auto t = hn::Trunc(v);
      const auto up = hn::Ge(hn::Abs(hn::Sub(v, t)), hn::Set(d, 0.5f));
      q = hn::ConvertTo(di, hn::Add(t, hn::IfThenElseZero(up, hn::CopySign(hn::Set(d, 1.0f), v))));
    } else {
      q = hn::Min(hn::NearestInt(v), hn::Set(di, 127));
    }
    sum = hn::Add(sum, q);
    hn::StoreU(hn::DemoteTo(d8, q), d8, reinterpret_cast<int8_t*>(dst) + i);
  }
  return hn::GetLane(hn::SumOfLanes(di, sum));
}

HWY_INLINE float AbsMax(const float* x, int n) {
  const DF16 d;
  auto m = hn::Zero(d);
  for (int i = 0; i < n; i += static_cast<int>(hn::Lanes(d))) m = hn::Max(m, hn::Abs(hn::LoadU(d, x + i)));
  return hn::GetLane(hn::MaxOfLanes(d, m));
}

void QuantizeActivation(DType t, const float* x, int64_t k, void* xq) {
  const ActLayout L = act_layout(t, k);
  char* base = static_cast<char*>(xq);
  std::memset(base, 0, L.bytes);
  if (!L.k_type) {
    for (int64_t b = 0; b < L.nb; ++b) {
      char* rec = base + (b / 4) * L.rec;
      const int j = static_cast<int>(b % 4);
      const float* xb = x + b * kQK;
      const float amax = AbsMax(xb, kQK);
      const float d = amax / ((1 << 7) - 1);
      const float id = d ? 1.0f / d : 0.0f;
      const int32_t sum = Quantize16<true>(xb, id, rec + L.qs + act_pos_in_unit(t, j * kQK)) +
                          Quantize16<true>(xb + 16, id, rec + L.qs + act_pos_in_unit(t, j * kQK + 16));
      const float dx = fp16_to_fp32(f32_to_f16(d));
      std::memcpy(rec + L.dx + 4 * j, &dx, 4);
      std::memcpy(rec + L.sy + 4 * j, &sum, 4);
      const int E = L.lanes;
      for (int e = 0; e < E; ++e) std::memcpy(rec + L.escale + 4 * (E * j + e), &dx, 4);
      write_ebias(t, L, rec, j, sum);
      if (L.emin) {
        const float m = dx * static_cast<float>(sum) / static_cast<float>(E);
        for (int e = 0; e < E; ++e) std::memcpy(rec + L.emin + 4 * (E * j + e), &m, 4);
      }
    }
    return;
  }
  for (int64_t b = 0; b < L.nb; ++b, x += kQKK) {
    char* rec = base + b * L.rec;
    const float amax = AbsMax(x, kQKK);
    if (!amax) continue;  // all zero: d, values and sums stay 0
    int first = 0;        // llama.cpp takes the first element of largest magnitude
    while (std::fabs(x[first]) != amax) ++first;
    const float iscale = -127.f / x[first];
    int16_t bs16[16], bs32[8];
    for (int g = 0; g < 16; ++g) {
      bs16[g] = static_cast<int16_t>(
          Quantize16<false>(x + 16 * g, iscale, rec + L.qs + act_pos_in_unit(t, 16 * g)));
    }
    for (int j = 0; j < 8; ++j) bs32[j] = static_cast<int16_t>(bs16[2 * j] + bs16[2 * j + 1]);
    const float d = 1 / iscale;
    std::memcpy(rec + L.d, &d, 4);
    std::memcpy(rec + L.bs16, bs16, sizeof(bs16));
    std::memcpy(rec + L.bs32, bs32, sizeof(bs32));
  }
}

template <class RowFn>
HWY_INLINE void ForRows(RowFn fn, const uint8_t* W, size_t stride, int64_t r0, int64_t r1, float* y) {
  for (int64_t r = r0; r < r1; ++r) y[r - r0] = fn(W + r * stride);
}

void DotRowsPortable(DType t, const uint8_t* W, size_t stride, int64_t r0, int64_t r1, const void* xq,
                     int64_t k, float* y) {
  const ActLayout L = act_layout(t, k);
  const ActView a = act_view(L, xq);
  const int64_t nb = L.nb;
  switch (t) {
#define BRAID_ROWS(expr) return ForRows([&](const uint8_t* row) { return expr; }, W, stride, r0, r1, y)
    case DType::Q8_0:
      BRAID_ROWS(DotRowLegacy<DType::Q8_0>(row, a, nb));
    case DType::Q4_0:
      BRAID_ROWS(DotRowLegacy<DType::Q4_0>(row, a, nb));
    case DType::Q4_1:
      BRAID_ROWS(DotRowLegacy<DType::Q4_1>(row, a, nb));
    case DType::Q5_0:
      BRAID_ROWS(DotRowLegacy<DType::Q5_0>(row, a, nb));
    case DType::Q5_1:
      BRAID_ROWS(DotRowLegacy<DType::Q5_1>(row, a, nb));
    case DType::Q4_K:
      BRAID_ROWS(DotRowK4<DType::Q4_K>(row, a, nb));
    case DType::Q5_K:
      BRAID_ROWS(DotRowK4<DType::Q5_K>(row, a, nb));
    case DType::Q6_K:
      BRAID_ROWS(DotRowQ6K(row, a, nb));
    case DType::Q2_K:
      BRAID_ROWS(DotRowQ23K<DType::Q2_K>(row, a, nb));
    case DType::Q3_K:
      BRAID_ROWS(DotRowQ23K<DType::Q3_K>(row, a, nb));
#undef BRAID_ROWS
    default:
      return dot_rows_ref(t, W, stride, r0, r1, xq, k, y);
  }
}

#if HWY_TARGET == HWY_AVX3_DL || HWY_TARGET == HWY_AVX2 || HWY_TARGET == HWY_AVX3
#define BRAID_X86_KERNELS 1
#include "tensor/quant_avx2-inl.h"
#endif
#if HWY_TARGET == HWY_AVX3_DL || HWY_TARGET == HWY_AVX3
#define BRAID_AVX512_KERNELS 1
#include "tensor/quant_avx512-inl.h"
#endif

// The hand-written x86 kernels for t, if this target has them.
HWY_INLINE bool X86Dispatch(DType t, const uint8_t* W, size_t stride, int64_t r0, int64_t r1, const void* xq,
                            size_t xq_stride, int64_t n, int64_t k, float* y, size_t ldy) {
#ifdef BRAID_AVX512_KERNELS
  if (avx512::Dispatch(t, W, stride, r0, r1, xq, xq_stride, n, k, y, ldy)) return true;
#endif
#ifdef BRAID_X86_KERNELS
  return avx2::Dispatch(t, W, stride, r0, r1, xq, xq_stride, n, k, y, ldy);
#else
  (void)t, (void)W, (void)stride, (void)r0, (void)r1, (void)xq, (void)xq_stride, (void)n, (void)k, (void)y,
      (void)ldy;
  return false;
#endif
}

void DotRows(DType t, const uint8_t* W, size_t stride, int64_t r0, int64_t r1, const void* xq, int64_t k,
             float* y) {
  if (X86Dispatch(t, W, stride, r0, r1, xq, 0, 1, k, y, 0)) return;
  DotRowsPortable(t, W, stride, r0, r1, xq, k, y);
}

#endif  // HWY_TARGET == HWY_SCALAR

// Portable tile: one activation at a time (same per-element operations as DotRows).
void MatmulTile(DType t, const uint8_t* W, size_t stride, int64_t r0, int64_t r1, const void* xq,
                size_t xq_stride, int64_t n, int64_t k, float* y, size_t ldy) {
#if HWY_TARGET != HWY_SCALAR
  if (X86Dispatch(t, W, stride, r0, r1, xq, xq_stride, n, k, y, ldy)) return;
#endif
  const char* x = static_cast<const char*>(xq);
  for (int64_t i = 0; i < n; ++i) DotRows(t, W, stride, r0, r1, x + i * xq_stride, k, y + i * ldy);
}

// Panels (quant_panels.h): only the AVX-512 VNNI kernels read them.
bool MatmulPanels(DType t, const uint8_t* P, int64_t r0, int64_t r1, const void* xq, size_t xq_stride, int64_t n,
                  int64_t k, float* y, size_t ldy) {
#ifdef BRAID_AVX512_KERNELS
  return avx512::DispatchPanels(t, P, r0, r1, xq, xq_stride, n, k, y, ldy);
#else
  (void)t, (void)P, (void)r0, (void)r1, (void)xq, (void)xq_stride, (void)n, (void)k, (void)y, (void)ldy;
  return false;
#endif
}

bool PanelsNative() {
#ifdef BRAID_AVX512_KERNELS
  return avx512::Usable();
#else
  return false;
#endif
}

const char* TargetName() { return hwy::TargetName(HWY_TARGET); }

const char* KernelName(DType t) {
#if HWY_TARGET == HWY_SCALAR
  (void)t;
  return "scalar";
#else
#ifdef BRAID_AVX512_KERNELS
  if (avx512::HandlesType(t)) return "avx512-vnni";
#endif
#ifdef BRAID_X86_KERNELS
  if (avx2::HandlesType(t)) return "avx2";
#endif
  (void)t;
  return "portable";
#endif
}

#undef BRAID_X86_KERNELS
#undef BRAID_AVX512_KERNELS

}  // namespace HWY_NAMESPACE
}  // namespace braid::quant
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace braid::quant {

HWY_EXPORT(DotRows);
HWY_EXPORT(MatmulTile);
HWY_EXPORT(TargetName);
HWY_EXPORT(KernelName);
HWY_EXPORT(QuantizeActivation);
HWY_EXPORT(MatmulPanels);
HWY_EXPORT(PanelsNative);

void dot_rows_simd(DType t, const uint8_t* W, size_t stride, int64_t r0, int64_t r1, const void* xq,
                   int64_t k, float* y) {
  HWY_DYNAMIC_DISPATCH(DotRows)(t, W, stride, r0, r1, xq, k, y);
}

void matmul_tile_simd(DType t, const uint8_t* W, size_t stride, int64_t r0, int64_t r1, const void* xq,
                      size_t xq_stride, int64_t n, int64_t k, float* y, size_t ldy) {
  HWY_DYNAMIC_DISPATCH(MatmulTile)(t, W, stride, r0, r1, xq, xq_stride, n, k, y, ldy);
}

void activation_simd(DType wtype, const float* x, int64_t k, void* xq) {
  HWY_DYNAMIC_DISPATCH(QuantizeActivation)(wtype, x, k, xq);
}

bool matmul_panels_simd(DType t, const uint8_t* P, int64_t r0, int64_t r1, const void* xq, size_t xq_stride,
                        int64_t n, int64_t k, float* y, size_t ldy) {
  return HWY_DYNAMIC_DISPATCH(MatmulPanels)(t, P, r0, r1, xq, xq_stride, n, k, y, ldy);
}

bool panels_native_simd() { return HWY_DYNAMIC_DISPATCH(PanelsNative)(); }

const char* simd_target_name() { return HWY_DYNAMIC_DISPATCH(TargetName)(); }

const char* simd_kernel_name(DType t) { return HWY_DYNAMIC_DISPATCH(KernelName)(t); }

std::vector<int64_t> simd_targets() {
  std::vector<int64_t> out;
  for (int64_t t = hwy::SupportedTargets() & HWY_TARGETS; t != 0; t &= t - 1) out.push_back(t & -t);
  return out;
}

}  // namespace braid::quant
#endif  // HWY_ONCE
