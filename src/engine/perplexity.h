// Perplexity: how well a model predicts a text, exp(mean negative log-likelihood of each
// token given those before it).
//
// Two procedures, both over a Forward (so a cluster can be measured the same way):
//  - paragraphs: the text is split on blank lines; each paragraph is scored on its own as
//    [BOS] + encode(paragraph), capped at max_tokens, every token after the first
//    predicted. This is the assets README's procedure (stories260K's golden figures).
//  - windows: llama.cpp's `perplexity`: the whole text is encoded once and cut into
//    consecutive windows of n_ctx tokens; each window starts with BOS (replacing its
//    first token when the model wants BOS), and only its second half is scored, so every
//    scored token has at least n_ctx / 2 tokens of context.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace braid {
class Forward;
class Tokenizer;
}  // namespace braid

namespace braid::engine {

struct PerplexityResult {
  int64_t n_tokens = 0;  // predicted (scored) tokens
  double nll_sum = 0;    // natural log
  int n_segments = 0;    // paragraphs or windows evaluated
  double mean_nll() const { return n_tokens ? nll_sum / static_cast<double>(n_tokens) : 0.0; }
  double ppl() const;
};

// Called after each paragraph / window with the running result (progress reports).
using PerplexityProgress = std::function<void(const PerplexityResult&)>;

// -log softmax(logits)[target], computed in double.
double token_nll(const float* logits, int n_vocab, int32_t target);

// Paragraphs of `text`: split at runs of blank lines (lines empty or all whitespace),
// trimmed of surrounding whitespace; empty ones dropped.
std::vector<std::string> split_paragraphs(std::string_view text);

// max_paragraphs <= 0: all. Throws braid::Error when there is nothing to score.
PerplexityResult perplexity_paragraphs(Forward& forward, const Tokenizer& tokenizer, std::string_view text,
                                       int max_paragraphs, int max_tokens,
                                       const PerplexityProgress& progress = {});

// n_ctx >= 2 and <= forward.n_ctx(). max_windows <= 0: all. Throws braid::Error when the
// text is shorter than one window.
PerplexityResult perplexity_windows(Forward& forward, const Tokenizer& tokenizer, std::string_view text,
                                    int n_ctx, int max_windows, const PerplexityProgress& progress = {});

}  // namespace braid::engine
