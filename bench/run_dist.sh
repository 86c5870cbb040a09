#!/usr/bin/env bash
# Distributed inference on the synthetic 1.1B Llama (Q4_0): one device against two
# `braid worker` processes, each pinned to its own core, under three settings:
#   loopback  127.0.0.1, no emulation
#   netem     each worker in its own network namespace behind a veth pair shaped to
#             100 Mbit/s per direction (tc tbf) with 5 ms round trips (see below)
#   hetero    loopback, the second worker `--slowdown 3` (a device 3x slower)
# For each: braid's plan (latency objective, then throughput objective), an even split
# and a memory-proportional split; single-stream pp/tg, pipelined tg with 2-4 sequences,
# and the planner's predicted ms/token next to the measured one.
# Writes bench/results/dist-*.json (one `braid bench --json` per run, the `braid plan
# --json` of each setting, dist-environment.json) and prints a Markdown table (the one in
# docs/benchmarks.md).
#
# Needs root for the netem setting (network namespaces, tc); without it that setting is
# skipped with a message. This kernel has no sch_netem (CONFIG_NET_SCH_NETEM is not
# set), so the delay comes from a small user-space TCP relay in front of each worker
# (every connection to a worker crosses exactly one relay, which holds each chunk for
# RTT/2 in each direction) and the bandwidth from tbf on the veth pairs (GSO capped at
# the MTU, so tbf shapes real packets). The script measures the emulated link through
# the relay before the runs and records it.
#
# Settings (environment):
#   BRAID=build/braid  BENCH_DIR=/tmp/braid-bench  MODEL=$BENCH_DIR/synth-1b-Q4_0.gguf
#   PROMPT=64  NGEN=32  REPS=2      the bench's -p, -n, -r
#   SEQS="2 3 4"                    pipelined sequences (even split and throughput plan on
#                                   loopback; the other rows use the first, netem also the last)
#   SETTINGS="loopback netem hetero"
#   RTT_MS=5  RATE=100mbit  SLOWDOWN=3  CORES="0 1" (the workers' cores)
#   RESULTS=bench/results
set -euo pipefail
cd "$(dirname "$0")/.."

BRAID=${BRAID:-build/braid}
BENCH_DIR=${BENCH_DIR:-/tmp/braid-bench}
MODEL=${MODEL:-$BENCH_DIR/synth-1b-Q4_0.gguf}
PROMPT=${PROMPT:-64}
NGEN=${NGEN:-32}
REPS=${REPS:-2}
SEQS=${SEQS:-"2 3 4"}
SETTINGS=${SETTINGS:-"loopback netem hetero"}
RTT_MS=${RTT_MS:-5}
RATE=${RATE:-100mbit}
SLOWDOWN=${SLOWDOWN:-3}
CORES=${CORES:-"0 1"}
RESULTS=${RESULTS:-bench/results}

