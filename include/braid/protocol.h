// braid's wire protocol between the head and the workers: versioned, length-prefixed
// binary frames, every integer little-endian. docs/protocol.md specifies each frame byte
// by byte; this header is the codec. Encoders and decoders work on byte buffers only
// (the transport moves the bytes), and the decoder validates every field before the
// caller sees it: sizes against the payload and the limits, enums, strings (bounded,
// UTF-8), tensor sizes against n_tokens x dim x dtype. Anything wrong throws braid::Error
// with one line naming the frame and the field; no input makes it read out of bounds.
//
//   std::vector<uint8_t> bytes = braid::proto::encode(frame);
//   ... send, receive ...
//   size_t need = braid::proto::frame_bytes(buf);     // 0: header not complete yet
//   if (need && buf.size() >= need) {
//     braid::proto::Frame f = braid::proto::decode({buf.data(), need});
//     if (auto* a = std::get_if<braid::proto::Activations>(&f.message)) ...
//   }
//
// Frame = 32-byte header + payload:
//   offset  0  u32  magic        "BRDF" (42 52 44 46)
//           4  u16  version      kVersion; any other is refused
//           6  u16  type         FrameType
//           8  u32  flags        none defined in version 2: must be 0
//          12  u32  step         decode step of the sequence (0 where it does not apply)
//          16  u64  sequence_id  the sequence the frame belongs to (0 where none)
//          24  u32  payload_len  bytes after the header, at most Limits::max_payload_bytes
//          28  u32  reserved     must be 0
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <variant>
#include <vector>

