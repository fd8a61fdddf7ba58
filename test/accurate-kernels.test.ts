// The accurate mode's WebAssembly kernels, one op at a time, against float64 computations of
// what they document (src/ops.ts), at odd shapes: head dims 1, 3, 127, 129 (not multiples
// of the SIMD width), key counts across the kernels' blocks and job ranges, and rows that
// fill no group evenly; on every build; the output must not depend on the thread count
// (threads.test.ts runs whole calls).
import { suite } from './suite.ts';
import * as assert from 'uvu/assert';
import { createCpuBackend, type CpuBackend } from '../src/cpu/backend.ts';
import { supportedFlavours } from '../src/cpu/wasm.ts';
import { Xoshiro128 } from '../src/random.ts';
import { maxAbsError } from './util.ts';

const test = suite('accurate kernels');

function gaussian(rng: Xoshiro128, n: number): Float32Array {
  return Float32Array.from({ length: n }, () => rng.nextGaussian());
}

/** First key position of row i's window (windowStart in assembly/attention.ts). */
function windowStart(i: number, winLo: number, win: number, causal: boolean, nk: number): number {
  const lo = i + winLo;
  return causal ? lo : Math.max(0, Math.min(lo, nk - win));
}

/** Float64 probe mass (ProbeTask): each probe row's softmax over the keys it sees, summed over the keys that take mass. */
function probeReference(
  q: Float32Array, k: Float32Array, d: number, nk: number, rows: number[], causal: boolean, causalOffset: number,
  sinks: number, winLo: number, win: number,
): Float64Array {
  const scale = 1 / Math.sqrt(d);
  const mass = new Float64Array(nk);
  for (const i of rows) {
    const visible = causal ? Math.min(nk, i + causalOffset + 1) : nk;
    const s = Array.from({ length: visible }, (_, j) => {
      let dot = 0;
      for (let c = 0; c < d; c++) dot += q[i * d + c] * k[j * d + c];
      return dot * scale;
    });
    const mx = Math.max(...s);
    const sum = s.reduce((a, x) => a + Math.exp(x - mx), 0);
    const lo = windowStart(i, winLo, win, causal, nk);
    for (let j = sinks; j < visible; j++) {
      if (win > 0 && j >= lo && j < lo + win) continue;
      mass[j] += Math.exp(s[j] - mx) / sum;
    }
  }
  return mass;
}

const probeCases = [
  { d: 1, nq: 50, nk: 37, probes: 7, causal: false, sinks: 0, win: 0 },
  { d: 3, nq: 300, nk: 4133, probes: 5, causal: false, sinks: 4, win: 9 },
  { d: 127, nq: 130, nk: 2049, probes: 1, causal: true, sinks: 2, win: 5 },
  { d: 129, nq: 200, nk: 4133, probes: 9, causal: true, sinks: 3, win: 0 },
  { d: 64, nq: 4133, nk: 4133, probes: 6, causal: true, sinks: 16, win: 64 },
];

for (const flavour of supportedFlavours()) {
  test(`probe (${flavour} build): masses against float64 at d = 1, 3, 127, 129, across key ranges, causal and not`, async () => {
    const backend = await createCpuBackend(flavour);
    const rng = new Xoshiro128(7);
    for (const c of probeCases) {
      const { d, nq, nk, probes, causal, sinks, win } = c;
      const q = gaussian(rng, nq * d);
      const k = gaussian(rng, nk * d);
      const causalOffset = causal ? nk - nq : 0;
      // Probe rows spread over the queries, the last one included (causal: it sees every key).
      const rows = Array.from({ length: probes }, (_, t) => Math.floor(((t + 1) * nq) / probes) - 1);
      const winLo = causal ? causalOffset + 1 - win : causalOffset - Math.floor(win / 2);
      const buf = uploader(backend);
      const mass = buf(new Float32Array(nk).fill(NaN));
      await backend.probe({
        q: buf(q), k: buf(k), nq, nk, d, scale: 1 / Math.sqrt(d), rows: buf(Int32Array.from(rows)), count: probes, causal, causalOffset,
        sinks, winLo, window: win, mass,
      });
      const got = Float32Array.from(backend.view(mass.buf, 0, nk));
      const want = probeReference(q, k, d, nk, rows, causal, causalOffset, sinks, winLo, win);
      const err = maxAbsError(got, want);
      assert.ok(err <= 1e-6, `${JSON.stringify(c)}: max abs error ${err}`);
      backend.releaseAll();
    }
  });
}

