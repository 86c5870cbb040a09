// net::Tls: the OpenSSL contexts for secret mode (ephemeral certificate, proof by HMAC
// afterwards) and certificate mode (mutual TLS against the cluster CA).
#include <openssl/err.h>
#include <openssl/ssl.h>

#include <filesystem>

#include "braid/error.h"
#include "braid/mapped_file.h"
#include "dist/auth_x509.h"
#include "dist/transport_impl.h"

namespace braid::net {
namespace {

constexpr size_t kMaxSecretBytes = 1 << 20;

std::shared_ptr<asio::ssl::context> base_context() {
  auto ctx = std::make_shared<asio::ssl::context>(asio::ssl::context::tls);
  SSL_CTX* c = ctx->native_handle();
  // TLS 1.3 only: forward secrecy, no renegotiation, exporters bound to the handshake.
  SSL_CTX_set_min_proto_version(c, TLS1_3_VERSION);
  // No session tickets: connections are long-lived and never resumed, and a ticket the
  // reader never consumes is just noise on one-way links.
  SSL_CTX_set_num_tickets(c, 0);
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_mode(c, SSL_MODE_RELEASE_BUFFERS);
  return ctx;
}

void use_identity(SSL_CTX* c, X509* cert, EVP_PKEY* key) {
  check(SSL_CTX_use_certificate(c, cert) == 1 && SSL_CTX_use_PrivateKey(c, key) == 1 &&
            SSL_CTX_check_private_key(c) == 1,
        "cannot use the TLS certificate: ", detail::openssl_error());
}

std::string read_small_file(const std::string& path, const char* what) {
  std::error_code ec;
  check(std::filesystem::is_regular_file(path, ec), what, " '", path, "' not found");
  const auto size = std::filesystem::file_size(path, ec);
  check(!ec && size <= kMaxSecretBytes, what, " '", path, "' is larger than 1 MiB");
  return read_file(path);
}

}  // namespace

Tls Tls::from_secret(const std::string& secret) {
  check(!secret.empty(), "the cluster secret is empty");
  check(secret.size() <= kMaxSecretBytes, "the cluster secret is larger than 1 MiB");
  auto st = std::make_shared<State>();
  st->secret_mode = true;
  st->secret = secret;
  // One throwaway identity per process: it encrypts, the HMAC proof authenticates.
  detail::PkeyPtr key = detail::generate_key();
  detail::X509Ptr cert = detail::make_certificate(key.get(), "braid-ephemeral", nullptr, nullptr, false, 30);
  st->server = base_context();
  use_identity(st->server->native_handle(), cert.get(), key.get());
  st->server->set_verify_mode(asio::ssl::verify_none);
  st->client = base_context();
  st->client->set_verify_mode(asio::ssl::verify_none);
  Tls t;
  t.state_ = std::move(st);
  return t;
}

Tls Tls::from_secret_file(const std::string& path) {
  const std::string secret = read_small_file(path, "secret file");
  check(!secret.empty(), "secret file '", path, "' is empty");
  return from_secret(secret);
}

Tls Tls::from_certificates(const std::string& ca_file, const std::string& cert_file,
                           const std::string& key_file) {
  detail::X509Ptr ca = detail::cert_from_pem(read_small_file(ca_file, "CA file"), ca_file);
  detail::X509Ptr cert = detail::cert_from_pem(read_small_file(cert_file, "certificate file"), cert_file);
  detail::PkeyPtr key = detail::key_from_pem(read_small_file(key_file, "key file"), key_file);
  auto st = std::make_shared<State>();
  st->secret_mode = false;
  for (auto* ctx : {&st->server, &st->client}) {
    *ctx = base_context();
    SSL_CTX* c = (*ctx)->native_handle();
    use_identity(c, cert.get(), key.get());
    // Trust exactly the cluster CA (not the system store) and require the peer's
    // certificate in both directions.
    X509_STORE* store = X509_STORE_new();
    check(store && X509_STORE_add_cert(store, ca.get()) == 1, ca_file,
          ": cannot use the CA: ", detail::openssl_error());
    SSL_CTX_set_cert_store(c, store);
    (*ctx)->set_verify_mode(asio::ssl::verify_peer | asio::ssl::verify_fail_if_no_peer_cert);
  }
  // Our own certificate must chain to the CA, or every peer would refuse us later with
  // a less helpful message.
  X509_STORE_CTX* vctx = X509_STORE_CTX_new();
  X509_STORE* store = SSL_CTX_get_cert_store(st->client->native_handle());
  bool ok = vctx && X509_STORE_CTX_init(vctx, store, cert.get(), nullptr) == 1 && X509_verify_cert(vctx) == 1;
  const std::string why = ok ? "" : X509_verify_cert_error_string(X509_STORE_CTX_get_error(vctx));
  X509_STORE_CTX_free(vctx);
  check(ok, cert_file, " is not signed by the cluster CA ", ca_file, ": ", why);
  Tls t;
  t.state_ = std::move(st);
  return t;
}

bool Tls::secret_mode() const { return state_->secret_mode; }

PemPair make_cluster_ca(const std::string& cluster_name, int days) {
  check(days >= 1, "certificate validity must be at least 1 day");
  detail::PkeyPtr key = detail::generate_key();
  detail::X509Ptr cert = detail::make_certificate(key.get(), cluster_name, nullptr, nullptr, true, days);
  return {detail::to_pem(cert.get()), detail::to_pem(key.get())};
}

PemPair make_device_certificate(const PemPair& ca, const std::string& device_name, int days) {
  check(days >= 1, "certificate validity must be at least 1 day");
  check(!device_name.empty(), "a device certificate needs a name");
  detail::X509Ptr ca_cert = detail::cert_from_pem(ca.cert, "CA certificate");
  detail::PkeyPtr ca_key = detail::key_from_pem(ca.key, "CA key");
  detail::PkeyPtr key = detail::generate_key();
  detail::X509Ptr cert =
      detail::make_certificate(key.get(), device_name, ca_cert.get(), ca_key.get(), false, days);
  return {detail::to_pem(cert.get()), detail::to_pem(key.get())};
}

}  // namespace braid::net
