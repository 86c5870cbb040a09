#!/usr/bin/env node
// llama.cpp on the GGUF files braid benchmarks, measured like llama-bench (and like
// `braid bench`), through node-llama-cpp's prebuilt CPU binaries.
//
//   node bench.mjs -m MODEL.gguf [-t THREADS] [-p N_PROMPT] [-n N_GEN] [-r REPS]
//                  [--seed S] [--no-warmup] [--verbose]
//
// Prints one JSON object on stdout (diagnostics go to stderr).
//
// What is measured, per repetition, from an empty KV cache:
//   ppN: one llama_decode of N random token ids (logits for the last one only), tokens/s
//   tgN: N llama_decode calls of one token each (BOS, then random ids; logits every time), tokens/s
// Medians over the repetitions are reported, every sample in `samples`. Before the timed
// runs: one untimed ppN and one untimed 1-token decode (as llama-bench's warmup).
//
// Evaluation goes through the native addon context that LlamaContext wraps (context._ctx:
// initBatch / addToBatch / decodeBatch, where decodeBatch = llama_decode + llama_synchronize
// on a libuv worker thread), not through LlamaContextSequence's batching queue. To check that
// the JS side costs nothing that matters, the context is created with performanceTracking,
// and llama.cpp's own timers (llama_perf_context: time inside llama_decode..llama_synchronize)
// are read back after each test and reported next to the wall-clock rates as
// `llama_internal` and `js_overhead_fraction` (1 - internal time / wall time).

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createRequire } from "node:module";

const here = path.dirname(fileURLToPath(import.meta.url));

function die(msg) {
    process.stderr.write(`bench.mjs: ${msg}\n`);
    process.exit(1);
}

function parseArgs(argv) {
    const a = { model: null, threads: 1, nPrompt: 64, nGen: 32, reps: 3, seed: 1, warmup: true, verbose: false };
    const intArg = (name, v) => {
        const n = Number(v);
        if (!Number.isInteger(n) || n < 0) die(`${name} needs a non-negative integer, got ${JSON.stringify(v)}`);
        return n;
    };
    for (let i = 0; i < argv.length; i++) {
        const k = argv[i];
        const next = () => {
            if (i + 1 >= argv.length) die(`${k} needs a value`);
            return argv[++i];
        };
        switch (k) {
            case "-m": case "--model": a.model = next(); break;
            case "-t": case "--threads": a.threads = intArg(k, next()); break;
            case "-p": case "--n-prompt": a.nPrompt = intArg(k, next()); break;
            case "-n": case "--n-gen": a.nGen = intArg(k, next()); break;
            case "-r": case "--reps": a.reps = intArg(k, next()); break;
            case "--seed": a.seed = intArg(k, next()); break;
            case "--no-warmup": a.warmup = false; break;
            case "-v": case "--verbose": a.verbose = true; break;
            case "-h": case "--help":
                process.stdout.write("usage: node bench.mjs -m MODEL.gguf [-t THREADS=1] [-p N_PROMPT=64] [-n N_GEN=32] [-r REPS=3] [--seed S] [--no-warmup] [--verbose]\n");
                process.exit(0);
            default: die(`unknown argument ${JSON.stringify(k)} (see --help)`);
        }
    }
    if (!a.model) die("-m MODEL.gguf is required");
    if (!fs.existsSync(a.model)) die(`no such model file: ${a.model}`);
    if (a.threads < 1) die("-t must be >= 1");
    if (a.reps < 1) die("-r must be >= 1");
    if (a.nPrompt === 0 && a.nGen === 0) die("nothing to do: -p 0 and -n 0");
    return a;
}

const args = parseArgs(process.argv.slice(2));

let nlc;
try {
    nlc = await import("node-llama-cpp");
} catch (err) {
    die(`cannot import node-llama-cpp (run bench/run_llamacpp.sh, or npm ci in ${here}): ${err.message}`);
}
const { getLlama, LlamaLogLevel, getModuleVersion } = nlc;

