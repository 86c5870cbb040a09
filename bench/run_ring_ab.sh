#!/usr/bin/env bash
# The network's cost on loopback, measured fairly: one local 1-thread process and a ring
# of two 1-thread workers (pinned to cores 0 and 1, even split), alternated ROUNDS times
# so both see the same machine state, on the synthetic 1B Q4_0 model. Prints each run's
# tg tokens/s and the ratio of the medians (issue 4's target: ring >= 90% of local).
#
# Settings (environment): BRAID=build/braid  MODEL=/tmp/braid-bench/synth-1b-Q4_0.gguf
#   NGEN=64  REPS=3  ROUNDS=3  PORTS="7301 7302"
set -euo pipefail
cd "$(dirname "$0")/.."
BRAID=${BRAID:-build/braid}
MODEL=${MODEL:-/tmp/braid-bench/synth-1b-Q4_0.gguf}
NGEN=${NGEN:-64}
REPS=${REPS:-3}
ROUNDS=${ROUNDS:-3}
read -r P1 P2 <<<"${PORTS:-7301 7302}"
[ -f "$MODEL" ] || { echo "run_ring_ab.sh: $MODEL not found (braid synth --preset 1b --type Q4_0 -o ...)" >&2; exit 1; }
secret=$(mktemp)
trap 'kill $w1 $w2 2>/dev/null || true; rm -f "$secret"' EXIT
head -c 32 /dev/urandom >"$secret"
taskset -c 0 "$BRAID" worker --listen 127.0.0.1:$P1 --secret-file "$secret" --threads 1 2>/dev/null &
w1=$!
taskset -c 1 "$BRAID" worker --listen 127.0.0.1:$P2 --secret-file "$secret" --threads 1 2>/dev/null &
w2=$!
sleep 1
tg() { "$@" 2>/dev/null | python3 -c 'import json,sys; print("%.2f" % json.load(sys.stdin)["gen_tokens_per_s"])'; }
local_runs=() ring_runs=()
for ((i = 0; i < ROUNDS; i++)); do
  l=$(tg taskset -c 0 "$BRAID" bench -m "$MODEL" -t 1 -p 0 -n "$NGEN" -r "$REPS" --no-bandwidth --json)
  r=$(tg "$BRAID" bench -m "$MODEL" -t 1 -p 0 -n "$NGEN" -r "$REPS" --no-bandwidth --json \
        --workers 127.0.0.1:$P1,127.0.0.1:$P2 --secret-file "$secret" --split even)
  echo "round $((i + 1)): local $l tok/s, ring $r tok/s"
  local_runs+=("$l") ring_runs+=("$r")
done
python3 - "${local_runs[*]}" "${ring_runs[*]}" "$(cut -d' ' -f1-3 /proc/loadavg)" <<'PY'
import statistics, sys
l = [float(x) for x in sys.argv[1].split()]
r = [float(x) for x in sys.argv[2].split()]
ml, mr = statistics.median(l), statistics.median(r)
print("median: local %.2f tok/s, ring %.2f tok/s, ring/local %.1f%% (load %s)" % (ml, mr, 100 * mr / ml, sys.argv[3]))
PY
