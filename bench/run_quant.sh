#!/usr/bin/env bash
# Speed of braid's weight types on a synthetic 1.1B Llama (TinyLlama's shape, random
# weights: speed does not depend on their values), at 1 and 2 threads:
#   pp64, pp512  prompt processing, tokens/s
#   tg64         generation from an empty context, tokens/s
# plus peak RSS and the machine's read bandwidth, measured by `braid bench` in the same
# run. Writes bench/results/synth-1b-TYPE-tN.json and bench/results/environment.json,
# and prints a Markdown table (the one in docs/benchmarks.md).
#
# Settings (environment):
#   BRAID=build/braid        the binary (build it first: scripts/build.sh)
#   BENCH_DIR=/tmp/braid-bench  where the synthetic models are cached (outside the repo;
#                            ~4.5 GB for the four types); FORCE_SYNTH=1 remakes them
#   TYPES="F16 Q8_0 Q4_0 Q4_K_M"  THREADS="1 2"  REPS=3  PRESET=1b
#   PROMPTS=64,512  NGEN=64  RESULTS=bench/results
#   LLAMACPP=native          also run llama.cpp's llama-bench, built natively from the
#                            source its npm package ships (bench/run_llamacpp_native.sh),
#                            on the same file and threads right after each braid run
#                            (pp = the first of PROMPTS, tg = NGEN), writing
#                            llamacpp-PRESET-TYPE-tN.json, and print a second table with
#                            both and their ratios: both see the same machine and load.
#   LLAMACPP=1               the same with llama.cpp's prebuilt CPU binary from npm
#                            (bench/run_llamacpp.sh) instead of a native build.
set -euo pipefail
cd "$(dirname "$0")/.."

BRAID=${BRAID:-build/braid}
BENCH_DIR=${BENCH_DIR:-/tmp/braid-bench}
TYPES=${TYPES:-"F16 Q8_0 Q4_0 Q4_K_M"}
THREADS=${THREADS:-"1 2"}
REPS=${REPS:-3}
PRESET=${PRESET:-1b}
PROMPTS=${PROMPTS:-64,512}
NGEN=${NGEN:-64}
RESULTS=${RESULTS:-bench/results}

case ${LLAMACPP:-0} in
  0) ;;
  1) llamacpp=bench/run_llamacpp.sh ;;
  native) llamacpp=bench/run_llamacpp_native.sh
          bench/build_llamacpp.sh >/dev/null ;;  # build first, outside the timed runs
  *) echo "run_quant.sh: LLAMACPP must be 0, 1 (prebuilt) or native, got '$LLAMACPP'" >&2; exit 2 ;;
esac

if [ ! -x "$BRAID" ]; then
  echo "run_quant.sh: $BRAID not found; build braid first (scripts/build.sh) or set BRAID" >&2
  exit 1
fi
mkdir -p "$BENCH_DIR" "$RESULTS"

load() { cut -d' ' -f1-3 /proc/loadavg; }
load_before=$(load)
start=$(date +%s)

for type in $TYPES; do
  model="$BENCH_DIR/synth-$PRESET-$type.gguf"
  if [ ! -f "$model" ] || [ "${FORCE_SYNTH:-0}" = 1 ]; then
    echo "== synth $PRESET $type -> $model" >&2
    "$BRAID" synth --preset "$PRESET" --type "$type" --seed 1 -o "$model" >&2
  fi
  for t in $THREADS; do
    out="$RESULTS/synth-$PRESET-$type-t$t.json"
    echo "== bench $type, $t threads (load $(load))" >&2
    "$BRAID" bench -m "$model" -t "$t" -p "$PROMPTS" -n "$NGEN" -r "$REPS" --json -o "$out" >/dev/null
    if [ "${LLAMACPP:-0}" != 0 ]; then
      echo "== llama.cpp ($LLAMACPP) $type, $t threads (load $(load))" >&2
      "$llamacpp" "$model" "$t" "${PROMPTS%%,*}" "$NGEN" "$REPS" \
        >"$RESULTS/llamacpp-$PRESET-$type-t$t.json"
    fi
  done
done

