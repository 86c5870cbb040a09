// BPE training: the merges against a naive reference trainer (recount every pair after
// every merge), the GGUF it writes loaded by braid's Tokenizer (round trips, the training
// segmentation reproduced), speed, and the errors.
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <set>

#include "braid/bpe_train.h"
#include "braid/error.h"
#include "braid/gguf.h"
#include "braid/mapped_file.h"
#include "braid/tokenizer.h"
#include "braid/tune_rng.h"
#include "test_util.h"

namespace braid {
namespace {

// Lines of lowercase words over a small alphabet with skewed frequencies: many repeated
// pairs, many ties among rare ones. gpt-2's pre-tokenizer splits such a line into its
// first word and " word" for the others.
std::vector<std::string> synthetic_lines(uint64_t seed, int n_lines) {
  tune::Rng rng(seed);
  std::vector<std::string> vocab;
  for (int i = 0; i < 60; ++i) {
    std::string w;
    const int len = 1 + int(rng.below(7));
    for (int j = 0; j < len; ++j) w += char('a' + rng.below(1 + rng.below(12)));
    vocab.push_back(w);
  }
  std::vector<std::string> lines;
  for (int l = 0; l < n_lines; ++l) {
    std::string line;
    const int n = 1 + int(rng.below(9));
    for (int k = 0; k < n; ++k) {
      // Zipf-like: low indices much more often.
      const size_t idx = size_t(rng.below(1 + rng.below(vocab.size())));
      if (k) line += ' ';
      line += vocab[idx];
    }
    lines.push_back(line);
  }
  return lines;
}

// The textbook algorithm, written independently: words as lists of token ids, every pair
// recounted before every merge, the same tie rule (smallest ids) and id assignment.
struct NaiveBpe {
  std::vector<std::string> tokens;  // byte-level strings
  std::vector<std::string> merges;
  std::map<std::string, std::vector<int>> words;  // word bytes -> final token ids
  std::map<std::string, int64_t> counts;

  static std::string byte_char(uint8_t b) {
    // GPT-2's bytes_to_unicode for the bytes these tests use: printable ASCII is itself,
    // space is U+0120 "Ġ".
    if (b == ' ') return "\xC4\xA0";
    return std::string(1, char(b));
  }

