// Exact attention (the wasm kernels, every build) against the float64 reference.
import { suite } from './suite.ts';
import * as assert from 'uvu/assert';
import { createCpuBackend } from '../src/cpu/backend.ts';
import { RENEW_ABOVE_BYTES, supportedFlavours } from '../src/cpu/wasm.ts';
import { runExact } from '../src/hyper.ts';
import { exactAttention } from '../src/index.ts';
import { resolveExactOptions } from '../src/options.ts';
import { attentionShape } from '../src/tensor.ts';
import { referenceAttention } from './reference.ts';
import { maxAbs, maxAbsError, randomTensor, relativeError } from './util.ts';

const test = suite('exact');

// Tolerances of the Core issue: relative Frobenius error <= 1e-5, max abs error <= 1e-5 max|V|.
const REL_TOL = 1e-5;
const LSE_TOL = 1e-5;

function check(label: string, out: Float32Array, lse: Float32Array, ref: { out: Float64Array; lse: Float64Array }, vmax: number) {
  const rel = relativeError(out, ref.out);
  const abs = maxAbsError(out, ref.out);
  const lseErr = maxAbsError(lse, ref.lse);
  assert.ok(rel <= REL_TOL, `${label}: relative error ${rel}`);
  assert.ok(abs <= 1e-5 * vmax, `${label}: max abs error ${abs} > 1e-5 * ${vmax}`);
  // lse is O(log n + |logits|); compare relative to its size.
  assert.ok(lseErr <= LSE_TOL * Math.max(1, maxAbs(ref.lse)), `${label}: lse error ${lseErr}`);
}

let seed = 1;
for (const n of [1, 2, 255, 257, 1000, 4096]) {
  for (const d of [32, 64, 128]) {
    for (const causal of [false, true]) {
      test(`exact n=${n} d=${d} causal=${causal}`, async () => {
        const shape = [1, 1, n, d];
        const q = randomTensor(shape, seed++);
        const k = randomTensor(shape, seed++);
        const v = randomTensor(shape, seed++);
        const r = await exactAttention(q, k, v, { causal });
        const ref = referenceAttention({ q: q.data, k: k.data, v: v.data, B: 1, H: 1, Hkv: 1, nq: n, nk: n, d, dv: d, causal });
        check(`n=${n} d=${d}`, r.out.data, r.lse.data, ref, maxAbs(v.data));
      });
    }
  }
}

test('exact: batch, grouped-query heads, dv != d, nq != nk, explicit scale', async () => {
  const [B, H, Hkv, nq, nk, d, dv] = [2, 4, 2, 130, 301, 80, 48];
  const q = randomTensor([B, H, nq, d], 11);
  const k = randomTensor([B, Hkv, nk, d], 12);
  const v = randomTensor([B, Hkv, nk, dv], 13);
  const r = await exactAttention(q, k, v, { scale: 0.2 });
  assert.equal(r.out.shape, [B, H, nq, dv]);
  assert.equal(r.lse.shape, [B, H, nq]);
  const ref = referenceAttention({ q: q.data, k: k.data, v: v.data, B, H, Hkv, nq, nk, d, dv, scale: 0.2 });
  check('gqa', r.out.data, r.lse.data, ref, maxAbs(v.data));
});

test('exact: head dims 96 and odd 33 (generic path), large logits', async () => {
  for (const d of [96, 33]) {
    const n = 200;
    const q = randomTensor([1, 1, n, d], 21, 3);
    const k = randomTensor([1, 1, n, d], 22, 3);
    const v = randomTensor([1, 1, n, d], 23);
    const r = await exactAttention(q, k, v, { causal: true });
    const ref = referenceAttention({ q: q.data, k: k.data, v: v.data, B: 1, H: 1, Hkv: 1, nq: n, nk: n, d, dv: d, causal: true });
    check(`d=${d}`, r.out.data, r.lse.data, ref, maxAbs(v.data));
  }
});

