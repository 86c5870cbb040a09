// Workers that dial in (`braid worker --connect HEAD`): a device behind NAT can reach the
// head but not be reached. The head listens; a worker's first connection becomes its
// control link, and when the ring needs its data links the head asks it (DIAL_BACK) to
// open them, which arrive on the same listener.
#include <chrono>

#include "braid/error.h"
#include "dist/head_ring.h"

namespace braid::dist {

using namespace std::chrono_literals;

void RingImpl::start_accepting(const std::string& at) {
  listener = std::make_unique<net::Listener>(tls, net::Endpoint::parse(at));
  accepting.store(true);
  acceptor = std::thread([this] { accept_loop(); });
  log(cat("waiting for workers to join at ", net::Endpoint::parse(at).host, ":", listener->port()));
}

void RingImpl::stop_accepting() {
  if (!listener) return;
  accepting.store(false);
  listener->close();
  if (acceptor.joinable()) acceptor.join();
  listener.reset();
}

void RingImpl::accept_loop() {
  while (accepting.load()) {
    std::shared_ptr<net::Connection> conn(listener->accept(200ms));
    if (!conn) continue;
    // Handshakes are short and bounded; doing them here keeps the bookkeeping simple.
    try {
      conn->handshake_server(opt.connect_timeout);
      check_hello(receive(*conn, opt.connect_timeout), conn->peer());
      const Link l = expect<Link>(receive(*conn, opt.connect_timeout), conn->peer());
      send(*conn, make_hello(proto::Role::kHead, "head"), Linked{l.session}, opt.connect_timeout);
      std::lock_guard<std::mutex> lock(accept_mu);
      if (l.kind == LinkKind::kControl) {
        joined.emplace_back(conn, l.session);
      } else {
        links[{l.session, static_cast<int>(l.kind)}] = conn;
      }
      accept_cv.notify_all();
    } catch (const Error& e) {
      log(cat("refused ", conn->peer(), ": ", e.what()));
    }
  }
}

void RingImpl::wait_for_workers(int n, net::Millis timeout) {
  std::unique_lock<std::mutex> lock(accept_mu);
  const bool all = accept_cv.wait_for(lock, timeout, [&] { return static_cast<int>(joined.size()) >= n; });
  check(all, "only ", joined.size(), " of ", n, " workers joined at ", opt.accept, " within ",
        net::format_duration(timeout));
  for (int i = 0; i < n; ++i) {
    auto w = std::make_unique<RemoteWorker>();
    w->control = joined[static_cast<size_t>(i)].first;
    w->session = joined[static_cast<size_t>(i)].second;
    w->addr = net::Endpoint::parse(w->control->peer());
    w->dialed_in = true;
    log(cat("worker ", w->addr.str(), " joined"));
    workers.push_back(std::move(w));
  }
  // Any beyond n are not needed: they will see the connection close.
  for (size_t i = static_cast<size_t>(n); i < joined.size(); ++i) joined[i].first->close();
  joined.clear();
}

std::shared_ptr<net::Connection> RingImpl::take_link(uint64_t session, LinkKind kind, net::Millis timeout) {
  std::unique_lock<std::mutex> lock(accept_mu);
  const auto key = std::make_pair(session, static_cast<int>(kind));
  check(accept_cv.wait_for(lock, timeout, [&] { return links.count(key) > 0; }),
        "a worker did not open its link within ", net::format_duration(timeout));
  auto conn = links[key];
  links.erase(key);
  return conn;
}

}  // namespace braid::dist