  void train(const std::vector<std::string>& lines, int vocab_size, int64_t min_freq) {
    for (int b = 0; b < 256; ++b) tokens.push_back(b == ' ' ? byte_char(' ') : std::string(1, char(b)));
    for (const std::string& line : lines) {
      size_t i = 0;
      while (i < line.size()) {
        size_t j = line.find(' ', i + 1);
        if (j == std::string::npos) j = line.size();
        counts[line.substr(i, j - i)]++;
        i = j;
      }
    }
    for (const auto& [w, c] : counts) {
      std::vector<int> ids;
      for (char ch : w) ids.push_back(uint8_t(ch));
      words[w] = ids;
    }
    while (int(tokens.size()) < vocab_size) {
      std::map<std::pair<int, int>, int64_t> pairs;
      for (const auto& [w, ids] : words)
        for (size_t j = 0; j + 1 < ids.size(); ++j) pairs[{ids[j], ids[j + 1]}] += counts[w];
      std::pair<int, int> best{-1, -1};
      int64_t best_count = 0;
      for (const auto& [p, c] : pairs)  // map order: smallest ids first among equals
        if (c > best_count) best = p, best_count = c;
      if (best_count < min_freq) break;
      const std::string joined = tokens[best.first] + tokens[best.second];
      merges.push_back(tokens[best.first] + " " + tokens[best.second]);
      int id = -1;
      for (size_t t = 0; t < tokens.size(); ++t)
        if (tokens[t] == joined) id = int(t);
      if (id < 0) {
        id = int(tokens.size());
        tokens.push_back(joined);
      }
      for (auto& [w, ids] : words) {
        std::vector<int> out;
        for (size_t j = 0; j < ids.size();) {
          if (j + 1 < ids.size() && ids[j] == best.first && ids[j + 1] == best.second) {
            out.push_back(id);
            j += 2;
          } else {
            out.push_back(ids[j++]);
          }
        }
        ids = out;
      }
    }
  }
};

std::unique_ptr<Tokenizer> load(const BpeVocab& v, std::shared_ptr<GgufFile>* keep) {
  const std::string path = test::temp_dir() + "/tok.gguf";
  v.write_gguf(path);
  *keep = GgufFile::open(path);
  return Tokenizer::from_gguf(**keep);
}

TEST(BpeTrain, MergesMatchNaiveReference) {
  const auto lines = synthetic_lines(7, 3000);
  BpeTrainOptions opt;
  opt.vocab_size = 256 + 2 + 300;
  BpeTrainer trainer(opt);
  for (const auto& l : lines) trainer.add_text(l);
  const BpeVocab v = trainer.train();

  NaiveBpe ref;
  ref.train(lines, opt.vocab_size - 2, opt.min_frequency);
  ASSERT_GT(ref.merges.size(), 100u);
  EXPECT_EQ(v.merges, ref.merges);
  ASSERT_EQ(v.tokens.size(), ref.tokens.size() + 2);
  // The reference spells only the bytes it meets (letters, space); merged tokens all.
  for (size_t i = 'a'; i <= 'z'; ++i) ASSERT_EQ(v.tokens[i], ref.tokens[i]) << "token " << i;
  EXPECT_EQ(v.tokens[' '], "\xC4\xA0");
  for (size_t i = 256; i < ref.tokens.size(); ++i) ASSERT_EQ(v.tokens[i], ref.tokens[i]) << "token " << i;
}

TEST(BpeTrain, FirstMergeIsTheMostFrequentPair) {
  // Words "abab", " abab", " xyz" (gpt-2 splits before spaces). Pairs per line: a-b 4,
  // b-a 2, and 1 for Ġ-a, Ġ-x, x-y, y-z: "a b" first. Then "ab ab" (2 per line) beats
  // Ġ-ab and the rest (1 each).
  std::vector<std::string> lines(50, "abab abab xyz");
  BpeTrainer trainer({.vocab_size = 300});
  for (const auto& l : lines) trainer.add_text(l);
  EXPECT_EQ(trainer.total_words(), 150);
  EXPECT_EQ(trainer.distinct_words(), 3u);
  const BpeVocab v = trainer.train();
  ASSERT_GE(v.merges.size(), 2u);
  EXPECT_EQ(v.merges[0], "a b");
  EXPECT_EQ(v.merges[1], "ab ab");
  EXPECT_EQ(v.tokens[256], "ab");
  EXPECT_EQ(v.tokens[257], "abab");
}

TEST(BpeTrain, TokenizerReproducesTrainingSegmentation) {
  const auto lines = synthetic_lines(11, 2000);
  BpeTrainOptions opt;
  opt.vocab_size = 256 + 2 + 200;
  BpeTrainer trainer(opt);
  for (const auto& l : lines) trainer.add_text(l);
  const BpeVocab v = trainer.train();
  NaiveBpe ref;
  ref.train(lines, opt.vocab_size - 2, opt.min_frequency);

  std::shared_ptr<GgufFile> keep;
  auto tok = load(v, &keep);
  EXPECT_EQ(tok->kind(), Tokenizer::Kind::kBpe);
  EXPECT_EQ(tok->pre(), "gpt-2");
  EXPECT_EQ(tok->n_vocab(), int32_t(v.tokens.size()));
  for (const auto& [word, ids] : ref.words) {
    const std::vector<int32_t> got = tok->encode(word, false);
    ASSERT_EQ(got, std::vector<int32_t>(ids.begin(), ids.end())) << "word '" << word << "'";
  }
  // Whole lines too (words are independent).
  for (size_t i = 0; i < 50; ++i) EXPECT_EQ(tok->decode(tok->encode(lines[i], false)), lines[i]);
}

TEST(BpeTrain, SpecialTokensAndMetadata) {
  BpeTrainOptions opt;
  opt.vocab_size = 270;
  BpeTrainer trainer(opt);
  trainer.add_text("hello hello hello world world");
  const BpeVocab v = trainer.train();
  std::shared_ptr<GgufFile> keep;
  auto tok = load(v, &keep);
  EXPECT_EQ(keep->get_str("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(keep->get_strs("tokenizer.ggml.merges").size(), v.merges.size());
  EXPECT_EQ(tok->piece(tok->bos()), "<|startoftext|>");
  EXPECT_EQ(tok->piece(tok->eos()), "<|endoftext|>");
  EXPECT_EQ(tok->type(tok->bos()), TokenType::kControl);
  EXPECT_TRUE(tok->is_eog(tok->eos()));
  EXPECT_TRUE(tok->add_bos());
  const auto ids = tok->encode("hello world", true);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids[0], tok->bos());
  EXPECT_EQ(tok->decode(ids), "hello world");
  // The special tokens' text is plain text unless parsed as special.
  EXPECT_EQ(tok->decode(tok->encode("a <|endoftext|> b", false)), "a <|endoftext|> b");
  EXPECT_NE(tok->encode("<|endoftext|>", false).size(), 1u);
  // The corpus is too small for 270 tokens: training stops when no pair repeats.
  EXPECT_LT(v.tokens.size(), 270u);
}

TEST(BpeTrain, HeldOutRoundTripOnRealText) {
  BRAID_REQUIRE_ASSET(corpus, "corpus/tinystories_val_subset.txt");
  const std::string text = read_file(corpus);
  const size_t cut = text.rfind("\n\n", text.size() * 4 / 5);
  ASSERT_NE(cut, std::string::npos);
  BpeTrainOptions opt;
  opt.vocab_size = 1024;
  BpeTrainer trainer(opt);
  trainer.add_text(std::string_view(text).substr(0, cut));
  const BpeVocab v = trainer.train();
  ASSERT_EQ(v.tokens.size(), 1024u);
  std::shared_ptr<GgufFile> keep;
  auto tok = load(v, &keep);
  const std::string held_out = text.substr(cut);
  const auto ids = tok->encode(held_out, false);
  EXPECT_EQ(tok->decode(ids), held_out);
  // A 1k vocabulary on simple English: well over 3 bytes per token.
  EXPECT_GT(double(held_out.size()) / double(ids.size()), 3.0);
  // Text unlike the corpus still round-trips byte for byte (byte-level fallback).
  const std::vector<std::string> odd = {"Zürich — 東京 🚀 \t\r\n  x", "1234567890 !!?? ''s 've",
                                        std::string("\x01\x7f", 2)};
  for (const std::string& s : odd) EXPECT_EQ(tok->decode(tok->encode(s, false)), s);
}

TEST(BpeTrain, FewMegabytesInSeconds) {
  BRAID_REQUIRE_ASSET(corpus, "corpus/tinystories_val_subset.txt");
  const std::string text = read_file(corpus);
  const auto start = std::chrono::steady_clock::now();
  BpeTrainOptions opt;
  opt.vocab_size = 4096;
  BpeTrainer trainer(opt);
  // 4 copies with a twist each, ~3 MB: as many words to count, more distinct ones.
  for (int copy = 0; copy < 4; ++copy) {
    std::string t = text;
    for (size_t i = 0; i < t.size(); i += 97)
      if (t[i] >= 'a' && t[i] <= 'z') t[i] = char('a' + (t[i] - 'a' + copy) % 26);
    trainer.add_text(t);
  }
  const BpeVocab v = trainer.train();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  EXPECT_EQ(v.tokens.size(), 4096u);
  EXPECT_LT(s, 60.0) << "BPE training of ~3 MB took " << s << " s";
  std::printf("4096-token vocabulary from %.1f MB in %.2f s\n", 4.0 * double(text.size()) / 1e6, s);
}

TEST(BpeTrain, Errors) {
  auto error_of = [](auto&& fn) -> std::string {
    try {
      fn();
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_NE(error_of([] { BpeTrainer t({.vocab_size = 100}); }).find("vocabulary size 100 is too small"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              BpeTrainer t({.vocab_size = 1000, .pre = "nonsense"});
            }).find("unknown pre-tokenizer 'nonsense'"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              BpeTrainer t({});
              t.add_text("ok \xff bad", "corpus.txt");
            }).find("corpus.txt is not valid UTF-8 (byte 3)"),
            std::string::npos);
  EXPECT_NE(error_of([] { BpeTrainer({}).train(); }).find("no text"), std::string::npos);
  // 258 is the least: 256 bytes and the two special tokens, no merges.
  BpeTrainer smallest({.vocab_size = 258});
  smallest.add_text("aaaa bbbb");
  EXPECT_EQ(smallest.train().tokens.size(), 258u);
}

TEST(BpeTrain, LlamaBpePreTokenizer) {
  BRAID_REQUIRE_ASSET(corpus, "corpus/tinystories_val_subset.txt");
  const std::string text = read_file(corpus).substr(0, 200000);
  BpeTrainer trainer({.vocab_size = 600, .pre = "llama-bpe"});
  trainer.add_text(text);
  const BpeVocab v = trainer.train();
  std::shared_ptr<GgufFile> keep;
  auto tok = load(v, &keep);
  EXPECT_EQ(tok->pre(), "llama-bpe");
  const std::string s = "Once upon a time, 12345 cats said \"hi!\"\n\nThe end.";
  EXPECT_EQ(tok->decode(tok->encode(s, false)), s);
}

}  // namespace
}  // namespace braid
