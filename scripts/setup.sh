#!/usr/bin/env bash
# Installs every Debian 12 package braid's build, tests, fuzzers and benchmarks need.
# Idempotent: packages already present are left alone; apt-get update runs only when
# something is missing.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  clang libclang-rt-14-dev            # libFuzzer + sanitizers
  libgtest-dev libgmock-dev libbenchmark-dev
  libhwy-dev                          # SIMD (Highway)
  libcli11-dev nlohmann-json3-dev libcpp-httplib-dev
  libtomlplusplus-dev                 # cluster files (braid run/plan/bench --cluster)
  libasio-dev libssl-dev              # network, TLS
  coinor-libcbc-dev                   # MILP solver for the planner
  fortunes fortunes-min               # training text for braid's default model
  iproute2                            # network namespaces for integration tests
  python3
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
