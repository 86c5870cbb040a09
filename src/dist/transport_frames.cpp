#include "dist/transport_frames.h"

#include <cstring>

#include "braid/error.h"
#include "dist/protocol_wire.h"

namespace braid::dist {
namespace {

enum : uint16_t {
  kLink = kLinkFrameBase,
  kLinked,
  kRoute,
  kDialBack,
  kModelHeader,
  kModelData,
  kLastLink = kModelData
};

const char* link_name(uint16_t t) {
  switch (t) {
    case kLink:
      return "LINK";
    case kLinked:
      return "LINKED";
    case kRoute:
      return "ROUTE";
    case kDialBack:
      return "DIAL_BACK";
    case kModelHeader:
      return "MODEL_HEADER";
    case kModelData:
      return "MODEL_DATA";
  }
  return "?";
}

uint16_t link_type(const LinkMessage& m) { return static_cast<uint16_t>(kLinkFrameBase + m.index()); }

uint16_t peek_type(const uint8_t* h) { return static_cast<uint16_t>(h[6] | (h[7] << 8)); }

uint32_t le32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | static_cast<uint32_t>(p[1]) << 8 | static_cast<uint32_t>(p[2]) << 16 |
         static_cast<uint32_t>(p[3]) << 24;
}

// The header checks of proto::decode_header, for link frame types. Returns the payload
// length.
uint32_t check_link_header(const uint8_t* b, const proto::Limits& limits) {
  check(std::memcmp(b, proto::kMagic, 4) == 0, "not a braid frame (bad magic)");
  const uint16_t version = static_cast<uint16_t>(b[4] | (b[5] << 8));
  check(version == proto::kVersion, "frame has protocol version ", version, "; this braid speaks version ",
        proto::kVersion, " (run the same braid version on every device)");
  const char* name = link_name(peek_type(b));
  check(le32(b + 8) == 0, name, " frame: flags are not defined");
  check(le32(b + 12) == 0 && le32(b + 16) == 0 && le32(b + 20) == 0, name,
        " frame: step and sequence must be 0");
  check(le32(b + 28) == 0, name, " frame: reserved header field is not 0");
  const uint32_t payload = le32(b + 24);
  check(payload <= limits.max_payload_bytes, name, " frame: payload of ", payload,
        " bytes exceeds the limit of ", limits.max_payload_bytes, " bytes");
  return payload;
}

LinkKind read_kind(proto::wire::Reader& r) {
  const uint8_t k = r.u8("kind");
  if (k > 2) r.fail("kind", " is ", int{k}, ", must be 0, 1 or 2");
  return static_cast<LinkKind>(k);
}

LinkMessage decode_link(uint16_t type, const uint8_t* p, size_t n, const proto::Limits& limits) {
  proto::wire::Reader r({p, n}, link_name(type));
  LinkMessage m;
  switch (type) {
    case kLink: {
      Link l;
      l.kind = read_kind(r);
      l.session = r.u64("session");
      m = l;
      break;
    }
    case kLinked:
      m = Linked{r.u64("session")};
      break;
    case kRoute: {
      Route rt;
      rt.next = r.str("next", limits.max_string_bytes);
      rt.session = r.u64("session");
      m = rt;
      break;
    }
    case kDialBack: {
      DialBack d;
      d.kind = read_kind(r);
      if (d.kind == LinkKind::kControl) r.fail("kind", " must be input or output");
      m = d;
      break;
    }
    case kModelHeader: {
      ModelHeader h;
      h.file_size = r.u64("file_size");
      const uint32_t n = r.u32("header_len");
      if (n < 24 || n > h.file_size)
        r.fail("header_len", " is ", n, " for a file of ", h.file_size, " bytes");
      auto b = r.bytes("header", n);
      h.bytes.assign(b.begin(), b.end());
      m = std::move(h);
      break;
    }
    case kModelData: {
      ModelData d;
      d.tensor = r.str("tensor", limits.max_string_bytes);
      d.offset = r.u64("offset");
      const uint32_t n = r.u32("len");
      if (n == 0) r.fail("len", " is 0");
      auto b = r.bytes("data", n);
      d.bytes.assign(b.begin(), b.end());
      m = std::move(d);
      break;
    }
  }
  r.end();
  return m;
}

bool is_link_type(uint16_t t) { return t >= kLinkFrameBase && t <= kLastLink; }

}  // namespace

std::string Incoming::name() const {
  if (is_link) return link_name(static_cast<uint16_t>(kLinkFrameBase + link.index()));
  return proto::frame_type_name(static_cast<uint16_t>(frame.type()));
}

proto::Frame make_frame(proto::Message m, uint64_t seq, uint32_t step) {
  proto::Frame f;
  f.sequence_id = seq;
  f.step = step;
  f.message = std::move(m);
  return f;
}

proto::Frame make_error(const std::string& message, proto::ErrorCode code, uint64_t seq) {
  proto::ErrorMessage e;
  e.code = static_cast<uint32_t>(code);
  // The protocol bounds strings; a long message keeps its start.
  e.message = message.substr(0, 4000);
  while (!e.message.empty() && !proto::wire::valid_utf8(e.message)) e.message.pop_back();
  return make_frame(e, seq);
}

