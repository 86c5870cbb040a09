// Parallel per-row work for the quantizer and the model synthesizer: every tensor's rows
// are cut into chunks of similar size, and the pool's threads take chunks from a shared
// counter until none are left, so one huge tensor (the embedding) and many small ones
// keep all threads busy alike. Results do not depend on the thread count: each chunk is
// computed the same way whichever thread takes it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "braid/thread_pool.h"

namespace braid::convert {

struct RowChunk {
  size_t tensor = 0;  // index into the caller's list
  int64_t r0 = 0, r1 = 0;
};

// Chunks of about `target_elements` elements (at least one row) for tensors with
// rows[i] rows of cols[i] elements; tensors with rows[i] == 0 get none.
std::vector<RowChunk> make_row_chunks(const std::vector<int64_t>& rows, const std::vector<int64_t>& cols,
                                      int64_t target_elements);

// Runs fn(chunk, thread) for every chunk on the pool's threads. The first exception
// thrown stops the remaining chunks and is rethrown here.
void run_row_chunks(ThreadPool& pool, const std::vector<RowChunk>& chunks,
                    const std::function<void(const RowChunk&, int thread)>& fn);

// Fails with one clear line unless `out` could be created: its folder exists and it is
// not a folder itself. Checked before minutes of work, not after.
void check_output_path(const std::string& out);

}  // namespace braid::convert
