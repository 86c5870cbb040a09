#include "convert/elements.h"

#include <algorithm>
#include <cassert>
#include <cstring>

namespace braid::convert {
namespace {

float load(const uint8_t* p, DType t) {
  if (t == DType::F32) {
    float f;
    std::memcpy(&f, p, 4);
    return f;
  }
  uint16_t h;
  std::memcpy(&h, p, 2);
  return t == DType::F16 ? f16_to_f32(h) : bf16_to_f32(h);
}

void store(uint8_t* p, DType t, float f) {
  if (t == DType::F32) {
    std::memcpy(p, &f, 4);
    return;
  }
  uint16_t h = t == DType::F16 ? f32_to_f16(f) : f32_to_bf16(f);
  std::memcpy(p, &h, 2);
}

}  // namespace

bool is_float_type(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

size_t elem_size(DType t) { return t == DType::F32 ? 4 : 2; }

void convert_run(const uint8_t* src, DType st, uint8_t* dst, DType dt, size_t n) {
  assert(is_float_type(st) && is_float_type(dt));
  if (st == dt) {
    std::memcpy(dst, src, n * elem_size(st));
    return;
  }
  const size_t ss = elem_size(st), ds = elem_size(dt);
  for (size_t i = 0; i < n; ++i) store(dst + i * ds, dt, load(src + i * ss, st));
}

void permute_rows(const uint8_t* src, DType st, uint8_t* dst, DType dt, int64_t rows, int64_t cols,
                  int64_t n_head) {
  assert(n_head > 0 && rows % (2 * n_head) == 0);
  const int64_t head = rows / n_head, half = head / 2;
  const size_t src_row = static_cast<size_t>(cols) * elem_size(st);
  const size_t dst_row = static_cast<size_t>(cols) * elem_size(dt);
  // Output row h*head + 2*i + j comes from input row h*head + j*half + i.
  for (int64_t h = 0; h < n_head; ++h)
    for (int64_t i = 0; i < half; ++i)
      for (int64_t j = 0; j < 2; ++j) {
        int64_t out = h * head + 2 * i + j, in = h * head + j * half + i;
        convert_run(src + static_cast<size_t>(in) * src_row, st, dst + static_cast<size_t>(out) * dst_row, dt,
                    static_cast<size_t>(cols));
      }
}

void transpose(const uint8_t* src, DType st, uint8_t* dst, DType dt, int64_t rows, int64_t cols) {
  const size_t ss = elem_size(st), ds = elem_size(dt);
  constexpr int64_t kTile = 32;  // keeps both the read and the write side in cache
  for (int64_t r0 = 0; r0 < rows; r0 += kTile)
    for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
      const int64_t r1 = std::min(rows, r0 + kTile), c1 = std::min(cols, c0 + kTile);
      for (int64_t c = c0; c < c1; ++c)
        for (int64_t r = r0; r < r1; ++r)
          convert_run(src + static_cast<size_t>(r * cols + c) * ss, st,
                      dst + static_cast<size_t>(c * rows + r) * ds, dt, 1);
    }
}

}  // namespace braid::convert