// mulberry32: reproducible random token ids
function rng(seed) {
    let s = seed >>> 0;
    return () => {
        s = (s + 0x6D2B79F5) >>> 0;
        let t = s;
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
}

const median = (xs) => {
    if (xs.length === 0) return null;
    const s = [...xs].sort((x, y) => x - y);
    const m = s.length >> 1;
    return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
};
const round = (x, d = 3) => (x == null || !Number.isFinite(x) ? null : Number(x.toFixed(d)));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// llama.cpp's log lines come through node-llama-cpp's logger (asynchronously, via a
// thread-safe function); keep them, to read back llama_perf_context_print's timers.
const logLines = [];
const logger = (level, message) => {
    logLines.push(message);
    if (args.verbose) process.stderr.write(`[llama.cpp ${level}] ${message}\n`);
};

const loadAvgBefore = os.loadavg();

let llama;
try {
    llama = await getLlama({
        gpu: false,              // CPU backend only
        build: "never",          // never build from source: the prebuilt binary or an error
        usePrebuiltBinaries: true,
        skipDownload: true,
        progressLogs: false,
        maxThreads: 0,           // no cap: a context's `threads` is used as is
        logLevel: LlamaLogLevel.info,
        logger,
    });
} catch (err) {
    die(`no usable prebuilt llama.cpp CPU binary (node-llama-cpp would have to build from source, which this benchmark refuses; ` +
        `is @node-llama-cpp/linux-x64 installed for this OS/CPU/libc?): ${err?.name ?? ""} ${err?.message ?? err}`);
}
if (llama.buildType !== "prebuilt")
    die(`node-llama-cpp loaded a ${llama.buildType} binary, not the prebuilt one (remove node-llama-cpp/llama/localBuilds)`);
if (llama.gpu !== false)
    die(`expected the CPU backend, got gpu=${llama.gpu}`);

const model = await llama.loadModel({
    modelPath: path.resolve(args.model),
    gpuLayers: 0,
    useMmap: true,
    useMlock: false,
    lazyMode: false,
    checkTensors: false,
    defaultContextFlashAttention: false,
    ignoreMemorySafetyChecks: true,
});
if (!model.useMmap) die("llama.cpp did not mmap the model");

const nVocab = Number(model.fileInfo.architectureMetadata?.vocab_size ??
    model.fileInfo.metadata?.tokenizer?.ggml?.tokens?.length ?? 0);
if (!(nVocab > 0)) die("cannot tell the vocabulary size from the GGUF metadata");

// ctx: the prompt fits the context and the batch; n_ubatch = n_batch (node-llama-cpp sets
// both from batchSize), so the whole prompt is one batch and one ubatch.
const batchSize = Math.max(args.nPrompt, 1);
const contextSize = Math.max(args.nPrompt, 512) + args.nGen;
const context = await model.createContext({
    contextSize,
    batchSize,
    sequences: 1,
    flashAttention: false,
    threads: { ideal: args.threads, min: args.threads },
    performanceTracking: true,
    ignoreMemorySafetyChecks: true,
    failedCreationRemedy: false,
});
const ctx = context._ctx; // the native AddonContext (see node_modules/node-llama-cpp/dist/bindings/AddonTypes.d.ts)
for (const f of ["initBatch", "addToBatch", "decodeBatch", "disposeSequence", "getThreads", "setThreads", "printTimings"])
    if (typeof ctx?.[f] !== "function") die(`this node-llama-cpp has no AddonContext.${f}; bench.mjs was written for the version in package.json`);
ctx.setThreads(args.threads);
if (ctx.getThreads() !== args.threads) die(`asked for ${args.threads} threads, llama.cpp context has ${ctx.getThreads()}`);
if (context.flashAttention !== false) die(`flash attention is ${context.flashAttention}, expected off`);

const SEQ = 0; // the context's only sequence; nothing else uses it (no getSequence() here)
const bos = model.tokens.bos ?? 1;
const rand = rng(args.seed);
const randomToken = () => Math.floor(rand() * nVocab);

async function decode(tokens, firstPos, wantLastLogits) {
    ctx.initBatch(tokens.length);
    const logitIdx = wantLastLogits ? Uint32Array.of(tokens.length - 1) : new Uint32Array(0);
    ctx.addToBatch(SEQ, firstPos, Uint32Array.from(tokens), logitIdx);
    await ctx.decodeBatch();
}

const clear = () => ctx.disposeSequence(SEQ); // llama_memory_seq_rm(seq 0, all positions): empty KV cache

async function runPP(n) {
    clear();
    const tokens = Array.from({ length: n }, randomToken);
    const t0 = process.hrtime.bigint();
    await decode(tokens, 0, true);
    return Number(process.hrtime.bigint() - t0) / 1e9;
}

async function runTG(n) {
    clear();
    const tok = Uint32Array.of(bos);
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < n; i++) {
        await decode(tok, i, true);
        tok[0] = randomToken();
    }
    return Number(process.hrtime.bigint() - t0) / 1e9;
}

