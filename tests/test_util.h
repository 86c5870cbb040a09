// Shared helpers for braid's tests: where the oracle assets are, and running the CLI.
#pragma once

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace braid::test {

// The assets folder: $BRAID_ASSETS, else the build's default (../shared/assets).
std::string assets_dir();
// assets_dir() + "/" + rel; empty when the file is absent.
std::string asset(const std::string& rel);

// Skips the current test, saying which asset is missing, when `path` is empty.
#define BRAID_REQUIRE_ASSET(var, rel)                                                  \
  const std::string var = ::braid::test::asset(rel);                                  \
  if (var.empty()) GTEST_SKIP() << "asset " << (rel) << " not found under "           \
                                << ::braid::test::assets_dir() << " (set BRAID_ASSETS)"

// A fresh temporary directory for this test (removed at exit of the process).
std::string temp_dir();

// Float32 little-endian file -> vector.
std::vector<float> read_f32_file(const std::string& path);
// A whole file's bytes ("" if it cannot be read), and writing them.
std::string slurp(const std::string& path);
void put(const std::string& path, const std::string& data);

struct CommandResult {
  int exit_code = -1;  // -1 when killed by a signal
  int signal = 0;
  std::string out;  // stdout
  std::string err;  // stderr
};
// Runs the braid CLI with args (no shell), feeding `input` on stdin; kills it after
// timeout_s seconds (then signal == SIGKILL).
CommandResult run_braid(const std::vector<std::string>& args, const std::string& input = "",
                        int timeout_s = 120);
std::string braid_binary();

}  // namespace braid::test
