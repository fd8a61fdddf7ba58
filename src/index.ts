// Public API: HyperAttention and exact attention on Float32Array tensors, or on GPUBuffers
// of the caller's WebGPU device; the scheduler's calibration, profiles and explain().
import { serialize } from './backends.ts';
import { runExact, runHyper, type AttentionResult, type GPUAttentionResult } from './hyper.ts';
import type { Backend, OpTrace } from './ops.ts';
import type { Plan } from './plan.ts';
import {
  checkDeviceIO, resolveExactOptions, resolveHyperOptions, type ExactOptions, type HyperOptions, type ResolvedExactOptions,
  type ResolvedHyperOptions,
} from './options.ts';
import { callProfile, schedule } from './scheduler/index.ts';
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
export {
  calibrate, configureScheduler, explain, getProfile, setProfile, type CallProfile, type CallShapes,
  type SchedulerConfig,
} from './scheduler/index.ts';
export type { Candidate, Explanation, Split, Step } from './scheduler/cost.ts';
export { formatPlan } from './scheduler/format.ts';
export type { AdapterIdentity, DeviceCosts, Environment, OpCost, Profile } from './scheduler/profile.ts';
export type { Device, OpName } from './ops.ts';

/** Validates a call's tensors, and that GPU tensors among them run on the caller's device. */
function checkInputs(q: InputTensor, k: InputTensor, v: InputTensor, o: ResolvedExactOptions): AttentionShape {
  const shape = attentionShape(q, k, v, o.causal);
  const onGpu = ([['q', q], ['k', k], ['v', v]] as const).find(([, t]) => !isHostTensor(t));
  if (onGpu) checkDeviceIO(o, `${onGpu[0]} (a GPU tensor)`);
  return shape;
}

/**
 * Resolves the options and checks the tensors before any work (so bad input computes
 * nothing), then queues the call; in the queue the scheduler picks its backend (and, with
 * backend 'auto', its cutoff). Every error arrives as a rejection.
 */
function startCall<O extends ResolvedExactOptions>(
  resolve: () => O, hyper: (o: O) => ResolvedHyperOptions | undefined, q: InputTensor, k: InputTensor, v: InputTensor,
  run: (backend: Backend, shape: AttentionShape, o: O, trace: OpTrace[] | undefined, plan: Plan | undefined) => Promise<AttentionResult | GPUAttentionResult>,
): Promise<AttentionResult | GPUAttentionResult> {
  try {
    const o = resolve();
    const shape = checkInputs(q, k, v, o);
    return serialize(async () => {
      const scheduled = await schedule(shape, o, hyper(o), o.profile);
      const chosen = scheduled.minSeqLen === undefined ? o : { ...o, minSeqLen: scheduled.minSeqLen };
      if (!o.profile) return run(scheduled.backend, shape, chosen, undefined, scheduled.work);
      const trace: OpTrace[] = [];
      const start = performance.now();
      const result = await run(scheduled.backend, shape, chosen, trace, scheduled.work);
      return { ...result, profile: callProfile(scheduled.plan!, trace, performance.now() - start) };
    });
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
  return startCall(() => resolveHyperOptions(options), (o) => o, q, k, v, (backend, shape, o, trace, plan) =>
    runHyper(backend, shape, o, q, k, v, o.output, trace, plan));
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
  return startCall(() => resolveExactOptions(options), () => undefined, q, k, v, (backend, shape, o, trace) =>
    runExact(backend, shape, o, q, k, v, o.output, trace));
}
