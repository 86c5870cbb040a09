#!/usr/bin/env bash
# Runtime balancing and failure recovery of the distributed runtime, emulated on one
# machine: three `braid worker` processes on 127.0.0.1 (1 thread each) and a `braid run
# --workers` head, greedy, on the synthetic 1.1B Q4_0 model (22 layers) by default.
#
# (a) Balancing. tokens/s of generation
#       before     every worker at full speed (an even fixed split);
#       right      one worker (the middle one) 3x slower from the start: the layout that
#       after      stays put (its baseline includes the slowdown, so nothing moves);
#       rebalanced the same worker slows down 3x at decode token AT; the head notices,
#                  re-plans with the measured speeds and moves layers with their KV
#                  caches at decode token K. tokens/s of the tokens after the move: the
#                  run's generation time less AT tokens at the "before" speed, K - AT at
#                  the "right after" speed and the move's pause (its log line), over
#                  the NGEN + EXTRA - K tokens left;
#     gain = rebalanced / right after (LinguaLinked reports 1.29x-1.32x on phones). Every
#     run's ids must equal the full-speed run's (the script fails otherwise).
# (b) Recovery. A worker dies (SIGKILL, --die-after-batches) at decode token AT: the
#     head's "recovered in" (find the loss, re-plan on the survivors, reassign, replay the
#     live tokens) plus one token, against a fresh start on the survivors: a new `braid
#     run` (process start, model load, connecting, profiling, planning, prefill of the
#     prompt + the AT tokens generated so far, one token).
#
# Writes bench/results/balance-TAG.json and prints a Markdown table (docs/benchmarks.md,
# "Balancing and recovery").
#
# Settings (environment):
#   BRAID=build/braid  MODEL=/tmp/braid-bench/synth-1b-Q4_0.gguf (make it with
#   `braid synth --preset 1b --type Q4_0 -o ...`)  TAG=synth-1b-Q4_0
#   SPLIT=0:7,7:15,15:22 (three contiguous ranges covering the model's layers)
#   SLOW=3  AT=8  NGEN=40  EXTRA=40 (more tokens in the rebalancing runs)  PROMPT_LEN=32
#   REPS=3  RESULTS=bench/results
#   PARTS="balancing recovery" (PARTS=recovery: only the full-speed runs, which give the
#   token time and the reference ids, and the recovery; the balancing numbers are null)
# Each measurement runs REPS times on fresh workers (the hooks count batches per
# process); the tables report medians.
set -euo pipefail
cd "$(dirname "$0")/.."

BRAID=${BRAID:-build/braid}
MODEL=${MODEL:-/tmp/braid-bench/synth-1b-Q4_0.gguf}
TAG=${TAG:-synth-1b-Q4_0}
SPLIT=${SPLIT:-0:7,7:15,15:22}
SLOW=${SLOW:-3}
AT=${AT:-8}
NGEN=${NGEN:-40}
EXTRA=${EXTRA:-40}
PROMPT_LEN=${PROMPT_LEN:-32}
REPS=${REPS:-3}
RESULTS=${RESULTS:-bench/results}
PARTS=${PARTS:-"balancing recovery"}

for f in "$BRAID" "$MODEL"; do
  if [ ! -e "$f" ]; then
    echo "run_balance.sh: $f not found (build braid; make the model with braid synth; or set BRAID / MODEL)" >&2
    exit 1
  fi
done
mkdir -p "$RESULTS"
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
head -c 48 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/secret"

load() { cut -d' ' -f1-3 /proc/loadavg; }
load_before=$(load)
t_start=$(date +%s)
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# Three workers; worker i gets the extra flags in $1, $2, $3. Sets ADDRS.
start_workers() {
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
  ADDRS=""
  local i flags=("$@")
  for i in 0 1 2; do
    local extra=${flags[$i]}
    : >"$work/port$i"
    # shellcheck disable=SC2086
    "$BRAID" worker --threads 1 --listen 127.0.0.1:0 --secret-file "$work/secret" --ready-fd 3 $extra \
      3>"$work/port$i" 2>>"$work/worker$i.log" >/dev/null &
    pids+=($!)
  done
  for i in 0 1 2; do
    local n=0
    while [ ! -s "$work/port$i" ] && [ $n -lt 200 ]; do sleep 0.05; n=$((n + 1)); done
    [ -s "$work/port$i" ] || { echo "worker $i did not start: $(tail -2 "$work/worker$i.log")" >&2; exit 1; }
    ADDRS="$ADDRS${ADDRS:+,}127.0.0.1:$(head -1 "$work/port$i")"
  done
}

prompt=1
for i in $(seq 2 "$PROMPT_LEN"); do prompt="$prompt,$((3 + (i * 37) % 500))"; done

