// Causal attention with fewer queries than keys, bottom-right aligned: query row i sits at
// key position p = nk - nq + i and sees keys j <= p (chunked prefill, draft verification,
// decoding at nq = 1). Exact attention on WebAssembly against the float64 reference; the
// accurate and the authors' modes against the same rows of a call with as many queries as
// keys (their plans follow key positions, so the chunk's rows count the same keys).
import { suite } from './suite.ts';
import * as assert from 'uvu/assert';
import { HyperAttentionError } from '../src/errors.ts';
import { exactAttention, explain, hyperAttention, type HyperOptions } from '../src/index.ts';
import { resolveExactOptions, resolveHyperOptions } from '../src/options.ts';
import { buildPlan, causalPairs, planParams, type AuthorsPlan } from '../src/plan.ts';
import { workOf } from '../src/scheduler/cost.ts';
import type { AttentionShape, Tensor } from '../src/tensor.ts';
import { referenceAttention } from './reference.ts';
import { maxAbs, maxAbsError, randomTensor, relativeError } from './util.ts';

const test = suite('causal offset');

/** [B, H, nq, d] rows [from, from + nq) of each head of x ([B, H, n, d]). */
function lastRows(x: Tensor, nq: number): Tensor {
  const [B, H, n, d] = x.shape;
  const data = new Float32Array(B * H * nq * d);
  for (let h = 0; h < B * H; h++) data.set(x.data.subarray((h * n + n - nq) * d, (h + 1) * n * d), h * nq * d);
  return { data, shape: [B, H, nq, d] };
}

/**
 * Float64 exact attention of query rows `rows` (of each head) of a causal call of nq queries
 * against nk keys, bottom-right aligned: [heads, rows.length, dv] and [heads, rows.length].
 */
function referenceAt(q: Tensor, k: Tensor, v: Tensor, rows: number[]) {
  const [B, H, nq, d] = q.shape;
  const [, Hkv, nk] = k.shape;
  const dv = v.shape[3];
  const out = new Float64Array(B * H * rows.length * dv);
  const lse = new Float64Array(B * H * rows.length);
  for (let h = 0; h < B * H; h++) {
    const kv = Math.floor(h / H) * Hkv + Math.floor((h % H) / (H / Hkv));
    rows.forEach((i, r) => {
      const keys = nk - nq + i + 1;
      const one = referenceAttention({
        q: q.data.subarray((h * nq + i) * d, (h * nq + i + 1) * d),
        k: k.data.subarray(kv * nk * d, (kv * nk + keys) * d), v: v.data.subarray(kv * nk * dv, (kv * nk + keys) * dv),
        B: 1, H: 1, Hkv: 1, nq: 1, nk: keys, d, dv,
      });
      out.set(one.out, (h * rows.length + r) * dv);
      lse[h * rows.length + r] = one.lse[0];
    });
  }
  return { out, lse };
}

/** The result's rows `rows` of each head, as referenceAt lays them out. */
function pick(x: Float32Array, heads: number, n: number, width: number, rows: number[]): Float32Array {
  const picked = new Float32Array(heads * rows.length * width);
  for (let h = 0; h < heads; h++) {
    rows.forEach((i, r) => picked.set(x.subarray((h * n + i) * width, (h * n + i + 1) * width), (h * rows.length + r) * width));
  }
  return picked;
}

/**
 * RMS row error over the RMS row norm of V (bench/error.ts, relToV): on random inputs
 * attention is diffuse and exact rows are short, so the relative Frobenius error says little.
 */
function errorToV(out: Float32Array, ref: Float64Array, v: Float32Array, dv: number): number {
  let diff = 0;
  for (let i = 0; i < ref.length; i++) diff += (out[i] - ref[i]) ** 2;
  let norm = 0;
  for (let i = 0; i < v.length; i++) norm += v[i] ** 2;
  return Math.sqrt(diff / (ref.length / dv)) / Math.sqrt(norm / (v.length / dv));
}

