// The layout of q4_0 / q8_0 matrices in panels (braid/quant.h, "Panels"), shared by the
// packer (quant_panels.cpp) and the AVX-512 kernels (quant_lanes_panels-inl.h).
#pragma once

#include <cstddef>
#include <cstdint>

#include "braid/dtype.h"
#include "braid/quant.h"

namespace braid::quant {

constexpr int kPanelHalf = 16;  // rows per 64-byte vector of codes (one per 32-bit lane)
static_assert(kQuantPanelRows == 2 * kPanelHalf);

// Code bytes of one row's block: q4_0 16 (two elements per byte), q8_0 32.
constexpr int PanelCodeBytes(DType t) { return t == DType::Q4_0 ? 16 : 32; }
// 64-byte vectors of codes per half panel and block: 4 bytes of each row per vector.
constexpr int PanelVectors(DType t) { return PanelCodeBytes(t) / 4; }
// Bytes of one block column of a panel: 32 f16 scales, then two halves of vectors.
constexpr int64_t PanelBlockBytes(DType t) { return 64 + 2 * 64 * PanelVectors(t); }
// Byte of a block column holding row rr's (0..31) code byte q.
constexpr int64_t PanelCodeAt(DType t, int rr, int q) {
  return 64 + (rr / kPanelHalf) * 64 * PanelVectors(t) + (q / 4) * 64 + (rr % kPanelHalf) * 4 + q % 4;
}
// q8_0 codes are stored as w + 128 (unsigned, what vpdpbusd multiplies).
constexpr uint8_t PanelCodeFlip(DType t) { return t == DType::Q8_0 ? 0x80 : 0; }

inline bool PanelType(DType t) { return t == DType::Q4_0 || t == DType::Q8_0; }

}  // namespace braid::quant
