// Kernels: each backend operation of src/ops.ts (hash, sort, exact, block, sampled, merge)
// timed alone on realistic shapes (the block and sample sizes of the authors' defaults,
// LSH-sorted rows), per backend and, on the CPU, per WebAssembly SIMD build (relaxed SIMD
// with fused multiply-adds, and plain SIMD; the scalar build's exact rate is in the threads
// suite), as GFLOP/s for the matmul-shaped ops against their counted flops, and rows/s for all.
// A timed call issues the op REPEAT times and then reads one element back, so that a GPU's
// submit-and-readback latency is spread over the ops (on the CPU the readback is a copy).
// Then the accurate mode's parts (src/accurate.ts) inside one real head of the accurate call
// (relaxed SIMD, one thread, n = 16384): each part's GFLOP/s on the flops it counts (2 (d + dv)
// per (query, key) pair the kernel counted, as its own per-row counts report them; the probe:
// 2 d per pair of its rows against every key), beside the exact kernel's GFLOP/s at the same d,
// and the whole call's effective rate (the parts' counted flops over the call's time), each
// the best of several rounds taken in turn with exact attention (see benchAccurate). The
// calls are unchecked (tolerance Infinity): on these diffuse gaussian inputs a checked head
// misses the default tolerance and climbs to exact attention, which is not what is timed here.
// Run alone: `tsx bench/kernels.bench.ts [--quick]`.
import { suite } from 'uvu';
import { createCpuBackend, type CpuBackend } from '../src/cpu/backend.ts';
import { supportedFlavours, type KernelFlavour } from '../src/cpu/wasm.ts';
import { createWebGPUBackend } from '../src/gpu/index.ts';
import { runHyper } from '../src/hyper.ts';
import { hyperAttention } from '../src/index.ts';
import type { Backend, Destination, KernelMode, OpName, PartOutput } from '../src/ops.ts';
import { resolveHyperOptions } from '../src/options.ts';
import { buildPlan, planParams, type AccuratePlan } from '../src/plan.ts';
import { attentionShape } from '../src/tensor.ts';
import { Xoshiro128, gaussianProjections } from '../src/random.ts';
import {
  Recorder, QUICK, attentionFlops, describeMachine, formatRate, gflops, measure, type CaseOutcome, type Params, type Timing,
} from './harness.ts';
import { WORKLOADS } from './workloads.ts';

/** Rows for the linear-time ops, and n for exact attention (quadratic). */
const ROWS = QUICK ? 4096 : 16384;
const EXACT_N = QUICK ? 1024 : 4096;
/** A software adapter is ~20x slower than wasm: it gets the quick sizes. */
const SOFTWARE_ROWS = 4096;
const SOFTWARE_EXACT_N = 1024;
const DIMS = QUICK ? [64] : [64, 128];
const BLOCK = 256;
const SAMPLES = 256;
const PROJS = 7;
const REPEAT = 10;

/** Cases per (backend, d): hash x 2 modes, sort, exact x 2 (causal or not), block, sampled, merge. */
const CASES_PER_GROUP = 8;
/** The accurate call's n, and the exact kernel's n beside it. */
const ACCURATE_N = 16384;
const ACCURATE_EXACT_N = 4096;
/** The parts timed and counted, in the order they run; the rest (hash, sort, tags, uploads) is 'other'. */
const PARTS = ['probe', 'columns', 'window', 'round', 'samples', 'remainder'] as const;
/** Cases per d of the accurate group: exact, each part, other, all ops, the head, the public call, and into a reused out. */
const ACCURATE_CASES = 1 + PARTS.length + 5;

interface BackendEntry {
  name: 'cpu' | 'webgpu';
  /** the WebAssembly build (cpu only) */
  build?: KernelFlavour;
  backend: Backend;
  rows: number;
  exactN: number;
}

interface State {
  recorder: Recorder;
  backends: BackendEntry[];
}

const bench = suite<State>('kernels');

