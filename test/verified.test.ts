// Verified attention (src/verified.ts): the error each head's check rows measure, its
// bound at the stated confidence, the ladder of plans a head climbs, exact attention for
// a head that cannot meet the tolerance, and the options.
import { suite } from './suite.ts';
import * as assert from 'uvu/assert';
import { exactAttention, hyperAttention, HyperAttentionError, type HyperOptions } from '../src/index.ts';
import { checkRowsOf, headError } from '../src/verified.ts';
import { Xoshiro128 } from '../src/random.ts';
import type { Tensor } from '../src/tensor.ts';
import { WORKLOADS, type WorkloadName } from '../bench/workloads.ts';
import { maxAbsError, randomTensor, relativeError } from './util.ts';

const test = suite('verified attention');

const n = 4096;
const d = 32;
const cpu: HyperOptions = { backend: 'cpu', threads: 1 };

/** Head h of a [1, H, n, d] tensor. */
function headOf(t: Tensor, h: number): Float32Array {
  const [, , rows, width] = t.shape;
  return (t.data as Float32Array).subarray(h * rows * width, (h + 1) * rows * width);
}

/** Heads side by side: [1, parts, n, d] from single-head tensors. */
function stack(parts: Tensor[]): Tensor {
  const [, , rows, width] = parts[0].shape;
  const data = new Float32Array(parts.length * rows * width);
  parts.forEach((p, i) => data.set(p.data as Float32Array, i * rows * width));
  return { data, shape: [1, parts.length, rows, width] };
}

function workload(name: WorkloadName, seed: number, causal = false) {
  return WORKLOADS[name].generate({ B: 1, H: 1, n, d, seed, causal });
}

test('check rows: one per stratum, never a row to avoid, ascending', () => {
  const rng = new Xoshiro128(7);
  for (const [rows, count] of [[4096, 64], [1000, 33], [40, 40], [4097, 256]]) {
    const avoid = new Set(Array.from({ length: 32 }, (_, t) => Math.floor(((t + 0.5) * rows) / 32)));
    const picked = checkRowsOf(rng, rows, count, count === rows ? new Set() : avoid);
    assert.is(picked.length, count);
    for (let t = 0; t < count; t++) {
      assert.ok(picked[t] >= Math.floor((t * rows) / count) && picked[t] < Math.floor(((t + 1) * rows) / count), `row ${picked[t]} in stratum ${t}`);
      if (count < rows) assert.not.ok(avoid.has(picked[t]), `row ${picked[t]} is a probe row`);
    }
  }
});

test('headError: exact rows give 0, a known error its ratio, non-finite output an infinite error', () => {
  const dv = 3;
  const rows = Int32Array.from([0, 2]);
  const exact = Float32Array.from([1, 0, 0, 0, 2, 0]);
  const out = new Float32Array(4 * dv);
  out.set([1, 0, 0], 0);
  out.set([0, 2, 0], 2 * dv);
  assert.equal(headError(out, exact, rows, dv), { error: 0, bound: 0 });
  out[2 * dv + 1] = 1; // error 1 on a row of norm 2: relF^2 = 1 / (1 + 4)
  const m = headError(out, exact, rows, dv);
  assert.ok(Math.abs(m.error - Math.sqrt(1 / 5)) < 1e-12);
  assert.ok(m.bound >= m.error);
  out[0] = NaN;
  assert.equal(headError(out, exact, rows, dv), { error: Infinity, bound: Infinity });
});

