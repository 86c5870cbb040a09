// Text generation over one sequence: prefill a prompt, then sample, stream and feed back
// one token at a time until an end-of-generation token, a stop string, the token limit
// or the end of the context.
//
//   auto model = braid::Model::load("model.gguf");
//   auto tok = braid::Tokenizer::from_gguf(model->gguf());
//   braid::ThreadPool pool(braid::physical_cores());
//   braid::LocalForward fwd(model, /*n_ctx=*/2048, pool);
//   braid::Generator gen(fwd, *tok);
//   braid::Sampler sampler(params);
//   braid::GenerateOptions opt;  opt.max_tokens = 128;  opt.stop = {"\n\n"};
//   auto r = gen.generate(tok->encode("Once upon a time", true), sampler, opt,
//                         [](std::string_view piece) { fputs(...); return true; });
//
// The Generator knows nothing about where the logits come from: a Forward turns tokens
// at positions into logits. LocalForward runs a Model on this machine; the head of a
// cluster implements Forward over the network, and everything above it (sampling, stop
// strings, streaming, statistics) stays the same.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "braid/kv_cache.h"
#include "braid/sampler.h"
#include "braid/thread_pool.h"

namespace braid {

class Model;
class Tokenizer;

// Tokens in, logits out, for one sequence whose state (a KV cache, local or remote) lives
// behind the interface.
class Forward {
 public:
  virtual ~Forward() = default;

  virtual int n_vocab() const = 0;
  // Positions the sequence can hold; forward() beyond them throws.
  virtual int n_ctx() const = 0;

  // Feeds tokens[0..n) at positions [pos0, pos0 + n). Positions >= pos0 from earlier calls
  // are forgotten first, so pos0 = 0 starts a new sequence. Writes the logits of every
  // fed token ([n][n_vocab], row-major) when all_logits, else those of the last one
  // ([n_vocab]). Throws braid::Error for ids outside the vocabulary, pos0 beyond what the
  // sequence holds, or pos0 + n > n_ctx().
  virtual void forward(const int32_t* tokens, int n, int pos0, bool all_logits, float* logits) = 0;
};

// Forward over a Model on this machine, with its own KVCache over all layers.
class LocalForward : public Forward {
 public:
  // n_ctx <= 0 takes the model's training context. Long prompts are fed in batches of
  // at most n_batch tokens to bound scratch memory; results do not depend on n_batch.
  LocalForward(std::shared_ptr<const Model> model, int n_ctx, ThreadPool& pool, int n_batch = 512);

  int n_vocab() const override;
  int n_ctx() const override { return kv_.n_ctx(); }
  void forward(const int32_t* tokens, int n, int pos0, bool all_logits, float* logits) override;

  const Model& model() const { return *model_; }

 private:
  std::shared_ptr<const Model> model_;
  ThreadPool& pool_;
  KVCache kv_;
  int n_batch_;
  std::vector<float> hidden_;
};

struct GenerateOptions {
  int max_tokens = 256;  // >= 1
  // Generation ends when the text contains one of these; the text passed on ends right
  // before it (the tokens that spelled it are still in GenerateResult::tokens).
  std::vector<std::string> stop;
  // Keep going past end-of-generation tokens (their text, usually none, is shown).
  bool ignore_eos = false;
  // Keep every position's logits in GenerateResult::logits (see there).
  bool record_logits = false;
  // Add the prompt's tokens to the sampler's penalty history first (as llama.cpp does).
  bool penalize_prompt = true;
};

enum class StopReason {
  kEndOfGeneration,  // the model produced an end-of-generation token (EOS, EOT ...)
  kStopString,
  kMaxTokens,
  kContextFull,  // no position left to feed another token
  kCancelled,    // the text callback returned false
};
const char* stop_reason_name(StopReason r);  // "eos", "stop", "length", "context", "cancelled"

struct GenerateResult {
  // Generated ids, in order; a final end-of-generation token is included.
  std::vector<int32_t> tokens;
  // The text shown: decoded tokens, without end-of-generation tokens' text and without
  // the stop string and what followed it.
  std::string text;
  StopReason stop_reason = StopReason::kMaxTokens;
  // With record_logits: [n_prompt + tokens.size()][n_vocab]. Row i < n_prompt is what
  // the model predicted after prompt token i; row n_prompt + j is its prediction after
  // generated token j. So generated token j was drawn from row n_prompt - 1 + j, and the
  // last generated token is fed too so that its row exists. Empty otherwise.
  std::vector<float> logits;
  int n_prompt = 0;
  double prompt_seconds = 0;  // prefill, up to the first logits
  double gen_seconds = 0;     // everything after: sampling, streaming, decode steps
  double prompt_tokens_per_second() const { return prompt_seconds > 0 ? n_prompt / prompt_seconds : 0; }
  double gen_tokens_per_second() const {
    return gen_seconds > 0 ? static_cast<double>(tokens.size()) / gen_seconds : 0;
  }
};

// Receives text as it is generated: whole UTF-8 characters only, nothing of a stop
// string. Return false to stop (StopReason::kCancelled).
using TextCallback = std::function<bool(std::string_view piece)>;

class Generator {
 public:
  // Both must outlive the Generator.
  Generator(Forward& forward, const Tokenizer& tokenizer);

  // Generates after `prompt` (token ids, BOS included if wanted), starting a new sequence
  // at position 0. Every generated token occupies a position, so at most
  // n_ctx - prompt.size() tokens come out (then StopReason::kContextFull). Throws
  // braid::Error for an empty prompt, a prompt that leaves no room in the context
  // ("prompt of N tokens does not fit the context of M"), ids outside the vocabulary,
  // max_tokens < 1 or a stop string that is not valid UTF-8.
  GenerateResult generate(std::span<const int32_t> prompt, Sampler& sampler, const GenerateOptions& options,
                          const TextCallback& on_text = {});

 private:
  Forward& forward_;
  const Tokenizer& tokenizer_;
};

}  // namespace braid