std::vector<uint8_t> encode_link(const LinkMessage& m) {
  std::vector<uint8_t> out;
  out.reserve(64);
  proto::wire::Writer w(out);
  for (uint8_t b : proto::kMagic) w.u8(b);
  w.u16(proto::kVersion);
  w.u16(link_type(m));
  for (int i = 0; i < 6; ++i) w.u32(0);  // flags, step, sequence (2), payload_len, reserved
  std::visit(
      [&](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, Link>) {
          w.u8(static_cast<uint8_t>(v.kind));
          w.u64(v.session);
        } else if constexpr (std::is_same_v<T, Linked>) {
          w.u64(v.session);
        } else if constexpr (std::is_same_v<T, Route>) {
          check(v.next.size() <= proto::Limits{}.max_string_bytes, "address too long");
          w.str(v.next);
          w.u64(v.session);
        } else if constexpr (std::is_same_v<T, DialBack>) {
          w.u8(static_cast<uint8_t>(v.kind));
        } else if constexpr (std::is_same_v<T, ModelHeader>) {
          w.u64(v.file_size);
          w.u32(static_cast<uint32_t>(v.bytes.size()));
          w.bytes(v.bytes);
        } else {
          check(v.tensor.size() <= proto::Limits{}.max_string_bytes, "tensor name too long");
          w.str(v.tensor);
          w.u64(v.offset);
          w.u32(static_cast<uint32_t>(v.bytes.size()));
          w.bytes(v.bytes);
        }
      },
      m);
  w.patch_u32(24, static_cast<uint32_t>(out.size() - proto::kHeaderBytes));
  return out;
}

Incoming decode_any(const uint8_t* data, size_t size, const proto::Limits& limits) {
  check(size >= proto::kHeaderBytes, "frame of ", size, " bytes is shorter than its header");
  Incoming in;
  const uint16_t type = peek_type(data);
  if (is_link_type(type) && std::memcmp(data, proto::kMagic, 4) == 0) {
    const uint32_t n = check_link_header(data, limits);
    check(size - proto::kHeaderBytes == n, link_name(type), " frame: ", size, " bytes for a frame of ",
          proto::kHeaderBytes, " + ", n);
    in.is_link = true;
    in.link = decode_link(type, data + proto::kHeaderBytes, n, limits);
    return in;
  }
  in.frame = proto::decode({data, size}, limits);
  return in;
}

void send(net::Connection& conn, const proto::Frame& f, net::Millis timeout) {
  const std::vector<uint8_t> bytes = proto::encode(f);
  conn.write(bytes.data(), bytes.size(), timeout);
}

void send(net::Connection& conn, const LinkMessage& m, net::Millis timeout) {
  const std::vector<uint8_t> bytes = encode_link(m);
  conn.write(bytes.data(), bytes.size(), timeout);
}

void send(net::Connection& conn, const proto::Frame& f, const LinkMessage& m, net::Millis timeout) {
  const std::vector<uint8_t> a = proto::encode(f), b = encode_link(m);
  conn.write2(a.data(), a.size(), b.data(), b.size(), timeout);
}

namespace {

Incoming receive_frame(net::Connection& conn, net::Millis first_byte, net::Millis timeout,
                       const proto::Limits& limits) {
  uint8_t h[proto::kHeaderBytes];
  conn.read(h, 1, first_byte);
  conn.read(h + 1, sizeof h - 1, timeout);
  const uint16_t type = peek_type(h);
  const bool link = is_link_type(type) && std::memcmp(h, proto::kMagic, 4) == 0;
  uint32_t n = 0;
  proto::Header header{};
  try {
    if (link) {
      n = check_link_header(h, limits);
    } else {
      header = proto::decode_header({h, sizeof h}, limits);
      n = header.payload_bytes;
    }
  } catch (const Error& e) {
    fail("bad frame from ", conn.peer(), ": ", e.what());
  }
  std::vector<uint8_t> payload(n);
  conn.read(payload.data(), n, timeout);
  Incoming in;
  try {
    if (link) {
      in.is_link = true;
      in.link = decode_link(type, payload.data(), n, limits);
    } else {
      in.frame = proto::decode_payload(header, payload, limits);
    }
  } catch (const Error& e) {
    fail("bad frame from ", conn.peer(), ": ", e.what());
  }
  return in;
}

}  // namespace

Incoming receive(net::Connection& conn, net::Millis timeout, const proto::Limits& limits) {
  return receive_frame(conn, timeout, timeout, limits);
}

Incoming receive_within(net::Connection& conn, net::Millis first_byte, net::Millis timeout,
                        const proto::Limits& limits) {
  return receive_frame(conn, first_byte, timeout, limits);
}

Incoming receive_idle(net::Connection& conn, net::Millis timeout, const proto::Limits& limits) {
  // A year: "no deadline", in a duration that the clock arithmetic cannot overflow.
  return receive_frame(conn, net::Millis(int64_t{365} * 24 * 3600 * 1000), timeout, limits);
}

proto::Frame make_hello(proto::Role role, const std::string& name) {
  proto::Hello h;
  h.role = role;
  h.capabilities = proto::kCapF16 | proto::kCapQ8_0 | proto::kCapOutput;
  h.name = name.substr(0, 200);
  while (!h.name.empty() && !proto::wire::valid_utf8(h.name)) h.name.pop_back();
  h.software = "braid 0.1.0";
  return make_frame(h);
}

void check_hello(const Incoming& in, const std::string& who) {
  if (const auto* e = in.get<proto::ErrorMessage>()) fail(who, " refused us: ", e->message);
  const proto::Hello* h = in.get<proto::Hello>();
  check(h != nullptr, who, " did not start with HELLO (sent ", in.name(), ")");
  check(h->min_version <= proto::kVersion && proto::kVersion <= h->max_version, who,
        " speaks protocol versions ", h->min_version, "..", h->max_version, ", this braid speaks ",
        proto::kVersion);
}

}  // namespace braid::dist
