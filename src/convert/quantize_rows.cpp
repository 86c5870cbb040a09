#include "convert/quantize_rows.h"

#include <algorithm>
#include <atomic>
#include <exception>
#include <filesystem>
#include <mutex>

#include "braid/error.h"

namespace braid::convert {

std::vector<RowChunk> make_row_chunks(const std::vector<int64_t>& rows, const std::vector<int64_t>& cols,
                                      int64_t target_elements) {
  std::vector<RowChunk> chunks;
  for (size_t t = 0; t < rows.size(); ++t) {
    if (rows[t] <= 0) continue;
    const int64_t per = std::max<int64_t>(1, target_elements / std::max<int64_t>(1, cols[t]));
    for (int64_t r = 0; r < rows[t]; r += per) chunks.push_back({t, r, std::min(rows[t], r + per)});
  }
  return chunks;
}

void run_row_chunks(ThreadPool& pool, const std::vector<RowChunk>& chunks,
                    const std::function<void(const RowChunk&, int thread)>& fn) {
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::exception_ptr error;
  std::mutex mu;
  pool.run_on_all([&](int thread) {
    for (;;) {
      if (failed.load(std::memory_order_relaxed)) return;
      const size_t i = next.fetch_add(1, std::memory_order_relaxed);
      if (i >= chunks.size()) return;
      try {
        fn(chunks[i], thread);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu);
        if (!error) error = std::current_exception();
        failed = true;
        return;
      }
    }
  });
  if (error) std::rethrow_exception(error);
}

void check_output_path(const std::string& out) {
  namespace fs = std::filesystem;
  check(!out.empty(), "no output file given");
  std::error_code ec;
  check(!fs::is_directory(out, ec), "cannot write ", out, ": it is a folder");
  const fs::path dir = fs::path(out).parent_path();
  check(dir.empty() || fs::is_directory(dir, ec), "cannot write ", out, ": folder ", dir.string(),
        " does not exist");
}

}  // namespace braid::convert
