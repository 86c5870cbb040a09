// The cluster transport: TLS + membership proof (secret and certificate modes), refusal
// of strangers and men in the middle, timeouts, interrupts.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <future>
#include <thread>

#include "braid/error.h"
#include "braid/transport.h"
#include "dist/transport_frames.h"

#define ASIO_STANDALONE
#include <asio.hpp>
#include <asio/ssl.hpp>

namespace braid::net {
namespace {

namespace proto = braid::proto;

using namespace std::chrono_literals;

Endpoint loopback(uint16_t port) { return Endpoint{"127.0.0.1", port}; }

// Accepts one connection, runs the server handshake and echoes `n` bytes back, or
// returns the handshake's error text.
std::future<std::string> serve_once(Listener& l, size_t n) {
  return std::async(std::launch::async, [&l, n]() -> std::string {
    std::unique_ptr<Connection> c;
    for (int i = 0; i < 100 && !c; ++i) c = l.accept(100ms);
    if (!c) return "no connection";
    try {
      c->handshake_server(5s);
      std::string buf(n, '\0');
      c->read(buf.data(), n, 5s);
      c->write(buf.data(), n, 5s);
      c->close();
      return "ok";
    } catch (const Error& e) {
      return e.what();
    }
  });
}

TEST(Endpoint, Parse) {
  EXPECT_EQ(Endpoint::parse("127.0.0.1:5555").str(), "127.0.0.1:5555");
  EXPECT_EQ(Endpoint::parse("[::1]:80").host, "::1");
  EXPECT_EQ(Endpoint::parse("[::1]:80").str(), "[::1]:80");
  EXPECT_EQ(Endpoint::parse("phone.local:7000").port, 7000);
  EXPECT_THROW(Endpoint::parse("127.0.0.1"), Error);
  EXPECT_THROW(Endpoint::parse("127.0.0.1:99999"), Error);
  EXPECT_THROW(Endpoint::parse("127.0.0.1:x"), Error);
  EXPECT_THROW(Endpoint::parse(":80"), Error);
  EXPECT_THROW(Endpoint::parse("::1:80"), Error);
}

TEST(Transport, SecretRoundTrip) {
  Tls a = Tls::from_secret("s3cret"), b = Tls::from_secret("s3cret");
  Listener l(a, loopback(0));
  ASSERT_NE(l.port(), 0);
  std::string payload(300000, 'x');
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>(i * 7);
  auto server = serve_once(l, payload.size());
  auto c = Connection::dial(b, loopback(l.port()), 5s);
  c->write(payload.data(), payload.size(), 5s);
  std::string back(payload.size(), '\0');
  c->read(back.data(), back.size(), 5s);
  EXPECT_EQ(back, payload);
  EXPECT_EQ(server.get(), "ok");
  EXPECT_EQ(c->bytes_written(), payload.size());
  // The server closed: the next read says so instead of hanging.
  char x;
  try {
    c->read(&x, 1, 5s);
    FAIL() << "read after close succeeded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("closed the connection"), std::string::npos) << e.what();
  }
}

TEST(Transport, WrongSecretRefusedBothWays) {
  Tls server_tls = Tls::from_secret("right"), client_tls = Tls::from_secret("wrong");
  Listener l(server_tls, loopback(0));
  auto server = serve_once(l, 1);
  try {
    Connection::dial(client_tls, loopback(l.port()), 5s);
    FAIL() << "dial with a wrong secret succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "127.0.0.1:" + std::to_string(l.port()) + " refused us: wrong cluster secret");
  }
  EXPECT_EQ(server.get(), "wrong cluster secret");
}

TEST(Transport, ConnectionRefusedIsClear) {
  Tls t = Tls::from_secret("x");
  uint16_t port;
  {
    Listener l(t, loopback(0));
    port = l.port();
  }
  try {
    Connection::dial(t, loopback(port), 5s);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "cannot connect to 127.0.0.1:" + std::to_string(port) + ": connection refused");
  }
}

TEST(Transport, SilentServerTimesOut) {
  // A listener that accepts but never speaks TLS: the dial gives up at its deadline.
  Tls t = Tls::from_secret("x");
  Listener l(t, loopback(0));
  auto start = std::chrono::steady_clock::now();
  try {
    Connection::dial(t, loopback(l.port()), 300ms);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("timed out"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
}

TEST(Transport, ReadTimeoutAndInterrupt) {
  Tls t = Tls::from_secret("x");
  Listener l(t, loopback(0));
  std::promise<void> release;
  auto server = std::async(std::launch::async, [&] {
    std::unique_ptr<Connection> c;
    for (int i = 0; i < 100 && !c; ++i) c = l.accept(100ms);
    c->handshake_server(5s);
    release.get_future().wait();  // says nothing
  });
  auto c = Connection::dial(t, loopback(l.port()), 5s);
  char b;
  auto start = std::chrono::steady_clock::now();
  EXPECT_THROW(c->read(&b, 1, 200ms), Error);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  release.set_value();
  server.get();
}

TEST(Transport, InterruptWakesABlockedRead) {
  Tls t = Tls::from_secret("x");
  Listener l(t, loopback(0));
  std::promise<void> release;
  auto server = std::async(std::launch::async, [&] {
    std::unique_ptr<Connection> c;
    for (int i = 0; i < 100 && !c; ++i) c = l.accept(100ms);
    c->handshake_server(5s);
    release.get_future().wait();
  });
  auto c = Connection::dial(t, loopback(l.port()), 5s);
  auto reader = std::async(std::launch::async, [&] {
    char b;
    try {
      c->read(&b, 1, 60s);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("read returned");
  });
  std::this_thread::sleep_for(100ms);
  auto start = std::chrono::steady_clock::now();
  c->interrupt();
  EXPECT_EQ(reader.wait_for(2s), std::future_status::ready);
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  EXPECT_NE(reader.get().find("closed"), std::string::npos);
  release.set_value();
  server.get();
}

// A man in the middle terminates the client's TLS with its own certificate (which the
// client accepts: secret mode does not check certificates), opens its own TLS session
// to the real server and relays the client's proof. The proof is bound to the first
// session's exporter value, so the server refuses it, and the client refuses the relay
// because it cannot answer with the server's proof either.
TEST(Transport, RelayedProofIsRefused) {
  Tls real = Tls::from_secret("cluster");
  Listener server_l(real, loopback(0));
  auto server = serve_once(server_l, 1);

  asio::io_context io;
  asio::ip::tcp::acceptor acc(io, asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  asio::ssl::context mitm_ctx(asio::ssl::context::tls);
  PemPair id = make_cluster_ca("mallory", 1);
  mitm_ctx.use_certificate(asio::buffer(id.cert), asio::ssl::context::pem);
  mitm_ctx.use_private_key(asio::buffer(id.key), asio::ssl::context::pem);
  asio::ssl::context up_ctx(asio::ssl::context::tls);
  up_ctx.set_verify_mode(asio::ssl::verify_none);
  const uint16_t mitm_port = acc.local_endpoint().port();

  auto relay = std::async(std::launch::async, [&]() -> std::string {
    asio::ssl::stream<asio::ip::tcp::socket> down(io, mitm_ctx);
    acc.accept(down.lowest_layer());
    down.handshake(asio::ssl::stream_base::server);
    uint8_t hello[40];
    asio::read(down, asio::buffer(hello));
    asio::ssl::stream<asio::ip::tcp::socket> up(io, up_ctx);
    up.lowest_layer().connect(asio::ip::tcp::endpoint(asio::ip::make_address("127.0.0.1"), server_l.port()));
    up.handshake(asio::ssl::stream_base::client);
    asio::write(up, asio::buffer(hello));
    uint8_t reply[40];
    asio::read(up, asio::buffer(reply));
    std::string text(reply[7], '\0');
    asio::read(up, asio::buffer(text));
    asio::write(down, asio::buffer(reply));  // pass the refusal (or an answer) back
    asio::write(down, asio::buffer(text));
    return cat("status ", int(reply[6]), ": ", text);
  });
  EXPECT_THROW(Connection::dial(real, loopback(mitm_port), 5s), Error);
  EXPECT_EQ(relay.get(), "status 1: wrong cluster secret");
  EXPECT_EQ(server.get(), "wrong cluster secret");
}

TEST(Transport, CertificateMode) {
  std::string dir = ::testing::TempDir();
  PemPair ca = make_cluster_ca("test-cluster", 1);
  PemPair dev_a = make_device_certificate(ca, "alpha", 1);
  PemPair dev_b = make_device_certificate(ca, "beta", 1);
  PemPair other_ca = make_cluster_ca("other", 1);
  PemPair stranger = make_device_certificate(other_ca, "mallory", 1);
  auto put = [&](const std::string& name, const std::string& text) {
    std::string p = dir + "/braid_tt_" + name;
    FILE* f = fopen(p.c_str(), "wb");
    fwrite(text.data(), 1, text.size(), f);
    fclose(f);
    return p;
  };
  const std::string ca_f = put("ca.crt", ca.cert);
  Tls a = Tls::from_certificates(ca_f, put("a.crt", dev_a.cert), put("a.key", dev_a.key));
  Tls b = Tls::from_certificates(ca_f, put("b.crt", dev_b.cert), put("b.key", dev_b.key));
  EXPECT_FALSE(a.secret_mode());
  // A certificate from another CA is rejected when loading it against our CA ...
  EXPECT_THROW(Tls::from_certificates(ca_f, put("m.crt", stranger.cert), put("m.key", stranger.key)), Error);
  // ... and by peers when it trusts its own CA.
  Tls m = Tls::from_certificates(put("oca.crt", other_ca.cert), put("m.crt", stranger.cert),
                                 put("m.key", stranger.key));

  Listener l(a, loopback(0));
  auto server = std::async(std::launch::async, [&]() -> std::vector<std::string> {
    std::vector<std::string> out;
    for (int k = 0; k < 3; ++k) {
      std::unique_ptr<Connection> c;
      for (int i = 0; i < 100 && !c; ++i) c = l.accept(100ms);
      try {
        c->handshake_server(5s);
        out.push_back("ok " + c->peer_cn());
        char x;
        c->read(&x, 1, 5s);
        c->write(&x, 1, 5s);
      } catch (const Error& e) {
        out.push_back(e.what());
      }
    }
    return out;
  });
  auto c = Connection::dial(b, loopback(l.port()), 5s);
  EXPECT_EQ(c->peer_cn(), "alpha");
  char x = 'z';
  c->write(&x, 1, 5s);
  c->read(&x, 1, 5s);
  EXPECT_EQ(x, 'z');
  EXPECT_THROW(Connection::dial(m, loopback(l.port()), 5s), Error);
  // A secret-mode client cannot join a certificate cluster.
  EXPECT_THROW(Connection::dial(Tls::from_secret("s"), loopback(l.port()), 5s), Error);
  auto log = server.get();
  ASSERT_EQ(log.size(), 3u);
  EXPECT_EQ(log[0], "ok beta");
  EXPECT_NE(log[1].find("TLS handshake failed"), std::string::npos) << log[1];
  EXPECT_NE(log[2].find("TLS handshake failed"), std::string::npos) << log[2];
}

// ---- Link frames (the transport's frame types 256..259). ----

TEST(LinkFrames, RoundTripAndCanonical) {
  using namespace braid::dist;
  const std::vector<LinkMessage> msgs = {Link{LinkKind::kControl, 0},
                                         Link{LinkKind::kOutput, 0x0102030405060708}, Linked{77},
                                         Route{"10.0.0.2:7000", 99}, DialBack{LinkKind::kInput}};
  for (const auto& m : msgs) {
    const std::vector<uint8_t> b = encode_link(m);
    ASSERT_EQ(b.size() >= 32, true);
    EXPECT_EQ(b[6] | (b[7] << 8), 256 + static_cast<int>(m.index()));
    Incoming in = decode_any(b.data(), b.size());
    ASSERT_TRUE(in.is_link);
    EXPECT_EQ(encode_link(in.link), b);
    // Every truncation is refused.
    for (size_t n = 0; n < b.size(); ++n) EXPECT_THROW(decode_any(b.data(), n), Error) << n;
  }
  const auto route =
      decode_any(encode_link(Route{"host:1", 5}).data(), encode_link(Route{"host:1", 5}).size());
  ASSERT_NE(route.get<Route>(), nullptr);
  EXPECT_EQ(route.get<Route>()->next, "host:1");
  EXPECT_EQ(route.get<Route>()->session, 5u);
  EXPECT_EQ(route.get<proto::Hello>(), nullptr);
  EXPECT_EQ(route.name(), "ROUTE");
}

TEST(LinkFrames, GarbageIsAnErrorNeverACrash) {
  using namespace braid::dist;
  // Bad kinds, header fields, and random flips of valid frames: decode or braid::Error.
  std::vector<uint8_t> link = encode_link(Link{LinkKind::kInput, 3});
  std::vector<uint8_t> bad = link;
  bad[32] = 7;  // kind
  EXPECT_THROW(decode_any(bad.data(), bad.size()), Error);
  bad = link;
  bad[8] = 1;  // flags
  EXPECT_THROW(decode_any(bad.data(), bad.size()), Error);
  bad = link;
  bad[16] = 1;  // a sequence id on a link frame
  EXPECT_THROW(decode_any(bad.data(), bad.size()), Error);
  bad = encode_link(DialBack{LinkKind::kInput});
  bad[32] = 0;  // DIAL_BACK of a control link
  EXPECT_THROW(decode_any(bad.data(), bad.size()), Error);
  bad = encode_link(Route{"abc", 1});
  bad[34] = static_cast<uint8_t>(0xff);  // not UTF-8
  EXPECT_THROW(decode_any(bad.data(), bad.size()), Error);

  uint64_t state = 12345;
  auto rnd = [&] {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return static_cast<uint32_t>(state >> 33);
  };
  const std::vector<std::vector<uint8_t>> seeds = {
      link, encode_link(Route{"127.0.0.1:5555", 42}), encode_link(Linked{1}),
      proto::encode(make_hello(proto::Role::kHead, "head")),
      proto::encode(make_error("boom", proto::ErrorCode::kInternal, 3))};
  int decoded = 0;
  for (int i = 0; i < 20000; ++i) {
    std::vector<uint8_t> b = seeds[rnd() % seeds.size()];
    const int flips = 1 + static_cast<int>(rnd() % 4);
    for (int k = 0; k < flips; ++k) b[rnd() % b.size()] = static_cast<uint8_t>(rnd());
    if (rnd() % 4 == 0) b.resize(rnd() % (b.size() + 1));
    try {
      Incoming in = decode_any(b.data(), b.size());
      if (in.is_link) {
        EXPECT_EQ(encode_link(in.link), b);
      }
      ++decoded;
    } catch (const Error&) {
    }
  }
  EXPECT_GT(decoded, 0);
}

}  // namespace
}  // namespace braid::net
