#include "engine/perplexity.h"

#include <algorithm>
#include <cmath>

#include "braid/error.h"
#include "braid/generate.h"
#include "braid/tokenizer.h"

namespace braid::engine {

double PerplexityResult::ppl() const { return std::exp(mean_nll()); }

double token_nll(const float* logits, int n_vocab, int32_t target) {
  double max = logits[0];
  for (int i = 1; i < n_vocab; ++i) max = std::max(max, static_cast<double>(logits[i]));
  double sum = 0;
  for (int i = 0; i < n_vocab; ++i) sum += std::exp(static_cast<double>(logits[i]) - max);
  return std::log(sum) + max - static_cast<double>(logits[target]);
}

namespace {

bool is_space(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v'; }

std::string_view trim(std::string_view s) {
  while (!s.empty() && is_space(s.front())) s.remove_prefix(1);
  while (!s.empty() && is_space(s.back())) s.remove_suffix(1);
  return s;
}

// Adds the NLL of tokens[1..n) given their prefixes, from logits [n][n_vocab].
void score(const float* logits, int n_vocab, const int32_t* tokens, int n, int first, PerplexityResult& r) {
  for (int i = first; i + 1 < n; ++i) {
    r.nll_sum += token_nll(logits + static_cast<size_t>(i) * n_vocab, n_vocab, tokens[i + 1]);
    ++r.n_tokens;
  }
}

}  // namespace

std::vector<std::string> split_paragraphs(std::string_view text) {
  std::vector<std::string> out;
  std::string current;
  size_t at = 0;
  auto close = [&] {
    std::string_view t = trim(current);
    if (!t.empty()) out.emplace_back(t);
    current.clear();
  };
  while (at < text.size()) {
    size_t nl = text.find('\n', at);
    const size_t end = nl == std::string_view::npos ? text.size() : nl + 1;
    std::string_view line = text.substr(at, end - at);
    if (trim(line).empty()) {
      close();
    } else {
      current.append(line);
    }
    at = end;
  }
  close();
  return out;
}

PerplexityResult perplexity_paragraphs(Forward& forward, const Tokenizer& tokenizer, std::string_view text,
                                       int max_paragraphs, int max_tokens,
                                       const PerplexityProgress& progress) {
  validate_utf8(text, "text");
  check(max_tokens >= 2, "perplexity: paragraphs need room for at least 2 tokens, got ", max_tokens);
  const int cap = std::min(max_tokens, forward.n_ctx());
  std::vector<std::string> paragraphs = split_paragraphs(text);
  if (max_paragraphs > 0 && static_cast<size_t>(max_paragraphs) < paragraphs.size())
    paragraphs.resize(static_cast<size_t>(max_paragraphs));
  check(!paragraphs.empty(), "perplexity: the text has no paragraphs");
  const bool bos = tokenizer.bos() >= 0;

  PerplexityResult r;
  const int n_vocab = forward.n_vocab();
  std::vector<float> logits;
  for (const auto& p : paragraphs) {
    std::vector<int32_t> tokens = tokenizer.encode(p, bos);
    if (static_cast<int>(tokens.size()) > cap) tokens.resize(static_cast<size_t>(cap));
    if (tokens.size() < 2) continue;  // nothing to predict
    const int n = static_cast<int>(tokens.size());
    logits.resize(static_cast<size_t>(n) * n_vocab);
    forward.forward(tokens.data(), n, 0, true, logits.data());
    score(logits.data(), n_vocab, tokens.data(), n, 0, r);
    ++r.n_segments;
    if (progress) progress(r);
  }
  check(r.n_tokens > 0, "perplexity: no paragraph has a token to predict");
  return r;
}

PerplexityResult perplexity_windows(Forward& forward, const Tokenizer& tokenizer, std::string_view text,
                                    int n_ctx, int max_windows, const PerplexityProgress& progress) {
  validate_utf8(text, "text");
  check(n_ctx >= 4, "perplexity: windows need a context of at least 4 tokens, got ", n_ctx);
  check(n_ctx <= forward.n_ctx(), "perplexity: window of ", n_ctx, " exceeds the context of ",
        forward.n_ctx());
  const bool bos = tokenizer.bos() >= 0 && tokenizer.add_bos();
  const std::vector<int32_t> all = tokenizer.encode(text, bos);
  const int n_windows_total = static_cast<int>(all.size() / static_cast<size_t>(n_ctx));
  check(n_windows_total >= 1, "perplexity: the text has ", all.size(), " tokens, fewer than one window of ",
        n_ctx, " (use a smaller --ctx or a longer text)");
  const int n_windows = max_windows > 0 ? std::min(max_windows, n_windows_total) : n_windows_total;

  PerplexityResult r;
  const int n_vocab = forward.n_vocab();
  std::vector<float> logits(static_cast<size_t>(n_ctx) * n_vocab);
  std::vector<int32_t> window(static_cast<size_t>(n_ctx));
  for (int w = 0; w < n_windows; ++w) {
    std::copy_n(all.begin() + static_cast<ptrdiff_t>(w) * n_ctx, n_ctx, window.begin());
    // As llama.cpp: the window starts with BOS, and the scored targets are the original
    // tokens (only the model's input changes).
    if (bos) window[0] = tokenizer.bos();
    forward.forward(window.data(), n_ctx, 0, true, logits.data());
    // Score predictions from positions n_ctx/2 .. n_ctx-2 (targets from the text).
    score(logits.data(), n_vocab, window.data(), n_ctx, n_ctx / 2, r);
    ++r.n_segments;
    if (progress) progress(r);
  }
  return r;
}

}  // namespace braid::engine
