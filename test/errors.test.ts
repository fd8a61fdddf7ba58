// Bad input: every case rejects with a HyperAttentionError of the right code, a message
// that names what was expected, and nothing computed (no progress reported).
import { suite } from './suite.ts';
import * as assert from 'uvu/assert';
import { HyperAttentionError, exactAttention, hyperAttention, setProfile, type HyperOptions } from '../src/index.ts';
import type { Tensor } from '../src/tensor.ts';
import { rejects } from './rejects.ts';
import { randomTensor } from './util.ts';

const test = suite('errors');

const shape = [1, 2, 64, 16];
const q = randomTensor(shape, 1);
const k = randomTensor(shape, 2);
const v = randomTensor(shape, 3);

const hyper = (qq: unknown, kk: unknown, vv: unknown, o: HyperOptions = {}) => (p: { onProgress: () => void }) =>
  hyperAttention(qq as Tensor, kk as Tensor, vv as Tensor, { ...o, ...p });

test('shapes', async () => {
  await rejects('INVALID_SHAPE', /Float32Array/, hyper({ data: [1, 2], shape: [1, 1, 1, 2] }, k, v));
  await rejects('INVALID_SHAPE', /4 dimensions/, hyper({ data: q.data, shape: [2, 64, 16] }, k, v));
  await rejects('INVALID_SHAPE', /needs 2048 elements, data has 2047/, hyper({ data: q.data.subarray(1), shape }, k, v));
  await rejects('INVALID_SHAPE', /positive integers/, hyper({ data: new Float32Array(0), shape: [1, 2, 0, 16] }, k, v));
  await rejects('INVALID_SHAPE', /positive integers/, hyper({ data: q.data, shape: [1, 2, 64.5, 16] }, k, v));
  await rejects('INVALID_SHAPE', /batch sizes differ/, hyper(randomTensor([2, 2, 64, 16], 4), k, v));
  await rejects('INVALID_SHAPE', /multiple of key\/value heads/, hyper(randomTensor([1, 3, 64, 16], 4), k, v));
  await rejects('INVALID_SHAPE', /k and v sequence lengths differ/, hyper(q, k, randomTensor([1, 2, 63, 16], 4)));
  await rejects('INVALID_SHAPE', /head dims differ/, hyper(randomTensor([1, 2, 64, 8], 4), k, v));
  await rejects('INVALID_SHAPE', /at least as many keys as queries/, hyper(randomTensor([1, 2, 96, 16], 4), k, v, { causal: true }));
  await rejects('UNSUPPORTED_HEAD_DIM', /exceeds the supported maximum of 512/, hyper(
    randomTensor([1, 1, 2, 600], 4), randomTensor([1, 1, 2, 600], 5), randomTensor([1, 1, 2, 600], 6),
  ));
});

test('non-finite inputs', async () => {
  for (const [name, bad] of [['NaN', NaN], ['Infinity', Infinity], ['-Infinity', -Infinity]] as const) {
    const t = randomTensor(shape, 9);
    t.data[100] = bad;
    await rejects('NON_FINITE_INPUT', new RegExp(`k: element 100 is ${name}`), hyper(q, t, v));
    await rejects('NON_FINITE_INPUT', /v: element 100/, (p) => exactAttention(q, k, t, p));
  }
});

test('options', async () => {
  await rejects('INVALID_OPTION', /blockSize: expected an integer/, hyper(q, k, v, { blockSize: 1.5 }));
  await rejects('INVALID_OPTION', /blockSize: expected an integer/, hyper(q, k, v, { blockSize: 0 }));
  await rejects('INVALID_OPTION', /sampleSize: expected an integer/, hyper(q, k, v, { sampleSize: -1 }));
  await rejects('INVALID_OPTION', /lshNumProjs: expected an integer in \[1, 16\]/, hyper(q, k, v, { lshNumProjs: 17 }));
  await rejects('INVALID_OPTION', /minSeqLen: expected an integer/, hyper(q, k, v, { minSeqLen: NaN }));
  await rejects('INVALID_OPTION', /seed: expected an integer/, hyper(q, k, v, { seed: -3 }));
  await rejects('INVALID_OPTION', /mode: expected 'accurate', 'reference' or 'fixed'/, hyper(q, k, v, { mode: 'exact' as never }));
  await rejects('INVALID_OPTION', /scale: expected a finite positive number/, hyper(q, k, v, { scale: -1 }));
  await rejects('INVALID_OPTION', /causal: expected a boolean/, hyper(q, k, v, { causal: 1 as never }));
  await rejects('INVALID_OPTION', /backend: expected/, hyper(q, k, v, { backend: 'tpu' as never }));
  await rejects('INVALID_OPTION', /unknown option 'blocksize'/, hyper(q, k, v, { blocksize: 64 } as never));
  await rejects('INVALID_OPTION', /unknown option 'minSeqLen'/, (p) => exactAttention(q, k, v, { minSeqLen: 4, ...p } as never));
});

