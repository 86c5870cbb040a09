// convert_to_gguf: detect the source, run its converter, write the file.
#include "braid/convert.h"

#include <cctype>
#include <cstring>
#include <filesystem>

#include "braid/error.h"
#include "braid/mapped_file.h"
#include "convert/builder.h"
#include "convert/converters.h"

namespace braid {
namespace {

namespace fs = std::filesystem;

// Explains sources that are none of the three kinds but are easy to mistake for one.
std::string misfit_hint(const uint8_t* data, size_t size) {
  if (size == 0) return " (the file is empty)";
  if (size >= 4 && std::memcmp(data, "GGUF", 4) == 0) return " (it is already a GGUF file)";
  if (size >= 9 && data[8] == '{')
    return " (it looks like a safetensors file: pass the folder holding it and config.json)";
  return "";
}

}  // namespace

const char* source_kind_name(SourceKind k) {
  switch (k) {
    case SourceKind::kHfFolder:
      return "Hugging Face folder";
    case SourceKind::kLlama2c:
      return "llama2.c checkpoint";
    case SourceKind::kTokenizerJson:
      return "tokenizer.json";
  }
  return "?";
}

SourceKind detect_source(const std::string& path) {
  std::error_code ec;
  fs::file_status st = fs::status(path, ec);
  if (ec || !fs::exists(st)) fail(path, ": no such file or directory");
  if (fs::is_directory(st)) {
    if (fs::exists(fs::path(path) / "adapter_config.json") && !fs::exists(fs::path(path) / "config.json"))
      fail(path, ": this is an adapter (adapter_config.json), not a model: convert the base model");
    if (!fs::exists(fs::path(path) / "config.json"))
      fail(path, ": folder has no config.json (not a Hugging Face model folder)");
    return SourceKind::kHfFolder;
  }
  if (convert::starts_like_json(path)) return SourceKind::kTokenizerJson;
  std::shared_ptr<MappedFile> f = MappedFile::open(path);
  const uint8_t* d = f->data();
  const size_t n = f->size();
  if (convert::looks_like_llama2c(d, n)) return SourceKind::kLlama2c;
  fail(path, ": not a Hugging Face folder, tokenizer.json or llama2.c checkpoint", misfit_hint(d, n));
}

ConvertResult convert_to_gguf(const std::string& src, const std::string& out, const ConvertOptions& opt) {
  if (opt.type != DType::F32 && opt.type != DType::F16 && opt.type != DType::BF16)
    fail("cannot convert to ", dtype_name(opt.type),
         ": convert writes f32, f16 or bf16 (quantize afterwards)");
  ConvertResult r;
  r.kind = detect_source(src);
  std::error_code ec;
  if (fs::exists(out, ec) && fs::equivalent(src, out, ec))
    fail(out, ": the output would overwrite the source");
  const fs::path out_dir = fs::absolute(fs::path(out)).parent_path();
  if (!fs::is_directory(out_dir, ec)) fail(out, ": folder ", out_dir.string(), " does not exist");
  if (r.kind == SourceKind::kTokenizerJson && fs::path(src).filename() == "config.json")
    fail(src, ": this is a model's config.json: pass the folder that holds it");

  convert::Builder b;
  switch (r.kind) {
    case SourceKind::kHfFolder:
      convert::build_hf(src, opt, b, r);
      break;
    case SourceKind::kLlama2c:
      convert::build_llama2c(src, opt, b, r);
      break;
    case SourceKind::kTokenizerJson:
      b.meta().set("general.name",
                   GgufValue::string(opt.name.empty() ? convert::source_name(src) : opt.name));
      convert::add_hf_tokenizer(src, b.meta());
      r.has_tokenizer = true;
      break;
  }
  b.write(out, opt, r);
  return r;
}

namespace convert {

bool starts_like_json(const std::string& path) {
  std::shared_ptr<MappedFile> f = MappedFile::open(path);
  size_t i = 0;
  while (i < f->size() && std::isspace(f->data()[i])) ++i;
  return i < f->size() && f->data()[i] == '{';
}

std::string source_name(const std::string& path) {
  std::error_code ec;
  fs::path p = fs::weakly_canonical(fs::path(path), ec);
  if (ec) p = fs::absolute(fs::path(path));
  if (!p.has_filename()) p = p.parent_path();  // "dir/" names the folder
  if (fs::is_directory(p, ec)) return p.filename().string();
  std::string stem = p.stem().string();
  // A tokenizer.json is named after its folder ("llama3/tokenizer.json" -> "llama3").
  if (stem == "tokenizer" && !p.parent_path().filename().empty()) return p.parent_path().filename().string();
  return stem;
}

}  // namespace convert
}  // namespace braid
