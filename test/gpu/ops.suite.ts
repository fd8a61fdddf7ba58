// Every op of the WebGPU backend against float64 expectations (test/reference.ts for the
// attention ops, direct formulas for merge, hash and sort) on fresh random inputs, with
// destinations poisoned and guarded (harness.ts). Tolerances: OUT_TOL and LSE_TOL (1e-4
// max abs error); hash keys exact except at projections within 1e-5 of a sign change;
// sort permutations exact. The attention ops use subgroup shuffles where the device has
// subgroups; there they run again with workgroup-memory tiles (the path of devices
// without). They run again with storage 'f16' where the device has shader-f16, against
// float64 on f16-rounded inputs, within F16_TOL.
import { suite } from '../suite.ts';
import * as assert from 'uvu/assert';
import { HyperAttentionError } from '../../src/errors.ts';
import { WebGPUBackend, createWebGPUBackend } from '../../src/gpu/index.ts';
import type { Backend, KernelMode, WriteMode } from '../../src/ops.ts';
import {
  F16_TOL, OUT_TOL, checkDestination, destination, f16Rounded, gaussian, guarded, hashKeys, mergeRows, permutation, random,
  readGuarded, row, rowAttention, type RowResult,
} from './harness.ts';

const be = await createWebGPUBackend();

/** A backend under test, what its storage makes of Q, K and V, and the tolerance that follows. */
interface Variant {
  be: Backend;
  inputs: (x: Float32Array) => Float32Array;
  tol: number;
}

const F32: Variant = { be, inputs: (x) => x, tol: OUT_TOL };
const WORKGROUP_TILES: Variant | undefined = be.subgroups
  ? { be: new WebGPUBackend(be.device, { subgroups: false }), inputs: (x) => x, tol: OUT_TOL }
  : undefined;
const F16: Variant | undefined = be.device.features.has('shader-f16')
  ? { be: new WebGPUBackend(be.device, { storage: 'f16' }), inputs: f16Rounded, tol: F16_TOL }
  : undefined;

interface ExactCase {
  nq: number;
  nk: number;
  d: number;
  dv: number;
  causal: boolean;
  causalOffset?: number;
  write?: WriteMode;
}

async function exactCase(variant: Variant, c: ExactCase): Promise<void> {
  const backend = variant.be;
  const { nq, nk, d, dv, causal } = c;
  const causalOffset = c.causalOffset ?? 0;
  const write = c.write ?? 'write';
  const rng = random();
  const q = gaussian(rng, nq * d);
  const k = gaussian(rng, nk * d);
  const v = gaussian(rng, nk * dv);
  const scale = 1.3 / Math.sqrt(d);
  const dest = destination(backend, rng, nq, dv, write);
  backend.exact({
    q: guarded(backend, nq, d, q).view, k: guarded(backend, nk, d, k).view, v: guarded(backend, nk, dv, v).view,
    nq, nk, d, dv, scale, causal, causalOffset, dst: dest.dst,
  });
  const [qs, ks, vs] = [q, k, v].map(variant.inputs);
  const expected = Array.from({ length: nq }, (_, i) => {
    const visible = Array.from({ length: nk }, (_, j) => j).filter((j) => !causal || j <= i + causalOffset);
    const part = rowAttention(row(qs, i, d), visible.map((j) => row(ks, j, d)), visible.map((j) => row(vs, j, dv)), d, dv, scale);
    return mergeRows(dest.before[i], part, write);
  });
  await checkDestination(backend, dest, expected, dv, `exact ${JSON.stringify(c)}`, variant.tol);
}