read -r CORE1 CORE2 _ <<<"$CORES $CORES"
SEQ_FIRST=${SEQS%% *}
SEQ_LAST=${SEQS##* }

if [ ! -x "$BRAID" ]; then
  echo "run_dist.sh: $BRAID not found; build braid first (scripts/build.sh) or set BRAID" >&2
  exit 1
fi
BRAID=$(realpath "$BRAID")
mkdir -p "$BENCH_DIR" "$RESULTS"
if [ ! -f "$MODEL" ]; then
  echo "== synth 1b Q4_0 -> $MODEL" >&2
  "$BRAID" synth --preset 1b --type Q4_0 --seed 1 -o "$MODEL" >&2
fi

WORK=$(mktemp -d /tmp/braid-dist.XXXXXX)  # scratch: secret, relay, ports, logs
SECRET=$WORK/secret
head -c 32 /dev/urandom >"$SECRET"
PIDS=()
NETNS_UP=0

load() { cut -d' ' -f1-3 /proc/loadavg; }
log() { echo "== $* (load $(load))" >&2; }

# ---- Network emulation: two namespaces, veth pairs shaped by tbf, a delaying relay ----

cat >"$WORK/relay.py" <<'PY'
# relay.py RTT_MS LISTEN_HOST:PORT TARGET_HOST:PORT: forwards TCP connections, holding
# every chunk RTT_MS / 2 before passing it on, in each direction. Threads and
# time.sleep (clock_nanosleep, ~0.1 ms late) rather than asyncio, whose timers round to
# whole milliseconds. relay.py echo HOST:PORT: an echo server; relay.py probe HOST:PORT:
# the median round trip of 1 byte (ms) and the throughput of 4 MiB echoed (Mbit/s).
import queue, socket, sys, threading, time

def hostport(s):
    h, p = s.rsplit(":", 1)
    return h, int(p)

def listener(addr):
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(addr)
    ls.listen(64)
    print("ready", flush=True)
    return ls

def nodelay(s):
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s

def pump(src, dst, delay):
    q = queue.Queue()
    def send():
        try:
            while (item := q.get())[1]:
                wait = item[0] + delay - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                dst.sendall(item[1])
        except OSError:
            pass
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        while data := src.recv(1 << 16):
            q.put((time.monotonic(), data))
    except OSError:
        pass
    q.put((0, b""))
    sender.join()

def relay(delay, listen, target):
    ls = listener(listen)
    while True:
        a, _ = ls.accept()
        try:
            b = nodelay(socket.create_connection(target))
        except OSError:
            a.close()
            continue
        nodelay(a)
        threading.Thread(target=pump, args=(a, b, delay), daemon=True).start()
        threading.Thread(target=pump, args=(b, a, delay), daemon=True).start()

def echo(listen):
    ls = listener(listen)
    def serve(c):
        while data := c.recv(1 << 16):
            c.sendall(data)
        c.close()
    while True:
        c, _ = ls.accept()
        threading.Thread(target=serve, args=(nodelay(c),), daemon=True).start()

def probe(addr):
    s = nodelay(socket.create_connection(addr))
    rtts = []
    for _ in range(20):
        t = time.perf_counter()
        s.sendall(b"x")
        s.recv(1)
        rtts.append(time.perf_counter() - t)
    rtts.sort()
    n, got = 4 << 20, 0
    def drain():
        nonlocal got
        while got < n:
            got += len(s.recv(1 << 16))
    t = time.perf_counter()
    th = threading.Thread(target=drain)
    th.start()
    block = b"y" * (1 << 16)
    for _ in range(n // len(block)):
        s.sendall(block)
    th.join()
    print("%.2f %.1f" % (1e3 * rtts[len(rtts) // 2], 8 * n / (time.perf_counter() - t) / 1e6))

if sys.argv[1] == "echo":
    echo(hostport(sys.argv[2]))
elif sys.argv[1] == "probe":
    probe(hostport(sys.argv[2]))
else:
    relay(float(sys.argv[1]) / 2e3, hostport(sys.argv[2]), hostport(sys.argv[3]))
PY

net_down() {
  [ "$NETNS_UP" = 1 ] || return 0
  for i in 1 2; do
    ip link del "bdw$i-r" 2>/dev/null || true
    ip netns del "braid-dist-w$i" 2>/dev/null || true
  done
  NETNS_UP=0
}

# Worker i lives in namespace braid-dist-wi at 10.77.i.2; the root side of its veth is
# 10.77.i.1, where its relay listens. Both ends shape their egress to $RATE.
net_up() {
  NETNS_UP=1
  for i in 1 2; do
    local ns=braid-dist-w$i
    ip netns add "$ns"
    ip link add "bdw$i-r" type veth peer name "bdw$i-n"
    ip link set "bdw$i-n" netns "$ns"
    ip addr add "10.77.$i.1/24" dev "bdw$i-r"
    ip link set dev "bdw$i-r" gso_max_size 1500
    ip link set "bdw$i-r" up
    ip -n "$ns" addr add "10.77.$i.2/24" dev "bdw$i-n"
    ip -n "$ns" link set dev "bdw$i-n" gso_max_size 1500
    ip -n "$ns" link set "bdw$i-n" up
    ip -n "$ns" link set lo up
    ip -n "$ns" route add default via "10.77.$i.1"
    tc qdisc add dev "bdw$i-r" root tbf rate "$RATE" burst 32kb latency 100ms
    ip netns exec "$ns" tc qdisc add dev "bdw$i-n" root tbf rate "$RATE" burst 32kb latency 100ms
  done
}

# Starts `python3 relay.py ARGS` in the background (optionally in namespace $1 when it is
# not "-") and waits for its "ready" line.
start_py() {
  local ns=$1 out=$WORK/py$RANDOM
  shift
  if [ "$ns" = - ]; then
    python3 "$WORK/relay.py" "$@" >"$out" &
  else
    ip netns exec "$ns" python3 "$WORK/relay.py" "$@" >"$out" &
  fi
  PIDS+=($!)
  for _ in $(seq 100); do
    grep -q ready "$out" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "run_dist.sh: relay.py $* did not start" >&2
  exit 1
}

# The link as the head sees it: RTT and throughput through a relay to an echo server.
LINK=""
probe_link() {
  start_py braid-dist-w1 echo 10.77.1.2:9
  start_py - "$RTT_MS" 10.77.1.1:9 10.77.1.2:9
  LINK=$(python3 "$WORK/relay.py" probe 10.77.1.1:9)
  stop_all
  echo "   emulated link: RTT ${LINK% *} ms, ${LINK#* } Mbit/s one way (echoed: both directions share it)" >&2
}

# ---- Workers ----

WORKERS=""
stop_all() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
}
cleanup() {
  stop_all
  net_down
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_worker I CORE NS LISTEN_HOST [flags]: a 1-thread worker pinned to CORE; sets PORT.
PORT=0
start_worker() {
  local i=$1 core=$2 ns=$3 host=$4
  shift 4
  local pf=$WORK/port$i
  rm -f "$pf"
  local cmd=(taskset -c "$core" "$BRAID" worker --listen "$host:0" --secret-file "$SECRET" --threads 1
    --ready-fd 3 "$@")
  if [ "$ns" = - ]; then
    "${cmd[@]}" 3>"$pf" 2>>"$WORK/worker$i.log" &
  else
    ip netns exec "$ns" "${cmd[@]}" 3>"$pf" 2>>"$WORK/worker$i.log" &
  fi
  PIDS+=($!)
  for _ in $(seq 300); do
    # The worker writes "PORT\n" in one write once it listens.
    if [ -s "$pf" ]; then
      PORT=$(tr -d '\n' <"$pf")
      return 0
    fi
    sleep 0.1
  done
  echo "run_dist.sh: worker $i did not start; its log:" >&2
  cat "$WORK/worker$i.log" >&2
  exit 1
}

start_setting() {
  local setting=$1
  case $setting in
    loopback | hetero)
      local slow=()
      [ "$setting" = hetero ] && slow=(--slowdown "$SLOWDOWN")
      start_worker 1 "$CORE1" - 127.0.0.1
      local p1=$PORT
      start_worker 2 "$CORE2" - 127.0.0.1 "${slow[@]}"
      WORKERS=127.0.0.1:$p1,127.0.0.1:$PORT
      ;;
    netem)
      start_worker 1 "$CORE1" braid-dist-w1 10.77.1.2
      local p1=$PORT
      start_worker 2 "$CORE2" braid-dist-w2 10.77.2.2
      local p2=$PORT
      start_py - "$RTT_MS" "10.77.1.1:$p1" "10.77.1.2:$p1"
      start_py - "$RTT_MS" "10.77.2.1:$p2" "10.77.2.2:$p2"
      WORKERS=10.77.1.1:$p1,10.77.2.1:$p2
      ;;
  esac
}

# bench_run NAME SEQUENCES [flags]: one `braid bench` over the workers. The head (this
# machine, 1 thread, not pinned: it embeds, receives the logits and picks the next token,
# about 1% of a token's time) runs wherever the scheduler puts it.
RUNS=()
bench_run() {
  local name=$1 seqs=$2
  shift 2
  local out=$RESULTS/dist-$name.json
  log "bench $name, $seqs sequences"
  "$BRAID" bench -m "$MODEL" -t 1 -p "$PROMPT" -n "$NGEN" -r "$REPS" --sequences "$seqs" --no-bandwidth \
    --workers "$WORKERS" --secret-file "$SECRET" --json -o "$out" "$@" >/dev/null 2>>"$WORK/head.log" || {
    echo "run_dist.sh: bench $name failed; the head's log:" >&2
    tail -20 "$WORK/head.log" >&2
    exit 1
  }
  RUNS+=("$out")
}

# ---- The runs ----

load_before=$(load)
start=$(date +%s)

# a. One local process, 1 thread, pinned like a worker. --sequences here: the sequences
# take turns on the one thread pool (the baseline pipelining is compared with).
log "bench local, 1 thread"
taskset -c "$CORE1" "$BRAID" bench -m "$MODEL" -t 1 -p "$PROMPT" -n "$NGEN" -r "$REPS" --sequences "$SEQ_FIRST" \
  --no-bandwidth --json -o "$RESULTS/dist-local-t1.json" >/dev/null 2>>"$WORK/head.log"
RUNS+=("$RESULTS/dist-local-t1.json")

netem_note=""
for setting in $SETTINGS; do
  if [ "$setting" = netem ]; then
    if [ "$(id -u)" != 0 ] || ! ip netns add braid-dist-probe 2>/dev/null; then
      netem_note="netem skipped: network namespaces need root"
      echo "run_dist.sh: $netem_note" >&2
      continue
    fi
    ip netns del braid-dist-probe
    net_up
    probe_link
  fi
  start_setting "$setting"
  log "plan $setting"
  "$BRAID" plan -m "$MODEL" --workers "$WORKERS" --secret-file "$SECRET" --json \
    >"$RESULTS/dist-$setting-braidplan.json" 2>>"$WORK/head.log"
  case $setting in
    loopback)
      bench_run loopback-plan-s"$SEQ_FIRST" "$SEQ_FIRST"
      for s in $SEQS; do bench_run loopback-plantput-s"$s" "$s" --objective throughput; done
      for s in $SEQS; do bench_run loopback-even-s"$s" "$s" --split even; done
      bench_run loopback-memory-s"$SEQ_FIRST" "$SEQ_FIRST" --split memory
      ;;
    netem)
      bench_run netem-plan-s"$SEQ_FIRST" "$SEQ_FIRST"
      for s in $(echo "$SEQ_FIRST $SEQ_LAST" | tr ' ' '\n' | sort -un); do
        bench_run netem-plantput-s"$s" "$s" --objective throughput
        bench_run netem-even-s"$s" "$s" --split even
      done
      bench_run netem-memory-s"$SEQ_FIRST" "$SEQ_FIRST" --split memory
      ;;
    hetero)
      bench_run hetero-plan-s"$SEQ_FIRST" "$SEQ_FIRST"
      bench_run hetero-plantput-s"$SEQ_FIRST" "$SEQ_FIRST" --objective throughput
      bench_run hetero-even-s"$SEQ_FIRST" "$SEQ_FIRST" --split even
      bench_run hetero-memory-s"$SEQ_FIRST" "$SEQ_FIRST" --split memory
      ;;
    *)
      echo "run_dist.sh: unknown setting '$setting' (loopback, netem, hetero)" >&2
      exit 1
      ;;
  esac
  stop_all
  [ "$setting" = netem ] && net_down
