// `braid tokenize`: the token ids a model's tokenizer gives a text, space-separated on
// one line. Works on vocabulary-only GGUF files too.
#include <cstdio>
#include <string>

#include "braid/error.h"
#include "braid/gguf.h"
#include "braid/mapped_file.h"
#include "braid/tokenizer.h"
#include "cli/cli_util.h"
#include "cli/command.h"

namespace braid::cli {
namespace {

struct TokenizeArgs {
  std::string model, prompt, file;
  bool no_bos = false;
  bool parse_special = false;
  bool pieces = false;
};

void tokenize(const TokenizeArgs& a, const CLI::App& app) {
  const size_t n_sources = app.count("--prompt") + app.count("--file");
  check(n_sources == 1, n_sources == 0 ? "no text: give -p TEXT or -f FILE" : "give -p or -f, not both");
  const std::string text = app.count("--file") ? read_file(a.file) : a.prompt;
  validate_utf8(text, app.count("--file") ? "text" : "prompt");
  auto gguf = open_gguf(a.model);
  auto tok = load_tokenizer(*gguf);
  const auto ids = tok->encode(text, !a.no_bos && tok->add_bos(), a.parse_special);
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) out += ' ';
    out += std::to_string(ids[i]);
    if (a.pieces) out += ":" + tok->piece(ids[i]);
  }
  out += '\n';
  std::fwrite(out.data(), 1, out.size(), stdout);
}

Command reg("tokenize", "Print the token ids of a text", [](CLI::App& app) {
  auto a = std::make_shared<TokenizeArgs>();
  add_model_option(app, a->model);
  app.add_option("-p,--prompt", a->prompt, "Text to tokenize");
  app.add_option("-f,--file", a->file, "Read the text from a file");
  app.add_flag("--no-bos", a->no_bos, "Do not add BOS (added by default when the model wants it)");
  app.add_flag("--special", a->parse_special, "Match control tokens written in the text, e.g. <|eot_id|>");
  app.add_flag("--pieces", a->pieces, "Print id:piece instead of bare ids");
  app.callback([a, &app] { tokenize(*a, app); });
});

}  // namespace
}  // namespace braid::cli
