// Training data: finding files, reading text and JSONL, the split, tokenization with loss
// masks, packing and batch sampling.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "braid/bpe_train.h"
#include "braid/error.h"
#include "braid/gguf.h"
#include "braid/tokenizer.h"
#include "braid/tune_data.h"
#include "test_util.h"

namespace braid::tune {
namespace {

namespace fs = std::filesystem;

void write(const std::string& path, const std::string& text) {
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path, std::ios::binary) << text;
}

template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

// A small byte-level BPE vocabulary with BOS and EOS, trained here.
class DataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    BpeTrainer t({.vocab_size = 300});
    t.add_text("the quick brown fox jumps over the lazy dog. what is the answer? it is forty two.");
    const std::string path = test::temp_dir() + "/tok.gguf";
    t.train().write_gguf(path);
    gguf_ = GgufFile::open(path);
    tok_ = Tokenizer::from_gguf(*gguf_);
  }
  std::shared_ptr<GgufFile> gguf_;
  std::unique_ptr<Tokenizer> tok_;
};

TEST(Dataset, ExpandPaths) {
  const std::string d = test::temp_dir();
  write(d + "/c/b.txt", "b");
  write(d + "/c/a.txt", "a");
  write(d + "/c/sub/z.txt", "z");
  write(d + "/c/.hidden", "h");
  write(d + "/c/.git/config", "g");
  fs::create_symlink(d + "/c/a.txt", d + "/c/a.u8");
  write(d + "/single.txt", "s");
  const auto files = expand_data_paths({d + "/single.txt", d + "/c"});
  EXPECT_EQ(files, (std::vector<std::string>{d + "/single.txt", d + "/c/a.txt", d + "/c/b.txt",
                                             d + "/c/sub/z.txt"}));
  EXPECT_EQ(error_of([&] { expand_data_paths({d + "/missing.txt"}); }),
            d + "/missing.txt: no such file or folder");
  fs::create_directories(d + "/empty");
  EXPECT_EQ(error_of([&] { expand_data_paths({d + "/empty"}); }), d + "/empty: the folder holds no files");
  EXPECT_EQ(error_of([] { expand_data_paths({}); }), "no data: give at least one file or folder");
}

TEST(Dataset, TextDocumentsSplitAtSeparatorLines) {
  const std::string d = test::temp_dir();
  write(d + "/f", "first\nquote\n%\n\n%\nsecond 100%\n% not a separator\r\n%\r\nthird");
  const auto docs = read_text_documents({d + "/f"}, "%");
  ASSERT_EQ(docs.size(), 3u);
  EXPECT_EQ(docs[0].text, "first\nquote\n");
  EXPECT_EQ(docs[0].source, d + "/f:1");
  EXPECT_EQ(docs[1].text, "second 100%\n% not a separator\r\n");
  EXPECT_EQ(docs[1].source, d + "/f:6");
  EXPECT_EQ(docs[2].text, "third");
  for (const auto& doc : docs) EXPECT_TRUE(doc.prompt.empty());
  // Without a separator: one document per file; blank files are dropped.
  write(d + "/blank", " \n\t\n");
  const auto whole = read_text_documents({d + "/f", d + "/blank"});
  ASSERT_EQ(whole.size(), 1u);
  EXPECT_EQ(whole[0].text.size(), fs::file_size(d + "/f"));
}

TEST(Dataset, EmptyCorpusAndBadUtf8) {
  const std::string d = test::temp_dir();
  write(d + "/blank", "\n%\n  \n");
  const auto docs = read_text_documents({d + "/blank"}, "%");
  EXPECT_TRUE(docs.empty());
  EXPECT_EQ(error_of([&] { check_not_empty(docs, {d + "/blank"}); }), d + "/blank holds no text to train on");
  write(d + "/bin", std::string("ab\xc3\x28", 4));
  EXPECT_EQ(error_of([&] { read_text_documents({d + "/bin"}); }), d + "/bin is not valid UTF-8 (byte 2)");
}