// llama_perf_context_print + reset; parse its "prompt eval time" / "eval time" lines.
async function readPerf() {
    const from = logLines.length;
    ctx.printTimings();
    let got = [];
    for (let i = 0; i < 100; i++) { // the log comes back through a thread-safe function: give it a few ticks
        await sleep(10);
        got = logLines.slice(from);
        if (got.some((l) => /(^|\s)eval time/.test(l) && !/prompt eval time/.test(l)) && got.some((l) => /prompt eval time/.test(l))) break;
    }
    const grab = (re) => {
        for (const l of got) {
            const m = l.match(re);
            if (m) return { ms: Number(m[1]), n: Number(m[2]) };
        }
        return null;
    };
    return {
        prompt: grab(/prompt eval time\s*=\s*([\d.]+)\s*ms\s*\/\s*(\d+)\s*tokens/),
        gen: grab(/(?<!prompt )eval time\s*=\s*([\d.]+)\s*ms\s*\/\s*(\d+)\s*runs/),
    };
}

if (args.warmup) {
    if (args.nPrompt > 0) await runPP(args.nPrompt);
    if (args.nGen > 0) await runTG(1);
}
await readPerf(); // reset llama.cpp's timers

const pp = { s: [], rate: [] };
const tg = { s: [], rate: [] };
let ppPerf = null, tgPerf = null;
if (args.nPrompt > 0) {
    for (let r = 0; r < args.reps; r++) {
        const s = await runPP(args.nPrompt);
        pp.s.push(s);
        pp.rate.push(args.nPrompt / s);
    }
    ppPerf = (await readPerf()).prompt;
}
if (args.nGen > 0) {
    for (let r = 0; r < args.reps; r++) {
        const s = await runTG(args.nGen);
        tg.s.push(s);
        tg.rate.push(args.nGen / s);
    }
    tgPerf = (await readPerf()).gen;
}

const loadAvgAfter = os.loadavg();

function internal(perf, wallSeconds, tokens, calls) {
    if (!perf || !(perf.ms > 0)) return null;
    const wall = wallSeconds.reduce((x, y) => x + y, 0);
    return {
        tokens_per_s: round(perf.n / (perf.ms / 1e3), 2),
        llama_ms: round(perf.ms, 2),
        llama_tokens: perf.n,
        wall_ms: round(wall * 1e3, 2),
        expected_tokens: tokens,
        js_overhead_fraction: round(1 - perf.ms / (wall * 1e3), 5),
        decode_calls: calls,
        js_overhead_us_per_call: round((wall * 1e3 - perf.ms) * 1e3 / calls, 1),
    };
}

