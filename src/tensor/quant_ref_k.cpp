// Scalar reference for the K block types (q2_K .. q6_K): llama.cpp's quantize_row_*_ref
// (with its make_qkx2_quants / make_qx_quants / make_q3_quants scale searches),
// dequantize_row_*, quantize_row_q8_K for activations, and the generic dot products.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "braid/error.h"
#include "tensor/quant_act.h"
#include "tensor/quant_blocks.h"
#include "tensor/quant_internal.h"

// No fused multiply-add contraction: the quantizers' rounding decisions (and so the
// bytes they write) must be those of llama.cpp's x86 build on every machine.
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

namespace braid::quant {
namespace {

constexpr float kGroupMaxEps = 1e-15f;

// Scale and min for x[0..n) with weights, searched as llama.cpp's make_qkx2_quants does.
float make_qkx2_quants(int n, int nmax, const float* x, const float* weights, uint8_t* L, float* the_min,
                       uint8_t* Laux, float rmin, float rdelta, int nstep, bool use_mad) {
  float min = x[0];
  float max = x[0];
  float sum_w = weights[0];
  float sum_x = sum_w * x[0];
  for (int i = 1; i < n; ++i) {
    if (x[i] < min) min = x[i];
    if (x[i] > max) max = x[i];
    const float w = weights[i];
    sum_w += w;
    sum_x += w * x[i];
  }
  if (min > 0) min = 0;
  if (max == min) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    *the_min = -min;
    return 0.f;
  }
  float iscale = nmax / (max - min);
  float scale = 1 / iscale;
  float best_error = 0;
  for (int i = 0; i < n; ++i) {
    const int l = nearest_int(iscale * (x[i] - min));
    L[i] = static_cast<uint8_t>(std::max(0, std::min(nmax, l)));
    float diff = scale * L[i] + min - x[i];
    diff = use_mad ? std::fabs(diff) : diff * diff;
    best_error += weights[i] * diff;
  }
  if (nstep < 1) {
    *the_min = -min;
    return scale;
  }
  for (int is = 0; is <= nstep; ++is) {
    iscale = (rmin + rdelta * is + nmax) / (max - min);
    float sum_l = 0, sum_l2 = 0, sum_xl = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * (x[i] - min));
      l = std::max(0, std::min(nmax, l));
      Laux[i] = static_cast<uint8_t>(l);
      const float w = weights[i];
      sum_l += w * l;
      sum_l2 += w * l * l;
      sum_xl += w * l * x[i];
    }
    const float D = sum_w * sum_l2 - sum_l * sum_l;
    if (D > 0) {
      float this_scale = (sum_w * sum_xl - sum_x * sum_l) / D;
      float this_min = (sum_l2 * sum_x - sum_l * sum_xl) / D;
      if (this_min > 0) {
        this_min = 0;
        this_scale = sum_xl / sum_l2;
      }
      float cur_error = 0;
      for (int i = 0; i < n; ++i) {
        float diff = this_scale * Laux[i] + this_min - x[i];
        diff = use_mad ? std::fabs(diff) : diff * diff;
        cur_error += weights[i] * diff;
      }
      if (cur_error < best_error) {
        for (int i = 0; i < n; ++i) L[i] = Laux[i];
        best_error = cur_error;
        scale = this_scale;
        min = this_min;
      }
    }
  }
  *the_min = -min;
  return scale;
}

// Symmetric scale for x[0..n), llama.cpp's make_qx_quants with rmse_type 1 and no
// importance weights (weights x^2). L gets values in [0, 2*nmax).
float make_qx_quants(int n, int nmax, const float* x, int8_t* L) {
  float max = 0;
  float amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  float iscale = -nmax / max;
  float sumlx = 0;
  float suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * x[i]);
    l = std::max(-nmax, std::min(nmax - 1, l));
    L[i] = static_cast<int8_t>(l + nmax);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  float scale = suml2 ? sumlx / suml2 : 0.0f;
  float best = scale * sumlx;
  for (int is = -9; is <= 9; ++is) {
    if (is == 0) continue;
    iscale = -(nmax + 0.1f * is) / max;
    sumlx = suml2 = 0;
    for (int i = 0; i < n; ++i) {
      int l = nearest_int(iscale * x[i]);
      l = std::max(-nmax, std::min(nmax - 1, l));
      const float w = x[i] * x[i];
      sumlx += w * x[i] * l;
      suml2 += w * l * l;
    }
    if (suml2 > 0 && sumlx * sumlx > best * suml2) {
      for (int i = 0; i < n; ++i) {
        const int l = nearest_int(iscale * x[i]);
        L[i] = static_cast<int8_t>(nmax + std::max(-nmax, std::min(nmax - 1, l)));
      }
      scale = sumlx / suml2;
      best = scale * sumlx;
    }
  }
  return scale;
}

