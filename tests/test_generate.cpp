// The generation loop (over a scripted Forward and over the real stories260K model), stop
// strings, and perplexity against the golden figures.
#include <gtest/gtest.h>

#include <cmath>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "braid/error.h"
#include "braid/generate.h"
#include "braid/gguf.h"
#include "braid/model.h"
#include "braid/sampler.h"
#include "braid/tokenizer.h"
#include "engine/perplexity.h"
#include "engine/stop_matcher.h"
#include "test_util.h"

namespace braid {
namespace {

using engine::StopMatcher;

// ---------------------------------------------------------------- StopMatcher

TEST(StopMatcher, PassesTextWithoutStops) {
  StopMatcher m({});
  EXPECT_EQ(m.push("hello"), "hello");
  EXPECT_EQ(m.push(" world"), " world");
  EXPECT_EQ(m.flush(), "");
  EXPECT_FALSE(m.stopped());
}

TEST(StopMatcher, HoldsPossiblePrefixThenReleases) {
  StopMatcher m({"</s>"});
  EXPECT_EQ(m.push("abc<"), "abc");
  EXPECT_EQ(m.push("/"), "");
  EXPECT_EQ(m.push("x"), "</x");  // not the stop after all
  EXPECT_EQ(m.push("</"), "");
  EXPECT_EQ(m.flush(), "</");  // end of generation: the held tail is text
  EXPECT_FALSE(m.stopped());
}

TEST(StopMatcher, StopAcrossPiecesCutsBeforeIt) {
  StopMatcher m({"\n\n"});
  EXPECT_EQ(m.push("one\n"), "one");
  EXPECT_EQ(m.push("\ntwo"), "");
  EXPECT_TRUE(m.stopped());
  EXPECT_EQ(m.matched(), "\n\n");
  EXPECT_EQ(m.push("more"), "");
  EXPECT_EQ(m.flush(), "");
}

TEST(StopMatcher, EarliestStopWinsAndLongestPrefixIsHeld) {
  StopMatcher m({"cat", "dog", "abcd", ""});
  EXPECT_EQ(m.push("the abc"), "the ");  // "abc" may become "abcd"
  EXPECT_EQ(m.push("x dog and cat"), "abcx ");
  EXPECT_EQ(m.matched(), "dog");
  StopMatcher m2({"b", "abc"});
  EXPECT_EQ(m2.push("xxab"), "xxa");  // "b" is complete: "abc" no longer matters
  EXPECT_EQ(m2.matched(), "b");
}

TEST(StopMatcher, StopInsideOnePiece) {
  StopMatcher m({"END"});
  EXPECT_EQ(m.push("text END trailing"), "text ");
  EXPECT_TRUE(m.stopped());
}

// ---------------------------------------------------------------- scripted Forward

// After the token at position p is fed, token script[p + 1] is (by far) the most likely
// next: a script that starts with the prompt plays itself back.
class ScriptedForward : public Forward {
 public:
  ScriptedForward(std::vector<int32_t> script, int n_vocab, int n_ctx)
      : script_(std::move(script)), n_vocab_(n_vocab), n_ctx_(n_ctx) {}
  int n_vocab() const override { return n_vocab_; }
  int n_ctx() const override { return n_ctx_; }
  void forward(const int32_t* tokens, int n, int pos0, bool all_logits, float* logits) override {
    check(pos0 >= 0 && pos0 <= held_ && pos0 + n <= n_ctx_, "scripted: bad positions");
    held_ = pos0 + n;
    calls.push_back({pos0, n, all_logits});
    for (int i = all_logits ? 0 : n - 1; i < n; ++i) {
      float* row = logits + static_cast<size_t>(all_logits ? i : 0) * n_vocab_;
      const int p = pos0 + i;
      for (int v = 0; v < n_vocab_; ++v) row[v] = 0.001f * static_cast<float>((v * 7 + p) % 13);
      if (p + 1 < static_cast<int>(script_.size())) row[script_[p + 1]] = 50.0f;
      fed.push_back(tokens[i]);
    }
  }
  struct Call {
    int pos0, n;
    bool all;
  };
  std::vector<Call> calls;
  std::vector<int32_t> fed;  // tokens whose logits were produced

