// The wire protocol: golden bytes, round trips of every frame, validation of every
// field, the tensor encodings' error bounds, and mutated frames that must never crash.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "braid/dtype.h"
#include "braid/error.h"
#include "braid/protocol.h"

namespace braid::proto {
namespace {

std::vector<uint8_t> bytes_of(std::initializer_list<int> v) {
  std::vector<uint8_t> out;
  for (int x : v) out.push_back(static_cast<uint8_t>(x));
  return out;
}

// The message of the braid::Error that fn throws ("" when it does not throw).
template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

#define EXPECT_ERROR(expr, substring)                                                        \
  do {                                                                                       \
    const std::string msg_ = error_of([&] { (void)(expr); });                                \
    EXPECT_NE(msg_.find(substring), std::string::npos)                                       \
        << "expected an error containing \"" << (substring) << "\", got \"" << msg_ << "\""; \
  } while (0)

std::vector<float> random_floats(std::mt19937& rng, size_t n, float scale) {
  std::normal_distribution<float> g(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = g(rng);
  return v;
}

// One frame of every type, with every field set to something other than its default.
std::vector<Frame> sample_frames() {
  std::mt19937 rng(1);
  std::vector<Frame> f;
  f.push_back(
      {0, 0, Hello{1, 1, Role::kHead, kCapF16 | kCapTopK | (uint64_t{1} << 40), "héad-1", "braid 0.1.0"}});
  ProfileRequest pr{"llama-3.2-1b-q8_0.gguf", {}, 4, 2048};
  for (int i = 0; i < 32; ++i) pr.model_sha256[i] = static_cast<uint8_t>(i * 7);
  f.push_back({0, 0, pr});
  f.push_back(
      {0, 0, Profile{"pixel-7", 8, 3ull << 30, 8ull << 30, 1.25, {0.5, 0.25, 0.75}, {0.05, 0.025, 0.075}}});
  f.push_back({0, 0, Profile{"no-prefill", 1, 1, 2, 0, {1.0}, {}}});
  f.push_back(
      {0, 0, Load{"m", pr.model_sha256, 3, 11, true, WireType::kQ8_0, LogitsMode::kTopK, 40, 4096, 8}});
  f.push_back({0, 0, Loaded{3, 11, 123456789, 1500.5}});
  const std::vector<float> h = random_floats(rng, 3 * 64, 2.0f);
  for (WireType t : {WireType::kF32, WireType::kF16, WireType::kQ8_0}) {
    Activations a = Activations::from_f32(17, 64, h, t);
    a.all_logits = t == WireType::kF16;
    a.timings = {{0, 5, 1.5f, 0.25f}, {5, 16, 3.0f, 0.0f}};
    f.push_back({0x1122334455667788ull, 42, a});
  }
  Logits full;
  full.pos0 = 9;
  full.n_tokens = 2;
  full.n_vocab = 5;
  full.full = {1, -2, 3.5f, std::numeric_limits<float>::infinity(), -0.0f, 0, 7, 8, 9, 10};
  full.timings = {{16, 22, 4.0f, 0.5f}};
  f.push_back({5, 6, full});
  Logits top;
  top.n_tokens = 2;
  top.n_vocab = 32000;
  top.mode = LogitsMode::kTopK;
  top.top_k = 3;
  top.top = {{7, 9.5f}, {31999, 9.25f}, {0, -1.0f}, {12, 3.0f}, {13, 2.0f}, {14, 1.0f}};
  f.push_back({5, 7, top});
  f.push_back({77, 0, KvTruncate{100}});
  f.push_back({78, 3, SeqReset{}});
  f.push_back({0, 0, Heartbeat{123456789012ull, 3, 3000}});
  f.push_back({0, 0, Assign{3, 2, 7, true}});
  f.push_back({0, 0, Assign{1, 0, 4, false}});
  f.push_back({0, 0, Assign{2, 1, 3, false, true}});
  f.push_back({7, 0, KvRows{KvRowsKind::kFetch, 2, 4, 0, 19, 0, {}}});
  KvRows rows{KvRowsKind::kRows, 2, 4, 16, 3, 8, random_floats(rng, 2 * 2 * 3 * 8, 1.0f)};
  rows.data[5] = -0.0f;
  rows.data[6] = std::numeric_limits<float>::quiet_NaN();
  f.push_back({7, 0, rows});
  f.push_back({7, 0, KvRows{KvRowsKind::kStored, 2, 4, 16, 3, 0, {}}});
  f.push_back({9, 2, ErrorMessage{static_cast<uint32_t>(ErrorCode::kOutOfMemory), "no room for layer 7"}});
  f.push_back({0, 0, ErrorMessage{999, ""}});  // unknown codes pass through
  f.push_back({0, 0, Shutdown{"bye"}});
  f.push_back({0, 0, Probe{false, 65536, 42, std::vector<uint8_t>(1000, 0xab)}});
  f.push_back({0, 0, Probe{true, 0, 42, {}}});
  return f;
}

TEST(Protocol, GoldenHeartbeatBytes) {
  Frame f{0, 0, Heartbeat{0x0102030405060708ull, 9, 0x0a0b0c0d}};
  // clang-format off
  const std::vector<uint8_t> want = bytes_of({
      'B', 'R', 'D', 'F',      // magic
      3, 0,                    // version
      10, 0,                   // type HEARTBEAT
      0, 0, 0, 0,              // flags
      0, 0, 0, 0,              // step
      0, 0, 0, 0, 0, 0, 0, 0,  // sequence_id
      16, 0, 0, 0,             // payload_len
      0, 0, 0, 0,              // reserved
      8, 7, 6, 5, 4, 3, 2, 1,  // time_us
      9, 0, 0, 0,              // in_flight
      13, 12, 11, 10,          // timeout_ms
  });
  // clang-format on
  EXPECT_EQ(encode(f), want);
  EXPECT_EQ(decode(want), f);
}

TEST(Protocol, GoldenActivationsBytes) {
  const float v[2] = {1.0f, -2.0f};
  Activations a = Activations::from_f32(3, 2, v);
  a.timings = {{0, 4, 0.5f, 0.0f}};
  // clang-format off
  const std::vector<uint8_t> want = bytes_of({
      'B', 'R', 'D', 'F', 3, 0, 6, 0, 0, 0, 0, 0,  // magic, version 3, ACTIVATIONS, flags
      5, 0, 0, 0,                                  // step 5
      0x2a, 0, 0, 0, 0, 0, 0, 0,                   // sequence 42
      40, 0, 0, 0, 0, 0, 0, 0,                     // payload 40 bytes, reserved
      3, 0, 0, 0,                                  // pos0
      1, 0, 0, 0,                                  // n_tokens
      2, 0, 0, 0,                                  // dim
      0,                                           // type f32
      0,                                           // all_logits
      1, 0,                                        // n_timings
      0, 0, 0x80, 0x3f, 0, 0, 0, 0xc0,             // 1.0f, -2.0f
      0, 0, 0, 0, 4, 0, 0, 0,                      // timing layers [0, 4)
      0, 0, 0, 0x3f, 0, 0, 0, 0,                   // compute 0.5, wait 0
  });
  // clang-format on
  EXPECT_EQ(encode({42, 5, a}), want);
}

TEST(Protocol, EveryFrameRoundTrips) {
  for (const Frame& f : sample_frames()) {
    SCOPED_TRACE(frame_type_name(static_cast<uint16_t>(f.type())));
    const std::vector<uint8_t> b = encode(f);
    EXPECT_EQ(frame_bytes(b), b.size());
    const Frame g = decode(b);
    EXPECT_EQ(g, f);
    EXPECT_EQ(encode(g), b);  // the encoding is canonical
    const Header h = decode_header(b);
    EXPECT_EQ(h.type, f.type());
    EXPECT_EQ(h.sequence_id, f.sequence_id);
    EXPECT_EQ(h.step, f.step);
    EXPECT_EQ(h.payload_bytes + kHeaderBytes, b.size());
  }
}

TEST(Protocol, SeveralFramesInOneBuffer) {
  std::vector<uint8_t> buf;
  const std::vector<Frame> frames = sample_frames();
  for (const Frame& f : frames) encode_append(f, buf);
  size_t at = 0;
  for (const Frame& f : frames) {
    std::span<const uint8_t> rest(buf.data() + at, buf.size() - at);
    EXPECT_EQ(frame_bytes(rest.first(std::min<size_t>(rest.size(), kHeaderBytes - 1))), 0u);
    const size_t n = frame_bytes(rest);
    ASSERT_GT(n, 0u);
    EXPECT_EQ(decode(rest.first(n)), f);
    at += n;
  }
  EXPECT_EQ(at, buf.size());
}

TEST(Protocol, EveryTruncationIsRefused) {
  for (const Frame& f : sample_frames()) {
    const std::vector<uint8_t> b = encode(f);
    for (size_t n = 0; n < b.size(); ++n) {
      EXPECT_THROW(decode(std::span(b.data(), n)), Error) << "length " << n;
    }
    // A header whose payload_len agrees with the shortened frame: the fields still do
    // not fit (the low byte of payload_len is enough for these payloads' sizes).
    if (b.size() > kHeaderBytes && b[24] != 0) {
      std::vector<uint8_t> c(b.begin(), b.end() - 1);
      c[24] = static_cast<uint8_t>(c[24] - 1);
      EXPECT_THROW(decode(c), Error);
    }
  }
}

TEST(Protocol, HeaderValidation) {
  std::vector<uint8_t> good = encode({0, 0, Heartbeat{1, 2}});
  auto with = [&](size_t offset, uint8_t value) {
    std::vector<uint8_t> b = good;
    b[offset] = value;
    return b;
  };
  std::vector<uint8_t> http(kHeaderBytes, 0);
  std::memcpy(http.data(), "GET / HTTP/1.1", 14);
  EXPECT_ERROR(decode(http), "not a braid frame: it starts with 47 45 54 20 (\"GET \"), not \"BRDF\"");
  EXPECT_ERROR(decode(with(4, 2)), "frame has protocol version 2; this braid speaks version 3");
  EXPECT_ERROR(decode(with(4, 4)), "frame has protocol version 4; this braid speaks version 3");
  EXPECT_ERROR(decode(with(6, 99)), "unknown frame type 99 (protocol version 3 has types 1..15)");
  EXPECT_ERROR(decode(with(6, 0)), "unknown frame type 0");
  EXPECT_ERROR(decode(with(8, 4)), "HEARTBEAT frame: flags 0x4 are not defined in protocol version 3");
  EXPECT_ERROR(decode(with(30, 1)), "HEARTBEAT frame: reserved header field is not 0");
  EXPECT_ERROR(decode(with(16, 1)), "HEARTBEAT frame: sequence_id and step must be 0 (got 1, 0)");
  EXPECT_ERROR(decode(std::span(good.data(), 10)), "frame header needs 32 bytes, got 10");
  std::vector<uint8_t> longer = good;
  longer.push_back(0);
  EXPECT_ERROR(decode(longer), "HEARTBEAT frame: 49 bytes given for a frame of 32 + 16");
  // A payload longer than the fields: trailing bytes are refused.
  std::vector<uint8_t> trailing = good;
  trailing.push_back(0);
  trailing[24] = 17;
  EXPECT_ERROR(decode(trailing), "HEARTBEAT frame: 1 bytes after the last field");
  // The payload limit applies to the header alone (before any payload is read).
  Limits small;
  small.max_payload_bytes = 11;
  EXPECT_ERROR(frame_bytes(good, small), "HEARTBEAT frame: payload of 16 bytes exceeds the limit of 11");
  EXPECT_ERROR(encode({0, 0, Heartbeat{}}, small), "payload of 16 bytes exceeds the limit of 11 bytes");
}

TEST(Protocol, ActivationsValidation) {
  const std::vector<float> v(64, 1.0f);
  Activations a = Activations::from_f32(0, 32, v, WireType::kF32);
  const std::vector<uint8_t> good = encode({1, 0, a});
  auto set_u32 = [&](size_t payload_offset, uint32_t x) {
    std::vector<uint8_t> b = good;
    for (int i = 0; i < 4; ++i) b[kHeaderBytes + payload_offset + i] = static_cast<uint8_t>(x >> (8 * i));
    return b;
  };
  // More tokens than the data holds: the payload ends inside the tensor.
  EXPECT_ERROR(decode(set_u32(4, 3)), "ACTIVATIONS frame: payload ends inside tensor data (384 bytes");
  EXPECT_ERROR(decode(set_u32(4, 1)), "ACTIVATIONS frame: 128 bytes after the last field");
  EXPECT_ERROR(decode(set_u32(4, 0)), "ACTIVATIONS frame: n_tokens is 0");
  EXPECT_ERROR(decode(set_u32(8, 0)), "ACTIVATIONS frame: dim is 0");
  EXPECT_ERROR(decode(set_u32(0, 0xffffffffu)), "ACTIVATIONS frame: positions 4294967295 + 2 overflow");
  std::vector<uint8_t> b = good;
  b[kHeaderBytes + 12] = 7;
  EXPECT_ERROR(decode(b), "ACTIVATIONS frame: tensor type 7 is unknown");
  b = good;
  b[kHeaderBytes + 13] = 2;
  EXPECT_ERROR(decode(b), "ACTIVATIONS frame: all_logits is 2, must be 0 or 1");
  // q8_0 needs rows of whole blocks.
  b = set_u32(8, 16);
  b[kHeaderBytes + 12] = 2;
  EXPECT_ERROR(decode(b), "q8_0 needs dim to be a multiple of 32, got 16");
  // Huge claims fail on the size, not on an allocation.
  EXPECT_ERROR(decode(set_u32(4, 1 << 20)), "payload ends inside tensor data");
  EXPECT_ERROR(decode(set_u32(8, 1 << 20)), "payload ends inside tensor data");
  Limits tight;
  tight.max_tokens = 1;
  EXPECT_ERROR(decode(good, tight), "n_tokens is 2, must be 1..1");
  // Encoding checks the same rules.
  Activations bad = a;
  bad.data.pop_back();
  EXPECT_ERROR(encode({1, 0, bad}),
               "ACTIVATIONS frame: holds 255 bytes of f32 data for 2 x 32 values, which take 256");
  bad = a;
  bad.timings = {{5, 5, 1.0f, 0.0f}};
  EXPECT_ERROR(encode({1, 0, bad}), "stage timing layers [5, 5) are not a non-empty range");
  bad.timings = {{0, 5, NAN, 0.0f}};
  EXPECT_ERROR(encode({1, 0, bad}), "stage compute time is nan ms");
}

TEST(Protocol, MessageFieldValidation) {
  auto refused = [](const Frame& f, const std::string& what) { EXPECT_ERROR(encode(f), what); };
  refused({0, 0, Hello{2, 1, Role::kWorker, 0, "x", ""}}, "HELLO frame: versions 2..1 are not a range");
  refused({0, 0, Hello{1, 1, static_cast<Role>(5), 0, "x", ""}}, "role 5 is not head (0) or worker (1)");
  refused({0, 0, Hello{1, 1, Role::kWorker, 0, "", ""}}, "HELLO frame: name is empty");
  refused({0, 0, Hello{1, 1, Role::kWorker, 0, "bad\xff", ""}}, "name is not valid UTF-8");
  refused({0, 0, Hello{1, 1, Role::kWorker, 0, std::string(5000, 'a'), ""}},
          "name is 5000 bytes long, the limit is 4096");
  refused({0, 0, Profile{"p", 1, 0, 0, 0, {}, {}}}, "PROFILE frame: has 0 layer times");
  refused({0, 0, Profile{"p", 1, 0, 0, 0, {1, 2}, {1}}}, "has 1 prefill times for 2 layers");
  refused({0, 0, Profile{"p", 1, 0, 0, 0, {1, -2}, {}}}, "layer time is -2 ms");
  refused({0, 0, Profile{"p", 1, 0, 0, INFINITY, {1}, {}}}, "output_ms is inf ms");
  refused({0, 0, Load{"m", {}, 4, 4, false, WireType::kF32, LogitsMode::kFull, 0, 0, 1}},
          "LOAD frame: load layers [4, 4)");
  refused({0, 0, Load{"m", {}, 0, 4, false, WireType::kF32, LogitsMode::kTopK, 0, 0, 1}},
          "top_k is 0, must be 1..65536");
  refused({0, 0, Load{"m", {}, 0, 4, false, WireType::kF32, LogitsMode::kFull, 5, 0, 1}},
          "top_k is 5 with full logits, must be 0");
  refused({0, 0, Load{"m", {}, 0, 4, false, static_cast<WireType>(3), LogitsMode::kFull, 0, 0, 1}},
          "activation type 3 is unknown");
  refused({0, 0, Load{"m", {}, 0, 4, false, WireType::kF32, LogitsMode::kFull, 0, 0, 0}},
          "max_sequences is 0");
  refused({0, 0, Loaded{0, 1, 0, -1}}, "LOADED frame: load_ms is -1 ms");
  Logits l;
  l.n_tokens = 1;
  l.n_vocab = 4;
  l.full = {1, 2, 3};
  refused({1, 0, l}, "LOGITS frame: holds 3 logits for 1 x 4");
  l.mode = LogitsMode::kTopK;
  l.full.clear();
  l.top_k = 5;
  refused({1, 0, l}, "top_k is 5, must be 1..4");
  l.top_k = 1;
  l.top = {{4, 1.0f}};
  refused({1, 0, l}, "top-k token 4 is not below n_vocab 4");
  refused({0, 0, Probe{true, 5, 0, {}}}, "PROBE frame: an echo asks for 5 bytes back");
  refused({0, 0, Probe{false, 0xffffffffu, 0, {}}}, "more than a frame may carry");
  refused({3, 0, Heartbeat{}}, "HEARTBEAT frame: sequence_id and step must be 0");
  refused({0, 0, Assign{0, 0, 4, false}}, "ASSIGN frame: epoch is 0");
  refused({0, 0, Assign{1, 4, 2, false}}, "ASSIGN frame: layers [4, 2) are not a range within 65536");
  refused({0, 0, Assign{1, 3, 3, false}}, "ASSIGN frame: assigns no layers and no output");
  refused({0, 0, Assign{1, 0, 70000, false}}, "layers [0, 70000) are not a range within 65536");
  refused({1, 0, Assign{1, 0, 1, false}}, "ASSIGN frame: sequence_id and step must be 0");
  refused({0, 0, Shutdown{"\xc0\x80"}}, "reason is not valid UTF-8");  // overlong NUL
}

TEST(Protocol, KvRowsValidation) {
  auto refused = [](const Frame& f, const std::string& what) { EXPECT_ERROR(encode(f), what); };
  const std::vector<float> two(2 * 1 * 2 * 4, 1.0f);  // 2 x 1 layer x 2 positions x kv_dim 4
  refused({1, 0, KvRows{KvRowsKind::kRows, 3, 3, 0, 2, 4, two}}, "KV_ROWS frame: KV layers [3, 3) are not");
  refused({1, 0, KvRows{KvRowsKind::kRows, 0, 1, 0, 0, 4, {}}}, "KV_ROWS frame: n_pos is 0");
  refused({1, 0, KvRows{KvRowsKind::kRows, 0, 1, 0, 2, 0, {}}}, "KV_ROWS frame: kv_dim is 0");
  refused({1, 0, KvRows{KvRowsKind::kRows, 0, 1, 0, 2, 4, {1, 2, 3}}},
          "KV_ROWS frame: holds 3 values for 2 x 1 layers x 2 positions x 4");
  refused({1, 0, KvRows{KvRowsKind::kRows, 0, 1, 0xfffffff0u, 2, 4, two}}, "positions [4294967280, ");
  refused({1, 0, KvRows{KvRowsKind::kFetch, 0, 1, 0, 2, 4, {}}}, "KV_ROWS frame: a fetch carries rows");
  refused({1, 0, KvRows{KvRowsKind::kStored, 0, 1, 0, 2, 0, two}}, "KV_ROWS frame: a stored carries rows");
  refused({1, 0, KvRows{static_cast<KvRowsKind>(3), 0, 1, 0, 2, 0, {}}}, "KV_ROWS frame: unknown kind 3");

  // Bytes that lie: the decoder refuses them before allocating.
  const std::vector<uint8_t> good = encode({1, 0, KvRows{KvRowsKind::kRows, 0, 1, 0, 2, 4, two}});
  EXPECT_EQ(decode(good).sequence_id, 1u);
  auto set_u32 = [&](size_t payload_offset, uint32_t x) {
    std::vector<uint8_t> b = good;
    for (int i = 0; i < 4; ++i) b[kHeaderBytes + payload_offset + i] = static_cast<uint8_t>(x >> (8 * i));
    return b;
  };
  std::vector<uint8_t> b = good;
  b[kHeaderBytes] = 9;
  EXPECT_ERROR(decode(b), "KV_ROWS frame: unknown kind 9");
  EXPECT_ERROR(decode(set_u32(1, 2)), "KV_ROWS frame: KV layers [2, 1) are not a non-empty range");
  EXPECT_ERROR(decode(set_u32(5, 2)), "payload ends inside KV rows (128 bytes needed at offset 21, 64 left)");
  EXPECT_ERROR(decode(set_u32(5, 0xffffu)), "KV_ROWS frame: payload ends inside KV rows");  // 65536 layers
  EXPECT_ERROR(decode(set_u32(13, 1u << 20)), "KV_ROWS frame: payload ends inside KV rows");
  EXPECT_ERROR(decode(set_u32(13, 1)), "KV_ROWS frame: 32 bytes after the last field");
  EXPECT_ERROR(decode(set_u32(17, 0xffffffffu)),
               "KV_ROWS frame: n_pos 2 or kv_dim 4294967295 beyond the limits");
  b = good;
  b[kHeaderBytes] = static_cast<uint8_t>(KvRowsKind::kFetch);  // rows follow a fetch
  EXPECT_ERROR(decode(b), "KV_ROWS frame: 64 bytes after the last field");
  // KV_ROWS belongs to a sequence.
  EXPECT_EQ(decode(encode({0, 0, KvRows{KvRowsKind::kFetch, 0, 1, 0, 1, 0, {}}})).sequence_id, 0u);
}

TEST(Protocol, DecoderChecksDecodedFields) {
  // A PROFILE whose layer count exceeds what the payload holds must fail on the size,
  // before allocating.
  std::vector<uint8_t> b = encode({0, 0, Profile{"p", 1, 0, 0, 0, {1, 2}, {}}});
  const size_t n_layers_at = kHeaderBytes + 2 + 1 + 4 + 8 + 8 + 8;
  b[n_layers_at + 3] = 0x10;  // 2 -> 0x10000002 layers
  EXPECT_ERROR(decode(b), "PROFILE frame: n_layers is 268435458, the limit is 65536");
  b[n_layers_at + 3] = 0;
  b[n_layers_at + 1] = 0x10;  // 4098 layers: under the limit, over the payload
  EXPECT_ERROR(decode(b), "PROFILE frame: payload ends inside layer_ms (4098 x 8 bytes");
  // LOGITS with a vocabulary that does not fit the payload.
  Logits l;
  l.n_tokens = 1;
  l.n_vocab = 2;
  l.full = {1, 2};
  b = encode({1, 0, l});
  b[kHeaderBytes + 8 + 3] = 0x7f;
  EXPECT_ERROR(decode(b), "LOGITS frame: payload ends inside logits");
  // q8_0 data with a -128 or a non-finite scale.
  const std::vector<float> v(32, 0.5f);
  b = encode({1, 0, Activations::from_f32(0, 32, v, WireType::kQ8_0)});
  const size_t data_at = kHeaderBytes + 16;
  std::vector<uint8_t> c = b;
  c[data_at + 2 + 5] = 0x80;
  EXPECT_ERROR(decode(c), "ACTIVATIONS frame: q8_0 block 0 holds -128");
  c = b;
  c[data_at + 1] = 0x7c;  // scale = +inf
  c[data_at] = 0;
  EXPECT_ERROR(decode(c), "q8_0 block 0 has scale inf");
  c[data_at + 1] = 0xbc;  // -1.0
  EXPECT_ERROR(decode(c), "q8_0 block 0 has scale -1");
}

TEST(Protocol, F32IsBitExact) {
  std::vector<float> v = {0.0f,
                          -0.0f,
                          1.0f,
                          std::numeric_limits<float>::denorm_min(),
                          std::numeric_limits<float>::max(),
                          -std::numeric_limits<float>::infinity(),
                          std::bit_cast<float>(0x7fc12345u),
                          std::bit_cast<float>(0xffbfffffu)};
  std::mt19937 rng(3);
  for (int i = 0; i < 1000; ++i) v.push_back(std::bit_cast<float>(static_cast<uint32_t>(rng())));
  const Frame f{1, 2, Activations::from_f32(0, 8, v)};
  const Frame g = decode(encode(f));
  const std::vector<float> out = std::get<Activations>(g.message).to_f32();
  ASSERT_EQ(out.size(), v.size());
  EXPECT_EQ(std::memcmp(out.data(), v.data(), v.size() * 4), 0);
}

TEST(Protocol, F16ErrorBound) {
  std::mt19937 rng(4);
  std::vector<float> v;
  for (float scale : {1e-6f, 1e-3f, 1.0f, 100.0f, 20000.0f}) {
    std::vector<float> r = random_floats(rng, 4096, scale);
    v.insert(v.end(), r.begin(), r.end());
  }
  for (float& x : v) x = std::clamp(x, -65504.0f, 65504.0f);
  const std::vector<float> out = Activations::from_f32(0, 64, v, WireType::kF16).to_f32();
  ASSERT_EQ(out.size(), v.size());
  for (size_t i = 0; i < v.size(); ++i) {
    const float bound =
        std::fabs(v[i]) >= std::ldexp(1.0f, -14) ? std::ldexp(std::fabs(v[i]), -11) : std::ldexp(1.0f, -25);
    ASSERT_LE(std::fabs(out[i] - v[i]), bound) << v[i];
  }
  // Infinities and NaN pass; finite values beyond the f16 range are refused.
  const float special[2] = {INFINITY, NAN};
  const std::vector<float> s = Activations::from_f32(0, 2, special, WireType::kF16).to_f32();
  EXPECT_EQ(s[0], INFINITY);
  EXPECT_TRUE(std::isnan(s[1]));
  const float big[1] = {70000.0f};
  EXPECT_ERROR(Activations::from_f32(0, 1, big, WireType::kF16), "f16 activations cannot carry 70000");
}

TEST(Protocol, Q8_0ErrorBound) {
  std::mt19937 rng(5);
  std::vector<float> v;
  for (float scale : {1e-9f, 1e-5f, 1e-2f, 1.0f, 300.0f, 1e5f}) {
    std::vector<float> r = random_floats(rng, 32 * 64, scale);
    v.insert(v.end(), r.begin(), r.end());
  }
  v.insert(v.end(), 32, 0.0f);  // an all-zero block
  std::vector<float> outlier(32, 0.01f);
  outlier[7] = -50.0f;
  v.insert(v.end(), outlier.begin(), outlier.end());
  const Activations a = Activations::from_f32(0, 64, v, WireType::kQ8_0);
  EXPECT_EQ(a.data.size(), v.size() / 32 * 34);
  const std::vector<float> out = a.to_f32();
  for (size_t b = 0; b < v.size() / 32; ++b) {
    float amax = 0;
    for (int i = 0; i < 32; ++i) amax = std::max(amax, std::fabs(v[b * 32 + i]));
    const float bound = amax * (1 + std::ldexp(1.0f, -10)) / 254 + std::ldexp(1.0f, -25);
    for (int i = 0; i < 32; ++i) {
      const size_t k = b * 32 + i;
      ASSERT_LE(std::fabs(out[k] - v[k]), bound) << "block " << b << " value " << v[k];
    }
  }
  // The block holding amax reproduces it within half a step, never clipped.
  EXPECT_NEAR(out[v.size() - 32 + 7], -50.0f, 50.0f / 254 * 1.001f);
  const float bad[32] = {NAN};
  EXPECT_ERROR(Activations::from_f32(0, 32, bad, WireType::kQ8_0), "q8_0 cannot carry the non-finite value");
  std::vector<float> huge(32, 1e7f);
  EXPECT_ERROR(Activations::from_f32(0, 32, huge, WireType::kQ8_0), "exceeds the f16 range");
  std::vector<float> odd(16, 1.0f);
  EXPECT_ERROR(Activations::from_f32(0, 16, odd, WireType::kQ8_0),
               "q8_0 activations need a dimension that is a multiple of 32, got 16");
  EXPECT_ERROR(Activations::from_f32(0, 32, odd, WireType::kF32),
               "tensor of 16 values is not a whole number of rows of 32");
}

TEST(Protocol, MutatedFramesNeverCrash) {
  // Random byte flips, truncations and insertions of valid frames: each decodes to a
  // frame that re-encodes to the same bytes, or throws braid::Error.
  std::mt19937 rng(6);
  const std::vector<Frame> frames = sample_frames();
  int decoded = 0, refused = 0;
  for (int it = 0; it < 20000; ++it) {
    std::vector<uint8_t> b = encode(frames[rng() % frames.size()]);
    const int edits = 1 + static_cast<int>(rng() % 3);
    for (int e = 0; e < edits; ++e) {
      const size_t at = rng() % b.size();
      switch (rng() % 4) {
        case 0:
          b[at] ^= static_cast<uint8_t>(1 << (rng() % 8));
          break;
        case 1:
          b[at] = static_cast<uint8_t>(rng());
          break;
        case 2:
          b.resize(std::max<size_t>(at, 1));
          break;
        default:
          b.insert(b.begin() + static_cast<long>(at), static_cast<uint8_t>(rng()));
          break;
      }
    }
    try {
      const Frame f = decode(b);
      EXPECT_EQ(encode(f), b);
      if (auto* a = std::get_if<Activations>(&f.message)) (void)a->to_f32();
      ++decoded;
    } catch (const Error&) {
      ++refused;
    }
  }
  EXPECT_GT(decoded, 1000);  // many flips land in values, which stay valid
  EXPECT_GT(refused, 5000);
}

TEST(Protocol, Names) {
  EXPECT_EQ(frame_type_name(6), "ACTIVATIONS");
  EXPECT_EQ(frame_type_name(13), "PROBE");
  EXPECT_EQ(frame_type_name(0), "type 0");
  EXPECT_STREQ(wire_type_name(WireType::kQ8_0), "q8_0");
  EXPECT_EQ(wire_bytes(WireType::kQ8_0, 3, 64), 3u * 2 * 34);
  EXPECT_EQ(wire_bytes(WireType::kF16, 3, 10), 60u);
}

}  // namespace
}  // namespace braid::proto
