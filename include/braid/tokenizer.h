// Tokenizers: text <-> token ids, giving the same ids as llama.cpp for GGUF vocabularies.
//
// The vocabulary comes from a GGUF file's tokenizer.ggml.* metadata. Two kinds, chosen by
// tokenizer.ggml.model:
//   "llama"  SentencePiece BPE (Llama 1/2, TinyLlama, llama2.c models): text is split into
//            UTF-8 characters, spaces become U+2581 "▁" and a "▁" is put in front of the text
//            (tokenizer.ggml.add_space_prefix, default true); the adjacent pair whose
//            concatenation is the vocabulary entry with the highest score is merged until no
//            pair is left; characters the vocabulary lacks become byte tokens <0xXX>.
//   "gpt2"   byte-level BPE (GPT-2, Llama 3, Qwen2, ...): a regex pre-tokenizer named by
//            tokenizer.ggml.pre splits the text into words, each word's bytes are mapped to
//            printable characters (GPT-2's bytes_to_unicode) and merged by rank
//            (tokenizer.ggml.merges, lowest rank first).
// Other models ("bert", "t5", "rwkv", ...) and unknown pre-tokenizer names are refused with a
// braid::Error naming what is supported.
//
// Example:
//   auto tok = braid::Tokenizer::from_gguf(model->gguf());
//   std::vector<int32_t> ids = tok->encode("Once upon a time", tok->add_bos());
//   braid::StreamDecoder out(*tok);
//   for (int32_t id : generated) std::cout << out.push(id);
//   std::cout << out.flush();
//
// A Tokenizer is immutable after loading: every const method is safe to call from several
// threads at once.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace braid {

class GgufFile;
class GgufWriter;

// Throws braid::Error("<what> is not valid UTF-8 (byte N)") where N is the offset of the
// first byte of the first ill-formed sequence (bad lead or continuation byte, overlong
// form, surrogate, code point above U+10FFFF, or a sequence cut off by the end).
void validate_utf8(std::string_view s, const char* what);

// `bytes` with every ill-formed sequence replaced by U+FFFD (one per maximal ill-formed
// subpart, as the Unicode standard recommends); valid input comes back unchanged.
std::string sanitize_utf8(std::string_view bytes);

// tokenizer.ggml.token_type values (llama.cpp's llama_token_type).
enum class TokenType : uint8_t {
  kUndefined = 0,
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,      // BOS, EOS, <|eot_id|>, ...: never produced from plain text
  kUserDefined = 4,  // always matched whole in the text, before BPE
  kUnused = 5,
  kByte = 6,  // <0xXX> byte fallback
};

class Tokenizer {
 public:
  enum class Kind { kSpm, kBpe };

  // Reads tokenizer.ggml.{model, pre, tokens, scores, token_type, merges, bos/eos/eot/eom/
  // unknown/padding_token_id, add_bos_token, add_eos_token, add_space_prefix}. Throws
  // braid::Error for missing or inconsistent metadata: no token list, arrays of another
  // length than the token list, a duplicate token, a merge that names a token the
  // vocabulary lacks, a special token id outside the vocabulary (0xFFFFFFFF and -1 mean
  // "none", as llama2.c exports write), add_bos_token set without a BOS id, an unsupported
  // model or pre-tokenizer. A missing tokenizer.ggml.pre means "default" (with a warning on
  // stderr, as llama.cpp does). Loading a 128k vocabulary with 280k merges takes ~0.15 s.
  static std::unique_ptr<Tokenizer> from_gguf(const GgufFile& f);
  ~Tokenizer();

  // Token ids for `text`, with BOS in front when add_bos (throws if the vocabulary has
  // none); EOS is never appended (add eos() yourself where add_eos() asks for it). Throws
  // braid::Error("prompt is not valid UTF-8 (byte N)") for invalid UTF-8.
  // User-defined tokens (type 4) are always matched whole; with parse_special, control
  // tokens (type 3, e.g. "<|eot_id|>") written in the text are too, otherwise they are
  // tokenized as plain text. SentencePiece vocabularies put "▁" in front of the text (and
  // after each special token) when add_space_prefix is set, as llama.cpp does.
  std::vector<int32_t> encode(std::string_view text, bool add_bos, bool parse_special = false) const;

  // The bytes token `id` stands for: byte tokens give their byte, SentencePiece "▁" gives a
  // space, byte-level BPE characters give their bytes, user-defined tokens their text.
  // Control, unknown and unused tokens give "" unless render_special, which gives their text.
  // A piece may be part of a UTF-8 character. Throws braid::Error for an id outside the
  // vocabulary.
  std::string token_bytes(int32_t id, bool render_special = false) const;