// llama.cpp's make_q3_quants with do_rmse (q3_K): symmetric scale refined by moving
// single values while the weighted fit improves. L gets values in [0, 2*nmax).
float make_q3_quants(int n, int nmax, const float* x, int8_t* L) {
  float max = 0;
  float amax = 0;
  for (int i = 0; i < n; ++i) {
    const float ax = std::fabs(x[i]);
    if (ax > amax) {
      amax = ax;
      max = x[i];
    }
  }
  if (amax < kGroupMaxEps) {
    for (int i = 0; i < n; ++i) L[i] = 0;
    return 0.f;
  }
  const float iscale = -nmax / max;
  float sumlx = 0;
  float suml2 = 0;
  for (int i = 0; i < n; ++i) {
    int l = nearest_int(iscale * x[i]);
    l = std::max(-nmax, std::min(nmax - 1, l));
    L[i] = static_cast<int8_t>(l);
    const float w = x[i] * x[i];
    sumlx += w * x[i] * l;
    suml2 += w * l * l;
  }
  for (int itry = 0; itry < 5; ++itry) {
    int n_changed = 0;
    for (int i = 0; i < n; ++i) {
      const float w = x[i] * x[i];
      float slx = sumlx - w * x[i] * L[i];
      if (slx > 0) {
        float sl2 = suml2 - w * L[i] * L[i];
        int new_l = nearest_int(x[i] * sl2 / slx);
        new_l = std::max(-nmax, std::min(nmax - 1, new_l));
        if (new_l != L[i]) {
          slx += w * x[i] * new_l;
          sl2 += w * new_l * new_l;
          if (sl2 > 0 && slx * slx * suml2 > sumlx * sumlx * sl2) {
            L[i] = static_cast<int8_t>(new_l);
            sumlx = slx;
            suml2 = sl2;
            ++n_changed;
          }
        }
      }
    }
    if (!n_changed) break;
  }
  for (int i = 0; i < n; ++i) L[i] = static_cast<int8_t>(L[i] + nmax);
  return suml2 > 0.0f ? sumlx / suml2 : 0.0f;
}

// Packs 256 2-bit values as q2_K / q3_K store them: byte 32*h + l holds elements
// 128*h + l, +32, +64, +96 in bits 0-1, 2-3, 4-5, 6-7.
template <class T>
void pack_2bit(const T* L, uint8_t* qs) {
  for (int j = 0; j < kQKK; j += 128) {
    for (int l = 0; l < 32; ++l) {
      qs[j / 4 + l] =
          static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 2) | (L[j + l + 64] << 4) | (L[j + l + 96] << 6));
    }
  }
}

