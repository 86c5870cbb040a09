#include "cli/cluster_file.h"

#include <toml++/toml.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "braid/cluster.h"
#include "braid/error.h"
#include "braid/transport.h"

namespace braid::cli {
namespace {

constexpr uintmax_t kMaxFileBytes = 1 << 20;

const char* type_name(toml::node_type t) {
  switch (t) {
    case toml::node_type::table:
      return "a table";
    case toml::node_type::array:
      return "an array";
    case toml::node_type::string:
      return "a string";
    case toml::node_type::integer:
      return "an integer";
    case toml::node_type::floating_point:
      return "a number";
    case toml::node_type::boolean:
      return "a boolean";
    case toml::node_type::date:
    case toml::node_type::time:
    case toml::node_type::date_time:
      return "a date/time";
    case toml::node_type::none:
      break;
  }
  return "nothing";
}

// One error line: "FILE:LINE: message" (the line where toml++ saw the key or value).
class Reader {
 public:
  explicit Reader(std::string path) : path_(std::move(path)) {}

  template <class... Args>
  [[noreturn]] void fail_at(const toml::source_region& where, const Args&... args) const {
    if (where.begin.line > 0) fail(path_, ":", where.begin.line, ": ", args...);
    fail(path_, ": ", args...);
  }

  std::string string(const toml::key& k, const toml::node& v) const {
    const auto* s = v.as_string();
    if (!s) fail_at(k.source(), "'", k.str(), "' must be a string, not ", type_name(v.type()));
    const std::string& text = s->get();
    for (unsigned char c : text)
      if (c < 0x20 || c == 0x7f) fail_at(k.source(), "'", k.str(), "' has a control character");
    return text;
  }

  int integer(const toml::key& k, const toml::node& v, int64_t lo, int64_t hi) const {
    const auto* i = v.as_integer();
    if (!i) fail_at(k.source(), "'", k.str(), "' must be an integer, not ", type_name(v.type()));
    const int64_t x = i->get();
    if (x < lo || x > hi) fail_at(k.source(), "'", k.str(), "' is ", x, ", outside ", lo, "..", hi);
    return static_cast<int>(x);
  }

  bool boolean(const toml::key& k, const toml::node& v) const {
    const auto* b = v.as_boolean();
    if (!b) fail_at(k.source(), "'", k.str(), "' must be true or false, not ", type_name(v.type()));
    return b->get();
  }

  std::string one_of(const toml::key& k, const toml::node& v,
                     std::initializer_list<const char*> allowed) const {
    const std::string s = string(k, v);
    std::string list;
    for (const char* a : allowed) {
      if (s == a) return s;
      list += list.empty() ? a : cat(", ", a);
    }
    fail_at(k.source(), "'", k.str(), "' is '", s, "'; use one of ", list);
  }

  std::string address(const toml::key& k, const toml::node& v) const {
    const std::string s = string(k, v);
    try {
      net::Endpoint::parse(s);
    } catch (const Error& e) {
      fail_at(k.source(), "'", k.str(), "': ", e.what());
    }
    return s;
  }

  // A path in the file is relative to the file's folder.
  std::string path(const toml::key& k, const toml::node& v) const {
    const std::filesystem::path p = string(k, v);
    if (p.empty()) fail_at(k.source(), "'", k.str(), "' is empty");
    if (p.is_absolute()) return p.string();
    return (std::filesystem::path(path_).parent_path() / p).string();
  }

  ClusterFile::Worker worker(const toml::node& entry, const toml::source_region& where) const {
    const auto* t = entry.as_table();
    if (!t) fail_at(where, "'worker' entries must be tables ([[worker]] address = \"HOST:PORT\")");
    ClusterFile::Worker w;
    bool has_address = false;
    for (auto&& [k, v] : *t) {
      if (k == "address") {
        w.address = address(k, v);
        has_address = true;
      } else if (k == "name") {
        w.name = string(k, v);
      } else {
        fail_at(k.source(), "unknown key '", k.str(), "' in a [[worker]] (known: address, name)");
      }
    }
    if (!has_address) fail_at(t->source(), "a [[worker]] has no address = \"HOST:PORT\"");
    return w;
  }

