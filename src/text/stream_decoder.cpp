// StreamDecoder: emits whole UTF-8 characters only, holding back an incomplete one.
#include "braid/tokenizer.h"
#include "text/utf8.h"

namespace braid {

StreamDecoder::StreamDecoder(const Tokenizer& tok, bool render_special)
    : tok_(tok), render_special_(render_special) {}

std::string StreamDecoder::push(int32_t id) {
  pending_ += tok_.token_bytes(id, render_special_);
  std::string out;
  const std::string_view p = pending_;
  size_t i = 0;
  while (i < p.size()) {
    size_t prefix;
    const size_t n = text::utf8_sequence(p.substr(i), &prefix);
    if (n > 0) {
      out.append(p.substr(i, n));
      i += n;
    } else if (i + prefix == p.size()) {
      break;  // a character cut off by the end: wait for the next token
    } else {
      out += text::kReplacement;  // one U+FFFD per maximal ill-formed subpart
      i += prefix > 0 ? prefix : 1;
    }
  }
  pending_.erase(0, i);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out = sanitize_utf8(pending_);
  pending_.clear();
  return out;
}

}  // namespace braid