void quantize_q2_K(const float* x, BlockQ2_K* y, int64_t nb) {
  constexpr float q4scale = 15.f;
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    uint8_t L[kQKK];
    uint8_t Laux[16];
    float weights[16];
    float mins[kQKK / 16];
    float scales[kQKK / 16];
    float max_scale = 0;  // as we are deducting the min, scales are always positive
    float max_min = 0;
    for (int j = 0; j < kQKK / 16; ++j) {
      for (int l = 0; l < 16; ++l) weights[l] = std::fabs(x[16 * j + l]);
      scales[j] =
          make_qkx2_quants(16, 3, x + 16 * j, weights, L + 16 * j, &mins[j], Laux, -0.5f, 0.1f, 15, true);
      if (scales[j] > max_scale) max_scale = scales[j];
      if (mins[j] > max_min) max_min = mins[j];
    }
    if (max_scale > 0) {
      const float iscale = q4scale / max_scale;
      for (int j = 0; j < kQKK / 16; ++j)
        y[i].scales[j] = static_cast<uint8_t>(nearest_int(iscale * scales[j]));
      y[i].d = f32_to_f16(max_scale / q4scale);
    } else {
      for (int j = 0; j < kQKK / 16; ++j) y[i].scales[j] = 0;
      y[i].d = f32_to_f16(0.f);
    }
    if (max_min > 0) {
      const float iscale = q4scale / max_min;
      for (int j = 0; j < kQKK / 16; ++j) {
        y[i].scales[j] = static_cast<uint8_t>(y[i].scales[j] | (nearest_int(iscale * mins[j]) << 4));
      }
      y[i].dmin = f32_to_f16(max_min / q4scale);
    } else {
      y[i].dmin = f32_to_f16(0.f);
    }
    for (int j = 0; j < kQKK / 16; ++j) {
      const float d = fp16_to_fp32(y[i].d) * (y[i].scales[j] & 0xF);
      if (!d) continue;
      const float dm = fp16_to_fp32(y[i].dmin) * (y[i].scales[j] >> 4);
      for (int ii = 0; ii < 16; ++ii) {
        const int l = nearest_int((x[16 * j + ii] + dm) / d);
        L[16 * j + ii] = static_cast<uint8_t>(std::max(0, std::min(3, l)));
      }
    }
    pack_2bit(L, y[i].qs);
  }
}

