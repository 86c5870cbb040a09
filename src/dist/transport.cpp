// net::Connection and net::Listener: asio TCP + TLS with a deadline on every operation.
//
// Each Connection owns an io_context and runs it only inside its own calls, so a
// blocking call is "start the async operation, run the context until it completes or
// the deadline passes". Running in slices of at most 100 ms lets interrupt() from
// another thread take effect without touching the socket from that thread.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <algorithm>
#include <cctype>
#include <thread>

#include "braid/error.h"
#include "dist/auth_x509.h"
#include "dist/transport_impl.h"

namespace braid::net {
namespace {

using Clock = std::chrono::steady_clock;
constexpr Millis kSlice{100};

// "Connection refused" -> "connection refused".
std::string describe(const asio::error_code& ec) {
  std::string m = ec.message();
  if (ec.category() == asio::error::get_ssl_category()) {
    const char* r = ERR_reason_error_string(static_cast<unsigned long>(ec.value()));
    if (r) m = r;
  }
  if (!m.empty() && std::isupper(static_cast<unsigned char>(m[0])) &&
      !(m.size() > 1 && std::isupper(static_cast<unsigned char>(m[1]))))
    m[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(m[0])));
  return m;
}

bool is_eof(const asio::error_code& ec) {
  return ec == asio::error::eof || ec == asio::ssl::error::stream_truncated ||
         ec == asio::error::connection_reset || ec == asio::error::broken_pipe;
}

// TCP_NODELAY (a decode step is a few small frames: no Nagle delays) and keepalive
// probes, so a peer that vanished without a FIN is noticed in about a minute even on a
// link that is idle by design.
void tune_socket(asio::basic_socket<asio::ip::tcp, asio::any_io_executor>& sock) {
  asio::error_code ec;
  sock.set_option(asio::ip::tcp::no_delay(true), ec);
  sock.set_option(asio::socket_base::keep_alive(true), ec);
  const int fd = sock.native_handle();
  int idle = 30, interval = 10, count = 3;
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval, sizeof interval);
  setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &count, sizeof count);
}

}  // namespace

std::string format_duration(Millis d) {
  if (d.count() % 1000 == 0) return cat(d.count() / 1000, " s");
  if (d.count() > 10000) return cat(d.count() / 1000.0, " s");
  return cat(d.count(), " ms");
}

Endpoint Endpoint::parse(const std::string& text) {
  Endpoint e;
  size_t colon;
  if (!text.empty() && text[0] == '[') {
    const size_t close = text.find(']');
    check(close != std::string::npos && close + 1 < text.size() && text[close + 1] == ':', "bad address '",
          text, "': expected [IPv6]:PORT");
    e.host = text.substr(1, close - 1);
    colon = close + 1;
  } else {
    colon = text.rfind(':');
    check(colon != std::string::npos && colon > 0, "bad address '", text, "': expected HOST:PORT");
    e.host = text.substr(0, colon);
    check(e.host.find(':') == std::string::npos, "bad address '", text, "': write IPv6 hosts as [::1]:PORT");
  }
  const std::string port = text.substr(colon + 1);
  bool digits = !port.empty() && port.size() <= 5;
  for (char c : port) digits = digits && c >= '0' && c <= '9';
  check(digits && std::stoi(port) <= 65535, "bad address '", text, "': port '", port, "' is not 0..65535");
  e.port = static_cast<uint16_t>(std::stoi(port));
  return e;
}

std::string Endpoint::str() const {
  return host.find(':') != std::string::npos ? cat("[", host, "]:", port) : cat(host, ":", port);
}

// ---- Connection ----

Connection::Connection(const Tls& tls, bool server) : impl_(std::make_unique<Impl>(tls, server)) {}

Connection::~Connection() {
  asio::error_code ec;
  impl_->ssl.lowest_layer().close(ec);
}

namespace {

// Runs the async operation `start` on conn's context until it completes, the deadline
// passes or the connection is interrupted. Returns its error code.
template <class Start>
asio::error_code run_op(Connection::Impl& impl, const std::atomic<bool>& interrupted,
                        Clock::time_point deadline, bool& timed_out, Start start) {
  timed_out = false;
  asio::error_code result = asio::error::would_block;
  bool done = false;
  impl.io.restart();
  start([&](const asio::error_code& ec) {
    result = ec;
    done = true;
  });
  while (!done) {
    const auto now = Clock::now();
    if (interrupted.load() || now >= deadline) {
      timed_out = !interrupted.load();
      asio::error_code ignored;
      impl.ssl.lowest_layer().cancel(ignored);
      impl.ssl.lowest_layer().close(ignored);
      impl.io.restart();
      while (!done) impl.io.run_one();  // the handler runs with operation_aborted
      impl.broken = true;
      return asio::error::operation_aborted;
    }
    impl.io.run_one_for(std::min<Clock::duration>(kSlice, deadline - now));
    if (impl.io.stopped() && !done) impl.io.restart();
  }
  return result;
}

}  // namespace

