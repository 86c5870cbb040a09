#!/usr/bin/env bash
# Reproduces models/braid-default.gguf, braid's default model: a small Llama-architecture
# model trained from scratch on the English quotations of Debian's `fortunes` package
# (apt-get install fortunes). See docs/default-model.md for the numbers it gives.
#
#   scripts/train_default_model.sh   # 26 minutes of CPU time: under 30 minutes on 2 cores
#
# Environment: BRAID (the braid binary, default build/braid), FORTUNES (default
# /usr/share/games/fortunes), OUT (default models/braid-default.gguf), THREADS (default 2;
# the result does not depend on it: training is bit-identical for any thread count),
# METRICS (the per-step loss log, default $OUT.metrics.jsonl; not part of the release).
# The run keeps a checkpoint beside OUT, so an interrupted run (Ctrl-C, a reboot) continues
# where it stopped when the script is run again; it is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
BRAID=${BRAID:-build/braid}
FORTUNES=${FORTUNES:-/usr/share/games/fortunes}
OUT=${OUT:-models/braid-default.gguf}
THREADS=${THREADS:-2}
METRICS=${METRICS:-$OUT.metrics.jsonl}

# Every topic file of fortunes 1:1.99.1-7.3 but these:
#   held out, never seen in training (for adaptation benchmarks): startrek medicine pets sports
#   not prose: ascii-art
TRAIN_FILES="art computers cookie debian definitions disclaimer drugs education ethnic food fortunes
goedel humorists kids knghtbrd law linux linuxcookie literature love magic men-women miscellaneous
news paradoxum people perl platitudes politics pratchett riddles science songs-poems tao
translate-me wisdom work zippy"
# sha256 of those files concatenated in that order, in the package version above.
DATA_SHA256=5f1c55122c6f5ff7367dc28e9ce1578f28acbc75b78d44bf57729c3af6c2ec02

[ -x "$BRAID" ] || { echo "train_default_model: $BRAID not found: build braid first (scripts/build.sh)" >&2; exit 1; }
files=()
for f in $TRAIN_FILES; do
  [ -f "$FORTUNES/$f" ] || { echo "train_default_model: $FORTUNES/$f is missing (apt-get install fortunes)" >&2; exit 1; }
  files+=("$FORTUNES/$f")
done
sha=$(cat "${files[@]}" | sha256sum | cut -d' ' -f1)
if [ "$sha" != "$DATA_SHA256" ]; then
  echo "train_default_model: warning: the fortune files differ from fortunes 1:1.99.1-7.3;" \
    "the model will not be bit-identical to the published one" >&2
fi
mkdir -p "$(dirname "$OUT")"

# The exact command. Documents are the "%"-separated quotations, each trained as
# [BOS] text [EOS]; 2% of them (chosen by the seed) are held out for the validation loss.
"$BRAID" train --data "${files[@]}" --doc-sep % \
  --vocab-size 2048 \
  --dim 192 --layers 4 --heads 6 --kv-heads 6 --ffn 512 --ctx 256 --tie-embeddings \
  --seq 128 --batch 8 --steps 2200 \
  --lr 3e-3 --warmup 100 --min-lr 3e-4 --weight-decay 0.1 --grad-clip 1.0 --beta1 0.9 --beta2 0.95 \
  --seed 1 --val-frac 0.02 --eval-every 200 \
  --threads "$THREADS" \
  --checkpoint "$OUT.ckpt" --save-every 200 --metrics "$METRICS" \
  --name braid-default -o "$OUT"
rm -f "$OUT.ckpt"

echo "--- sample (greedy) ---" >&2
"$BRAID" run -m "$OUT" -p "The" -n 60 --temp 0 --threads "$THREADS"
echo
