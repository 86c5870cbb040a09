#include "cli/train_common.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>

#include "braid/error.h"

namespace braid::cli {

void add_corpus_options(CLI::App& app, CorpusArgs& a) {
  app.add_flag(
      "--jsonl", a.jsonl,
      "Data files are JSON Lines: {\"prompt\", \"completion\"} (loss on the completion) or {\"text\"}");
  app.add_option("--doc-sep", a.separator,
                 "Plain text: a line equal to this ends a document (e.g. % for fortune files); "
                 "default: one document per file");
}

std::vector<tune::Document> read_corpus(const CorpusArgs& a) {
  const std::vector<std::string> files = tune::expand_data_paths(a.paths);
  check(!(a.jsonl && !a.separator.empty()), "--doc-sep applies to plain text, not to --jsonl data");
  std::vector<tune::Document> docs =
      a.jsonl ? tune::read_jsonl_documents(files) : tune::read_text_documents(files, a.separator);
  tune::check_not_empty(docs, files);
  return docs;
}

void check_output_path(const std::string& path, const char* what) {
  namespace fs = std::filesystem;
  check(!path.empty(), what, ": empty path");
  std::error_code ec;
  check(!fs::is_directory(path, ec), path, ": is a folder (", what, " must be a file)");
  fs::path dir = fs::absolute(fs::path(path), ec).parent_path();
  check(fs::is_directory(dir, ec), path, ": folder ", dir.string(), " does not exist");
  check(access(dir.c_str(), W_OK) == 0, path, ": folder ", dir.string(), " is not writable");
}

BpeVocab train_tokenizer_on(const std::vector<tune::Document>& docs, const BpeTrainOptions& opt) {
  const auto start = std::chrono::steady_clock::now();
  BpeTrainer trainer(opt);
  for (const tune::Document& d : docs) {
    if (!d.prompt.empty()) trainer.add_text(d.prompt, d.source.c_str());
    trainer.add_text(d.text, d.source.c_str());
  }
  const bool tty = isatty(STDERR_FILENO) != 0;
  std::fprintf(stderr, "braid: training a %d-token BPE vocabulary on %lld words (%zu distinct)\n",
               opt.vocab_size, (long long)trainer.total_words(), trainer.distinct_words());
  BpeVocab v = trainer.train([&](int done, int total) {
    if (tty) std::fprintf(stderr, "\r\033[Kbraid: merges %d/%d", done, total);
  });
  if (tty) std::fputs("\r\033[K", stderr);
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::fprintf(stderr, "braid: tokenizer: %zu tokens, %zu merges (%.1f s)\n", v.tokens.size(),
               v.merges.size(), s);
  if (int(v.tokens.size()) < opt.vocab_size)
    std::fprintf(stderr,
                 "braid: note: stopped at %zu tokens: no pair of tokens occurs %lld times any more "
                 "(the corpus is small for this vocabulary)\n",
                 v.tokens.size(), (long long)opt.min_frequency);
  return v;
}

}  // namespace braid::cli
