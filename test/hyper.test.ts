// HyperAttention on the wasm backend against pieces the test assembles itself: an
// independent LSH and stable sort, a float64 block-diagonal attention, the causal split,
// grouped-query heads, determinism and the order and shapes of the random draws.
import { suite } from './suite.ts';
import * as assert from 'uvu/assert';
import { createCpuBackend } from '../src/cpu/backend.ts';
import { exactAttention, hyperAttention, type DrawRequest } from '../src/index.ts';
import type { KernelMode } from '../src/ops.ts';
import { Xoshiro128, gaussianProjections } from '../src/random.ts';
import type { Tensor } from '../src/tensor.ts';
import { referenceAttention } from './reference.ts';
import { lshKeys } from './lsh.ts';
import { maxAbsError, randomTensor, relativeError } from './util.ts';

const test = suite('hyper');

function stableOrder(keys: ArrayLike<number>): number[] {
  return Array.from(keys, (_, i) => i).sort((a, b) => keys[a] - keys[b] || a - b);
}

test('the hash kernel keys a bin by its Gray code (reference) or its inverse Gray code (fixed)', async () => {
  // With the identity as projections, row x's bin has bit t set exactly when x[t] > 0.
  const r = 3;
  const proj = new Float32Array(r * r);
  for (let t = 0; t < r; t++) proj[t * r + t] = 1;
  const bins = [0, 1, 2, 3, 4, 5, 6, 7];
  const x = Float32Array.from(bins.flatMap((b) => Array.from({ length: r }, (_, t) => ((b >> t) & 1 ? 1 : -1))));
  const expected = { reference: [0, 1, 3, 2, 6, 7, 5, 4], fixed: [0, 1, 3, 2, 7, 6, 4, 5] };
  const backend = await createCpuBackend();
  for (const mode of ['reference', 'fixed'] as const) {
    const xb = backend.createBuffer('f32', x.length);
    const pb = backend.createBuffer('f32', proj.length);
    const kb = backend.createBuffer('i32', bins.length);
    backend.upload(xb, x);
    backend.upload(pb, proj);
    backend.hash({ x: { buf: xb, row: 0 }, rows: bins.length, d: r, proj: pb, r, mode, keys: { buf: kb, row: 0 } });
    const keys = new Int32Array(bins.length);
    await backend.download(kb, 0, bins.length, keys);
    backend.releaseAll();
    assert.equal(Array.from(keys), expected[mode], mode);
  }
});

for (const mode of ['reference', 'fixed'] as const) {
  test(`LSH keys match an independent computation (${mode})`, async () => {
    const backend = await createCpuBackend();
    for (const [rows, d, r] of [[500, 64, 7], [300, 33, 5], [200, 128, 16]]) {
      const x = randomTensor([rows, d], 100 + d).data;
      const proj = gaussianProjections(new Xoshiro128(d), d, r);
      const xb = backend.createBuffer('f32', rows * d);
      const pb = backend.createBuffer('f32', d * r);
      const kb = backend.createBuffer('i32', rows);
      backend.upload(xb, x);
      backend.upload(pb, proj);
      backend.hash({ x: { buf: xb, row: 0 }, rows, d, proj: pb, r, mode, keys: { buf: kb, row: 0 } });
      const keys = new Int32Array(rows);
      await backend.download(kb, 0, rows, keys);
      backend.releaseAll();
      assert.equal(Array.from(keys), Array.from(lshKeys(x, rows, d, proj, r, mode)), `rows ${rows} d ${d} r ${r}`);
    }
  });
}

test('counting sort is stable and puts pads (key 0) after real key-0 rows', async () => {
  const backend = await createCpuBackend();
  const rng = new Xoshiro128(7);
  const count = 1000;
  const pads = 3;
  const keys = new Int32Array(count);
  for (let i = 0; i < count; i++) keys[i] = rng.nextBelow(8); // many ties
  const kb = backend.createBuffer('i32', count);
  const pb = backend.createBuffer('i32', count + pads);
  backend.upload(kb, keys);
  backend.sort({ keys: { buf: kb, row: 0 }, count, pads, numKeys: 128, perm: { buf: pb, row: 0 } });
  const perm = new Int32Array(count + pads);
  await backend.download(pb, 0, count + pads, perm);
  backend.releaseAll();
  const withPads = [...keys, ...new Array(pads).fill(0)];
  assert.equal(Array.from(perm), stableOrder(withPads));
});

