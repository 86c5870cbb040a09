// OpenSSL helpers for the transport: keys and certificates (ephemeral ones for secret
// mode, a cluster CA and device certificates for `braid keygen`), PEM in and out, and
// OpenSSL's error queue as one line.
#pragma once

#include <openssl/evp.h>
#include <openssl/x509.h>

#include <memory>
#include <string>

namespace braid::net::detail {

struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;

// The oldest error in OpenSSL's queue of this thread ("unknown error" when empty), and
// clears the queue.
std::string openssl_error();

// A fresh EC P-256 key.
PkeyPtr generate_key();

// A certificate for `key` with subject CN=`common_name`, valid from an hour ago for
// `days`. Signed by issuer/issuer_key, or self-signed when those are null. `ca` marks it
// a CA (basicConstraints CA:TRUE, keyCertSign).
X509Ptr make_certificate(EVP_PKEY* key, const std::string& common_name, X509* issuer, EVP_PKEY* issuer_key,
                         bool ca, int days);

std::string to_pem(X509* cert);
std::string to_pem(EVP_PKEY* key);
// Parse PEM; throw braid::Error "<label>: not a PEM certificate" and the like.
X509Ptr cert_from_pem(const std::string& pem, const std::string& label);
PkeyPtr key_from_pem(const std::string& pem, const std::string& label);

// The subject's common name, empty when it has none.
std::string common_name(X509* cert);

}  // namespace braid::net::detail
