// What transport.cpp, transport_tls.cpp and auth_proof.cpp share: the TLS contexts
// behind net::Tls and the asio objects behind net::Connection.
#pragma once

#ifndef ASIO_STANDALONE
#define ASIO_STANDALONE
#endif
#include <asio.hpp>
#include <asio/ssl.hpp>
#include <memory>
#include <string>

#include "braid/transport.h"

namespace braid::net {

struct Tls::State {
  bool secret_mode = true;
  std::string secret;  // secret mode: the cluster secret's bytes
  std::shared_ptr<asio::ssl::context> server, client;
};

struct Connection::Impl {
  explicit Impl(const Tls& tls, bool server)
      : tls(tls), ssl(io, server ? *tls.state().server : *tls.state().client) {}
  Tls tls;
  asio::io_context io;
  asio::ssl::stream<asio::ip::tcp::socket> ssl;
  bool broken = false;  // a timed-out or failed operation leaves the TLS state unknown
};

namespace detail {

// The membership proof after the TLS handshake (auth_proof.cpp). Throw braid::Error
// with the reason when the peer is refused or refuses us.
class Exchange {
 public:
  virtual ~Exchange() = default;
  virtual void read(void* data, size_t n) = 0;
  virtual void write(const void* data, size_t n) = 0;
};
void prove_client(SSL* ssl, const Tls::State& tls, Exchange& io, const std::string& peer);
void prove_server(SSL* ssl, const Tls::State& tls, Exchange& io, const std::string& peer);

}  // namespace detail
}  // namespace braid::net