  // The text of a whole sequence: the tokens' bytes, joined, with ill-formed UTF-8 replaced
  // by U+FFFD. For SentencePiece vocabularies with add_space_prefix the space that encode()
  // put in front of the text is removed again (after a leading BOS), so that
  // decode(encode(s, true)) == s. (llama.cpp removes it only when no BOS leads.) The bytes
  // are not otherwise changed: no clean_up_tokenization_spaces (" ," stays " ,").
  std::string decode(std::span<const int32_t> ids, bool render_special = false) const;
  std::string decode(const std::vector<int32_t>& ids, bool render_special = false) const {
    return decode(std::span<const int32_t>(ids), render_special);
  }

  Kind kind() const;
  const std::string& pre() const;  // tokenizer.ggml.pre as used ("default" when absent)
  int32_t n_vocab() const;
  // Special token ids; -1 when the vocabulary has none. SentencePiece vocabularies without
  // the keys get llama.cpp's defaults (BOS 1, EOS 2, UNK 0).
  int32_t bos() const;
  int32_t eos() const;
  int32_t eot() const;  // end of turn: tokenizer.ggml.eot_token_id, else "<|eot_id|>", "<|im_end|>", ...
  int32_t unk() const;
  int32_t pad() const;
  bool add_bos() const;  // whether prompts should start with BOS
  bool add_eos() const;
  // End of generation: EOS, EOT, EOM and the tokens llama.cpp recognises by their text
  // ("<|eot_id|>", "<|im_end|>", "<|endoftext|>", "<end_of_turn>", ...).
  bool is_eog(int32_t id) const;

  // The raw vocabulary entry ("▁the", "Ġthe", "<0x0A>", "<s>"). Throws for a bad id.
  const std::string& piece(int32_t id) const;
  TokenType type(int32_t id) const;
  float score(int32_t id) const;
  int32_t find(std::string_view piece) const;  // the id of a vocabulary entry, or -1

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Turns generated tokens into UTF-8 text as they come, never emitting half a character:
// bytes of an incomplete UTF-8 sequence are held until the next tokens complete it;
// ill-formed sequences become U+FFFD. Concatenating every push() and the final flush()
// gives the same text as sanitize_utf8 of all the tokens' bytes. Unlike decode(), no
// leading space is removed (generated text continues the prompt).
class StreamDecoder {
 public:
  // `tok` must outlive the decoder.
  explicit StreamDecoder(const Tokenizer& tok, bool render_special = false);

  // The text that token `id` completes (often "", e.g. for the first byte of an emoji).
  // Throws braid::Error for an id outside the vocabulary.
  std::string push(int32_t id);
  // Text still held (an incomplete character, as U+FFFD), then starts afresh.
  std::string flush();
  // Whether bytes of an incomplete character are held.
  bool pending() const { return !pending_.empty(); }

 private:
  const Tokenizer& tok_;
  bool render_special_;
  std::string pending_;
};

// Imports a Hugging Face tokenizer.json into GGUF tokenizer metadata, writing the keys that
// llama.cpp's convert_hf_to_gguf.py writes:
//   - byte-level BPE (GPT-2, Llama 3, Qwen2, ... : model.type "BPE" without byte_fallback):
//     tokenizer.ggml.model "gpt2", .pre recognised from the pre_tokenizer ("gpt-2",
//     "llama-bpe", "qwen2", "starcoder", "falcon", "deepseek-llm", "deepseek-coder"),
//     .tokens (ids missing below config.json's vocab_size become "[PAD<id>]", type unused),
//     .token_type (added tokens: control when special or when they look special like
//     "<|...|>", else user-defined), .merges;
//   - SentencePiece-style BPE (Llama 1/2, TinyLlama: model.type "BPE" with byte_fallback):
//     tokenizer.ggml.model "llama", .pre "default", .tokens, .scores, .token_type (<0xXX>
//     byte, special tokens control). Scores: -(rank of the first merge that forms the
//     token), 0 for tokens no merge forms, which makes the SentencePiece merge order the
//     BPE merge order. (llama.cpp's converter writes -1000 for every token here, which
//     leaves the merge order to chance.)
//   - both: the special token ids (tokenizer.ggml.bos/eos/unknown/seperator/padding/cls/
//     mask_token_id) that tokenizer_config.json names (looked up in added_tokens), then
//     config.json's <type>_token_id for the ones still unset; add_bos_token/add_eos_token
//     from tokenizer_config.json or the post_processor; tokenizer.chat_template.
// Both config texts are optional (""). Throws braid::Error("tokenizer.json: ...") for
// malformed JSON, a missing or ill-typed field, an unsupported model or pre-tokenizer.
void tokenizer_json_to_gguf(const std::string& tokenizer_json_text, GgufWriter& out,
                            const std::string& tokenizer_config_json_text = "",
                            const std::string& config_json_text = "");

}  // namespace braid
