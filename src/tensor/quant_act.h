// The private layout of a quantized activation (what quant_activation writes and the
// dot kernels read). It holds llama.cpp's q8_0 / q8_K data (same 8-bit values, same
// scales), rearranged for the SIMD kernels: the activation is a sequence of records,
// one per "unit" of the weight row (4 blocks of 32 for the legacy types, one super-block
// of 256 for the K types), each record holding everything the kernels need for that
// unit at fixed offsets, so a kernel reads an activation through one pointer.
//
// Legacy weight types (k/32 blocks; the last unit is padded with zero blocks):
//   qs     int8[128]  the 8-bit values of the unit's 4 blocks. q8_0: natural order.
//                     Nibble types (q4_0, q4_1, q5_0, q5_1): the 4 blocks' elements
//                     0..15, then their elements 16..31 - the order in which low and high
//                     nibbles come out of 4 weight blocks.
//   ebias  i32[16]    (nibble types) for AVX-512, the weights' code offset folded in
//                     exactly: -offset * (sum of block j's values) in lane 4j, 0 elsewhere
//                     (offset 8 for q4_0, 16 for q5_0, 0 for q4_1 / q5_1).
//   escale f32[E*4]   dx of block j repeated in lanes E*j .. E*j+E-1, E = 8 for q8_0 (one
//                     block per 256-bit half), 4 for the nibble types.
//   emin   f32[16]    (q4_1, q5_1) dx * sum / 4 in lanes 4j .. 4j+3.
//   dx     f32[4]     the blocks' scales, rounded to f16 as in block_q8_0
//   sy     i32[4]     the sums of the blocks' 8-bit values
// K weight types (k/256 super-blocks):
//   qs     int8[256]  q6_K: natural order. q4_K, q5_K: each 128 elements as elements
//                     0..31, 64..95, 32..63, 96..127 (low nibbles, then high nibbles, of
//                     64 weight bytes).
//   bs16   i16[16]    sums of 16 consecutive values (q8_K's bsums)
//   bs32   i16[8]     sums of 32 consecutive values
//   d      f32        q8_K's scale (not rounded)
// Records are multiples of 64 bytes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "braid/dtype.h"

namespace braid::quant {

struct ActLayout {
  DType wtype = DType::F32;
  bool k_type = false;
  int64_t k = 0;
  int64_t nb = 0;     // blocks of 32 (legacy) or 256 (K) elements
  int64_t units = 0;  // records
  int lanes = 0;      // E above (legacy)
  int offset = 0;     // weight code offset folded into ebias (legacy)
  size_t rec = 0;     // bytes per record
  // Byte offsets inside a record (0 when absent).
  size_t qs = 0, ebias = 0, escale = 0, emin = 0, dx = 0, sy = 0;  // legacy
  size_t bs16 = 0, bs32 = 0, d = 0;                                // K
  size_t bytes = 0;                                                // whole buffer
};

// The layout for rows of type wtype and k elements; throws braid::Error when wtype is
// unsupported or k is not a multiple of its block size.
ActLayout act_layout(DType wtype, int64_t k);

// Fills the ebias lanes of block j (0..3) of a legacy record whose qs are written.
void write_ebias(DType wtype, const ActLayout& L, char* rec, int j, int32_t block_sum);

// Position of logical element e (0..127 legacy, 0..255 K) inside its record's qs.
inline int act_pos_in_unit(DType wtype, int e) {
  switch (wtype) {
    case DType::Q4_0:
    case DType::Q4_1:
    case DType::Q5_0:
    case DType::Q5_1: {
      const int b = e / 32, i = e % 32;
      return (i >= 16 ? 64 : 0) + b * 16 + (i & 15);
    }
    case DType::Q4_K:
    case DType::Q5_K: {
      const int c = (e >> 5) & 3;  // which 32-chunk of its 128
      const int swapped = c == 1 ? 2 : c == 2 ? 1 : c;
      return (e & ~127) + swapped * 32 + (e & 31);
    }
    default:
      return e;
  }
}

// Read access to one activation buffer (reference and portable kernels).
struct ActView {
  const char* base = nullptr;
  const ActLayout* L = nullptr;

  const char* unit(int64_t u) const { return base + u * static_cast<int64_t>(L->rec); }
  // Logical element i.
  int8_t q(int64_t i) const {
    const int per = L->k_type ? 256 : 128;
    return reinterpret_cast<const int8_t*>(unit(i / per) +
                                           L->qs)[act_pos_in_unit(L->wtype, static_cast<int>(i % per))];
  }
  // Scale of block b (legacy: of 32 elements, rounded to f16; K: of 256).
  float dx(int64_t b) const {
    float v;
    if (L->k_type) {
      std::memcpy(&v, unit(b) + L->d, 4);
    } else {
      std::memcpy(&v, unit(b / 4) + L->dx + 4 * (b % 4), 4);
    }
    return v;
  }
  // Sum of block b's values (legacy).
  int32_t sy(int64_t b) const {
    int32_t v;
    std::memcpy(&v, unit(b / 4) + L->sy + 4 * (b % 4), 4);
    return v;
  }
  // Sums of 16 / 32 consecutive values j of super-block b (K).
  int16_t bs16(int64_t b, int j) const {
    int16_t v;
    std::memcpy(&v, unit(b) + L->bs16 + 2 * j, 2);
    return v;
  }
  int16_t bs32(int64_t b, int j) const {
    int16_t v;
    std::memcpy(&v, unit(b) + L->bs32 + 2 * j, 2);
    return v;
  }
};

inline ActView act_view(const ActLayout& L, const void* xq) {
  return ActView{static_cast<const char*>(xq), &L};
}

}  // namespace braid::quant
