// The accurate mode on WebGPU and on the hybrid backend against the WebAssembly backend:
// each of its ops (probe, columns, window, round, buckets, samples, remainder) on fresh
// random inputs, with subgroup tiles and, where the device has subgroups, again with
// workgroup-memory tiles (and with storage 'f16' where it has shader-f16); then whole
// hyperAttention calls in accurate mode. Outputs are poisoned (NaN, or -7 as i32) before
// each op and guarded by rows that must stay untouched. Tolerances: 1e-4 max abs error in
// out, lse and the stats (float32 on both sides, different summation orders); bucket
// starts and tags identical.
import { suite } from '../suite.ts';
import * as assert from 'uvu/assert';
import { createCpuBackend } from '../../src/cpu/backend.ts';
import { WebGPUBackend, createWebGPUBackend } from '../../src/gpu/index.ts';
import { runHyper } from '../../src/hyper.ts';
import { runVerified } from '../../src/verified.ts';
import { HybridBackend } from '../../src/hybrid.ts';
import type { AttentionInputs, AccurateMask, Backend, PartOutput } from '../../src/ops.ts';
import { resolveHyperOptions } from '../../src/options.ts';
import { Xoshiro128 } from '../../src/random.ts';
import { attentionShape } from '../../src/tensor.ts';
import {
  LSE_TOL, OUT_TOL, expectSame, f16Rounded, gaussian, guarded, random, readGuarded, type Guarded,
} from './harness.ts';

const cpu = await createCpuBackend();
const gpu = await createWebGPUBackend();
const workgroupTiles = gpu.subgroups ? new WebGPUBackend(gpu.device, { subgroups: false }) : undefined;
const halfStorage = gpu.device.features.has('shader-f16') ? new WebGPUBackend(gpu.device, { storage: 'f16' }) : undefined;
const variant = (be: WebGPUBackend) => `${be.subgroups ? 'subgroup' : 'workgroup'} tiles, ${be.storage} storage`;

/**
 * Outputs of `record` (run on the backend it is given) on each of the GPU backends and on
 * the CPU, CPU last.
 */
async function onAll(gpus: WebGPUBackend[], record: (be: Backend) => Guarded[]): Promise<(Float32Array | Int32Array)[][]> {
  const results: (Float32Array | Int32Array)[][] = [];
  for (const be of [...gpus, cpu]) {
    const outputs = record(be);
    const data: (Float32Array | Int32Array)[] = [];
    for (const [index, g] of outputs.entries()) data.push(await readGuarded(be, g, `${be.name} output ${index}`));
    be.releaseAll();
    results.push(data);
  }
  return results;
}

/** Each GPU backend's outputs against the CPU's (the last), labelled by name. */
function expectAllSame(
  gpus: WebGPUBackend[], results: (Float32Array | Int32Array)[][], names: string[], tol = OUT_TOL,
): void {
  const want = results[results.length - 1];
  gpus.forEach((be, b) => names.forEach((name, i) => expectSame(`${variant(be)} ${name}`, results[b][i], want[i], tol)));
}

/** Stable sort perm, starts and tags of LSH keys, as the sort and buckets ops compute them. */
function bucketsOf(keys: Int32Array, numKeys: number, cap: number) {
  const perm = Int32Array.from(keys.keys()).sort((a, b) => keys[a] - keys[b] || a - b);
  const starts = new Int32Array(numKeys + 1);
  for (const key of keys) starts[key + 1]++;
  for (let u = 0; u < numKeys; u++) starts[u + 1] += starts[u];
  const tags = new Int32Array(keys.length);
  perm.forEach((row, i) => {
    tags[row] = i - starts[keys[row]] < cap ? keys[row] : -1;
  });
  return { perm, starts, tags };
}

interface Case {
  nq: number;
  nk: number;
  d: number;
  dv: number;
  causal: boolean;
  window: number;
  rounds: number;
  numKeys: number;
  cap: number;
}

/**
 * Random inputs of one head: q, k, v, column flags, window and the buckets of every round.
 * With `half`, q, k and v are f16 values, which storage 'f16' holds exactly.
 */
