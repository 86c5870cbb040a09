// What `braid train` and `braid train-tokenizer` share: the corpus options and reading,
// and training a BPE vocabulary on documents.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "braid/bpe_train.h"
#include "braid/tune_data.h"

namespace braid::cli {

struct CorpusArgs {
  std::vector<std::string> paths;
  bool jsonl = false;
  std::string separator;  // plain text: a line equal to this ends a document
};

// --jsonl and --doc-sep (the paths option is the caller's: --data or -f).
void add_corpus_options(CLI::App& app, CorpusArgs& a);

// The documents of the corpus; throws braid::Error for missing files, bad JSONL lines,
// ill-formed UTF-8 or a corpus without text.
std::vector<tune::Document> read_corpus(const CorpusArgs& a);

// Fails unless `path` can be written later: its folder exists and is writable, and an
// existing file there is not a folder. Unlike check_writable, leaves an existing file alone
// (a long run should not destroy the previous result before it has a new one).
void check_output_path(const std::string& path, const char* what);

// A vocabulary trained on the documents (prompts and texts, each on its own, as they are
// tokenized later), with a progress line on stderr.
BpeVocab train_tokenizer_on(const std::vector<tune::Document>& docs, const BpeTrainOptions& opt);

}  // namespace braid::cli
