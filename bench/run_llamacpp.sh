#!/usr/bin/env bash
# llama.cpp on the same GGUF files braid benchmarks, on this machine, through the prebuilt
# CPU binaries that the npm package node-llama-cpp ships (@node-llama-cpp/linux-x64).
#
#   bench/run_llamacpp.sh MODEL.gguf THREADS [PROMPT=64] [NGEN=32] [REPS=3]
#
# Installs bench/llamacpp/node_modules once from bench/llamacpp/package-lock.json
# (npm ci; again only when the lock file changes), then prints bench/llamacpp/bench.mjs's
# JSON on stdout. Needs node >= 20 and npm, and the npm registry for the first install.
# Extra flags for bench.mjs can go in LLAMACPP_BENCH_ARGS (e.g. "--seed 2 --verbose").
set -euo pipefail

usage() { echo "usage: $0 MODEL.gguf THREADS [PROMPT=64] [NGEN=32] [REPS=3]" >&2; exit 2; }
[[ $# -ge 2 && $# -le 5 ]] || usage

model=$1 threads=$2 prompt=${3:-64} ngen=${4:-32} reps=${5:-3}
[[ -f $model ]] || { echo "$0: no such model file: $model" >&2; exit 1; }

dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/llamacpp" && pwd)

command -v node >/dev/null || { echo "$0: node (>= 20) is not installed" >&2; exit 1; }
command -v npm >/dev/null || { echo "$0: npm is not installed" >&2; exit 1; }
node_major=$(node -p 'process.versions.node.split(".")[0]')
(( node_major >= 20 )) || { echo "$0: node >= 20 needed, found $(node --version)" >&2; exit 1; }
if [[ $(uname -s) != Linux || $(uname -m) != x86_64 ]]; then
    echo "$0: the pinned prebuilt binary (@node-llama-cpp/linux-x64) is for Linux x86_64 only, this is $(uname -s) $(uname -m)" >&2
    exit 1
fi

# npm ci once per lock file. --omit=optional: node-llama-cpp lists every platform's
# prebuilt binaries (CUDA, Vulkan, ...) as optional dependencies; only the CPU one, a
# direct dependency in package.json, is installed. --ignore-scripts: node-llama-cpp's
# postinstall may try to build llama.cpp from source; bench.mjs only uses the prebuilt one.
stamp=$dir/node_modules/.braid-lock.sha256
want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    echo "$0: installing node-llama-cpp into $dir/node_modules (npm ci)" >&2
    (cd "$dir" && npm ci --omit=optional --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
    echo "$want" >"$stamp"
fi

# shellcheck disable=SC2086
exec node "$dir/bench.mjs" -m "$model" -t "$threads" -p "$prompt" -n "$ngen" -r "$reps" ${LLAMACPP_BENCH_ARGS:-}
