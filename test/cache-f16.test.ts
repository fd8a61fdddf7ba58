// A key-value cache that stores float16 (createKVCache's dtype 'float16', src/cache.ts):
// calls on it against the float64 reference over the float16-rounded keys and values,
// against a float32 cache of the same rounded values (bit for bit: the float16 kernels widen
// exactly, then compute as the float32 ones do) and of the unrounded ones (within float16
// rounding), on one thread and two (bit for bit); decoding, which reads the float16 rows in
// place, and every other call, which widens them first. Inputs are fresh random draws each
// run (the seed is in every message).
import { suite } from './suite.ts';
import { codeOf, concat, referenceCheck, withCache } from './cache-helpers.ts';
import * as assert from 'uvu/assert';
import { createKVCache, exactAttention, explain, hyperAttention, HyperAttentionError, type KVCache } from '../src/index.ts';
import { createCpuBackend, CpuBackend } from '../src/cpu/backend.ts';
import { supportedFlavours } from '../src/cpu/wasm.ts';
import type { Tensor } from '../src/tensor.ts';
import { referenceDecodeAll, referenceEncodeAll } from './float16-reference.ts';
import { maxAbs, maxAbsError, randomTensor } from './util.ts';
import { Xoshiro128 } from '../src/random.ts';

const test = suite('cache float16');

const SEED = (Math.random() * 2 ** 31) >>> 0;
let nextSeed = SEED;
const fresh = (shape: number[]) => randomTensor(shape, nextSeed++);

/** Exact attention's tolerance against float64 (as test/exact.test.ts). */
const TOL = 1e-5;
/**
 * A float16 cache against a float32 one of the unrounded values: each key and value moves
 * by up to 2^-11 of itself; out, a weighted mean of values, moves by that much of the
 * largest value for the values' part, and by about twice the largest move of a score for the
 * weights' part (scale·|q·δk|, a few times 2^-11 at these shapes). Max abs error against
 * max |v|.
 */
const ROUNDING_TOL = 1e-2;

const checkAgainstReference = referenceCheck(SEED, TOL);

/** The tensor's values rounded to float16 (the test's own conversions), as float32. */
function rounded(t: Tensor): Tensor {
  return { data: referenceDecodeAll(referenceEncodeAll(t.data)), shape: t.shape };
}

type Result = { out: { data: Float32Array }; lse: { data: Float32Array } };

function sameBits(label: string, a: Result, b: Result): void {
  assert.equal(a.out.data, b.out.data, `${label} (seed ${SEED}): out differs`);
  assert.equal(a.lse.data, b.lse.data, `${label} (seed ${SEED}): lse differs`);
}

/** How many times the WebAssembly backend widened float16 rows during work(). */
async function widenings(work: () => Promise<unknown>): Promise<number> {
  const widen = CpuBackend.prototype.widen;
  let count = 0;
  CpuBackend.prototype.widen = function (this: CpuBackend, ...args: Parameters<typeof widen>) {
    count++;
    return widen.apply(this, args);
  };
  try {
    await work();
  } finally {
    CpuBackend.prototype.widen = widen;
  }
  return count;
}

/** Caches of one shape: float16 on one thread and on two, float32 of the rounded values and of the values as given. */
async function withCaches<T>(
  shape: { kvHeads: number; headDim: number; valueDim?: number; capacity: number },
  work: (c: { half1: KVCache; half2: KVCache; rounded32: KVCache; plain32: KVCache }) => Promise<T>,
): Promise<T> {
  return withCache({ ...shape, dtype: 'float16', threads: 1 }, (half1) =>
    withCache({ ...shape, dtype: 'float16', threads: 2 }, (half2) =>
      withCache({ ...shape, threads: 1 }, (rounded32) =>
        withCache({ ...shape, threads: 1 }, (plain32) => work({ half1, half2, rounded32, plain32 })))));
}

async function appendAll(c: { half1: KVCache; half2: KVCache; rounded32: KVCache; plain32: KVCache }, k: Tensor, v: Tensor): Promise<void> {
  await c.half1.append(k, v);
  await c.half2.append(k, v);
  await c.rounded32.append(rounded(k), rounded(v));
  await c.plain32.append(k, v);
}

/**
 * The call on each cache: the float16 ones against each other and the float32 cache of the
 * rounded values (bit for bit); for exact attention (`exact`), also against the reference
 * over the rounded values and the float32 cache of the given values (within float16
 * rounding). HyperAttention's buckets may change with rounding, so its results on the
 * given values are another approximation, not a nearby one.
 */
