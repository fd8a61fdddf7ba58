// The `out` option (src/outbuffer.ts): a call writes out into the caller's array, which the
// result then holds, and gives the bits a call without it gives: every path of the result
// (the executor's own array for 'bhnd' float32, including a verified call whose heads climb
// the ladder to exact; the transposed 'bnhd' copy; the float16 encoding, in a Float16Array
// where the runtime has one and in a Uint16Array), plain tensors and a key-value cache
// (chunks, and decoding with the query heads of a key-value head as one). The arrays start
// poisoned (NaN, or 0xffff bits) so that a value left unwritten shows. Bad arrays are typed
// errors before any work.
import { suite } from './suite.ts';
import * as assert from 'uvu/assert';
import { createKVCache, exactAttention, hyperAttention, type KVCache } from '../src/index.ts';
import type { Tensor } from '../src/tensor.ts';
import { rejects } from './rejects.ts';
import { randomTensor } from './util.ts';

const test = suite('out option');

const SEED = (Math.random() * 2 ** 31) >>> 0;
let nextSeed = SEED;
const fresh = (shape: number[]) => randomTensor(shape, nextSeed++);

const [B, H, N, D, DV] = [1, 2, 300, 8, 12];
/** Low enough that hyperAttention runs its plan at N (with checks). */
const HYPER = { minSeqLen: 64, sinkKeys: 4, heavyKeys: 8, window: 16, sampleSize: 32 };

function poisoned32(n: number): Float32Array {
  return new Float32Array(n).fill(NaN);
}

function poisoned16(n: number): Uint16Array {
  return new Uint16Array(n).fill(0xffff);
}

/** Bits of a float32 or float16 result, for comparing two results exactly. */
function bits(data: ArrayBufferView & { length: number }): number[] {
  return Array.from(data instanceof Float32Array ? new Uint32Array(data.buffer, data.byteOffset, data.length) : new Uint16Array(data.buffer, data.byteOffset, data.length));
}

function sameResult(got: { out: { data: ArrayBufferView & { length: number } }; lse: { data: Float32Array } }, want: typeof got, label: string) {
  assert.equal(bits(got.out.data), bits(want.out.data), `${label}: out (seed ${SEED})`);
  assert.equal(bits(got.lse.data), bits(want.lse.data), `${label}: lse (seed ${SEED})`);
}

const toBnhd = (t: Tensor): Tensor => {
  const [b, h, n, d] = t.shape;
  const data = new Float32Array(t.data.length);
  for (let x = 0; x < b * h; x++) {
    for (let i = 0; i < n; i++) data.set(t.data.subarray((x * n + i) * d, (x * n + i + 1) * d), ((Math.floor(x / h) * n + i) * h + (x % h)) * d);
  }
  return { data, shape: [b, n, h, d] };
};

test('plain tensors: the same bits as without the option, in the caller\'s array, on every path of the result', async () => {
  const q = fresh([B, H, N, D]);
  const k = fresh([B, H, N, D]);
  const v = fresh([B, H, N, DV]);
  const n = B * H * N * DV;
  const runs = [
    { label: 'hyper, verified', o: { ...HYPER } },
    { label: 'hyper causal, unchecked', o: { ...HYPER, causal: true, tolerance: Infinity } },
    // Every head misses this tolerance: the rungs and exact attention write into the array too.
    { label: 'hyper, climbing to exact', o: { ...HYPER, tolerance: 1e-9 } },
    { label: 'exact causal', o: { causal: true }, exact: true },
  ];
  for (const { label, o, exact } of runs) {
    const call = exact ? exactAttention : hyperAttention;
    const want = await call(q, k, v, o);
    const out = poisoned32(n);
    const got = await call(q, k, v, { ...o, out });
    assert.ok(got.out.data === out, `${label}: result holds the caller's array`);
    sameResult(got, want, label);
    // The array again, holding the last call's values: overwritten, not added to.
    sameResult(await call(q, k, v, { ...o, out }), want, `${label}, reused`);
    if (label === 'hyper, climbing to exact') assert.ok(got.verification!.heads.every((h) => h.plan === 'exact'), 'every head climbed to exact');

    const bnhd = { ...o, layout: 'bnhd' as const };
    const wantT = await call(toBnhd(q), toBnhd(k), toBnhd(v), bnhd);
    const outT = poisoned32(n);
    const gotT = await call(toBnhd(q), toBnhd(k), toBnhd(v), { ...bnhd, out: outT });
    assert.ok(gotT.out.data === outT, `${label} bnhd: result holds the caller's array`);
    sameResult(gotT, wantT, `${label} bnhd`);

    const half = { ...o, outputDtype: 'float16' as const };
    const wantH = await call(q, k, v, half);
    const outH = poisoned16(n);
    const gotH = await call(q, k, v, { ...half, out: outH });
    assert.ok(gotH.out.data === outH, `${label} float16: result holds the caller's Uint16Array`);
    sameResult(gotH, wantH, `${label} float16`);
    const F16 = (globalThis as { Float16Array?: new (n: number) => Uint16Array }).Float16Array;
    if (F16) {
      const outF = new F16(n).fill(NaN);
      const gotF = await call(q, k, v, { ...half, out: outF as never });
      assert.ok(gotF.out.data === (outF as unknown), `${label} float16: result holds the caller's Float16Array`);
      sameResult(gotF, wantH, `${label} Float16Array`);
    }
    const gotTH = await call(toBnhd(q), toBnhd(k), toBnhd(v), { ...bnhd, outputDtype: 'float16', out: poisoned16(n) });
    sameResult(gotTH, await call(toBnhd(q), toBnhd(k), toBnhd(v), { ...bnhd, outputDtype: 'float16' }), `${label} bnhd float16`);
  }
});