TEST(Dataset, JsonlRecordsAndErrors) {
  const std::string d = test::temp_dir();
  write(d + "/ok.jsonl",
        "{\"prompt\": \"Q: 2+2?\\n\", \"completion\": \"A: 4\", \"id\": 7}\n\n"
        "{\"text\": \"plain \\u00e9\"}\r\n");
  const auto docs = read_jsonl_documents({d + "/ok.jsonl"});
  ASSERT_EQ(docs.size(), 2u);
  EXPECT_EQ(docs[0].prompt, "Q: 2+2?\n");
  EXPECT_EQ(docs[0].text, "A: 4");
  EXPECT_EQ(docs[0].source, d + "/ok.jsonl:1");
  EXPECT_EQ(docs[1].prompt, "");
  EXPECT_EQ(docs[1].text, "plain \xc3\xa9");
  EXPECT_EQ(docs[1].source, d + "/ok.jsonl:3");

  struct Case {
    std::string line, want;
  };
  const Case cases[] = {
      {"{\"prompt\": \"a\", \"completion\": ", "invalid JSON: "},
      {"[1, 2]", "expected a JSON object, got array"},
      {"{\"prompt\": \"a\"}", "a record with \"prompt\" also needs \"completion\""},
      {"{\"prompt\": 1, \"completion\": \"b\"}", "field \"prompt\" is a number, expected a string"},
      {"{\"other\": \"x\"}", "expected \"prompt\" and \"completion\" (or \"text\") fields"},
  };
  for (const Case& c : cases) {
    write(d + "/bad.jsonl", "{\"text\": \"fine\"}\n\n" + c.line + "\n{\"text\": \"fine\"}\n");
    const std::string err = error_of([&] { read_jsonl_documents({d + "/bad.jsonl"}); });
    EXPECT_EQ(err.rfind(d + "/bad.jsonl:3: " + c.want, 0), 0u) << err;
    EXPECT_EQ(err.find('\n'), std::string::npos) << err;
  }
}

TEST_F(DataTest, TokenizeMasksTheCompletionOnly) {
  const std::vector<Document> docs = {{"what is the answer? ", "it is forty two.", "a"},
                                      {"", "the lazy dog", "b"}};
  const TokenStream s = tokenize_documents(docs, *tok_);
  const auto p = tok_->encode("what is the answer? ", false);
  const auto c = tok_->encode("it is forty two.", false);
  const auto t = tok_->encode("the lazy dog", false);
  std::vector<int32_t> want = {tok_->bos()};
  std::vector<uint8_t> mask = {0};
  for (int32_t id : p) want.push_back(id), mask.push_back(0);
  for (int32_t id : c) want.push_back(id), mask.push_back(1);
  want.push_back(tok_->eos()), mask.push_back(1);
  want.push_back(tok_->bos()), mask.push_back(0);
  for (int32_t id : t) want.push_back(id), mask.push_back(1);
  want.push_back(tok_->eos()), mask.push_back(1);
  EXPECT_EQ(s.tokens, want);
  EXPECT_EQ(s.mask, mask);
  // Threads change nothing.
  ThreadPool pool(3);
  const TokenStream s3 = tokenize_documents(docs, *tok_, &pool);
  EXPECT_EQ(s3.tokens, s.tokens);
  EXPECT_EQ(s3.mask, s.mask);
}

