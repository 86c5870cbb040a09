// Machine measurements for benchmarks: cache size, memory read bandwidth, resident set.
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "braid/bench.h"
#include "braid/error.h"

namespace braid {

namespace {

constexpr size_t kMiB = size_t{1} << 20;
constexpr size_t kSliceAlign = 4096;

// "32K", "4096K", "300M" (sysfs cache sizes) -> bytes.
size_t parse_size(const std::string& s) {
  size_t v = 0, i = 0;
  while (i < s.size() && s[i] >= '0' && s[i] <= '9') v = v * 10 + static_cast<size_t>(s[i++] - '0');
  if (i < s.size() && (s[i] == 'K' || s[i] == 'k')) v <<= 10;
  if (i < s.size() && (s[i] == 'M' || s[i] == 'm')) v <<= 20;
  if (i < s.size() && (s[i] == 'G' || s[i] == 'g')) v <<= 30;
  return v;
}

// A "Key:   123 kB" line of /proc/self/status or /proc/meminfo, in bytes; 0 if absent.
uint64_t proc_kb(const char* file, const char* key) {
  std::ifstream in(file);
  std::string line;
  const size_t n = std::strlen(key);
  while (std::getline(in, line)) {
    if (line.compare(0, n, key) == 0 && line.size() > n && line[n] == ':') {
      return static_cast<uint64_t>(std::strtoull(line.c_str() + n + 1, nullptr, 10)) * 1024;
    }
  }
  return 0;
}

// Sums the 64-bit words of [p, p + n): the work of the probe, a plain streaming read.
// 64-byte vectors (one cache line) in four independent sums keep several loads in
// flight; target_clones builds it for AVX-512, AVX2 and baseline x86-64 and picks one at
// load time, so the probe reads as fast as the machine's widest loads allow (the scalar
// loop it replaces measured 40% below a vector loop with 2 threads). No software
// prefetch: this is the bandwidth a plain loop gets.
using Line = uint64_t __attribute__((vector_size(64)));
#if defined(__x86_64__) && !defined(__clang__)
__attribute__((target_clones("avx512f", "avx2", "default")))
#endif
uint64_t sum_words(const uint64_t* p, size_t n) {
  Line a{}, b{}, c{}, d{};
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    Line x, y, z, w;
    std::memcpy(&x, p + i, 64);
    std::memcpy(&y, p + i + 8, 64);
    std::memcpy(&z, p + i + 16, 64);
    std::memcpy(&w, p + i + 24, 64);
    a += x;
    b += y;
    c += z;
    d += w;
  }
  uint64_t s = 0;
  for (; i < n; ++i) s += p[i];
  const Line t = a + b + c + d;
  for (int j = 0; j < 8; ++j) s += t[j];
  return s;
}

}  // namespace

size_t last_level_cache_bytes() {
  size_t best = 0;
  for (int i = 0; i < 16; ++i) {
    std::ifstream in("/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(i) + "/size");
    if (!in) continue;
    std::string s;
    in >> s;
    best = std::max(best, parse_size(s));
  }
  return best;
}

size_t default_bandwidth_buffer_bytes() {
  size_t bytes = std::max<size_t>(256 * kMiB, 4 * last_level_cache_bytes());
  const uint64_t avail = proc_kb("/proc/meminfo", "MemAvailable");
  if (avail > 0) bytes = std::min<size_t>(bytes, static_cast<size_t>(avail / 4));
  bytes = std::min<size_t>(bytes, size_t{4} << 30);
  return std::max<size_t>(bytes, 16 * kMiB);
}

BandwidthResult measure_read_bandwidth(ThreadPool& pool, size_t buffer_bytes, double min_seconds) {
  if (buffer_bytes == 0) buffer_bytes = default_bandwidth_buffer_bytes();
  const int nt = pool.size();
  // Each thread owns a page-aligned slice.
  const size_t slice =
      std::max(kSliceAlign, buffer_bytes / static_cast<size_t>(nt) / kSliceAlign * kSliceAlign);
  const size_t total = slice * static_cast<size_t>(nt);
  void* mem = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  check(mem != MAP_FAILED, "bandwidth probe: cannot allocate ", total / kMiB, " MiB: ", std::strerror(errno));
  auto* base = static_cast<uint8_t*>(mem);
  // The sums go to a shared atomic, so the compiler must keep every load.
  std::atomic<uint64_t> sink{0};

  // Each thread writes its own slice first, so its pages are real (not the shared zero
  // page) and sit near that thread on NUMA machines.
  pool.run_on_all([&](int t) {
    auto* p = reinterpret_cast<uint64_t*>(base + static_cast<size_t>(t) * slice);
    const size_t n = slice / sizeof(uint64_t);
    for (size_t i = 0; i < n; ++i) p[i] = i * 0x9E3779B97F4A7C15ull;
  });
  auto pass = [&] {
    pool.run_on_all([&](int t) {
      const auto* p = reinterpret_cast<const uint64_t*>(base + static_cast<size_t>(t) * slice);
      sink.fetch_add(sum_words(p, slice / sizeof(uint64_t)), std::memory_order_relaxed);
    });
  };

  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  pass();  // untimed: TLB and prefetchers warm up
  std::vector<double> rates;
  double elapsed = 0;
  while (rates.size() < 3 || (elapsed < min_seconds && rates.size() < 1000)) {
    const auto t0 = clock::now();
    pass();
    const double s = std::chrono::duration<double>(clock::now() - t0).count();
    rates.push_back(static_cast<double>(total) / std::max(s, 1e-9));
    elapsed = std::chrono::duration<double>(clock::now() - start).count();
  }
  munmap(mem, total);

  BandwidthResult r;
  r.buffer_bytes = total;
  r.threads = nt;
  r.passes = static_cast<int>(rates.size());
  r.seconds = elapsed;
  std::sort(rates.begin(), rates.end());
  r.bytes_per_s = rates.back();
  r.median_bytes_per_s = rates[rates.size() / 2];
  return r;
}

uint64_t peak_rss_bytes() {
  const uint64_t hwm = proc_kb("/proc/self/status", "VmHWM");
  if (hwm > 0) return hwm;
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0) return 0;
  return static_cast<uint64_t>(ru.ru_maxrss) * 1024;  // kilobytes on Linux
}

uint64_t current_rss_bytes() { return proc_kb("/proc/self/status", "VmRSS"); }

}  // namespace braid
