// Calibration: short micro-benchmarks of every op on one backend, fitted to a fixed cost
// per call and a throughput (profile.ts). Each op runs at growing sizes until one takes
// long enough to time well; the last two sizes give the fit. On WebGPU every timing waits
// for the GPU (sync) and has the bare round trip of a sync subtracted, so an op's fixed
// cost is its dispatch cost, not a readback's latency.
import { COST_CLASSES, type Backend, type BackendBuffer, type CostClass } from '../ops.ts';
import { Xoshiro128 } from '../random.ts';
import { inSlices, SLICE_ELEMENTS, turn } from '../slices.ts';
import type { DeviceCosts, OpCost } from './profile.ts';

/** Head dims and LSH projections the calibration runs with (the common case). */
const D = 64;
const R = 7;
const KEYS = 1 << R;
const BLOCK = 256;
const SAMPLES = 256;

/** A measurement long enough to time is this many ms; below it the size grows. */
const TARGET_MS = 4;
/**
 * The fit's larger point is at least the third size of each op: a slow (software) adapter
 * reaches TARGET_MS at the tiniest sizes, where a dispatch fills few of its threads, and a
 * fit from there underrates its throughput on real calls by up to 3x.
 */
const MIN_POINTS = 3;
/** Warm-up runs longer than this get one timed run instead of three. */
const SLOW_MS = 40;

interface Point {
  units: number;
  ms: number;
}

/** One op at one size: its units of work, and a run of it on buffers made in advance. */
interface Trial {
  units: number;
  run: () => void | Promise<void>;
}

/** Makes a trial; its inputs (up to 4 M values) are drawn in time slices of the calling thread (slices.ts). */
type Maker = (backend: Backend, size: number) => Promise<Trial>;

/** Uniform values in [-1, 1), seeded. */
async function uniform(length: number, seed: number): Promise<Float32Array> {
  const rng = new Xoshiro128(seed);
  const out = new Float32Array(length);
  await inSlices(length, SLICE_ELEMENTS, (from, to) => {
    for (let i = from; i < to; i++) out[i] = rng.nextUnit() * 2 - 1;
  });
  return out;
}

/** Uniform integers in [0, high), seeded. */
async function below(length: number, high: number, seed: number): Promise<Int32Array> {
  const rng = new Xoshiro128(seed);
  const out = new Int32Array(length);
  await inSlices(length, SLICE_ELEMENTS, (from, to) => {
    for (let i = from; i < to; i++) out[i] = rng.nextBelow(high);
  });
  return out;
}

async function filled(backend: Backend, length: number, seed: number): Promise<BackendBuffer> {
  const buf = backend.createBuffer('f32', length);
  backend.upload(buf, await uniform(length, seed));
  return buf;
}

function identity(backend: Backend, length: number): BackendBuffer {
  const buf = backend.createBuffer('i32', length);
  backend.upload(buf, Int32Array.from({ length }, (_, i) => i));
  return buf;
}

const at = (buf: BackendBuffer) => ({ buf, row: 0 });

/** Sorted rows of `rows` queries in blocks of BLOCK keys (identity orders). */
async function sortedRows(backend: Backend, rows: number) {
  const nBlocks = Math.ceil(rows / BLOCK);
  const nk = nBlocks * BLOCK;
  return {
    q: at(await filled(backend, rows * D, 1)), k: at(await filled(backend, nk * D, 2)), v: at(await filled(backend, nk * D, 3)),
    qPerm: at(identity(backend, rows)), kPerm: at(identity(backend, nk)),
    nqSorted: rows, nqReal: rows, nk, d: D, dv: D, scale: 0.125,
    qBlock: Math.min(rows, BLOCK), kBlock: BLOCK, nBlocks,
    dst: { out: at(backend.createBuffer('f32', rows * D)), lse: at(backend.createBuffer('f32', rows)), write: 'write' as const },
  };
}