 private:
  std::vector<int32_t> script_;
  int n_vocab_, n_ctx_;
  int held_ = 0;
};

std::shared_ptr<const GgufFile> stories_gguf() {
  std::string p = test::asset("models/stories260K.gguf");
  if (p.empty()) return nullptr;
  return GgufFile::open(p);
}

SamplerParams greedy() {
  SamplerParams p;
  p.temperature = 0;
  return p;
}

#define REQUIRE_TOKENIZER(tok)                                           \
  auto gguf_ = stories_gguf();                                           \
  if (!gguf_) GTEST_SKIP() << "asset models/stories260K.gguf not found"; \
  auto tok = Tokenizer::from_gguf(*gguf_)

TEST(Generator, FollowsScriptAndStopsAtMaxTokens) {
  REQUIRE_TOKENIZER(tok);
  auto ids = tok->encode("Once upon a time, there was a girl", true);
  // Prompt = BOS; the script continues with the story.
  ScriptedForward fwd(ids, 512, 64);
  fwd.calls.clear();
  Generator gen(fwd, *tok);
  Sampler s(greedy());
  GenerateOptions opt;
  opt.max_tokens = 4;
  std::string streamed;
  auto r = gen.generate(std::vector<int32_t>{ids[0]}, s, opt, [&](std::string_view p) {
    streamed += p;
    return true;
  });
  EXPECT_EQ(r.tokens, std::vector<int32_t>(ids.begin() + 1, ids.begin() + 5));
  EXPECT_EQ(r.stop_reason, StopReason::kMaxTokens);
  EXPECT_EQ(r.text, "Once upon a time");  // no leading space at the start of the text
  EXPECT_EQ(streamed, r.text);
  EXPECT_EQ(r.n_prompt, 1);
  // Prefill, then the first 3 generated tokens fed back (the 4th is not needed).
  ASSERT_EQ(fwd.calls.size(), 4u);
  EXPECT_EQ(fwd.calls[0].pos0, 0);
  EXPECT_EQ(fwd.calls[3].pos0, 3);
  EXPECT_TRUE(r.logits.empty());
}

TEST(Generator, TextPromptContinuesWithLeadingSpace) {
  REQUIRE_TOKENIZER(tok);
  auto ids = tok->encode("Once upon a time, there was a girl", true);
  ScriptedForward fwd(ids, 512, 64);
  Generator gen(fwd, *tok);
  Sampler s(greedy());
  GenerateOptions opt;
  opt.max_tokens = 2;
  // The prompt "Once upon" shows text, so "▁a" keeps its space.
  auto r = gen.generate(std::vector<int32_t>(ids.begin(), ids.begin() + 3), s, opt);
  EXPECT_EQ(r.text, " a time");
}

TEST(Generator, RecordsOneLogitRowPerFedPosition) {
  REQUIRE_TOKENIZER(tok);
  auto ids = tok->encode("Once upon a time, there was a girl", true);
  ScriptedForward fwd(ids, 512, 64);
  Generator gen(fwd, *tok);
  Sampler s(greedy());
  GenerateOptions opt;
  opt.max_tokens = 5;
  opt.record_logits = true;
  std::vector<int32_t> prompt(ids.begin(), ids.begin() + 2);
  auto r = gen.generate(prompt, s, opt);
  ASSERT_EQ(r.tokens.size(), 5u);
  ASSERT_EQ(r.logits.size(), (2u + 5u) * 512u);
  // Row i holds what the scripted model gives after position i.
  for (size_t i = 0; i < 7; ++i) {
    const float* row = r.logits.data() + i * 512;
    if (i + 1 < ids.size()) {
      EXPECT_EQ(row[ids[i + 1]], 50.0f) << i;
    }
  }
  // Generated token j was drawn from row P - 1 + j.
  for (size_t j = 0; j < 5; ++j) {
    const float* row = r.logits.data() + (1 + j) * 512;
    EXPECT_EQ(argmax(row, 512), r.tokens[j]);
  }
  // Every generated token was fed, the last one included.
  EXPECT_EQ(fwd.fed.back(), r.tokens.back());
  EXPECT_EQ(fwd.fed.size(), 7u);
}

TEST(Generator, StopsAtEndOfGenerationWithoutItsText) {
  REQUIRE_TOKENIZER(tok);
  std::vector<int32_t> script = tok->encode("Once upon a time", true);
  script.push_back(tok->eos());
  script.push_back(script[1]);  // would continue without the EOS stop
  ScriptedForward fwd(script, 512, 64);
  Generator gen(fwd, *tok);
  Sampler s(greedy());
  GenerateOptions opt;
  opt.max_tokens = 20;
  auto r = gen.generate(std::vector<int32_t>{script[0]}, s, opt);
  EXPECT_EQ(r.stop_reason, StopReason::kEndOfGeneration);
  EXPECT_EQ(r.tokens.size(), 5u);
  EXPECT_EQ(r.tokens.back(), tok->eos());
  EXPECT_EQ(r.text, "Once upon a time");
  opt.ignore_eos = true;
  opt.max_tokens = 6;
  Sampler s2(greedy());
  r = gen.generate(std::vector<int32_t>{script[0]}, s2, opt);
  EXPECT_EQ(r.stop_reason, StopReason::kMaxTokens);
  EXPECT_EQ(r.tokens.size(), 6u);
}

TEST(Generator, StopStringAcrossTokensIsNeverShown) {
  REQUIRE_TOKENIZER(tok);
  auto ids = tok->encode("Once upon a time, there was a little girl named Lily.", true);
  ScriptedForward fwd(ids, 512, 128);
  Generator gen(fwd, *tok);
  Sampler s(greedy());
  GenerateOptions opt;
  opt.max_tokens = 100;
  opt.stop = {"e was a li"};
  std::vector<std::string> pieces;
  auto r = gen.generate(std::vector<int32_t>{ids[0]}, s, opt, [&](std::string_view p) {
    pieces.emplace_back(p);
    return true;
  });
  EXPECT_EQ(r.stop_reason, StopReason::kStopString);
  EXPECT_EQ(r.text, "Once upon a time, ther");
  std::string joined;
  for (const auto& p : pieces) joined += p;
  EXPECT_EQ(joined, r.text);
  // Generation ended on the token that completed the stop string.
  EXPECT_NE(tok->decode(r.tokens).find("e was a li"), std::string::npos);
  EXPECT_LT(r.tokens.size(), ids.size() - 1);
}

TEST(Generator, StreamsWholeUtf8CharactersOnly) {
  REQUIRE_TOKENIZER(tok);
  // "€" (E2 82 AC) and "é" (C3 A9) spelled as byte tokens, one byte per token.
  std::vector<int32_t> script = {tok->bos()};
  for (const char* b : {"<0xE2>", "<0x82>", "<0xAC>", "<0xC3>", "<0xA9>", "<0x21>"}) {
    int32_t id = tok->find(b);
    ASSERT_GE(id, 0) << b;
    script.push_back(id);
  }
  ScriptedForward fwd(script, 512, 64);
  Generator gen(fwd, *tok);
  Sampler s(greedy());
  GenerateOptions opt;
  opt.max_tokens = 6;
  std::vector<std::string> pieces;
  auto r = gen.generate(std::vector<int32_t>{script[0]}, s, opt, [&](std::string_view p) {
    pieces.emplace_back(p);
    return true;
  });
  EXPECT_EQ(r.text, "\xE2\x82\xAC\xC3\xA9!");
  ASSERT_EQ(pieces.size(), 3u);
  EXPECT_EQ(pieces[0], "\xE2\x82\xAC");
  EXPECT_EQ(pieces[1], "\xC3\xA9");
  // A character cut off by the token limit comes out as U+FFFD at the end.
  opt.max_tokens = 2;
  Sampler s2(greedy());
  r = gen.generate(std::vector<int32_t>{script[0]}, s2, opt);
  EXPECT_EQ(r.text, "\xEF\xBF\xBD");
}

TEST(Generator, StopsWhenContextIsFull) {
  REQUIRE_TOKENIZER(tok);
  auto ids = tok->encode("Once upon a time, there was a little girl named Lily.", true);
  ScriptedForward fwd(ids, 512, 6);
  Generator gen(fwd, *tok);
  Sampler s(greedy());
  GenerateOptions opt;
  opt.max_tokens = 100;
  opt.record_logits = true;
  auto r = gen.generate(std::vector<int32_t>(ids.begin(), ids.begin() + 2), s, opt);
  EXPECT_EQ(r.stop_reason, StopReason::kContextFull);
  EXPECT_EQ(r.tokens.size(), 4u);  // positions 2..5
  EXPECT_EQ(r.logits.size(), 6u * 512u);
}

TEST(Generator, CallbackCanCancel) {
  REQUIRE_TOKENIZER(tok);
  auto ids = tok->encode("Once upon a time, there was a little girl named Lily.", true);
  ScriptedForward fwd(ids, 512, 64);
  Generator gen(fwd, *tok);
  Sampler s(greedy());
  GenerateOptions opt;
  int calls = 0;
  auto r = gen.generate(std::vector<int32_t>{ids[0]}, s, opt, [&](std::string_view) { return ++calls < 3; });
  EXPECT_EQ(r.stop_reason, StopReason::kCancelled);
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(r.tokens.size(), 3u);
}

TEST(Generator, RejectsBadRequests) {
  REQUIRE_TOKENIZER(tok);
  ScriptedForward fwd({}, 512, 8);
  Generator gen(fwd, *tok);
  Sampler s(greedy());
  GenerateOptions opt;
  EXPECT_THROW(gen.generate(std::vector<int32_t>{}, s, opt), Error);
  EXPECT_THROW(gen.generate(std::vector<int32_t>(8, 1), s, opt), Error);  // no room
  EXPECT_THROW(gen.generate(std::vector<int32_t>{1, 512}, s, opt), Error);
  EXPECT_THROW(gen.generate(std::vector<int32_t>{1, -1}, s, opt), Error);
  opt.max_tokens = 0;
  EXPECT_THROW(gen.generate(std::vector<int32_t>{1}, s, opt), Error);
  opt.max_tokens = 4;
  opt.stop = {"\xff"};
  EXPECT_THROW(gen.generate(std::vector<int32_t>{1}, s, opt), Error);
  try {
    opt.stop.clear();
    gen.generate(std::vector<int32_t>(8, 1), s, opt);
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("context of 8"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------- stories260K

nlohmann::json golden() {
  std::ifstream in(test::asset("golden/stories260K.json"));
  return nlohmann::json::parse(in);
}

TEST(LocalForward, MatchesGoldenLogitsInAnyBatching) {
  BRAID_REQUIRE_ASSET(path, "models/stories260K.gguf");
  BRAID_REQUIRE_ASSET(ref_path, "golden/stories260K_logits64.f32");
  auto model = Model::load(path);
  auto ref = test::read_f32_file(ref_path);
  std::vector<int32_t> ids = golden()["greedy_ids"].get<std::vector<int32_t>>();
  ids.resize(64);
  ThreadPool pool(2);
  for (int n_batch : {512, 7, 1}) {
    SCOPED_TRACE(n_batch);
    LocalForward fwd(model, 128, pool, n_batch);
    std::vector<float> logits(64 * 512);
    fwd.forward(ids.data(), 64, 0, true, logits.data());
    double worst = 0;
    for (size_t i = 0; i < ref.size(); ++i) worst = std::max(worst, std::fabs(double(logits[i]) - ref[i]));
    EXPECT_LT(worst, 1e-4);
    // Token by token after a prefix: the same rows.
    std::vector<float> row(512);
    fwd.forward(ids.data(), 10, 0, false, row.data());
    for (int p = 10; p < 64; ++p) {
      fwd.forward(&ids[p], 1, p, false, row.data());
      for (int v = 0; v < 512; ++v) ASSERT_NEAR(row[v], logits[p * 512 + v], 1e-5) << p;
    }
  }
}

TEST(LocalForward, RejectsOutOfRange) {
  BRAID_REQUIRE_ASSET(path, "models/stories260K.gguf");
  auto model = Model::load(path);
  ThreadPool pool(1);
  LocalForward fwd(model, 8, pool);
  std::vector<float> logits(512 * 9);
  std::vector<int32_t> ids(9, 1);
  EXPECT_THROW(fwd.forward(ids.data(), 9, 0, true, logits.data()), Error);
  ids[3] = 512;
  EXPECT_THROW(fwd.forward(ids.data(), 4, 0, false, logits.data()), Error);
  ids[3] = 5;
  fwd.forward(ids.data(), 4, 0, false, logits.data());
  EXPECT_THROW(fwd.forward(ids.data(), 1, 6, false, logits.data()), Error);  // gap after 4
  EXPECT_EQ(fwd.n_ctx(), 8);
  EXPECT_EQ(fwd.n_vocab(), 512);
}

TEST(Generator, GreedyStoriesMatchesGolden) {
  BRAID_REQUIRE_ASSET(path, "models/stories260K.gguf");
  auto g = golden();
  auto model = Model::load(path);
  auto tok = Tokenizer::from_gguf(model->gguf());
  ThreadPool pool(2);
  LocalForward fwd(model, 512, pool);
  Generator gen(fwd, *tok);
  Sampler s(greedy());
  GenerateOptions opt;
  opt.max_tokens = 256;
  auto r = gen.generate(std::vector<int32_t>{1}, s, opt);
  std::vector<int32_t> want = g["greedy_ids"].get<std::vector<int32_t>>();
  want.erase(want.begin());
  EXPECT_EQ(r.tokens, want);
  EXPECT_EQ(r.text, g["greedy_text"].get<std::string>());
  EXPECT_EQ(r.text, tok->decode(g["greedy_ids"].get<std::vector<int32_t>>()));
  // A second sequence on the same Forward starts afresh.
  Sampler s2(greedy());
  opt.max_tokens = 16;
  auto r2 = gen.generate(std::vector<int32_t>{1}, s2, opt);
  EXPECT_EQ(r2.tokens, std::vector<int32_t>(want.begin(), want.begin() + 16));
}

TEST(Generator, SeededSamplingIsReproducible) {
  BRAID_REQUIRE_ASSET(path, "models/stories260K.gguf");
  auto model = Model::load(path);
  auto tok = Tokenizer::from_gguf(model->gguf());
  ThreadPool pool(2);
  LocalForward fwd(model, 512, pool);
  Generator gen(fwd, *tok);
  SamplerParams p;
  p.temperature = 1.0f;
  p.seed = 7;
  GenerateOptions opt;
  opt.max_tokens = 64;
  auto prompt = tok->encode("Once upon a time", true);
  Sampler a(p), b(p);
  auto ra = gen.generate(prompt, a, opt);
  auto rb = gen.generate(prompt, b, opt);
  EXPECT_EQ(ra.tokens, rb.tokens);
  EXPECT_EQ(ra.text, rb.text);
}

// ---------------------------------------------------------------- perplexity

TEST(Perplexity, TokenNll) {
  std::vector<float> l = {1.0f, 2.0f, 3.0f};
  double z = std::exp(1.0) + std::exp(2.0) + std::exp(3.0);
  EXPECT_NEAR(engine::token_nll(l.data(), 3, 2), -std::log(std::exp(3.0) / z), 1e-12);
  EXPECT_NEAR(engine::token_nll(l.data(), 3, 0), -std::log(std::exp(1.0) / z), 1e-12);
  std::vector<float> big = {1000.0f, 0.0f};  // no overflow
  EXPECT_NEAR(engine::token_nll(big.data(), 2, 0), 0.0, 1e-12);
}

TEST(Perplexity, SplitParagraphs) {
  auto p = engine::split_paragraphs("one\ntwo\n\nthree  \n \n\t\n\nfour\n");
  ASSERT_EQ(p.size(), 3u);
  EXPECT_EQ(p[0], "one\ntwo");
  EXPECT_EQ(p[1], "three");
  EXPECT_EQ(p[2], "four");
  EXPECT_TRUE(engine::split_paragraphs("\n\n  \n").empty());
  EXPECT_EQ(engine::split_paragraphs("x").size(), 1u);
}

TEST(Perplexity, StoriesParagraphsMatchGolden) {
  BRAID_REQUIRE_ASSET(path, "models/stories260K.gguf");
  BRAID_REQUIRE_ASSET(corpus, "corpus/tinystories_val_subset.txt");
  auto model = Model::load(path);
  auto tok = Tokenizer::from_gguf(model->gguf());
  ThreadPool pool(1);  // tiny model: threads only add overhead
  LocalForward fwd(model, 512, pool);
  std::ifstream in(corpus, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  auto r = engine::perplexity_paragraphs(fwd, *tok, ss.str(), 50, 512);
  EXPECT_EQ(r.n_tokens, 5055);
  EXPECT_EQ(r.n_segments, 50);
  EXPECT_NEAR(r.mean_nll(), 1.3846578150899191, 1e-5);
  EXPECT_NEAR(r.ppl(), 3.9934591695250368, 1e-4);
}

TEST(Perplexity, WindowsScoreSecondHalves) {
  BRAID_REQUIRE_ASSET(path, "models/stories260K.gguf");
  BRAID_REQUIRE_ASSET(corpus, "corpus/tinystories_val_subset.txt");
  auto model = Model::load(path);
  auto tok = Tokenizer::from_gguf(model->gguf());
  ThreadPool pool(2);
  LocalForward fwd(model, 64, pool);
  std::ifstream in(corpus, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str().substr(0, 4000);
  auto r = engine::perplexity_windows(fwd, *tok, text, 64, 3);
  EXPECT_EQ(r.n_segments, 3);
  EXPECT_EQ(r.n_tokens, 3 * 31);
  // Recompute the first window by hand.
  auto all = tok->encode(text, true);
  std::vector<int32_t> w(all.begin(), all.begin() + 64);
  std::vector<float> logits(64 * 512);
  fwd.forward(w.data(), 64, 0, true, logits.data());
  double nll = 0;
  for (int i = 32; i < 63; ++i) nll += engine::token_nll(logits.data() + i * 512, 512, w[i + 1]);
  auto r1 = engine::perplexity_windows(fwd, *tok, text, 64, 1);
  EXPECT_NEAR(r1.nll_sum, nll, 1e-9);
  EXPECT_THROW(engine::perplexity_windows(fwd, *tok, "short", 64, 0), Error);
  EXPECT_THROW(engine::perplexity_windows(fwd, *tok, text, 65, 0), Error);
}

}  // namespace
}  // namespace braid
