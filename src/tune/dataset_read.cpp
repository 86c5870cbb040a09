// Reading corpora: data paths, plain text documents and JSONL records.
#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string_view>

#include "braid/error.h"
#include "braid/mapped_file.h"
#include "braid/tokenizer.h"
#include "braid/tune_data.h"

namespace braid::tune {
namespace {

namespace fs = std::filesystem;

bool hidden(const fs::path& p) {
  const std::string name = p.filename().string();
  return !name.empty() && name[0] == '.';
}

bool blank(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; });
}

// The file's text, checked to be UTF-8 (tokenizers need it, and a binary file passed by
// mistake is better caught here than trained on).
std::string read_utf8(const std::string& path) {
  std::string text = read_file(path);
  validate_utf8(text, path.c_str());
  return text;
}

}  // namespace

std::vector<std::string> expand_data_paths(const std::vector<std::string>& paths) {
  check(!paths.empty(), "no data: give at least one file or folder");
  std::vector<std::string> out;
  for (const std::string& p : paths) {
    std::error_code ec;
    const fs::file_status st = fs::status(p, ec);
    check(!ec && fs::exists(st), p, ": no such file or folder");
    if (!fs::is_directory(st)) {
      check(fs::is_regular_file(st), p, ": not a regular file");
      out.push_back(p);
      continue;
    }
    std::vector<std::string> found;
    fs::recursive_directory_iterator it(p, fs::directory_options::none, ec), end;
    check(!ec, p, ": cannot list the folder: ", ec.message());
    for (; it != end; it.increment(ec)) {
      check(!ec, p, ": cannot list the folder: ", ec.message());
      if (hidden(it->path())) {
        if (it->is_directory()) it.disable_recursion_pending();
        continue;
      }
      // Links are skipped: they often duplicate a file beside them (fortune's *.u8).
      if (it->is_symlink() || !it->is_regular_file()) continue;
      found.push_back(it->path().string());
    }
    std::sort(found.begin(), found.end());
    check(!found.empty(), p, ": the folder holds no files");
    out.insert(out.end(), found.begin(), found.end());
  }
  return out;
}

std::vector<Document> read_text_documents(const std::vector<std::string>& files,
                                          const std::string& separator) {
  std::vector<Document> docs;
  for (const std::string& path : files) {
    const std::string text = read_utf8(path);
    if (separator.empty()) {
      if (!blank(text)) docs.push_back({"", text, path});
      continue;
    }
    // Split at lines equal to the separator (a trailing '\r' is ignored: CRLF files).
    size_t doc_begin = 0, line_begin = 0, doc_line = 1, line_no = 1;
    auto emit = [&](size_t end) {
      std::string_view d(text.data() + doc_begin, end - doc_begin);
      if (!blank(d)) docs.push_back({"", std::string(d), cat(path, ":", doc_line)});
    };
    while (line_begin < text.size()) {
      size_t nl = text.find('\n', line_begin);
      const size_t line_end = nl == std::string::npos ? text.size() : nl;
      std::string_view line(text.data() + line_begin, line_end - line_begin);
      if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
      const size_t next = nl == std::string::npos ? text.size() : nl + 1;
      ++line_no;
      if (line == separator) {
        emit(line_begin);
        doc_begin = next;
        doc_line = line_no;
      }
      line_begin = next;
    }
    emit(text.size());
  }
  return docs;
}

std::vector<Document> read_jsonl_documents(const std::vector<std::string>& files) {
  std::vector<Document> docs;
  for (const std::string& path : files) {
    const std::string text = read_file(path);
    size_t begin = 0, line_no = 0;
    while (begin < text.size()) {
      ++line_no;
      size_t nl = text.find('\n', begin);
      const size_t end = nl == std::string::npos ? text.size() : nl;
      const std::string_view line(text.data() + begin, end - begin);
      begin = nl == std::string::npos ? text.size() : nl + 1;
      if (blank(line)) continue;
      const std::string where = cat(path, ":", line_no);
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception& e) {
        // nlohmann's messages start "[json.exception.parse_error.101] parse error at ...".
        std::string msg = e.what();
        if (size_t p = msg.find("] "); p != std::string::npos) msg = msg.substr(p + 2);
        fail(where, ": invalid JSON: ", msg);
      }
      check(j.is_object(), where, ": expected a JSON object, got ", j.type_name());
      auto field = [&](const char* key) -> const nlohmann::json* {
        auto it = j.find(key);
        if (it == j.end()) return nullptr;
        check(it->is_string(), where, ": field \"", key, "\" is a ", it->type_name(), ", expected a string");
        return &*it;
      };
      Document d;
      d.source = where;
      const nlohmann::json* prompt = field("prompt");
      const nlohmann::json* completion = field("completion");
      const nlohmann::json* plain = field("text");
      if (prompt || completion) {
        check(prompt && completion, where, ": a record with \"", prompt ? "prompt" : "completion",
              "\" also needs \"", prompt ? "completion" : "prompt", "\"");
        d.prompt = prompt->get<std::string>();
        d.text = completion->get<std::string>();
      } else {
        check(plain != nullptr, where, ": expected \"prompt\" and \"completion\" (or \"text\") fields");
        d.text = plain->get<std::string>();
      }
      // nlohmann accepts lone surrogate escapes (\ud800) and emits them as bytes no
      // tokenizer takes.
      validate_utf8(d.prompt, (where + ": \"prompt\"").c_str());
      validate_utf8(d.text, (where + (prompt ? ": \"completion\"" : ": \"text\"")).c_str());
      docs.push_back(std::move(d));
    }
  }
  return docs;
}

void check_not_empty(const std::vector<Document>& docs, const std::vector<std::string>& files) {
  if (!docs.empty()) return;
  fail(files.size() == 1 ? files[0] : cat(files.size(), " data files"),
       files.size() == 1 ? " holds no text" : " hold no text", " to train on");
}

}  // namespace braid::tune