std::unique_ptr<Connection> Connection::dial(const Tls& tls, const Endpoint& to, Millis timeout) {
  std::unique_ptr<Connection> c(new Connection(tls, false));
  Impl& impl = *c->impl_;
  const std::string where = to.str();
  c->peer_ = where;
  const auto deadline = Clock::now() + timeout;
  bool timed_out = false;
  auto fail_connect = [&](const std::string& why) -> void { fail("cannot connect to ", where, ": ", why); };

  asio::ip::tcp::resolver resolver(impl.io);
  asio::ip::tcp::resolver::results_type endpoints;
  asio::error_code ec = run_op(impl, c->interrupted_, deadline, timed_out, [&](auto done) {
    resolver.async_resolve(to.host, std::to_string(to.port),
                           [&, done](const asio::error_code& e, asio::ip::tcp::resolver::results_type r) {
                             endpoints = std::move(r);
                             done(e);
                           });
  });
  if (timed_out) fail_connect("name lookup timed out after " + format_duration(timeout));
  if (ec) fail_connect(describe(ec));

  ec = run_op(impl, c->interrupted_, deadline, timed_out, [&](auto done) {
    asio::async_connect(impl.ssl.lowest_layer(), endpoints,
                        [done](const asio::error_code& e, const asio::ip::tcp::endpoint&) { done(e); });
  });
  if (timed_out) fail_connect("timed out after " + format_duration(timeout));
  if (ec) fail_connect(describe(ec));
  tune_socket(impl.ssl.lowest_layer());

  ec = run_op(impl, c->interrupted_, deadline, timed_out, [&](auto done) {
    impl.ssl.async_handshake(asio::ssl::stream_base::client, [done](const asio::error_code& e) { done(e); });
  });
  if (timed_out) fail_connect("TLS handshake timed out after " + format_duration(timeout));
  if (ec) fail_connect("TLS handshake failed: " + describe(ec));
  if (!tls.secret_mode()) {
    X509* cert = SSL_get1_peer_certificate(impl.ssl.native_handle());
    if (cert) {
      c->peer_cn_ = detail::common_name(cert);
      X509_free(cert);
    }
  }

  // The proof exchange, under the same overall deadline.
  struct Io : detail::Exchange {
    Connection* c;
    Clock::time_point deadline;
    void read(void* d, size_t n) override {
      c->read(d, n,
              std::chrono::duration_cast<Millis>(std::max(deadline - Clock::now(), Clock::duration{1})));
    }
    void write(const void* d, size_t n) override {
      c->write(d, n,
               std::chrono::duration_cast<Millis>(std::max(deadline - Clock::now(), Clock::duration{1})));
    }
  } io;
  io.c = c.get();
  io.deadline = deadline;
  detail::prove_client(impl.ssl.native_handle(), tls.state(), io, where);
  c->bytes_read_ = c->bytes_written_ = 0;  // count application data only
  return c;
}

void Connection::handshake_server(Millis timeout) {
  Impl& impl = *impl_;
  const auto deadline = Clock::now() + timeout;
  bool timed_out = false;
  asio::error_code ec = run_op(impl, interrupted_, deadline, timed_out, [&](auto done) {
    impl.ssl.async_handshake(asio::ssl::stream_base::server, [done](const asio::error_code& e) { done(e); });
  });
  if (timed_out) fail("TLS handshake timed out after ", format_duration(timeout));
  if (ec) fail("TLS handshake failed: ", describe(ec));
  if (!impl.tls.secret_mode()) {
    X509* cert = SSL_get1_peer_certificate(impl.ssl.native_handle());
    if (cert) {
      peer_cn_ = detail::common_name(cert);
      X509_free(cert);
    }
  }
  struct Io : detail::Exchange {
    Connection* c;
    Clock::time_point deadline;
    void read(void* d, size_t n) override {
      c->read(d, n,
              std::chrono::duration_cast<Millis>(std::max(deadline - Clock::now(), Clock::duration{1})));
    }
    void write(const void* d, size_t n) override {
      c->write(d, n,
               std::chrono::duration_cast<Millis>(std::max(deadline - Clock::now(), Clock::duration{1})));
    }
  } io;
  io.c = this;
  io.deadline = deadline;
  detail::prove_server(impl.ssl.native_handle(), impl.tls.state(), io, peer_);
  bytes_read_ = bytes_written_ = 0;
}

void Connection::read(void* data, size_t n, Millis timeout) {
  if (n == 0) return;
  check(!impl_->broken && !interrupted_.load(), "connection to ", peer_, " is closed");
  bool timed_out = false;
  size_t got = 0;
  asio::error_code ec = run_op(*impl_, interrupted_, Clock::now() + timeout, timed_out, [&](auto done) {
    asio::async_read(impl_->ssl, asio::buffer(data, n), [&, done](const asio::error_code& e, size_t k) {
      got = k;
      done(e);
    });
  });
  bytes_read_ += got;
  if (timed_out) fail("no data from ", peer_, " for ", format_duration(timeout), " (timed out)");
  if (ec == asio::error::operation_aborted) fail("connection to ", peer_, " was closed");
  if (ec) {
    impl_->broken = true;
    if (is_eof(ec)) fail(peer_, " closed the connection");
    fail("reading from ", peer_, ": ", describe(ec));
  }
}