/**
 * Float64 attention of each query row over its own key set keys(i) (rows where the set is
 * empty: lse -inf, out 0), with the set's size and the sum of its V rows (PartOutput).
 */
function partReference(
  q: Float32Array, k: Float32Array, v: Float32Array, nq: number, d: number, dv: number, keys: (i: number) => number[],
) {
  const scale = 1 / Math.sqrt(d);
  const out = new Float64Array(nq * dv);
  const lse = new Float64Array(nq).fill(-Infinity);
  const cnt = new Float64Array(nq);
  const vsum = new Float64Array(nq * dv);
  for (let i = 0; i < nq; i++) {
    const set = keys(i);
    cnt[i] = set.length;
    for (const j of set) for (let c = 0; c < dv; c++) vsum[i * dv + c] += v[j * dv + c];
    if (set.length === 0) continue;
    const s = set.map((j) => {
      let dot = 0;
      for (let c = 0; c < d; c++) dot += q[i * d + c] * k[j * d + c];
      return dot * scale;
    });
    const mx = Math.max(...s);
    const w = s.map((x) => Math.exp(x - mx));
    const sum = w.reduce((a, x) => a + x, 0);
    set.forEach((j, t) => {
      for (let c = 0; c < dv; c++) out[i * dv + c] += (w[t] / sum) * v[j * dv + c];
    });
    lse[i] = mx + Math.log(sum);
  }
  return { out, lse, cnt, vsum };
}

/** Uploads an array into a new buffer of the backend, as a view from its first row. */
function uploader(backend: CpuBackend) {
  return (data: Float32Array | Int32Array) => {
    const b = backend.createBuffer(data instanceof Int32Array ? 'i32' : 'f32', data.length);
    backend.upload(b, data);
    return { buf: b, row: 0 };
  };
}

/**
 * A part's destination before it merges: what earlier parts left (held), or nothing yet
 * (lse -inf); counts and V sums 0.
 */
function emptyPart(buf: ReturnType<typeof uploader>, nq: number, dv: number, held?: { out: Float32Array; lse: Float32Array }) {
  return {
    out: buf(held?.out.slice() ?? new Float32Array(nq * dv)), lse: buf(held?.lse.slice() ?? new Float32Array(nq).fill(-Infinity)),
    cnt: buf(new Float32Array(nq)), vsum: buf(new Float32Array(nq * dv)),
  };
}

/** partReference's rows log-add-exp merged into what the rows held (a row that sees no key keeps it). */
function mergedReference(want: ReturnType<typeof partReference>, held: { out: Float32Array; lse: Float32Array }, dv: number) {
  const out = Float64Array.from(want.out);
  const lse = Float64Array.from(want.lse);
  for (let i = 0; i < lse.length; i++) {
    const [a, b] = [held.lse[i], want.lse[i]];
    if (b === -Infinity) {
      lse[i] = a;
      for (let c = 0; c < dv; c++) out[i * dv + c] = held.out[i * dv + c];
      continue;
    }
    if (a === -Infinity) continue;
    const top = Math.max(a, b);
    lse[i] = top + Math.log(Math.exp(a - top) + Math.exp(b - top));
    for (let c = 0; c < dv; c++) {
      out[i * dv + c] = Math.exp(a - lse[i]) * held.out[i * dv + c] + Math.exp(b - lse[i]) * want.out[i * dv + c];
    }
  }
  return { ...want, out, lse };
}

/**
 * A part's rows (dst, PartOutput) against partReference's: out and lse within 1e-5 (lse -inf
 * exactly where the row's key set is empty), counts exact, V sums within vsumTolerance.
 */
