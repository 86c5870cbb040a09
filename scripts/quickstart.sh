#!/usr/bin/env bash
# The README's first command: installs what braid needs, builds it, and runs braid's
# main job on the default model. Extra arguments go to `braid run`.
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
echo "quickstart: generating with $MODEL" >&2
build/braid run -m "$MODEL" -p "Once upon a time" -n 128 --temp 0.8 --seed 42 "$@"
echo
