// tokenizer.json (+ tokenizer_config.json) -> tokenizer.ggml.* metadata, through the
// text module's importer.
#include <filesystem>

#include "braid/error.h"
#include "braid/mapped_file.h"
#include "braid/tokenizer.h"
#include "convert/converters.h"

namespace braid::convert {

void add_hf_tokenizer(const std::string& path, GgufWriter& w, const std::string& config_json_text) {
  namespace fs = std::filesystem;
  const std::string text = read_file(path);
  const fs::path config = fs::path(path).parent_path() / "tokenizer_config.json";
  const std::string config_text = fs::exists(config) ? read_file(config.string()) : std::string();
  try {
    tokenizer_json_to_gguf(text, w, config_text, config_json_text);
  } catch (const Error& e) {
    // The importer names the file "tokenizer.json"; name the one the user gave.
    std::string msg = e.what();
    const std::string generic = "tokenizer.json: ";
    if (msg.rfind(generic, 0) == 0) msg = msg.substr(generic.size());
    fail(path, ": ", msg);
  }
}

}  // namespace braid::convert
