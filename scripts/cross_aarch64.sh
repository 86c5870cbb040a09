#!/usr/bin/env bash
# Cross-builds braid's kernel and engine tests for aarch64 and runs them under qemu-user,
# so the NEON / SVE paths of the SIMD kernels are tested on an x86-64 Debian 12 machine.
#
# Installs (once): the cross compiler (g++-aarch64-linux-gnu), qemu-user, and the target
# libraries through Debian multiarch (dpkg --add-architecture arm64): libhwy-dev:arm64,
# libgtest-dev:arm64 (prebuilt gtest for arm64), libssl-dev:arm64 (the top-level CMake
# file requires OpenSSL). nlohmann-json and asio are header-only and shared with the
# host. Builds with the toolchain file cmake/aarch64.cmake into $BUILD_DIR (default
# build-aarch64) the test project cmake/aarch64-tests (the library modules plus the tests
# below), then runs them through ctest, which starts each under `qemu-aarch64` (no
# binfmt_misc needed; the arm64 loader and libc are multiarch's libc6:arm64 at their
# usual paths, see cmake/aarch64.cmake for why not `-L /usr/aarch64-linux-gnu`).
#
# Settings: BUILD_DIR, JOBS (default nproc), TARGETS (test executables to build, default
# all), TESTS (ctest regex, default all), QEMU_CPU
# (e.g. "max,sve=off" to force the NEON paths; default qemu's "max": NEON + SVE/SVE2).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build-aarch64}
JOBS=${JOBS:-$(nproc)}
export CCACHE_DIR=${CCACHE_DIR:-$HOME/.cache/braid-ccache}

HOST_PACKAGES=(g++-aarch64-linux-gnu qemu-user)
TARGET_PACKAGES=(libc6:arm64 libhwy-dev:arm64 libgtest-dev:arm64 libssl-dev:arm64)

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

missing=()
for p in "${HOST_PACKAGES[@]}" "${TARGET_PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    echo "cross_aarch64: adding the arm64 architecture (dpkg multiarch)" >&2
    $SUDO dpkg --add-architecture arm64
  fi
  echo "cross_aarch64: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

start=$(date +%s)
PKG_CONFIG_LIBDIR=/usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig \
  cmake -S cmake/aarch64-tests -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DCMAKE_TOOLCHAIN_FILE="$PWD/cmake/aarch64.cmake" >/dev/null
cmake --build "$BUILD_DIR" -j "$JOBS" ${TARGETS:+--target $TARGETS}
built=$(date +%s)
echo "cross_aarch64: built in $((built - start)) s" >&2

# qemu reads QEMU_CPU: "max" offers NEON, SVE and SVE2, and test_quant runs its kernels
# on every SIMD target the CPU offers.
export QEMU_CPU=${QEMU_CPU:-max}
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS" ${TESTS:+-R "$TESTS"}
echo "cross_aarch64: tests ran in $(($(date +%s) - built)) s under qemu-aarch64 (QEMU_CPU=$QEMU_CPU)" >&2
