// Frames over an authenticated Connection: the protocol's frames (braid/protocol.h) and
// the runtime's link frames, which say what a connection is for (and stream a model).
//
// These share the protocol's 32-byte header (magic, version, flags 0, reserved 0,
// payload length) with frame types from 256 up, outside the protocol's own range, so
// a peer that does not know them refuses them as unknown types. docs/protocol.md
// ("Link frames") specifies them:
//
//   LINK      256  dialer -> worker, right after HELLO: u8 kind (0 control, 1 input,
//                  2 output), u64 session (input/output: the worker's session id)
//   LINKED    257  worker -> dialer: u64 session (control: the new session's id)
//   ROUTE     258  head -> worker: u16 length + address of the successor worker, u64
//                  its session; answered with LINKED once the worker has linked to it
//   DIAL_BACK 259  head -> a worker that dialed in: u8 kind (1 input, 2 output): open
//                  that link to the head; answered with LINKED
//   MODEL_HEADER 260  head -> a worker without the model file: u64 file size, u32
//                  length + the file's first bytes up to its tensor data (no reply)
//   MODEL_DATA   261  head -> that worker: u16 length + tensor name, u64 offset in the
//                  tensor, u32 length + bytes (no reply); chunks of one tensor in order
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>
#include <variant>
#include <vector>

#include "braid/error.h"
#include "braid/protocol.h"
#include "braid/transport.h"

namespace braid::dist {

enum class LinkKind : uint8_t { kControl = 0, kInput = 1, kOutput = 2 };

struct Link {
  LinkKind kind = LinkKind::kControl;
  uint64_t session = 0;
};
struct Linked {
  uint64_t session = 0;
};
struct Route {
  std::string next;  // HOST:PORT
  uint64_t session = 0;
};
struct DialBack {
  LinkKind kind = LinkKind::kInput;
};
struct ModelHeader {
  uint64_t file_size = 0;
  std::vector<uint8_t> bytes;
};
struct ModelData {
  std::string tensor;
  uint64_t offset = 0;
  std::vector<uint8_t> bytes;
};
using LinkMessage = std::variant<Link, Linked, Route, DialBack, ModelHeader, ModelData>;

inline constexpr uint16_t kLinkFrameBase = 256;

// One frame as received: a protocol frame, or a link frame.
struct Incoming {
  bool is_link = false;
  proto::Frame frame;  // !is_link
  LinkMessage link;    // is_link

  // The message as T, or null when it is something else.
  template <class T>
  const T* get() const {
    if constexpr (std::is_same_v<T, Link> || std::is_same_v<T, Linked> || std::is_same_v<T, Route> ||
                  std::is_same_v<T, DialBack> || std::is_same_v<T, ModelHeader> ||
                  std::is_same_v<T, ModelData>) {
      return is_link ? std::get_if<T>(&link) : nullptr;
    } else {
      return is_link ? nullptr : std::get_if<T>(&frame.message);
    }
  }
  template <class T>
  T* get() {
    return const_cast<T*>(static_cast<const Incoming*>(this)->get<T>());
  }
  std::string name() const;  // "ACTIVATIONS", "LINK", ...
};

// A protocol frame of sequence `seq` (0: none) at `step`.
proto::Frame make_frame(proto::Message m, uint64_t seq = 0, uint32_t step = 0);
// ERROR frame.
proto::Frame make_error(const std::string& message, proto::ErrorCode code = proto::ErrorCode::kInternal,
                        uint64_t seq = 0);

std::vector<uint8_t> encode_link(const LinkMessage& m);
// Decodes one whole frame (protocol or link). Throws braid::Error naming the problem.
Incoming decode_any(const uint8_t* data, size_t size, const proto::Limits& limits = {});

// Writes frames (one TLS write when there are several).
void send(net::Connection& conn, const proto::Frame& f, net::Millis timeout);
void send(net::Connection& conn, const LinkMessage& m, net::Millis timeout);
void send(net::Connection& conn, const proto::Frame& f, const LinkMessage& m, net::Millis timeout);

// Reads and validates one frame. Throws braid::Error for a closed connection, a timeout,
// or a malformed frame: "bad frame from 127.0.0.1:5555: not a braid frame: ...".
Incoming receive(net::Connection& conn, net::Millis timeout, const proto::Limits& limits = {});
// For links that are idle by design (a head waiting for its user): no deadline for the
// next frame to start (interrupt() ends the wait), then `timeout` for the rest of it.
Incoming receive_idle(net::Connection& conn, net::Millis timeout, const proto::Limits& limits = {});
// The next frame must start within first_byte (a peer that owes heartbeats), then
// `timeout` for the rest of it.
Incoming receive_within(net::Connection& conn, net::Millis first_byte, net::Millis timeout,
                        const proto::Limits& limits = {});

// The reply a request expects: an ERROR frame becomes a braid::Error with its message
// (prefixed by who), anything other than T one saying what came instead.
template <class T>
T expect(Incoming&& in, const std::string& who) {
  if (const auto* e = in.get<proto::ErrorMessage>()) fail(who, ": ", e->message);
  T* t = in.get<T>();
  if (!t) fail(who, " sent an unexpected ", in.name(), " frame");
  return std::move(*t);
}

// HELLO frames: ours, and a check of the peer's (its version range must include ours).
proto::Frame make_hello(proto::Role role, const std::string& name);
void check_hello(const Incoming& in, const std::string& who);

}  // namespace braid::dist
