// What a call returns: its out and lse on the host or on the caller's device, and with
// profile: true the plan next to each step's measured time. Its own module so that the
// executor (hyper.ts), which builds results, does not depend on the scheduler that plans them.
import type { CostClass, Device } from './ops.ts';
import type { Output } from './options.ts';
import type { Explanation } from './scheduler/cost.ts';
import type { Float16Tensor, GPUTensor, Tensor } from './tensor.ts';
import type { Verification } from './verification.ts';

/** What a call with profile: true reports: its plan, and each step's measured time. */
export interface CallProfile {
  plan: Explanation;
  steps: { op: CostClass; device: Device; calls: number; measuredMs: number; predictedMs: number | null }[];
  /** the traced call, from the start of its first op to the end of its last */
  measuredMs: number;
}

export interface AttentionResult {
  out: Tensor;
  lse: Tensor;
  /** with option profile: true, the plan and each step's measured time */
  profile?: CallProfile;
  /**
   * hyperAttention with a finite tolerance: each head's plan, and the error its check rows
   * measured (absent with tolerance Infinity, and for exactAttention)
   */
  verification?: Verification;
}

/** The result of a call with outputDtype 'float16': out's values as float16, lse float32. */
export interface Float16AttentionResult extends Omit<AttentionResult, 'out'> {
  out: Float16Tensor & { dtype: 'float16' };
}

/** The result of a call with output 'gpu': new buffers on the call's device, the caller's to destroy. */
export interface GPUAttentionResult {
  out: GPUTensor & { dtype: 'float32' };
  lse: GPUTensor & { dtype: 'float32' };
  /** with option profile: true, the plan and each step's measured time */
  profile?: CallProfile;
}

/** The result type of a call whose `output` is O (a union gives the union). */
export type ResultFor<O extends Output | undefined> = O extends 'gpu' ? GPUAttentionResult : AttentionResult;