/** Sizes each op is tried at, in order, and how a trial of it is made. */
const OPS: Record<CostClass, { sizes: number[]; make: Maker }> = {
  upload: {
    sizes: [1 << 14, 1 << 16, 1 << 18, 1 << 20, 1 << 22],
    make: async (backend, n) => {
      const buf = backend.createBuffer('f32', n);
      const data = await uniform(n, 4);
      return { units: n * 4, run: () => backend.upload(buf, data) };
    },
  },
  download: {
    sizes: [1 << 14, 1 << 16, 1 << 18, 1 << 20, 1 << 22],
    make: async (backend, n) => {
      const buf = await filled(backend, n, 5);
      const into = new Float32Array(n);
      return { units: n * 4, run: () => backend.download(buf, 0, n, into) };
    },
  },
  hash: {
    sizes: [1 << 10, 1 << 12, 1 << 14, 1 << 16],
    make: async (backend, rows) => {
      const x = await filled(backend, rows * D, 6);
      const proj = await filled(backend, D * R, 7);
      const keys = backend.createBuffer('i32', rows);
      return { units: rows * D * R, run: () => backend.hash({ x: at(x), rows, d: D, proj, r: R, mode: 'reference', keys: at(keys) }) };
    },
  },
  sort: {
    sizes: [1 << 10, 1 << 12, 1 << 14, 1 << 16, 1 << 18],
    make: async (backend, rows) => {
      const keys = backend.createBuffer('i32', rows);
      backend.upload(keys, await below(rows, KEYS, 8));
      const perm = backend.createBuffer('i32', rows);
      return { units: rows, run: () => backend.sort({ keys: at(keys), count: rows, pads: 0, numKeys: KEYS, perm: at(perm) }) };
    },
  },
  exact: {
    sizes: [64, 128, 256, 512, 1024, 2048],
    make: async (backend, n) => {
      const t = await sortedRows(backend, n);
      return {
        units: 2 * n * n * 2 * D,
        run: () => backend.exact({ q: t.q, k: t.k, v: t.v, nq: n, nk: n, d: D, dv: D, scale: 0.125, causal: false, causalOffset: 0, dst: t.dst }),
      };
    },
  },
  block: {
    sizes: [64, 256, 1024, 4096, 16384],
    make: async (backend, rows) => {
      const t = await sortedRows(backend, rows);
      return { units: 2 * rows * BLOCK * 2 * D, run: () => backend.block({ ...t, phantomKeys: false }) };
    },
  },
  sampled: {
    sizes: [64, 256, 1024, 4096, 16384],
    make: async (backend, rows) => {
      const t = await sortedRows(backend, rows);
      const samples = await below(SAMPLES, t.nk, 9);
      return { units: 2 * rows * SAMPLES * 2 * D, run: () => backend.sampled({ ...t, samples, lseOffset: Math.log(t.nk / SAMPLES) }) };
    },
  },
  merge: {
    sizes: [1 << 12, 1 << 14, 1 << 16, 1 << 18],
    make: async (backend, rows) => {
      const src = { out: at(await filled(backend, rows * D, 10)), lse: at(await filled(backend, rows, 11)) };
      const dst = { out: at(await filled(backend, rows * D, 12)), lse: at(await filled(backend, rows, 13)), write: 'merge-fixed' as const };
      return { units: rows * D, run: () => backend.merge({ src, dst, rows, dv: D }) };
    },
  },
};

/** One run's time; the event loop gets its turn first (slices.ts), so that the run starts a fresh slice. */
async function timed(backend: Backend, run: () => void | Promise<void>): Promise<number> {
  await turn();
  const start = performance.now();
  await run();
  await backend.sync?.();
  return performance.now() - start;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

/** Fixed cost and throughput through two points (the smaller first). */
export function fit(a: Point, b: Point): OpCost {
  const slope = (b.ms - a.ms) / (b.units - a.units);
  if (!(slope > 0)) return { fixedMs: 0, unitsPerMs: b.units / Math.max(b.ms, 1e-6) };
  return { fixedMs: Math.max(0, a.ms - a.units * slope), unitsPerMs: 1 / slope };
}

/** Calibrates every op of a backend (one call at a time: it uses the backend's buffers). */
export async function calibrateBackend(backend: Backend): Promise<DeviceCosts> {
  // The bare round trip of a sync, taken off every GPU timing.
  const rounds: number[] = [];
  if (backend.sync) for (let i = 0; i < 5; i++) rounds.push(await timed(backend, () => {}));
  const roundTrip = backend.sync ? median(rounds) : 0;
  const costs = {} as DeviceCosts;
  try {
    for (const op of COST_CLASSES) {
      const { sizes, make } = OPS[op];
      const points: Point[] = [];
      for (const size of sizes) {
        const trial = await make(backend, size);
        const warm = await timed(backend, trial.run);
        const runs: number[] = [];
        for (let i = 0; i < (warm > SLOW_MS ? 1 : 3); i++) runs.push(await timed(backend, trial.run));
        backend.releaseAll();
        const ms = Math.max(1e-4, median(runs) - roundTrip);
        points.push({ units: trial.units, ms });
        if (points.length >= MIN_POINTS && ms >= TARGET_MS) break;
      }
      costs[op] = fit(points[points.length - 2], points[points.length - 1]);
    }
  } finally {
    backend.releaseAll();
  }
  return costs;
}