done

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
cat >"$RESULTS/dist-environment.json" <<EOF
{
  "date": "$(date -u +%Y-%m-%dT%H:%M:%SZ)",
  "cpu": "$cpu",
  "cores": $(nproc),
  "load_before": "$load_before",
  "load_after": "$(load)",
  "seconds": $(($(date +%s) - start)),
  "commit": "$commit",
  "emulated_link": "${LINK:+RTT ${LINK% *} ms, ${LINK#* } Mbit/s}${netem_note}",
  "command": "PROMPT=$PROMPT NGEN=$NGEN REPS=$REPS SEQS=\"$SEQS\" SETTINGS=\"$SETTINGS\" RTT_MS=$RTT_MS RATE=$RATE SLOWDOWN=$SLOWDOWN bench/run_dist.sh"
}
EOF

# The table: one row per run. ms/token measured = 1000 / tg tokens/s (single stream);
# "vs local" is tg against the 1-thread local process; "x N" the pipelined speed-up.
python3 - "$RESULTS/dist-environment.json" "${RUNS[@]}" <<'PY'
import json, os, sys
env = json.load(open(sys.argv[1]))
runs = [(os.path.basename(p)[5:-5], json.load(open(p))) for p in sys.argv[2:]]
local = runs[0][1]
local_tg = local["gen_tokens_per_s"]
def f(v, fmt="%.1f"):
    return "-" if v is None else fmt % v