test('the bound holds the realized error at its stated rate over fresh heads and seeds', async () => {
  // tolerance 1e9: every head checked, none moved up, so the bound is the first plan's.
  let covered = 0;
  let trials = 0;
  let within2x = 0;
  let sizeable = 0;
  const names: WorkloadName[] = ['sink', 'columns', 'local', 'wide-local', 'partial-retrieval', 'retrieval'];
  for (const name of names) {
    for (let seed = 1; seed <= 6; seed++) {
      const causal = seed % 2 === 0;
      const { q, k, v } = workload(name, 100 * seed + names.indexOf(name), causal);
      const [hyper, exact] = await Promise.all([
        hyperAttention(q, k, v, { ...cpu, causal, tolerance: 1e9, seed, minSeqLen: 2048 }),
        exactAttention(q, k, v, { ...cpu, causal }),
      ]);
      const head = hyper.verification!.heads[0];
      assert.is(head.plan, 'accurate');
      const realized = relativeError(hyper.out.data, exact.out.data);
      trials++;
      if (realized <= head.bound) covered++;
      if (realized >= 0.01) {
        sizeable++;
        if (head.error <= 2 * realized && head.error >= realized / 2) within2x++;
      }
    }
  }
  // Stated: 95%. Over 36 heads a true 95% gives fewer than 31 with probability about 1%.
  assert.ok(covered >= 31, `bound held on ${covered} of ${trials} heads`);
  assert.ok(within2x >= 0.85 * sizeable, `estimate within 2x on ${within2x} of ${sizeable} heads`);
});

test('a head that cannot meet the tolerance runs exact and equals exactAttention', async () => {
  const { q, k, v } = workload('gaussian', 5);
  const [hyper, exact] = await Promise.all([
    hyperAttention(q, k, v, { ...cpu, tolerance: 0.05 }),
    exactAttention(q, k, v, cpu),
  ]);
  const head = hyper.verification!.heads[0];
  assert.is(head.plan, 'exact');
  assert.is(head.error, 0);
  assert.ok(head.tried[0].error > 0.05, `the first plan measured ${head.tried[0].error}`);
  assert.ok(maxAbsError(hyper.out.data, exact.out.data) < 1e-5);
  assert.ok(maxAbsError(hyper.lse.data, exact.lse.data) < 1e-5);
});

test('tolerance Infinity runs the plan alone; checks leave every output bit as it was', async () => {
  const { q, k, v } = workload('columns', 9);
  const plain = await hyperAttention(q, k, v, { ...cpu, tolerance: Infinity });
  const checked = await hyperAttention(q, k, v, { ...cpu, tolerance: 1e9 });
  assert.is(plain.verification, undefined);
  assert.equal(checked.verification!.heads.map((h) => h.plan), ['accurate']);
  assert.ok(plain.out.data.every((x, i) => Object.is(x, checked.out.data[i])));
  assert.ok(plain.lse.data.every((x, i) => Object.is(x, checked.lse.data[i])));
});

test('heads of one call get their own plans: a sink head stays, a diffuse head runs exact', async () => {
  const sink = workload('sink', 11);
  const diffuse = workload('gaussian', 12);
  const q = stack([sink.q, diffuse.q]);
  const k = stack([sink.k, diffuse.k]);
  const v = stack([sink.v, diffuse.v]);
  const [mixed, alone, exact] = await Promise.all([
    hyperAttention(q, k, v, { ...cpu, tolerance: 0.1 }),
    hyperAttention(q, k, v, { ...cpu, tolerance: Infinity }),
    exactAttention(q, k, v, cpu),
  ]);
  const [h0, h1] = mixed.verification!.heads;
  assert.equal([h0.batch, h0.head, h1.batch, h1.head], [0, 0, 0, 1]);
  assert.is(h0.plan, 'accurate');
  assert.ok(h0.bound <= 0.1);
  assert.is(h1.plan, 'exact');
  assert.ok(headOf(mixed.out, 0).every((x, i) => Object.is(x, headOf(alone.out, 0)[i])), 'the sink head is the plan\'s own result');
  assert.ok(maxAbsError(headOf(mixed.out, 1), headOf(exact.out, 1)) < 1e-5);
  assert.ok(relativeError(headOf(mixed.out, 0), headOf(exact.out, 0)) <= 0.1);
});

test('a head between the plan and exact climbs to the wide rung (16k keys)', async () => {
  // At 16k keys the wide rung fits the ladder's budget; the columns head misses 0.06 with
  // the first plan (about 0.08) and meets it with the wide one.
  const { q, k, v } = WORKLOADS.columns.generate({ B: 1, H: 1, n: 16384, d: 64, seed: 1 });
  const [hyper, exact] = await Promise.all([
    hyperAttention(q, k, v, { backend: 'cpu', tolerance: 0.07 }),
    exactAttention(q, k, v, { backend: 'cpu' }),
  ]);
  const head = hyper.verification!.heads[0];
  assert.equal(head.tried.map((t) => t.plan).slice(0, 2), ['accurate', 'accurate-wide']);
  assert.ok(head.tried[0].bound > 0.07);
  const realized = relativeError(hyper.out.data, exact.out.data);
  if (head.plan === 'accurate-wide') assert.ok(realized <= 0.07, `wide rung realized ${realized}`);
  else assert.ok(realized < 1e-5);
});