/** Evenly spaced rows of [0, n), the first and the last among them. */
function spread(n: number, count: number): number[] {
  if (n <= count) return Array.from({ length: n }, (_, i) => i);
  return [...new Set(Array.from({ length: count }, (_, t) => Math.round((t * (n - 1)) / (count - 1))))];
}

function inputs(B: number, H: number, Hkv: number, nq: number, nk: number, d: number, seed: number) {
  return {
    q: randomTensor([B, H, nq, d], seed),
    k: randomTensor([B, Hkv, nk, d], seed + 1),
    v: randomTensor([B, Hkv, nk, d], seed + 2),
  };
}

// Exact attention: the tolerances of test/exact.test.ts (1e-5 relative, 1e-5 max|V| absolute,
// lse 1e-5 of its size), on every row up to 64 rows, else on 64 spread rows.
let seed = 100;
const exactCases: [number, number, number][] = [
  [1, 8192, 64], [3, 4099, 64], [17, 1000, 32], [512, 8192, 64], [2048, 8192, 32],
  // odd sizes: one query and one key, one query fewer than keys, nothing a multiple of a block
  [1, 1, 16], [254, 255, 40], [37, 1001, 24], [999, 1000, 16],
];
for (const [nq, nk, d] of exactCases) {
  test(`exact nq ${nq}, nk ${nk}, d ${d}: float64 reference`, async () => {
    const { q, k, v } = inputs(1, 2, 1, nq, nk, d, (seed += 3));
    const r = await exactAttention(q, k, v, { causal: true, backend: 'cpu' });
    const rows = spread(nq, 64);
    const ref = referenceAt(q, k, v, rows);
    const out = pick(r.out.data, 2, nq, d, rows);
    const lse = pick(r.lse.data, 2, nq, 1, rows);
    const rel = relativeError(out, ref.out);
    assert.ok(rel <= 1e-5, `relative error ${rel}`);
    assert.ok(maxAbsError(out, ref.out) <= 1e-5 * maxAbs(v.data), `max abs error ${maxAbsError(out, ref.out)}`);
    assert.ok(maxAbsError(lse, ref.lse) <= 1e-5 * Math.max(1, maxAbs(ref.lse)), `lse error ${maxAbsError(lse, ref.lse)}`);
  });
}

test('exact: decoding (nq = 1) sees every key, as non-causal attention does', async () => {
  const { q, k, v } = inputs(1, 4, 2, 1, 3001, 64, 7);
  const causal = await exactAttention(q, k, v, { causal: true, backend: 'cpu' });
  const full = await exactAttention(q, k, v, { backend: 'cpu' });
  assert.ok(maxAbsError(causal.out.data, full.out.data) <= 1e-6, 'out');
  assert.ok(maxAbsError(causal.lse.data, full.lse.data) <= 1e-6, 'lse');
});

test('exact: a chunk of queries gives the same rows as the whole causal call', async () => {
  const { q, k, v } = inputs(1, 2, 2, 1500, 1500, 32, 11);
  const whole = await exactAttention(q, k, v, { causal: true, backend: 'cpu' });
  const chunk = await exactAttention(lastRows(q, 300), k, v, { causal: true, backend: 'cpu' });
  assert.ok(maxAbsError(chunk.out.data, lastRows({ data: whole.out.data, shape: [1, 2, 1500, 32] }, 300).data) <= 1e-6);
});

test('more queries than keys with causal: INVALID_SHAPE, saying why', async () => {
  const { q, k, v } = inputs(1, 1, 1, 65, 64, 16, 3);
  for (const call of [exactAttention(q, k, v, { causal: true }), hyperAttention(q, k, v, { causal: true })]) {
    try {
      await call;
      assert.unreachable('expected INVALID_SHAPE');
    } catch (error) {
      assert.instance(error, HyperAttentionError);
      assert.is((error as HyperAttentionError).code, 'INVALID_SHAPE');
      assert.match((error as Error).message, /at least as many keys as queries \(the queries are the last nq key positions\)/);
    }
  }
});

/**
 * hyperAttention of the last nq queries against nk keys next to the same rows of the
 * square causal call (nk queries, the same keys), with the same options; their errors on
 * `count` spread rows of the chunk against the float64 reference.
 */