void quantize_q3_K(const float* x, BlockQ3_K* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    int8_t L[kQKK];
    float scales[kQKK / 16];
    float max_scale = 0;
    float amax = 0;
    for (int j = 0; j < kQKK / 16; ++j) {
      scales[j] = make_q3_quants(16, 4, x + 16 * j, L + 16 * j);
      const float scale = std::fabs(scales[j]);
      if (scale > amax) {
        amax = scale;
        max_scale = scales[j];
      }
    }
    std::memset(y[i].scales, 0, 12);
    if (max_scale) {
      const float iscale = -32.f / max_scale;
      for (int j = 0; j < kQKK / 16; ++j) {
        int8_t l = static_cast<int8_t>(nearest_int(iscale * scales[j]));
        l = static_cast<int8_t>(std::max<int>(-32, std::min<int>(31, l)) + 32);
        if (j < 8) {
          y[i].scales[j] = l & 0xF;
        } else {
          y[i].scales[j - 8] = static_cast<uint8_t>(y[i].scales[j - 8] | ((l & 0xF) << 4));
        }
        l = static_cast<int8_t>(l >> 4);
        y[i].scales[j % 4 + 8] = static_cast<uint8_t>(y[i].scales[j % 4 + 8] | (l << (2 * (j / 4))));
      }
      y[i].d = f32_to_f16(1 / iscale);
    } else {
      y[i].d = f32_to_f16(0.f);
    }
    for (int j = 0; j < kQKK / 16; ++j) {
      int sc = j < 8 ? y[i].scales[j] & 0xF : y[i].scales[j - 8] >> 4;
      sc = (sc | (((y[i].scales[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)) - 32;
      const float d = fp16_to_fp32(y[i].d) * sc;
      if (!d) continue;
      for (int ii = 0; ii < 16; ++ii) {
        int l = nearest_int(x[16 * j + ii] / d);
        l = std::max(-4, std::min(3, l));
        L[16 * j + ii] = static_cast<int8_t>(l + 4);
      }
    }
    // High bit of the first 32 values into bit 0 of hmask[0..31], the next 32 into bit 1...
    std::memset(y[i].hmask, 0, kQKK / 8);
    int m = 0;
    uint8_t hm = 1;
    for (int j = 0; j < kQKK; ++j) {
      if (L[j] > 3) {
        y[i].hmask[m] |= hm;
        L[j] = static_cast<int8_t>(L[j] - 4);
      }
      if (++m == kQKK / 8) {
        m = 0;
        hm = static_cast<uint8_t>(hm << 1);
      }
    }
    pack_2bit(L, y[i].qs);
  }
}

// Shared by q4_K and q5_K: per-sub-block scale/min search, 6-bit packing of scales and
// mins, then requantization of L against the packed scales (llama.cpp's
// quantize_row_q4_K_ref / q5_K_ref up to the packing of the quants).
template <class Block>
void quantize_scales_k4(const float* x, Block* y, uint8_t* L, int nmax, float rmin, int nstep) {
  uint8_t Laux[32];
  float weights[32];
  float mins[kQKK / 32];
  float scales[kQKK / 32];
  float max_scale = 0;  // as we are deducting the min, scales are always positive
  float max_min = 0;
  for (int j = 0; j < kQKK / 32; ++j) {
    float sum_x2 = 0;
    for (int l = 0; l < 32; ++l) sum_x2 += x[32 * j + l] * x[32 * j + l];
    const float av_x = std::sqrt(sum_x2 / 32);
    for (int l = 0; l < 32; ++l) weights[l] = av_x + std::fabs(x[32 * j + l]);
    scales[j] =
        make_qkx2_quants(32, nmax, x + 32 * j, weights, L + 32 * j, &mins[j], Laux, rmin, 0.1f, nstep, false);
    if (scales[j] > max_scale) max_scale = scales[j];
    if (mins[j] > max_min) max_min = mins[j];
  }
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  for (int j = 0; j < kQKK / 32; ++j) {
    uint8_t ls = static_cast<uint8_t>(nearest_int(inv_scale * scales[j]));
    uint8_t lm = static_cast<uint8_t>(nearest_int(inv_min * mins[j]));
    ls = std::min<uint8_t>(63, ls);
    lm = std::min<uint8_t>(63, lm);
    if (j < 4) {
      y->scales[j] = ls;
      y->scales[j + 4] = lm;
    } else {
      y->scales[j + 4] = static_cast<uint8_t>((ls & 0xF) | ((lm & 0xF) << 4));
      y->scales[j - 4] |= static_cast<uint8_t>((ls >> 4) << 6);
      y->scales[j - 0] |= static_cast<uint8_t>((lm >> 4) << 6);
    }
  }
  y->d = f32_to_f16(max_scale / 63.f);
  y->dmin = f32_to_f16(max_min / 63.f);
  for (int j = 0; j < kQKK / 32; ++j) {
    uint8_t sc, m;
    scale_min_k4(j, y->scales, &sc, &m);
    const float d = fp16_to_fp32(y->d) * sc;
    if (!d) continue;
    const float dm = fp16_to_fp32(y->dmin) * m;
    for (int ii = 0; ii < 32; ++ii) {
      const int l = nearest_int((x[32 * j + ii] + dm) / d);
      L[32 * j + ii] = static_cast<uint8_t>(std::max(0, std::min(nmax, l)));
    }
  }
}

void quantize_q4_K(const float* x, BlockQ4_K* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    uint8_t L[kQKK];
    std::memset(y[i].scales, 0, sizeof(y[i].scales));
    quantize_scales_k4(x, &y[i], L, 15, -1.f, 20);
    uint8_t* q = y[i].qs;
    for (int j = 0; j < kQKK; j += 64, q += 32) {
      for (int l = 0; l < 32; ++l) q[l] = static_cast<uint8_t>(L[j + l] | (L[j + l + 32] << 4));
    }
  }
}

void quantize_q5_K(const float* x, BlockQ5_K* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    uint8_t L[kQKK];
    std::memset(y[i].scales, 0, sizeof(y[i].scales));
    quantize_scales_k4(x, &y[i], L, 31, -0.5f, 15);
    uint8_t* qh = y[i].qh;
    uint8_t* ql = y[i].qs;
    std::memset(qh, 0, kQKK / 8);
    uint8_t m1 = 1, m2 = 2;
    for (int n = 0; n < kQKK; n += 64, ql += 32) {
      for (int j = 0; j < 32; ++j) {
        int l1 = L[n + j];
        if (l1 > 15) {
          l1 -= 16;
          qh[j] |= m1;
        }
        int l2 = L[n + j + 32];
        if (l2 > 15) {
          l2 -= 16;
          qh[j] |= m2;
        }
        ql[j] = static_cast<uint8_t>(l1 | (l2 << 4));
      }
      m1 = static_cast<uint8_t>(m1 << 2);
      m2 = static_cast<uint8_t>(m2 << 2);
    }
  }
}

