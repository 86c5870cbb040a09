// The `braid` executable: a thin CLI over the library. See src/cli/command.h.
#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>

#include "braid/error.h"
#include "cli/command.h"

namespace braid::cli {

static std::vector<const Command*>& registry() {
  static std::vector<const Command*> r;
  return r;
}

Command::Command(std::string n, std::string d, Setup s)
    : name(std::move(n)), description(std::move(d)), setup(std::move(s)) {
  registry().push_back(this);
}

const std::vector<const Command*>& commands() {
  auto& r = registry();
  std::sort(r.begin(), r.end(), [](const Command* a, const Command* b) { return a->name < b->name; });
  return r;
}

}  // namespace braid::cli

int main(int argc, char** argv) {
  CLI::App app{"braid: run, split across devices, and adapt language models on small devices"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "braid 0.1.0");
  for (const auto* c : braid::cli::commands()) {
    CLI::App* sub = app.add_subcommand(c->name, c->description);
    c->setup(*sub);
  }
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "braid: error: %s (see braid --help)\n", e.what());
    return e.get_exit_code() == 0 ? 2 : e.get_exit_code();
  } catch (const braid::cli::ExitRequest& e) {
    return e.code;
  } catch (const braid::Error& e) {
    std::fprintf(stderr, "braid: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "braid: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "braid: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
