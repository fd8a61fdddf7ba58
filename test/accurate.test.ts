// The accurate mode on the wasm backend, against what the test assembles itself from the
// documented rules (docs/algorithm.md, "The accurate mode"): which keys each query
// row counts exactly, the estimator on a flat remainder, and the error on heads with a
// sink and with heavy columns.
import { suite } from './suite.ts';
import * as assert from 'uvu/assert';
import { exactAttention, hyperAttention, type HyperOptions } from '../src/index.ts';
import { gaussianProjections, Xoshiro128 } from '../src/random.ts';
import { attentionErrors, evenRows, referenceRows } from '../bench/error.ts';
import { WORKLOADS } from '../bench/workloads.ts';
import { lshKeys } from './lsh.ts';
import { maxAbsError, randomTensor } from './util.ts';

const test = suite('accurate');

interface Case {
  nq: number;
  nk: number;
  d: number;
  dv: number;
  causal: boolean;
  sinkKeys: number;
  heavyKeys: number;
  probeQueries: number;
  window: number;
  lshRounds: number;
  lshNumProjs: number;
  blockSize: number;
}

/**
 * The keys query row i counts exactly, by the documented rules: the first sinkKeys keys;
 * the heavyKeys keys with the most probe mass (probe rows: the last ones when causal, else
 * evenly spaced; mass of a probe row's softmax over the keys it may see, leaving out the
 * sinks and the probe row's own window); the window; and in each LSH round the first
 * blockSize keys (in position order) of the query's bucket. Only keys i may see.
 */
function exactSets(q: Float32Array, k: Float32Array, c: Case, projections: Float32Array[]): Set<number>[] {
  const { nq, nk, d, causal } = c;
  const scale = 1 / Math.sqrt(d);
  const visible = (i: number, j: number) => !causal || j <= i;
  // A window of 0 still counts the query's own position.
  const window = Math.min(Math.max(c.window, 1), nk);
  const winStart = (i: number) => {
    if (causal) return i - window + 1;
    const lo = i + nk - nq - Math.floor(window / 2);
    return Math.max(0, Math.min(lo, nk - window));
  };
  const inWindow = (i: number, j: number) => j >= winStart(i) && j < winStart(i) + window;
  const sinks = Math.min(c.sinkKeys, nk);
  const heavy = Math.min(c.heavyKeys, nk - sinks);
  const columns = new Set<number>(Array.from({ length: sinks }, (_, j) => j));
  if (heavy > 0) {
    const P = Math.min(c.probeQueries, nq);
    const mass = new Float64Array(nk);
    for (let t = 0; t < P; t++) {
      const i = causal ? nq - P + t : Math.floor(((t + 0.5) * nq) / P);
      const logits: number[] = [];
      for (let j = 0; j < nk; j++) {
        let dot = 0;
        for (let e = 0; e < d; e++) dot += q[i * d + e] * k[j * d + e];
        logits.push(visible(i, j) ? dot * scale : -Infinity);
      }
      const max = Math.max(...logits);
      const sum = logits.reduce((s, x) => s + Math.exp(x - max), 0);
      for (let j = sinks; j < nk; j++) if (!inWindow(i, j)) mass[j] += Math.exp(logits[j] - max) / sum;
    }
    const order = Array.from({ length: nk }, (_, j) => j).filter((j) => j >= sinks);
    order.sort((a, b) => mass[b] - mass[a] || a - b);
    for (const j of order.slice(0, heavy)) columns.add(j);
  }
  // Per round: each query's bucket, and each key's bucket if it is among the first
  // blockSize keys of it (else -1: the round does not count it).
  const rounds = projections.map((proj) => {
    const qb = lshKeys(q, nq, d, proj, c.lshNumProjs, 'fixed');
    const kb = lshKeys(k, nk, d, proj, c.lshNumProjs, 'fixed');
    const seen = new Map<number, number>();
    const kCounted = Int32Array.from(kb, (u) => {
      const rank = seen.get(u) ?? 0;
      seen.set(u, rank + 1);
      return rank < c.blockSize ? u : -1;
    });
    return { qb, kCounted };
  });
  return Array.from({ length: nq }, (_, i) => {
    const set = new Set<number>();
    for (let j = 0; j < nk; j++) {
      if (!visible(i, j)) continue;
      if (columns.has(j) || inWindow(i, j) || rounds.some((r) => r.qb[i] === r.kCounted[j])) set.add(j);
    }
    return set;
  });
}