 private:
  std::string path_;
};

}  // namespace

ClusterFile parse_cluster_file(std::string_view text, const std::string& path) {
  toml::table doc;
  try {
    doc = toml::parse(text, path);
  } catch (const toml::parse_error& e) {
    std::string why(e.description());
    for (char& c : why)
      if (c == '\n' || c == '\r') c = ' ';
    const auto& at = e.source().begin;
    fail(path, ":", at.line, ":", at.column, ": not valid TOML: ", why);
  }

  const Reader r(path);
  ClusterFile f;
  for (auto&& [k, v] : doc) {
    const std::string key(k.str());
    if (key == "worker") {
      const auto* list = v.as_array();
      if (!list)
        r.fail_at(k.source(), "'worker' must be an array of tables ([[worker]]), not ", type_name(v.type()));
      for (const toml::node& entry : *list) f.workers.push_back(r.worker(entry, k.source()));
    } else if (key == "secret-file") {
      f.secret_file = r.path(k, v);
    } else if (key == "ca") {
      f.ca = r.path(k, v);
    } else if (key == "cert") {
      f.cert = r.path(k, v);
    } else if (key == "key") {
      f.key = r.path(k, v);
    } else if (key == "transfer") {
      f.transfer = r.one_of(k, v, {"f32", "f16", "q8", "q8_0"});
    } else if (key == "objective") {
      f.objective = r.one_of(k, v, {"latency", "throughput"});
    } else if (key == "head-layers") {
      if (v.is_integer()) {
        f.head_layers = std::to_string(r.integer(k, v, 0, 1 << 20));
      } else if (v.is_string()) {
        f.head_layers = r.one_of(k, v, {"auto"});
      } else {
        r.fail_at(k.source(), "'head-layers' must be a layer count or \"auto\", not ", type_name(v.type()));
      }
    } else if (key == "split") {
      const std::string s = r.string(k, v);
      if (s != "planner" && s != "even" && s != "memory") {
        try {
          dist::parse_split(s);
        } catch (const Error& e) {
          r.fail_at(k.source(), "'split' is not planner, even, memory or ranges: ", e.what());
        }
      }
      f.split = s;
    } else if (key == "output-at-head") {
      f.output_at_head = r.boolean(k, v);
    } else if (key == "accept") {
      f.accept = r.address(k, v);
    } else if (key == "accept-count") {
      f.accept_count = r.integer(k, v, 1, 64);
    } else if (key == "connect-timeout") {
      f.connect_timeout_s = r.integer(k, v, 1, 3600);
    } else if (key == "net-timeout") {
      f.net_timeout_s = r.integer(k, v, 1, 86400);
    } else {
      r.fail_at(k.source(), "unknown key '", key,
                "' (known: worker, secret-file, ca, cert, key, transfer, head-layers, split, objective, "
                "output-at-head, accept, accept-count, connect-timeout, net-timeout)");
    }
  }
  return f;
}

ClusterFile read_cluster_file(const std::string& path) {
  std::error_code ec;
  check(std::filesystem::exists(path, ec), "cluster file '", path, "' not found");
  check(std::filesystem::is_regular_file(path, ec), "cluster file '", path, "' is not a file");
  const uintmax_t size = std::filesystem::file_size(path, ec);
  check(!ec && size <= kMaxFileBytes, "cluster file '", path, "' is larger than 1 MiB");
  std::ifstream in(path, std::ios::binary);
  check(in.good(), "cannot read cluster file '", path, "'");
  std::stringstream ss;
  ss << in.rdbuf();
  check(!in.bad(), "cannot read cluster file '", path, "'");
  return parse_cluster_file(ss.str(), path);
}

}  // namespace braid::cli