void quantize_q6_K(const float* x, BlockQ6_K* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    int8_t L[kQKK];
    float scales[kQKK / 16];
    float max_scale = 0;
    float max_abs_scale = 0;
    for (int ib = 0; ib < kQKK / 16; ++ib) {
      const float scale = make_qx_quants(16, 32, x + 16 * ib, L + 16 * ib);
      scales[ib] = scale;
      const float abs_scale = std::fabs(scale);
      if (abs_scale > max_abs_scale) {
        max_abs_scale = abs_scale;
        max_scale = scale;
      }
    }
    if (max_abs_scale < kGroupMaxEps) {
      std::memset(&y[i], 0, sizeof(BlockQ6_K));
      y[i].d = f32_to_f16(0.f);
      continue;
    }
    const float iscale = -128.f / max_scale;
    y[i].d = f32_to_f16(1 / iscale);
    for (int ib = 0; ib < kQKK / 16; ++ib) {
      y[i].scales[ib] = static_cast<int8_t>(std::min(127, nearest_int(iscale * scales[ib])));
    }
    for (int j = 0; j < kQKK / 16; ++j) {
      const float d = fp16_to_fp32(y[i].d) * y[i].scales[j];
      if (!d) continue;
      for (int ii = 0; ii < 16; ++ii) {
        int l = nearest_int(x[16 * j + ii] / d);
        l = std::max(-32, std::min(31, l));
        L[16 * j + ii] = static_cast<int8_t>(l + 32);
      }
    }
    uint8_t* ql = y[i].ql;
    uint8_t* qh = y[i].qh;
    for (int j = 0; j < kQKK; j += 128, ql += 64, qh += 32) {
      for (int l = 0; l < 32; ++l) {
        const uint8_t q1 = L[j + l + 0] & 0xF;
        const uint8_t q2 = L[j + l + 32] & 0xF;
        const uint8_t q3 = L[j + l + 64] & 0xF;
        const uint8_t q4 = L[j + l + 96] & 0xF;
        ql[l + 0] = static_cast<uint8_t>(q1 | (q3 << 4));
        ql[l + 32] = static_cast<uint8_t>(q2 | (q4 << 4));
        qh[l] = static_cast<uint8_t>((L[j + l] >> 4) | ((L[j + l + 32] >> 4) << 2) |
                                     ((L[j + l + 64] >> 4) << 4) | ((L[j + l + 96] >> 4) << 6));
      }
    }
  }
}

// ---------------------------------------------------------------- dequantize

void dequantize_q2_K(const BlockQ2_K* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_fp32(x[i].d);
    const float min = fp16_to_fp32(x[i].dmin);
    const uint8_t* q = x[i].qs;
    int is = 0;
    for (int n = 0; n < kQKK; n += 128, q += 32) {
      int shift = 0;
      for (int j = 0; j < 4; ++j, shift += 2) {
        uint8_t sc = x[i].scales[is++];
        float dl = d * (sc & 0xF), ml = min * (sc >> 4);
        for (int l = 0; l < 16; ++l) *y++ = dl * ((q[l] >> shift) & 3) - ml;
        sc = x[i].scales[is++];
        dl = d * (sc & 0xF);
        ml = min * (sc >> 4);
        for (int l = 0; l < 16; ++l) *y++ = dl * ((q[l + 16] >> shift) & 3) - ml;
      }
    }
  }
}

void dequantize_q3_K(const BlockQ3_K* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d_all = fp16_to_fp32(x[i].d);
    const uint8_t* q = x[i].qs;
    const uint8_t* hm = x[i].hmask;
    uint8_t m = 1;
    int8_t scales[16];
    unpack_scales_q3k(x[i].scales, scales);
    int is = 0;
    for (int n = 0; n < kQKK; n += 128, q += 32) {
      int shift = 0;
      for (int j = 0; j < 4; ++j, shift += 2, m = static_cast<uint8_t>(m << 1)) {
        float dl = d_all * (scales[is++] - 32);
        for (int l = 0; l < 16; ++l) *y++ = dl * (((q[l + 0] >> shift) & 3) - ((hm[l + 0] & m) ? 0 : 4));
        dl = d_all * (scales[is++] - 32);
        for (int l = 0; l < 16; ++l) *y++ = dl * (((q[l + 16] >> shift) & 3) - ((hm[l + 16] & m) ? 0 : 4));
      }
    }
  }
}