/** Block-diagonal attention in float64, assembled from the steps of docs/algorithm.md. */
function blockDiagonal(q: Tensor, k: Tensor, v: Tensor, proj: Float32Array, r: number, b: number, mode: KernelMode) {
  const [, , nq, d] = q.shape;
  const nk = k.shape[2];
  const dv = v.shape[3];
  const qOrder = stableOrder(lshKeys(q.data, nq, d, proj, r, mode));
  const kOrder = stableOrder(lshKeys(k.data, nk, d, proj, r, mode));
  const nb = Math.ceil(nk / b);
  const qb = Math.floor((Math.ceil(nq / b) * b) / nb);
  const out = new Float64Array(nq * dv);
  const lse = new Float64Array(nq);
  for (let blk = 0; blk < nb; blk++) {
    const rows = qOrder.slice(blk * qb, blk === nb - 1 ? nq : (blk + 1) * qb);
    const cols = kOrder.slice(blk * b, (blk + 1) * b);
    const phantom = mode === 'reference' ? b - cols.length : 0;
    // Append the phantom zero keys as real zero rows: logit 0, value 0.
    const kk = new Float32Array((cols.length + phantom) * d);
    const vv = new Float32Array((cols.length + phantom) * dv);
    cols.forEach((j, c) => {
      kk.set(k.data.subarray(j * d, (j + 1) * d), c * d);
      vv.set(v.data.subarray(j * dv, (j + 1) * dv), c * dv);
    });
    const qq = new Float32Array(rows.length * d);
    rows.forEach((i, c) => qq.set(q.data.subarray(i * d, (i + 1) * d), c * d));
    const ref = referenceAttention({ q: qq, k: kk, v: vv, B: 1, H: 1, Hkv: 1, nq: rows.length, nk: cols.length + phantom, d, dv });
    rows.forEach((i, c) => {
      out.set(ref.out.subarray(c * dv, (c + 1) * dv), i * dv);
      lse[i] = ref.lse[c];
    });
  }
  return { out, lse };
}

for (const mode of ['reference', 'fixed'] as const) {
  test(`sampleSize 0 equals the block-diagonal attention assembled here (${mode})`, async () => {
    const [n, d, b, r] = [1000, 32, 128, 7]; // n not a multiple of b: a short last block
    const q = randomTensor([1, 1, n, d], 41);
    const k = randomTensor([1, 1, n, d], 42);
    const v = randomTensor([1, 1, n, d], 43);
    const proj = gaussianProjections(new Xoshiro128(44), d, r);
    const res = await hyperAttention(q, k, v, { blockSize: b, sampleSize: 0, minSeqLen: 0, projections: proj, mode });
    const ref = blockDiagonal(q, k, v, proj, r, b, mode);
    assert.ok(maxAbsError(res.out.data, ref.out) < 2e-5, `out error ${maxAbsError(res.out.data, ref.out)}`);
    assert.ok(maxAbsError(res.lse.data, ref.lse) < 2e-5, `lse error ${maxAbsError(res.lse.data, ref.lse)}`);
  });
}

test('blockSize >= n gives exact attention (fixed mode; reference too when blockSize == n)', async () => {
  const n = 700;
  const q = randomTensor([1, 2, n, 64], 51);
  const k = randomTensor([1, 2, n, 64], 52);
  const v = randomTensor([1, 2, n, 64], 53);
  const exact = await exactAttention(q, k, v);
  for (const [blockSize, mode] of [[1024, 'fixed'], [n, 'reference']] as const) {
    const res = await hyperAttention(q, k, v, { blockSize, minSeqLen: 0, mode });
    assert.ok(maxAbsError(res.out.data, exact.out.data) < 1e-5, `${mode} b=${blockSize}`);
    assert.ok(maxAbsError(res.lse.data, exact.lse.data) < 1e-5, `${mode} b=${blockSize} lse`);
  }
});

/** Merge of docs/algorithm.md, in float32 like the kernels. */
function mergeRow(o1: Float32Array, l1: number, o2: Float32Array, l2: number, mode: KernelMode): [Float32Array, number] {
  const c = Math.fround(1 / (1 + Math.exp(l2 - l1)));
  const out = o1.map((x, i) => c * x + (1 - c) * o2[i]);
  const lse = mode === 'reference'
    ? l1 - Math.log(c + 2 ** -23)
    : Math.max(l1, l2) + Math.log1p(Math.exp(-Math.abs(l1 - l2)));
  return [out, lse];
}

