#!/usr/bin/env bash
# The README's first command: installs what braid needs, builds it, and runs braid's
# main job on the default model: one model across several devices, here two local
# `braid worker` processes started by `braid cluster --local 2` (each runs half of the
# layers; the output is the same text `braid run` prints on one device with the same
# seed). Extra arguments go to the head (`braid run`); BRAID_SPLIT=planner lets the
# planner decide who runs what (on one machine it often leaves a worker out).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
TARGET=braid scripts/build.sh

MODEL=${BRAID_MODEL:-}
if [ -z "$MODEL" ]; then
  for candidate in models/braid-default.gguf ../shared/assets/models/stories260K.gguf; do
    if [ -f "$candidate" ]; then MODEL=$candidate; break; fi
  done
fi
if [ -z "$MODEL" ]; then
  echo "quickstart: no model found. Pass one: BRAID_MODEL=/path/to/model.gguf scripts/quickstart.sh" >&2
  echo "            (any Llama / Qwen2 / GPT-2 GGUF, or convert a Hugging Face folder with 'build/braid convert')" >&2
  exit 1
fi
echo "quickstart: generating with $MODEL on a local cluster of 2 workers" >&2
build/braid cluster --local 2 -m "$MODEL" -p "Once upon a time" -n 128 --temp 0.8 --seed 42 \
  --split "${BRAID_SPLIT:-even}" "$@"
echo