void dequantize_q4_K(const BlockQ4_K* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const uint8_t* q = x[i].qs;
    const float d = fp16_to_fp32(x[i].d);
    const float min = fp16_to_fp32(x[i].dmin);
    int is = 0;
    for (int j = 0; j < kQKK; j += 64, q += 32, is += 2) {
      uint8_t sc, m;
      scale_min_k4(is + 0, x[i].scales, &sc, &m);
      const float d1 = d * sc, m1 = min * m;
      scale_min_k4(is + 1, x[i].scales, &sc, &m);
      const float d2 = d * sc, m2 = min * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * (q[l] & 0xF) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * (q[l] >> 4) - m2;
    }
  }
}

void dequantize_q5_K(const BlockQ5_K* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const uint8_t* ql = x[i].qs;
    const uint8_t* qh = x[i].qh;
    const float d = fp16_to_fp32(x[i].d);
    const float min = fp16_to_fp32(x[i].dmin);
    int is = 0;
    uint8_t u1 = 1, u2 = 2;
    for (int j = 0; j < kQKK; j += 64, ql += 32, is += 2) {
      uint8_t sc, m;
      scale_min_k4(is + 0, x[i].scales, &sc, &m);
      const float d1 = d * sc, m1 = min * m;
      scale_min_k4(is + 1, x[i].scales, &sc, &m);
      const float d2 = d * sc, m2 = min * m;
      for (int l = 0; l < 32; ++l) *y++ = d1 * ((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * ((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
      u1 = static_cast<uint8_t>(u1 << 2);
      u2 = static_cast<uint8_t>(u2 << 2);
    }
  }
}

void dequantize_q6_K(const BlockQ6_K* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i) {
    const float d = fp16_to_fp32(x[i].d);
    const uint8_t* ql = x[i].ql;
    const uint8_t* qh = x[i].qh;
    const int8_t* sc = x[i].scales;
    for (int n = 0; n < kQKK; n += 128, y += 128, ql += 64, qh += 32, sc += 8) {
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = ((ql[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = ((ql[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l + 0] = d * sc[is + 0] * q1;
        y[l + 32] = d * sc[is + 2] * q2;
        y[l + 64] = d * sc[is + 4] * q3;
        y[l + 96] = d * sc[is + 6] * q4;
      }
    }
  }
}

// ---------------------------------------------------------------- dot

// The 256 weight codes of a K block as small integers (q4_K/q5_K: 0..31 unsigned;
// q6_K: -32..31), in natural element order.
void unpack_codes(DType t, const uint8_t* blk, int* a) {
  if (t == DType::Q2_K || t == DType::Q3_K) {
    // 2 low bits: byte 32h + r, bit pair j holds element 128h + 32j + r; q3_K's high bit
    // (bit 4h + j of hmask[r]) clear subtracts 4 (ggml_vec_dot_q3_K_q8_K).
    const uint8_t* q = t == DType::Q2_K ? reinterpret_cast<const BlockQ2_K*>(blk)->qs
                                        : reinterpret_cast<const BlockQ3_K*>(blk)->qs;
    const uint8_t* hm = t == DType::Q3_K ? reinterpret_cast<const BlockQ3_K*>(blk)->hmask : nullptr;
    for (int e = 0; e < kQKK; ++e) {
      const int h = e / 128, j = (e % 128) / 32, r = e % 32;
      a[e] = (q[32 * h + r] >> (2 * j)) & 3;
      if (hm && !((hm[r] >> (4 * h + j)) & 1)) a[e] -= 4;
    }
    return;
  }
  if (t == DType::Q6_K) {
    const BlockQ6_K& x = *reinterpret_cast<const BlockQ6_K*>(blk);
    const uint8_t* q4 = x.ql;
    const uint8_t* qh = x.qh;
    for (int j = 0; j < kQKK; j += 128, a += 128, q4 += 64, qh += 32) {
      for (int l = 0; l < 32; ++l) {
        a[l + 0] = ((q4[l + 0] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
        a[l + 32] = ((q4[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
        a[l + 64] = ((q4[l + 0] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        a[l + 96] = ((q4[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
      }
    }
    return;
  }
  const uint8_t* q4;
  const uint8_t* hm = nullptr;
  if (t == DType::Q4_K) {
    q4 = reinterpret_cast<const BlockQ4_K*>(blk)->qs;
  } else {
    q4 = reinterpret_cast<const BlockQ5_K*>(blk)->qs;
    hm = reinterpret_cast<const BlockQ5_K*>(blk)->qh;
  }
  int m = 1;
  for (int j = 0; j < kQKK / 64; ++j, q4 += 32) {
    for (int l = 0; l < 32; ++l) a[l] = (q4[l] & 0xF) + (hm && (hm[l] & m) ? 16 : 0);
    a += 32;
    m <<= 1;
    for (int l = 0; l < 32; ++l) a[l] = (q4[l] >> 4) + (hm && (hm[l] & m) ? 16 : 0);
    a += 32;
    m <<= 1;
  }
}

void dot_rows_k(DType t, const uint8_t* W, size_t stride, int64_t r0, int64_t r1, const void* xq, int64_t k,
                float* y) {
  const ActLayout L = act_layout(t, k);
  const ActView act = act_view(L, xq);
  const size_t block_bytes = static_cast<size_t>(dtype_info(t).block_bytes);
  for (int64_t r = r0; r < r1; ++r) {
    const uint8_t* row = W + r * stride;
    float sumf = 0.0f;
    for (int64_t b = 0; b < L.nb; ++b) {
      const uint8_t* blk = row + b * block_bytes;
      int a[kQKK];
      unpack_codes(t, blk, a);
      auto q8 = [&](int i) { return static_cast<int>(act.q(b * kQKK + i)); };
      const float dy = act.dx(b);
      if (t == DType::Q2_K) {
        // d * sum_j scale_j * dot_j - dmin * sum_j min_j * bsum16_j (4-bit scales, mins).
        const BlockQ2_K& x = *reinterpret_cast<const BlockQ2_K*>(blk);
        int isum = 0, summs = 0;
        for (int j = 0; j < kQKK / 16; ++j) {
          int s = 0;
          for (int l = 0; l < 16; ++l) s += a[16 * j + l] * q8(16 * j + l);
          isum += (x.scales[j] & 0xF) * s;
          summs += (x.scales[j] >> 4) * act.bs16(b, j);
        }
        sumf += fp16_to_fp32(x.d) * dy * static_cast<float>(isum);
        sumf -= fp16_to_fp32(x.dmin) * dy * static_cast<float>(summs);
      } else if (t == DType::Q3_K) {
        const BlockQ3_K& x = *reinterpret_cast<const BlockQ3_K*>(blk);
        int8_t sc[16];
        unpack_scales_q3k(x.scales, sc);
        int isum = 0;
        for (int j = 0; j < kQKK / 16; ++j) {
          int s = 0;
          for (int l = 0; l < 16; ++l) s += a[16 * j + l] * q8(16 * j + l);
          isum += (sc[j] - 32) * s;
        }
        sumf += fp16_to_fp32(x.d) * dy * static_cast<float>(isum);
      } else if (t == DType::Q6_K) {
        const BlockQ6_K& x = *reinterpret_cast<const BlockQ6_K*>(blk);
        int isum = 0;
        for (int j = 0; j < kQKK / 16; ++j) {
          int s = 0;
          for (int l = 0; l < 16; ++l) s += a[16 * j + l] * q8(16 * j + l);
          isum += x.scales[j] * s;
        }
        sumf += fp16_to_fp32(x.d) * dy * static_cast<float>(isum);
      } else {
        // q4_K and q5_K share d, dmin and scales at the same offsets.
        const BlockQ4_K& x = *reinterpret_cast<const BlockQ4_K*>(blk);
        uint8_t sm[16];
        unpack_scales_k4(x.scales, sm);
        int isum = 0, isum_min = 0;
        for (int j = 0; j < kQKK / 32; ++j) {
          int s = 0;
          for (int l = 0; l < 32; ++l) s += a[32 * j + l] * q8(32 * j + l);
          isum += sm[j] * s;
          isum_min += sm[8 + j] * (act.bs16(b, 2 * j) + act.bs16(b, 2 * j + 1));
        }
        sumf += fp16_to_fp32(x.d) * dy * static_cast<float>(isum);
        sumf -= fp16_to_fp32(x.dmin) * dy * static_cast<float>(isum_min);
      }
    }
    y[r - r0] = sumf;
  }
}

}  // namespace

void quantize_ref_k(DType t, const float* src, void* dst, int64_t n) {
  const int64_t nb = n / kQKK;
  switch (t) {
    case DType::Q2_K:
      return quantize_q2_K(src, static_cast<BlockQ2_K*>(dst), nb);
    case DType::Q3_K:
      return quantize_q3_K(src, static_cast<BlockQ3_K*>(dst), nb);
    case DType::Q4_K:
      return quantize_q4_K(src, static_cast<BlockQ4_K*>(dst), nb);
    case DType::Q5_K:
      return quantize_q5_K(src, static_cast<BlockQ5_K*>(dst), nb);
    case DType::Q6_K:
      return quantize_q6_K(src, static_cast<BlockQ6_K*>(dst), nb);
    default:
      fail("no reference quantizer for tensor type ", dtype_info(t).name);
  }
}

void dequantize_ref_k(DType t, const void* src, float* dst, int64_t n) {
  const int64_t nb = n / kQKK;
  switch (t) {
    case DType::Q2_K:
      return dequantize_q2_K(static_cast<const BlockQ2_K*>(src), dst, nb);
    case DType::Q3_K:
      return dequantize_q3_K(static_cast<const BlockQ3_K*>(src), dst, nb);
    case DType::Q4_K:
      return dequantize_q4_K(static_cast<const BlockQ4_K*>(src), dst, nb);
    case DType::Q5_K:
      return dequantize_q5_K(static_cast<const BlockQ5_K*>(src), dst, nb);
    case DType::Q6_K:
      return dequantize_q6_K(static_cast<const BlockQ6_K*>(src), dst, nb);
    default:
      fail("no dequantizer for tensor type ", dtype_info(t).name);
  }
}

// llama.cpp's quantize_row_q8_K_ref, stored in the layout of quant_act.h.
void activation_ref_k(DType wtype, const float* x, int64_t k, void* xq) {
  const ActLayout L = act_layout(wtype, k);
  char* base = static_cast<char*>(xq);
  std::memset(base, 0, L.bytes);
  for (int64_t b = 0; b < L.nb; ++b, x += kQKK) {
    char* rec = base + b * L.rec;
    float max = 0, amax = 0;
    for (int j = 0; j < kQKK; ++j) {
      const float ax = std::fabs(x[j]);
      if (ax > amax) {
        amax = ax;
        max = x[j];
      }
    }
    int8_t q[kQKK];
    float d = 0;
    if (!amax) {
      std::memset(q, 0, sizeof(q));
    } else {
      // -127 (not -128): llama.cpp keeps q8_K symmetric for its SIMD kernels.
      const float iscale = -127.f / max;
      for (int j = 0; j < kQKK; ++j) q[j] = static_cast<int8_t>(std::min(127, nearest_int(iscale * x[j])));
      d = 1 / iscale;
    }
    std::memcpy(rec + L.d, &d, 4);
    for (int j = 0; j < kQKK; ++j) rec[L.qs + act_pos_in_unit(wtype, j)] = static_cast<char>(q[j]);
    int16_t bs16[16], bs32[8];
    for (int j = 0; j < kQKK / 16; ++j) {
      int sum = 0;
      for (int ii = 0; ii < 16; ++ii) sum += q[j * 16 + ii];
      bs16[j] = static_cast<int16_t>(sum);
    }
    for (int j = 0; j < kQKK / 32; ++j) bs32[j] = static_cast<int16_t>(bs16[2 * j] + bs16[2 * j + 1]);
    std::memcpy(rec + L.bs16, bs16, sizeof(bs16));
    std::memcpy(rec + L.bs32, bs32, sizeof(bs32));
  }
}

void dot_rows_ref_k(DType t, const uint8_t* W, size_t stride, int64_t r0, int64_t r1, const void* xq,
                    int64_t k, float* y) {
  dot_rows_k(t, W, stride, r0, r1, xq, k, y);
}

}  // namespace braid::quant