function assertPart(
  backend: CpuBackend, dst: Record<'out' | 'lse' | 'cnt' | 'vsum', { buf: unknown }>, nq: number, dv: number,
  want: ReturnType<typeof partReference>, label: string, vsumTolerance = 1e-4,
): void {
  const read = (view: { buf: unknown }, n: number) => Float32Array.from(backend.view(view.buf as never, 0, n));
  assert.ok(maxAbsError(read(dst.out, nq * dv), want.out) <= 1e-5, `${label}: out`);
  const lse = read(dst.lse, nq);
  want.lse.forEach((x, i) => assert.ok(x === -Infinity ? lse[i] === -Infinity : Math.abs(lse[i] - x) <= 1e-5, `${label}: lse row ${i}`));
  assert.equal(Array.from(read(dst.cnt, nq)), Array.from(want.cnt), `${label}: counts`);
  const vsumError = maxAbsError(read(dst.vsum, nq * dv), want.vsum);
  assert.ok(vsumError <= vsumTolerance, `${label}: V sums off by ${vsumError}`);
}

const windowCases = [
  { d: 1, dv: 3, nq: 77, nk: 77, causal: false, win: 5, flagged: 3 },
  { d: 3, dv: 1, nq: 50, nk: 83, causal: true, win: 9, flagged: 0 },
  { d: 127, dv: 129, nq: 101, nk: 101, causal: false, win: 64, flagged: 7 },
  { d: 129, dv: 127, nq: 70, nk: 133, causal: true, win: 64, flagged: 5 },
  { d: 64, dv: 64, nq: 300, nk: 300, causal: true, win: 200, flagged: 9 },
];

interface WindowCase {
  d: number;
  dv: number;
  nq: number;
  nk: number;
  causal: boolean;
  win: number;
}

/**
 * One window op (WindowTask) on fresh gaussian inputs against float64: the flags that
 * flagsOf draws hidden, merged into rows that hold an earlier part where `held` (some of
 * them nothing yet), else into empty rows.
 */
async function checkWindow(backend: CpuBackend, rng: Xoshiro128, c: WindowCase, flagsOf: () => Int32Array, held: boolean): Promise<void> {
  const { d, dv, nq, nk, causal, win } = c;
  const q = gaussian(rng, nq * d);
  const k = gaussian(rng, nk * d);
  const v = gaussian(rng, nk * dv);
  const causalOffset = causal ? nk - nq : 0;
  const winLo = causal ? causalOffset + 1 - win : causalOffset - Math.floor(win / 2);
  const flags = flagsOf();
  const before = held
    ? { out: gaussian(rng, nq * dv), lse: Float32Array.from(gaussian(rng, nq), (x, i) => (i % 5 === 0 ? -Infinity : x)) }
    : undefined;
  const buf = uploader(backend);
  const dst = emptyPart(buf, nq, dv, before);
  const none = buf(new Int32Array(1));
  await backend.window({
    q: buf(q), k: buf(k), v: buf(v), nq, nk, d, dv, scale: 1 / Math.sqrt(d),
    mask: { causal, causalOffset, flags: buf(flags), winLo, window: win, rounds: 0, qTags: none, kTags: none }, dst,
  });
  const want = partReference(q, k, v, nq, d, dv, (i) => {
    const lo = windowStart(i, winLo, win, causal, nk);
    const keys: number[] = [];
    for (let j = Math.max(0, lo); j < Math.min(nk, lo + win); j++) {
      if (!flags[j] && (!causal || j <= i + causalOffset)) keys.push(j);
    }
    return keys;
  });
  // The V sums are float32 running sums over the window (gaussian values: about sqrt(win) in
  // size), whose rounding grows with the window's length.
  assertPart(
    backend, dst, nq, dv, before ? mergedReference(want, before, dv) : want, JSON.stringify(c), 1e-4 * Math.max(1, Math.sqrt(win / 64)),
  );
  backend.releaseAll();
}

