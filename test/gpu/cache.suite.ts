// The key-value cache on WebGPU (src/cache.ts): keys and values in device buffers of the
// cache's own, calls uploading only their queries. Against the float64 reference over the
// concatenated keys and values (exact attention's 1e-4 on the GPU: float32 in other
// summation orders), against the same calls on plain tensors on WebGPU and against a
// cache on WebAssembly (1e-4 max abs error), GPU queries and results against host ones
// (1e-6); its errors. Fresh random inputs each run.
import { suite } from '../suite.ts';
import { codeOf, concat, referenceCheck, withCache } from '../cache-helpers.ts';
import * as assert from 'uvu/assert';
import { createKVCache, exactAttention, hyperAttention } from '../../src/index.ts';
import { createWebGPUBackend } from '../../src/gpu/index.ts';
import type { Tensor } from '../../src/tensor.ts';
import { maxAbsError, randomTensor } from '../util.ts';
import { readBuffer } from './harness.ts';

const test = suite('gpu cache');
const SEED = (Math.random() * 2 ** 31) >>> 0;
let nextSeed = SEED;
const fresh = (shape: number[]) => randomTensor(shape, nextSeed++);
const GPU = { backend: 'webgpu' } as const;
const TOL = 1e-4;

const checkAgainstReference = referenceCheck(SEED, TOL);

test('a decode loop on a WebGPU cache equals the reference over the concatenated tensors (GQA, dv != d, batch 2)', async () => {
  const [B, H, Hkv, d, dv] = [2, 6, 2, 32, 24];
  await withCache({ batch: B, kvHeads: Hkv, headDim: d, valueDim: dv, capacity: 40, backend: 'webgpu' }, async (cache) => {
    assert.is(cache.backend, 'webgpu');
    const ks = [fresh([B, Hkv, 20, d])];
    const vs = [fresh([B, Hkv, 20, dv])];
    await cache.append(ks[0], vs[0]);
    for (let step = 0; step < 4; step++) {
      const k = fresh([B, Hkv, 1, d]);
      const v = fresh([B, Hkv, 1, dv]);
      await cache.append(k, v);
      ks.push(k);
      vs.push(v);
      const q = fresh([B, H, 1, d]);
      checkAgainstReference(`exact step ${step}`, await exactAttention(q, cache, { ...GPU, causal: true }), q, concat(ks), concat(vs));
      checkAgainstReference(`hyper step ${step}`, await hyperAttention(q, cache, { ...GPU, causal: true }), q, concat(ks), concat(vs));
    }
  });
});

test('chunked causal prefill on a WebGPU cache equals the reference, the plain WebGPU call and a WebAssembly cache', async () => {
  const [H, Hkv, d] = [4, 2, 32];
  const cpu = await createKVCache({ kvHeads: Hkv, headDim: d, capacity: 600 });
  try {
    await withCache({ kvHeads: Hkv, headDim: d, capacity: 600, backend: 'webgpu' }, async (cache) => {
      const ks: Tensor[] = [];
      const vs: Tensor[] = [];
      for (const t of [300, 1, 170]) {
        const k = fresh([1, Hkv, t, d]);
        const v = fresh([1, Hkv, t, d]);
        await cache.append(k, v);
        await cpu.append(k, v);
        ks.push(k);
        vs.push(v);
        const q = fresh([1, H, t, d]);
        const [K, V] = [concat(ks), concat(vs)];
        const gpu = await exactAttention(q, cache, { ...GPU, causal: true });
        checkAgainstReference(`chunk of ${t}`, gpu, q, K, V, true);
        const plain = await exactAttention(q, K, V, { ...GPU, causal: true });
        assert.ok(maxAbsError(gpu.out.data, plain.out.data) <= TOL, `chunk of ${t} (seed ${SEED}): against the plain call`);
        const onCpu = await exactAttention(q, cpu, { backend: 'cpu', causal: true });
        assert.ok(maxAbsError(gpu.out.data, onCpu.out.data) <= TOL, `chunk of ${t} (seed ${SEED}): against the WebAssembly cache`);
      }
      // An approximate plan over the cache's rows: the plain call's, within float32 rounding.
      const q = fresh([1, H, 471, d]);
      const options = { ...GPU, causal: true, mode: 'fixed', minSeqLen: 128, blockSize: 64, sampleSize: 64, seed: 3, tolerance: Infinity } as const;
      const cached = await hyperAttention(q, cache, options);
      const plain = await hyperAttention(q, concat(ks), concat(vs), options);
      assert.ok(maxAbsError(cached.out.data, plain.out.data) <= TOL, `fixed mode (seed ${SEED}): against the plain call`);
    });
  } finally {
    cpu.release();
  }
});

