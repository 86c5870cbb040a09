// GGML block structs, bit-compatible with llama.cpp's ggml-common.h, and the small
// helpers every quant file needs (fp16 conversion, the K-quant 6-bit scale unpacking).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

namespace braid::quant {

constexpr int kQK = 32;    // elements per legacy block (q4_0, q4_1, q5_0, q5_1, q8_0)
constexpr int kQKK = 256;  // elements per K super-block
constexpr int kScaleBytesK = 12;

struct BlockQ4_0 {
  uint16_t d;  // f16
  uint8_t qs[kQK / 2];
};
struct BlockQ4_1 {
  uint16_t d;  // f16
  uint16_t m;  // f16
  uint8_t qs[kQK / 2];
};
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
struct BlockQ5_1 {
  uint16_t d;
  uint16_t m;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQK];
};
struct BlockQ2_K {
  uint8_t scales[kQKK / 16];  // 4-bit scale (low) and min (high) per sub-block of 16
  uint8_t qs[kQKK / 4];
  uint16_t d;
  uint16_t dmin;
};
struct BlockQ3_K {
  uint8_t hmask[kQKK / 8];  // high bits
  uint8_t qs[kQKK / 4];     // low 2 bits
  uint8_t scales[12];       // 16 6-bit scales
  uint16_t d;
};
struct BlockQ4_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kScaleBytesK];
  uint8_t qs[kQKK / 2];
};
struct BlockQ5_K {
  uint16_t d;
  uint16_t dmin;
  uint8_t scales[kScaleBytesK];
  uint8_t qh[kQKK / 8];
  uint8_t qs[kQKK / 2];
};
struct BlockQ6_K {
  uint8_t ql[kQKK / 2];
  uint8_t qh[kQKK / 4];
  int8_t scales[kQKK / 16];
  uint16_t d;
};
// Only an intermediate for dot products (never in files).
struct BlockQ8_K {
  float d;
  int8_t qs[kQKK];
  int16_t bsums[kQKK / 16];
};

static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20 && sizeof(BlockQ5_0) == 22 &&
              sizeof(BlockQ5_1) == 24 && sizeof(BlockQ8_0) == 34);
static_assert(sizeof(BlockQ2_K) == 84 && sizeof(BlockQ3_K) == 110);
static_assert(sizeof(BlockQ4_K) == 144 && sizeof(BlockQ5_K) == 176 && sizeof(BlockQ6_K) == 210 &&
              sizeof(BlockQ8_K) == 292);
static_assert(alignof(BlockQ4_0) == 2 && alignof(BlockQ6_K) == 2);

// IEEE half -> float, exact (inline: the scalar reference calls it per block).
inline float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t em = h & 0x7fffu;
  uint32_t u;
  if (em >= 0x7c00u) {  // inf / NaN
    u = sign | 0x7f800000u | ((em & 0x3ffu) << 13);
  } else if (em >= 0x0400u) {  // normal
    u = sign | ((em + ((127 - 15) << 10)) << 13);
  } else {  // zero / subnormal: em * 2^-24 is exact in float
    float f = static_cast<float>(em) * (1.0f / 16777216.0f);
    uint32_t fu;
    std::memcpy(&fu, &f, 4);
    u = sign | fu;
  }
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// Reads a little-endian f16 at p (blocks are only 2-byte aligned inside rows).
inline float load_fp16(const void* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return fp16_to_fp32(h);
}

// The 6-bit scale and min of sub-block j (0..7) of a q4_K / q5_K block (ggml's
// get_scale_min_k4).
inline void scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j - 0] >> 6) << 4);
  }
}

// All 8 scales then all 8 mins of a q4_K / q5_K block at once (llama.cpp's utmp trick):
// out[0..7] = scales, out[8..15] = mins.
inline void unpack_scales_k4(const uint8_t* scales12, uint8_t out[16]) {
  constexpr uint32_t kmask1 = 0x3f3f3f3f, kmask2 = 0x0f0f0f0f, kmask3 = 0x03030303;
  uint32_t u[4];
  std::memcpy(u, scales12, 12);
  u[3] = ((u[2] >> 4) & kmask2) | (((u[1] >> 6) & kmask3) << 4);
  const uint32_t uaux = u[1] & kmask1;
  u[1] = (u[2] & kmask2) | (((u[0] >> 6) & kmask3) << 4);
  u[2] = uaux;
  u[0] &= kmask1;
  std::memcpy(out, u, 16);
}

// The 16 6-bit scales of a q3_K block (still offset by 32), as ggml's
// dequantize_row_q3_K unpacks them: bytes 0..7 hold the low 4 bits of scales 0..7
// (low nibble) and 8..15 (high nibble), bytes 8..11 the top 2 bits.
inline void unpack_scales_q3k(const uint8_t* scales12, int8_t out[16]) {
  constexpr uint32_t kmask1 = 0x03030303, kmask2 = 0x0f0f0f0f;
  uint32_t aux[4];
  std::memcpy(aux, scales12, 12);
  const uint32_t tmp = aux[2];
  aux[2] = ((aux[0] >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4);
  aux[3] = ((aux[1] >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4);
  aux[0] = (aux[0] & kmask2) | (((tmp >> 0) & kmask1) << 4);
  aux[1] = (aux[1] & kmask2) | (((tmp >> 2) & kmask1) << 4);
  std::memcpy(out, aux, 16);
}

}  // namespace braid::quant