namespace braid::proto {

// Version 2 added ASSIGN and HEARTBEAT's timeout (failure recovery); version 3 added
// KV_ROWS and ASSIGN's keep_kv (runtime balancing moves KV caches instead of replaying).
inline constexpr uint16_t kVersion = 3;
inline constexpr size_t kHeaderBytes = 32;
inline constexpr uint8_t kMagic[4] = {'B', 'R', 'D', 'F'};

enum class FrameType : uint16_t {
  kHello = 1,           // both ways, first frame on a connection: who is speaking
  kProfileRequest = 2,  // head -> worker: measure this model
  kProfile = 3,         // worker -> head: what it measured
  kLoad = 4,            // head -> worker: hold these layers
  kLoaded = 5,          // worker -> head: done
  kActivations = 6,     // stage -> next stage: hidden states of a batch of tokens
  kLogits = 7,          // last stage -> head: logits (full or top-k)
  kKvTruncate = 8,      // head -> workers: keep the first n positions of a sequence
  kSeqReset = 9,        // head -> workers: drop a sequence and its KV cache
  kHeartbeat = 10,      // both ways, periodically: still alive
  kError = 11,          // either way: what went wrong (code + message)
  kShutdown = 12,       // head -> worker: stop
  kProbe = 13,          // either way: link latency / bandwidth probe and its echo
  kAssign = 14,         // head -> worker: hold these layers from now on (after a re-plan)
  kKvRows = 15,         // either way: a sequence's KV cache rows of some layers (a move)
};
// "ACTIVATIONS", "HELLO", ...; "type 99" for unknown values.
std::string frame_type_name(uint16_t type);

// What a decoder accepts. Encoders check the same limits, so a braid never sends a frame
// its peer (with the same limits) would refuse.
struct Limits {
  uint32_t max_payload_bytes = 256u << 20;  // 256 MiB
  uint32_t max_string_bytes = 4096;
  uint32_t max_layers = 1 << 16;  // PROFILE layer counts, LOAD / timing layer indices
  uint32_t max_tokens = 1 << 20;  // per ACTIVATIONS / LOGITS frame
  uint32_t max_dim = 1 << 20;     // hidden size
  uint32_t max_vocab = 1 << 24;
  uint32_t max_top_k = 1 << 16;
  uint16_t max_timings = 1024;  // stage timings per frame
};

// ---- Tensors on the wire ----------------------------------------------------------------
// Activations travel as n_tokens rows of dim values in one of:
//   kF32  raw IEEE binary32, 4 bytes each: bit-exact (the default; results identical to
//         one device).
//   kF16  IEEE binary16, 2 bytes each, round to nearest even: |x - y| <= 2^-11 |x| for
//         |x| >= 2^-14, <= 2^-25 below. Values beyond +-65504 are refused (they would
//         become infinities); infinities and NaNs pass through.
//   kQ8_0 llama.cpp's block_q8_0 along each row: per 32 values an f16 scale d then 32
//         int8 q, value = q * d. d is amax/127 rounded up to f16, so |q| <= 127 and
//         |x - y| <= d / 2 <= amax * (1 + 2^-10) / 254 + 2^-25 per block. dim must be a
//         multiple of 32; non-finite values are refused.
enum class WireType : uint8_t { kF32 = 0, kF16 = 1, kQ8_0 = 2 };
const char* wire_type_name(WireType t);
// Bytes of n_tokens x dim values; throws braid::Error for q8_0 with dim % 32 != 0.
uint64_t wire_bytes(WireType t, uint64_t n_tokens, uint64_t dim);
// values.size() must be a multiple of dim. Throws braid::Error for values the type
// cannot carry (see above).
std::vector<uint8_t> encode_tensor(std::span<const float> values, uint32_t dim, WireType t);
// out.size() values from data (which must hold exactly wire_bytes of them).
void decode_tensor(std::span<const uint8_t> data, WireType t, uint32_t dim, std::span<float> out);

// ---- Messages ---------------------------------------------------------------------------

// How long a stage took for the batch a frame carries; each stage appends its own, so
// the head (and its balancer) sees every stage's time with every token.
struct StageTiming {
  uint32_t first_layer = 0;  // [first_layer, last_layer): the stage's range
  uint32_t last_layer = 0;
  float compute_ms = 0;  // running its layers
  float wait_ms = 0;     // queued before it could start
  bool operator==(const StageTiming&) const = default;
};

enum class Role : uint8_t { kHead = 0, kWorker = 1 };

// Capability bits in HELLO; unknown bits are kept and ignored (newer peers).
inline constexpr uint64_t kCapF16 = 1 << 0;     // accepts f16 activations
inline constexpr uint64_t kCapQ8_0 = 1 << 1;    // accepts q8_0 activations
inline constexpr uint64_t kCapTopK = 1 << 2;    // can send top-k logits
inline constexpr uint64_t kCapOutput = 1 << 3;  // can run the output norm + head

struct Hello {
  uint16_t min_version = kVersion;  // protocol versions the sender speaks
  uint16_t max_version = kVersion;
  Role role = Role::kWorker;
  uint64_t capabilities = 0;
  std::string name;      // device name, e.g. "pixel-7"
  std::string software;  // e.g. "braid 0.1.0"
  bool operator==(const Hello&) const = default;
};

using Sha256 = std::array<uint8_t, 32>;

struct ProfileRequest {
  std::string model_id;   // the model file's name, for messages
  Sha256 model_sha256{};  // the file's SHA-256; all zero when unknown
  uint32_t threads = 0;   // 0: the worker picks
  uint32_t context_length = 0;
  bool operator==(const ProfileRequest&) const = default;
};

struct Profile {
  std::string device_name;
  uint32_t threads = 0;
  uint64_t memory_budget_bytes = 0;  // what braid may use
  uint64_t memory_total_bytes = 0;
  double output_ms = 0;                  // output norm + head, one token
  std::vector<double> layer_ms;          // decode, one token, per layer
  std::vector<double> prefill_layer_ms;  // per prompt token per layer; empty or layer_ms.size()
  bool operator==(const Profile&) const = default;
};

enum class LogitsMode : uint8_t { kFull = 0, kTopK = 1 };

struct Load {
  std::string model_id;
  Sha256 model_sha256{};
  uint32_t first_layer = 0;  // [first_layer, last_layer)
  uint32_t last_layer = 0;
  bool runs_output = false;                    // the last stage: output norm + head
  WireType activation_type = WireType::kF32;   // what it sends on
  LogitsMode logits_mode = LogitsMode::kFull;  // when runs_output
  uint32_t top_k = 0;                          // kTopK: entries per token (>= 1), else 0
  uint32_t context_length = 0;
  uint32_t max_sequences = 1;
  bool operator==(const Load&) const = default;
};

struct Loaded {
  uint32_t first_layer = 0;
  uint32_t last_layer = 0;
  uint64_t resident_bytes = 0;
  double load_ms = 0;
  bool operator==(const Loaded&) const = default;
};

// Hidden states of n_tokens consecutive positions pos0.. of the frame's sequence.
struct Activations {
  uint32_t pos0 = 0;
  uint32_t n_tokens = 0;  // >= 1
  uint32_t dim = 0;       // >= 1
  WireType type = WireType::kF32;
  bool all_logits = false;    // the head wants logits for every token, not just the last
  std::vector<uint8_t> data;  // wire_bytes(type, n_tokens, dim) bytes
  std::vector<StageTiming> timings;

