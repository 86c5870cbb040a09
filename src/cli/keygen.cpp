// `braid keygen`: credentials for a cluster.
//
//   braid keygen --secret cluster.key             32 random bytes for --secret-file
//   braid keygen --dir certs phone laptop         a cluster CA (certs/ca.crt, ca.key, made
//                                                 once) and a certificate + key per device
//
// Devices then join with --ca certs/ca.crt --cert certs/phone.crt --key certs/phone.key.
// Keys are written readable by the owner only; keep ca.key off the devices.
#include <fcntl.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "braid/error.h"
#include "braid/mapped_file.h"
#include "braid/transport.h"
#include "cli/command.h"

namespace braid::cli {
namespace {

struct KeygenArgs {
  std::string secret, dir, cluster = "braid-cluster";
  std::vector<std::string> devices;
  int days = 365;
  bool force = false;
};

void write_private(const std::string& path, const std::string& data, bool force) {
  const int flags = O_WRONLY | O_CREAT | O_TRUNC | (force ? 0 : O_EXCL);
  const int fd = open(path.c_str(), flags, 0600);
  if (fd < 0 && errno == EEXIST) fail(path, " already exists (pass --force to replace it)");
  check(fd >= 0, "cannot write ", path, ": ", std::strerror(errno));
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t k = write(fd, data.data() + done, data.size() - done);
    if (k <= 0) {
      close(fd);
      fail("cannot write ", path, ": ", std::strerror(errno));
    }
    done += static_cast<size_t>(k);
  }
  check(close(fd) == 0, "cannot write ", path, ": ", std::strerror(errno));
  std::printf("wrote %s\n", path.c_str());
}

bool safe_name(const std::string& n) {
  if (n.empty() || n.size() > 64 || n == "ca") return false;
  for (char c : n)
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') return false;
  return n[0] != '.';
}

void run(const KeygenArgs& a) {
  check(a.secret.empty() != a.dir.empty(), "give --secret FILE or --dir DIR [DEVICE...]");
  if (!a.secret.empty()) {
    check(a.devices.empty(), "--secret takes no device names");
    std::string bytes(32, '\0');
    check(RAND_bytes(reinterpret_cast<unsigned char*>(bytes.data()), 32) == 1, "no randomness available");
    write_private(a.secret, bytes, a.force);
    return;
  }
  for (const auto& d : a.devices)
    check(safe_name(d), "device name '", d, "' must be 1-64 letters, digits, '-', '_' or '.' (and not 'ca')");
  std::error_code ec;
  std::filesystem::create_directories(a.dir, ec);
  check(!ec, "cannot create ", a.dir, ": ", ec.message());
  const std::string ca_crt = a.dir + "/ca.crt", ca_key = a.dir + "/ca.key";
  net::PemPair ca;
  if (std::filesystem::exists(ca_key)) {
    ca.cert = read_file(ca_crt);
    ca.key = read_file(ca_key);
    std::printf("using the cluster CA in %s\n", a.dir.c_str());
  } else {
    ca = net::make_cluster_ca(a.cluster, a.days);
    write_private(ca_key, ca.key, a.force);
    write_private(ca_crt, ca.cert, a.force);
  }
  for (const auto& d : a.devices) {
    net::PemPair dev = net::make_device_certificate(ca, d, a.days);
    write_private(a.dir + "/" + d + ".key", dev.key, a.force);
    write_private(a.dir + "/" + d + ".crt", dev.cert, a.force);
  }
}

Command reg("keygen", "Make a cluster secret, or a cluster CA and device certificates", [](CLI::App& app) {
  auto a = std::make_shared<KeygenArgs>();
  app.add_option("--secret", a->secret, "Write a random cluster secret to FILE (for --secret-file)");
  app.add_option("--dir", a->dir, "Folder for the CA (made once) and the device certificates");
  app.add_option("devices", a->devices, "Device names to make certificates for");
  app.add_option("--cluster", a->cluster, "The CA's name")->capture_default_str();
  app.add_option("--days", a->days, "Validity in days")->check(CLI::Range(1, 36500))->capture_default_str();
  app.add_flag("--force", a->force, "Replace existing files");
  app.callback([a] { run(*a); });
});

}  // namespace
}  // namespace braid::cli
