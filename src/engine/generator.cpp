#include <chrono>
#include <optional>

#include "braid/error.h"
#include "braid/generate.h"
#include "braid/tokenizer.h"
#include "engine/stop_matcher.h"

namespace braid {

namespace {
using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}
}  // namespace

const char* stop_reason_name(StopReason r) {
  switch (r) {
    case StopReason::kEndOfGeneration:
      return "eos";
    case StopReason::kStopString:
      return "stop";
    case StopReason::kMaxTokens:
      return "length";
    case StopReason::kContextFull:
      return "context";
    case StopReason::kCancelled:
      return "cancelled";
  }
  return "?";
}

Generator::Generator(Forward& forward, const Tokenizer& tokenizer)
    : forward_(forward), tokenizer_(tokenizer) {}

GenerateResult Generator::generate(std::span<const int32_t> prompt, Sampler& sampler,
                                   const GenerateOptions& options, const TextCallback& on_text) {
  const int n_vocab = forward_.n_vocab();
  const int n_ctx = forward_.n_ctx();
  const int n_prompt = static_cast<int>(prompt.size());
  check(options.max_tokens >= 1, "the number of tokens to generate must be at least 1, got ",
        options.max_tokens);
  check(n_prompt >= 1, "the prompt is empty: give some text, or keep the BOS token");
  check(n_prompt < n_ctx, "prompt of ", n_prompt, " tokens does not fit the context of ", n_ctx,
        " (one position must stay free for a generated token)");
  for (int32_t id : prompt)
    check(id >= 0 && id < n_vocab, "prompt token id ", id, " is outside the vocabulary [0, ", n_vocab, ")");
  for (const auto& s : options.stop) validate_utf8(s, "stop string");

  GenerateResult r;
  r.n_prompt = n_prompt;
  const size_t row = static_cast<size_t>(n_vocab);
  // The one row the next token is drawn from; with record_logits it lives in r.logits.
  std::vector<float> last(row);
  auto logits_of_last = [&]() -> const float* {
    return options.record_logits ? r.logits.data() + r.logits.size() - row : last.data();
  };

  // Prefill.
  const auto t_prompt = Clock::now();
  if (options.record_logits) {
    r.logits.resize(static_cast<size_t>(n_prompt) * row);
    forward_.forward(prompt.data(), n_prompt, 0, true, r.logits.data());
  } else {
    forward_.forward(prompt.data(), n_prompt, 0, false, last.data());
  }
  r.prompt_seconds = seconds_since(t_prompt);
  if (options.penalize_prompt)
    for (int32_t id : prompt) sampler.accept(id);

  const auto t_gen = Clock::now();
  StreamDecoder decoder(tokenizer_);
  engine::StopMatcher stops(options.stop);
  // SentencePiece puts a space in front of the text, which decode() drops again after a
  // leading BOS. When the prompt shows no text (just BOS), the generated text is the start
  // of the text, so drop that space here too: the stream then equals decode(all tokens).
  // (Ids the model has but the vocabulary lacks, padding rows, have no text.)
  auto known = [&](std::span<const int32_t> ids, std::vector<int32_t>& out) {
    for (int32_t t : ids)
      if (t < tokenizer_.n_vocab()) out.push_back(t);
  };
  std::vector<int32_t> prompt_known;
  known(prompt, prompt_known);
  bool at_text_start = tokenizer_.decode(prompt_known).empty();
  auto visible = [&](std::string text) {
    if (!at_text_start || text.empty()) return text;
    at_text_start = false;
    if (text[0] == ' ') {
      std::vector<int32_t> all = prompt_known;
      known(r.tokens, all);
      const std::string whole = tokenizer_.decode(all);
      if (whole.empty() || whole[0] != ' ') text.erase(0, 1);
    }
    return text;
  };
  auto emit = [&](const std::string& text) {
    if (text.empty()) return true;
    r.text += text;
    return on_text ? on_text(text) : true;
  };

  int pos = n_prompt;  // where the next generated token goes; pos < n_ctx holds throughout
  std::optional<StopReason> end;
  while (!end) {
    const int32_t tok = sampler.sample(logits_of_last(), n_vocab);
    sampler.accept(tok);
    r.tokens.push_back(tok);

    if (!options.ignore_eos && tokenizer_.is_eog(tok)) {
      end = StopReason::kEndOfGeneration;  // its text (a control token's) is not shown
    } else {
      const std::string piece = tok < tokenizer_.n_vocab() ? decoder.push(tok) : std::string();
      const bool keep_going = emit(stops.push(visible(piece)));
      if (stops.stopped()) {
        end = StopReason::kStopString;
      } else if (!keep_going) {
        end = StopReason::kCancelled;
      }
    }
    if (!end && static_cast<int>(r.tokens.size()) >= options.max_tokens) end = StopReason::kMaxTokens;
    if (!end && pos + 1 >= n_ctx) end = StopReason::kContextFull;  // no room for the next one

    // Feed the token back: to continue, and with record_logits also after the last one,
    // so that every generated token has its row.
    if (!end || options.record_logits) {
      float* out = last.data();
      if (options.record_logits) {
        r.logits.resize(r.logits.size() + row);
        out = r.logits.data() + r.logits.size() - row;
      }
      forward_.forward(&tok, 1, pos, false, out);
      ++pos;
    }
  }
  r.stop_reason = *end;
  // What the decoder or the stop matcher still holds was not part of a stop string.
  if (end != StopReason::kStopString && end != StopReason::kCancelled) {
    std::string tail = stops.push(visible(decoder.flush()));
    if (!stops.stopped()) tail += stops.flush();
    emit(tail);
  }
  r.gen_seconds = seconds_since(t_gen);
  return r;
}

}  // namespace braid
