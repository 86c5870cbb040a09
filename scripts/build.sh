#!/usr/bin/env bash
# Configures and builds braid into $BUILD_DIR (default build/, Release). Extra args go to
# cmake's configure step; TARGET=name builds just that target (default: everything).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)" ${TARGET:+--target "$TARGET"}
