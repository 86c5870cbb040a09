#!/usr/bin/env bash
# braid against native llama.cpp (bench/run_llamacpp_native.sh) on one GGUF file, in
# alternating rounds: on a shared VM whose speed swings by up to 2x within minutes, one
# run of each, minutes apart, compares the host's phases more than the engines. Each
# round runs both back to back (braid first in odd rounds, llama.cpp first in even
# ones, so a drift favours neither), and the verdict is the median of the per-round
# ratios.
#
#   bench/compare_llamacpp.sh MODEL.gguf THREADS [ROUNDS=5] [PROMPT=64] [NGEN=64] [REPS=3]
#
# Prints a Markdown table (one row per round, then the medians) and writes the rounds as
# JSON to $OUT (default bench/results/compare-llamacpp-MODELNAME-tTHREADS.json).
# BRAID=build/braid is the binary. NGEN=0 times prompts only.
set -euo pipefail

usage() { echo "usage: $0 MODEL.gguf THREADS [ROUNDS=5] [PROMPT=64] [NGEN=64] [REPS=3]" >&2; exit 2; }
[[ $# -ge 2 && $# -le 6 ]] || usage
model=$1 threads=$2 rounds=${3:-5} prompt=${4:-64} ngen=${5:-64} reps=${6:-3}
[[ -f $model ]] || { echo "$0: no such model file: $model" >&2; exit 1; }
for v in "$threads" "$rounds" "$prompt" "$ngen" "$reps"; do
    [[ $v =~ ^[0-9]+$ ]] || { echo "$0: THREADS, ROUNDS, PROMPT, NGEN and REPS must be whole numbers, got '$v'" >&2; exit 2; }
done
threads=$((10#$threads)) rounds=$((10#$rounds)) prompt=$((10#$prompt)) ngen=$((10#$ngen)) reps=$((10#$reps))
(( threads >= 1 && rounds >= 1 && prompt >= 1 && reps >= 1 )) || {
    echo "$0: THREADS, ROUNDS, PROMPT and REPS must be at least 1" >&2; exit 2; }

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
braid=${BRAID:-build/braid}
[[ -x $braid ]] || { echo "$0: $braid is not built (scripts/build.sh, or set BRAID)" >&2; exit 1; }
name=$(basename "$model" .gguf)
out=${OUT:-bench/results/compare-llamacpp-$name-t$threads.json}
mkdir -p "$(dirname "$out")"
"$here/build_llamacpp.sh" >/dev/null  # build (or find) llama-bench before timing anything

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
run_braid() {
    "$braid" bench -m "$model" -t "$threads" -p "$prompt" -n "$ngen" -r "$reps" --no-bandwidth --json \
        >"$dir/braid-$1.json" 2>"$dir/braid-$1.err" || {
        echo "$0: braid bench failed in round $1:" >&2; cat "$dir/braid-$1.err" >&2; exit 1; }
}
run_llama() { "$here/run_llamacpp_native.sh" "$model" "$threads" "$prompt" "$ngen" "$reps" >"$dir/llama-$1.json"; }
for ((r = 1; r <= rounds; r++)); do
    echo "== round $r of $rounds (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    if ((r % 2)); then run_braid "$r"; run_llama "$r"; else run_llama "$r"; run_braid "$r"; fi
done

python3 - "$dir" "$rounds" "$model" "$threads" "$prompt" "$ngen" "$reps" "$out" "$(git -C "$here" rev-parse --short HEAD 2>/dev/null || echo unknown)" <<'PY'
import json, statistics, sys
d, rounds, model, threads, prompt, ngen, reps, out, commit = sys.argv[1:]
rows = []
for r in range(1, int(rounds) + 1):
    b = json.load(open(f"{d}/braid-{r}.json"))
    l = json.load(open(f"{d}/llama-{r}.json"))
    row = {"round": r}
    for key in ("prompt_tokens_per_s", "gen_tokens_per_s"):
        bv, lv = b.get(key), l.get(key)
        row[key] = {"braid": bv, "llama_cpp": lv,
                    "ratio": round(bv / lv, 3) if bv and lv else None}
    rows.append(row)
def med(key, who):
    v = [r[key][who] for r in rows if r[key][who] is not None]
    return round(statistics.median(v), 3) if v else None
fmt = lambda v: "-" if v is None else f"{v:.2f}" if v < 100 else f"{v:.1f}"
print(f"| round | llama.cpp pp{prompt} | braid pp{prompt} | ratio | llama.cpp tg{ngen} | braid tg{ngen} | ratio |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    p, g = r["prompt_tokens_per_s"], r["gen_tokens_per_s"]
    print(f"| {r['round']} | {fmt(p['llama_cpp'])} | {fmt(p['braid'])} | {fmt(p['ratio'])} "
          f"| {fmt(g['llama_cpp'])} | {fmt(g['braid'])} | {fmt(g['ratio'])} |")
k = ("prompt_tokens_per_s", "gen_tokens_per_s")
print(f"| median | {fmt(med(k[0], 'llama_cpp'))} | {fmt(med(k[0], 'braid'))} | **{fmt(med(k[0], 'ratio'))}** "
      f"| {fmt(med(k[1], 'llama_cpp'))} | {fmt(med(k[1], 'braid'))} | **{fmt(med(k[1], 'ratio'))}** |")
json.dump({"model": model, "threads": int(threads), "n_prompt": int(prompt), "n_gen": int(ngen),
           "reps": int(reps), "commit": commit, "rounds": rows,
           "median_ratio": {"prompt": med(k[0], "ratio"), "gen": med(k[1], "ratio")}},
          open(out, "w"), indent=2)
print(f"\n{threads} thread(s), {rounds} alternating rounds, commit {commit}; JSON: {out}")
PY
