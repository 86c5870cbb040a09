// Errors in braid: every failure a user can cause (bad file, bad flag, bad frame) is a
// braid::Error whose message is one line, complete enough to act on. The CLI prints it
// as "braid: error: <message>" and exits non-zero. Programming errors use assert.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace braid {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Concatenates any streamable values: cat("tensor ", name, " has ", n, " dims").
template <class... Args>
std::string cat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}

// Throws braid::Error with the concatenated message.
template <class... Args>
[[noreturn]] void fail(Args&&... args) {
  throw Error(cat(std::forward<Args>(args)...));
}

// Throws braid::Error unless cond holds.
template <class... Args>
void check(bool cond, Args&&... args) {
  if (!cond) fail(std::forward<Args>(args)...);
}

}  // namespace braid
