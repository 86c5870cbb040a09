// Frame codec (docs/protocol.md). Each message has a writer, a reader and one validator;
// encode runs the validator before writing and decode after reading, so both sides hold
// every frame to the same rules.
#include "braid/protocol.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "braid/error.h"
#include "dist/protocol_wire.h"

namespace braid::proto {

using wire::Reader;
using wire::Writer;

std::string frame_type_name(uint16_t type) {
  static const char* const kNames[] = {
      "HELLO",     "PROFILE_REQUEST", "PROFILE", "LOAD",     "LOADED", "ACTIVATIONS", "LOGITS", "KV_TRUNCATE",
      "SEQ_RESET", "HEARTBEAT",       "ERROR",   "SHUTDOWN", "PROBE",  "ASSIGN",      "KV_ROWS"};
  if (type >= 1 && type <= std::size(kNames)) return kNames[type - 1];
  return cat("type ", type);
}

namespace {

constexpr uint16_t kLastType = static_cast<uint16_t>(FrameType::kKvRows);
constexpr size_t kTimingBytes = 16;

// ---- Validation: one function per message, used by encode and decode ------------------

class Check {
 public:
  Check(FrameType t, const Limits& limits)
      : name_(frame_type_name(static_cast<uint16_t>(t))), limits_(limits) {}
  const Limits& limits() const { return limits_; }

  template <class... Args>
  void operator()(bool cond, Args&&... what) const {
    if (!cond) fail(name_, " frame: ", std::forward<Args>(what)...);
  }
  void str(const std::string& s, const char* field) const {
    (*this)(s.size() <= limits_.max_string_bytes, field, " is ", s.size(), " bytes long, the limit is ",
            limits_.max_string_bytes);
    (*this)(wire::valid_utf8(s), field, " is not valid UTF-8");
  }
  void ms(double v, const char* field) const {
    (*this)(std::isfinite(v) && v >= 0, field, " is ", v, " ms (must be finite and >= 0)");
  }
  void layers(uint32_t first, uint32_t last, const char* what) const {
    (*this)(first < last && last <= limits_.max_layers, what, " layers [", first, ", ", last,
            ") are not a non-empty range within ", limits_.max_layers);
  }
  void timings(const std::vector<StageTiming>& t) const {
    (*this)(t.size() <= limits_.max_timings, t.size(), " stage timings, the limit is ", limits_.max_timings);
    for (const StageTiming& s : t) {
      layers(s.first_layer, s.last_layer, "stage timing");
      ms(s.compute_ms, "stage compute time");
      ms(s.wait_ms, "stage wait time");
    }
  }
  void tokens(uint32_t pos0, uint32_t n_tokens) const {
    (*this)(n_tokens >= 1 && n_tokens <= limits_.max_tokens, "n_tokens is ", n_tokens, ", must be 1..",
            limits_.max_tokens);
    (*this)(uint64_t{pos0} + n_tokens <= (uint64_t{1} << 32), "positions ", pos0, " + ", n_tokens,
            " overflow");
  }
  void no_sequence(uint64_t sequence_id, uint32_t step) const {
    (*this)(sequence_id == 0 && step == 0, "sequence_id and step must be 0 (got ", sequence_id, ", ", step,
            ")");
  }

