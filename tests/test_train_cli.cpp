// `braid train` and `braid train-tokenizer` end to end, and the export they rely on:
//   - export: logits of the exported GGUF through braid::Model equal TrainPass's (Q/K
//     permutation, metadata, tied heads, GQA, GPT-2), and import_gguf inverts export;
//   - a tiny run from scratch whose loss falls and whose output `braid run` runs;
//   - checkpoint resume giving the same model, bit for bit, as an uninterrupted run;
//   - fine-tuning from a GGUF on JSONL and from a Hugging Face folder;
//   - bad input: one error line each.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "braid/error.h"
#include "braid/gguf.h"
#include "braid/kv_cache.h"
#include "braid/mapped_file.h"
#include "braid/model.h"
#include "braid/tokenizer.h"
#include "braid/train.h"
#include "braid/tune_export.h"
#include "braid/tune_rng.h"
#include "test_util.h"

namespace braid {
namespace {

// The CLI with a generous time limit: the machines that run the tests may be busy.
test::CommandResult run_braid(const std::vector<std::string>& args) { return test::run_braid(args, "", 600); }
namespace fs = std::filesystem;

void write(const std::string& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// Simple English from templates, "%"-separated like fortune files: a corpus a tiny model
// learns visibly within a few dozen steps.
std::string corpus(uint64_t seed, int n_docs) {
  const char* subjects[] = {"the cat", "the dog", "a bird", "my friend", "the old man", "a little girl"};
  const char* verbs[] = {"sat on", "looked at", "ran to", "liked", "found", "walked past"};
  const char* objects[] = {"the mat", "the red ball", "a tree", "the house", "the river", "a big box"};
  tune::Rng rng(seed);
  std::string out;
  for (int d = 0; d < n_docs; ++d) {
    const int sentences = 1 + int(rng.below(3));
    for (int s = 0; s < sentences; ++s) {
      std::string line =
          cat(subjects[rng.below(6)], " ", verbs[rng.below(6)], " ", objects[rng.below(6)], ".");
      line[0] = char(std::toupper(line[0]));
      out += line + (s + 1 < sentences ? " " : "\n");
    }
    out += "%\n";
  }
  return out;
}

std::vector<nlohmann::json> read_metrics(const std::string& path) {
  std::vector<nlohmann::json> out;
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) out.push_back(nlohmann::json::parse(line));
  return out;
}

// The losses of the steps (not the evaluations) in a metrics file.
std::vector<double> step_losses(const std::vector<nlohmann::json>& m) {
  std::vector<double> out;
  for (const auto& j : m)
    if (j.contains("loss")) out.push_back(j["loss"].get<double>());
  return out;
}

double mean(const std::vector<double>& v, size_t begin, size_t end) {
  double s = 0;
  for (size_t i = begin; i < end; ++i) s += v[i];
  return s / double(end - begin);
}

// The last line of the output that starts with `prefix`.
std::string line_with(const std::string& text, const std::string& prefix) {
  std::istringstream in(text);
  std::string line, found;
  while (std::getline(in, line))
    if (line.rfind(prefix, 0) == 0) found = line;
  return found;
}

// ---- Export ----

// Exports `m`, runs the GGUF through braid::Model and TrainPass on the same tokens.
void check_export(const tune::TrainModel& m, const std::string& label) {
  const tune::ModelConfig& c = m.config();
  const int T = std::min(20, c.max_seq);
  std::vector<int32_t> tokens;
  tune::Rng rng(3);
  for (int i = 0; i < T; ++i) tokens.push_back(int32_t(rng.below(uint64_t(c.vocab))));

  tune::TrainPass pass(c, 1, T);
  pass.forward(m, tune::Batch::causal_lm(tokens, 1, T));
  const std::vector<float> want(pass.logits(), pass.logits() + size_t(T) * c.vocab);

  const std::string path = test::temp_dir() + "/export.gguf";
  tune::export_gguf(m, nullptr, path);
  auto model = Model::load(path);
  ASSERT_EQ(model->config().n_vocab, c.vocab);
  ThreadPool pool(2);
  KVCache kv(model->config(), 0, model->config().n_layers, T);
  const std::vector<float> got = model->forward(tokens.data(), T, 0, kv, pool, true);
  ASSERT_EQ(got.size(), want.size());
  double worst = 0, spread = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    worst = std::max(worst, std::fabs(double(got[i]) - want[i]));
    spread = std::max(spread, std::fabs(double(want[i])));
  }
  EXPECT_LT(worst, 1e-4) << label << ": max logit difference";
  EXPECT_GT(spread, 0.5) << label << ": logits too flat for the comparison to mean much";