const Exact = suite('webgpu exact');
const exactCases: ExactCase[] = [
  { nq: 1, nk: 1, d: 32, dv: 32, causal: false },
  { nq: 1, nk: 1, d: 32, dv: 32, causal: true },
  { nq: 2, nk: 2, d: 64, dv: 64, causal: false },
  { nq: 2, nk: 2, d: 64, dv: 64, causal: true },
  { nq: 255, nk: 255, d: 80, dv: 80, causal: true },
  { nq: 257, nk: 257, d: 128, dv: 128, causal: false },
  { nq: 1000, nk: 1000, d: 64, dv: 64, causal: true },
  { nq: 100, nk: 300, d: 64, dv: 32, causal: false },
  { nq: 130, nk: 70, d: 32, dv: 80, causal: true, causalOffset: 20 },
  // The first rows see no key at all: lse -Infinity, out 0.
  { nq: 40, nk: 50, d: 64, dv: 64, causal: true, causalOffset: -5 },
  { nq: 70, nk: 90, d: 32, dv: 32, causal: true, write: 'merge-fixed' },
  { nq: 70, nk: 90, d: 32, dv: 32, causal: false, write: 'merge-reference' },
  { nq: 33, nk: 45, d: 5, dv: 3, causal: false },
];
for (const c of exactCases) Exact(`exact ${JSON.stringify(c)}`, () => exactCase(F32, c));
Exact('exact split over bindings of 4 KiB (query runs of 15 rows)', () => exactCase(
  { ...F32, be: new WebGPUBackend(be.device, { maxBindingBytes: 4096 }) },
  { nq: 100, nk: 12, d: 64, dv: 64, causal: true, causalOffset: 3 },
));
Exact.after.each(() => be.releaseAll());

interface SortedCase {
  nqReal: number;
  pads: number;
  nk: number;
  d: number;
  dv: number;
  qBlock: number;
  kBlock: number;
  write: WriteMode;
}

/** Random inputs and permutations of a block or sampled op. */
function sortedInputs(variant: Variant, c: SortedCase) {
  const be = variant.be;
  const rng = random();
  const nqSorted = c.nqReal + c.pads;
  const q = gaussian(rng, c.nqReal * c.d);
  const k = gaussian(rng, c.nk * c.d);
  const v = gaussian(rng, c.nk * c.dv);
  const qPerm = permutation(rng, nqSorted);
  const kPerm = permutation(rng, c.nk);
  const dest = destination(be, rng, c.nqReal, c.dv, c.write);
  const task = {
    q: guarded(be, c.nqReal, c.d, q).view, k: guarded(be, c.nk, c.d, k).view, v: guarded(be, c.nk, c.dv, v).view,
    qPerm: guarded(be, nqSorted, 1, qPerm).view, kPerm: guarded(be, c.nk, 1, kPerm).view,
    nqSorted, nqReal: c.nqReal, nk: c.nk, d: c.d, dv: c.dv, scale: 1 / Math.sqrt(c.d), qBlock: c.qBlock,
    kBlock: c.kBlock, nBlocks: Math.ceil(c.nk / c.kBlock), dst: dest.dst,
  };
  const [qs, ks, vs] = [q, k, v].map(variant.inputs);
  return { rng, q: qs, k: ks, v: vs, qPerm, kPerm, dest, task };
}

/** float64 rows for every real query: expected[qPerm[i]] from sorted row i's visible keys. */
function sortedExpectation(
  c: SortedCase, inputs: ReturnType<typeof sortedInputs>, keysOf: (i: number, blk: number) => { keys: number[]; phantom: number },
  lseAdd: number,
): RowResult[] {
  // q, k, v as the backend's storage holds them
  const { q, k, v, qPerm, kPerm, dest, task } = inputs;
  const expected: RowResult[] = new Array(c.nqReal);
  for (let i = 0; i < task.nqSorted; i++) {
    const r = qPerm[i];
    if (r >= c.nqReal) continue;
    const blk = Math.min(Math.floor(i / c.qBlock), task.nBlocks - 1);
    const { keys, phantom } = keysOf(i, blk);
    const part = rowAttention(
      row(q, r, c.d), keys.map((j) => row(k, kPerm[j], c.d)), keys.map((j) => row(v, kPerm[j], c.dv)),
      c.d, c.dv, task.scale, phantom,
    );
    part.lse += lseAdd;
    expected[r] = mergeRows(dest.before[r], part, c.write);
  }
  return expected;
}

