// `braid run`, `braid tokenize` and `braid perplexity` end to end: the stories260K oracles,
// and bad input of every kind giving one clean error line, in bounded time, never a crash.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "test_util.h"

namespace braid::test {
namespace {

const char* kModel = "models/stories260K.gguf";

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

void spit(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out << bytes;
}

std::vector<int> parse_ids(const std::string& text) {
  std::vector<int> ids;
  std::istringstream in(text);
  int v;
  while (in >> v) ids.push_back(v);
  return ids;
}

nlohmann::json golden() {
  std::string p = asset("golden/stories260K.json");
  return p.empty() ? nlohmann::json() : nlohmann::json::parse(slurp(p));
}

// A user error: non-zero exit, no signal, exactly one line "braid: error: ..." on stderr.
void expect_clean_error(const CommandResult& r, const std::string& needle = "") {
  EXPECT_EQ(r.signal, 0) << "killed by signal " << r.signal << "; stderr: " << r.err;
  EXPECT_GT(r.exit_code, 0) << "stderr: " << r.err;
  EXPECT_EQ(r.err.rfind("braid: error: ", 0), 0u) << "stderr: " << r.err;
  ASSERT_FALSE(r.err.empty());
  EXPECT_EQ(r.err.back(), '\n');
  EXPECT_EQ(r.err.find('\n'), r.err.size() - 1) << "more than one line: " << r.err;
  if (!needle.empty()) {
    EXPECT_NE(r.err.find(needle), std::string::npos) << "stderr: " << r.err;
  }
}

// ---------------------------------------------------------------- oracles

TEST(CliRun, GreedyFromBosMatchesGolden) {
  BRAID_REQUIRE_ASSET(model, kModel);
  BRAID_REQUIRE_ASSET(golden_logits, "golden/stories260K_logits64.f32");
  const auto g = golden();
  const std::string dir = temp_dir();
  const std::string ids_path = dir + "/ids.txt", logits_path = dir + "/logits.f32";
  auto r = run_braid({"run", "-m", model, "--prompt-tokens", "1", "-n", "256", "--temp", "0", "--ids-out",
                      ids_path, "--logits-out", logits_path, "-t", "2"});
  ASSERT_EQ(r.exit_code, 0) << r.err;

  std::vector<int> want = g["greedy_ids"].get<std::vector<int>>();
  want.erase(want.begin());  // BOS is the prompt
  EXPECT_EQ(parse_ids(slurp(ids_path)), want);
  EXPECT_EQ(r.out, g["greedy_text"].get<std::string>());

  // One row per fed position: the prompt's one, then one per generated token.
  const int vocab = 512;
  auto logits = read_f32_file(logits_path);
  ASSERT_EQ(logits.size(), static_cast<size_t>(1 + 256) * vocab);
  auto ref = read_f32_file(golden_logits);
  ASSERT_EQ(ref.size(), static_cast<size_t>(64) * vocab);
  double worst = 0;
  for (size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, std::fabs(double(logits[i]) - ref[i]));
  EXPECT_LT(worst, 1e-4);
  // Each generated token is the argmax of the row it was drawn from.
  for (int j = 0; j < 256; ++j) {
    const float* row = logits.data() + static_cast<size_t>(j) * vocab;
    EXPECT_EQ(std::max_element(row, row + vocab) - row, want[j]) << "token " << j;
  }

  // Stats line on stderr.
  EXPECT_NE(r.err.find("prompt: 1 tokens"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("generated: 256 tokens"), std::string::npos) << r.err;
}

TEST(CliRun, TextPromptAddsBosAndContinuesGreedily) {
  BRAID_REQUIRE_ASSET(model, kModel);
  const auto g = golden();
  const std::string ids_path = temp_dir() + "/ids.txt";
  // The golden continuation starts with "Once upon a time": prompting with it must
  // continue exactly as the golden run did.
  auto r = run_braid(
      {"run", "-m", model, "-p", "Once upon a time", "-n", "20", "--temp", "0", "--ids-out", ids_path});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::vector<int> all = g["greedy_ids"].get<std::vector<int>>();
  std::vector<int> want(all.begin() + 5, all.begin() + 25);
  EXPECT_EQ(parse_ids(slurp(ids_path)), want);
  EXPECT_NE(r.err.find("prompt: 5 tokens"), std::string::npos) << r.err;
  // Only generated text goes to stdout (no prompt echo).
  EXPECT_EQ(g["greedy_text"].get<std::string>().rfind("Once upon a time" + r.out, 0), 0u) << r.out;
}

TEST(CliRun, StopStringEndsTextBeforeIt) {
  BRAID_REQUIRE_ASSET(model, kModel);
  const auto g = golden();
  const std::string text = g["greedy_text"].get<std::string>();
  auto r =
      run_braid({"run", "-m", model, "--prompt-tokens", "1", "-n", "256", "--temp", "0", "--stop", "Lily"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, text.substr(0, text.find("Lily")));
  // Two stop strings: the earliest in the text wins.
  r = run_braid({"run", "-m", model, "--prompt-tokens", "1", "-n", "256", "--temp", "0", "--stop", "park",
                 "--stop", "girl"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, text.substr(0, text.find("girl")));
}

TEST(CliRun, SeedReproducibleAndDifferentSeedsDiffer) {
  BRAID_REQUIRE_ASSET(model, kModel);
  std::vector<std::string> args = {"run",    "-m",  model,    "-p", "Once upon a time", "-n", "64",
                                   "--temp", "1.0", "--seed", "42"};
  auto a = run_braid(args), b = run_braid(args);
  ASSERT_EQ(a.exit_code, 0) << a.err;
  ASSERT_EQ(b.exit_code, 0) << b.err;
  EXPECT_EQ(a.out, b.out);
  EXPECT_FALSE(a.out.empty());
  args.back() = "43";
  auto c = run_braid(args);
  ASSERT_EQ(c.exit_code, 0) << c.err;
  EXPECT_NE(a.out, c.out);
  // The thread count does not change the result.
  args.back() = "42";
  args.insert(args.end(), {"-t", "1"});
  auto d = run_braid(args);
  EXPECT_EQ(a.out, d.out);
}

TEST(CliRun, TokenLimitAndContextLimit) {
  BRAID_REQUIRE_ASSET(model, kModel);
  const std::string dir = temp_dir();
  auto r = run_braid(
      {"run", "-m", model, "--prompt-tokens", "1", "-n", "5", "--temp", "0", "--ids-out", dir + "/a.txt"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(parse_ids(slurp(dir + "/a.txt")).size(), 5u);
  // A context of 10 holds the prompt and 9 generated tokens.
  r = run_braid({"run", "-m", model, "--prompt-tokens", "1", "-n", "100", "--temp", "0", "--ctx", "10",
                 "--ids-out", dir + "/b.txt", "--logits-out", dir + "/b.f32"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(parse_ids(slurp(dir + "/b.txt")).size(), 9u);
  EXPECT_EQ(read_f32_file(dir + "/b.f32").size(), 10u * 512);
  EXPECT_NE(r.err.find("context"), std::string::npos) << r.err;
}

TEST(CliRun, PromptFromFileAndNoBos) {
  BRAID_REQUIRE_ASSET(model, kModel);
  const std::string dir = temp_dir();
  spit(dir + "/p.txt", "Once upon a time");
  auto a = run_braid({"run", "-m", model, "-f", dir + "/p.txt", "-n", "8", "--temp", "0"});
  auto b = run_braid({"run", "-m", model, "-p", "Once upon a time", "-n", "8", "--temp", "0"});
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_EQ(a.out, b.out);
  auto c = run_braid({"run", "-m", model, "-p", "Once upon a time", "--no-bos", "-n", "8", "--temp", "0"});
  ASSERT_EQ(c.exit_code, 0) << c.err;
  EXPECT_NE(c.err.find("prompt: 4 tokens"), std::string::npos) << c.err;
}

TEST(CliTokenize, MatchesGoldenEncoding) {
  BRAID_REQUIRE_ASSET(model, kModel);
  auto r = run_braid({"tokenize", "-m", model, "-p", "Once upon a time", "--no-bos"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "403 407 261 378\n");
  r = run_braid({"tokenize", "-m", model, "-p", "Once upon a time"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "1 403 407 261 378\n");
  const std::string f = temp_dir() + "/t.txt";
  spit(f, "Once upon a time");
  r = run_braid({"tokenize", "-m", model, "-f", f, "--no-bos"});
  EXPECT_EQ(r.out, "403 407 261 378\n");
}

TEST(CliPerplexity, ParagraphsMatchGolden) {
  BRAID_REQUIRE_ASSET(model, kModel);
  BRAID_REQUIRE_ASSET(corpus, "corpus/tinystories_val_subset.txt");
  auto r = run_braid({"perplexity", "-m", model, "-f", corpus, "--paragraphs", "50", "-t", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // "tokens 5055 ppl 3.99346"
  EXPECT_NE(r.out.find("tokens 5055"), std::string::npos) << r.out;
  auto at = r.out.find("ppl ");
  ASSERT_NE(at, std::string::npos) << r.out;
  EXPECT_NEAR(std::stod(r.out.substr(at + 4)), 3.9934591695250368, 1e-3);
}

TEST(CliPerplexity, TwoHundredParagraphsMatchGolden) {
  BRAID_REQUIRE_ASSET(model, kModel);
  BRAID_REQUIRE_ASSET(corpus, "corpus/tinystories_val_subset.txt");
  auto r = run_braid({"perplexity", "-m", model, "-f", corpus, "--paragraphs", "200", "-t", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("tokens 19380"), std::string::npos) << r.out;
  auto at = r.out.find("ppl ");
  ASSERT_NE(at, std::string::npos) << r.out;
  EXPECT_NEAR(std::stod(r.out.substr(at + 4)), 4.215658967523195, 1e-3);
}

TEST(CliPerplexity, WindowsMode) {
  BRAID_REQUIRE_ASSET(model, kModel);
  BRAID_REQUIRE_ASSET(corpus, "corpus/tinystories_val_subset.txt");
  // Take a prefix of the corpus so the run stays short: 4 windows of 128.
  const std::string f = temp_dir() + "/c.txt";
  spit(f, slurp(corpus).substr(0, 3000));
  auto r = run_braid({"perplexity", "-m", model, "-f", f, "--mode", "windows", "--ctx", "128", "-t", "1"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto at = r.out.find("ppl ");
  ASSERT_NE(at, std::string::npos) << r.out;
  double ppl = std::stod(r.out.substr(at + 4));
  // Same model, same kind of text: close to the paragraph figure, certainly sane.
  EXPECT_GT(ppl, 2.0);
  EXPECT_LT(ppl, 8.0);
  // Each window of 128 scores its second half: 63 tokens.
  auto tk = r.out.find("tokens ");
  ASSERT_NE(tk, std::string::npos);
  EXPECT_EQ(std::stoi(r.out.substr(tk + 7)) % 63, 0) << r.out;
}

// ---------------------------------------------------------------- bad input

TEST(CliBadInput, MissingModelFile) {
  auto r = run_braid({"run", "-m", "/nonexistent/model.gguf", "-p", "hi"}, "", 30);
  expect_clean_error(r, "not found");
  r = run_braid({"tokenize", "-m", "/nonexistent/model.gguf", "-p", "hi"}, "", 30);
  expect_clean_error(r, "not found");
  r = run_braid({"perplexity", "-m", "/nonexistent/model.gguf", "-f", "/nonexistent.txt"}, "", 30);
  expect_clean_error(r);
  r = run_braid({"run", "-m", temp_dir(), "-p", "hi"}, "", 30);
  expect_clean_error(r, "directory");
}

TEST(CliBadInput, EmptyModelFile) {
  const std::string f = temp_dir() + "/empty.gguf";
  spit(f, "");
  expect_clean_error(run_braid({"run", "-m", f, "-p", "hi"}, "", 30));
  expect_clean_error(run_braid({"tokenize", "-m", f, "-p", "hi"}, "", 30));
}

TEST(CliBadInput, TruncatedModel) {
  BRAID_REQUIRE_ASSET(model, kModel);
  const std::string bytes = slurp(model);
  const std::string dir = temp_dir();
  // Inside the magic, the header counts, a key, the token array, other metadata, the
  // tensor infos, and the tensor data.
  for (size_t cut : {size_t{2}, size_t{4}, size_t{8}, size_t{20}, size_t{30}, size_t{100}, size_t{6470},
                     size_t{10720}, size_t{11400}, size_t{12000}, bytes.size() / 2, bytes.size() - 1}) {
    SCOPED_TRACE(cut);
    const std::string f = dir + "/cut" + std::to_string(cut) + ".gguf";
    spit(f, bytes.substr(0, cut));
    expect_clean_error(run_braid({"run", "-m", f, "-p", "hi", "-n", "4"}, "", 30));
  }
}

TEST(CliBadInput, CorruptHeader) {
  BRAID_REQUIRE_ASSET(model, kModel);
  const std::string bytes = slurp(model);
  const std::string dir = temp_dir();
  auto patched = [&](size_t at, const std::string& with) {
    std::string b = bytes;
    b.replace(at, with.size(), with);
    return b;
  };
  struct Case {
    const char* name;
    std::string bytes;
  };
  std::vector<Case> cases = {
      {"magic", patched(0, "GGUX")},
      {"version", patched(4, std::string("\x63\x00\x00\x00", 4))},
      {"tensor count", patched(8, std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8))},
      {"kv count", patched(16, std::string("\xff\xff\xff\xff\x00\x00\x00\x00", 8))},
      {"key length", patched(24, std::string("\xff\xff\xff\xff\xff\xff\x00\x00", 8))},
      {"value type", patched(24 + 8 + 21, std::string("\x2a\x00\x00\x00", 4))},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string f = dir + "/corrupt.gguf";
    spit(f, c.bytes);
    expect_clean_error(run_braid({"run", "-m", f, "-p", "hi", "-n", "4"}, "", 30));
  }
}

TEST(CliBadInput, RandomByteFlipsNeverCrash) {
  BRAID_REQUIRE_ASSET(model, kModel);
  const std::string bytes = slurp(model);
  const std::string dir = temp_dir();
  std::mt19937_64 rng(12345);
  // Flips in the metadata and tensor-info region (the first ~12 KB); a flip may leave a
  // loadable file, which must then run normally.
  for (int i = 0; i < 24; ++i) {
    std::string b = bytes;
    for (int k = 0; k < 3; ++k) b[rng() % 12000] ^= static_cast<char>(1 + rng() % 255);
    const std::string f = dir + "/flip" + std::to_string(i) + ".gguf";
    spit(f, b);
    auto r = run_braid({"run", "-m", f, "-p", "hi", "-n", "4", "-t", "1"}, "", 60);
    SCOPED_TRACE(i);
    EXPECT_EQ(r.signal, 0) << r.err;
    if (r.exit_code != 0) expect_clean_error(r);
  }
}

TEST(CliBadInput, UnsupportedArchitecture) {
  BRAID_REQUIRE_ASSET(model, kModel);
  std::string bytes = slurp(model);
  const std::string key = "general.architecture";
  size_t at = bytes.find(key);
  ASSERT_NE(at, std::string::npos);
  at += key.size() + 4 + 8;  // type, string length
  ASSERT_EQ(bytes.substr(at, 5), "llama");
  bytes.replace(at, 5, "mamba");
  const std::string f = temp_dir() + "/mamba.gguf";
  spit(f, bytes);
  expect_clean_error(run_braid({"run", "-m", f, "-p", "hi"}, "", 30), "mamba");
}

TEST(CliBadInput, PromptLongerThanContext) {
  BRAID_REQUIRE_ASSET(model, kModel);
  expect_clean_error(
      run_braid({"run", "-m", model, "-p", "Once upon a time there was a girl", "--ctx", "4"}, "", 30),
      "context");
  expect_clean_error(
      run_braid({"run", "-m", model, "--prompt-tokens", "1,2,3,4", "--ctx", "4", "-n", "1"}, "", 30),
      "context");
}

TEST(CliBadInput, InvalidUtf8Prompt) {
  BRAID_REQUIRE_ASSET(model, kModel);
  expect_clean_error(run_braid({"run", "-m", model, "-p", "Once \xff\xfe upon"}, "", 30), "UTF-8");
  expect_clean_error(run_braid({"tokenize", "-m", model, "-p", "caf\xc3"}, "", 30), "UTF-8");
  const std::string f = temp_dir() + "/bad.txt";
  spit(f, "ok\n\n\xc0\x80 overlong\n");
  expect_clean_error(run_braid({"perplexity", "-m", model, "-f", f}, "", 30), "UTF-8");
  expect_clean_error(run_braid({"run", "-m", model, "-p", "hi", "--stop", "\xe2\x82"}, "", 30), "UTF-8");
}

TEST(CliBadInput, BadNumbers) {
  BRAID_REQUIRE_ASSET(model, kModel);
  expect_clean_error(run_braid({"run", "-m", model, "-p", "hi", "-n", "0"}, "", 30), "-n");
  expect_clean_error(run_braid({"run", "-m", model, "-p", "hi", "-n", "-3"}, "", 30));
  expect_clean_error(run_braid({"run", "-m", model, "-p", "hi", "-n", "lots"}, "", 30));
  expect_clean_error(run_braid({"run", "-m", model, "-p", "hi", "--top-p", "0"}, "", 30));
  expect_clean_error(run_braid({"run", "-m", model, "-p", "hi", "--ctx", "0"}, "", 30));
  expect_clean_error(run_braid({"run", "-m", model, "-p", "hi", "-t", "0"}, "", 30));
  expect_clean_error(run_braid({"perplexity", "-m", model, "-f", model, "--mode", "chunks"}, "", 30));
}

TEST(CliBadInput, UnknownFlagsAndMissingArguments) {
  expect_clean_error(run_braid({"run", "--bogus"}, "", 30));
  expect_clean_error(run_braid({"tokenize", "--frobnicate", "3"}, "", 30));
  expect_clean_error(run_braid({"perplexity", "-x"}, "", 30));
  BRAID_REQUIRE_ASSET(model, kModel);
  expect_clean_error(run_braid({"run", "-m", model, "-p", "hi", "--bogus"}, "", 30), "--bogus");
  expect_clean_error(run_braid({"run", "-m", model, "-p", "hi", "stray"}, "", 30), "stray");
  expect_clean_error(run_braid({"run", "-m", model}, "", 30), "prompt");  // no prompt at all
  expect_clean_error(run_braid({"run", "-m", model, "-p", "a", "-f", "/etc/hostname"}, "", 30));
  expect_clean_error(run_braid({"run", "-m", model, "-f", "/nonexistent/prompt.txt"}, "", 30));
  expect_clean_error(run_braid({"perplexity", "-m", model}, "", 30));
}

TEST(CliBadInput, BadPromptTokens) {
  BRAID_REQUIRE_ASSET(model, kModel);
  expect_clean_error(run_braid({"run", "-m", model, "--prompt-tokens", "1,512"}, "", 30), "512");
  expect_clean_error(run_braid({"run", "-m", model, "--prompt-tokens", "1,-1"}, "", 30), "-1");
  expect_clean_error(run_braid({"run", "-m", model, "--prompt-tokens", "1,abc"}, "", 30), "abc");
  expect_clean_error(run_braid({"run", "-m", model, "--prompt-tokens", "99999999999999999999"}, "", 30));
  expect_clean_error(run_braid({"run", "-m", model, "--prompt-tokens", ","}, "", 30), "empty");
  expect_clean_error(run_braid({"run", "-m", model, "--prompt-tokens", "1", "-p", "hi"}, "", 30));
}

TEST(CliBadInput, UnwritableOutputFiles) {
  BRAID_REQUIRE_ASSET(model, kModel);
  expect_clean_error(
      run_braid({"run", "-m", model, "-p", "hi", "-n", "2", "--ids-out", "/nonexistent/dir/ids.txt"}, "", 30),
      "/nonexistent/dir/ids.txt");
}

}  // namespace
}  // namespace braid::test
