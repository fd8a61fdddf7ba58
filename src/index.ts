// Public API: HyperAttention and exact attention on Float32Array tensors, or on GPUBuffers
// of the caller's WebGPU device.
import type { Backend } from './ops.ts';
import { createCpuBackend } from './cpu/backend.ts';
import { createWebGPUBackend, type WebGPUBackend } from './gpu/index.ts';
import { runExact, runHyper, type AttentionResult, type GPUAttentionResult } from './hyper.ts';
import {
  checkDeviceIO, resolveExactOptions, resolveHyperOptions, type ExactOptions, type HyperOptions, type ResolvedExactOptions,
  type WebGPUDeviceLike,
} from './options.ts';
import { attentionShape, isHostTensor, type AttentionShape, type InputTensor } from './tensor.ts';

export { HyperAttentionError, type ErrorCode } from './errors.ts';
export {
  DEFAULTS, type BackendChoice, type ExactOptions, type HyperOptions, type Output, type Progress, type WebGPUBufferLike,
  type WebGPUDeviceLike,
} from './options.ts';
export type { Mode } from './ops.ts';
export type { DrawRequest, Sampler } from './random.ts';
export type { GPUTensor, InputTensor, Tensor } from './tensor.ts';
export type { AttentionResult, GPUAttentionResult } from './hyper.ts';
export { lshOrder, type LshOrder, type LshOrderOptions } from './inspect.ts';

let cpu: Promise<Backend> | undefined;
let sharedGpu: Promise<WebGPUBackend> | undefined;
const callerGpus = new WeakMap<WebGPUDeviceLike, WebGPUBackend>();
// Calls share one queue: a backend's memory arena serves one call at a time.
let queue: Promise<unknown> = Promise.resolve();

/**
 * The backend of a call. WebGPU backends are kept per device; a backend whose device was
 * lost is replaced (the shared device is then re-acquired), so after a DEVICE_LOST the
 * next call runs on a fresh device.
 */
async function backendFor(o: ResolvedExactOptions): Promise<Backend> {
  if (o.backend !== 'webgpu') {
    cpu ??= createCpuBackend();
    return cpu;
  }
  if (o.device) {
    let backend = callerGpus.get(o.device);
    if (!backend || backend.isLost) {
      backend = await createWebGPUBackend({ device: o.device as GPUDevice });
      callerGpus.set(o.device, backend);
    }
    return backend;
  }
  const current = await sharedGpu?.catch(() => undefined);
  if (current && !current.isLost) return current;
  const next = createWebGPUBackend();
  sharedGpu = next;
  return next;
}

function serialize<T>(work: () => Promise<T>): Promise<T> {
  const next = queue.then(work, work);
  queue = next.catch(() => undefined);
  return next;
}

/** Validates a call's tensors, and that GPU tensors among them run on the caller's device. */
function checkInputs(q: InputTensor, k: InputTensor, v: InputTensor, o: ResolvedExactOptions): AttentionShape {
  const shape = attentionShape(q, k, v, o.causal);
  const onGpu = ([['q', q], ['k', k], ['v', v]] as const).find(([, t]) => !isHostTensor(t));
  if (onGpu) checkDeviceIO(o, `${onGpu[0]} (a GPU tensor)`);
  return shape;
}

/**
 * Resolves the options and checks the tensors before any work (so bad input computes
 * nothing), then queues the call on its backend. Every error arrives as a rejection.
 */
function startCall<O extends ResolvedExactOptions>(
  resolve: () => O, q: InputTensor, k: InputTensor, v: InputTensor,
  run: (backend: Backend, shape: AttentionShape, o: O) => Promise<AttentionResult | GPUAttentionResult>,
): Promise<AttentionResult | GPUAttentionResult> {
  try {
    const o = resolve();
    const shape = checkInputs(q, k, v, o);
    return serialize(async () => run(await backendFor(o), shape, o));
  } catch (error) {
    return Promise.reject(error);
  }
}

/**
 * HyperAttention of q [B, H, Nq, D] against k [B, Hkv, Nk, D], v [B, Hkv, Nk, Dv]
 * (H a multiple of Hkv). Returns out [B, H, Nq, Dv] and lse [B, H, Nq] (natural log), as
 * Float32Arrays, or with output 'gpu' as new GPUBuffers on `device`.
 */
export function hyperAttention(
  q: InputTensor, k: InputTensor, v: InputTensor, options: HyperOptions & { output: 'gpu' },
): Promise<GPUAttentionResult>;
export function hyperAttention(
  q: InputTensor, k: InputTensor, v: InputTensor, options?: HyperOptions & { output?: 'host' },
): Promise<AttentionResult>;
export function hyperAttention(
  q: InputTensor, k: InputTensor, v: InputTensor, options?: HyperOptions,
): Promise<AttentionResult | GPUAttentionResult>;
export function hyperAttention(
  q: InputTensor, k: InputTensor, v: InputTensor, options: HyperOptions = {},
): Promise<AttentionResult | GPUAttentionResult> {
  return startCall(() => resolveHyperOptions(options), q, k, v, (backend, shape, o) =>
    runHyper(backend, shape, o, q, k, v, o.output));
}

/** Exact attention (flash-style, never materialising Nq x Nk), same shapes and outputs as hyperAttention. */
export function exactAttention(
  q: InputTensor, k: InputTensor, v: InputTensor, options: ExactOptions & { output: 'gpu' },
): Promise<GPUAttentionResult>;
export function exactAttention(
  q: InputTensor, k: InputTensor, v: InputTensor, options?: ExactOptions & { output?: 'host' },
): Promise<AttentionResult>;
export function exactAttention(
  q: InputTensor, k: InputTensor, v: InputTensor, options?: ExactOptions,
): Promise<AttentionResult | GPUAttentionResult>;
export function exactAttention(
  q: InputTensor, k: InputTensor, v: InputTensor, options: ExactOptions = {},
): Promise<AttentionResult | GPUAttentionResult> {
  return startCall(() => resolveExactOptions(options), q, k, v, (backend, shape, o) =>
    runExact(backend, shape, o, q, k, v, o.output));
}