/** Float64 softmax attention of each query row over its own key set. */
function attendSets(q: Float32Array, k: Float32Array, v: Float32Array, d: number, dv: number, sets: Set<number>[]) {
  const scale = 1 / Math.sqrt(d);
  const out = new Float64Array(sets.length * dv);
  const lse = new Float64Array(sets.length);
  sets.forEach((set, i) => {
    const keys = [...set];
    const logits = keys.map((j) => {
      let dot = 0;
      for (let e = 0; e < d; e++) dot += q[i * d + e] * k[j * d + e];
      return dot * scale;
    });
    const max = Math.max(...logits);
    const w = logits.map((x) => Math.exp(x - max));
    const sum = w.reduce((a, b) => a + b, 0);
    keys.forEach((j, t) => {
      for (let e = 0; e < dv; e++) out[i * dv + e] += (w[t] / sum) * v[j * dv + e];
    });
    lse[i] = max + Math.log(sum);
  });
  return { out, lse };
}

function options(c: Case, projections: Float32Array[]): HyperOptions {
  const { sinkKeys, heavyKeys, probeQueries, window, lshRounds, lshNumProjs, blockSize, causal } = c;
  const flat = new Float32Array(projections.reduce((n, p) => n + p.length, 0));
  projections.forEach((p, t) => flat.set(p, t * p.length));
  return {
    mode: 'accurate', tolerance: Infinity, causal, backend: 'cpu', minSeqLen: 0, sampleSize: 0, sinkKeys, heavyKeys, probeQueries, window,
    lshRounds, lshNumProjs, blockSize, ...(lshRounds > 0 ? { projections: flat } : {}),
  };
}

const base: Case = {
  nq: 700, nk: 700, d: 32, dv: 32, causal: false, sinkKeys: 4, heavyKeys: 12, probeQueries: 16, window: 40,
  lshRounds: 2, lshNumProjs: 5, blockSize: 16,
};
const cases: Case[] = [
  base,
  { ...base, causal: true },
  { ...base, nq: 300, nk: 900, dv: 48 },
  { ...base, causal: true, lshRounds: 3, lshNumProjs: 4, blockSize: 8, window: 1, sinkKeys: 0 },
  { ...base, lshRounds: 0, heavyKeys: 0, window: 100 },
  { ...base, nq: 513, nk: 513, d: 80, dv: 80, causal: true, heavyKeys: 0, sinkKeys: 1000 },
  // No sinks, columns or window: rows whose bucket holds no key they see still count their own.
  { ...base, causal: true, window: 0, sinkKeys: 0, heavyKeys: 0, lshRounds: 1 },
  { ...base, nq: 300, nk: 900, window: 0, sinkKeys: 0, heavyKeys: 0, lshRounds: 1 },
];

test('sampleSize 0: each row is exact attention over the union of the exact parts (each key once)', async () => {
  for (const [index, c] of cases.entries()) {
    const q = randomTensor([1, 1, c.nq, c.d], 10 + index);
    const k = randomTensor([1, 1, c.nk, c.d], 20 + index);
    const v = randomTensor([1, 1, c.nk, c.dv], 30 + index);
    const rng = new Xoshiro128(40 + index);
    const projections = Array.from({ length: c.lshRounds }, () => gaussianProjections(rng, c.d, c.lshNumProjs));
    const sets = exactSets(q.data, k.data, c, projections);
    const expected = attendSets(q.data, k.data, v.data, c.d, c.dv, sets);
    const got = await hyperAttention(q, k, v, options(c, projections));
    // float32 kernels, each part lse-merged: 1e-4 absolute (a key counted twice or missed
    // moves lse by about its share of the mass, far more).
    const what = `case ${index} ${JSON.stringify(c)}`;
    assert.ok(maxAbsError(got.lse.data, expected.lse) < 1e-4, `${what}: lse off by ${maxAbsError(got.lse.data, expected.lse)}`);
    assert.ok(maxAbsError(got.out.data, expected.out) < 1e-4, `${what}: out off by ${maxAbsError(got.out.data, expected.out)}`);
  }
});

test('exact parts that cover every key give exact attention (window >= n), with samples on', async () => {
  for (const causal of [false, true]) {
    for (const [nq, nk] of [[600, 600], [256, 1000]]) {
      if (causal && nq !== nk) continue;
      const q = randomTensor([2, 4, nq, 64], 1);
      const k = randomTensor([2, 2, nk, 64], 2);
      const v = randomTensor([2, 2, nk, 64], 3);
      const exact = await exactAttention(q, k, v, { causal, backend: 'cpu' });
      const got = await hyperAttention(q, k, v, { causal, backend: 'cpu', minSeqLen: 0, window: nk, sampleSize: 64, seed: 9 });
      assert.ok(maxAbsError(got.out.data, exact.out.data) < 1e-5, `causal ${causal} ${nq}x${nk} out`);
      assert.ok(maxAbsError(got.lse.data, exact.lse.data) < 1e-5, `causal ${causal} ${nq}x${nk} lse`);
    }
  }
});