void Connection::write(const void* data, size_t n, Millis timeout) { write2(data, n, nullptr, 0, timeout); }

void Connection::write2(const void* a, size_t na, const void* b, size_t nb, Millis timeout) {
  if (na + nb == 0) return;
  check(!impl_->broken && !interrupted_.load(), "connection to ", peer_, " is closed");
  bool timed_out = false;
  size_t put = 0;
  std::array<asio::const_buffer, 2> bufs = {asio::buffer(a, na), asio::buffer(b, nb)};
  asio::error_code ec = run_op(*impl_, interrupted_, Clock::now() + timeout, timed_out, [&](auto done) {
    asio::async_write(impl_->ssl, bufs, [&, done](const asio::error_code& e, size_t k) {
      put = k;
      done(e);
    });
  });
  bytes_written_ += put;
  if (timed_out) fail("sending to ", peer_, " timed out after ", format_duration(timeout));
  if (ec == asio::error::operation_aborted) fail("connection to ", peer_, " was closed");
  if (ec) {
    impl_->broken = true;
    if (is_eof(ec)) fail(peer_, " closed the connection");
    fail("sending to ", peer_, ": ", describe(ec));
  }
}

void Connection::interrupt() { interrupted_.store(true); }

void Connection::close() {
  Impl& impl = *impl_;
  if (!impl.broken && !interrupted_.load()) {
    bool timed_out = false;
    // close_notify, waiting at most briefly: the peer may already be gone.
    run_op(impl, interrupted_, Clock::now() + Millis(200), timed_out,
           [&](auto done) { impl.ssl.async_shutdown([done](const asio::error_code& e) { done(e); }); });
  }
  impl.broken = true;
  asio::error_code ec;
  impl.ssl.lowest_layer().close(ec);
}

// ---- Listener ----

struct Listener::Impl {
  asio::io_context io;
  asio::ip::tcp::acceptor acceptor{io};
  std::atomic<bool> closed{false};
};

Listener::Listener(const Tls& tls, const Endpoint& at) : impl_(std::make_unique<Impl>()), tls_(tls) {
  asio::error_code ec;
  asio::ip::tcp::resolver resolver(impl_->io);
  auto results = resolver.resolve(at.host, std::to_string(at.port), asio::ip::tcp::resolver::passive, ec);
  if (ec || results.empty()) fail("cannot listen on ", at.str(), ": ", ec ? describe(ec) : "no such address");
  const asio::ip::tcp::endpoint ep = *results.begin();
  auto& acc = impl_->acceptor;
  acc.open(ep.protocol(), ec);
  if (!ec) acc.set_option(asio::ip::tcp::acceptor::reuse_address(true), ec);
  if (!ec) acc.bind(ep, ec);
  if (!ec) acc.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) fail("cannot listen on ", at.str(), ": ", describe(ec));
}

Listener::~Listener() {
  asio::error_code ec;
  impl_->acceptor.close(ec);
}

uint16_t Listener::port() const {
  asio::error_code ec;
  return impl_->acceptor.local_endpoint(ec).port();
}

std::unique_ptr<Connection> Listener::accept(Millis timeout) {
  if (impl_->closed.load()) return nullptr;
  std::unique_ptr<Connection> c(new Connection(tls_, true));
  asio::error_code result = asio::error::would_block;
  bool done = false;
  impl_->io.restart();
  impl_->acceptor.async_accept(c->impl_->ssl.lowest_layer(), [&](const asio::error_code& ec) {
    result = ec;
    done = true;
  });
  const auto deadline = Clock::now() + timeout;
  while (!done) {
    const auto now = Clock::now();
    if (impl_->closed.load() || now >= deadline) {
      asio::error_code ignored;
      impl_->acceptor.cancel(ignored);
      impl_->io.restart();
      while (!done) impl_->io.run_one();
      // A connection that arrived in the meantime is dropped with the listener's close,
      // or taken: either is fine.
      if (!result) break;
      return nullptr;
    }
    impl_->io.run_one_for(std::min<Clock::duration>(kSlice, deadline - now));
    if (impl_->io.stopped() && !done) impl_->io.restart();
  }
  if (result) {
    // Per-connection failures (a reset before accept, too many files) must not stop
    // the listener; back off briefly so a persistent one does not spin.
    std::this_thread::sleep_for(Millis(10));
    return nullptr;
  }
  asio::error_code ec;
  auto& sock = c->impl_->ssl.lowest_layer();
  tune_socket(sock);
  const auto remote = sock.remote_endpoint(ec);
  c->peer_ = ec ? std::string("unknown peer") : Endpoint{remote.address().to_string(), remote.port()}.str();
  return c;
}

void Listener::close() { impl_->closed.store(true); }

}  // namespace braid::net
