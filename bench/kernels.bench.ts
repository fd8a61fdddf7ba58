// Kernels: each backend operation of src/ops.ts (hash, sort, exact, block, sampled, merge)
// timed alone on realistic shapes (the block and sample sizes of the authors' defaults,
// LSH-sorted rows), per backend and, on the CPU, per WebAssembly SIMD build (relaxed SIMD
// with fused multiply-adds, and plain SIMD; the scalar build's exact rate is in the threads
// suite), as GFLOP/s for the matmul-shaped ops against their counted flops, and rows/s for all.
// A timed call issues the op REPEAT times and then reads one element back, so that a GPU's
// submit-and-readback latency is spread over the ops (on the CPU the readback is a copy).
// Run alone: `tsx bench/kernels.bench.ts [--quick]`.
import { suite } from 'uvu';
import { createCpuBackend } from '../src/cpu/backend.ts';
import { supportedFlavours, type KernelFlavour } from '../src/cpu/wasm.ts';
import { createWebGPUBackend } from '../src/gpu/index.ts';
import type { Backend, Destination, KernelMode } from '../src/ops.ts';
import { Xoshiro128, gaussianProjections } from '../src/random.ts';
import {
  Recorder, QUICK, attentionFlops, describeMachine, formatRate, gflops, measure, type CaseOutcome, type Params,
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
  state.recorder = new Recorder('kernels', state.backends.length * DIMS.length * CASES_PER_GROUP, machine);
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

bench.after((state) => state.recorder.finish());

bench.run();