for (const flavour of supportedFlavours()) {
  test(`window (${flavour} build): out, lse, counts and V sums against float64 at odd shapes, causal and not, with flagged keys`, async () => {
    const backend = await createCpuBackend(flavour);
    const rng = new Xoshiro128(11);
    for (const c of windowCases) {
      await checkWindow(backend, rng, c, () => {
        const flags = new Int32Array(c.nk);
        for (let t = 0; t < c.flagged; t++) flags[rng.nextBelow(c.nk)] = 1;
        return flags;
      }, false);
    }
  });
}

// Windows on both of the window part's paths: short ones (up to 133 keys: each micro-tile of
// rows in one pass over its rows' joined windows, windowFitsBand in assembly/attention.ts)
// at 1, 63, 64, 65 and 133 keys, longer ones in key tiles at 134 and 2048; key counts that
// fill no tile or chunk evenly, queries fewer than keys, a window longer than the keys, many
// flagged keys inside the windows (every key of some rows' windows), merged into rows that
// hold an earlier part.
const windowPathCases = [
  { d: 1, dv: 1, nq: 97, nk: 97, causal: false, win: 1, flagShare: 0.2 },
  { d: 3, dv: 5, nq: 131, nk: 200, causal: true, win: 1, flagShare: 0.3 },
  { d: 127, dv: 129, nq: 201, nk: 201, causal: false, win: 63, flagShare: 0.1 },
  { d: 129, dv: 127, nq: 150, nk: 333, causal: true, win: 64, flagShare: 0.05 },
  { d: 5, dv: 3, nq: 261, nk: 261, causal: true, win: 65, flagShare: 0.1 },
  { d: 64, dv: 64, nq: 190, nk: 190, causal: false, win: 65, flagShare: 0 },
  { d: 8, dv: 16, nq: 99, nk: 140, causal: true, win: 64, flagShare: 0.1 },
  { d: 3, dv: 8, nq: 40, nk: 50, causal: false, win: 64, flagShare: 0.1 },
  { d: 7, dv: 9, nq: 300, nk: 301, causal: false, win: 133, flagShare: 0.02 },
  { d: 9, dv: 7, nq: 260, nk: 400, causal: true, win: 133, flagShare: 0.02 },
  { d: 3, dv: 3, nq: 300, nk: 300, causal: false, win: 134, flagShare: 0.02 },
  { d: 3, dv: 5, nq: 2300, nk: 2333, causal: true, win: 2048, flagShare: 0.01 },
  { d: 17, dv: 15, nq: 2222, nk: 2222, causal: false, win: 2048, flagShare: 0.01 },
];

for (const flavour of supportedFlavours()) {
  test(`window paths (${flavour} build): windows of 1, 63, 64, 65, 133, 134 and 2048 keys against float64, merged, causal and not, with flagged keys`, async () => {
    const backend = await createCpuBackend(flavour);
    const rng = new Xoshiro128(17);
    for (const c of windowPathCases) {
      await checkWindow(backend, rng, c, () => Int32Array.from({ length: c.nk }, () => (rng.nextUnit() < c.flagShare ? 1 : 0)), true);
    }
  });
}

// Buckets of one hash round: key counts 1, 2, 17 and 33 (small buckets take bucketAttention,
// those past its BUCKET_KEYS the core; a cap of 17 cuts the largest to 17), query counts that
// fill no micro-tile evenly, and an earlier round's tags that hide some keys. Buckets of at
// most 3 queries (bucketRows) with up to 64 keys, and past 64 keys (the core).
const roundCases = [
  { d: 128, dv: 128, causal: true, win: 16, cap: 64, keys: [64, 40, 17, 5, 70], queries: [1, 2, 3, 1, 1] },
  { d: 129, dv: 127, causal: false, win: 3, cap: 80, keys: [50, 64, 1, 33, 70], queries: [3, 1, 2, 2, 3] },
  { d: 1, dv: 3, causal: false, win: 5, cap: 40, keys: [1, 2, 17, 33], queries: [3, 1, 16, 5] },
  { d: 3, dv: 1, causal: true, win: 0, cap: 17, keys: [33, 17, 2, 1, 17], queries: [7, 2, 13, 1, 9] },
  { d: 127, dv: 129, causal: false, win: 9, cap: 40, keys: [17, 33, 1, 2], queries: [16, 17, 2, 6] },
  { d: 129, dv: 127, causal: true, win: 4, cap: 33, keys: [2, 33, 17, 1], queries: [5, 3, 11, 4] },
];