test('projections', async () => {
  const o = { minSeqLen: 0, lshNumProjs: 7, mode: 'fixed' } as const;
  await rejects('INVALID_OPTION', /projections: expected 112 values \(\[D = 16, lshNumProjs = 7\]\), got 110/, hyper(q, k, v, { ...o, projections: new Float32Array(110) }));
  // The accurate mode takes one [D, lshNumProjs] matrix per LSH round.
  await rejects('INVALID_OPTION', /projections: expected 224 values \(\[lshRounds = 2, D = 16, lshNumProjs = 7\]\), got 112/, hyper(q, k, v, { ...o, mode: 'accurate', lshRounds: 2, projections: new Float32Array(112) }));
  await rejects('INVALID_OPTION', /window: an option of mode 'accurate', but mode is 'reference'/, hyper(q, k, v, { mode: 'reference', window: 8 }));
  const nan = new Float32Array(112).fill(1);
  nan[5] = NaN;
  await rejects('NON_FINITE_INPUT', /projections: element 5/, hyper(q, k, v, { ...o, projections: nan }));
  await rejects('INVALID_OPTION', /projections: expected a Float32Array/, hyper(q, k, v, { ...o, projections: [1, 2] as never }));
});

test('sampler output', async () => {
  // n = 64, blockSize 16: one draw of [1, 2, 8] over [0, 64).
  const o = { minSeqLen: 0, blockSize: 16, sampleSize: 8 };
  await rejects('INVALID_SAMPLER_OUTPUT', /must return an Int32Array of 16 values, got length 15/, hyper(q, k, v, { ...o, sampler: () => new Int32Array(15) }));
  await rejects('INVALID_SAMPLER_OUTPUT', /got \[1, 2\]/, hyper(q, k, v, { ...o, sampler: () => [1, 2] as never }));
  await rejects('INVALID_SAMPLER_OUTPUT', /value 3 is 64, outside \[0, 64\)/, hyper(q, k, v, {
    ...o, sampler: () => Int32Array.from({ length: 16 }, (_, i) => (i === 3 ? 64 : 0)),
  }));
  await rejects('INVALID_SAMPLER_OUTPUT', /value 0 is -1/, hyper(q, k, v, { ...o, sampler: () => new Int32Array(16).fill(-1) }));
});

test('causal minSeqLen too small for the recursion', async () => {
  const t = (s: number) => randomTensor([1, 1, 7, 4], s);
  await rejects('INVALID_OPTION', /minSeqLen 0 is too small/, hyper(t(1), t(2), t(3), { causal: true, minSeqLen: 0, mode: 'reference' }));
});

test('messages describe what was given: BigInt, strings, NaN, typed arrays, long arrays (#13)', async () => {
  const shaped = (shape: unknown) => hyper({ data: q.data, shape }, k, v);
  await rejects('INVALID_SHAPE', /got \[1, 2, 64n, 16\] \(dimension 2 is the bigint 64n\)/, shaped([1, 2, 64n, 16]));
  await rejects('INVALID_SHAPE', /dimension 2 is the string '64'/, shaped([1, 2, '64', 16]));
  await rejects('INVALID_SHAPE', /got \[1, 2, NaN, 16\]/, shaped([1, 2, NaN, 16]));
  await rejects('INVALID_SHAPE', /expected 4 dimensions .* in an array, got an Int32Array of length 4/, shaped(Int32Array.of(1, 2, 64, 16)));
  await rejects('INVALID_OPTION', /blockSize: .*got the string '16'/, hyper(q, k, v, { blockSize: '16' as never }));
  await rejects('INVALID_OPTION', /blockSize: .*got the bigint 16n/, hyper(q, k, v, { blockSize: 16n as never }));
  const o = { minSeqLen: 0, blockSize: 16, sampleSize: 8 };
  await rejects('INVALID_SAMPLER_OUTPUT', /got an Array of length 70000$/, hyper(q, k, v, { ...o, sampler: () => new Array(70000).fill(0) as never }));
});