test("a WebGPU cache: calls cannot ask for another backend, or GPU output on the library's device; release frees it, and a released cache is CACHE_RELEASED", async () => {
  const cache = await createKVCache({ kvHeads: 2, headDim: 16, capacity: 8, backend: 'webgpu' });
  await cache.append(fresh([1, 2, 4, 16]), fresh([1, 2, 4, 16]));
  const q = fresh([1, 4, 1, 16]);
  assert.is(await codeOf(() => exactAttention(q, cache, { backend: 'cpu' })), 'INVALID_OPTION');
  assert.is(await codeOf(() => exactAttention(q, cache, { output: 'gpu' } as never)), 'INVALID_OPTION'); // not the caller's device
  assert.is(await codeOf(() => cache.append(fresh([1, 2, 5, 16]), fresh([1, 2, 5, 16]))), 'CACHE_FULL');
  cache.release();
  assert.is(await codeOf(() => exactAttention(q, cache, GPU)), 'CACHE_RELEASED');
  assert.is(await codeOf(() => cache.append(fresh([1, 2, 1, 16]), fresh([1, 2, 1, 16]))), 'CACHE_RELEASED');
  // 64 MB caches made and released in turn: their buffers go.
  for (let i = 0; i < 8; i++) {
    const big = await createKVCache({ kvHeads: 8, headDim: 64, capacity: 16384, backend: 'webgpu' });
    await big.append(fresh([1, 8, 1, 64]), fresh([1, 8, 1, 64]));
    big.release();
  }
});

test("a cache on the caller's device: GPU queries in and output 'gpu' out, equal to the host call (decode and a causal chunk)", async () => {
  const device = (await createWebGPUBackend()).device;
  const onDevice = (t: Tensor) => {
    const buffer = device.createBuffer({ size: t.data.byteLength, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST });
    device.queue.writeBuffer(buffer, 0, t.data as Float32Array<ArrayBuffer>);
    return { buffer, shape: t.shape };
  };
  const readBack = async (buffer: GPUBuffer) => {
    const data = await readBuffer(device, buffer);
    buffer.destroy();
    return data;
  };
  const [H, Hkv, d] = [8, 2, 32];
  await withCache({ kvHeads: Hkv, headDim: d, capacity: 256, device }, async (cache) => {
    const k = fresh([1, Hkv, 200, d]);
    const v = fresh([1, Hkv, 200, d]);
    await cache.append(k, v);
    for (const nq of [1, 50]) {
      const q = fresh([1, H, nq, d]);
      const options = { device, causal: true } as const;
      const host = await exactAttention(q, cache, options);
      checkAgainstReference(`nq=${nq}`, host, q, k, v, true);
      const gpu = await exactAttention(onDevice(q), cache, { ...options, output: 'gpu' });
      assert.equal(gpu.out.shape, [1, H, nq, d]);
      assert.ok(maxAbsError(await readBack(gpu.out.buffer as GPUBuffer), host.out.data) <= 1e-6, `nq=${nq} (seed ${SEED}): out`);
      assert.ok(maxAbsError(await readBack(gpu.lse.buffer as GPUBuffer), host.lse.data) <= 1e-6, `nq=${nq} (seed ${SEED}): lse`);
    }
    // GPU I/O belongs to the cache's device: the library's own is not it.
    assert.is(await codeOf(() => exactAttention(fresh([1, H, 1, d]), cache, { output: 'gpu' } as never)), 'INVALID_OPTION');
  });
});
