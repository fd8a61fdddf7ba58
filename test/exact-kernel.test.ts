// The exact-attention kernel (assembly/attention.ts) of every WebAssembly build, called
// through the backend's exact op, against the float64 reference at shapes that miss its
// blocking: head dims 1, 3, 127, 129 (not multiples of its 4-wide steps or 8-wide V
// blocks), query runs longer than a 256-row chunk and not a multiple of its 4-row
// micro-tiles, key runs not a multiple of its 64-key tiles; causal with offsets (rows that
// see every key, none, or a ragged part of a tile), in each write mode. Also: a row's
// result is the same bits however the rows are split between calls.
import { suite } from './suite.ts';
import * as assert from 'uvu/assert';
import { createCpuBackend, type CpuBackend } from '../src/cpu/backend.ts';
import { supportedFlavours, type KernelFlavour } from '../src/cpu/wasm.ts';
import type { WriteMode } from '../src/ops.ts';
import { Xoshiro128 } from '../src/random.ts';
import { referenceAttention, type ReferenceOutput } from './reference.ts';
import { maxAbs, maxAbsError, randomTensor, relativeError } from './util.ts';

const test = suite('exact kernel');

// Tolerances of exact.test.ts: relative Frobenius error and max abs error (to max|V|) 1e-5;
// lse to 1e-5 of its size.
const TOL = 1e-5;

interface Case {
  nq: number;
  nk: number;
  d: number;
  dv: number;
  causal: boolean;
  causalOffset: number;
  write: WriteMode;
}

interface Result {
  out: Float32Array;
  lse: Float32Array;
}

/** The backend's exact op on fresh buffers; dst starts as `part1` (the merge modes' part 1). */
async function runKernel(
  backend: CpuBackend, c: Case, q: Float32Array, k: Float32Array, v: Float32Array, part1: Result,
  rows: [number, number][] = [[0, c.nq]],
): Promise<Result> {
  const buf = (data: Float32Array) => {
    const b = backend.createBuffer('f32', data.length);
    backend.upload(b, data);
    return b;
  };
  try {
    const qb = buf(q), kb = buf(k), vb = buf(v), out = buf(part1.out), lse = buf(part1.lse);
    // Each run of rows as its own call, the way hyper.ts hands exact attention over in runs.
    for (const [r0, r1] of rows) {
      await backend.exact({
        q: { buf: qb, row: r0 }, k: { buf: kb, row: 0 }, v: { buf: vb, row: 0 },
        nq: r1 - r0, nk: c.nk, d: c.d, dv: c.dv, scale: 1 / Math.sqrt(c.d),
        causal: c.causal, causalOffset: c.causalOffset + r0,
        dst: { out: { buf: out, row: r0 }, lse: { buf: lse, row: r0 }, write: c.write },
      });
    }
    const res = { out: new Float32Array(c.nq * c.dv), lse: new Float32Array(c.nq) };
    await backend.download(out, 0, res.out.length, res.out);
    await backend.download(lse, 0, res.lse.length, res.lse);
    return res;
  } finally {
    backend.releaseAll();
  }
}

/** What the write mode makes of part 1 and the exact result (part 2), in float64. */
function expected(c: Case, part1: Result, ref: ReferenceOutput): { out: Float64Array; lse: Float64Array } {
  if (c.write === 'write') return ref;
  const out = new Float64Array(c.nq * c.dv);
  const lse = new Float64Array(c.nq);
  for (let i = 0; i < c.nq; i++) {
    const l1 = part1.lse[i];
    const l2 = ref.lse[i];
    // c: the weight of part 1; the fixed merge keeps a part alone when the other is empty
    const w = c.write === 'merge-fixed' && l2 === -Infinity ? 1 : 1 / (1 + Math.exp(l2 - l1));
    lse[i] = c.write === 'merge-reference'
      ? l1 - Math.log(w + 2 ** -23)
      : l2 === -Infinity ? l1 : Math.max(l1, l2) + Math.log1p(Math.exp(-Math.abs(l1 - l2)));
    for (let j = 0; j < c.dv; j++) {
      out[i * c.dv + j] = w * part1.out[i * c.dv + j] + (1 - w) * ref.out[i * c.dv + j];
    }
  }
  return { out, lse };
}