// Which CPU variant of ggml llama.cpp loaded: ggml_backend_load_best() scores every
// libggml-cpu-*.so, keeps the best one mapped and unloads the others.
function cpuVariant() {
    try {
        const libs = new Set();
        for (const line of fs.readFileSync("/proc/self/maps", "utf8").split("\n")) {
            const m = line.match(/(\S*libggml-cpu[^/\s]*\.so\S*)$/);
            if (m) libs.add(m[1]);
        }
        const list = [...libs];
        return {
            library: list.length === 1 ? path.basename(list[0]) : list.map((p) => path.basename(p)),
            path: list.length === 1 ? list[0] : list,
            variant: list.length === 1 ? path.basename(list[0]).replace(/^libggml-cpu-?/, "").replace(/\.so.*$/, "") || "default" : null,
        };
    } catch {
        return null;
    }
}

async function prebuiltInfo() {
    const info = { package: null, bins_dir: null, build_metadata: null, addon_loaded_from: null };
    try {
        const { getBinsDir } = await import("@node-llama-cpp/linux-x64");
        const { binsDir, packageVersion } = getBinsDir();
        info.package = `@node-llama-cpp/linux-x64@${packageVersion}`;
        info.bins_dir = binsDir;
        const meta = path.join(binsDir, "linux-x64", "_nlcBuildMetadata.json");
        if (fs.existsSync(meta)) info.build_metadata = JSON.parse(fs.readFileSync(meta, "utf8"));
    } catch { /* reported as nulls */ }
    try {
        const m = fs.readFileSync("/proc/self/maps", "utf8").match(/(\/\S*llama-addon\.node)\s*$/m);
        if (m) info.addon_loaded_from = m[1];
    } catch { /* not Linux */ }
    return info;
}

const cpuModel = os.cpus()[0]?.model ?? null;
const out = {
    engine: "llama.cpp",
    model: args.model,
    model_bytes: fs.statSync(args.model).size,
    model_type: model.typeDescription,
    n_vocab: nVocab,
    threads: ctx.getThreads(),
    n_prompt: args.nPrompt,
    n_gen: args.nGen,
    reps: args.reps,
    prompt_tokens_per_s: round(median(pp.rate), 2),
    gen_tokens_per_s: round(median(tg.rate), 2),
    samples: {
        prompt_tokens_per_s: pp.rate.map((x) => round(x, 2)),
        gen_tokens_per_s: tg.rate.map((x) => round(x, 2)),
        prompt_seconds: pp.s.map((x) => round(x, 6)),
        gen_seconds: tg.s.map((x) => round(x, 6)),
    },
    llama_internal: {
        note: "llama.cpp's own timers (llama_perf_context) over the same timed runs; js_overhead_fraction = 1 - llama time / wall time",
        prompt: internal(ppPerf, pp.s, args.nPrompt * args.reps, args.reps),
        gen: internal(tgPerf, tg.s, args.nGen * args.reps, args.nGen * args.reps),
    },
    params: {
        n_ctx: context.contextSize,
        n_batch: context.batchSize,
        n_ubatch: context.batchSize,
        flash_attn: context.flashAttention,
        mmap: model.useMmap,
        gpu_layers: model.gpuLayers,
        warmup: args.warmup,
        seed: args.seed,
        eval_api: "AddonContext initBatch/addToBatch/decodeBatch (llama_decode + llama_synchronize)",
    },
    llama_cpp: {
        repo: llama.llamaCppRelease.repo,
        release: llama.llamaCppRelease.release,
        build_type: llama.buildType,
        node_llama_cpp: await getModuleVersion(),
        prebuilt: await prebuiltInfo(),
        cpu_backend: cpuVariant(),
        system_info: llama.systemInfo,
    },
    host: {
        cpu: cpuModel,
        logical_cpus: os.cpus().length,
        load_avg_before: loadAvgBefore.map((x) => round(x, 2)),
        load_avg_after: loadAvgAfter.map((x) => round(x, 2)),
        node: process.version,
    },
    timestamp: new Date().toISOString(),
};

process.stdout.write(JSON.stringify(out, null, 2) + "\n");

await context.dispose();
await model.dispose();
await llama.dispose();
