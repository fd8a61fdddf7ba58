// Public API: HyperAttention and exact attention on Float32Array tensors.
import type { Backend } from './ops.ts';
import { createCpuBackend } from './cpu/backend.ts';
import { HyperAttentionError } from './errors.ts';
import { runExact, runHyper, type AttentionResult } from './hyper.ts';
import { resolveExactOptions, resolveHyperOptions, type BackendChoice, type ExactOptions, type HyperOptions } from './options.ts';
import { attentionShape, type Tensor } from './tensor.ts';

export { HyperAttentionError, type ErrorCode } from './errors.ts';
export { DEFAULTS, type BackendChoice, type ExactOptions, type HyperOptions, type Progress } from './options.ts';
export type { Mode } from './ops.ts';
export type { DrawRequest, Sampler } from './random.ts';
export type { Tensor } from './tensor.ts';
export type { AttentionResult } from './hyper.ts';
export { lshOrder, type LshOrder, type LshOrderOptions } from './inspect.ts';

let cpu: Promise<Backend> | undefined;
// Calls share one backend instance; its memory arena serves one call at a time.
let queue: Promise<unknown> = Promise.resolve();

function backendFor(choice: BackendChoice): Promise<Backend> {
  if (choice === 'webgpu') {
    return Promise.reject(new HyperAttentionError('UNSUPPORTED', "backend 'webgpu' is not available in this build; use 'cpu' or 'auto'"));
  }
  cpu ??= createCpuBackend();
  return cpu;
}

function serialize<T>(work: () => Promise<T>): Promise<T> {
  const next = queue.then(work, work);
  queue = next.catch(() => undefined);
  return next;
}

/**
 * HyperAttention of q [B, H, Nq, D] against k [B, Hkv, Nk, D], v [B, Hkv, Nk, Dv]
 * (H a multiple of Hkv). Returns out [B, H, Nq, Dv] and lse [B, H, Nq] (natural log).
 */
export function hyperAttention(q: Tensor, k: Tensor, v: Tensor, options: HyperOptions = {}): Promise<AttentionResult> {
  try {
    const o = resolveHyperOptions(options);
    const shape = attentionShape(q, k, v, o.causal);
    return serialize(async () => runHyper(await backendFor(o.backend), shape, o, q, k, v));
  } catch (error) {
    return Promise.reject(error);
  }
}

/** Exact attention (flash-style, never materialising Nq x Nk), same shapes as hyperAttention. */
export function exactAttention(q: Tensor, k: Tensor, v: Tensor, options: ExactOptions = {}): Promise<AttentionResult> {
  try {
    const o = resolveExactOptions(options);
    const shape = attentionShape(q, k, v, o.causal);
    return serialize(async () => runExact(await backendFor(o.backend), shape, o, q, k, v));
  } catch (error) {
    return Promise.reject(error);
  }
}