TEST_F(DataTest, PackedBatchesTrainOnCompletionsOnly) {
  std::vector<Document> docs;
  for (int i = 0; i < 9; ++i) docs.push_back({"what is the answer? ", "it is forty two.", ""});
  const TokenStream s = tokenize_documents(docs, *tok_);
  const PackedRows rows = pack_rows(s, 16, tok_->eos());
  // Every target of every batch is a completion token or EOS, and all of them occur.
  std::multiset<int32_t> want, got;
  for (size_t i = 1; i < s.size(); ++i)
    if (s.mask[i]) want.insert(s.tokens[i]);
  std::vector<size_t> all(rows.rows());
  for (size_t r = 0; r < all.size(); ++r) all[r] = r;
  const Batch b = rows.batch(all);
  for (size_t i = 0; i < b.targets.size(); ++i) {
    if (b.targets[i] < 0) continue;
    got.insert(b.targets[i]);
    // The input at i is the token before the target in the stream.
    ASSERT_LT(i % 16, 15u);
    EXPECT_EQ(b.targets[i], b.inputs[i + 1]);
  }
  EXPECT_EQ(got, want);
  EXPECT_EQ(b.count_targets(), rows.targets());
  EXPECT_EQ(int64_t(want.size()), rows.targets());
  // Prompt tokens (those not also in the completion) are never targets, nor is BOS.
  const auto completion = tok_->encode("it is forty two.", false);
  for (int32_t id : tok_->encode("what is the answer? ", false))
    if (std::find(completion.begin(), completion.end(), id) == completion.end()) {
      EXPECT_EQ(got.count(id), 0u) << "prompt token " << id << " is a target";
    }
  EXPECT_EQ(got.count(tok_->bos()), 0u);
  EXPECT_EQ(got.count(tok_->eos()), 9u);
}

TEST(Dataset, PackingCoversTheStreamOnce) {
  TokenStream s;
  for (int i = 0; i < 50; ++i) {
    s.tokens.push_back(100 + i);
    s.mask.push_back(1);
  }
  const PackedRows p = pack_rows(s, 8, -1);
  // 49 targets, 7 per row: 7 rows exactly; row r starts at stream token 7r.
  ASSERT_EQ(p.rows(), 7u);
  for (size_t r = 0; r < 7; ++r) EXPECT_EQ(p.tokens[r * 8], 100 + int32_t(r * 7));
  EXPECT_EQ(p.targets(), 49);
  EXPECT_EQ(p.tokens.back(), 149);
  // One token more: an 8th row holding the last two stream tokens, then padding.
  s.tokens.push_back(150);
  s.mask.push_back(1);
  const PackedRows q = pack_rows(s, 8, -1);
  ASSERT_EQ(q.rows(), 8u);
  EXPECT_EQ(q.tokens[56], 149);
  EXPECT_EQ(q.tokens[57], 150);
  EXPECT_EQ(q.tokens[58], -1);
  EXPECT_EQ(q.mask[58], 0);
  EXPECT_EQ(q.targets(), 50);
  EXPECT_EQ(error_of([&] { pack_rows(s, 1, 0); }), "sequence length must be at least 2 (got 1)");
  EXPECT_EQ(pack_rows(TokenStream{{5}, {1}}, 8, 0).rows(), 0u);
  // Rows with no target are dropped: here the middle row is all prompt.
  TokenStream m;
  for (int i = 0; i < 13; ++i) {
    m.tokens.push_back(i);
    m.mask.push_back(i < 5 || i > 9 ? 1 : 0);
  }
  const PackedRows r = pack_rows(m, 4, -1);  // rows start at 0, 3, 6, 9: 6..9 has no target
  ASSERT_EQ(r.rows(), 3u);
  EXPECT_EQ(r.tokens[0], 0);
  EXPECT_EQ(r.tokens[4], 3);
  EXPECT_EQ(r.tokens[8], 9);
  EXPECT_EQ(r.targets(), 4 + 3);  // tokens 1..4 and 10..12
}