# run NAME N [flags...]: a greedy run on the workers; ids in $work/NAME.ids, stderr in
# $work/NAME.err; prints the generation's seconds.
run() {
  local name=$1 n=$2
  shift 2
  "$BRAID" run -m "$MODEL" --prompt-tokens "$prompt" -n "$n" --temp 0 -t 1 --ctx 512 \
    --ids-out "$work/$name.ids" --workers "$ADDRS" --secret-file "$work/secret" "$@" \
    >/dev/null 2>"$work/$name.err" || { echo "run $name failed: $(tail -3 "$work/$name.err")" >&2; exit 1; }
  # "generated: 40 tokens, 11.9 tok/s"
  sed -n 's/.*generated: \([0-9]*\) tokens, \([0-9.]*\) tok\/s.*/\1 \2/p' "$work/$name.err" |
    awk '{ printf "%.4f\n", $1 / $2 }'
}
same_prefix() {  # the ids of run $1 start with those of run $2 (or the other way round)
  local a b
  a=$(tr -s ' \n' ' ' <"$work/$1.ids")
  b=$(tr -s ' \n' ' ' <"$work/$2.ids")
  case "$a" in "$b"*) return 0 ;; esac
  case "$b" in "$a"*) return 0 ;; esac
  echo "run_balance.sh: the ids of $1 and $2 differ" >&2
  exit 1
}
tps() { awk -v n="$1" -v s="$2" 'BEGIN { if (s == "" || s <= 0) print "null"; else printf "%.2f", n / s }'; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
# measure NAME N "flags of worker 0" "... 1" "... 2" [run flags...]: REPS runs on fresh
# workers (started here, not in a subshell, so that they can be stopped), each run's ids
# in NAME.ids / NAME-REP.ids; sets SECONDS_MEDIAN.
measure() {
  local name=$1 n=$2 f0=$3 f1=$4 f2=$5 r times=""
  shift 5
  for r in $(seq 1 "$REPS"); do
    start_workers "$f0" "$f1" "$f2"
    times="$times $(run "$name" "$n" "$@")"
    cp "$work/$name.ids" "$work/$name-$r.ids"
    cp "$work/$name.err" "$work/$name-$r.err"
  done
  SECONDS_MEDIAN=$(echo "$times" | median)
}

echo "== before: three workers at full speed (load $(load))" >&2
measure before "$NGEN" "" "" "" --split "$SPLIT"
s_before=$SECONDS_MEDIAN
case " $PARTS " in *" balancing "*)
echo "== right after: worker 1 ${SLOW}x slower, layout stays (load $(load))" >&2
measure stay "$NGEN" "" "--slowdown $SLOW" "" --split "$SPLIT"
s_stay=$SECONDS_MEDIAN
same_prefix stay before
if grep -q "moved layers" "$work"/stay-*.err; then
  echo "run_balance.sh: layers moved in the staying-put run" >&2
  exit 1
fi
n2=$((NGEN + EXTRA))
echo "== rebalanced: worker 1 slows down ${SLOW}x at decode token $AT, $n2 tokens (load $(load))" >&2
measure bal2 "$n2" "" "--slowdown-after-batches $AT:$SLOW" "" --split "$SPLIT"
s_bal2=$SECONDS_MEDIAN
same_prefix bal2 before
move=$(grep -m1 "moved layers" "$work/bal2.err" || true)
if [ -z "$move" ]; then
  echo "run_balance.sh: no layers moved: $(grep balance "$work/bal2.err" || tail -3 "$work/bal2.err")" >&2
  exit 1
fi
if [ "$(cat "$work"/bal2-*.err | grep -c "moved layers")" -ne "$REPS" ]; then
  echo "run_balance.sh: not every rebalancing run moved layers once" >&2
  exit 1
fi
moves() { grep -h "moved layers" "$work"/bal2-*.err | sed -n "$1" | median; }
move_ms=$(moves 's/.*; took \([0-9]*\) ms$/\1/p')
kv_bytes=$(moves 's/.* transferred: \([0-9]*\) bytes in .*/\1/p')
kv_ms=$(moves 's/.* bytes in \([0-9.]*\) ms (no replay).*/\1/p')
layout_after=$(echo "$move" | sed -n 's/.* => \(.*\); KV of .*/\1/p')
move_token=$(moves 's/.*(decode token \([0-9]*\)).*/\1/p')
s_extra=$(awk -v t="$s_bal2" -v at="$AT" -v k="$move_token" -v b="$s_before" -v st="$s_stay" -v n="$NGEN" \
  -v m="$move_ms" 'BEGIN { printf "%.4f", t - at * b / n - (k - at) * st / n - m / 1000 }')
left=$((n2 - move_token))
;;
*)
  s_stay="" s_bal2="" move_ms="" kv_bytes="" kv_ms="" layout_after="" move_token="" s_extra="" left=0 n2=0 ;;
esac