async function chunkAndSquare(nq: number, nk: number, d: number, options: HyperOptions, seed0: number, count = 48) {
  const { q, k, v } = inputs(1, 2, 1, nk, nk, d, seed0);
  const chunkQ = lastRows(q, nq);
  const o: HyperOptions = { causal: true, backend: 'cpu', tolerance: Infinity, seed: 5, ...options };
  const square = await hyperAttention(q, k, v, o);
  const chunk = await hyperAttention(chunkQ, k, v, o);
  const squareRows = lastRows({ data: square.out.data, shape: [1, 2, nk, d] }, nq).data;
  const rows = spread(nq, count);
  const ref = referenceAt(chunkQ, k, v, rows);
  return {
    chunk: chunk.out.data,
    square: squareRows,
    chunkError: errorToV(pick(chunk.out.data, 2, nq, d, rows), ref.out, v.data, d),
    squareError: errorToV(pick(squareRows, 2, nq, d, rows), ref.out, v.data, d),
  };
}

// Without samples, the accurate mode's parts are all exact, and a chunk's row counts the
// keys the same row of the square call does (window, sinks, heavy columns from the same
// last probe rows, the same buckets): the same result, up to float32 summation.
for (const [nq, nk] of [[512, 6144], [300, 4500], [4500, 4500]] as const) {
  test(`accurate, no samples, nq ${nq}, nk ${nk}: the square call's rows`, async () => {
    const r = await chunkAndSquare(nq, nk, 32, { minSeqLen: 256, sampleSize: 0, window: 256 }, 20 + nq);
    assert.ok(maxAbsError(r.chunk, r.square) <= 1e-5, `max abs difference ${maxAbsError(r.chunk, r.square)}`);
  });
}

// With the window over every key, the accurate mode is exact attention: odd sizes.
for (const [nq, nk] of [[1, 1], [1, 700], [699, 700], [37, 1001], [255, 257]] as const) {
  test(`accurate, window over every key, nq ${nq}, nk ${nk}: float64 reference`, async () => {
    const { q, k, v } = inputs(1, 2, 1, nq, nk, 24, 40 + nq);
    const r = await hyperAttention(q, k, v, {
      causal: true, backend: 'cpu', tolerance: Infinity, minSeqLen: 0, window: nk, heavyKeys: 3, probeQueries: 5,
    });
    const rows = spread(nq, 64);
    const ref = referenceAt(q, k, v, rows);
    const out = pick(r.out.data, 2, nq, 24, rows);
    assert.ok(maxAbsError(out, ref.out) <= 1e-4 * maxAbs(v.data), `max abs error ${maxAbsError(out, ref.out)}`);
    assert.ok(maxAbsError(pick(r.lse.data, 2, nq, 1, rows), ref.lse) <= 1e-4 * Math.max(1, maxAbs(ref.lse)), 'lse');
  });
}

// The default accurate mode (samples drawn per segment of rows, so a chunk's draws differ
// from the square call's): the chunk's error about as large as the square call's rows'.
for (const nq of [512, 2048]) {
  test(`accurate default, nq ${nq}, nk 8192: error as the square call's rows`, async () => {
    const r = await chunkAndSquare(nq, 8192, 64, {}, 60 + nq);
    assert.ok(r.chunkError <= 1.25 * r.squareError + 0.005, `chunk error ${r.chunkError}, square ${r.squareError}`);
  });
}

// The authors' plan: the steps the chunk's rows take in the square call's recursion while
// they lie in the lower half of a level (2048 of 8192: two levels, then the square of the
// chunk); queries in both halves (3000 of 4096): the recursion over the chunk's square and
// one non-causal step against the keys before it.
for (const [mode, nq, nk] of [['fixed', 2048, 8192], ['reference', 2048, 8192], ['fixed', 3000, 4096]] as const) {
  test(`authors' ${mode} mode, nq ${nq}, nk ${nk}, minSeqLen 512: error as the square call's rows`, async () => {
    const r = await chunkAndSquare(nq, nk, 64, { mode, minSeqLen: 512 }, 80);
    assert.ok(r.chunkError <= 1.25 * r.squareError + 0.005, `chunk error ${r.chunkError}, square ${r.squareError}`);
  });
}

