// Bad input: every case rejects with a HyperAttentionError of the right code, a message
// that names what was expected, and nothing computed (no progress reported).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { HyperAttentionError, exactAttention, hyperAttention, type HyperOptions } from '../src/index.ts';
import type { Tensor } from '../src/tensor.ts';
import { rejects } from './rejects.ts';
import { randomTensor } from './util.ts';

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
  await rejects('INVALID_SHAPE', /as many queries as keys/, hyper(randomTensor([1, 2, 32, 16], 4), k, v, { causal: true }));
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

test('the errors are thrown as rejections, never synchronously', () => {
  const p = hyperAttention(null as never, k, v);
  assert.instance(p, Promise);
  return p.then(() => assert.unreachable(), (e) => assert.instance(e, HyperAttentionError));
});

test.run();
