// The WebGPU backend against the WebAssembly backend (src/cpu/) on identical inputs: every
// op, then whole HyperAttention calls (src/hyper.ts) on each backend. Outputs of both are
// poisoned first. Tolerances: 1e-4 max abs error in out and lse (float32 on both sides,
// different summation orders); hash keys and sort permutations identical (hash keys may
// differ only on rows with a projection within 1e-5 of a sign change).
import { suite } from '../suite.ts';
import * as assert from 'uvu/assert';
import { createCpuBackend } from '../../src/cpu/backend.ts';
import { createWebGPUBackend } from '../../src/gpu/index.ts';
import { runExact, runHyper } from '../../src/hyper.ts';
import type { Backend, BackendBuffer, WriteMode } from '../../src/ops.ts';
import { resolveExactOptions, resolveHyperOptions, type Mode } from '../../src/options.ts';
import { Xoshiro128 } from '../../src/random.ts';
import { attentionShape } from '../../src/tensor.ts';
import {
  LSE_TOL, OUT_TOL, expectSame, gaussian, guarded, hashKeys, permutation, random, readGuarded, row, type Guarded,
} from './harness.ts';

const gpu = await createWebGPUBackend();
const cpu = await createCpuBackend();

/**
 * Runs `record` on both backends (it creates its inputs and poisoned outputs on the backend
 * it is given and returns the outputs) and returns the outputs of each, GPU first.
 */
async function onBoth(record: (be: Backend) => Guarded[]): Promise<[(Float32Array | Int32Array)[], (Float32Array | Int32Array)[]]> {
  const results: (Float32Array | Int32Array)[][] = [];
  for (const be of [gpu, cpu]) {
    const outputs = record(be);
    const data: (Float32Array | Int32Array)[] = [];
    for (const g of outputs) data.push(await readGuarded(be, g, `${be.name} output`));
    be.releaseAll();
    results.push(data);
  }
  return [results[0], results[1]];
}

function part1(be: Backend, rows: number, dv: number, out: Float32Array, lse: Float32Array, write: WriteMode) {
  const o = write === 'write' ? guarded(be, rows, dv) : guarded(be, rows, dv, out);
  const l = write === 'write' ? guarded(be, rows, 1) : guarded(be, rows, 1, lse);
  return { o, l, dst: { out: o.view, lse: l.view, write } };
}

const Ops = suite('webgpu vs cpu ops');

for (const write of ['write', 'merge-reference', 'merge-fixed'] as const) {
  Ops(`exact causal, ${write}`, async () => {
    const rng = random();
    const [nq, nk, d, dv] = [300, 300, 64, 48];
    const q = gaussian(rng, nq * d);
    const k = gaussian(rng, nk * d);
    const v = gaussian(rng, nk * dv);
    const out1 = gaussian(rng, nq * dv);
    const lse1 = gaussian(rng, nq, 3);
    const [g, c] = await onBoth((be) => {
      const dest = part1(be, nq, dv, out1, lse1, write);
      be.exact({
        q: guarded(be, nq, d, q).view, k: guarded(be, nk, d, k).view, v: guarded(be, nk, dv, v).view,
        nq, nk, d, dv, scale: 0.125, causal: true, causalOffset: 0, dst: dest.dst,
      });
      return [dest.o, dest.l];
    });
    expectSame('out', g[0], c[0], OUT_TOL);
    expectSame('lse', g[1], c[1], LSE_TOL);
  });
}