for (const mode of ['reference', 'fixed'] as const) {
  test(`causal recursion equals its pieces assembled here (odd n, ${mode})`, async () => {
    // n = 1201, minSeqLen 601: one split (pad to 1202, halves of 601 rows), leaves exact.
    const [n, d, h] = [1201, 32, 601];
    const opts = { blockSize: 128, sampleSize: 64, mode, seed: 5 };
    const q = randomTensor([1, 1, n, d], 61);
    const k = randomTensor([1, 1, n, d], 62);
    const v = randomTensor([1, 1, n, d], 63);
    const draws: Int32Array[] = [];
    const full = await hyperAttention(q, k, v, {
      ...opts, causal: true, minSeqLen: h,
      sampler: (req: DrawRequest) => {
        const s = new Int32Array(req.batch * req.heads * req.count);
        const rng = new Xoshiro128(99 + req.index);
        for (let i = 0; i < s.length; i++) s[i] = rng.nextBelow(req.high);
        draws.push(s);
        return s;
      },
    });
    assert.is(draws.length, 1);
    const rows = (t: Tensor, from: number, to: number, padTo = to - from): Tensor => {
      const data = new Float32Array(padTo * d);
      data.set(t.data.subarray(from * d, to * d));
      return { data, shape: [1, 1, padTo, d] };
    };
    const upper = await exactAttention(rows(q, 0, h), rows(k, 0, h), rows(v, 0, h), { causal: true });
    const lowerDiag = await exactAttention(rows(q, h, n), rows(k, h, n), rows(v, h, n), { causal: true });
    // Reference mode hashes and sorts the zero pad row with the real queries; fixed leaves it out.
    const qLow = mode === 'reference' ? rows(q, h, n, h) : rows(q, h, n);
    const lowerLeft = await hyperAttention(qLow, rows(k, 0, h), rows(v, 0, h), {
      ...opts, minSeqLen: 0, sampler: () => draws[0],
    });
    const dv = d;
    assert.ok(maxAbsError(full.out.data.subarray(0, h * dv), upper.out.data) < 1e-6, 'upper rows');
    for (let i = 0; i < n - h; i++) {
      const [o, l] = mergeRow(
        lowerDiag.out.data.subarray(i * dv, (i + 1) * dv), lowerDiag.lse.data[i],
        lowerLeft.out.data.subarray(i * dv, (i + 1) * dv), lowerLeft.lse.data[i], mode,
      );
      const got = full.out.data.subarray((h + i) * dv, (h + i + 1) * dv);
      assert.ok(maxAbsError(got, o) < 1e-5, `row ${h + i} out`);
      assert.ok(Math.abs(full.lse.data[h + i] - l) < 1e-5, `row ${h + i} lse ${full.lse.data[h + i]} vs ${l}`);
    }
  });
}

test('grouped-query attention equals repeating K/V heads', async () => {
  const [B, H, Hkv, n, d] = [2, 4, 2, 1500, 32];
  const q = randomTensor([B, H, n, d], 71);
  const k = randomTensor([B, Hkv, n, d], 72);
  const v = randomTensor([B, Hkv, n, d], 73);
  const repeat = (t: Tensor): Tensor => {
    const data = new Float32Array(B * H * n * d);
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < H; h++) {
        const src = (b * Hkv + Math.floor(h / (H / Hkv))) * n * d;
        data.set(t.data.subarray(src, src + n * d), (b * H + h) * n * d);
      }
    }
    return { data, shape: [B, H, n, d] };
  };
  // Unchecked, so that the plans' own results are compared (a checked head may end exact):
  // a key-value head's LSH order and buckets, kept for its query heads, are the ones each
  // of them would compute.
  for (const mode of ['accurate', 'fixed'] as const) {
    for (const causal of [false, true]) {
      const opts = { causal, mode, blockSize: 128, sampleSize: 64, minSeqLen: 512, seed: 3, tolerance: Infinity, ...(mode === 'accurate' ? { lshRounds: 2 } : {}) };
      const gqa = await hyperAttention(q, k, v, opts);
      const full = await hyperAttention(q, repeat(k), repeat(v), opts);
      assert.equal(gqa.out.data, full.out.data, `${mode} causal=${causal}`);
      assert.equal(gqa.lse.data, full.lse.data, `${mode} causal=${causal} lse`);
    }
  }
});