const Block = suite('webgpu block');
const blockCases: (SortedCase & { phantomKeys: boolean })[] = [
  // reference-mode shape: pads sorted in, short last key block filled with phantom keys
  { nqReal: 200, pads: 56, nk: 200, d: 64, dv: 64, qBlock: 64, kBlock: 64, write: 'write', phantomKeys: true },
  // fixed-mode shape: qBlock != kBlock, the last block takes the rows past nBlocks * qBlock
  { nqReal: 300, pads: 0, nk: 257, d: 80, dv: 48, qBlock: 35, kBlock: 32, write: 'write', phantomKeys: false },
  // a last block of 102 sorted rows (more than one workgroup), merged into part 1
  { nqReal: 140, pads: 10, nk: 100, d: 32, dv: 32, qBlock: 16, kBlock: 25, write: 'merge-fixed', phantomKeys: false },
  { nqReal: 90, pads: 6, nk: 90, d: 128, dv: 128, qBlock: 32, kBlock: 32, write: 'merge-reference', phantomKeys: true },
];
async function blockCase(variant: Variant, c: (typeof blockCases)[number]): Promise<void> {
  const inputs = sortedInputs(variant, c);
  variant.be.block({ ...inputs.task, phantomKeys: c.phantomKeys });
  const expected = sortedExpectation(c, inputs, (_, blk) => {
    const from = blk * c.kBlock;
    const keys = Array.from({ length: Math.min(c.kBlock, c.nk - from) }, (_, j) => from + j);
    return { keys, phantom: c.phantomKeys ? c.kBlock - keys.length : 0 };
  }, 0);
  await checkDestination(variant.be, inputs.dest, expected, c.dv, 'block', variant.tol);
}
for (const c of blockCases) Block(`block ${JSON.stringify(c)}`, () => blockCase(F32, c));
Block.after.each(() => be.releaseAll());

const Sampled = suite('webgpu sampled');
const sampledCases: (SortedCase & { m: number; sampleFrom: number; sampleTo: number; label: string; sortFirst?: true })[] = [
  { label: 'mixed', nqReal: 256, pads: 0, nk: 256, d: 64, dv: 64, qBlock: 64, kBlock: 64, write: 'write', m: 48, sampleFrom: 0, sampleTo: 256 },
  { label: 'merged', nqReal: 230, pads: 26, nk: 250, d: 32, dv: 80, qBlock: 64, kBlock: 50, write: 'merge-reference', m: 33, sampleFrom: 0, sampleTo: 250 },
  // every sample in block 0: sorted rows of block 0 see nothing (lse -Infinity, out 0)
  { label: 'all masked in block 0', nqReal: 200, pads: 56, nk: 256, d: 64, dv: 64, qBlock: 64, kBlock: 64, write: 'write', m: 20, sampleFrom: 0, sampleTo: 64 },
  { label: 'all masked, merged', nqReal: 128, pads: 0, nk: 128, d: 32, dv: 32, qBlock: 32, kBlock: 32, write: 'merge-fixed', m: 9, sampleFrom: 32, sampleTo: 64 },
  { label: 'no samples', nqReal: 20, pads: 0, nk: 40, d: 32, dv: 32, qBlock: 10, kBlock: 10, write: 'write', m: 0, sampleFrom: 0, sampleTo: 40 },
  // samples written to the GPU while a sort with a histogram of their size is recorded
  { label: 'after a sort', nqReal: 256, pads: 0, nk: 512, d: 32, dv: 32, qBlock: 128, kBlock: 128, write: 'merge-fixed', m: 64, sampleFrom: 0, sampleTo: 512, sortFirst: true },
];
async function sampledCase(variant: Variant, c: (typeof sampledCases)[number]): Promise<void> {
  const inputs = sortedInputs(variant, c);
  const samples = Int32Array.from({ length: c.m }, () => c.sampleFrom + inputs.rng.nextBelow(c.sampleTo - c.sampleFrom));
  const lseOffset = Math.log(c.nk / Math.max(1, c.m));
  if (c.sortFirst) {
    // Recorded into the same open encoder, with a histogram of as many bytes as the
    // samples (numKeys x 2 chunks of 256 rows): a scratch buffer the sort gives up at
    // once must not be where the samples are written ahead of the recorded commands.
    const count = 512;
    const numKeys = c.m / 2;
    const keys = guarded(variant.be, count, 1, Int32Array.from({ length: count }, () => inputs.rng.nextBelow(numKeys)));
    const perm = guarded(variant.be, count, 1, undefined, 'i32');
    variant.be.sort({ keys: keys.view, count, pads: 0, numKeys, perm: perm.view });
  }
  variant.be.sampled({ ...inputs.task, samples, lseOffset });
  const expected = sortedExpectation(c, inputs, (_, blk) => ({
    keys: Array.from(samples).filter((s) => Math.floor(s / c.kBlock) !== blk),
    phantom: 0,
  }), lseOffset);
  if (c.sampleTo <= c.kBlock && c.write === 'write') {
    assert.ok(expected.some((e) => e && e.lse === -Infinity), 'the case has fully masked rows');
  }
  await checkDestination(variant.be, inputs.dest, expected, c.dv, `sampled ${c.label}`, variant.tol);
}
for (const c of sampledCases) Sampled(`sampled ${c.label} ${JSON.stringify(c)}`, () => sampledCase(F32, c));
Sampled.after.each(() => be.releaseAll());

