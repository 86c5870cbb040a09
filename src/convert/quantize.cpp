// braid::quantize_gguf: each matrix is dequantized to f32 a row at a time and written in
// its target type by braid::quantize_row (llama.cpp's reference quantizers), in parallel,
// into disk-backed scratch space; the GGUF writer then streams everything out.
#include "braid/quantize.h"

#include <sys/stat.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <map>
#include <memory>
#include <vector>

#include "braid/error.h"
#include "braid/gguf.h"
#include "braid/quant.h"
#include "braid/thread_pool.h"
#include "convert/quantize_rows.h"
#include "convert/scratch.h"

namespace braid {

namespace {

// Work is handed out in chunks of about this many elements.
constexpr int64_t kChunkElements = 1 << 18;

size_t align32(size_t n) { return (n + 31) & ~size_t{31}; }

bool is_float(DType t) { return t == DType::F32 || t == DType::F16 || t == DType::BF16; }

// Whether `path` names the same file as `other` (so writing it would pull the input's
// pages out from under the mapping).
bool same_file(const std::string& a, const std::string& b) {
  struct stat sa, sb;
  if (::stat(a.c_str(), &sa) != 0 || ::stat(b.c_str(), &sb) != 0) return false;
  return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

int block_count(const GgufFile& g) {
  const std::string arch = g.get_str("general.architecture", "");
  if (!arch.empty() && g.has(arch + ".block_count")) {
    const int64_t n = g.get_i64(arch + ".block_count");
    check(n >= 0 && n <= (1 << 16), g.label(), ": ", arch, ".block_count = ", n, " is out of range");
    return static_cast<int>(n);
  }
  // No hyperparameters: count the blocks named in the tensors.
  int n = 0;
  for (const Tensor& t : g.tensors()) {
    int layer = -1;
    if (std::sscanf(t.name.c_str(), "blk.%d.", &layer) == 1 && layer >= 0 && layer < (1 << 16))
      n = std::max(n, layer + 1);
  }
  return n;
}

}  // namespace

QuantizeResult quantize_gguf(const std::string& in, const std::string& out, const QuantizeOptions& opt) {
  check(!in.empty(), "quantize: no input file given");
  struct stat st;
  check(::stat(in.c_str(), &st) == 0, "model file '", in, "' not found");
  check(!S_ISDIR(st.st_mode), "model path '", in, "' is a directory, not a GGUF file");
  convert::check_output_path(out);
  check(!same_file(in, out), "quantize: the output ", out, " is the input file; choose another path");
  quant_mix_base_type(opt.mix);  // throws for a value outside the enum

  std::unique_ptr<GgufFile> src = GgufFile::open(in);
  const std::vector<Tensor>& tensors = src->tensors();
  const std::vector<TensorTypeChoice> choices =
      choose_tensor_types(opt.mix, tensors, block_count(*src), opt.pure);

  QuantizeResult result;
  result.n_tensors = tensors.size();
  // Tensors that change type: their rows (0 for the others, which are copied) and width.
  std::vector<int64_t> rows(tensors.size(), 0), cols(tensors.size(), 0);
  std::vector<bool> converted(tensors.size(), false);
  std::vector<size_t> offsets(tensors.size(), 0);
  size_t scratch_bytes = 0;
  int64_t max_cols = 1;
  std::map<DType, size_t> counts;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    const TensorTypeChoice& c = choices[i];
    result.bytes_in += t.nbytes;
    result.n_elements += static_cast<uint64_t>(t.nelements());
    ++counts[c.type];
    if (c.fallback)
      result.fallbacks.push_back(cat(t.name, ": rows of ", t.ne[0], " are not a multiple of ",
                                     dtype_info(c.preferred).block_size, " (", dtype_name(c.preferred),
                                     ") -> ", dtype_name(c.type)));
    if (c.type == t.type) {
      result.bytes_out += t.nbytes;
      continue;
    }
    check(is_float(t.type) || quant_supported(t.type), src->label(), ": tensor ", t.name, " has type ",
          dtype_name(t.type), ", which braid cannot dequantize");
    check(is_float(t.type) || opt.allow_requantize, src->label(), ": tensor ", t.name,
          " is already quantized (", dtype_name(t.type),
          "); quantizing it again loses precision twice (pass --allow-requantize to do it anyway)");
    converted[i] = true;
    rows[i] = t.rows();
    cols[i] = t.ne[0];
    max_cols = std::max(max_cols, cols[i]);
    const size_t nbytes = row_bytes(c.type, t.ne[0]) * static_cast<size_t>(t.rows());
    offsets[i] = scratch_bytes;
    scratch_bytes += align32(nbytes);
    result.bytes_out += nbytes;
    ++result.n_converted;
  }
  result.type_counts.assign(counts.begin(), counts.end());

  convert::Scratch scratch;
  scratch.reserve(out, scratch_bytes);

  // Progress counts source bytes: converted tensors as their rows are done, copied ones
  // at once (they cost nothing).
  std::atomic<uint64_t> done{0};
  for (size_t i = 0; i < tensors.size(); ++i)
    if (!converted[i]) done += tensors[i].nbytes;
  if (opt.progress) opt.progress("quantizing", done.load(), result.bytes_in);

  ThreadPool pool(opt.threads > 0 ? opt.threads : physical_cores());
  std::vector<std::vector<float>> row_buf(static_cast<size_t>(pool.size()),
                                          std::vector<float>(static_cast<size_t>(max_cols)));
  const std::vector<convert::RowChunk> chunks = convert::make_row_chunks(rows, cols, kChunkElements);
  convert::run_row_chunks(pool, chunks, [&](const convert::RowChunk& ch, int thread) {
    const Tensor& t = tensors[ch.tensor];
    const DType dst_type = choices[ch.tensor].type;
    const size_t src_row = t.row_size();
    const size_t dst_row = row_bytes(dst_type, t.ne[0]);
    float* f = row_buf[static_cast<size_t>(thread)].data();
    uint8_t* dst = scratch.data() + offsets[ch.tensor];
    for (int64_t r = ch.r0; r < ch.r1; ++r) {
      dequantize_row(t.type, t.data + static_cast<size_t>(r) * src_row, f, t.ne[0]);
      quantize_row(dst_type, f, dst + static_cast<size_t>(r) * dst_row, t.ne[0]);
    }
    const uint64_t now = done.fetch_add(src_row * static_cast<size_t>(ch.r1 - ch.r0)) +
                         src_row * static_cast<size_t>(ch.r1 - ch.r0);
    if (opt.progress && thread == 0) opt.progress("quantizing", now, result.bytes_in);
  });
  if (opt.progress) opt.progress("quantizing", result.bytes_in, result.bytes_in);

  GgufWriter w;
  w.copy_metadata(*src);
  w.set("general.quantization_version", GgufValue::u32(2));
  w.set("general.file_type", GgufValue::u32(static_cast<uint32_t>(opt.mix)));
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = tensors[i];
    std::vector<int64_t> ne(t.ne, t.ne + std::max(1, t.n_dims));
    if (!converted[i]) {
      w.add_tensor(t.name, t.type, ne, t.data, t.nbytes);
    } else {
      const DType type = choices[i].type;
      w.add_tensor(t.name, type, ne, scratch.data() + offsets[i],
                   row_bytes(type, t.ne[0]) * static_cast<size_t>(t.rows()));
    }
  }
  if (opt.progress)
    w.write(out, [&](uint64_t d, uint64_t all) { opt.progress("writing", d, all); });
  else
    w.write(out);
  return result;
}

}  // namespace braid