function scenario(c: Case, half = false) {
  const rng = random();
  const input = (length: number) => (half ? f16Rounded(gaussian(rng, length)) : gaussian(rng, length));
  const keysOf = (n: number) => Int32Array.from({ length: n }, () => rng.nextBelow(c.numKeys));
  const flags = Int32Array.from({ length: c.nk }, (_, j) => (j < 3 || rng.nextBelow(20) === 0 ? 1 : 0));
  const qb = Array.from({ length: c.rounds }, () => bucketsOf(keysOf(c.nq), c.numKeys, c.nq));
  const kb = Array.from({ length: c.rounds }, () => bucketsOf(keysOf(c.nk), c.numKeys, c.cap));
  const concat = (parts: Int32Array[], n: number) => {
    const all = new Int32Array(parts.length * n);
    parts.forEach((part, t) => all.set(part, t * n));
    return all;
  };
  return {
    ...c,
    scale: 1 / Math.sqrt(c.d),
    q: input(c.nq * c.d),
    k: input(c.nk * c.d),
    v: input(c.nk * c.dv),
    flags,
    cols: Int32Array.from(flags.keys()).filter((j) => flags[j] !== 0),
    // Queries are the last nq key positions (causal: bottom-right aligned).
    causalOffset: c.causal ? c.nk - c.nq : 0,
    winLo: c.causal ? c.nk - c.nq + 1 - c.window : -Math.floor(c.window / 2),
    qb,
    kb,
    qTags: concat(qb.map((b) => b.tags), c.nq),
    kTags: concat(kb.map((b) => b.tags), c.nk),
    rng,
  };
}
type Scenario = ReturnType<typeof scenario>;

function head(be: Backend, s: Scenario): AttentionInputs {
  return {
    q: guarded(be, s.nq, s.d, s.q).view, k: guarded(be, s.nk, s.d, s.k).view, v: guarded(be, s.nk, s.dv, s.v).view,
    nq: s.nq, nk: s.nk, d: s.d, dv: s.dv, scale: s.scale,
  };
}

function mask(be: Backend, s: Scenario, rounds: number): AccurateMask {
  return {
    causal: s.causal, causalOffset: s.causalOffset, flags: guarded(be, s.nk, 1, s.flags).view, winLo: s.winLo, window: s.window, rounds,
    qTags: guarded(be, Math.max(1, s.rounds), s.nq, s.qTags).view, kTags: guarded(be, Math.max(1, s.rounds), s.nk, s.kTags).view,
  };
}

/** A part's output rows: poisoned, or holding `data` (what a merge or an add finds there). */
function partOutput(be: Backend, nq: number, dv: number, data?: PartData): { dst: PartOutput; outputs: Guarded[] } {
  const outputs = [
    guarded(be, nq, dv, data?.out), guarded(be, nq, 1, data?.lse), guarded(be, nq, 1, data?.cnt), guarded(be, nq, dv, data?.vsum),
  ];
  const [out, lse, cnt, vsum] = outputs.map((g) => g.view);
  return { dst: { out, lse, cnt, vsum }, outputs };
}
const PART_NAMES = ['out', 'lse', 'cnt', 'vsum'];

interface PartData {
  out: Float32Array;
  lse: Float32Array;
  cnt: Float32Array;
  vsum: Float32Array;
}

/** Plausible contents of a part's rows: lse -Infinity (nothing counted yet) on some. */
function partData(rng: Xoshiro128, nq: number, dv: number, maxCount: (i: number) => number): PartData {
  const lse = gaussian(rng, nq, 3);
  const cnt = Float32Array.from({ length: nq }, (_, i) => rng.nextBelow(maxCount(i) + 1));
  for (let i = 0; i < nq; i += 7) lse[i] = -Infinity;
  return { out: gaussian(rng, nq * dv), lse, cnt, vsum: gaussian(rng, nq * dv, 4) };
}

// Workgroup-memory tiles (where the device has subgroups, a second compile of every
// kernel, seconds on a software adapter) on the first two cases only; storage 'f16'
// (where the device has shader-f16) on the first, with inputs that are f16 values.
const cases: (Case & { bothTiles: boolean; half: boolean })[] = [
  { nq: 200, nk: 200, d: 64, dv: 64, causal: true, window: 24, rounds: 3, numKeys: 8, cap: 16, bothTiles: true, half: true },
  { nq: 150, nk: 230, d: 32, dv: 48, causal: false, window: 40, rounds: 2, numKeys: 16, cap: 8, bothTiles: true, half: false },
  { nq: 130, nk: 130, d: 80, dv: 80, causal: false, window: 130, rounds: 1, numKeys: 4, cap: 64, bothTiles: false, half: false },
  // Causal with fewer queries than keys: the queries are the last 90 of 250 key positions.
  { nq: 90, nk: 250, d: 32, dv: 32, causal: true, window: 40, rounds: 2, numKeys: 8, cap: 16, bothTiles: false, half: false },
];

