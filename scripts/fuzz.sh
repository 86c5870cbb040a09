#!/usr/bin/env bash
# Builds the libFuzzer targets with clang and runs each for SECONDS (default 45),
# seeded from fuzz/corpus/<target>/ and, where present, real files from the assets.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-45}
TARGETS=$(cd fuzz && ls fuzz_*.cpp | sed "s/\.cpp$//" | tr "\n" " ")
TARGET="$TARGETS" BUILD_DIR=build-fuzz CC=clang CXX=clang++ scripts/build.sh -DBRAID_FUZZ=ON -DBRAID_TESTS=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo
ASSETS=${BRAID_ASSETS:-$(pwd)/../shared/assets}
for bin in build-fuzz/fuzz/fuzz_*; do
  [ -x "$bin" ] || continue
  name=$(basename "$bin")
  work=$(mktemp -d)
  seeds=(fuzz/corpus/"$name")
  [ -d "${seeds[0]}" ] || seeds=()
  [ -f fuzz/"$name".seeds ] && while read -r rel; do
    [ -e "$ASSETS/$rel" ] && cp "$ASSETS/$rel" "$work/"
  done < fuzz/"$name".seeds
  echo "-- $name for ${SECONDS_EACH}s"
  "$bin" -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=10 \
    -print_final_stats=1 "$work" "${seeds[@]}" 2>&1 | tail -n 4
  rm -rf "$work"
done