bench.before(async (state) => {
  const machine = await describeMachine();
  state.backends = [];
  for (const build of supportedFlavours().filter((f) => f !== 'scalar')) {
    state.backends.push({ name: 'cpu', build, backend: await createCpuBackend(build), rows: ROWS, exactN: EXACT_N });
  }
  const notes: string[] = [`WebAssembly builds timed: ${state.backends.map((b) => b.build).join(', ')}`];
  if (!machine.adapter) {
    notes.push(`webgpu backend skipped: ${machine.adapterNote}`);
  } else {
    try {
      const software = machine.adapter.isFallbackAdapter;
      state.backends.push({
        name: 'webgpu',
        backend: await createWebGPUBackend(),
        rows: software ? Math.min(ROWS, SOFTWARE_ROWS) : ROWS,
        exactN: software ? Math.min(EXACT_N, SOFTWARE_EXACT_N) : EXACT_N,
      });
      if (software) notes.push(`webgpu runs on a software adapter here: its kernels run at ${SOFTWARE_ROWS} rows and exact n = ${SOFTWARE_EXACT_N}`);
    } catch (error) {
      notes.push(`webgpu backend skipped: ${(error as Error).message}`);
    }
  }
  const accurateGroups = supportedFlavours().includes('relaxed') ? DIMS.length : 0;
  state.recorder = new Recorder('kernels', state.backends.length * DIMS.length * CASES_PER_GROUP + accurateGroups * ACCURATE_CASES, machine);
  for (const note of notes) state.recorder.note(note);
});

/** Times REPEAT issues of `op` plus one readback; returns per-op time and rates. */
async function timeOp(sync: () => Promise<void>, op: () => void, rows: number, flops: number): Promise<CaseOutcome> {
  const whole = await measure(async () => {
    for (let i = 0; i < REPEAT; i++) op();
    await sync();
  });
  const time = { ...whole, medianMs: whole.medianMs / REPEAT, minMs: whole.minMs / REPEAT, maxMs: whole.maxMs / REPEAT, callsPerRun: whole.callsPerRun * REPEAT };
  const rowsPerS = rows / (time.medianMs / 1000);
  const metrics: Record<string, number> = { rowsPerS };
  let summary = `${formatRate(rowsPerS)} rows/s`;
  if (flops > 0) {
    metrics.gflops = gflops(flops, time.medianMs);
    summary += `, ${metrics.gflops.toFixed(1)} GFLOP/s`;
  }
  return { time, metrics, summary };
}