function check(label: string, c: Case, got: Result, want: { out: Float64Array; lse: Float64Array }, scaleOf: number) {
  assert.ok(relativeError(got.out, want.out) <= TOL, `${label}: relative error ${relativeError(got.out, want.out)}`);
  const abs = maxAbsError(got.out, want.out);
  assert.ok(abs <= TOL * scaleOf, `${label}: max abs error ${abs} > ${TOL} * ${scaleOf}`);
  for (let i = 0; i < c.nq; i++) {
    const [g, w] = [got.lse[i], want.lse[i]];
    // A row that sees no key has lse -Infinity exactly (write mode).
    if (w === -Infinity) {
      assert.is(g, -Infinity, `${label}: lse[${i}]`);
      continue;
    }
    assert.ok(Math.abs(g - w) <= TOL * Math.max(1, Math.abs(w)), `${label}: lse[${i}] ${g} vs ${w}`);
  }
}

let seed = 100;
function inputs(c: Case) {
  const q = randomTensor([c.nq, c.d], seed++).data;
  const k = randomTensor([c.nk, c.d], seed++).data;
  const v = randomTensor([c.nk, c.dv], seed++).data;
  // part 1 of a merge: bounded outputs and lse values around the exact ones
  const rng = new Xoshiro128(seed++);
  const part1 = {
    out: Float32Array.from({ length: c.nq * c.dv }, () => rng.nextGaussian()),
    lse: Float32Array.from({ length: c.nq }, () => Math.log(c.nk) + 2 * rng.nextGaussian()),
  };
  return { q, k, v, part1 };
}

const flavours = supportedFlavours();
const backends = new Map<KernelFlavour, Promise<CpuBackend>>(flavours.map((f) => [f, createCpuBackend(f)]));
const WRITES: WriteMode[] = ['write', 'merge-reference', 'merge-fixed'];

// nq = 261: one full 256-row chunk and a ragged one of 5 rows (a partial micro-tile);
// nk = 300: four full 64-key tiles and one of 44 keys.
const [NQ, NK] = [261, 300];
const MASKS = [
  { causal: false, causalOffset: 0 },
  { causal: true, causalOffset: 0 }, // top-left aligned: row i sees keys 0..i
  { causal: true, causalOffset: NK - NQ }, // bottom-right aligned, as a prefix-cache prefill
  { causal: true, causalOffset: -70 }, // the first 70 rows see no key at all
];

for (const d of [1, 3, 127, 129]) {
  for (const flavour of flavours) {
    test(`exact kernel (${flavour} build) d=${d}: masks x write modes against float64`, async () => {
      const backend = await backends.get(flavour)!;
      for (const mask of MASKS) {
        for (const write of WRITES) {
          const c: Case = { nq: NQ, nk: NK, d, dv: d, ...mask, write };
          const { q, k, v, part1 } = inputs(c);
          const ref = referenceAttention({ q, k, v, B: 1, H: 1, Hkv: 1, nq: NQ, nk: NK, d, dv: d, ...mask });
          const got = await runKernel(backend, c, q, k, v, part1);
          const label = `${flavour} d=${d} causal=${mask.causal} offset=${mask.causalOffset} ${write}`;
          check(label, c, got, expected(c, part1, ref), Math.max(maxAbs(v), maxAbs(part1.out)));
        }
      }
    });
  }
}

test('exact kernel: dv != d (dv not a multiple of 8), short key runs, every build', async () => {
  for (const flavour of flavours) {
    const backend = await backends.get(flavour)!;
    for (const [nq, nk, d, dv] of [[7, 5, 3, 12], [300, 65, 64, 13], [129, 1, 129, 1]]) {
      for (const causal of [false, true]) {
        const c: Case = { nq, nk, d, dv, causal, causalOffset: nk - nq, write: 'write' };
        const { q, k, v, part1 } = inputs(c);
        const ref = referenceAttention({ q, k, v, B: 1, H: 1, Hkv: 1, nq, nk, d, dv, causal, causalOffset: nk - nq });
        const got = await runKernel(backend, c, q, k, v, part1);
        check(`${flavour} nq=${nq} nk=${nk} d=${d} dv=${dv} causal=${causal}`, c, got, ref, maxAbs(v));
      }
    }
  }
});

test('exact kernel: a row gives the same bits however rows are split between calls', async () => {
  for (const flavour of flavours) {
    const backend = await backends.get(flavour)!;
    for (const causal of [false, true]) {
      const c: Case = { nq: 600, nk: 600, d: 67, dv: 67, causal, causalOffset: 0, write: 'merge-fixed' };
      const { q, k, v, part1 } = inputs(c);
      const whole = await runKernel(backend, c, q, k, v, part1);
      // splits inside a micro-tile, a chunk and a key tile, as no job split would make them
      const split = await runKernel(backend, c, q, k, v, part1, [[0, 1], [1, 102], [102, 359], [359, 600]]);
      assert.equal(split.out, whole.out, `${flavour} causal=${causal} out`);
      assert.equal(split.lse, whole.lse, `${flavour} causal=${causal} lse`);
    }
  }
});

