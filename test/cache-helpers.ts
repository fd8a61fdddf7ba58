// What the key-value cache's suites share (test/cache.test.ts on WebAssembly,
// test/gpu/cache.suite.ts on WebGPU): token concatenation, the float64 check of a call's
// result, a typed error's code, and a cache released whatever its test does.
import * as assert from 'uvu/assert';
import { createKVCache, HyperAttentionError, type KVCache } from '../src/index.ts';
import type { Tensor } from '../src/tensor.ts';
import { referenceAttention } from './reference.ts';
import { maxAbs, maxAbsError, relativeError } from './util.ts';

/** Concatenates [B, H, n_i, D] tensors along the tokens. */
export function concat(parts: Tensor[]): Tensor {
  const [B, H, , D] = parts[0].shape;
  const n = parts.reduce((s, p) => s + p.shape[2], 0);
  const data = new Float32Array(B * H * n * D);
  for (let g = 0; g < B * H; g++) {
    let at = g * n * D;
    for (const p of parts) {
      const rows = p.shape[2] * D;
      data.set(p.data.subarray(g * rows, (g + 1) * rows), at);
      at += rows;
    }
  }
  return { data, shape: [B, H, n, D] };
}

type Result = { out: { data: Float32Array }; lse: { data: Float32Array } };

/**
 * A check of a call's out (relative error) and lse (relative to its magnitude) against
 * float64 attention within `tol`; causal queries are the last nq key positions. Failures
 * name the suite's seed.
 */
export function referenceCheck(seed: number, tol: number) {
  return (label: string, r: Result, q: Tensor, k: Tensor, v: Tensor, causal = false): void => {
    const [B, H, nq, d] = q.shape;
    const [, Hkv, nk, dv] = v.shape;
    const ref = referenceAttention({ q: q.data, k: k.data, v: v.data, B, H, Hkv, nq, nk, d, dv, causal, causalOffset: nk - nq });
    const rel = relativeError(r.out.data, ref.out);
    assert.ok(rel <= tol, `${label} (seed ${seed}): relative error ${rel}`);
    const lseErr = maxAbsError(r.lse.data, ref.lse);
    assert.ok(lseErr <= tol * Math.max(1, maxAbs(ref.lse)), `${label} (seed ${seed}): lse error ${lseErr}`);
  };
}

/** The code of the HyperAttentionError `work` throws (it must throw one). */
export async function codeOf(work: () => unknown): Promise<string> {
  try {
    await work();
  } catch (error) {
    assert.instance(error, HyperAttentionError);
    return (error as HyperAttentionError).code;
  }
  throw new Error('expected a HyperAttentionError');
}

/** Runs `work` on a new cache and releases it afterwards. */
export async function withCache<T>(options: Parameters<typeof createKVCache>[0], work: (cache: KVCache) => Promise<T>): Promise<T> {
  const cache = await createKVCache(options);
  try {
    return await work(cache);
  } finally {
    cache.release();
  }
}