async function checkCall(
  label: string, call: (cache: KVCache) => Promise<Result>, c: { half1: KVCache; half2: KVCache; rounded32: KVCache; plain32: KVCache },
  q: Tensor, K: Tensor, V: Tensor, causal: boolean, exact = true,
): Promise<void> {
  const half1 = await call(c.half1);
  sameBits(`${label}: threads 1 and 2`, half1, await call(c.half2));
  sameBits(`${label}: float16 and float32 of the rounded values`, half1, await call(c.rounded32));
  if (!exact) return;
  checkAgainstReference(label, half1, q, rounded(K), rounded(V), causal);
  const err = maxAbsError(half1.out.data, (await call(c.plain32)).out.data) / maxAbs(V.data);
  assert.ok(err <= ROUNDING_TOL, `${label} (seed ${SEED}): ${err} of max |v| from the float32 cache`);
}

test("every WebAssembly build: widen gives every float16 value exactly; the float16 few-rows kernel gives the float32 kernel's bits", async () => {
  const [nk, d, dv] = [4100, 7, 9];
  const k = fresh([nk, d]);
  const v = fresh([nk, dv]);
  // Every finite float16 pattern widened (subnormals, zeros, both signs).
  const all = Uint16Array.from({ length: 65536 }, (_, h) => h).filter((h) => (h & 0x7c00) !== 0x7c00);
  for (const flavour of supportedFlavours()) {
    const backend = await createCpuBackend(flavour);
    const half = (bits: Uint16Array) => {
      const buf = backend.createLasting('f16', bits.length);
      backend.upload(buf, bits);
      return buf;
    };
    const patterns = half(all);
    const [kHalf, vHalf] = [half(referenceEncodeAll(k.data)), half(referenceEncodeAll(v.data))];
    const f32 = (data: Float32Array) => {
      const buf = backend.createBuffer('f32', data.length);
      backend.upload(buf, data);
      return buf;
    };
    const widened = backend.createBuffer('f32', all.length);
    await backend.widen({ src: { buf: patterns, row: 0 }, dst: { buf: widened, row: 0 }, rows: all.length, width: 1 });
    const got = new Float32Array(all.length);
    await backend.download(widened, 0, all.length, got);
    const want = referenceDecodeAll(all);
    for (let i = 0; i < all.length; i++) {
      if (!Object.is(got[i], want[i])) assert.unreachable(`${flavour}: 0x${all[i].toString(16)} widened to ${got[i]}, expected ${want[i]}`);
    }
    const [kRounded, vRounded] = [f32(rounded(k).data), f32(rounded(v).data)];
    for (const nq of [1, 3, 16]) {
      if (!backend.readsHalf(nq, nk, false)) {
        assert.is(flavour, 'scalar', `${flavour} reads float16 in place`);
        continue;
      }
      const q = f32(fresh([nq, d]).data);
      const run = async (kb: typeof kHalf, vb: typeof vHalf) => {
        const [out, lse] = [backend.createBuffer('f32', nq * dv), backend.createBuffer('f32', nq)];
        await backend.exact({
          q: { buf: q, row: 0 }, k: { buf: kb, row: 0 }, v: { buf: vb, row: 0 }, nq, nk, d, dv, scale: 0.4, causal: false, causalOffset: 0,
          dst: { out: { buf: out, row: 0 }, lse: { buf: lse, row: 0 }, write: 'write' },
        });
        const r = { out: { data: new Float32Array(nq * dv) }, lse: { data: new Float32Array(nq) } };
        await backend.download(out, 0, nq * dv, r.out.data);
        await backend.download(lse, 0, nq, r.lse.data);
        return r;
      };
      sameBits(`${flavour} nq=${nq}`, await run(kHalf, vHalf), await run(kRounded, vRounded));
    }
    backend.releaseAll();
  }
});

test('decoding (1 to 20 rows per key-value head, GQA and not) at odd head dims against keys in no whole part or tile', async () => {
  const nk = 4500; // parts of 2048 keys: 2 whole and one of 404, no multiple of 64
  for (const [d, dv] of [[1, 1], [3, 5], [127, 127], [129, 64]]) {
    await withCaches({ kvHeads: 2, headDim: d, valueDim: dv, capacity: nk }, async (c) => {
      const k = fresh([1, 2, nk, d]);
      const v = fresh([1, 2, nk, dv]);
      await appendAll(c, k, v);
      assert.is(c.half1.dtype, 'float16');
      assert.is(c.plain32.dtype, 'float32');
      // 8 query heads: 4 rows per key-value head per query (in place up to 16 rows, then
      // widened); 2: one head's own rows (16 in place, 17 widened).
      for (const [H, nq] of [[8, 1], [8, 3], [8, 4], [8, 5], [2, 1], [2, 16], [2, 17]]) {
        const q = fresh([1, H, nq, d]);
        for (const causal of [false, true]) {
          const label = `d=${d} dv=${dv} H=${H} nq=${nq}${causal ? ' causal' : ''}`;
          await checkCall(`exact ${label}`, (cache) => exactAttention(q, cache, { causal }), c, q, k, v, causal);
          await checkCall(`hyper ${label}`, (cache) => hyperAttention(q, cache, { causal }), c, q, k, v, causal);
          // Up to 16 rows per key-value head, not causal (one query is never causal), are read in place.
          const inPlace = (H / 2) * nq <= 16 && (!causal || nq === 1);
          const widened = await widenings(() => exactAttention(q, c.half1, { causal }));
          assert.is(widened, inPlace ? 0 : 4, `${label}: widened ${widened} times`); // keys and values of 2 heads
        }
      }
    });
  }
});