  // import_gguf is the exact inverse for f32 files.
  const tune::TrainModel back = tune::import_gguf(model->gguf());
  EXPECT_EQ(back.config().to_json(), c.to_json()) << label;
  EXPECT_EQ(back.params(), m.params()) << label;

  // f16 weights: close, not equal.
  const std::string half = test::temp_dir() + "/export16.gguf";
  tune::export_gguf(m, nullptr, half, {.type = DType::F16});
  auto model16 = Model::load(half);
  EXPECT_EQ(model16->token_embd().type, DType::F16);
  KVCache kv16(model16->config(), 0, model16->config().n_layers, T);
  const std::vector<float> got16 = model16->forward(tokens.data(), T, 0, kv16, pool, true);
  double worst16 = 0;
  for (size_t i = 0; i < got16.size(); ++i)
    worst16 = std::max(worst16, std::fabs(double(got16[i]) - want[i]));
  EXPECT_LT(worst16, 0.05) << label << ": f16 export";
}

tune::ModelConfig llama_config() {
  tune::ModelConfig c;
  c.arch = tune::Arch::kLlama;
  c.n_layer = 2;
  c.dim = 48;
  c.n_head = 6;
  c.n_kv_head = 2;  // grouped-query attention: the permutation uses each tensor's own heads
  c.head_dim = 8;
  c.ffn_dim = 96;
  c.vocab = 97;
  c.max_seq = 32;
  c.rope_theta = 500.0;  // fast rotations: a wrong pairing would show
  return c;
}

TEST(TrainExport, LlamaLogitsMatchTrainPass) {
  check_export(tune::TrainModel::random(llama_config(), 1, 0.3f), "llama gqa");
}

TEST(TrainExport, LlamaWideHeadsTiedEmbeddings) {
  tune::ModelConfig c = llama_config();
  c.dim = 32;
  c.n_head = 4;
  c.n_kv_head = 4;
  c.head_dim = 16;  // q width 64 != dim: written as attention.key_length
  c.tied_head = true;
  check_export(tune::TrainModel::random(c, 2, 0.3f), "llama tied, head_dim 16");
}

TEST(TrainExport, Gpt2) {
  tune::ModelConfig c;
  c.arch = tune::Arch::kGpt2;
  c.n_layer = 2;
  c.dim = 32;
  c.n_head = 4;
  c.n_kv_head = 4;
  c.head_dim = 8;
  c.ffn_dim = 128;
  c.vocab = 97;
  c.max_seq = 32;
  c.tied_head = true;
  tune::TrainModel m = tune::TrainModel::random(c, 3, 0.3f);
  // Random biases and norm weights, so their placement is checked too.
  tune::Rng rng(9);
  for (const tune::ParamTensor& t : m.tensors())
    if (t.shape.size() == 1)
      for (size_t i = 0; i < t.size; ++i) m.params()[t.offset + i] += float(rng.normal() * 0.2);
  check_export(m, "gpt2");
}

TEST(TrainExport, HuggingFaceLlamaTiny) {
  BRAID_REQUIRE_ASSET(dir, "hf/llama-tiny");
  check_export(tune::TrainModel::load_hf(dir), "hf/llama-tiny");
}

TEST(TrainExport, CopiesTokenizerAndChecksItsSize) {
  BRAID_REQUIRE_ASSET(vocab, "vocab/ggml-vocab-gpt-2.gguf");
  auto tok = GgufFile::open(vocab);
  tune::ModelConfig c = llama_config();
  const std::string path = test::temp_dir() + "/m.gguf";
  try {
    tune::export_gguf(tune::TrainModel(c), tok.get(), path);
    FAIL() << "no error for a tokenizer larger than the model";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("more than the model's vocabulary of 97"), std::string::npos)
        << e.what();
  }
  c.vocab = int(tok->get_strs("tokenizer.ggml.tokens").size());
  tune::export_gguf(tune::TrainModel::random(c, 1), tok.get(), path);
  auto out = GgufFile::open(path);
  EXPECT_EQ(out->get_strs("tokenizer.ggml.merges"), tok->get_strs("tokenizer.ggml.merges"));
  EXPECT_EQ(Tokenizer::from_gguf(*out)->encode("Hello world", false),
            Tokenizer::from_gguf(*tok)->encode("Hello world", false));
}

