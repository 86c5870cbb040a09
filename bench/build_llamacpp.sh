#!/usr/bin/env bash
# Builds llama.cpp's own llama-bench natively (-march=native through GGML_NATIVE) from the
# source that the pinned npm package node-llama-cpp ships (node_modules/node-llama-cpp/
# llama/gitRelease.bundle: a git bundle of the same llama.cpp release as its prebuilt
# binaries), so braid can be compared with llama.cpp as its users build it, offline.
#
#   bench/build_llamacpp.sh        # prints the path of llama-bench on stdout
#
# Settings (environment): LLAMACPP_NATIVE_DIR (default bench/llamacpp/native, git-ignored)
# holds src/ (the checkout) and src/build/. Rebuilds only when the bundle's commit changes
# or the binary is missing. ~7 min on 2 cores the first time (ccache is used when present).
# Needs cmake, a C++17 compiler, git, node >= 20 and npm (bench/llamacpp/install.sh).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
"$here/llamacpp/install.sh"

bundle=$here/llamacpp/node_modules/node-llama-cpp/llama/gitRelease.bundle
[[ -f $bundle ]] || { echo "$0: no llama.cpp source bundle at $bundle" >&2; exit 1; }
for tool in git cmake; do
    command -v "$tool" >/dev/null || { echo "$0: $tool is not installed" >&2; exit 1; }
done

root=${LLAMACPP_NATIVE_DIR:-$here/llamacpp/native}
src=$root/src bin=$root/src/build/bin/llama-bench
want=$(git bundle list-heads "$bundle" | awk '$2 == "HEAD" {print $1}')
[[ -n $want ]] || { echo "$0: $bundle has no HEAD" >&2; exit 1; }

have=$(git -C "$src" rev-parse HEAD 2>/dev/null || true)
if [[ $have != "$want" ]]; then
    echo "$0: checking out llama.cpp $want from $bundle into $src" >&2
    rm -rf "$src"
    mkdir -p "$root"
    git -c advice.detachedHead=false clone -q "$bundle" "$src" >&2
fi

if [[ ! -x $bin || $have != "$want" ]]; then
    launcher=()
    command -v ccache >/dev/null && launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
    generator=()
    command -v ninja >/dev/null && generator=(-G Ninja)
    echo "$0: building llama-bench (GGML_NATIVE=ON, Release) in $src/build" >&2
    cmake -S "$src" -B "$src/build" "${generator[@]}" "${launcher[@]}" -DCMAKE_BUILD_TYPE=Release \
        -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
        -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF >&2
    cmake --build "$src/build" --target llama-bench -j "$(nproc)" >&2
fi
echo "$bin"