print("| run | ring | pp%d tok/s | tg%d tok/s | ms/token | predicted | pred. error | vs local | "
      "sequences | pipelined tok/s | x single |" % (local["n_prompt"], local["n_gen"]))
print("|---|---|---|---|---|---|---|---|---|---|---|")
for name, r in runs:
    c = r.get("cluster") or {}
    tg = r["gen_tokens_per_s"]
    ms = 1000.0 / tg if tg else None
    pred = c.get("predicted_ms_per_token")
    pipe = r.get("pipelined_gen_tokens_per_s")
    ring = c.get("ring", "one process").replace("127.0.0.1:", ":").replace(" (logits)", "")
    print("| %s | %s | %s | %s | %s | %s | %s | %s | %d | %s | %s |" % (
        name, ring, f(r["prompt_tokens_per_s"]), f(tg, "%.2f"), f(ms), f(pred),
        f(100 * (pred - ms) / ms if pred and ms else None, "%+.0f%%"),
        f(100 * tg / local_tg if tg and local_tg else None, "%.0f%%"),
        r.get("sequences", 1), f(pipe, "%.2f"), f(pipe / tg if pipe and tg else None, "%.2f")))
print()
print("%s, %d cores; load average %s before, %s after; %d s; commit %s; %s" % (
    env["cpu"], env["cores"], env["load_before"], env["load_after"], env["seconds"], env["commit"],
    env["emulated_link"] or "no network emulation"))
PY