test('same seed, inputs and options give bit-identical output; another seed does not', async () => {
  const shape = [1, 2, 2000, 64];
  const [q, k, v] = [randomTensor(shape, 81), randomTensor(shape, 82), randomTensor(shape, 83)];
  // A window shorter than n, so that the remainder (and so the seed) matters.
  const opts = { causal: true, minSeqLen: 512, blockSize: 128, sampleSize: 128, window: 256, seed: 42, tolerance: Infinity };
  const a = await hyperAttention(q, k, v, opts);
  const b = await hyperAttention(q, k, v, opts);
  const c = await hyperAttention(q, k, v, { ...opts, seed: 43 });
  assert.equal(a.out.data, b.out.data);
  assert.equal(a.lse.data, b.lse.data);
  assert.not.equal(a.out.data, c.out.data);
});

test('draw order and shapes follow docs/algorithm.md (deepest causal level first)', async () => {
  const record = async (n: number) => {
    const calls: Omit<DrawRequest, 'index'>[] = [];
    const shape = [1, 1, n, 4];
    await hyperAttention(randomTensor(shape, 1), randomTensor(shape, 2), randomTensor(shape, 3), {
      causal: true, minSeqLen: 1024, mode: 'reference',
      sampler: ({ index, ...rest }) => {
        assert.is(index, calls.length);
        calls.push(rest);
        return new Int32Array(rest.batch * rest.heads * rest.count);
      },
    });
    return calls.map((c) => [c.batch, c.heads, c.count, c.high]);
  };
  assert.equal(await record(8192), [[1, 4, 256, 1024], [1, 2, 256, 2048], [1, 1, 256, 4096]]);
  assert.equal(await record(4097), [[1, 2, 256, 1025], [1, 1, 256, 2049]]);
});

test('sharp attention: the block part finds the key, the sampled residual reduces the error', async () => {
  // Each query is twice one key, so most of its mass sits on that key and LSH puts the
  // pair in the same block. (On unstructured noise the exact output is a near-zero
  // average and any sampling looks bad relative to it.)
  const [n, d] = [4096, 64];
  const k = randomTensor([1, 1, n, d], 92);
  const q = { data: k.data.map((x) => 2 * x), shape: k.shape };
  const v = randomTensor([1, 1, n, d], 94);
  const exact = await exactAttention(q, k, v);
  for (const mode of ['reference', 'fixed'] as const) {
    const err = async (sampleSize: number) =>
      relativeError((await hyperAttention(q, k, v, { minSeqLen: 1024, mode, sampleSize })).out.data, exact.out.data);
    const blockOnly = await err(0);
    const full = await err(256);
    console.log(`  sharp attention, ${mode}: relative error ${full.toFixed(4)} (block part alone ${blockOnly.toFixed(4)})`);
    assert.ok(full < 0.05, `${mode}: relative error ${full}`);
    assert.ok(full < blockOnly, `${mode}: sampling did not help (${full} vs ${blockOnly})`);
  }
});

test('progress comes during a call, not once per head: monotonic, ending at total', async () => {
  const shape = [1, 1, 4096, 64];
  const [q, k, v] = [randomTensor(shape, 1), randomTensor(shape, 2), randomTensor(shape, 3)];
  const calls = [
    (onProgress: (p: { done: number; total: number }) => void) => exactAttention(q, k, v, { backend: 'cpu', onProgress }),
    (onProgress: (p: { done: number; total: number }) => void) => hyperAttention(q, k, v, { backend: 'cpu', minSeqLen: 0, tolerance: Infinity, onProgress }),
    (onProgress: (p: { done: number; total: number }) => void) =>
      hyperAttention(q, k, v, { backend: 'cpu', causal: true, minSeqLen: 1024, mode: 'reference', onProgress }),
  ];
  for (const [index, call] of calls.entries()) {
    const seen: { done: number; total: number }[] = [];
    await call((p) => seen.push(p));
    assert.ok(seen.length > 2, `call ${index}: ${seen.length} progress reports for one head`);
    for (let i = 1; i < seen.length; i++) {
      assert.ok(seen[i].done > seen[i - 1].done && seen[i].total === seen[0].total, `call ${index}: report ${i}`);
    }
    assert.is(seen[seen.length - 1].done, seen[0].total, `call ${index} ends at total`);
  }
});