  // n_tokens rows of dim floats, encoded as `type`.
  static Activations from_f32(uint32_t pos0, uint32_t dim, std::span<const float> values,
                              WireType type = WireType::kF32);
  std::vector<float> to_f32() const;
  bool operator==(const Activations&) const = default;
};

struct TopLogit {
  uint32_t token = 0;
  float logit = 0;
  bool operator==(const TopLogit&) const = default;
};

struct Logits {
  uint32_t pos0 = 0;
  uint32_t n_tokens = 0;  // >= 1
  uint32_t n_vocab = 0;   // >= 1
  LogitsMode mode = LogitsMode::kFull;
  uint32_t top_k = 0;         // kTopK: 1..n_vocab entries per token; kFull: 0
  std::vector<float> full;    // kFull: n_tokens x n_vocab, bit-exact
  std::vector<TopLogit> top;  // kTopK: n_tokens x top_k, tokens < n_vocab
  std::vector<StageTiming> timings;
  bool operator==(const Logits& o) const;  // bitwise on floats (NaN == same NaN)
};

struct KvTruncate {
  uint32_t keep = 0;  // positions [0, keep) stay; 0 empties the cache but keeps the slot
  bool operator==(const KvTruncate&) const = default;
};

struct SeqReset {
  bool operator==(const SeqReset&) const = default;
};

struct Heartbeat {
  uint64_t time_us = 0;    // sender's monotonic clock
  uint32_t in_flight = 0;  // sequences the sender is working on
  // The sender takes the peer for lost after this long without a frame from it; the
  // peer may hold the sender to the same bound (a worker ends the session of a head that
  // went silent). 0: not given.
  uint32_t timeout_ms = 0;
  bool operator==(const Heartbeat&) const = default;
};

enum class ErrorCode : uint32_t {
  kInternal = 1,
  kBadFrame = 2,
  kUnsupported = 3,
  kModelMismatch = 4,
  kOutOfMemory = 5,
  kNotLoaded = 6,
  kUnknownSequence = 7,
  kShuttingDown = 8,
};
struct ErrorMessage {
  uint32_t code = static_cast<uint32_t>(ErrorCode::kInternal);  // ErrorCode; others kept
  std::string message;
  bool operator==(const ErrorMessage&) const = default;
};

struct Shutdown {
  std::string reason;
  bool operator==(const Shutdown&) const = default;
};

// Latency: a probe with no padding, echoed at once. Bandwidth: padding of N bytes, or
// ask for reply_bytes of padding back.
struct Probe {
  bool is_reply = false;
  uint32_t reply_bytes = 0;  // padding the echo should carry
  uint64_t sent_us = 0;      // the prober's clock; the echo copies it
  std::vector<uint8_t> padding;
  bool operator==(const Probe&) const = default;
};

// The head re-planned (a worker was lost, or balancing moves layers): a worker that
// holds layers in this session drops its data links and holds [first_layer, last_layer)
// (and the output when runs_output) from now on. Without keep_kv every KV cache goes
// (after a loss: the head replays each live sequence); with keep_kv the caches of the
// layers in both the old and the new range stay, and the head moves the rest in with
// KV_ROWS. Answered with LOADED, or ERROR (model mismatch when a streamed model lacks
// tensors of the new range).
struct Assign {
  uint32_t epoch = 1;  // the ring's generation, >= 1 (for logs)
  uint32_t first_layer = 0;
  uint32_t last_layer = 0;   // first <= last; empty only when runs_output
  bool runs_output = false;  // the last stage: output norm + head
  bool keep_kv = false;      // keep the caches of the layers that stay
  bool operator==(const Assign&) const = default;
};

// A sequence's (the frame's sequence_id) KV cache rows of layers [first_layer,
// last_layer), positions [pos0, pos0 + n_pos), on the control link:
//   kFetch  head -> the layers' old owner: send these rows (no data); answered kRows.
//   kRows   the rows: the old owner's answer, or head -> the new owner to store them
//           (positions before pos0 must be there already); answered kStored.
//   kStored the new owner holds them (no data).
// data: per layer, the K rows then the V rows, n_pos x kv_dim f32 each: the cache's own
// bits, so a moved cache computes exactly what a replayed one would.
enum class KvRowsKind : uint8_t { kFetch = 0, kRows = 1, kStored = 2 };
struct KvRows {
  KvRowsKind kind = KvRowsKind::kFetch;
  uint32_t first_layer = 0;  // first < last
  uint32_t last_layer = 0;
  uint32_t pos0 = 0;
  uint32_t n_pos = 0;                      // >= 1
  uint32_t kv_dim = 0;                     // floats per position per layer; kRows: >= 1, else 0
  std::vector<float> data;                 // kRows: 2 x layers x n_pos x kv_dim values; else empty
  bool operator==(const KvRows& o) const;  // bitwise on floats
};

using Message = std::variant<Hello, ProfileRequest, Profile, Load, Loaded, Activations, Logits, KvTruncate,
                             SeqReset, Heartbeat, ErrorMessage, Shutdown, Probe, Assign, KvRows>;

struct Frame {
  uint64_t sequence_id = 0;
  uint32_t step = 0;
  Message message;
  FrameType type() const;
  bool operator==(const Frame&) const = default;
};

struct Header {
  FrameType type;
  uint32_t step = 0;
  uint64_t sequence_id = 0;
  uint32_t payload_bytes = 0;
};

// ---- Codec ------------------------------------------------------------------------------

// The frame's bytes. Throws braid::Error when the message breaks the protocol or the
// limits (sizes that disagree, a string too long, a payload over max_payload_bytes).
std::vector<uint8_t> encode(const Frame& frame, const Limits& limits = {});
// Appends the frame to out (for batching several frames into one write).
void encode_append(const Frame& frame, std::vector<uint8_t>& out, const Limits& limits = {});

// Reads and validates a header (bytes holds at least kHeaderBytes).
Header decode_header(std::span<const uint8_t> bytes, const Limits& limits = {});
// The size of the frame that starts at bytes: 0 while fewer than kHeaderBytes are there,
// else kHeaderBytes + payload_len (after validating the header).
size_t frame_bytes(std::span<const uint8_t> bytes, const Limits& limits = {});
// Decodes exactly one whole frame: bytes.size() must equal its frame_bytes().
Frame decode(std::span<const uint8_t> bytes, const Limits& limits = {});
// Decodes a payload whose header was read separately.
Frame decode_payload(const Header& header, std::span<const uint8_t> payload, const Limits& limits = {});

}  // namespace braid::proto