async function benchBackend(state: State, entry: BackendEntry, d: number): Promise<void> {
  const { backend, rows, exactN, name, build } = entry;
  const { recorder } = state;
  const x = WORKLOADS.gaussian.generate({ B: 1, H: 1, n: rows, d, seed: d });
  const rng = new Xoshiro128(d);
  const f32 = (data: Float32Array) => {
    const b = backend.createBuffer('f32', data.length);
    backend.upload(b, data);
    return b;
  };
  const q = f32(x.q.data);
  const k = f32(x.k.data);
  const v = f32(x.v.data);
  const proj = f32(gaussianProjections(rng, d, PROJS));
  const out = backend.createBuffer('f32', rows * d);
  const lse = backend.createBuffer('f32', rows);
  const tmpOut = backend.createBuffer('f32', rows * d);
  const tmpLse = backend.createBuffer('f32', rows);
  const qKeys = backend.createBuffer('i32', rows);
  const kKeys = backend.createBuffer('i32', rows);
  const qPerm = backend.createBuffer('i32', rows);
  const kPerm = backend.createBuffer('i32', rows);
  const one = new Float32Array(1);
  const sync = () => backend.download(lse, 0, 1, one);
  const at = (buf: typeof q) => ({ buf, row: 0 });
  const toOut = (write: Destination['write']): Destination => ({ out: at(out), lse: at(lse), write });
  const scale = 1 / Math.sqrt(d);
  const nBlocks = rows / BLOCK;
  const samples = Int32Array.from({ length: SAMPLES }, () => rng.nextBelow(rows));
  const c = (method: string, params: Params) => ({ method, backend: name, params: { d, ...params, ...(build ? { build } : {}) } });

  try {
    for (const mode of ['reference', 'fixed'] as KernelMode[]) {
      await recorder.run(c('hash', { rows, r: PROJS, mode }), () =>
        timeOp(sync, () => backend.hash({ x: at(q), rows, d, proj, r: PROJS, mode, keys: at(qKeys) }), rows, 2 * rows * d * PROJS));
    }
    backend.hash({ x: at(k), rows, d, proj, r: PROJS, mode: 'fixed', keys: at(kKeys) });
    await recorder.run(c('sort', { rows, keys: 1 << PROJS }), () =>
      timeOp(sync, () => backend.sort({ keys: at(qKeys), count: rows, pads: 0, numKeys: 1 << PROJS, perm: at(qPerm) }), rows, 0));
    backend.sort({ keys: at(kKeys), count: rows, pads: 0, numKeys: 1 << PROJS, perm: at(kPerm) });

    for (const causal of [false, true]) {
      await recorder.run(c('exact', { n: exactN, causal }), () =>
        timeOp(sync, () => backend.exact({
          q: at(q), k: at(k), v: at(v), nq: exactN, nk: exactN, d, dv: d, scale, causal, causalOffset: 0, dst: toOut('write'),
        }), exactN, attentionFlops(exactN, exactN, d, d, causal)));
    }

    const sorted = {
      q: at(q), k: at(k), v: at(v), qPerm: at(qPerm), kPerm: at(kPerm), nqSorted: rows, nqReal: rows, nk: rows, d, dv: d, scale,
      qBlock: BLOCK, kBlock: BLOCK, nBlocks,
    };
    await recorder.run(c('block', { rows, blockSize: BLOCK }), () =>
      timeOp(sync, () => backend.block({ ...sorted, phantomKeys: false, dst: toOut('write') }), rows, 2 * 2 * d * rows * BLOCK));
    await recorder.run(c('sampled', { rows, sampleSize: SAMPLES }), () =>
      timeOp(sync, () => backend.sampled({ ...sorted, samples, lseOffset: Math.log(rows / SAMPLES), dst: toOut('merge-fixed') }), rows, 2 * 2 * d * rows * SAMPLES));

    backend.exact({ q: at(q), k: at(k), v: at(v), nq: rows, nk: BLOCK, d, dv: d, scale, causal: false, causalOffset: 0, dst: { out: at(tmpOut), lse: at(tmpLse), write: 'write' } });
    await recorder.run(c('merge', { rows }), () =>
      timeOp(sync, () => backend.merge({ src: { out: at(tmpOut), lse: at(tmpLse) }, dst: toOut('merge-fixed'), rows, dv: d }), rows, 0));
  } finally {
    backend.releaseAll();
  }
}

for (const d of DIMS) {
  bench(`ops d=${d}`, async (state) => {
    for (const entry of state.backends) await benchBackend(state, entry, d);
    state.recorder.assertNoFailures();
  });
}

/** Per op: time in it, and for the parts the (query, key) pairs their kernels counted. */
interface OpTally {
  ms: number;
  pairs: number;
}

/**
 * The backend with every op timed (its work is done when it returns: one thread, no
 * yields) and, for the parts that keep per-row counts, the pairs counted: the sum of the
 * part's counts after it ran (columns and samples write them), less before (the window and
 * the rounds add to the columns').
 */
function tallied(backend: CpuBackend, tally: Map<string, OpTally>, probePairs: number): Backend {
  const counts = (dst: PartOutput, rows: number) => (backend.view(dst.cnt.buf, dst.cnt.row, rows) as Float32Array).reduce((a, x) => a + x, 0);
  return new Proxy<Backend>(backend, {
    get(target, prop) {
      const value = Reflect.get(target, prop);
      if (typeof value !== 'function') return value;
      const name = String(prop);
      if (!(OP_KEYS as readonly string[]).includes(name)) return value.bind(target);
      return (...args: unknown[]) => {
        const task = args[0] as { dst?: PartOutput; nq?: number };
        const counted = name === 'columns' || name === 'window' || name === 'round' || name === 'samples';
        const before = counted && (name === 'window' || name === 'round') ? counts(task.dst!, task.nq!) : 0;
        const start = performance.now();
        const result = value.apply(target, args);
        const ms = performance.now() - start;
        const entry = tally.get(name) ?? { ms: 0, pairs: 0 };
        entry.ms += ms;
        if (counted) entry.pairs += counts(task.dst!, task.nq!) - before;
        if (name === 'probe') entry.pairs += probePairs;
        tally.set(name, entry);
        return result;
      };
    },
  });
}
const OP_KEYS = ['upload', 'hash', 'sort', 'buckets', 'heavy', ...PARTS] as const satisfies readonly OpName[];