echo "== recovery: worker 1 dies at decode token $AT (load $(load))" >&2
measure die "$NGEN" "" "--die-after-batches $AT" "" --split "$SPLIT"
s_die=$SECONDS_MEDIAN
same_prefix die before
recovered_ms=$(sed -n 's/.*; recovered in \([0-9]*\) ms$/\1/p' "$work"/die-*.err | median)
[ -n "$recovered_ms" ] || { echo "run_balance.sh: no recovery in the log" >&2; exit 1; }
echo "== fresh start on the two survivors (load $(load))" >&2
survivors="127.0.0.1:$(head -1 "$work/port0"),127.0.0.1:$(head -1 "$work/port2")"
fresh_prompt="$prompt,$(tr -s ' \n' '\n' <"$work/before.ids" | grep -v '^$' | head -n "$AT" | paste -sd,)"
fresh=""
for r in $(seq 1 "$REPS"); do
  t0=$(now_ms)
  "$BRAID" run -m "$MODEL" --prompt-tokens "$fresh_prompt" -n 1 --temp 0 -t 1 --ctx 512 \
    --workers "$survivors" --secret-file "$work/secret" >/dev/null 2>"$work/fresh.err" ||
    { echo "fresh start failed: $(tail -3 "$work/fresh.err")" >&2; exit 1; }
  fresh="$fresh $(($(now_ms) - t0))"
done
fresh_ms=$(echo "$fresh" | median)

tps_before=$(tps "$NGEN" "$s_before")
tps_stay=$(tps "$NGEN" "$s_stay")
tps_after=$(tps "$left" "$s_extra")
tps_bal_run=$(tps "$n2" "$s_bal2")
gain=$(awk -v a="$tps_after" -v b="$tps_stay" 'BEGIN { if (a == "null" || b == "null") print "null"; else printf "%.2f", a / b }')
token_ms=$(awk -v s="$s_before" -v n="$NGEN" 'BEGIN { printf "%.0f", 1000 * s / n }')
kill_to_token_ms=$((recovered_ms + token_ms))
speedup=$(awk -v a="$fresh_ms" -v b="$kill_to_token_ms" 'BEGIN { printf "%.1f", a / b }')
load_after=$(load)
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)

out="$RESULTS/balance-$TAG.json"
cat >"$out" <<EOF
{
  "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "commit": "$(git rev-parse --short HEAD 2>/dev/null || echo unknown)",
  "cpu": "$cpu",
  "cores": $(nproc),
  "load_before": "$load_before",
  "load_after": "$load_after",
  "model": "$(basename "$MODEL")",
  "workers": 3,
  "threads_per_worker": 1,
  "split": "$SPLIT",
  "slowdown": $SLOW,
  "slow_at_decode_token": $AT,
  "prompt_tokens": $PROMPT_LEN,
  "reps": $REPS,
  "balancing": {
    "tokens_per_s_before": $tps_before,
    "tokens_per_s_right_after": $tps_stay,
    "tokens_per_s_after_rebalancing": $tps_after,
    "gain_over_staying_put": $gain,
    "tokens_per_s_whole_run_with_move": $tps_bal_run,
    "whole_run_tokens": $n2,
    "move_at_decode_token": ${move_token:-null},
    "move_ms": ${move_ms:-null},
    "kv_bytes_moved": ${kv_bytes:-null},
    "kv_move_ms": ${kv_ms:-null},
    "layout_after": "$layout_after"
  },
  "recovery": {
    "killed_at_decode_token": $AT,
    "recovered_in_ms": $recovered_ms,
    "token_ms": $token_ms,
    "kill_to_next_token_ms": $kill_to_token_ms,
    "fresh_start_ms": $fresh_ms,
    "fresh_start_over_recovery": $speedup
  }
}
EOF

case " $PARTS " in *" balancing "*)
  cat <<EOF
| balancing ($(basename "$MODEL"), 3 workers, one ${SLOW}x slower) | tokens/s |
|---|---:|
| before the slowdown | $tps_before |
| right after it (layout stays put) | $tps_stay |
| after rebalancing (move at decode token $move_token: ${move_ms} ms, ${kv_bytes} bytes of KV in ${kv_ms} ms) | $tps_after |
| **gain of rebalancing over staying put** | **${gain}x** |

EOF
  ;;
esac
cat <<EOF
| recovery (worker killed at decode token $AT) | ms |
|---|---:|
| kill to next token (recovered in $recovered_ms ms + one $token_ms ms token) | $kill_to_token_ms |
| fresh start on the survivors (new \`braid run\`: load, connect, plan, prefill $((PROMPT_LEN + AT)) tokens, 1 token) | $fresh_ms |
| fresh start / recovery | ${speedup}x |

${layout_after:+layout after the move: $layout_after
}load: $load_before before, $load_after after; $(($(date +%s) - t_start)) s; wrote $out
EOF
