// Subcommands of the `braid` CLI register themselves: each src/cli/<name>.cpp defines
//
//   static braid::cli::Command reg("run", "Generate text", [](CLI::App& app) { ... });
//
// whose setup adds options to the subcommand and sets its callback. A callback throws
// braid::Error for user errors; main prints "braid: error: <message>" and exits 1.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace braid::cli {

struct Command {
  using Setup = std::function<void(CLI::App& sub)>;
  Command(std::string name, std::string description, Setup setup);

  std::string name;
  std::string description;
  Setup setup;
};

// All registered commands, in name order.
const std::vector<const Command*>& commands();

// Exit code a callback can request (for example `braid bench` failing a check).
struct ExitRequest {
  int code;
};

}  // namespace braid::cli
