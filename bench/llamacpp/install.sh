#!/usr/bin/env bash
# Installs bench/llamacpp/node_modules from package-lock.json (npm ci), once per lock file.
# Used by run_llamacpp.sh (the prebuilt binary) and build_llamacpp.sh (the source bundle
# the same package ships). Prints nothing on stdout. Needs node >= 20, npm, and the npm
# registry for the first install.
set -euo pipefail
dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

command -v node >/dev/null || { echo "$0: node (>= 20) is not installed" >&2; exit 1; }
command -v npm >/dev/null || { echo "$0: npm is not installed" >&2; exit 1; }
node_major=$(node -p 'process.versions.node.split(".")[0]')
(( node_major >= 20 )) || { echo "$0: node >= 20 needed, found $(node --version)" >&2; exit 1; }

# --omit=optional: node-llama-cpp lists every platform's prebuilt binaries (CUDA, Vulkan,
# ...) as optional dependencies; only the CPU one, a direct dependency in package.json, is
# installed. --ignore-scripts: node-llama-cpp's postinstall may try to build llama.cpp
# from source; we either use the prebuilt binary or build llama-bench ourselves.
stamp=$dir/node_modules/.braid-lock.sha256
want=$(sha256sum "$dir/package-lock.json" | cut -d' ' -f1)
if [[ ! -f $stamp || $(cat "$stamp") != "$want" ]]; then
    echo "$0: installing node-llama-cpp into $dir/node_modules (npm ci)" >&2
    (cd "$dir" && npm ci --omit=optional --ignore-scripts --no-audit --no-fund --loglevel=error >&2)
    echo "$want" >"$stamp"
fi
