#!/usr/bin/env bash
# Configures and builds braid into $BUILD_DIR (default build/, Release). Extra args go to
# cmake's configure step; TARGET="a b" builds just those targets (default: everything).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
# ccache hits across checkouts in different folders (CI clones elsewhere).
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$(pwd)} CCACHE_NOHASHDIR=${CCACHE_NOHASHDIR:-true}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "$BUILD_DIR" -j "$(nproc)" ${TARGET:+--target $TARGET}
