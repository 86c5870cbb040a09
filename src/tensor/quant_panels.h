// The layout of block-quantized matrices in panels (braid/quant.h, "Panels"), shared by
// the packer (quant_panels.cpp) and the AVX-512 kernels (quant_lanes_panels-inl.h).
//
// A block splits into f16 "heads" (q4_0 / q8_0 / q6_K: d; q4_K: d, dmin) and a
// "payload" (the other bytes: codes, q4_K's 12 bytes of 6-bit scales and mins, q6_K's
// high bits and 8-bit scales). A block
// column of a panel (the same block of its 32 rows) holds each head of the 32 rows side
// by side (64 bytes), then the payloads of rows 0..15 and then of rows 16..31 as 64-byte
// vectors whose 32-bit lane i holds 4 bytes of row i's payload: vector v of a half, the
// payload's bytes 4v .. 4v + 3. So a vector load gives 16 rows' bytes at the same place
// of their blocks, ready for vpdpbusd against a broadcast activation dword.
#pragma once

#include <cstddef>
#include <cstdint>

#include "braid/dtype.h"
#include "braid/quant.h"

namespace braid::quant {

constexpr int kPanelHalf = 16;  // rows per 64-byte vector of payload (one per 32-bit lane)
static_assert(kQuantPanelRows == 2 * kPanelHalf);

struct PanelFormat {
  int heads;       // f16 fields
  int head_at;     // byte of the block where they start
  int payload;     // bytes of the rest (a multiple of 4)
  int payload_at;  // byte of the block where it starts
  uint8_t flip;    // XORed into every payload byte (q8_0: codes stored as w + 128)
};

constexpr PanelFormat PanelFormatOf(DType t) {
  return t == DType::Q4_0   ? PanelFormat{1, 0, 16, 2, 0}
         : t == DType::Q8_0 ? PanelFormat{1, 0, 32, 2, 0x80}
         : t == DType::Q4_K ? PanelFormat{2, 0, 140, 4, 0}
         : t == DType::Q6_K ? PanelFormat{1, 208, 208, 0, 0}  // ql, qh, scales; d last
                            : PanelFormat{0, 0, 0, 0, 0};
}

inline bool PanelType(DType t) { return PanelFormatOf(t).heads > 0; }

// 64-byte vectors per half panel and block: 4 payload bytes of each row per vector.
constexpr int PanelVectors(DType t) { return PanelFormatOf(t).payload / 4; }
// Bytes of one block column of a panel (32 blocks' worth).
constexpr int64_t PanelBlockBytes(DType t) { return 64 * PanelFormatOf(t).heads + 2 * 64 * PanelVectors(t); }
// Byte of a block column holding head h of row rr (0..31), and payload byte q.
constexpr int64_t PanelHeadAt(int h, int rr) { return 64 * h + 2 * rr; }
constexpr int64_t PanelPayloadAt(DType t, int rr, int q) {
  return 64 * PanelFormatOf(t).heads + (rr / kPanelHalf) * 64 * PanelVectors(t) + (q / 4) * 64 +
         (rr % kPanelHalf) * 4 + q % 4;
}

}  // namespace braid::quant
