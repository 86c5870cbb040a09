// `braid train-tokenizer -f FILES... --vocab-size N -o tok.gguf`: a byte-level BPE
// vocabulary trained on a corpus, written as a tokenizer-only GGUF that `braid tokenize`
// and `braid train --tokenizer` read (see include/braid/bpe_train.h).
#include <cstdio>
#include <memory>
#include <string>

#include "braid/bpe_train.h"
#include "braid/error.h"
#include "cli/cli_util.h"
#include "cli/command.h"
#include "cli/train_common.h"

namespace braid::cli {
namespace {

struct TrainTokenizerArgs {
  CorpusArgs corpus;
  BpeTrainOptions bpe;
  std::string out;
  std::string name = "braid-bpe";
};

void train_tokenizer(TrainTokenizerArgs& a) {
  BpeTrainer check_options(a.bpe);  // bad options fail before the corpus is read
  check_output_path(a.out, "-o");
  const auto docs = read_corpus(a.corpus);
  const BpeVocab v = train_tokenizer_on(docs, a.bpe);
  v.write_gguf(a.out, a.name);
  std::printf("wrote %s: %zu tokens (%zu merges, pre-tokenizer %s) from %zu documents\n", a.out.c_str(),
              v.tokens.size(), v.merges.size(), v.pre.c_str(), docs.size());
}

Command reg("train-tokenizer", "Train a byte-level BPE tokenizer on text files", [](CLI::App& app) {
  auto a = std::make_shared<TrainTokenizerArgs>();
  app.add_option("-f,--files", a->corpus.paths, "Text files or folders to train on")->required();
  add_corpus_options(app, a->corpus);
  app.add_option("--vocab-size", a->bpe.vocab_size, "Vocabulary size, special tokens included")
      ->capture_default_str();
  app.add_option("--pre", a->bpe.pre, "Pre-tokenizer (tokenizer.ggml.pre): gpt-2, llama-bpe, ...")
      ->capture_default_str();
  app.add_option("--min-frequency", a->bpe.min_frequency, "Merge only pairs seen at least this often")
      ->capture_default_str();
  app.add_option("--name", a->name, "general.name of the file")->capture_default_str();
  app.add_option("-o,--output", a->out, "Output GGUF file")->required();
  app.callback([a] { train_tokenizer(*a); });
});

}  // namespace
}  // namespace braid::cli