for (const mode of ['reference', 'fixed'] as const) {
  Ops(`block then sampled (${mode} mode shapes)`, async () => {
    const rng = random();
    const [nqReal, pads, nk, d, dv, b, m] = [230, mode === 'reference' ? 26 : 0, 230, 32, 40, 64, 40];
    const nqSorted = nqReal + pads;
    const nBlocks = Math.ceil(nk / b);
    const qBlock = Math.floor((Math.ceil(nqSorted / b) * b) / nBlocks);
    const q = gaussian(rng, nqReal * d);
    const k = gaussian(rng, nk * d);
    const v = gaussian(rng, nk * dv);
    const qPerm = permutation(rng, nqSorted);
    const kPerm = permutation(rng, nk);
    const samples = Int32Array.from({ length: m }, () => rng.nextBelow(nk));
    const [g, c] = await onBoth((be) => {
      const dest = part1(be, nqReal, dv, new Float32Array(0), new Float32Array(0), 'write');
      const sorted = {
        q: guarded(be, nqReal, d, q).view, k: guarded(be, nk, d, k).view, v: guarded(be, nk, dv, v).view,
        qPerm: guarded(be, nqSorted, 1, qPerm).view, kPerm: guarded(be, nk, 1, kPerm).view,
        nqSorted, nqReal, nk, d, dv, scale: 1 / Math.sqrt(d), qBlock, kBlock: b, nBlocks,
      };
      be.block({ ...sorted, phantomKeys: mode === 'reference', dst: dest.dst });
      const merge: WriteMode = mode === 'reference' ? 'merge-reference' : 'merge-fixed';
      be.sampled({ ...sorted, samples, lseOffset: Math.log(nk / m), dst: { ...dest.dst, write: merge } });
      return [dest.o, dest.l];
    });
    expectSame('out', g[0], c[0], OUT_TOL);
    expectSame('lse', g[1], c[1], LSE_TOL);
  });
}

for (const write of ['merge-reference', 'merge-fixed'] as const) {
  Ops(`merge ${write}`, async () => {
    const rng = random();
    const [rows, dv] = [100, 24];
    const out1 = gaussian(rng, rows * dv);
    const lse1 = gaussian(rng, rows, 10);
    const out2 = gaussian(rng, rows * dv);
    const lse2 = gaussian(rng, rows, 10);
    lse1[0] = -Infinity;
    lse2[1] = -Infinity;
    const [g, c] = await onBoth((be) => {
      const dest = part1(be, rows, dv, out1, lse1, write);
      be.merge({ src: { out: guarded(be, rows, dv, out2).view, lse: guarded(be, rows, 1, lse2).view }, dst: dest.dst, rows, dv });
      return [dest.o, dest.l];
    });
    expectSame('out', g[0], c[0], 1e-6);
    expectSame('lse', g[1], c[1], 1e-5);
  });
}

for (const mode of ['reference', 'fixed'] as const) {
  Ops(`hash and sort, ${mode}`, async () => {
    const rng = random();
    const [rows, d, r, pads] = [700, 64, 7, 30];
    const x = gaussian(rng, rows * d);
    const projData = gaussian(rng, d * r);
    const [g, c] = await onBoth((be) => {
      const proj: BackendBuffer = be.createBuffer('f32', d * r);
      be.upload(proj, projData);
      const keys = guarded(be, rows, 1, undefined, 'i32');
      const perm = guarded(be, rows + pads, 1, undefined, 'i32');
      be.hash({ x: guarded(be, rows, d, x).view, rows, d, proj, r, mode, keys: keys.view });
      be.sort({ keys: keys.view, count: rows, pads, numKeys: 1 << r, perm: perm.view });
      return [keys, perm];
    });
    let ties = 0;
    for (let i = 0; i < rows; i++) {
      const allowed = hashKeys(row(x, i, d), projData, d, r, mode);
      assert.ok(allowed.includes(g[0][i]) && allowed.includes(c[0][i]), `row ${i}: keys ${g[0][i]} (gpu) ${c[0][i]} (cpu)`);
      if (g[0][i] !== c[0][i]) ties++;
    }
    // Identical keys must sort identically.
    if (ties === 0) assert.equal(Array.from(g[1]), Array.from(c[1]));
  });
}
Ops.after.each(() => {
  gpu.releaseAll();
  cpu.releaseAll();
});