/**
 * Keys 0..few-1 random and counted exactly (the sinks), every later key the same vector:
 * whatever the query, the keys left for the remainder all have one logit, and the
 * estimator (ratio of the remainder's size to the visible samples, control variate of its
 * V sum) is then exact.
 */
test('a remainder whose logits are all equal is estimated exactly', async () => {
  const n = 2048;
  const d = 32;
  const few = 24;
  for (const causal of [false, true]) {
    const q = randomTensor([1, 2, n, d], 5);
    const k = randomTensor([1, 2, n, d], 6);
    const same = randomTensor([d], 7).data;
    for (let h = 0; h < 2; h++) for (let j = few; j < n; j++) k.data.set(same, (h * n + j) * d);
    const v = randomTensor([1, 2, n, d], 8);
    const exact = await exactAttention(q, k, v, { causal, backend: 'cpu' });
    // Enough samples that every row sees some of its remainder.
    const opts = { causal, backend: 'cpu', minSeqLen: 0, sinkKeys: few, heavyKeys: 8, window: 64, sampleSize: 256, seed: 3 } as const;
    const got = await hyperAttention(q, k, v, opts);
    assert.ok(maxAbsError(got.lse.data, exact.lse.data) < 1e-4, `causal ${causal}: lse off by ${maxAbsError(got.lse.data, exact.lse.data)}`);
    assert.ok(maxAbsError(got.out.data, exact.out.data) < 1e-4, `causal ${causal}: out off by ${maxAbsError(got.out.data, exact.out.data)}`);
  }
});

test('draws: one per call when not causal; causal, one per window of rows, over the keys behind it', async () => {
  const record = async (n: number, causal: boolean, window: number) => {
    const calls: number[][] = [];
    const shape = [1, 2, n, 8];
    await hyperAttention(randomTensor(shape, 1), randomTensor(shape, 2), randomTensor(shape, 3), {
      causal, minSeqLen: 0, window, sampleSize: 16, backend: 'cpu',
      sampler: ({ index, batch, heads, count, high }) => {
        assert.is(index, calls.length);
        calls.push([batch, heads, count, high]);
        return new Int32Array(batch * heads * count).map((_, i) => i % high);
      },
    });
    return calls;
  };
  assert.equal(await record(1000, false, 64), [[1, 2, 16, 1000]]);
  assert.equal(await record(1000, true, 256), [[1, 2, 16, 256], [1, 2, 16, 512], [1, 2, 16, 768]]);
  // Below 64 rows of window, segments of 1024 rows draw from the keys up to their end.
  assert.equal(await record(1500, true, 16), [[1, 2, 16, 1024], [1, 2, 16, 1500]]);
});

test('accurate-mode options are validated', async () => {
  const t = randomTensor([1, 1, 64, 8], 1);
  const bad = async (options: HyperOptions, pattern: RegExp) => {
    try {
      await hyperAttention(t, t, t, options);
      assert.unreachable('expected INVALID_OPTION');
    } catch (error) {
      assert.is((error as { code?: string }).code, 'INVALID_OPTION');
      assert.match(String(error), pattern);
    }
  };
  await bad({ sinkKeys: -1 }, /sinkKeys: expected an integer in \[0, 65536\], got -1/);
  await bad({ heavyKeys: 1.5 }, /heavyKeys: expected an integer/);
  await bad({ window: 70000 }, /window: expected an integer in \[0, 65536\]/);
  await bad({ lshRounds: 9 }, /lshRounds: expected an integer in \[0, 8\]/);
  await bad({ probeQueries: 0 }, /probeQueries: expected an integer in \[1, 65536\]/);
  await bad({ mode: 'fixed', heavyKeys: 4 }, /heavyKeys: an option of mode 'accurate', but mode is 'fixed'/);
});

// The targets of the accurate mode on heads whose mass sits on a sink or on heavy columns
// at random positions: relative Frobenius error <= 0.1, max lse error <= 0.5 nats, from the
// plan alone (tolerance Infinity: no head moved to a costlier plan).
for (const name of ['sink', 'columns'] as const) {
  test(`default accurate mode on a ${name} head: error <= 0.1, lse <= 0.5 nats`, async () => {
    const n = 8192;
    for (const causal of [false, true]) {
      const x = WORKLOADS[name].generate({ B: 1, H: 1, n, d: 64, seed: 21, causal });
      const ref = referenceRows(x, evenRows(n, 192), causal);
      const got = await hyperAttention(x.q, x.k, x.v, { causal, backend: 'cpu', tolerance: Infinity });
      const e = attentionErrors(ref, got.out.data, got.lse.data, x.v.data, 64);
      assert.ok(e.relFrobenius <= 0.1, `${name} causal ${causal}: relative error ${e.relFrobenius}`);
      assert.ok(e.maxLseError <= 0.5, `${name} causal ${causal}: max lse error ${e.maxLseError}`);
    }
  });
}