# What the numbers were measured on: they move with the machine and its load.
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
cat >"$RESULTS/environment.json" <<EOF
{
  "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "cpu": "$cpu",
  "cores": $(nproc),
  "mem_total_kib": $(awk '/MemTotal/ {print $2}' /proc/meminfo),
  "load_before": "$load_before",
  "load_after": "$(load)",
  "seconds": $(( $(date +%s) - start )),
  "commit": "$commit",
  "command": "TYPES=\"$TYPES\" THREADS=\"$THREADS\" REPS=$REPS PROMPTS=$PROMPTS NGEN=$NGEN LLAMACPP=${LLAMACPP:-0} bench/run_quant.sh"
}
EOF

# The table: one row per (type, threads); GB/s is the weight bytes read per second while
# generating, % its share of the read bandwidth measured in the same run; the RSS check
# is peak RSS against model file + KV cache (+10% allowed).
python3 - "$RESULTS/environment.json" $(for type in $TYPES; do for t in $THREADS; do
  echo "$RESULTS/synth-$PRESET-$type-t$t.json"; done; done) <<'PY'
import json, sys
env = json.load(open(sys.argv[1]))
rows = []
for path in sys.argv[2:]:
    r = json.load(open(path))
    pp = {p["n_prompt"]: p["tokens_per_s"] for p in r["prompt"]}
    budget = r["model_bytes"] + r["kv_cache_bytes"]
    rows.append((r, pp, budget))
sizes = sorted({n for _, pp, _ in rows for n in pp})
def f(v, fmt="%.1f"):
    return "-" if v is None else fmt % v
head = ["type", "threads"] + ["pp%d tok/s" % n for n in sizes] + [
    "tg%d tok/s" % rows[0][0]["n_gen"], "tg GB/s", "% of bw", "read bw GB/s", "peak RSS MiB",
    "file MiB", "RSS / (file+KV)"]
print("| " + " | ".join(head) + " |")
print("|" + "|".join("---" for _ in head) + "|")
for r, pp, budget in rows:
    bw = r["read_bandwidth_bytes_per_s"]
    cells = [r["model_type"], str(r["threads"])] + [f(pp.get(n)) for n in sizes] + [
        f(r["gen_tokens_per_s"]),
        f(r["gen_bytes_per_s"] / 1e9 if r["gen_bytes_per_s"] else None, "%.2f"),
        f(100 * r["bandwidth_fraction"] if r["bandwidth_fraction"] else None, "%.0f%%"),
        f(bw / 1e9 if bw else None, "%.2f"),
        "%.0f" % (r["peak_rss_bytes"] / 2**20),
        "%.0f" % (r["model_bytes"] / 2**20),
        "%.3f%s" % (r["peak_rss_bytes"] / budget, "" if r["peak_rss_bytes"] <= 1.1 * budget else " (over +10%)"),
    ]
    print("| " + " | ".join(cells) + " |")
print()
print("SIMD %s; %s, %d cores; load average %s before, %s after; %d s; commit %s" % (
    rows[0][0]["simd"], env["cpu"], env["cores"], env["load_before"], env["load_after"], env["seconds"],
    env["commit"]))
PY

[ "${LLAMACPP:-0}" != 0 ] || exit 0
# braid against llama.cpp, run back to back on the same file and threads.
python3 - "$PRESET" "${PROMPTS%%,*}" "$RESULTS" $TYPES -- $THREADS <<'PY'
import json, sys
preset, n_prompt, results = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rest = sys.argv[4:]
types, threads = rest[:rest.index("--")], rest[rest.index("--") + 1:]
print()
print("| type | threads | llama.cpp pp%d | braid pp%d | ratio | llama.cpp tg | braid tg | ratio |" % (n_prompt, n_prompt))
print("|---|---|---|---|---|---|---|---|")
for ty in types:
    for t in threads:
        b = json.load(open("%s/synth-%s-%s-t%s.json" % (results, preset, ty, t)))
        l = json.load(open("%s/llamacpp-%s-%s-t%s.json" % (results, preset, ty, t)))
        bpp = {p["n_prompt"]: p["tokens_per_s"] for p in b["prompt"]}[n_prompt]
        lpp, ltg, btg = l["prompt_tokens_per_s"], l["gen_tokens_per_s"], b["gen_tokens_per_s"]
        print("| %s | %s | %.1f | %.1f | %.2f | %.1f | %.1f | %.2f |" % (ty, t, lpp, bpp, bpp / lpp, ltg, btg, btg / ltg))
PY
