// Tensor encodings on the wire (protocol.h, "Tensors on the wire"; docs/protocol.md):
// f32 bit-exact, f16 round to nearest even, q8_0 blocks with the scale rounded up.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>

#include "braid/dtype.h"
#include "braid/error.h"
#include "braid/protocol.h"
#include "dist/protocol_wire.h"

namespace braid::proto {
namespace {

constexpr int kQ8Block = 32;
constexpr int kQ8BlockBytes = 2 + kQ8Block;
constexpr float kF16Max = 65504.0f;

uint16_t load_u16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
void store_u16(uint8_t* p, uint16_t v) {
  p[0] = static_cast<uint8_t>(v);
  p[1] = static_cast<uint8_t>(v >> 8);
}

// The smallest f16 >= d (d finite, >= 0): with it, |x| / scale <= 127 for every x of
// the block, so no value is clipped and the error stays within scale / 2.
uint16_t f16_round_up(float d) {
  uint16_t h = f32_to_f16(d);
  if (f16_to_f32(h) < d) ++h;  // positive halves are ordered like their bit patterns
  return h;
}

void encode_q8_0(std::span<const float> x, uint8_t* out) {
  for (size_t b = 0; b < x.size() / kQ8Block; ++b) {
    const float* v = x.data() + b * kQ8Block;
    float amax = 0;
    for (int i = 0; i < kQ8Block; ++i) {
      if (!std::isfinite(v[i])) fail("q8_0 cannot carry the non-finite value ", v[i]);
      amax = std::max(amax, std::fabs(v[i]));
    }
    const uint16_t h = f16_round_up(amax / 127.0f);
    const float d = f16_to_f32(h);
    if (!std::isfinite(d)) {
      fail("q8_0 cannot carry ", amax, ": its block scale exceeds the f16 range (use f32)");
    }
    uint8_t* blk = out + b * kQ8BlockBytes;
    store_u16(blk, h);
    for (int i = 0; i < kQ8Block; ++i) {
      const float q = d == 0 ? 0.0f : std::nearbyint(v[i] / d);
      blk[2 + i] = static_cast<uint8_t>(static_cast<int8_t>(std::clamp(q, -127.0f, 127.0f)));
    }
  }
}

}  // namespace

const char* wire_type_name(WireType t) {
  switch (t) {
    case WireType::kF32:
      return "f32";
    case WireType::kF16:
      return "f16";
    case WireType::kQ8_0:
      return "q8_0";
  }
  return "unknown";
}

uint64_t wire_bytes(WireType t, uint64_t n_tokens, uint64_t dim) {
  switch (t) {
    case WireType::kF32:
      return n_tokens * dim * 4;
    case WireType::kF16:
      return n_tokens * dim * 2;
    case WireType::kQ8_0:
      check(dim % kQ8Block == 0, "q8_0 activations need a dimension that is a multiple of 32, got ", dim);
      return n_tokens * (dim / kQ8Block) * kQ8BlockBytes;
  }
  fail("unknown wire type ", static_cast<int>(t));
}

std::vector<uint8_t> encode_tensor(std::span<const float> values, uint32_t dim, WireType t) {
  check(dim > 0 && values.size() % dim == 0, "tensor of ", values.size(),
        " values is not a whole number of rows of ", dim);
  std::vector<uint8_t> out(wire_bytes(t, values.size() / dim, dim));
  switch (t) {
    case WireType::kF32:
      if constexpr (std::endian::native == std::endian::little) {
        if (!values.empty()) std::memcpy(out.data(), values.data(), out.size());
      } else {
        for (size_t i = 0; i < values.size(); ++i) {
          const uint32_t u = std::bit_cast<uint32_t>(values[i]);
          for (int k = 0; k < 4; ++k) out[4 * i + k] = static_cast<uint8_t>(u >> (8 * k));
        }
      }
      break;
    case WireType::kF16:
      for (size_t i = 0; i < values.size(); ++i) {
        const float v = values[i];
        if (std::isfinite(v) && std::fabs(v) > kF16Max) {
          fail("f16 activations cannot carry ", v, " (beyond +-65504); use f32");
        }
        store_u16(out.data() + 2 * i, f32_to_f16(v));
      }
      break;
    case WireType::kQ8_0:
      encode_q8_0(values, out.data());
      break;
  }
  return out;
}

void decode_tensor(std::span<const uint8_t> data, WireType t, uint32_t dim, std::span<float> out) {
  check(dim > 0 && out.size() % dim == 0, "tensor of ", out.size(),
        " values is not a whole number of rows of ", dim);
  const uint64_t need = wire_bytes(t, out.size() / dim, dim);
  check(data.size() == need, wire_type_name(t), " tensor of ", out.size(), " values needs ", need,
        " bytes, got ", data.size());
  switch (t) {
    case WireType::kF32:
      if constexpr (std::endian::native == std::endian::little) {
        if (!out.empty()) std::memcpy(out.data(), data.data(), data.size());
      } else {
        for (size_t i = 0; i < out.size(); ++i) {
          uint32_t u = 0;
          for (int k = 0; k < 4; ++k) u |= static_cast<uint32_t>(data[4 * i + k]) << (8 * k);
          out[i] = std::bit_cast<float>(u);
        }
      }
      break;
    case WireType::kF16:
      for (size_t i = 0; i < out.size(); ++i) out[i] = f16_to_f32(load_u16(data.data() + 2 * i));
      break;
    case WireType::kQ8_0: {
      const std::string problem = wire::tensor_problem(data, t);
      check(problem.empty(), problem);
      for (size_t b = 0; b < out.size() / kQ8Block; ++b) {
        const uint8_t* blk = data.data() + b * kQ8BlockBytes;
        const float d = f16_to_f32(load_u16(blk));
        for (int i = 0; i < kQ8Block; ++i) {
          out[b * kQ8Block + i] = static_cast<float>(static_cast<int8_t>(blk[2 + i])) * d;
        }
      }
      break;
    }
  }
}

namespace wire {

std::string tensor_problem(std::span<const uint8_t> data, WireType t) {
  if (t != WireType::kQ8_0) return {};
  for (size_t b = 0; b < data.size() / kQ8BlockBytes; ++b) {
    const uint8_t* blk = data.data() + b * kQ8BlockBytes;
    const float d = f16_to_f32(load_u16(blk));
    if (!std::isfinite(d) || std::signbit(d)) {
      return cat("q8_0 block ", b, " has scale ", d, " (must be finite and non-negative)");
    }
    for (int i = 0; i < kQ8Block; ++i) {
      if (blk[2 + i] == 0x80) return cat("q8_0 block ", b, " holds -128 (values are -127..127)");
    }
  }
  return {};
}

}  // namespace wire
}  // namespace braid::proto