/** Rounds of the accurate group: each times exact, the head and the public call once, in turn. */
const ACCURATE_ROUNDS = QUICK ? 5 : 11;

/** A timing from samples of one call each; rates come from its best (minMs). */
function timingOf(samples: number[]): Timing {
  const sorted = [...samples].sort((a, b) => a - b);
  return {
    medianMs: sorted[sorted.length >> 1], minMs: sorted[0], maxMs: sorted[sorted.length - 1], runs: samples.length, callsPerRun: 1, warmup: true,
  };
}

/**
 * One head (B = H = 1) of the accurate call at its defaults, non-causal, unchecked, through
 * the executor (hyper.ts) on the relaxed-SIMD build on one thread: each part's time and
 * counted flops, beside exact attention on the same build; then the public call (threads: 1,
 * unchecked) against the same counted flops, with a new out each time and into the same array
 * each time (the out option, as a runtime calls it). Exact, the head and the public calls take
 * turns, ACCURATE_ROUNDS times after a warm-up, and every figure is the best of its rounds
 * (each part: its least time over the rounds): on a machine shared with other work, the best
 * times are the ones least disturbed, and taking turns exposes them to the same load.
 */
async function benchAccurate(recorder: Recorder, d: number): Promise<void> {
  const backend = await createCpuBackend('relaxed');
  const n = ACCURATE_N;
  const exactN = ACCURATE_EXACT_N;
  const x = WORKLOADS.gaussian.generate({ B: 1, H: 1, n, d, seed: d });
  const c = (method: string, params: Params) => ({ method, backend: 'cpu', params: { d, ...params, build: 'relaxed', threads: 1 } });
  const flopsPerPair = 2 * (d + d);

  const exact = () => {
    // The head's calls release the arena: exact's buffers are made anew each time.
    const f32 = (data: Float32Array) => {
      const b = backend.createBuffer('f32', exactN * d);
      backend.upload(b, data.subarray(0, exactN * d));
      return b;
    };
    const [q, k, v] = [f32(x.q.data), f32(x.k.data), f32(x.v.data)];
    const at = (buf: typeof q) => ({ buf, row: 0 });
    const dst: Destination = { out: at(backend.createBuffer('f32', exactN * d)), lse: at(backend.createBuffer('f32', exactN)), write: 'write' };
    const start = performance.now();
    backend.exact({ q: at(q), k: at(k), v: at(v), nq: exactN, nk: exactN, d, dv: d, scale: 1 / Math.sqrt(d), causal: false, causalOffset: 0, dst });
    const ms = performance.now() - start;
    backend.releaseAll();
    return ms;
  };
  const shape = attentionShape(x.q, x.k, x.v, false);
  const o = resolveHyperOptions({ tolerance: Infinity, threads: 1 });
  const plan = buildPlan(planParams(shape, o, o)) as AccuratePlan & { checks: number };
  const tally = new Map<string, OpTally>();
  const counting = tallied(backend, tally, plan.probeRows.length * n);
  const headCall = async () => {
    tally.clear();
    const start = performance.now();
    await runHyper(counting, shape, o, x.q, x.k, x.v, 'host', undefined, plan);
    return performance.now() - start;
  };
  const publicCall = async (out?: Float32Array) => {
    const start = performance.now();
    await hyperAttention(x.q, x.k, x.v, { backend: 'cpu', threads: 1, tolerance: Infinity, out });
    return performance.now() - start;
  };
  // A runtime's call: the result written into the same array each time (the out option).
  const outArray = new Float32Array(n * d);

  exact();
  await headCall();
  await publicCall();
  await publicCall(outArray);
  const times = { exact: [] as number[], head: [] as number[], call: [] as number[], into: [] as number[] };
  const best = new Map<string, OpTally>();
  for (let round = 0; round < ACCURATE_ROUNDS; round++) {
    times.exact.push(exact());
    times.head.push(await headCall());
    for (const [name, t] of tally) {
      const b = best.get(name);
      if (!b || t.ms < b.ms) best.set(name, { ...t });
    }
    times.call.push(await publicCall());
    times.into.push(await publicCall(outArray));
  }

  const exactTime = timingOf(times.exact);
  const exactRate = gflops(attentionFlops(exactN, exactN, d, d, false), exactTime.minMs);
  await recorder.run(c('exact', { n: exactN, causal: false, beside: 'accurate' }), async () => ({
    time: exactTime, metrics: { gflops: exactRate, rowsPerS: exactN / (exactTime.minMs / 1000) }, summary: `${exactRate.toFixed(1)} GFLOP/s (best of ${ACCURATE_ROUNDS})`,
  }));
  const per = (name: string) => best.get(name) ?? { ms: 0, pairs: 0 };
  const countedFlops = ['columns', 'window', 'round', 'samples'].reduce((sum, name) => sum + per(name).pairs * flopsPerPair, 0);
  const rows: string[][] = [];
  const pct = (rate: number) => `${(100 * rate / exactRate).toFixed(0)}%`;
  for (const part of PARTS) {
    const { ms, pairs } = per(part);
    const flops = part === 'probe' ? 2 * d * pairs : part === 'remainder' ? 0 : pairs * flopsPerPair;
    await recorder.run(c('accurate part', { n, part }), async () => {
      const metrics: Record<string, number> = { rowsPerS: n / (ms / 1000), keysPerRow: pairs / n };
      let summary = `${(pairs / n).toFixed(1)} keys per row`;
      if (flops > 0) {
        metrics.gflops = gflops(flops, ms);
        metrics.ofExact = metrics.gflops / exactRate;
        summary += `, ${metrics.gflops.toFixed(1)} GFLOP/s, ${pct(metrics.gflops)} of exact`;
      }
      rows.push([part, ms.toFixed(2), (pairs / n).toFixed(1), flops > 0 ? metrics.gflops.toFixed(1) : '—', flops > 0 ? pct(metrics.gflops) : '—']);
      return { time: timingOf([ms]), metrics, summary };
    });
  }
  const others = [...best.keys()].filter((name) => !(PARTS as readonly string[]).includes(name));
  const otherMs = others.reduce((sum, name) => sum + per(name).ms, 0);
  await recorder.run(c('accurate part', { n, part: 'other' }), async () => {
    rows.push([`other (${others.join(', ')})`, otherMs.toFixed(2), '—', '—', '—']);
    return { time: timingOf([otherMs]), metrics: { rowsPerS: n / (otherMs / 1000) }, summary: others.join(', ') };
  });
  const whole = (name: string, samples: number[]) => {
    const time = timingOf(samples);
    const rate = gflops(countedFlops, time.minMs);
    rows.push([name, time.minMs.toFixed(2), (countedFlops / flopsPerPair / n).toFixed(1), rate.toFixed(1), pct(rate)]);
    return {
      time,
      metrics: { gflops: rate, ofExact: rate / exactRate, rowsPerS: n / (time.minMs / 1000), keysPerRow: countedFlops / flopsPerPair / n },
      summary: `${rate.toFixed(1)} GFLOP/s effective, ${pct(rate)} of exact (best of ${samples.length})`,
    };
  };
  // The ops alone, against the head's wall time: the rest is the executor's (inputs in,
  // results out, the backend's memory renewed after each call).
  const opsMs = [...best.values()].reduce((sum, t) => sum + t.ms, 0);
  await recorder.run(c('accurate ops', { n }), async () => whole('all ops of the head (sum of the above)', [opsMs]));
  await recorder.run(c('accurate head', { n }), async () => whole('head through the executor (wall)', times.head));
  await recorder.run(c('accurate call', { n }), async () => whole('public call (unchecked)', times.call));
  await recorder.run(c('accurate call', { n, out: 'reused' }), async () => whole('public call into a reused out', times.into));
  console.log(`\n  accurate parts, d = ${d}, n = ${n}, relaxed SIMD, 1 thread, best of ${ACCURATE_ROUNDS} (exact at n = ${exactN}: ${exactRate.toFixed(1)} GFLOP/s)`);
  console.log(`  ${['part', 'ms', 'keys/row', 'GFLOP/s', 'of exact'].join(' | ')}`);
  for (const r of rows) console.log(`  ${r.join(' | ')}`);
}

if (supportedFlavours().includes('relaxed')) {
  for (const d of DIMS) {
    bench(`accurate parts d=${d}`, async (state) => {
      await benchAccurate(state.recorder, d);
      state.recorder.assertNoFailures();
    });
  }
}

bench.after((state) => state.recorder.finish());

bench.run();
