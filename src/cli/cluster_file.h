// The cluster file (`--cluster cluster.toml`): a head's workers and cluster-wide settings
// written down once instead of repeated as flags on every command.
//
//   # cluster.toml
//   secret-file = "cluster.key"     # or: ca = "ca.crt", cert = "head.crt", key = "head.key"
//   transfer = "f32"                # f32 (exact), f16 or q8
//   head-layers = 0                 # or "auto"
//   split = "planner"               # "even", "memory" or ranges "0:12,12:22"
//   objective = "latency"           # or "throughput"
//   connect-timeout = 10            # seconds
//   net-timeout = 120               # seconds
//
//   [[worker]]
//   address = "10.0.0.2:7000"
//   name = "laptop"                 # optional: how `braid plan` shows it
//
//   [[worker]]
//   address = "10.0.0.3:7000"
//
// The other keys are output-at-head (bool), accept ("HOST:PORT") and accept-count. Every
// key is a flag's name; a flag given on the command line overrides the file. Paths are
// relative to the file's folder. Unknown keys, wrong types and bad values are errors of
// one line naming the file, the line and the key ("cluster.toml:4: 'net-timeout' must be
// an integer, not a string"). docs/planner.md and the README describe the format too.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace braid::cli {

struct ClusterFile {
  struct Worker {
    std::string address;  // "HOST:PORT", checked
    std::string name;     // empty when not given
  };
  std::vector<Worker> workers;
  // The settings the file gives (unset: not given). Values are checked; paths are
  // resolved against the file's folder.
  std::optional<std::string> secret_file, ca, cert, key;
  std::optional<std::string> transfer, head_layers, split, objective, accept;
  std::optional<int> accept_count, connect_timeout_s, net_timeout_s;
  std::optional<bool> output_at_head;
};

// Reads and checks a cluster file. Throws braid::Error (one line) when it is missing,
// unreadable, larger than 1 MiB, not TOML, or has an unknown key, a wrong type or a bad
// value.
ClusterFile read_cluster_file(const std::string& path);

// The same for text already read; `path` names it in errors and anchors relative paths.
ClusterFile parse_cluster_file(std::string_view text, const std::string& path);

}  // namespace braid::cli