const Merge = suite('webgpu merge');
for (const write of ['write', 'merge-reference', 'merge-fixed'] as const) {
  Merge(`merge ${write}`, async () => {
    const rng = random();
    const rows = 50;
    const dv = 40;
    const out2 = gaussian(rng, rows * dv);
    const lse2 = gaussian(rng, rows, 3);
    const dest = destination(be, rng, rows, dv, write === 'write' ? 'merge-fixed' : write);
    dest.dst.write = write;
    const lse1 = dest.before.map((b) => b.lse);
    // Edge rows: an empty part 2, an empty part 1, both empty, and differences beyond the
    // ~16 nats where the reference formula saturates, in both directions.
    lse2[0] = -Infinity;
    lse1[1] = -Infinity;
    lse1[2] = -Infinity;
    lse2[2] = -Infinity;
    lse2[3] = lse1[3] + 20;
    lse1[4] = lse2[4] + 30;
    dest.before.forEach((b, i) => { b.lse = lse1[i]; });
    be.upload(dest.lse.buf, Float32Array.from(lse1), dest.lse.view.row);
    const src = { out: guarded(be, rows, dv, out2).view, lse: guarded(be, rows, 1, lse2).view };
    be.merge({ src, dst: dest.dst, rows, dv });
    const expected = dest.before.map((b, i) => mergeRows(b, { out: Float64Array.from(row(out2, i, dv)), lse: lse2[i] }, write));
    await checkDestination(be, dest, expected, dv, `merge ${write}`);
  });
}
Merge.after.each(() => be.releaseAll());