for (const flavour of supportedFlavours()) {
  test(`round (${flavour} build): bucket sizes 1, 2, 17, 33, 64, 70 against float64 at d = 1, 3, 127, 128, 129, causal and not, with tags, flags and windows`, async () => {
    const backend = await createCpuBackend(flavour);
    const rng = new Xoshiro128(13);
    for (const c of roundCases) {
      const { d, dv, causal, win, cap, keys: keyCounts, queries: queryCounts } = c;
      const nk = keyCounts.reduce((a, x) => a + x, 0);
      const nq = queryCounts.reduce((a, x) => a + x, 0);
      const numKeys = keyCounts.length;
      const q = gaussian(rng, nq * d);
      const k = gaussian(rng, nk * d);
      const v = gaussian(rng, nk * dv);
      const causalOffset = causal ? nk - nq : 0;
      const winLo = causal ? causalOffset + 1 - win : causalOffset - Math.floor(win / 2);
      // Rows dealt to buckets at random positions: perm lists each bucket's rows in turn.
      const deal = (counts: number[], n: number) => {
        const rows = Array.from({ length: n }, (_, i) => i);
        for (let i = n - 1; i > 0; i--) {
          const j = rng.nextBelow(i + 1);
          [rows[i], rows[j]] = [rows[j], rows[i]];
        }
        const starts = [0];
        for (const x of counts) starts.push(starts[starts.length - 1] + x);
        return { perm: Int32Array.from(rows), starts: Int32Array.from(starts) };
      };
      const qs = deal(queryCounts, nq);
      const ks = deal(keyCounts, nk);
      const flags = new Int32Array(nk);
      for (let t = 0; t < 3; t++) flags[rng.nextBelow(nk)] = 1;
      // One earlier round: tags 0..2 for queries, -1..2 for keys.
      const qTags = Int32Array.from({ length: nq }, () => rng.nextBelow(3));
      const kTags = Int32Array.from({ length: nk }, () => rng.nextBelow(4) - 1);
      const buf = uploader(backend);
      // What earlier parts left: every seventh row nothing yet.
      const held = { out: gaussian(rng, nq * dv), lse: Float32Array.from({ length: nq }, (_, i) => (i % 7 ? 2 * rng.nextGaussian() : -Infinity)) };
      const dst = emptyPart(buf, nq, dv, held);
      await backend.round({
        q: buf(q), k: buf(k), v: buf(v), nq, nk, d, dv, scale: 1 / Math.sqrt(d),
        qPerm: buf(qs.perm), kPerm: buf(ks.perm), qStarts: buf(qs.starts), kStarts: buf(ks.starts), numKeys, cap,
        mask: { causal, causalOffset, flags: buf(flags), winLo, window: win, rounds: 1, qTags: buf(qTags), kTags: buf(kTags) }, dst,
      });
      const bucketOf = new Int32Array(nq);
      for (let u = 0; u < numKeys; u++) for (let p = qs.starts[u]; p < qs.starts[u + 1]; p++) bucketOf[qs.perm[p]] = u;
      const want = partReference(q, k, v, nq, d, dv, (i) => {
        const u = bucketOf[i];
        const lo = windowStart(i, winLo, win, causal, nk);
        const set: number[] = [];
        for (let p = ks.starts[u]; p < Math.min(ks.starts[u + 1], ks.starts[u] + cap); p++) {
          const j = ks.perm[p];
          const hidden = flags[j] !== 0 || (causal && j > i + causalOffset) || (win > 0 && j >= lo && j < lo + win) || qTags[i] === kTags[j];
          if (!hidden) set.push(j);
        }
        return set;
      });
      assertPart(backend, dst, nq, dv, mergedReference(want, held, dv), JSON.stringify(c));
      backend.releaseAll();
    }
  });
}