const Ops = suite('accurate ops, webgpu vs cpu');

for (const c of cases) {
  const label = `nq ${c.nq}, nk ${c.nk}, d ${c.d}, dv ${c.dv}, causal ${c.causal}`;
  const gpus = [gpu, ...(c.bothTiles && workgroupTiles ? [workgroupTiles] : []), ...(c.half && halfStorage ? [halfStorage] : [])];

  Ops(`buckets (${label}, cap ${c.cap} of ${c.numKeys} buckets)`, async () => {
    const s = scenario(c, c.half);
    const keys = Int32Array.from({ length: c.nk }, () => s.rng.nextBelow(c.numKeys));
    const { perm } = bucketsOf(keys, c.numKeys, c.cap);
    const results = await onAll(gpus, (be) => {
      const tags = guarded(be, c.nk, 1, undefined, 'i32');
      const starts = guarded(be, c.numKeys + 1, 1, undefined, 'i32');
      be.buckets({
        keys: guarded(be, c.nk, 1, keys).view, perm: guarded(be, c.nk, 1, perm).view, count: c.nk, numKeys: c.numKeys,
        cap: c.cap, tags: tags.view, starts: starts.view,
      });
      return [tags, starts];
    });
    expectAllSame(gpus, results, ['tags', 'starts'], 0);
  });

  Ops(`probe (${label})`, async () => {
    const s = scenario(c, c.half);
    const rows = Int32Array.from({ length: 9 }, () => s.rng.nextBelow(c.nq));
    const results = await onAll(gpus, (be) => {
      const mass = guarded(be, c.nk, 1);
      const h = head(be, s);
      be.probe({
        q: h.q, k: h.k, nq: c.nq, nk: c.nk, d: c.d, scale: s.scale, rows: guarded(be, rows.length, 1, rows).view,
        count: rows.length, causal: c.causal, causalOffset: s.causalOffset, sinks: 3, winLo: s.winLo, window: c.window, mass: mass.view,
      });
      return [mass];
    });
    expectAllSame(gpus, results, ['mass']);
  });

  Ops(`columns, then window (${label})`, async () => {
    const s = scenario(c, c.half);
    const results = await onAll(gpus, (be) => {
      const h = head(be, s);
      const cols = guarded(be, s.cols.length, 1, s.cols).view;
      const columns = partOutput(be, c.nq, c.dv);
      be.columns({ ...h, cols, count: s.cols.length, causal: c.causal, causalOffset: s.causalOffset, dst: columns.dst });
      return columns.outputs;
    });
    expectAllSame(gpus, results, PART_NAMES.map((name) => `columns ${name}`));
    const before = partData(s.rng, c.nq, c.dv, () => 10);
    const merged = await onAll(gpus, (be) => {
      const window = partOutput(be, c.nq, c.dv, before);
      be.window({ ...head(be, s), mask: mask(be, s, 0), dst: window.dst });
      return window.outputs;
    });
    expectAllSame(gpus, merged, PART_NAMES.map((name) => `window ${name}`));
  });

  for (let t = 0; t < c.rounds; t++) {
    Ops(`round ${t} of ${c.rounds} (${label}, cap ${c.cap} of ${c.numKeys} buckets)`, async () => {
      const s = scenario(c, c.half);
      const before = partData(s.rng, c.nq, c.dv, () => 10);
      const results = await onAll(gpus, (be) => {
        const round = partOutput(be, c.nq, c.dv, before);
        const i32 = (data: Int32Array) => guarded(be, data.length, 1, data).view;
        be.round({
          ...head(be, s), qPerm: i32(s.qb[t].perm), kPerm: i32(s.kb[t].perm), qStarts: i32(s.qb[t].starts),
          kStarts: i32(s.kb[t].starts), numKeys: c.numKeys, cap: c.cap, mask: mask(be, s, t), dst: round.dst,
        });
        return round.outputs;
      });
      expectAllSame(gpus, results, PART_NAMES);
    });
  }

  Ops(`samples in two segments, then remainder (${label})`, async () => {
    const s = scenario(c, c.half);
    const split = Math.floor(c.nq / 3);
    const segments = [
      { qFrom: 0, qTo: split, samples: Int32Array.from({ length: 40 }, () => s.rng.nextBelow(Math.min(c.nk, split + 1))) },
      { qFrom: split, qTo: c.nq, samples: Int32Array.from({ length: 57 }, () => s.rng.nextBelow(c.nk)) },
    ];
    const results = await onAll(gpus, (be) => {
      const h = head(be, s);
      const m = mask(be, s, c.rounds);
      const sampled = partOutput(be, c.nq, c.dv);
      for (const seg of segments) be.samples({ ...h, ...seg, mask: m, dst: sampled.dst });
      return sampled.outputs;
    });
    expectAllSame(gpus, results, PART_NAMES.map((name) => `samples ${name}`));

    // The remainder of inputs like those above: exact counts up to every visible key
    // (nothing left to estimate), sample counts from 0 (no visible sample).
    const visible = (i: number) => (c.causal ? Math.min(i + s.causalOffset + 1, c.nk) : c.nk);
    const exact = partData(s.rng, c.nq, c.dv, visible);
    const samples = partData(s.rng, c.nq, c.dv, () => 5);
    const merged = await onAll(gpus, (be) => {
      const dst = partOutput(be, c.nq, c.dv, exact);
      be.remainder({
        v: guarded(be, c.nk, c.dv, s.v).view, nq: c.nq, nk: c.nk, dv: c.dv, causal: c.causal, causalOffset: s.causalOffset,
        controlVariate: 0.75,
        exact: dst.dst, samples: partOutput(be, c.nq, c.dv, samples).dst,
      });
      return dst.outputs.slice(0, 2);
    });
    expectAllSame(gpus, merged, ['remainder out', 'remainder lse']);
  });
}
Ops('probe of long rows (3000 keys)', async () => {
  const rng = random();
  const [n, d, count] = [3000, 32, 5];
  const q = gaussian(rng, n * d);
  const k = gaussian(rng, n * d);
  const rows = Int32Array.from({ length: count }, (_, p) => 600 * p + rng.nextBelow(600));
  for (const causal of [false, true]) {
    const results = await onAll([gpu], (be) => {
      const mass = guarded(be, n, 1);
      be.probe({
        q: guarded(be, n, d, q).view, k: guarded(be, n, d, k).view, nq: n, nk: n, d, scale: 0.2, rows: guarded(be, count, 1, rows).view,
        count, causal, causalOffset: 0, sinks: 16, winLo: causal ? -63 : -32, window: 64, mass: mass.view,
      });
      return [mass];
    });
    expectAllSame([gpu], results, [`causal ${causal} mass`]);
  }
});
Ops('heavy columns from masses with ties, zeros and runs longer than a workgroup', async () => {
  const rng = random();
  for (const [nk, sinks, count] of [[9, 0, 3], [300, 4, 12], [5000, 16, 32], [2000, 3, 1997], [1000, 10, 40]]) {
    // Few distinct values (ties across invocations' runs), a block of zeros, and a tail
    // of distinct ones.
    const mass = Float32Array.from({ length: nk }, (_, j) =>
      (j % 97 < 20 ? 0 : j % 3 === 0 ? [0.25, 0.5, 1][rng.nextBelow(3)] : rng.nextUnit()));
    const results = await onAll([gpu], (be) => {
      const cols = guarded(be, sinks + count, 1, undefined, 'i32');
      const flags = guarded(be, nk, 1, undefined, 'i32');
      be.heavy({ mass: guarded(be, nk, 1, mass).view, nk, sinks, count, cols: cols.view, flags: flags.view });
      return [cols, flags];
    });
    expectAllSame([gpu], results, [`nk ${nk} cols`, `nk ${nk} flags`]);
  }
});
Ops.after.each(() => {
  for (const be of [gpu, workgroupTiles, halfStorage]) be?.releaseAll();
  cpu.releaseAll();
});