test('verified call (tolerance): checks rows at their key positions, meets the tolerance', async () => {
  const { q, k, v } = inputs(1, 2, 1, 1024, 6144, 32, 90);
  const r = await hyperAttention(q, k, v, { causal: true, backend: 'cpu', minSeqLen: 256, tolerance: 0.1 });
  const rows = spread(1024, 48);
  const ref = referenceAt(q, k, v, rows);
  const error = errorToV(pick(r.out.data, 2, 1024, 32, rows), ref.out, v.data, 32);
  assert.ok(error <= 0.1, `error ${error}`);
});

test('verified call: check rows are exact over the keys up to their positions', async () => {
  // The window holds every key, so the result is exact: the check rows' own exact results
  // must then agree with it, which they do only if they see the keys up to their positions.
  const { q, k, v } = inputs(1, 2, 1, 300, 1100, 32, 93);
  const r = await hyperAttention(q, k, v, { causal: true, backend: 'cpu', minSeqLen: 0, window: 1100, tolerance: 1e9, checkRows: 40 });
  const heads = r.verification!.heads;
  assert.is(heads.length, 2);
  for (const h of heads) assert.ok(h.plan === 'accurate' && h.error <= 1e-5, `head: ${JSON.stringify(h)}`);
});

test('hyperAttention decoding (nq = 1) up to minSeqLen keys: exact, as non-causal', async () => {
  const { q, k, v } = inputs(1, 2, 1, 1, 4096, 32, 95);
  const causal = await hyperAttention(q, k, v, { causal: true, backend: 'cpu' });
  const full = await exactAttention(q, k, v, { backend: 'cpu' });
  assert.ok(maxAbsError(causal.out.data, full.out.data) <= 1e-6, 'out');
});

test('plans and prices: the pairs of causal exact attention, the authors\' steps, explain()', async () => {
  const shape: AttentionShape = { B: 1, H: 8, Hkv: 8, nq: 2048, nk: 16384, d: 128, dv: 128 };
  assert.is(causalPairs(2048, 16384), 2048 * 14336 + (2048 * 2049) / 2);
  assert.is(causalPairs(16384, 16384), (16384 * 16385) / 2);
  const exactParams = planParams(shape, resolveExactOptions({ causal: true }), undefined);
  const exact = buildPlan(exactParams);
  assert.equal((exact as AuthorsPlan).leaves, [{ start: 0, rows: 2048, kStart: 0, keys: 16384 }]);
  const [step] = workOf(shape, exactParams, exact, 'cpu').filter((w) => w.op === 'exact');
  assert.is(step.units, 8 * causalPairs(2048, 16384) * 2 * 256);
  // The authors' plan at minSeqLen 2048: the square call's first three levels (keys
  // [0, 8192), [8192, 12288), [12288, 14336)), then the chunk's own 2048-key exact leaf.
  const o = resolveHyperOptions({ causal: true, mode: 'fixed', minSeqLen: 2048 });
  const authors = buildPlan(planParams(shape, o, o)) as AuthorsPlan;
  assert.equal(authors.steps.map((s) => [s.kind, s.subs[0].kStart, s.nk]), [
    ['hyper', 0, 8192], ['hyper', 8192, 4096], ['hyper', 12288, 2048],
  ]);
  assert.equal(authors.leaves, [{ start: 0, rows: 2048, kStart: 14336, keys: 2048 }]);
  // explain() plans a chunk, and prices its exact candidate at the chunk's pairs.
  const plan = await explain({ q: [1, 8, 2048, 128], k: [1, 8, 16384, 128], v: [1, 8, 16384, 128] }, { causal: true, backend: 'cpu' });
  assert.is(plan.shape.nq, 2048);
  assert.ok(plan.candidates.length > 0 && plan.predictedMs > 0);
});