// The remainder's samples: lists of 1 to 5000 draws (with repeats, in draw order; past
// 4096 the tiles are built per chunk of rows instead of cached), some at flagged keys and
// one list of flagged keys alone, against rows [qFrom, qTo) of the head; each row's softmax
// over the samples its mask leaves (flags, window, causal, an earlier round's buckets),
// counted with their repeats.
const samplesCases = [
  { d: 1, dv: 3, nq: 40, nk: 50, causal: false, win: 5, m: 1, flagged: 0, qFrom: 0, qTo: 40 },
  { d: 3, dv: 1, nq: 70, nk: 90, causal: true, win: 3, m: 63, flagged: 4, qFrom: 5, qTo: 61 },
  { d: 127, dv: 129, nq: 130, nk: 130, causal: false, win: 9, m: 65, flagged: 6, qFrom: 0, qTo: 130 },
  { d: 129, dv: 127, nq: 90, nk: 300, causal: true, win: 16, m: 200, flagged: 9, qFrom: 30, qTo: 90 },
  { d: 5, dv: 7, nq: 300, nk: 5000, causal: false, win: 64, m: 5000, flagged: 40, qFrom: 0, qTo: 300 },
  { d: 8, dv: 8, nq: 20, nk: 40, causal: false, win: 1, m: 30, flagged: 40, qFrom: 0, qTo: 20 },
];

for (const flavour of supportedFlavours()) {
  test(`samples (${flavour} build): 1 to 5000 draws with repeats and flagged keys against float64 at odd shapes, causal and not, with tags and windows`, async () => {
    const backend = await createCpuBackend(flavour);
    const rng = new Xoshiro128(19);
    for (const c of samplesCases) {
      const { d, dv, nq, nk, causal, win, m, qFrom, qTo } = c;
      const q = gaussian(rng, nq * d);
      const k = gaussian(rng, nk * d);
      const v = gaussian(rng, nk * dv);
      const causalOffset = causal ? nk - nq : 0;
      const winLo = causal ? causalOffset + 1 - win : causalOffset - Math.floor(win / 2);
      const samples = Int32Array.from({ length: m }, () => rng.nextBelow(nk));
      const flags = new Int32Array(nk);
      // flagged >= nk: every key flagged, so that no sample is left to any row.
      if (c.flagged >= nk) flags.fill(1);
      for (let t = 0; t < c.flagged; t++) flags[samples[rng.nextBelow(m)]] = 1;
      const qTags = Int32Array.from({ length: nq }, () => rng.nextBelow(5));
      const kTags = Int32Array.from({ length: nk }, () => rng.nextBelow(6) - 1);
      const buf = uploader(backend);
      const dst = emptyPart(buf, nq, dv);
      await backend.samples({
        q: buf(q), k: buf(k), v: buf(v), nq, nk, d, dv, scale: 1 / Math.sqrt(d), samples: samples.slice(), qFrom, qTo,
        mask: { causal, causalOffset, flags: buf(flags), winLo, window: win, rounds: 1, qTags: buf(qTags), kTags: buf(kTags) }, dst,
      });
      const want = partReference(q, k, v, nq, d, dv, (i) => {
        if (i < qFrom || i >= qTo) return [];
        const lo = windowStart(i, winLo, win, causal, nk);
        return Array.from(samples).filter((j) =>
          !(flags[j] !== 0 || (causal && j > i + causalOffset) || (j >= lo && j < lo + win) || qTags[i] === kTags[j]));
      });
      // V sums over up to 5000 gaussian rows: float32 rounding grows with the count.
      assertPart(backend, dst, nq, dv, want, JSON.stringify(c), 1e-4 * Math.max(1, Math.sqrt(m / 64)));
      backend.releaseAll();
    }
  });
}