const Calls = suite('accurate mode, whole calls: webgpu and hybrid vs cpu');
const hybrid = new HybridBackend(await createCpuBackend(), gpu);
let hybridBuckets = 0;
const cpuBuckets = hybrid.cpu.buckets.bind(hybrid.cpu);
hybrid.cpu.buckets = (t) => {
  hybridBuckets++;
  cpuBuckets(t);
};

interface CallCase {
  causal: boolean;
  n: number;
  d: number;
  dv: number;
  H: number;
  Hkv: number;
  options: Record<string, number>;
}
// Head dims as in the op cases above, whose pipelines are then compiled already.
const callCases: CallCase[] = [
  { causal: true, n: 300, d: 64, dv: 64, H: 2, Hkv: 1, options: { window: 32, heavyKeys: 8, sinkKeys: 4, lshRounds: 2 } },
  { causal: false, n: 517, d: 32, dv: 48, H: 2, Hkv: 2, options: { window: 0, heavyKeys: 16, sinkKeys: 0, lshRounds: 3 } },
  { causal: true, n: 700, d: 80, dv: 80, H: 1, Hkv: 1, options: { window: 64, heavyKeys: 0, sinkKeys: 8, lshRounds: 0 } },
  { causal: false, n: 600, d: 64, dv: 64, H: 1, Hkv: 1, options: { lshRounds: 1 } },
];
for (const [index, c] of callCases.entries()) {
  Calls(`hyperAttention accurate ${JSON.stringify(c)}`, async () => {
    // Fixed inputs: the heavy columns and LSH buckets both backends pick must agree, and a
    // near tie in the probe's mass or a projection could split them on a rare seed.
    const rng = new Xoshiro128(2000 + index);
    const q = { data: gaussian(rng, c.H * c.n * c.d), shape: [1, c.H, c.n, c.d] };
    const k = { data: gaussian(rng, c.Hkv * c.n * c.d), shape: [1, c.Hkv, c.n, c.d] };
    const v = { data: gaussian(rng, c.Hkv * c.n * c.dv), shape: [1, c.Hkv, c.n, c.dv] };
    const o = resolveHyperOptions({ causal: c.causal, minSeqLen: 0, blockSize: 32, sampleSize: 48, seed: 5, ...c.options });
    assert.is(o.mode, 'accurate');
    const shape = attentionShape(q, k, v, c.causal);
    const want = await runHyper(cpu, shape, o, q, k, v);
    hybridBuckets = 0;
    for (const be of [gpu, hybrid] as Backend[]) {
      const got = await runHyper(be, shape, o, q, k, v);
      expectSame(`${be.name} out`, got.out.data, want.out.data, OUT_TOL);
      expectSame(`${be.name} lse`, got.lse.data, want.lse.data, LSE_TOL);
    }
    assert.ok(o.lshRounds === 0 || hybridBuckets > 0, 'the hybrid runs buckets on the CPU');
  });
}

