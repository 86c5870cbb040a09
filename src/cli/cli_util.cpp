#include "cli/cli_util.h"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "braid/error.h"
#include "braid/gguf.h"
#include "braid/model.h"
#include "braid/thread_pool.h"
#include "braid/tokenizer.h"

namespace braid::cli {

void add_model_option(CLI::App& app, std::string& path) {
  app.add_option("-m,--model", path, "GGUF model file")->required();
}

void add_threads_option(CLI::App& app, int& threads) {
  threads = physical_cores();
  app.add_option("-t,--threads", threads, "Threads for compute (default: physical cores)")
      ->check(CLI::Range(1, 1024));
}

namespace {
// A missing path or a directory, said plainly before any parser sees it.
void check_model_path(const std::string& path) {
  std::error_code ec;
  auto status = std::filesystem::status(path, ec);
  check(std::filesystem::exists(status), "model file '", path, "' not found");
  check(!std::filesystem::is_directory(status), "model path '", path, "' is a directory, not a GGUF file");
}
}  // namespace

std::shared_ptr<const Model> load_model(const std::string& path) {
  check_model_path(path);
  return Model::load(path);
}

std::shared_ptr<const GgufFile> open_gguf(const std::string& path) {
  check_model_path(path);
  return GgufFile::open(path);
}

std::unique_ptr<Tokenizer> load_tokenizer(const GgufFile& gguf) {
  try {
    return Tokenizer::from_gguf(gguf);
  } catch (const Error& e) {
    const std::string msg = e.what();
    if (msg.rfind(gguf.label(), 0) == 0) throw;  // already names the file
    fail(gguf.label(), ": ", msg);
  }
}

std::vector<int32_t> parse_token_list(const std::string& text, int n_vocab) {
  std::vector<int32_t> ids;
  auto is_sep = [](char c) { return c == ',' || c == ' ' || c == '\t' || c == '\n' || c == '\r'; };
  size_t i = 0;
  while (i < text.size()) {
    if (is_sep(text[i])) {
      ++i;
      continue;
    }
    size_t j = i;
    while (j < text.size() && !is_sep(text[j])) ++j;
    const std::string item = text.substr(i, j - i);
    // Digits, with an optional '-' read only to report the id as out of range.
    size_t k = item[0] == '-' ? 1 : 0;
    bool digits = k < item.size() && item.size() <= 12;
    for (; digits && k < item.size(); ++k) digits = item[k] >= '0' && item[k] <= '9';
    check(digits, "token list: '", item, "' is not a token id");
    const long long v = std::stoll(item);
    check(v >= 0 && v < n_vocab, "token list: id ", v, " is outside the vocabulary [0, ", n_vocab, ")");
    ids.push_back(static_cast<int32_t>(v));
    i = j;
  }
  check(!ids.empty(), "token list is empty");
  return ids;
}

void check_writable(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "wb");
  check(f != nullptr, path, ": cannot open for writing: ", std::strerror(errno));
  std::fclose(f);
}

void write_file(const std::string& path, const void* data, size_t size) {
  FILE* f = std::fopen(path.c_str(), "wb");
  check(f != nullptr, path, ": cannot open for writing: ", std::strerror(errno));
  const size_t written = size ? std::fwrite(data, 1, size, f) : 0;
  const bool closed = std::fclose(f) == 0;
  check(closed && written == size, path, ": write failed: ", std::strerror(errno));
}

}  // namespace braid::cli
