#!/usr/bin/env bash
# llama.cpp's own llama-bench, built natively by bench/build_llamacpp.sh, on a GGUF file
# braid benchmarks; prints one JSON object shaped like bench/run_llamacpp.sh's (the keys
# run_quant.sh reads: prompt_tokens_per_s, gen_tokens_per_s, medians of the samples).
#
#   bench/run_llamacpp_native.sh MODEL.gguf THREADS [PROMPT=64] [NGEN=32] [REPS=3]
#
# llama-bench runs with its defaults otherwise (as its users run it: mmap, its persistent
# thread pool, flash attention 'auto', n_batch 2048 / n_ubatch 512, so ppPROMPT is one
# batch); its whole JSON is kept under "llama_bench".
set -euo pipefail

usage() { echo "usage: $0 MODEL.gguf THREADS [PROMPT=64] [NGEN=32] [REPS=3]" >&2; exit 2; }
[[ $# -ge 2 && $# -le 5 ]] || usage
model=$1 threads=$2 prompt=${3:-64} ngen=${4:-32} reps=${5:-3}
[[ -f $model ]] || { echo "$0: no such model file: $model" >&2; exit 1; }
for v in "$threads" "$prompt" "$ngen" "$reps"; do
    [[ $v =~ ^[0-9]+$ ]] || { echo "$0: THREADS, PROMPT, NGEN and REPS must be whole numbers, got '$v'" >&2; exit 2; }
done

bin=$("$(dirname "${BASH_SOURCE[0]}")/build_llamacpp.sh")
load() { cut -d' ' -f1-3 /proc/loadavg; }
before=$(load)
raw=$(mktemp)
trap 'rm -f "$raw"' EXIT
"$bin" -m "$model" -t "$threads" -p "$prompt" -n "$ngen" -r "$reps" -o json >"$raw" 2>/dev/null || {
    echo "$0: llama-bench failed on $model (rerun it by hand: $bin -m $model -t $threads)" >&2
    exit 1
}
after=$(load)

python3 - "$raw" "$model" "$threads" "$prompt" "$ngen" "$reps" "$before" "$after" <<'PY'
import json, os, statistics, sys
raw, model, threads, prompt, ngen, reps, before, after = sys.argv[1:]
runs = json.load(open(raw))
def test(p, n):
    for r in runs:
        if r["n_prompt"] == p and r["n_gen"] == n:
            return r
    return None
pp, tg = test(int(prompt), 0), test(0, int(ngen))
def med(r):
    return None if r is None else round(statistics.median(r["samples_ts"]), 2)
first = runs[0]
out = {
    "engine": "llama.cpp",
    "model": model,
    "model_bytes": os.path.getsize(model),
    "model_type": first["model_type"],
    "threads": int(threads),
    "n_prompt": int(prompt),
    "n_gen": int(ngen),
    "reps": int(reps),
    "prompt_tokens_per_s": med(pp),
    "gen_tokens_per_s": med(tg),
    "samples": {
        "prompt_tokens_per_s": [] if pp is None else pp["samples_ts"],
        "gen_tokens_per_s": [] if tg is None else tg["samples_ts"],
    },
    "llama_cpp": {"build_type": "native (GGML_NATIVE=ON, Release)", "commit": first["build_commit"],
                  "cpu": first["cpu_info"]},
    "host": {"load_avg_before": before, "load_avg_after": after},
    "llama_bench": runs,
}
print(json.dumps(out, indent=2))
PY
