// The membership proof that follows every TLS handshake (docs/protocol.md, "Transport
// and authentication"):
//
//   client -> server  hello: magic "BRDA", u16 version, u8 mode, u8 0, proof[32]
//   server -> client  reply: magic "BRDA", u16 version, u8 status, u8 text length,
//                            proof[32], text (why we refuse, when status != 0)
//
// In secret mode proof = HMAC-SHA256(secret, "braid-auth/1 client" | "... server" ||
// E), E = 32 bytes of TLS exporter output (label "EXPORTER-braid-auth-1") of this very
// session. The client proves first, so that a stranger who connects learns nothing the
// server computed from the secret. In certificate mode TLS already verified both ends
// and the proofs are zero; the exchange still checks versions and modes.
#include <openssl/crypto.h>
#include <openssl/hmac.h>
#include <openssl/ssl.h>

#include <array>
#include <cstring>

#include "braid/error.h"
#include "dist/auth_x509.h"
#include "dist/transport_impl.h"

namespace braid::net::detail {
namespace {

constexpr uint8_t kMagic[4] = {'B', 'R', 'D', 'A'};
constexpr uint16_t kVersion = 1;
constexpr size_t kProofBytes = 32;
constexpr size_t kHelloBytes = 8 + kProofBytes;

enum Status : uint8_t { kOk = 0, kWrongSecret = 1, kBadVersion = 2, kWrongMode = 3 };
enum Mode : uint8_t { kSecret = 0, kCertificates = 1 };

using Proof = std::array<uint8_t, kProofBytes>;

Proof compute_proof(SSL* ssl, const Tls::State& tls, const char* role) {
  Proof p{};
  if (!tls.secret_mode) return p;
  static const char kLabel[] = "EXPORTER-braid-auth-1";
  uint8_t exported[32];
  check(SSL_export_keying_material(ssl, exported, sizeof exported, kLabel, sizeof kLabel - 1, nullptr, 0,
                                   0) == 1,
        "TLS exporter failed: ", openssl_error());
  std::string msg = std::string("braid-auth/1 ") + role;
  msg.append(reinterpret_cast<const char*>(exported), sizeof exported);
  unsigned int len = 0;
  check(HMAC(EVP_sha256(), tls.secret.data(), static_cast<int>(tls.secret.size()),
             reinterpret_cast<const unsigned char*>(msg.data()), msg.size(), p.data(), &len) != nullptr &&
            len == kProofBytes,
        "HMAC failed: ", openssl_error());
  return p;
}

void put_header(uint8_t* b, uint8_t third, uint8_t fourth) {
  std::memcpy(b, kMagic, 4);
  b[4] = kVersion & 0xff;
  b[5] = kVersion >> 8;
  b[6] = third;
  b[7] = fourth;
}

const char* mode_name(uint8_t m) { return m == kSecret ? "a cluster secret" : "certificates"; }

}  // namespace

void prove_client(SSL* ssl, const Tls::State& tls, Exchange& io, const std::string& peer) {
  uint8_t hello[kHelloBytes];
  put_header(hello, tls.secret_mode ? kSecret : kCertificates, 0);
  const Proof mine = compute_proof(ssl, tls, "client");
  std::memcpy(hello + 8, mine.data(), kProofBytes);
  io.write(hello, sizeof hello);

  uint8_t reply[kHelloBytes];
  io.read(reply, sizeof reply);
  check(std::memcmp(reply, kMagic, 4) == 0, peer, " is not a braid device (bad greeting)");
  const uint16_t version = static_cast<uint16_t>(reply[4] | reply[5] << 8);
  const uint8_t status = reply[6];
  std::string text(reply[7], '\0');
  if (!text.empty()) io.read(text.data(), text.size());
  if (status != kOk) {
    fail(peer, " refused us: ", text.empty() ? "status " + std::to_string(status) : text);
  }
  check(version == kVersion, peer, " speaks authentication version ", version, ", this braid speaks ",
        kVersion);
  const Proof expected = compute_proof(ssl, tls, "server");
  check(CRYPTO_memcmp(expected.data(), reply + 8, kProofBytes) == 0, peer,
        " could not prove the cluster secret (another cluster, or someone in the middle)");
}

void prove_server(SSL* ssl, const Tls::State& tls, Exchange& io, const std::string& peer) {
  uint8_t hello[kHelloBytes];
  io.read(hello, 8);
  check(std::memcmp(hello, kMagic, 4) == 0, "not a braid client (bad greeting)");
  io.read(hello + 8, kProofBytes);
  const uint16_t version = static_cast<uint16_t>(hello[4] | hello[5] << 8);
  const uint8_t mode = hello[6];
  const uint8_t my_mode = tls.secret_mode ? kSecret : kCertificates;

  auto refuse = [&](Status status, const std::string& why) {
    uint8_t reply[kHelloBytes] = {};
    const std::string text = why.substr(0, 255);
    put_header(reply, status, static_cast<uint8_t>(text.size()));
    // Best effort: the peer learns why; we refuse either way.
    try {
      io.write(reply, sizeof reply);
      io.write(text.data(), text.size());
    } catch (const Error&) {
    }
    fail(why);
  };
  if (version != kVersion) {
    refuse(kBadVersion,
           cat("unsupported authentication version ", version, " (this braid speaks ", kVersion, ")"));
  }
  if (mode != my_mode) {
    refuse(kWrongMode,
           cat("it authenticates with ", mode_name(mode), ", this device with ", mode_name(my_mode)));
  }
  const Proof expected = compute_proof(ssl, tls, "client");
  if (CRYPTO_memcmp(expected.data(), hello + 8, kProofBytes) != 0)
    refuse(kWrongSecret, "wrong cluster secret");

  uint8_t reply[kHelloBytes];
  put_header(reply, kOk, 0);
  const Proof mine = compute_proof(ssl, tls, "server");
  std::memcpy(reply + 8, mine.data(), kProofBytes);
  io.write(reply, sizeof reply);
  (void)peer;
}

}  // namespace braid::net::detail