// Verified calls: check rows computed with each head (causal: one op a row) and read back
// with its result, heads that miss the tolerance moved to exact attention alone. Head 0
// attends to a sink the plan counts exactly (its error is small), head 1 is diffuse.
for (const causal of [false, true]) {
  Calls(`verified call (causal ${causal}): the same plans, errors and results as on the cpu`, async () => {
    const n = 640;
    const d = 32;
    const rng = new Xoshiro128(3000 + Number(causal));
    const q = { data: gaussian(rng, 2 * n * d), shape: [1, 2, n, d] };
    const k = { data: gaussian(rng, 2 * n * d), shape: [1, 2, n, d] };
    const v = { data: gaussian(rng, 2 * n * d), shape: [1, 2, n, d] };
    for (let i = 0; i < n; i++) q.data[i * d] = 8;
    k.data[0] = 8;
    const shape = attentionShape(q, k, v, causal);
    for (const tolerance of [1e9, 0.1]) {
      const o = resolveHyperOptions({ causal, minSeqLen: 0, window: 64, sampleSize: 48, seed: 5, tolerance, checkRows: 40 });
      const want = await runVerified(cpu, shape, o, q, k, v, undefined);
      const plans = want.verification!.heads.map((h) => h.plan);
      if (tolerance === 0.1) assert.equal(plans, ['accurate', 'exact']);
      for (const be of [gpu, hybrid] as Backend[]) {
        const got = await runVerified(be, shape, o, q, k, v, undefined);
        assert.equal(got.verification!.heads.map((h) => h.plan), plans, `${be.name} plans`);
        got.verification!.heads.forEach((h, i) =>
          expectSame(`${be.name} head ${i} error`, [h.error], [want.verification!.heads[i].error], 1e-3));
        expectSame(`${be.name} out`, got.out.data, want.out.data, OUT_TOL);
        expectSame(`${be.name} lse`, got.lse.data, want.lse.data, LSE_TOL);
      }
    }
  });
}