const Hash = suite('webgpu hash');
const hashCases: { rows: number; d: number; r: number; mode: KernelMode }[] = [
  { rows: 300, d: 64, r: 7, mode: 'reference' },
  { rows: 300, d: 64, r: 7, mode: 'fixed' },
  { rows: 77, d: 80, r: 16, mode: 'fixed' },
  { rows: 64, d: 32, r: 3, mode: 'reference' },
];
for (const c of hashCases) {
  Hash(`hash ${JSON.stringify(c)}`, async () => {
    const rng = random();
    const x = gaussian(rng, c.rows * c.d);
    const projData = gaussian(rng, c.d * c.r);
    const proj = be.createBuffer('f32', projData.length);
    be.upload(proj, projData);
    const keys = guarded(be, c.rows, 1, undefined, 'i32');
    be.hash({ x: guarded(be, c.rows, c.d, x).view, rows: c.rows, d: c.d, proj, r: c.r, mode: c.mode, keys: keys.view });
    const got = await readGuarded(be, keys, 'hash keys');
    for (let i = 0; i < c.rows; i++) {
      const allowed = hashKeys(row(x, i, c.d), projData, c.d, c.r, c.mode);
      assert.ok(allowed.includes(got[i]), `row ${i}: key ${got[i]}, expected ${allowed[0]}`);
    }
  });
}
Hash('hash of a known bin: gray code vs inverse Gray code', async () => {
  // x . proj = (-2, 2, 2): bin 0b110, whose gray code is 0b101 and inverse Gray code 0b100.
  const proj = be.createBuffer('f32', 6);
  be.upload(proj, Float32Array.of(-1, 1, 1, -1, 1, 1));
  const x = guarded(be, 1, 2, Float32Array.of(1, 1));
  for (const [mode, want] of [['reference', 5], ['fixed', 4]] as const) {
    const keys = guarded(be, 1, 1, undefined, 'i32');
    be.hash({ x: x.view, rows: 1, d: 2, proj, r: 3, mode, keys: keys.view });
    assert.is((await readGuarded(be, keys, 'keys'))[0], want, mode);
  }
});
Hash.after.each(() => be.releaseAll());

const Sort = suite('webgpu sort');
const sortCases: { count: number; pads: number; numKeys: number }[] = [
  { count: 1000, pads: 24, numKeys: 128 },
  { count: 5000, pads: 120, numKeys: 4 },
  { count: 0, pads: 5, numKeys: 128 },
  { count: 300, pads: 0, numKeys: 65536 },
  { count: 1, pads: 0, numKeys: 2 },
];
for (const c of sortCases) {
  Sort(`sort ${JSON.stringify(c)}`, async () => {
    const rng = random();
    const keys = Int32Array.from({ length: c.count }, () => rng.nextBelow(c.numKeys));
    const total = c.count + c.pads;
    const perm = guarded(be, total, 1, undefined, 'i32');
    be.sort({ keys: guarded(be, c.count, 1, keys).view, count: c.count, pads: c.pads, numKeys: c.numKeys, perm: perm.view });
    const got = Array.from(await readGuarded(be, perm, 'sort perm'));
    const keyOf = (i: number) => (i < c.count ? keys[i] : 0);
    const expected = Array.from({ length: total }, (_, i) => i).sort((a, b) => keyOf(a) - keyOf(b) || a - b);
    assert.equal(got, expected);
  });
}
Sort.after.each(() => be.releaseAll());

const Faults = suite('webgpu faults');
Faults('a validation error surfaces as GPU_ERROR at the next download, and the backend recovers', async () => {
  const rng = random();
  const [n, d] = [8, 16];
  const shared = guarded(be, 2 * n, d, gaussian(rng, 2 * n * d));
  const lse = guarded(be, n, 1);
  // Q and out overlap in one buffer: WebGPU forbids a writable binding aliasing another.
  be.exact({
    q: shared.view, k: shared.view, v: shared.view, nq: n, nk: n, d, dv: d, scale: 0.25, causal: false, causalOffset: 0,
    dst: { out: { buf: shared.buf, row: shared.view.row + 1 }, lse: lse.view, write: 'write' },
  });
  const error = await be.download(lse.buf, 0, 1, new Float32Array(1)).then(() => undefined, (e: unknown) => e);
  assert.ok(error instanceof HyperAttentionError && error.code === 'GPU_ERROR', `expected GPU_ERROR, got ${String(error)}`);
  be.releaseAll();
  await exactCase(F32, { nq: 20, nk: 30, d: 16, dv: 16, causal: true });
});
Faults('f16 storage on a device without shader-f16 is UNSUPPORTED', () => {
  if (be.device.features.has('shader-f16')) return;
  assert.throws(() => new WebGPUBackend(be.device, { storage: 'f16' }), (e: unknown) => e instanceof HyperAttentionError && e.code === 'UNSUPPORTED');
});
Faults.after.each(() => be.releaseAll());