 private:
  std::string name_;
  const Limits& limits_;
};

void validate(const Hello& m, const Check& v) {
  v(m.min_version >= 1 && m.min_version <= m.max_version, "versions ", m.min_version, "..", m.max_version,
    " are not a range");
  v(m.role == Role::kHead || m.role == Role::kWorker, "role ", static_cast<int>(m.role),
    " is not head (0) or worker (1)");
  v(!m.name.empty(), "name is empty");
  v.str(m.name, "name");
  v.str(m.software, "software");
}

void validate(const ProfileRequest& m, const Check& v) { v.str(m.model_id, "model_id"); }

void validate(const Profile& m, const Check& v) {
  v.str(m.device_name, "device_name");
  v.ms(m.output_ms, "output_ms");
  v(!m.layer_ms.empty() && m.layer_ms.size() <= v.limits().max_layers, "has ", m.layer_ms.size(),
    " layer times, must be 1..", v.limits().max_layers);
  v(m.prefill_layer_ms.empty() || m.prefill_layer_ms.size() == m.layer_ms.size(), "has ",
    m.prefill_layer_ms.size(), " prefill times for ", m.layer_ms.size(), " layers");
  for (double t : m.layer_ms) v.ms(t, "layer time");
  for (double t : m.prefill_layer_ms) v.ms(t, "prefill layer time");
}

void validate(const Load& m, const Check& v) {
  v.str(m.model_id, "model_id");
  v.layers(m.first_layer, m.last_layer, "load");
  v(m.activation_type <= WireType::kQ8_0, "activation type ", static_cast<int>(m.activation_type),
    " is unknown");
  v(m.logits_mode <= LogitsMode::kTopK, "logits mode ", static_cast<int>(m.logits_mode), " is unknown");
  if (m.logits_mode == LogitsMode::kTopK) {
    v(m.top_k >= 1 && m.top_k <= v.limits().max_top_k, "top_k is ", m.top_k, ", must be 1..",
      v.limits().max_top_k);
  } else {
    v(m.top_k == 0, "top_k is ", m.top_k, " with full logits, must be 0");
  }
  v(m.max_sequences >= 1, "max_sequences is 0");
}

void validate(const Loaded& m, const Check& v) {
  v.layers(m.first_layer, m.last_layer, "loaded");
  v.ms(m.load_ms, "load_ms");
}

void validate(const Activations& m, const Check& v) {
  v.tokens(m.pos0, m.n_tokens);
  v(m.dim >= 1 && m.dim <= v.limits().max_dim, "dim is ", m.dim, ", must be 1..", v.limits().max_dim);
  v(m.type <= WireType::kQ8_0, "tensor type ", static_cast<int>(m.type), " is unknown");
  v(m.type != WireType::kQ8_0 || m.dim % 32 == 0, "q8_0 needs dim to be a multiple of 32, got ", m.dim);
  const uint64_t need = wire_bytes(m.type, m.n_tokens, m.dim);
  v(m.data.size() == need, "holds ", m.data.size(), " bytes of ", wire_type_name(m.type), " data for ",
    m.n_tokens, " x ", m.dim, " values, which take ", need);
  const std::string problem = wire::tensor_problem(m.data, m.type);
  v(problem.empty(), problem);
  v.timings(m.timings);
}

void validate(const Logits& m, const Check& v) {
  v.tokens(m.pos0, m.n_tokens);
  v(m.n_vocab >= 1 && m.n_vocab <= v.limits().max_vocab, "n_vocab is ", m.n_vocab, ", must be 1..",
    v.limits().max_vocab);
  v(m.mode <= LogitsMode::kTopK, "logits mode ", static_cast<int>(m.mode), " is unknown");
  if (m.mode == LogitsMode::kFull) {
    v(m.top_k == 0 && m.top.empty(), "full logits carry top-k entries");
    v(m.full.size() == uint64_t{m.n_tokens} * m.n_vocab, "holds ", m.full.size(), " logits for ", m.n_tokens,
      " x ", m.n_vocab);
  } else {
    v(m.top_k >= 1 && m.top_k <= std::min(m.n_vocab, v.limits().max_top_k), "top_k is ", m.top_k,
      ", must be 1..", std::min(m.n_vocab, v.limits().max_top_k));
    v(m.full.empty(), "top-k logits carry full logits");
    v(m.top.size() == uint64_t{m.n_tokens} * m.top_k, "holds ", m.top.size(), " top-k entries for ",
      m.n_tokens, " x ", m.top_k);
    for (const TopLogit& t : m.top) {
      v(t.token < m.n_vocab, "top-k token ", t.token, " is not below n_vocab ", m.n_vocab);
    }
  }
  v.timings(m.timings);
}

void validate(const KvTruncate&, const Check&) {}
void validate(const SeqReset&, const Check&) {}
void validate(const Heartbeat&, const Check&) {}
void validate(const Assign& m, const Check& v) {
  v(m.epoch >= 1, "epoch is 0");
  v(m.first_layer <= m.last_layer && m.last_layer <= v.limits().max_layers, "layers [", m.first_layer, ", ",
    m.last_layer, ") are not a range within ", v.limits().max_layers);
  v(m.first_layer < m.last_layer || m.runs_output, "assigns no layers and no output");
}
void validate(const KvRows& m, const Check& v) {
  v.layers(m.first_layer, m.last_layer, "KV");
  v(static_cast<uint8_t>(m.kind) <= static_cast<uint8_t>(KvRowsKind::kStored), "unknown kind ",
    static_cast<int>(m.kind));
  v(m.n_pos >= 1 && m.n_pos <= v.limits().max_tokens, "n_pos is ", m.n_pos, " (must be 1..",
    v.limits().max_tokens, ")");
  v(uint64_t{m.pos0} + m.n_pos <= v.limits().max_tokens, "positions [", m.pos0, ", ",
    uint64_t{m.pos0} + m.n_pos, ") exceed ", v.limits().max_tokens);
  if (m.kind != KvRowsKind::kRows) {
    v(m.kv_dim == 0 && m.data.empty(), "a ", m.kind == KvRowsKind::kFetch ? "fetch" : "stored",
      " carries rows");
    return;
  }
  v(m.kv_dim >= 1 && m.kv_dim <= v.limits().max_dim, "kv_dim is ", m.kv_dim, " (must be 1..",
    v.limits().max_dim, ")");
  const uint64_t want = 2 * uint64_t{m.last_layer - m.first_layer} * m.n_pos * m.kv_dim;
  v(m.data.size() == want, "holds ", m.data.size(), " values for 2 x ", m.last_layer - m.first_layer,
    " layers x ", m.n_pos, " positions x ", m.kv_dim);
}
void validate(const ErrorMessage& m, const Check& v) { v.str(m.message, "message"); }
void validate(const Shutdown& m, const Check& v) { v.str(m.reason, "reason"); }

void validate(const Probe& m, const Check& v) {
  v(!m.is_reply || m.reply_bytes == 0, "an echo asks for ", m.reply_bytes, " bytes back");
  // 17 bytes of fields + the padding must fit the echo's payload.
  v(uint64_t{m.reply_bytes} + 17 <= v.limits().max_payload_bytes, "asks for ", m.reply_bytes,
    " bytes back, more than a frame may carry");
}

// Frames outside any sequence carry sequence_id = step = 0.
bool has_sequence(FrameType t) {
  return t == FrameType::kActivations || t == FrameType::kLogits || t == FrameType::kKvTruncate ||
         t == FrameType::kSeqReset || t == FrameType::kError || t == FrameType::kKvRows;
}

// ---- Writers ----------------------------------------------------------------------------

void write_timings(Writer& w, const std::vector<StageTiming>& t) {
  for (const StageTiming& s : t) {
    w.u32(s.first_layer);
    w.u32(s.last_layer);
    w.f32(s.compute_ms);
    w.f32(s.wait_ms);
  }
}

void write(Writer& w, const Hello& m) {
  w.u16(m.min_version);
  w.u16(m.max_version);
  w.u8(static_cast<uint8_t>(m.role));
  w.u64(m.capabilities);
  w.str(m.name);
  w.str(m.software);
}
void write(Writer& w, const ProfileRequest& m) {
  w.str(m.model_id);
  w.bytes(m.model_sha256);
  w.u32(m.threads);
  w.u32(m.context_length);
}
void write(Writer& w, const Profile& m) {
  w.str(m.device_name);
  w.u32(m.threads);
  w.u64(m.memory_budget_bytes);
  w.u64(m.memory_total_bytes);
  w.f64(m.output_ms);
  w.u32(static_cast<uint32_t>(m.layer_ms.size()));
  for (double t : m.layer_ms) w.f64(t);
  w.u8(m.prefill_layer_ms.empty() ? 0 : 1);
  for (double t : m.prefill_layer_ms) w.f64(t);
}
void write(Writer& w, const Load& m) {
  w.str(m.model_id);
  w.bytes(m.model_sha256);
  w.u32(m.first_layer);
  w.u32(m.last_layer);
  w.u8(m.runs_output);
  w.u8(static_cast<uint8_t>(m.activation_type));
  w.u8(static_cast<uint8_t>(m.logits_mode));
  w.u32(m.top_k);
  w.u32(m.context_length);
  w.u32(m.max_sequences);
}
void write(Writer& w, const Loaded& m) {
  w.u32(m.first_layer);
  w.u32(m.last_layer);
  w.u64(m.resident_bytes);
  w.f64(m.load_ms);
}
void write(Writer& w, const Activations& m) {
  w.u32(m.pos0);
  w.u32(m.n_tokens);
  w.u32(m.dim);
  w.u8(static_cast<uint8_t>(m.type));
  w.u8(m.all_logits);
  w.u16(static_cast<uint16_t>(m.timings.size()));
  w.bytes(m.data);
  write_timings(w, m.timings);
}
void write(Writer& w, const Logits& m) {
  w.u32(m.pos0);
  w.u32(m.n_tokens);
  w.u32(m.n_vocab);
  w.u8(static_cast<uint8_t>(m.mode));
  w.u32(m.top_k);
  w.u16(static_cast<uint16_t>(m.timings.size()));
  for (float x : m.full) w.f32(x);
  for (const TopLogit& t : m.top) {
    w.u32(t.token);
    w.f32(t.logit);
  }
  write_timings(w, m.timings);
}
void write(Writer& w, const KvTruncate& m) { w.u32(m.keep); }
void write(Writer&, const SeqReset&) {}
void write(Writer& w, const Heartbeat& m) {
  w.u64(m.time_us);
  w.u32(m.in_flight);
  w.u32(m.timeout_ms);
}
void write(Writer& w, const Assign& m) {
  w.u32(m.epoch);
  w.u32(m.first_layer);
  w.u32(m.last_layer);
  w.u8(m.runs_output);
  w.u8(m.keep_kv);
}
void write(Writer& w, const KvRows& m) {
  w.u8(static_cast<uint8_t>(m.kind));
  w.u32(m.first_layer);
  w.u32(m.last_layer);
  w.u32(m.pos0);
  w.u32(m.n_pos);
  w.u32(m.kv_dim);
  if constexpr (std::endian::native == std::endian::little) {
    w.bytes({reinterpret_cast<const uint8_t*>(m.data.data()), m.data.size() * sizeof(float)});
  } else {
    for (float x : m.data) w.f32(x);
  }
}
void write(Writer& w, const ErrorMessage& m) {
  w.u32(m.code);
  w.str(m.message);
}
void write(Writer& w, const Shutdown& m) { w.str(m.reason); }
void write(Writer& w, const Probe& m) {
  w.u8(m.is_reply);
  w.u32(m.reply_bytes);
  w.u64(m.sent_us);
  w.u32(static_cast<uint32_t>(m.padding.size()));
  w.bytes(m.padding);
}

// ---- Readers ----------------------------------------------------------------------------

// Throws unless count items of item_bytes each fit in what is left of the payload, so a
// hostile count never makes the decoder allocate more than the frame's size.
void need_items(Reader& r, const char* field, uint64_t count, uint64_t item_bytes) {
  if (count > r.remaining() / item_bytes) {
    r.fail("payload ends inside ", field, " (", count, " x ", item_bytes, " bytes at offset ", r.offset(),
           ", ", r.remaining(), " left)");
  }
}

std::vector<StageTiming> read_timings(Reader& r, uint16_t n, const Limits& limits) {
  if (n > limits.max_timings) r.fail("stage timings", ": ", n, ", the limit is ", limits.max_timings);
  need_items(r, "stage timings", n, kTimingBytes);
  std::vector<StageTiming> t(n);
  for (StageTiming& s : t) {
    s.first_layer = r.u32("timing first_layer");
    s.last_layer = r.u32("timing last_layer");
    s.compute_ms = r.f32("timing compute_ms");
    s.wait_ms = r.f32("timing wait_ms");
  }
  return t;
}

Sha256 read_sha(Reader& r) {
  Sha256 h;
  auto b = r.bytes("model_sha256", h.size());
  std::copy(b.begin(), b.end(), h.begin());
  return h;
}

Hello read_hello(Reader& r, const Limits& l) {
  Hello m;
  m.min_version = r.u16("min_version");
  m.max_version = r.u16("max_version");
  m.role = static_cast<Role>(r.u8("role"));
  m.capabilities = r.u64("capabilities");
  m.name = r.str("name", l.max_string_bytes);
  m.software = r.str("software", l.max_string_bytes);
  return m;
}
ProfileRequest read_profile_request(Reader& r, const Limits& l) {
  ProfileRequest m;
  m.model_id = r.str("model_id", l.max_string_bytes);
  m.model_sha256 = read_sha(r);
  m.threads = r.u32("threads");
  m.context_length = r.u32("context_length");
  return m;
}
Profile read_profile(Reader& r, const Limits& l) {
  Profile m;
  m.device_name = r.str("device_name", l.max_string_bytes);
  m.threads = r.u32("threads");
  m.memory_budget_bytes = r.u64("memory_budget_bytes");
  m.memory_total_bytes = r.u64("memory_total_bytes");
  m.output_ms = r.f64("output_ms");
  const uint32_t n = r.u32("n_layers");
  if (n > l.max_layers) r.fail("n_layers", " is ", n, ", the limit is ", l.max_layers);
  need_items(r, "layer_ms", n, 8);
  m.layer_ms.resize(n);
  for (double& t : m.layer_ms) t = r.f64("layer_ms");
  if (r.boolean("has_prefill")) {
    need_items(r, "prefill_layer_ms", n, 8);
    m.prefill_layer_ms.resize(n);
    for (double& t : m.prefill_layer_ms) t = r.f64("prefill_layer_ms");
  }
  return m;
}
Load read_load(Reader& r, const Limits& l) {
  Load m;
  m.model_id = r.str("model_id", l.max_string_bytes);
  m.model_sha256 = read_sha(r);
  m.first_layer = r.u32("first_layer");
  m.last_layer = r.u32("last_layer");
  m.runs_output = r.boolean("runs_output");
  m.activation_type = static_cast<WireType>(r.u8("activation_type"));
  m.logits_mode = static_cast<LogitsMode>(r.u8("logits_mode"));
  m.top_k = r.u32("top_k");
  m.context_length = r.u32("context_length");
  m.max_sequences = r.u32("max_sequences");
  return m;
}
Loaded read_loaded(Reader& r, const Limits&) {
  Loaded m;
  m.first_layer = r.u32("first_layer");
  m.last_layer = r.u32("last_layer");
  m.resident_bytes = r.u64("resident_bytes");
  m.load_ms = r.f64("load_ms");
  return m;
}
Activations read_activations(Reader& r, const Limits& l, const Check& v) {
  Activations m;
  m.pos0 = r.u32("pos0");
  m.n_tokens = r.u32("n_tokens");
  m.dim = r.u32("dim");
  m.type = static_cast<WireType>(r.u8("type"));
  m.all_logits = r.boolean("all_logits");
  const uint16_t n_timings = r.u16("n_timings");
  // The data size follows from the fields above: check them before using it.
  v.tokens(m.pos0, m.n_tokens);
  v(m.dim >= 1 && m.dim <= l.max_dim, "dim is ", m.dim, ", must be 1..", l.max_dim);
  v(m.type <= WireType::kQ8_0, "tensor type ", static_cast<int>(m.type), " is unknown");
  v(m.type != WireType::kQ8_0 || m.dim % 32 == 0, "q8_0 needs dim to be a multiple of 32, got ", m.dim);
  auto data = r.bytes("tensor data", wire_bytes(m.type, m.n_tokens, m.dim));
  m.data.assign(data.begin(), data.end());
  m.timings = read_timings(r, n_timings, l);
  return m;
}
Logits read_logits(Reader& r, const Limits& l, const Check& v) {
  Logits m;
  m.pos0 = r.u32("pos0");
  m.n_tokens = r.u32("n_tokens");
  m.n_vocab = r.u32("n_vocab");
  m.mode = static_cast<LogitsMode>(r.u8("mode"));
  m.top_k = r.u32("top_k");
  const uint16_t n_timings = r.u16("n_timings");
  v(m.mode <= LogitsMode::kTopK, "logits mode ", static_cast<int>(m.mode), " is unknown");
  if (m.mode == LogitsMode::kFull) {
    const uint64_t n = uint64_t{m.n_tokens} * m.n_vocab;
    need_items(r, "logits", n, 4);
    m.full.resize(n);
    for (float& x : m.full) x = r.f32("logits");
  } else {
    const uint64_t n = uint64_t{m.n_tokens} * m.top_k;
    need_items(r, "top-k entries", n, 8);
    m.top.resize(n);
    for (TopLogit& t : m.top) {
      t.token = r.u32("top-k token");
      t.logit = r.f32("top-k logit");
    }
  }
  m.timings = read_timings(r, n_timings, l);
  return m;
}
KvTruncate read_kv_truncate(Reader& r, const Limits&) { return {r.u32("keep")}; }
SeqReset read_seq_reset(Reader&, const Limits&) { return {}; }
Heartbeat read_heartbeat(Reader& r, const Limits&) {
  Heartbeat m;
  m.time_us = r.u64("time_us");
  m.in_flight = r.u32("in_flight");
  m.timeout_ms = r.u32("timeout_ms");
  return m;
}
Assign read_assign(Reader& r, const Limits&) {
  Assign m;
  m.epoch = r.u32("epoch");
  m.first_layer = r.u32("first_layer");
  m.last_layer = r.u32("last_layer");
  m.runs_output = r.boolean("runs_output");
  m.keep_kv = r.boolean("keep_kv");
  return m;
}
KvRows read_kv_rows(Reader& r, const Limits& l, const Check& v) {
  KvRows m;
  const uint8_t kind = r.u8("kind");
  v(kind <= static_cast<uint8_t>(KvRowsKind::kStored), "unknown kind ", static_cast<int>(kind));
  m.kind = static_cast<KvRowsKind>(kind);
  m.first_layer = r.u32("first_layer");
  m.last_layer = r.u32("last_layer");
  m.pos0 = r.u32("pos0");
  m.n_pos = r.u32("n_pos");
  m.kv_dim = r.u32("kv_dim");
  v.layers(m.first_layer, m.last_layer, "KV");
  v(m.kv_dim <= l.max_dim && m.n_pos <= l.max_tokens, "n_pos ", m.n_pos, " or kv_dim ", m.kv_dim,
    " beyond the limits");
  const uint64_t n =
      m.kind == KvRowsKind::kRows ? 2 * uint64_t{m.last_layer - m.first_layer} * m.n_pos * m.kv_dim : 0;
  // The size is checked against what is left before anything is allocated.
  const auto b = r.bytes("KV rows", n * sizeof(float));
  m.data.resize(n);
  if constexpr (std::endian::native == std::endian::little) {
    if (n) std::memcpy(m.data.data(), b.data(), b.size());
  } else {
    for (uint64_t i = 0; i < n; ++i) {
      uint32_t u = 0;
      for (int k = 0; k < 4; ++k) u |= static_cast<uint32_t>(b[4 * i + k]) << (8 * k);
      m.data[i] = std::bit_cast<float>(u);
    }
  }
  return m;
}
ErrorMessage read_error(Reader& r, const Limits& l) {
  ErrorMessage m;
  m.code = r.u32("code");
  m.message = r.str("message", l.max_string_bytes);
  return m;
}
Shutdown read_shutdown(Reader& r, const Limits& l) { return {r.str("reason", l.max_string_bytes)}; }
Probe read_probe(Reader& r, const Limits&) {
  Probe m;
  m.is_reply = r.boolean("is_reply");
  m.reply_bytes = r.u32("reply_bytes");
  m.sent_us = r.u64("sent_us");
  const uint32_t n = r.u32("padding_len");
  auto b = r.bytes("padding", n);
  m.padding.assign(b.begin(), b.end());
  return m;
}

uint32_t read_le32(const uint8_t* p) {
  return static_cast<uint32_t>(p[0]) | (static_cast<uint32_t>(p[1]) << 8) |
         (static_cast<uint32_t>(p[2]) << 16) | (static_cast<uint32_t>(p[3]) << 24);
}

// "47 45 54 20 ("GET ")": what arrived instead of a frame, for the error message.
std::string show_bytes(std::span<const uint8_t> b) {
  static const char* hex = "0123456789abcdef";
  std::string h, a;
  for (size_t i = 0; i < std::min<size_t>(b.size(), 4); ++i) {
    if (i) h += ' ';
    h += hex[b[i] >> 4];
    h += hex[b[i] & 15];
    a += b[i] >= 32 && b[i] < 127 ? static_cast<char>(b[i]) : '.';
  }
  return h + " (\"" + a + "\")";
}

}  // namespace

bool KvRows::operator==(const KvRows& o) const {
  return kind == o.kind && first_layer == o.first_layer && last_layer == o.last_layer && pos0 == o.pos0 &&
         n_pos == o.n_pos && kv_dim == o.kv_dim && data.size() == o.data.size() &&
         (data.empty() || std::memcmp(data.data(), o.data.data(), data.size() * sizeof(float)) == 0);
}

bool Logits::operator==(const Logits& o) const {
  auto same = [](float x, float y) { return std::bit_cast<uint32_t>(x) == std::bit_cast<uint32_t>(y); };
  if (pos0 != o.pos0 || n_tokens != o.n_tokens || n_vocab != o.n_vocab || mode != o.mode ||
      top_k != o.top_k || full.size() != o.full.size() || top.size() != o.top.size() ||
      timings != o.timings) {
    return false;
  }
  for (size_t i = 0; i < full.size(); ++i) {
    if (!same(full[i], o.full[i])) return false;
  }
  for (size_t i = 0; i < top.size(); ++i) {
    if (top[i].token != o.top[i].token || !same(top[i].logit, o.top[i].logit)) return false;
  }
  return true;
}

Activations Activations::from_f32(uint32_t pos0, uint32_t dim, std::span<const float> values, WireType type) {
  Activations a;
  a.pos0 = pos0;
  a.dim = dim;
  a.type = type;
  a.data = encode_tensor(values, dim, type);  // checks values.size() % dim
  a.n_tokens = static_cast<uint32_t>(values.size() / dim);
  return a;
}

std::vector<float> Activations::to_f32() const {
  std::vector<float> out(uint64_t{n_tokens} * dim);
  decode_tensor(data, type, dim, out);
  return out;
}

FrameType Frame::type() const { return static_cast<FrameType>(message.index() + 1); }

void encode_append(const Frame& frame, std::vector<uint8_t>& out, const Limits& limits) {
  const FrameType type = frame.type();
  const Check v(type, limits);
  if (!has_sequence(type)) v.no_sequence(frame.sequence_id, frame.step);
  std::visit([&](const auto& m) { validate(m, v); }, frame.message);
  const size_t start = out.size();
  Writer w(out);
  w.bytes(kMagic);
  w.u16(kVersion);
  w.u16(static_cast<uint16_t>(type));
  w.u32(0);  // flags
  w.u32(frame.step);
  w.u64(frame.sequence_id);
  w.u32(0);  // payload_len, patched below
  w.u32(0);  // reserved
  std::visit([&](const auto& m) { write(w, m); }, frame.message);
  const size_t payload = out.size() - start - kHeaderBytes;
  if (payload > limits.max_payload_bytes) {
    out.resize(start);
    v(false, "payload of ", payload, " bytes exceeds the limit of ", limits.max_payload_bytes, " bytes");
  }
  w.patch_u32(start + 24, static_cast<uint32_t>(payload));
}

std::vector<uint8_t> encode(const Frame& frame, const Limits& limits) {
  std::vector<uint8_t> out;
  encode_append(frame, out, limits);
  return out;
}

Header decode_header(std::span<const uint8_t> b, const Limits& limits) {
  check(b.size() >= kHeaderBytes, "frame header needs ", kHeaderBytes, " bytes, got ", b.size());
  check(std::equal(std::begin(kMagic), std::end(kMagic), b.begin()), "not a braid frame: it starts with ",
        show_bytes(b), ", not \"BRDF\"");
  const uint16_t version = static_cast<uint16_t>(b[4] | (b[5] << 8));
  check(version == kVersion, "frame has protocol version ", version, "; this braid speaks version ", kVersion,
        " (run the same braid version on every device)");
  const uint16_t type = static_cast<uint16_t>(b[6] | (b[7] << 8));
  check(type >= 1 && type <= kLastType, "unknown frame type ", type, " (protocol version ", kVersion,
        " has types 1..", kLastType, ")");
  Header h;
  h.type = static_cast<FrameType>(type);
  const std::string name = frame_type_name(type);
  const uint32_t flags = read_le32(&b[8]);
  check(flags == 0, name, " frame: flags 0x", std::hex, flags, std::dec,
        " are not defined in protocol version ", kVersion);
  h.step = read_le32(&b[12]);
  h.sequence_id = static_cast<uint64_t>(read_le32(&b[16])) | (static_cast<uint64_t>(read_le32(&b[20])) << 32);
  h.payload_bytes = read_le32(&b[24]);
  check(read_le32(&b[28]) == 0, name, " frame: reserved header field is not 0");
  check(h.payload_bytes <= limits.max_payload_bytes, name, " frame: payload of ", h.payload_bytes,
        " bytes exceeds the limit of ", limits.max_payload_bytes, " bytes");
  return h;
}

size_t frame_bytes(std::span<const uint8_t> bytes, const Limits& limits) {
  if (bytes.size() < kHeaderBytes) return 0;
  return kHeaderBytes + decode_header(bytes, limits).payload_bytes;
}

Frame decode_payload(const Header& header, std::span<const uint8_t> payload, const Limits& limits) {
  const Check v(header.type, limits);
  v(payload.size() == header.payload_bytes, "payload is ", payload.size(), " bytes, the header says ",
    header.payload_bytes);
  Reader r(payload, frame_type_name(static_cast<uint16_t>(header.type)));
  Frame f;
  f.sequence_id = header.sequence_id;
  f.step = header.step;
  switch (header.type) {
    case FrameType::kHello:
      f.message = read_hello(r, limits);
      break;
    case FrameType::kProfileRequest:
      f.message = read_profile_request(r, limits);
      break;
    case FrameType::kProfile:
      f.message = read_profile(r, limits);
      break;
    case FrameType::kLoad:
      f.message = read_load(r, limits);
      break;
    case FrameType::kLoaded:
      f.message = read_loaded(r, limits);
      break;
    case FrameType::kActivations:
      f.message = read_activations(r, limits, v);
      break;
    case FrameType::kLogits:
      f.message = read_logits(r, limits, v);
      break;
    case FrameType::kKvTruncate:
      f.message = read_kv_truncate(r, limits);
      break;
    case FrameType::kSeqReset:
      f.message = read_seq_reset(r, limits);
      break;
    case FrameType::kHeartbeat:
      f.message = read_heartbeat(r, limits);
      break;
    case FrameType::kError:
      f.message = read_error(r, limits);
      break;
    case FrameType::kShutdown:
      f.message = read_shutdown(r, limits);
      break;
    case FrameType::kProbe:
      f.message = read_probe(r, limits);
      break;
    case FrameType::kAssign:
      f.message = read_assign(r, limits);
      break;
    case FrameType::kKvRows:
      f.message = read_kv_rows(r, limits, v);
      break;
    default:
      v(false, "unknown frame type");
  }
  r.end();
  if (!has_sequence(header.type)) v.no_sequence(f.sequence_id, f.step);
  std::visit([&](const auto& m) { validate(m, v); }, f.message);
  return f;
}

Frame decode(std::span<const uint8_t> bytes, const Limits& limits) {
  const Header h = decode_header(bytes, limits);
  check(bytes.size() - kHeaderBytes == h.payload_bytes, frame_type_name(static_cast<uint16_t>(h.type)),
        " frame: ", bytes.size(), " bytes given for a frame of ", kHeaderBytes, " + ", h.payload_bytes);
  return decode_payload(h, bytes.subspan(kHeaderBytes), limits);
}

namespace wire {

bool valid_utf8(std::string_view s) {
  size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<uint8_t>(s[i]);
    int n;
    uint32_t cp;
    if (c < 0x80) {
      ++i;
      continue;
    } else if ((c & 0xe0) == 0xc0) {
      n = 1;
      cp = c & 0x1f;
    } else if ((c & 0xf0) == 0xe0) {
      n = 2;
      cp = c & 0x0f;
    } else if ((c & 0xf8) == 0xf0) {
      n = 3;
      cp = c & 0x07;
    } else {
      return false;
    }
    if (s.size() - i <= static_cast<size_t>(n)) return false;  // truncated sequence
    for (int k = 1; k <= n; ++k) {
      const auto cc = static_cast<uint8_t>(s[i + k]);
      if ((cc & 0xc0) != 0x80) return false;
      cp = (cp << 6) | (cc & 0x3f);
    }
    static const uint32_t kMin[] = {0, 0x80, 0x800, 0x10000};
    if (cp < kMin[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return false;
    i += n + 1;
  }
  return true;
}

}  // namespace wire
}  // namespace braid::proto
