// Authenticated, encrypted byte streams between the devices of a cluster.
//
// Every connection is TLS 1.3 over TCP (TCP_NODELAY) and both ends prove that they
// belong to the same cluster before a single application byte moves, in one of two ways:
//
//   secret:       every device has the same secret (any bytes, --secret-file). Each
//                 process makes an ephemeral self-signed certificate, so the channel is
//                 encrypted but not yet authenticated; then each side sends
//                 HMAC-SHA256(secret, role || TLS exporter value). The exporter value is
//                 unique to this TLS session, so a man in the middle, who has two
//                 sessions, can neither answer nor relay the proofs.
//   certificates: `braid keygen` makes a cluster CA and one certificate per device;
//                 both ends present theirs and verify the other's against the CA
//                 (mutual TLS).
//
// docs/protocol.md ("Transport and authentication") specifies the exchange.
//
//   auto tls = braid::net::Tls::from_secret_file("cluster.key");
//   braid::net::Listener listener(tls, braid::net::Endpoint::parse("0.0.0.0:7000"));
//   auto conn = listener.accept(std::chrono::seconds(1));   // TCP only
//   conn->handshake_server(std::chrono::seconds(10));      // TLS + proof; throws
//   ...
//   auto c = braid::net::Connection::dial(tls, braid::net::Endpoint::parse("10.0.0.2:7000"),
//                                         std::chrono::seconds(10));
//   c->write(buf, n);  c->read(buf, n, std::chrono::seconds(30));
//
// Every blocking call has a time limit and throws braid::Error when it passes, when the
// peer goes away, or soon after interrupt(); nothing waits past those. A Connection is not thread-safe: one
// thread uses it at a time, except interrupt(), which any thread may call.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace braid::net {

using Millis = std::chrono::milliseconds;

// host:port. Hosts are IPv4/IPv6 literals or names; "[::1]:7000" for IPv6.
struct Endpoint {
  std::string host;
  uint16_t port = 0;

  // Throws braid::Error "bad address 'x': expected HOST:PORT" and the like.
  static Endpoint parse(const std::string& text);
  std::string str() const;
};

// How this process proves membership (and checks its peers'). Shared by all
// connections; cheap to copy (the OpenSSL contexts are reference counted).
class Tls {
 public:
  // Secret mode: the secret is the file's bytes (at least 1, at most 1 MiB).
  static Tls from_secret_file(const std::string& path);
  static Tls from_secret(const std::string& secret);
  // Certificate mode: PEM files made by `braid keygen`.
  static Tls from_certificates(const std::string& ca_file, const std::string& cert_file,
                               const std::string& key_file);

  bool secret_mode() const;
  struct State;
  const State& state() const { return *state_; }

 private:
  std::shared_ptr<State> state_;
};

class Connection {
 public:
  ~Connection();
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Dials `to`, runs the TLS handshake and the membership proof, all within `timeout`.
  // Throws braid::Error: "cannot connect to 10.0.0.2:7000: connection refused",
  // "10.0.0.2:7000 refused us: wrong cluster secret", "... timed out after 10 s", ...
  static std::unique_ptr<Connection> dial(const Tls& tls, const Endpoint& to, Millis timeout);

  // Server side of an accepted connection: TLS handshake and the membership proof.
  // Throws braid::Error saying why the peer was refused ("wrong cluster secret",
  // "TLS handshake failed: ..."); the caller logs it and drops the connection.
  void handshake_server(Millis timeout);

  // Reads exactly n bytes. Throws braid::Error when the peer closes the connection
  // ("<peer> closed the connection"), after `timeout`, or after interrupt().
  void read(void* data, size_t n, Millis timeout);
  // Writes all n bytes within `timeout`.
  void write(const void* data, size_t n, Millis timeout);
  // Several buffers in one TLS write where they fit (fewer records and syscalls).
  void write2(const void* a, size_t na, const void* b, size_t nb, Millis timeout);

  // Makes a read or write blocked in another thread (and every later one) fail within
  // about 100 ms. Thread-safe.
  void interrupt();
  // Sends the TLS close_notify (best effort, bounded) and closes the socket.
  void close();

  // "127.0.0.1:5555" for the remote end.
  const std::string& peer() const { return peer_; }
  // Certificate mode: the peer certificate's common name (its device name).
  const std::string& peer_cn() const { return peer_cn_; }
  // Bytes moved so far (application data), for link measurements.
  uint64_t bytes_read() const { return bytes_read_; }
  uint64_t bytes_written() const { return bytes_written_; }

  struct Impl;

 private:
  friend class Listener;
  Connection(const Tls& tls, bool server);

  std::unique_ptr<Impl> impl_;
  std::string peer_, peer_cn_;
  std::atomic<bool> interrupted_{false};
  uint64_t bytes_read_ = 0, bytes_written_ = 0;
};

// A listening TCP socket. accept() returns connections before their TLS handshake, so
// the caller can run handshake_server() on its own thread: a slow or hostile client
// never blocks the accept loop.
class Listener {
 public:
  // Binds (SO_REUSEADDR) and listens. Port 0 picks a free port (see port()). Throws
  // braid::Error "cannot listen on 0.0.0.0:7000: address already in use".
  Listener(const Tls& tls, const Endpoint& at);
  ~Listener();

  uint16_t port() const;
  // The next connection, or null when none arrived within `timeout` or after close().
  std::unique_ptr<Connection> accept(Millis timeout);
  // Makes accept() return null from now on. Thread-safe.
  void close();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  Tls tls_;
};

// Certificate mode: what `braid keygen` writes (PEM text).
struct PemPair {
  std::string cert, key;
};
// A cluster CA (self-signed, CN = cluster_name).
PemPair make_cluster_ca(const std::string& cluster_name, int days);
// A device certificate for both TLS roles, CN = device_name, signed by `ca`.
PemPair make_device_certificate(const PemPair& ca, const std::string& device_name, int days);

// Seconds in a duration, as "10 s" / "250 ms", for error messages.
std::string format_duration(Millis d);

}  // namespace braid::net