test('chunked causal prefill: exact, the fixed and accurate modes, and the verified default on a float16 cache', async () => {
  const [H, Hkv, d] = [4, 2, 32];
  await withCaches({ kvHeads: Hkv, headDim: d, capacity: 1200 }, async (c) => {
    const ks: Tensor[] = [];
    const vs: Tensor[] = [];
    for (const t of [300, 1, 700, 65]) {
      const k = fresh([1, Hkv, t, d]);
      const v = fresh([1, Hkv, t, d]);
      await appendAll(c, k, v);
      ks.push(k);
      vs.push(v);
      const q = fresh([1, H, t, d]);
      const [K, V] = [concat(ks), concat(vs)];
      await checkCall(`exact chunk of ${t}`, (cache) => exactAttention(q, cache, { causal: true }), c, q, K, V, true);
      for (const mode of ['fixed', 'accurate'] as const) {
        const options = { causal: true, mode, minSeqLen: 128, blockSize: 64, sampleSize: 64, seed: 7, tolerance: Infinity } as const;
        await checkCall(`${mode} chunk of ${t}`, (cache) => hyperAttention(q, cache, options), c, q, K, V, true, false);
      }
      await checkCall(`verified chunk of ${t}`, (cache) => hyperAttention(q, cache, { causal: true, minSeqLen: 128 }), c, q, K, V, true, false);
    }
    assert.is(c.half1.length, 1066);
    const plan = await explain({ q: [1, H, 1, d], cache: c.half1 }, { backend: 'cpu' }, 'exact');
    assert.ok(plan.steps.some((s) => s.op === 'exact'));
  });
});

test('subnormals, zeros, the largest float16 and values that round to it are stored as float16 rounds them', async () => {
  const [Hkv, n, d] = [1, 4200, 8];
  const special = [65504, -65504, 65519, -65519.5, 6.103515625e-5, 5.960464477539063e-8, -3e-8, 4.5e-8, 1e-30, -0, 0, 1 + 2 ** -11, 1 + 3 * 2 ** -11];
  await withCaches({ kvHeads: Hkv, headDim: d, capacity: n }, async (c) => {
    const k = fresh([1, Hkv, n, d]);
    const v = fresh([1, Hkv, n, d]);
    for (let i = 0; i < special.length; i++) {
      v.data[i * 37] = special[i];
      k.data[i * 41 + 5] = special[i];
    }
    await appendAll(c, k, v);
    const q = fresh([1, 2, 1, d]);
    for (let i = 0; i < q.data.length; i++) q.data[i] *= 1e-4; // scores stay small beside keys of 65504
    await checkCall('decode', (cache) => exactAttention(q, cache), c, q, k, v, false);
    const chunk = fresh([1, 2, 70, d]);
    await checkCall('causal chunk', (cache) => exactAttention(chunk, cache, { causal: true }), c, chunk, k, v, true);
  });
});

test('float16 input is stored bit for bit (a Uint16Array tagged float16, any finite pattern)', async () => {
  const [Hkv, n, d] = [2, 4100, 16];
  const rng = new Xoshiro128(nextSeed++);
  const bits = () => {
    const data = new Uint16Array(Hkv * n * d);
    for (let i = 0; i < data.length; i++) {
      let h: number;
      do h = rng.nextU32() & 0xffff; while ((h & 0x7c00) === 0x7c00 || (h & 0x7fff) > 0x5000); // finite, |x| < 32
      data[i] = h;
    }
    return data;
  };
  const [kBits, vBits] = [bits(), bits()];
  await withCache({ kvHeads: Hkv, headDim: d, capacity: n, dtype: 'float16' }, (half) =>
    withCache({ kvHeads: Hkv, headDim: d, capacity: n }, async (single) => {
      await half.append({ data: kBits, shape: [1, Hkv, n, d], dtype: 'float16' }, { data: vBits, dims: [1, Hkv, n, d], type: 'float16' });
      await single.append({ data: referenceDecodeAll(kBits), shape: [1, Hkv, n, d] }, { data: referenceDecodeAll(vBits), shape: [1, Hkv, n, d] });
      const q = fresh([1, 8, 1, d]);
      sameBits('decode', await exactAttention(q, half), await exactAttention(q, single));
      const chunk = fresh([1, 2, 40, d]);
      sameBits('causal chunk', await exactAttention(chunk, half, { causal: true }), await exactAttention(chunk, single, { causal: true }));
    }));
});

