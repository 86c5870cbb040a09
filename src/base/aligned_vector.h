// std::vector with cache-line-aligned storage, for the buffers the SIMD kernels stream
// through with 64-byte loads: from plain new, data() is only 16-byte aligned, and every
// vector load of a 16-byte-aligned buffer straddles two cache lines (half speed where
// loads are the limit, e.g. the f16 kernels' activations).
#pragma once

#include <cstddef>
#include <new>
#include <vector>

namespace braid {

template <class T, std::size_t kAlign = 64>
struct AlignedAllocator {
  using value_type = T;
  template <class U>
  struct rebind {
    using other = AlignedAllocator<U, kAlign>;
  };
  AlignedAllocator() = default;
  template <class U>
  AlignedAllocator(const AlignedAllocator<U, kAlign>&) {}
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), std::align_val_t(kAlign))); }
  void deallocate(T* p, std::size_t) { ::operator delete(p, std::align_val_t(kAlign)); }
  template <class U>
  bool operator==(const AlignedAllocator<U, kAlign>&) const {
    return true;
  }
};

template <class T>
using AlignedVector = std::vector<T, AlignedAllocator<T>>;

}  // namespace braid
