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

if [[ $(uname -s) != Linux || $(uname -m) != x86_64 ]]; then
    echo "$0: the pinned prebuilt binary (@node-llama-cpp/linux-x64) is for Linux x86_64 only, this is $(uname -s) $(uname -m)" >&2
    exit 1
fi
"$dir/install.sh"

# shellcheck disable=SC2086
exec node "$dir/bench.mjs" -m "$model" -t "$threads" -p "$prompt" -n "$ngen" -r "$reps" ${LLAMACPP_BENCH_ARGS:-}