const Calls = suite('webgpu vs cpu, whole calls');
interface CallCase {
  causal: boolean;
  mode: Mode;
  n: number;
  H: number;
  b: number;
  m: number;
  minSeqLen: number;
  /** queries, when fewer than the n keys (causal: the last nq key positions) */
  nq?: number;
}
const small = { H: 2, b: 64, m: 32, minSeqLen: 128 };
const callCases: CallCase[] = [
  { causal: true, mode: 'fixed', n: 600, ...small },
  { causal: true, mode: 'reference', n: 517, ...small },
  { causal: false, mode: 'fixed', n: 700, ...small },
  { causal: false, mode: 'reference', n: 650, ...small },
  // Two sub-heads of 512 rows at depth 1, each sorted (2 chunks x 128 keys of histogram,
  // 1 KiB) just before its 256 samples (1 KiB) are written: the sizes that once put the
  // samples in the sorts' scratch buffer.
  { causal: true, mode: 'fixed', n: 2048, H: 1, b: 256, m: 256, minSeqLen: 512 },
  { causal: true, mode: 'reference', n: 2048, H: 1, b: 256, m: 256, minSeqLen: 512 },
  // Causal chunks: 300 queries of 1000 keys take the square call's first step, then
  // recurse on their own square; 450 of 800 keys straddle the first level (a prefix step).
  { causal: true, mode: 'fixed', n: 1000, nq: 300, ...small },
  { causal: true, mode: 'reference', n: 800, nq: 450, ...small },
];
for (const [index, c] of callCases.entries()) {
  const { causal, mode, n, H } = c;
  const nq = c.nq ?? n;
  Calls(`hyperAttention ${JSON.stringify(c)} (B 1, Hkv 1, d 64)`, async () => {
    // Fixed inputs: a whole call sorts by LSH keys, and a row whose projection is within
    // float rounding of zero may hash differently on the two backends and move others
    // between blocks; with a fresh seed per run that would fail a small fraction of runs.
    const rng = new Xoshiro128(1000 + index);
    const [B, Hkv, d] = [1, 1, 64];
    const q = { data: gaussian(rng, B * H * nq * d), shape: [B, H, nq, d] };
    const k = { data: gaussian(rng, B * Hkv * n * d), shape: [B, Hkv, n, d] };
    const v = { data: gaussian(rng, B * Hkv * n * d), shape: [B, Hkv, n, d] };
    const o = resolveHyperOptions({ causal, mode, blockSize: c.b, sampleSize: c.m, minSeqLen: c.minSeqLen, seed: 7 });
    const shape = attentionShape(q, k, v, causal);
    const a = await runHyper(gpu, shape, o, q, k, v);
    const b = await runHyper(cpu, shape, o, q, k, v);
    expectSame('out', a.out.data, b.out.data, OUT_TOL);
    expectSame('lse', a.lse.data, b.lse.data, LSE_TOL);
  });
}
// Causal chunks up to 8192 keys (the WebAssembly backend is checked against the float64
// reference on the same sizes in test/causal-offset.test.ts); d 16 keeps a software adapter quick.
// Bottom-right causal chunks: [B, H, Hkv, nq, nk, d].
const CAUSAL_CHUNKS = [
  [1, 2, 1, 1, 8192, 16], [1, 2, 1, 3, 4099, 16], [1, 2, 1, 17, 1000, 16], [1, 2, 1, 512, 8192, 16], [1, 2, 1, 2048, 8192, 16],
  [2, 2, 2, 200, 200, 32], [2, 2, 2, 1, 200, 32], [2, 2, 2, 77, 200, 32],
];
for (const [B, H, Hkv, nq, nk, d] of CAUSAL_CHUNKS) {
  Calls(`exactAttention causal, B ${B}, H ${H}, Hkv ${Hkv}: ${nq} queries of ${nk} keys (d ${d})`, async () => {
    const rng = random();
    const q = { data: gaussian(rng, B * H * nq * d), shape: [B, H, nq, d] };
    const [k, v] = [0, 1].map(() => ({ data: gaussian(rng, B * Hkv * nk * d), shape: [B, Hkv, nk, d] }));
    const o = resolveExactOptions({ causal: true });
    const shape = attentionShape(q, k, v, true);
    const a = await runExact(gpu, shape, o, q, k, v);
    const b = await runExact(cpu, shape, o, q, k, v);
    expectSame('out', a.out.data, b.out.data, OUT_TOL);
    expectSame('lse', a.lse.data, b.lse.data, LSE_TOL);
  });
}