test('null is rejected for every option alike; only undefined means the default (#13)', async () => {
  for (const key of ['causal', 'backend', 'mode', 'scale', 'blockSize', 'seed', 'sampler', 'output'] as const) {
    await rejects('INVALID_OPTION', new RegExp(`^${key}: got null`), hyper(q, k, v, { [key]: null } as never));
  }
});

test('blockSize and sampleSize are bounded; scale must be finite in float32 (#13)', async () => {
  await rejects('INVALID_OPTION', /blockSize: expected an integer in \[1, 65536\], got 2147483648/, hyper(q, k, v, { blockSize: 2 ** 31 }));
  await rejects('INVALID_OPTION', /blockSize: .*got 4294967312/, hyper(q, k, v, { blockSize: 2 ** 32 + 16 }));
  await rejects('INVALID_OPTION', /sampleSize: expected an integer in \[0, 65536\], got 268435457/, hyper(q, k, v, { sampleSize: 2 ** 28 + 1 }));
  await rejects('INVALID_OPTION', /scale: .*float32.*got 1e\+39/, hyper(q, k, v, { scale: 1e39 }));
  await rejects('INVALID_OPTION', /scale: .*got 1e-50/, (p) => exactAttention(q, k, v, { scale: 1e-50, ...p }));
});

test('inputs whose float32 arithmetic overflows, and results too large for a Float32Array (#13)', async () => {
  const big = { data: q.data.map((x) => x * 1e20), shape };
  await rejects('INPUT_OVERFLOW', /scores and their partial products can reach/, (p) => exactAttention(big, big, v, { backend: 'cpu', ...p }));
  await rejects('INPUT_OVERFLOW', /v: max\|v\|/, hyper(q, k, { data: new Float32Array(v.data.length).fill(3e38), shape }));
  const tall = { data: new Float32Array(64 * 2 ** 18).fill(0.1), shape: [1, 64, 2 ** 18, 1] };
  const wide = (s: number) => randomTensor([1, 1, 16, 1], s);
  await rejects('OUT_OF_MEMORY', /out \[1, 64, 262144, 512\] would hold 8589934592 values/, hyper(tall, wide(1), randomTensor([1, 1, 16, 512], 2)));
});

test('inputs changed before the call has read them: typed errors that say so (#13)', async () => {
  for (const exact of [false, true]) {
    const copy = { data: new Float32Array(q.data), shape };
    const call = exact ? exactAttention(copy, k, v, { backend: 'cpu' }) : hyperAttention(copy, k, v, { backend: 'cpu' });
    copy.data[0] = NaN;
    await rejects('NON_FINITE_INPUT', /q: element 0 is NaN.*inputs must stay unchanged until the call's promise settles/, () => call);
    const detached = { data: new Float32Array(k.data), shape };
    const call2 = exact ? exactAttention(q, detached, v, { backend: 'cpu' }) : hyperAttention(q, detached, v, { backend: 'cpu' });
    structuredClone(detached.data.buffer, { transfer: [detached.data.buffer] });
    await rejects('INVALID_SHAPE', /k\.data: its buffer was detached/, () => call2);
    await rejects('INVALID_SHAPE', /data has 0 \(its ArrayBuffer is detached\)/, hyper(q, detached, v));
  }
});

test('the caller\'s own sampler and onProgress errors pass through as they are (#13)', async () => {
  const mine = new TypeError('mine');
  const fail = () => { throw mine; };
  for (const call of [
    hyperAttention(q, k, v, { backend: 'cpu', minSeqLen: 0, blockSize: 16, sampleSize: 8, sampler: fail }),
    exactAttention(q, k, v, { backend: 'cpu', onProgress: fail }),
  ]) {
    assert.is(await call.then(() => undefined, (e: unknown) => e), mine);
  }
});

test('the errors are thrown as rejections, never synchronously', () => {
  const p = hyperAttention(null as never, k, v);
  assert.instance(p, Promise);
  return p.then(() => assert.unreachable(), (e) => assert.instance(e, HyperAttentionError));
});

test('a profile with a BigInt or other odd values is described, not serialised (#13)', async () => {
  for (const bad of [{ format: 1n }, { format: 'hyperattention-profile', version: 10n ** 30n }]) {
    try {
      await setProfile(bad);
      assert.unreachable('expected INVALID_PROFILE');
    } catch (error) {
      assert.is((error as { code?: string }).code, 'INVALID_PROFILE', String(error));
      assert.match(String(error), /bigint/);
    }
  }
});