// ---- The CLI ----

class TrainCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::temp_dir();
    data_ = dir_ + "/corpus.txt";
    write(data_, corpus(1, 400));
  }
  // A small, fast run: flags in `change` replace the defaults' values or are added
  // (a flag with an empty value is added bare).
  std::vector<std::string> train_args(const std::string& out,
                                      std::vector<std::pair<std::string, std::string>> change = {}) {
    std::vector<std::pair<std::string, std::string>> flags = {
        {"--data", data_}, {"--doc-sep", "%"}, {"--vocab-size", "300"}, {"--preset", "tiny"},
        {"--steps", "40"}, {"--batch", "4"},   {"--seq", "48"},         {"--lr", "3e-3"},
        {"-t", "1"},       {"-o", out}};
    for (const auto& [flag, value] : change) {
      auto it = std::find_if(flags.begin(), flags.end(), [&](const auto& f) { return f.first == flag; });
      if (it != flags.end())
        it->second = value;
      else
        flags.emplace_back(flag, value);
    }
    std::vector<std::string> a = {"train"};
    for (const auto& [flag, value] : flags) {
      a.push_back(flag);
      if (!value.empty()) a.push_back(value);
    }
    return a;
  }
  std::string dir_, data_;
};

TEST_F(TrainCli, TrainTokenizer) {
  const std::string tok = dir_ + "/tok.gguf";
  auto r = run_braid({"train-tokenizer", "-f", data_, "--doc-sep", "%", "--vocab-size", "300", "-o", tok});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("wrote " + tok + ": 300 tokens"), std::string::npos) << r.out;
  auto g = GgufFile::open(tok);
  auto t = Tokenizer::from_gguf(*g);
  EXPECT_EQ(t->n_vocab(), 300);
  EXPECT_EQ(t->decode(t->encode("The cat sat on the mat.", false)), "The cat sat on the mat.");
  // The separator lines are not part of the text it learned from.
  EXPECT_EQ(t->find("%"), '%');  // just the byte token
  EXPECT_EQ(t->find("%\xC4\x8A"), -1);
  r = run_braid({"tokenize", "-m", tok, "-p", "the cat", "--pieces"});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out.rfind("298:<|startoftext|> ", 0), 0u) << r.out;  // BOS, then the text
}

