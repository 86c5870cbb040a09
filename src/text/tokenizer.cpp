// Tokenizer: splitting out special tokens, encoding the text between them, decoding.
#include "braid/tokenizer.h"

#include "braid/error.h"
#include "text/byte_bpe.h"
#include "text/spm_bpe.h"
#include "text/tokenizer_impl.h"

namespace braid {

namespace {

constexpr std::string_view kSpace = "\xE2\x96\x81";  // U+2581, SentencePiece's space

// A piece of the prompt: a special token, or text [off, off + len) to run BPE on.
struct Fragment {
  int32_t token;  // -1 for text
  size_t off, len;
};

// llama.cpp's tokenizer_st_partition: each special token in turn (longest first) is cut out
// of the text fragments left by the previous ones. Control and unknown tokens only count
// with parse_special; user-defined ones always do (as in Hugging Face tokenizers).
std::vector<Fragment> partition(const Tokenizer::Impl& m, std::string_view text, bool parse_special) {
  std::vector<Fragment> frags, next;
  if (!text.empty()) frags.push_back({-1, 0, text.size()});
  for (int32_t id : m.specials) {
    const TokenType t = m.types[id];
    if (!parse_special && (t == TokenType::kControl || t == TokenType::kUnknown)) continue;
    const std::string& s = m.pieces[id];
    if (text.find(s) == std::string_view::npos) continue;  // the common case: nothing to cut
    next.clear();
    for (const Fragment& f : frags) {
      if (f.token >= 0) {
        next.push_back(f);
        continue;
      }
      const size_t end = f.off + f.len;
      const std::string_view window = text.substr(0, end);
      size_t pos = f.off;
      for (size_t hit; (hit = window.find(s, pos)) != std::string_view::npos; pos = hit + s.size()) {
        if (hit > pos) next.push_back({-1, pos, hit - pos});
        next.push_back({id, 0, 0});
      }
      if (pos < end) next.push_back({-1, pos, end - pos});
    }
    frags.swap(next);
  }
  return frags;
}

// "<0xAB>" -> 0xAB; -1 when the piece has another form.
int parse_byte_piece(const std::string& p) {
  auto hex = [](char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  if (p.size() != 6 || p.compare(0, 3, "<0x") != 0 || p[5] != '>') return -1;
  const int hi = hex(p[3]), lo = hex(p[4]);
  return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

}  // namespace

Tokenizer::Tokenizer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Tokenizer::~Tokenizer() = default;

void Tokenizer::Impl::check_id(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= pieces.size())
    fail("token id ", id, " is outside the vocabulary of ", pieces.size(), " tokens");
}

std::string Tokenizer::Impl::token_bytes(int32_t id, bool render_special) const {
  check_id(id);
  const std::string& p = pieces[id];
  switch (types[id]) {
    case TokenType::kNormal: {
      if (kind == Kind::kBpe) return text::byte_level_decode(p);
      std::string out;
      out.reserve(p.size());
      for (size_t i = 0; i < p.size();) {
        if (p.compare(i, kSpace.size(), kSpace) == 0) {
          out += ' ';
          i += kSpace.size();
        } else {
          out += p[i++];
        }
      }
      return out;
    }
    case TokenType::kUserDefined:
      return p;
    case TokenType::kByte: {
      const int b = parse_byte_piece(p);
      return b >= 0 ? std::string(1, static_cast<char>(b)) : p;
    }
    default:  // control, unknown, unused, undefined: invisible, like llama.cpp's special=false
      return render_special ? p : std::string();
  }
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_bos, bool parse_special) const {
  validate_utf8(text, "prompt");
  const Impl& m = *impl_;
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 2);
  if (add_bos) {
    if (m.bos < 0) fail("cannot add BOS: the vocabulary has no BOS token");
    out.push_back(m.bos);
  }
  const std::vector<Fragment> frags = partition(m, text, parse_special);
  if (m.kind == Kind::kSpm) {
    const text::SpmVocab v{m.index, m.scores, m.byte_tokens, m.unk};
    bool prev_special = true;  // the text starts as if after a special token
    std::string escaped;
    for (const Fragment& f : frags) {
      if (f.token >= 0) {
        out.push_back(f.token);
        prev_special = true;
        continue;
      }
      escaped.clear();
      if (m.add_space_prefix && prev_special) escaped += kSpace;
      for (char c : text.substr(f.off, f.len)) {
        if (c == ' ') {
          escaped += kSpace;
        } else {
          escaped += c;
        }
      }
      text::spm_tokenize(v, escaped, out);
      prev_special = false;
    }
  } else {
    for (const Fragment& f : frags) {
      if (f.token >= 0) {
        out.push_back(f.token);
      } else {
        m.bpe->tokenize(text.substr(f.off, f.len), out);
      }
    }
  }
  return out;
}

std::string Tokenizer::token_bytes(int32_t id, bool render_special) const {
  return impl_->token_bytes(id, render_special);
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool render_special) const {
  std::string bytes;
  bool strip = impl_->add_space_prefix;  // the space encode() put in front of the text
  for (int32_t id : ids) {
    std::string piece = impl_->token_bytes(id, render_special);
    if (piece.empty()) continue;
    if (strip && piece[0] == ' ') piece.erase(0, 1);
    strip = false;
    bytes += piece;
  }
  return sanitize_utf8(bytes);
}

Tokenizer::Kind Tokenizer::kind() const { return impl_->kind; }
const std::string& Tokenizer::pre() const { return impl_->pre; }
int32_t Tokenizer::n_vocab() const { return static_cast<int32_t>(impl_->pieces.size()); }
int32_t Tokenizer::bos() const { return impl_->bos; }
int32_t Tokenizer::eos() const { return impl_->eos; }
int32_t Tokenizer::eot() const { return impl_->eot; }
int32_t Tokenizer::unk() const { return impl_->unk; }
int32_t Tokenizer::pad() const { return impl_->pad; }
bool Tokenizer::add_bos() const { return impl_->add_bos; }
bool Tokenizer::add_eos() const { return impl_->add_eos; }

bool Tokenizer::is_eog(int32_t id) const {
  return id >= 0 && static_cast<size_t>(id) < impl_->eog.size() && impl_->eog[id];
}

const std::string& Tokenizer::piece(int32_t id) const {
  impl_->check_id(id);
  return impl_->pieces[id];
}

TokenType Tokenizer::type(int32_t id) const {
  impl_->check_id(id);
  return impl_->types[id];
}

float Tokenizer::score(int32_t id) const {
  impl_->check_id(id);
  return impl_->scores[id];
}

int32_t Tokenizer::find(std::string_view piece) const { return impl_->find(piece); }

}  // namespace braid
