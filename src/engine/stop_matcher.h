// Cuts generated text at the first stop string, never letting any part of one out.
//
// Text arrives in pieces; a piece may end with the first bytes of a stop string whose
// rest comes later (or never). Such a tail is held back until the next pieces show
// whether it completes the stop string (then it is dropped) or not (then it is released).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace braid::engine {

class StopMatcher {
 public:
  // Empty strings in `stops` are ignored (they would match before any text).
  explicit StopMatcher(std::vector<std::string> stops);

  // Adds generated text; returns what can be shown now. Once a stop string has appeared,
  // stopped() is true, the returned text ends right before it, and later calls return "".
  std::string push(std::string_view text);
  // End of generation without a stop: everything still held back.
  std::string flush();

  bool stopped() const { return stopped_; }
  // The stop string that matched (empty while !stopped()).
  const std::string& matched() const { return matched_; }

 private:
  std::vector<std::string> stops_;
  std::string held_;
  std::string matched_;
  bool stopped_ = false;
};

}  // namespace braid::engine
