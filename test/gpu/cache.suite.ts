// The key-value cache where a GPU adapter exists: a cache lives in WebAssembly memory for
// now, so a cache on WebGPU is UNSUPPORTED and a call on a cache cannot ask for WebGPU or
// GPU output (INVALID_OPTION); plain calls on WebGPU still equal the same call on the
// cache's keys and values within float32 rounding (1e-4 max abs error: different
// summation orders), on fresh random inputs.
import { suite } from '../suite.ts';
import * as assert from 'uvu/assert';
import { createKVCache, exactAttention, HyperAttentionError } from '../../src/index.ts';
import { maxAbsError, randomTensor } from '../util.ts';

const test = suite('gpu cache');
const SEED = (Math.random() * 2 ** 31) >>> 0;

async function codeOf(work: () => unknown): Promise<string> {
  try {
    await work();
  } catch (error) {
    assert.instance(error, HyperAttentionError);
    return (error as HyperAttentionError).code;
  }
  throw new Error('expected a HyperAttentionError');
}

test('a cache on WebGPU is UNSUPPORTED; calls on a cache cannot ask for WebGPU or GPU output', async () => {
  assert.is(await codeOf(() => createKVCache({ kvHeads: 2, headDim: 16, capacity: 8, backend: 'webgpu' })), 'UNSUPPORTED');
  const cache = await createKVCache({ kvHeads: 2, headDim: 16, capacity: 8 });
  try {
    cache.append(randomTensor([1, 2, 4, 16], SEED), randomTensor([1, 2, 4, 16], SEED + 1));
    const q = randomTensor([1, 4, 1, 16], SEED + 2);
    assert.is(await codeOf(() => exactAttention(q, cache, { backend: 'webgpu' })), 'INVALID_OPTION');
    assert.is(await codeOf(() => exactAttention(q, cache, { output: 'gpu' } as never)), 'INVALID_OPTION');
  } finally {
    cache.release();
  }
});

test('decoding on a cache equals exact attention on WebGPU over the same keys and values', async () => {
  const [H, Hkv, n, d] = [8, 2, 600, 32];
  const k = randomTensor([1, Hkv, n, d], SEED + 3);
  const v = randomTensor([1, Hkv, n, d], SEED + 4);
  const q = randomTensor([1, H, 1, d], SEED + 5);
  const cache = await createKVCache({ kvHeads: Hkv, headDim: d, capacity: n });
  try {
    cache.append(k, v);
    const cached = await exactAttention(q, cache);
    const gpu = await exactAttention(q, k, v, { backend: 'webgpu' });
    assert.ok(maxAbsError(cached.out.data, gpu.out.data) <= 1e-4, `seed ${SEED}: out`);
    assert.ok(maxAbsError(cached.lse.data, gpu.lse.data) <= 1e-4, `seed ${SEED}: lse`);
  } finally {
    cache.release();
  }
});