if (WORKGROUP_TILES) {
  const tiles = WORKGROUP_TILES;
  const Tiles = suite('webgpu workgroup-memory tiles (subgroups off)');
  for (const c of exactCases) Tiles(`exact ${JSON.stringify(c)}`, () => exactCase(tiles, c));
  for (const c of blockCases) Tiles(`block ${JSON.stringify(c)}`, () => blockCase(tiles, c));
  for (const c of sampledCases) Tiles(`sampled ${c.label}`, () => sampledCase(tiles, c));
  Tiles.after.each(() => tiles.be.releaseAll());
}

if (F16) {
  const f16 = F16;
  const Half = suite('webgpu f16 storage');
  for (const c of [exactCases[4], exactCases[7], exactCases[10], exactCases[12]]) {
    Half(`f16 exact ${JSON.stringify(c)}`, () => exactCase(f16, c));
  }
  Half(`f16 block ${JSON.stringify(blockCases[0])}`, () => blockCase(f16, blockCases[0]));
  Half(`f16 sampled ${JSON.stringify(sampledCases[1])}`, () => sampledCase(f16, sampledCases[1]));
  Half('f16 copies follow uploads and writes', async () => {
    // K re-uploaded between two ops; then V overwritten by an op (a merge in 'write' mode).
    const rng = random();
    const [n, d] = [40, 32];
    const [q, k1, k2, v] = [0, 1, 2, 3].map(() => gaussian(rng, n * d));
    const hb = f16.be;
    const kBuf = guarded(hb, n, d, k1);
    const vBuf = guarded(hb, n, d, v);
    const run = () => {
      const dest = destination(hb, rng, n, d, 'write');
      hb.exact({
        q: guarded(hb, n, d, q).view, k: kBuf.view, v: vBuf.view, nq: n, nk: n, d, dv: d, scale: 0.2,
        causal: false, causalOffset: 0, dst: dest.dst,
      });
      return dest;
    };
    const expect = (k: Float32Array, vals: Float32Array) => Array.from({ length: n }, (_, i) => rowAttention(
      f16Rounded(row(q, i, d)), Array.from({ length: n }, (_, j) => f16Rounded(row(k, j, d))),
      Array.from({ length: n }, (_, j) => f16Rounded(row(vals, j, d))), d, d, 0.2,
    ));
    const first = run();
    await checkDestination(hb, first, expect(k1, v), d, 'first', f16.tol);
    // Proof that the inputs really went through f16: float32 inputs would match the
    // unrounded float64 result to ~1e-6.
    const lseFirst = await readGuarded(hb, first.lse, 'first lse');
    const unrounded = Array.from({ length: n }, (_, i) => rowAttention(
      row(q, i, d), Array.from({ length: n }, (_, j) => row(k1, j, d)), Array.from({ length: n }, (_, j) => row(v, j, d)), d, d, 0.2,
    ));
    assert.ok(unrounded.some((r, i) => Math.abs(r.lse - lseFirst[i]) > 1e-5), 'f16 rounding visible in lse');
    hb.upload(kBuf.buf, k2, kBuf.view.row * d);
    const second = run();
    await checkDestination(hb, second, expect(k2, v), d, 'after re-uploading K', f16.tol);
    const lse = guarded(hb, n, 1);
    hb.merge({ src: { out: second.out.view, lse: second.lse.view }, dst: { out: vBuf.view, lse: lse.view, write: 'write' }, rows: n, dv: d });
    const vNew = (await readGuarded(hb, vBuf, 'new V')) as Float32Array;
    await checkDestination(hb, run(), expect(k2, vNew), d, 'after an op wrote V', f16.tol);
  });
  Half.after.each(() => f16.be.releaseAll());
} else {
  console.log('webgpu f16 storage: not run, the device has no shader-f16');
}
if (!WORKGROUP_TILES) {
  console.log('webgpu attention with subgroups: not run, the device has no subgroups (the suites above used workgroup tiles)');
}