test("a value that rounds past float16's range is INPUT_OVERFLOW naming it, and nothing is appended", async () => {
  const d = 4;
  await withCache({ kvHeads: 2, headDim: d, capacity: 8, dtype: 'float16' }, async (cache) => {
    await cache.append(fresh([1, 2, 2, d]), fresh([1, 2, 2, d]));
    for (const [name, x] of [['k', 65520], ['v', -65520], ['k', 1e6], ['v', 2 ** 120]] as const) {
      const k = fresh([1, 2, 3, d]);
      const v = fresh([1, 2, 3, d]);
      (name === 'k' ? k : v).data[13] = x;
      try {
        await cache.append(k, v);
        assert.unreachable(`${name} ${x} appended`);
      } catch (error) {
        assert.instance(error, HyperAttentionError);
        assert.is((error as HyperAttentionError).code, 'INPUT_OVERFLOW');
        const shown = String(x).replace(/[.+]/g, '\\$&');
        assert.match((error as Error).message, new RegExp(`^${name}: element 13 is ${shown}, beyond float16's range .*dtype 'float32'`));
      }
      assert.is(cache.length, 2);
    }
    const k = fresh([1, 2, 1, d]);
    k.data[0] = 65519; // rounds down to 65504
    await cache.append(k, fresh([1, 2, 1, d]));
    assert.is(cache.length, 3);
    const nan = fresh([1, 2, 1, d]);
    nan.data[1] = NaN;
    assert.is(await codeOf(() => cache.append(nan, fresh([1, 2, 1, d]))), 'NON_FINITE_INPUT');
  });
});

test("the magnitude bounds are the stored values': keys of 65519 are 65504 in a float16 cache", async () => {
  // d * max|q| * max|k| * scale must stay below 1.7e38 (tensor.ts, checkMagnitudes): with
  // this q, keys of 65519 pass it rounded to 65504 and fail it as float32.
  const q = { data: Float32Array.of(1.7e38 / 65511), shape: [1, 1, 1, 1] };
  const k = { data: Float32Array.of(65519, 1), shape: [1, 1, 2, 1] };
  const v = { data: Float32Array.of(1, 2), shape: [1, 1, 2, 1] };
  await withCache({ kvHeads: 1, headDim: 1, capacity: 2, dtype: 'float16' }, async (half) => {
    await half.append(k, v);
    const r = await exactAttention(q, half);
    assert.equal(Array.from(r.out.data), [1]);
  });
  await withCache({ kvHeads: 1, headDim: 1, capacity: 2 }, async (single) => {
    await single.append(k, v);
    assert.is(await codeOf(() => exactAttention(q, single)), 'INPUT_OVERFLOW');
  });
});

test("dtype: 'float32' or 'float16' (on WebAssembly), else INVALID_OPTION; the capacity limit counts 2 bytes a value", async () => {
  for (const dtype of [1, 'f16', null, {}, 'float64', 'bfloat16']) {
    assert.is(await codeOf(() => createKVCache({ kvHeads: 1, headDim: 4, capacity: 4, dtype: dtype as never })), 'INVALID_OPTION', String(dtype));
  }
  try {
    await createKVCache({ kvHeads: 1, headDim: 4, capacity: 4, dtype: 'float16', backend: 'webgpu' });
    assert.unreachable('a WebGPU float16 cache was made');
  } catch (error) {
    assert.is((error as HyperAttentionError).code, 'INVALID_OPTION');
    assert.match((error as Error).message, /WebGPU cache stores float32/);
  }
  // Just past 3 GiB as float32, about 1.5 GiB as float16.
  const big = { kvHeads: 8, headDim: 128, capacity: 3 * 2 ** 30 / (8 * 256 * 4) + 1, threads: 1 };
  assert.is(await codeOf(() => createKVCache(big)), 'INVALID_OPTION');
  await withCache({ ...big, dtype: 'float16' }, async (cache) => {
    assert.is(cache.dtype, 'float16');
    assert.is(cache.capacity, big.capacity);
  });
  await withCache({ kvHeads: 1, headDim: 4, capacity: 4, dtype: 'float32' }, async (cache) => assert.is(cache.dtype, 'float32'));
});