TEST_F(TrainCli, FromScratchLossFallsAndRunGenerates) {
  const std::string out = dir_ + "/m.gguf", metrics = dir_ + "/m.jsonl";
  auto r = run_braid(train_args(out, {{"--metrics", metrics}, {"--log-every", "10"}}));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  // Progress: periodic lines (stderr is not a terminal here), the final report on stdout.
  EXPECT_NE(r.err.find("braid: step 10/40 (25%) | loss "), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("braid: step 40/40 (100%)"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find(" tok/s | "), std::string::npos) << r.err;
  EXPECT_NE(line_with(r.out, "trained steps 1-40 of 40"), "") << r.out;
  EXPECT_NE(line_with(r.out, "validation loss "), "") << r.out;
  EXPECT_NE(line_with(r.out, "wrote " + out + ": llama, 2 layers, dim 64"), "") << r.out;

  const auto m = read_metrics(metrics);
  const auto losses = step_losses(m);
  ASSERT_EQ(losses.size(), 40u);
  EXPECT_GT(losses[0], 5.0);  // ~ln(300) at the start
  EXPECT_LT(mean(losses, 30, 40), mean(losses, 0, 5) - 1.5) << "the loss did not fall";
  std::vector<double> vals;
  for (const auto& j : m)
    if (j.contains("val_loss")) vals.push_back(j["val_loss"].get<double>());
  ASSERT_GE(vals.size(), 2u);
  EXPECT_LT(vals.back(), vals.front());

  auto run =
      run_braid({"run", "-m", out, "-p", "The cat", "-n", "12", "--temp", "0", "--ignore-eos", "-t", "1"});
  ASSERT_EQ(run.exit_code, 0) << run.err;
  EXPECT_NE(run.err.find("generated: 12 tokens"), std::string::npos) << run.err;
  EXPECT_FALSE(run.out.empty());
}

TEST_F(TrainCli, ResumeEqualsUninterruptedRun) {
  const std::string a = dir_ + "/a.gguf", b = dir_ + "/b.gguf";
  const std::string ca = dir_ + "/a.ckpt", cb = dir_ + "/b.ckpt";
  auto whole =
      run_braid(train_args(a, {{"--steps", "12"}, {"--checkpoint", ca}, {"--accum", "2"}, {"--name", "m"}}));
  ASSERT_EQ(whole.exit_code, 0) << whole.err;
  auto first = run_braid(train_args(b, {{"--steps", "12"},
                                        {"--checkpoint", cb},
                                        {"--accum", "2"},
                                        {"--name", "m"},
                                        {"--stop-after", "5"},
                                        {"-t", "2"}}));
  ASSERT_EQ(first.exit_code, 0) << first.err;
  EXPECT_NE(first.out.find("stopped after step 5 of 12"), std::string::npos) << first.out;
  EXPECT_FALSE(fs::exists(b));
  auto rest = run_braid(train_args(
      b,
      {{"--steps", "12"}, {"--checkpoint", cb}, {"--accum", "2"}, {"--name", "m"}, {"--save-every", "3"}}));
  ASSERT_EQ(rest.exit_code, 0) << rest.err;
  EXPECT_NE(rest.err.find("resuming from " + cb + " at step 5"), std::string::npos) << rest.err;
  EXPECT_NE(line_with(rest.out, "trained steps 6-12 of 12"), "") << rest.out;

  // Same last step loss, same validation loss, the same file byte for byte (the first
  // part ran on 2 threads, the rest and the uninterrupted run on 1).
  const std::string last_a = line_with(whole.out, "train loss");
  const std::string last_b = line_with(rest.out, "train loss");
  ASSERT_NE(last_a.find("last step "), std::string::npos);
  EXPECT_EQ(last_a.substr(last_a.find("last step ")), last_b.substr(last_b.find("last step ")));
  EXPECT_EQ(line_with(whole.out, "validation loss"), line_with(rest.out, "validation loss"));
  EXPECT_TRUE(read_file(a) == read_file(b)) << "the models differ";

  // A finished checkpoint just exports again; another run's checkpoint is refused.
  auto again =
      run_braid(train_args(b, {{"--steps", "12"}, {"--checkpoint", cb}, {"--accum", "2"}, {"--name", "m"}}));
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_TRUE(read_file(a) == read_file(b)) << "the models differ";
  auto other = run_braid(train_args(
      b, {{"--steps", "12"}, {"--checkpoint", cb}, {"--accum", "2"}, {"--name", "m"}, {"--seq", "32"}}));
  EXPECT_EQ(other.exit_code, 1);
  EXPECT_NE(other.err.find("braid: error: checkpoint " + cb +
                           " belongs to another run: its --seq was 48, this "
                           "run's is 32"),
            std::string::npos)
      << other.err;
}

TEST_F(TrainCli, FineTuneGgufOnJsonlAndHfFolder) {
  const std::string base = dir_ + "/base.gguf";
  auto r = run_braid(train_args(base, {{"--steps", "10"}}));
  ASSERT_EQ(r.exit_code, 0) << r.err;

  std::string jsonl;
  const char* colors[][2] = {{"sky", "blue"}, {"grass", "green"}, {"sun", "yellow"}, {"snow", "white"}};
  for (int i = 0; i < 40; ++i) {
    const auto& c = colors[i % 4];
    jsonl += cat("{\"prompt\": \"Q: what color is the ", c[0], "?\\nA:\", \"completion\": \" The ", c[0],
                 " is ", c[1], ".\"}\n");
  }
  const std::string qa = dir_ + "/qa.jsonl", tuned = dir_ + "/tuned.gguf", metrics = dir_ + "/ft.jsonl";
  write(qa, jsonl);
  r = run_braid({"train",      "--data", qa,      "--jsonl", "--init",    base,   "--steps", "30",
                 "--batch",    "4",      "--seq", "32",      "--lr",      "3e-3", "-t",      "1",
                 "--val-frac", "0.1",    "-o",    tuned,     "--metrics", metrics});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto losses = step_losses(read_metrics(metrics));
  ASSERT_EQ(losses.size(), 30u);
  EXPECT_LT(mean(losses, 25, 30), mean(losses, 0, 5) - 1.0);
  // The tokenizer came along from the base model.
  auto g = GgufFile::open(tuned);
  EXPECT_EQ(g->get_strs("tokenizer.ggml.tokens"), GgufFile::open(base)->get_strs("tokenizer.ggml.tokens"));
  auto run = run_braid({"run", "-m", tuned, "-p", "Q: what color is the grass?\nA:", "-n", "6", "--temp", "0",
                        "--ignore-eos", "-t", "1"});
  ASSERT_EQ(run.exit_code, 0) << run.err;

  // A Hugging Face folder with a tokenizer of our own (320 ids fit its 320-token vocabulary).
  BRAID_REQUIRE_ASSET(hf, "hf/llama-tiny");
  const std::string tok = dir_ + "/tok.gguf";
  r = run_braid({"train-tokenizer", "-f", data_, "--vocab-size", "300", "-o", tok});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const std::string from_hf = dir_ + "/hf.gguf";
  r = run_braid({"train", "--data", data_, "--doc-sep", "%", "--init", hf, "--tokenizer", tok, "--steps", "3",
                 "--batch", "2", "--seq", "32", "-t", "1", "-o", from_hf});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto m = Model::load(from_hf);
  EXPECT_EQ(m->config().n_vocab, 320);
  EXPECT_EQ(m->config().n_kv_heads, 4);
}

TEST_F(TrainCli, BadInput) {
  const std::string out = dir_ + "/bad.gguf";
  write(dir_ + "/blank.txt", "\n\n");
  write(dir_ + "/bad.jsonl", "{\"prompt\": \"a\", \"completion\": \"b\"}\n{\"prompt\": \"a\"\n");
  struct Case {
    std::vector<std::string> args;
    std::string want;
  };
  const std::vector<Case> cases = {
      {{"train", "--data", dir_ + "/missing.txt", "--vocab-size", "300", "-o", out},
       dir_ + "/missing.txt: no such file or folder"},
      {{"train", "--data", dir_ + "/blank.txt", "--vocab-size", "300", "-o", out},
       dir_ + "/blank.txt holds no text to train on"},
      {{"train", "--data", dir_ + "/bad.jsonl", "--jsonl", "--vocab-size", "300", "-o", out},
       dir_ + "/bad.jsonl:2: invalid JSON: "},
      {{"train", "--data", data_, "--vocab-size", "100", "-o", out}, "vocabulary size 100 is too small"},
      {{"train", "--data", data_, "-o", out}, "no tokenizer: give --tokenizer FILE, or --vocab-size N"},
      {{"train", "--data", data_, "--vocab-size", "300", "--preset", "tiny", "--seq", "512", "--ctx", "256",
        "-o", out},
       "--seq 512 exceeds the model's context of 256 (--ctx)"},
      {{"train", "--data", data_, "--vocab-size", "300", "--preset", "huge", "-o", out},
       "--preset: unknown preset 'huge' (known: tiny, small, base)"},
      {{"train", "--data", data_, "--vocab-size", "300", "--dim", "60", "--heads", "8", "-o", out},
       "--dim 60 is not a multiple of --heads 8"},
      {{"train", "--data", data_, "--vocab-size", "300", "--save-every", "5", "-o", out},
       "--save-every needs --checkpoint FILE"},
      {{"train", "--data", data_, "--vocab-size", "300", "-o", dir_ + "/no/such/dir/m.gguf"},
       "does not exist"},
      {{"train", "--data", data_, "--tokenizer", dir_ + "/none.gguf", "-o", out}, "not found"},
      {{"train", "--data", data_, "--vocab-size", "300", "--lr", "1e9", "--preset", "tiny", "--steps", "3",
        "-o", out},
       "training diverged at step"},
      {{"train-tokenizer", "-f", data_, "--vocab-size", "10", "-o", dir_ + "/t.gguf"},
       "vocabulary size 10 is too small: byte-level BPE needs at least 258 tokens"},
      {{"train-tokenizer", "-f", data_, "--pre", "bogus", "-o", dir_ + "/t.gguf"},
       "unknown pre-tokenizer 'bogus'"},
  };
  for (const Case& c : cases) {
    auto r = run_braid(c.args);
    EXPECT_EQ(r.exit_code, 1) << c.want << "\n" << r.err;
    const std::string err_line = line_with(r.err, "braid: error: ");
    EXPECT_NE(err_line.find(c.want), std::string::npos) << "want: " << c.want << "\nstderr: " << r.err;
    EXPECT_EQ(r.err.find("braid: error: ", r.err.find("braid: error: ") + 1), std::string::npos) << r.err;
  }
  EXPECT_FALSE(fs::exists(out));
}

}  // namespace
}  // namespace braid