TEST(Dataset, SplitIsDeterministicBySeed) {
  std::vector<Document> docs;
  for (int i = 0; i < 200; ++i) docs.push_back({"", "doc " + std::to_string(i), ""});
  const DocumentSplit a = split_documents(docs, 0.1, 42), b = split_documents(docs, 0.1, 42);
  const DocumentSplit c = split_documents(docs, 0.1, 43);
  ASSERT_EQ(a.val.size(), 20u);
  ASSERT_EQ(a.train.size(), 180u);
  EXPECT_FALSE(a.by_rows);
  auto texts = [](const std::vector<Document>& v) {
    std::vector<std::string> t;
    for (const auto& d : v) t.push_back(d.text);
    return t;
  };
  EXPECT_EQ(texts(a.val), texts(b.val));
  EXPECT_NE(texts(a.val), texts(c.val));
  // Training documents keep their order; nothing is lost or shared.
  std::set<std::string> all;
  for (const auto& t : texts(a.train)) all.insert(t);
  for (const auto& t : texts(a.val)) EXPECT_TRUE(all.insert(t).second);
  EXPECT_EQ(all.size(), 200u);
  EXPECT_TRUE(std::is_sorted(a.train.begin(), a.train.end(), [](const Document& x, const Document& y) {
    return std::stoi(x.text.substr(4)) < std::stoi(y.text.substr(4));
  }));
  // No validation, or too few documents for one: everything trains (rows split later).
  EXPECT_EQ(split_documents(docs, 0.0, 1).train.size(), 200u);
  const DocumentSplit few = split_documents({docs[0], docs[1]}, 0.1, 1);
  EXPECT_TRUE(few.by_rows);
  EXPECT_EQ(few.train.size(), 2u);
  EXPECT_NE(error_of([&] { split_documents(docs, 1.0, 1); }).find("validation fraction"), std::string::npos);
}

TEST(Dataset, SplitRows) {
  TokenStream s;
  for (int i = 0; i < 400; ++i) s.tokens.push_back(i), s.mask.push_back(1);
  PackedRows train = pack_rows(s, 5, 0), val;
  const size_t n = train.rows();
  split_rows(train, val, 0.2, 9);
  EXPECT_EQ(val.rows(), size_t(std::llround(0.2 * double(n))));
  EXPECT_EQ(train.rows() + val.rows(), n);
  PackedRows one = pack_rows(TokenStream{{1, 2, 3}, {1, 1, 1}}, 5, 0), v2;
  EXPECT_NE(error_of([&] { split_rows(one, v2, 0.1, 1); }).find("too little data for a validation split"),
            std::string::npos);
}

TEST(Dataset, SamplerVisitsEveryRowEachEpoch) {
  TokenStream s;
  for (int i = 0; i < 10 * 7 + 1; ++i) s.tokens.push_back(i), s.mask.push_back(1);
  const PackedRows rows = pack_rows(s, 8, 0);  // 10 rows, row r starts with 7r
  ASSERT_EQ(rows.rows(), 10u);
  BatchSampler sampler(rows, 3, 5);
  std::vector<int> seen;
  for (int64_t i = 0; i < 10; ++i) {  // 30 rows: exactly 3 epochs
    const Batch b = sampler.batch(i);
    ASSERT_EQ(b.B, 3);
    for (int r = 0; r < 3; ++r) seen.push_back(b.inputs[size_t(r) * 8] / 7);
  }
  for (int e = 0; e < 3; ++e) {
    std::set<int> epoch(seen.begin() + e * 10, seen.begin() + e * 10 + 10);
    EXPECT_EQ(epoch.size(), 10u) << "epoch " << e;
  }
  EXPECT_NE(std::vector<int>(seen.begin(), seen.begin() + 10),
            std::vector<int>(seen.begin() + 10, seen.begin() + 20));
  // batch(i) depends on i alone: a fresh sampler asked out of order agrees.
  BatchSampler again(rows, 3, 5);
  EXPECT_EQ(again.batch(7).inputs, sampler.batch(7).inputs);
  EXPECT_EQ(again.batch(2).inputs, sampler.batch(2).inputs);
  BatchSampler other(rows, 3, 6);
  EXPECT_NE(other.batch(0).inputs, again.batch(0).inputs);
  EXPECT_DOUBLE_EQ(sampler.epoch_at(5), 1.5);
}

}  // namespace
}  // namespace braid::tune
