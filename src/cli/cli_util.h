// Helpers the model-running subcommands share: the common flags, loading a model with a
// one-line error, reading prompts and token lists, writing result files.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace braid {
class GgufFile;
class Model;
class Tokenizer;
}  // namespace braid

namespace braid::cli {

// -m/--model PATH (required).
void add_model_option(CLI::App& app, std::string& path);
// -t/--threads N, defaulting to the machine's physical cores; validated to be >= 1.
void add_threads_option(CLI::App& app, int& threads);

// Loads a GGUF model, turning a missing path or a directory into a clear error before
// the parser sees it. Everything else (truncated, corrupt, unsupported) is Model::load's
// one-line braid::Error.
std::shared_ptr<const Model> load_model(const std::string& path);
// Opens a GGUF file (a model, or a vocabulary-only file) with the same checks.
std::shared_ptr<const GgufFile> open_gguf(const std::string& path);
// The tokenizer in a GGUF file's metadata; errors name the file.
std::unique_ptr<Tokenizer> load_tokenizer(const GgufFile& gguf);

// Fails unless path can be created or replaced, so a long run does not end with a
// write error. (Leaves an empty file behind.)
void check_writable(const std::string& path);

// "1,17,42" or "1 17 42" (commas and/or whitespace) -> ids. Every id must be an integer
// in [0, n_vocab); throws braid::Error naming the first bad entry.
std::vector<int32_t> parse_token_list(const std::string& text, int n_vocab);

// Writes bytes to path (replacing it); throws braid::Error naming the path on failure.
void write_file(const std::string& path, const void* data, size_t size);

}  // namespace braid::cli