test('exact: every wasm build this engine runs matches the reference', async () => {
  const flavours = supportedFlavours();
  // scripts/test.mjs starts Node with relaxed SIMD enabled, so all three builds run here.
  assert.equal(flavours, ['relaxed', 'simd', 'scalar']);
  const shape = [1, 2, 300, 64];
  const q = randomTensor(shape, 31);
  const k = randomTensor(shape, 32);
  const v = randomTensor(shape, 33);
  for (const flavour of flavours) {
    const backend = await createCpuBackend(flavour);
    for (const causal of [false, true]) {
      const r = await runExact(backend, attentionShape(q, k, v, causal), resolveExactOptions({ causal }), q, k, v);
      const ref = referenceAttention({ q: q.data, k: k.data, v: v.data, B: 1, H: 2, Hkv: 2, nq: 300, nk: 300, d: 64, dv: 64, causal });
      check(`${flavour} causal=${causal}`, r.out.data, r.lse.data, ref, maxAbs(v.data));
    }
  }
});

test('exact: many keys (runs of 64 rows in key parts), causal or not, equal the reference, bit for bit on 1 and 2 threads', async () => {
  // 70 rows (a run of 64, then 6); keys not a whole number of parts. The runs were sized by
  // the threads before, and 1 and 2 threads then gave other bits here. Causal, the rows are
  // the last positions: parts of the keys before them, then the square of their own; 5
  // rows (a speculative draft's) take the core kernel in parts.
  const cases: [number, number, number, number, boolean][] = [
    [70, 32773, 64, 64, false], [70, 16500, 129, 127, false], [70, 32773, 64, 64, true], [64, 6200, 129, 127, true], [5, 6000, 3, 5, true],
  ];
  for (const [nq, nk, d, dv, causal] of cases) {
    const label = `nq=${nq} nk=${nk} d=${d} dv=${dv}${causal ? ' causal' : ''}`;
    const q = randomTensor([1, 1, nq, d], seed++);
    const k = randomTensor([1, 1, nk, d], seed++);
    const v = randomTensor([1, 1, nk, dv], seed++);
    const ref = referenceAttention({ q: q.data, k: k.data, v: v.data, B: 1, H: 1, Hkv: 1, nq, nk, d, dv, causal, causalOffset: nk - nq });
    const one = await exactAttention(q, k, v, { backend: 'cpu', threads: 1, causal });
    check(label, one.out.data, one.lse.data, ref, maxAbs(v.data));
    const two = await exactAttention(q, k, v, { backend: 'cpu', threads: 2, causal });
    assert.equal(two.out.data, one.out.data, `${label}: out on 2 threads differs from 1`);
    assert.equal(two.lse.data, one.lse.data, `${label}: lse on 2 threads differs from 1`);
    for (const flavour of supportedFlavours()) {
      const r = await runExact(await createCpuBackend(flavour), attentionShape(q, k, v, causal), resolveExactOptions({ causal }), q, k, v);
      check(`${label} ${flavour}`, r.out.data, r.lse.data, ref, maxAbs(v.data));
    }
  }
});

test('exact: a call that grew WebAssembly memory past 256 MiB leaves it behind (#13)', async () => {
  const backend = await createCpuBackend();
  const shape = [1, 1, 100, 64];
  const q = randomTensor(shape, 41);
  const k = randomTensor(shape, 42);
  const v = randomTensor(shape, 43);
  const before = await runExact(backend, attentionShape(q, k, v, false), resolveExactOptions({}), q, k, v);
  backend.createBuffer('f32', 80 * 2 ** 20); // 320 MiB, as a long call's buffers would be
  assert.ok(backend.memoryBytes > RENEW_ABOVE_BYTES);
  backend.releaseAll();
  assert.ok(backend.memoryBytes < 16 * 2 ** 20, `memory after release: ${backend.memoryBytes} bytes`);
  // The fresh instance computes the same, bit for bit.
  const after = await runExact(backend, attentionShape(q, k, v, false), resolveExactOptions({}), q, k, v);
  assert.equal(after.out.data, before.out.data);
  // Below the threshold the memory is kept, which saves regrowing it on the next call.
  backend.createBuffer('f32', 2 ** 20);
  const kept = backend.memoryBytes;
  backend.releaseAll();
  assert.is(backend.memoryBytes, kept);
});