test('tolerance 0 runs every head exact; causal checks follow positions', async () => {
  const q = randomTensor([1, 2, n, d], 21);
  const k = randomTensor([1, 2, n, d], 22);
  const v = randomTensor([1, 2, n, d], 23);
  const [zero, exact] = await Promise.all([
    hyperAttention(q, k, v, { ...cpu, causal: true, tolerance: 0 }),
    exactAttention(q, k, v, { ...cpu, causal: true }),
  ]);
  assert.equal(zero.verification!.heads.map((h) => h.plan), ['exact', 'exact']);
  assert.ok(maxAbsError(zero.out.data, exact.out.data) < 1e-6);
  const { q: cq, k: ck, v: cv } = workload('local', 31, true);
  const [causal, causalExact] = await Promise.all([
    hyperAttention(cq, ck, cv, { ...cpu, causal: true, tolerance: 1e9, minSeqLen: 2048 }),
    exactAttention(cq, ck, cv, { ...cpu, causal: true }),
  ]);
  const head = causal.verification!.heads[0];
  const realized = relativeError(causal.out.data, causalExact.out.data);
  assert.ok(head.error <= 2 * realized + 1e-3 && head.error >= realized / 2 - 1e-3, `estimate ${head.error}, realized ${realized}`);
});

test('progress runs over every pass and ends at its total', async () => {
  const { q, k, v } = workload('gaussian', 41);
  const seen: { done: number; total: number }[] = [];
  const r = await hyperAttention(q, k, v, { ...cpu, tolerance: 0.1, onProgress: (p) => seen.push(p) });
  assert.is(r.verification!.heads[0].plan, 'exact');
  for (let i = 1; i < seen.length; i++) assert.ok(seen[i].done >= seen[i - 1].done, 'done never decreases');
  const last = seen[seen.length - 1];
  assert.is(last.done, last.total);
});

test('tolerance and checkRows: bad values are typed errors', async () => {
  const q = randomTensor([1, 1, 64, 8], 1);
  for (const tolerance of [NaN, -0.1, '0.1', 1n, null, [0.1], -Infinity]) {
    const error = await hyperAttention(q, q, q, { tolerance } as unknown as HyperOptions).then(() => undefined, (e: unknown) => e);
    assert.instance(error, HyperAttentionError, `tolerance ${String(tolerance)}`);
    assert.is((error as HyperAttentionError).code, 'INVALID_OPTION');
  }
  for (const checkRows of [0, 7, 4097, 1.5, NaN, '64', 2n ** 40n]) {
    const error = await hyperAttention(q, q, q, { checkRows } as unknown as HyperOptions).then(() => undefined, (e: unknown) => e);
    assert.instance(error, HyperAttentionError, `checkRows ${String(checkRows)}`);
    assert.is((error as HyperAttentionError).code, 'INVALID_OPTION');
  }
  // Below minSeqLen the call is exact: verified, with nothing to check.
  const small = await hyperAttention(q, q, q, { ...cpu, checkRows: 8 });
  assert.equal(small.verification!.heads.map((h) => [h.plan, h.error, h.bound]), [['exact', 0, 0]]);
  // The authors' modes are checked only when asked.
  const big = randomTensor([1, 1, n, d], 3);
  const reference = await hyperAttention(big, big, big, { ...cpu, mode: 'reference' });
  assert.is(reference.verification, undefined);
  const checked = await hyperAttention(big, big, big, { ...cpu, mode: 'fixed', tolerance: 1e9, checkRows: 64 });
  assert.is(checked.verification!.checkRows, 64);
  assert.is(checked.verification!.heads[0].plan, 'fixed');
});