test('a key-value cache: chunks and decoding steps write into the caller\'s array, the same bits as without it', async () => {
  const [Hq, Hkv, T] = [4, 2, 600];
  let cache: KVCache | undefined;
  try {
    cache = await createKVCache({ kvHeads: Hkv, headDim: D, valueDim: DV, capacity: T + 1 });
    await cache.append(fresh([1, Hkv, T, D]), fresh([1, Hkv, T, DV]));
    const chunk = fresh([1, Hq, 200, D]);
    for (const [label, call, o] of [
      ['hyper chunk', hyperAttention, { ...HYPER, causal: true }],
      ['exact chunk', exactAttention, { causal: true }],
    ] as const) {
      const want = await call(chunk, cache, o);
      const out = poisoned32(Hq * 200 * DV);
      const got = await call(chunk, cache, { ...o, out });
      assert.ok(got.out.data === out, `${label}: result holds the caller's array`);
      sameResult(got, want, label);
    }
    await cache.append(fresh([1, Hkv, 1, D]), fresh([1, Hkv, 1, DV]));
    const step = fresh([1, Hq, 1, D]);
    const want = await exactAttention(step, cache, { causal: true });
    const out = poisoned32(Hq * DV);
    sameResult(await exactAttention(step, cache, { causal: true, out }), want, 'decoding step');
    const outH = poisoned16(Hq * DV);
    const gotH = await hyperAttention(step, cache, { causal: true, outputDtype: 'float16', out: outH });
    assert.ok((gotH.out.data as unknown) === outH, 'decoding step float16: result holds the caller\'s array');
    sameResult(gotH, await hyperAttention(step, cache, { causal: true, outputDtype: 'float16' }), 'decoding step float16');
    await rejects('INVALID_OPTION', /out: expected 48 values/, (p) => exactAttention(step, cache!, { ...p, out: poisoned32(47) }));
    const both = new Float32Array(step.data.length + Hq * DV);
    both.set(step.data);
    const stepIn = { data: both.subarray(0, step.data.length), shape: step.shape };
    await rejects('INVALID_OPTION', /shares memory with q/, (p) => exactAttention(stepIn, cache!, { ...p, out: both.subarray(16, 16 + Hq * DV) }));
  } finally {
    cache?.release();
  }
});

test('an array detached while the call runs: INVALID_OPTION, saying so', async () => {
  const q = fresh([1, 2, 4096, 16]);
  for (const call of [hyperAttention, exactAttention]) {
    const out = new Float32Array(q.data.length);
    const pending = call(q, q, q, { out });
    // The call takes many turns of the event loop; the first one takes the array away.
    setTimeout(() => structuredClone(out.buffer, { transfer: [out.buffer] }), 0);
    try {
      await pending;
      assert.unreachable('the call resolved into a detached array');
    } catch (error) {
      assert.is((error as { code?: string }).code, 'INVALID_OPTION', String(error));
      assert.match((error as Error).message, /out: its ArrayBuffer was detached while the call ran/);
    }
  }
});

test('bad arrays are INVALID_OPTION before any work: type, dtype, length, shared memory, detached, resizable, GPU output', async () => {
  const q = fresh([B, H, N, D]);
  const k = fresh([B, H, N, D]);
  const v = fresh([B, H, N, DV]);
  const n = B * H * N * DV;
  const cases: [unknown, RegExp, object?][] = [
    [new Float64Array(n), /out: expected a Float32Array/],
    [Array.from({ length: n }, () => 0), /out: expected a Float32Array/],
    [new Uint16Array(n), /out: expected a Float32Array/],
    [new Float32Array(n), /out: expected a Float16Array or a Uint16Array/, { outputDtype: 'float16' }],
    [null, /out: got null/],
    [10n, /out: expected a Float32Array/],
    [new Float32Array(n - 1), new RegExp(`out: expected ${n} values`)],
    [new Float32Array(n + 1), new RegExp(`out: expected ${n} values`)],
    [new Uint16Array(2 * n), new RegExp(`out: expected ${n} values`), { outputDtype: 'float16' }],
    [new Float32Array(0), new RegExp(`out: expected ${n} values`)],
    [v.data.subarray(0, n), /shares memory with v/],
    [new Float32Array(n), /output is 'gpu'/, { output: 'gpu' }],
  ];
  // A view that ends inside q's buffer: same length as out, overlapping q's last values.
  const shared = new Float32Array(q.data.length + n);
  shared.set(q.data);
  const qIn = { data: shared.subarray(0, q.data.length), shape: q.shape };
  cases.push([shared.subarray(q.data.length - 1, q.data.length - 1 + n), /shares memory with q/]);
  const detached = new Float32Array(n);
  structuredClone(detached.buffer, { transfer: [detached.buffer] });
  cases.push([detached, /detached/]);
  for (const [out, pattern, extra] of cases) {
    await rejects('INVALID_OPTION', pattern, (p) => hyperAttention(qIn, k, v, { ...p, ...HYPER, ...extra, out } as never));
    await rejects('INVALID_OPTION', pattern, (p) => exactAttention(qIn, k, v, { ...p, ...extra, out } as never));
  }
  const Resizable = ArrayBuffer as unknown as new (bytes: number, o: { maxByteLength: number }) => ArrayBuffer;
  cases.push([new Float32Array(new Resizable(4 * n, { maxByteLength: 8 * n }), 0, n), /resizable/]);
  // An array right after q's in the same buffer shares none of it.
  const ok = await exactAttention(qIn, k, v, { out: shared.subarray(q.data.length) });
  assert.equal(ok.out.data.length, n);
});
