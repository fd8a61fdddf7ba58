// The `layout` option: q, k and v as [B, N, H, D] (sequence before heads, as most model
// code keeps them before its transpose) rather than the [B, H, N, D] the kernels read. Host
// tensors are transposed into [B, H, N, D] at call time and out back into [B, N, H, Dv]; lse
// stays [B, H, N]. The kernels read each head as one contiguous run of rows, which 'bnhd'
// does not have, so one copy each way is what this layout costs.
import { describeChoice } from './describe.ts';
import { HyperAttentionError } from './errors.ts';
import type { Output } from './options.ts';
import type { OutBuffer } from './outbuffer.ts';
import { isTypedArray } from './owned.ts';
import type { AttentionResult, GPUAttentionResult } from './result.ts';
import { inSlices, SLICE_ELEMENTS } from './slices.ts';
import { decodeInput, isHostTensor, toInputTensor, type CheckedInput, type InputTensor, type Tensor } from './tensor.ts';

export type Layout = 'bhnd' | 'bnhd';

/** The call's layout (default 'bhnd'); the other options are resolved and checked elsewhere. */
export function resolveLayout(options: unknown): Layout {
  if (typeof options !== 'object' || options === null) return 'bhnd';
  const { layout = 'bhnd' } = options as { layout?: unknown };
  if (layout !== 'bhnd' && layout !== 'bnhd') {
    throw new HyperAttentionError('INVALID_OPTION', `layout: expected 'bhnd' ([B, H, N, D]) or 'bnhd' ([B, N, H, D]), got ${describeChoice(layout)}`);
  }
  return layout;
}

/**
 * q, k and v each checked on its own, still in the caller's layout and float16 ones not yet
 * decoded (readyInput does both). 'bnhd' runs on host tensors with host output only:
 * transposing a GPUBuffer would need a kernel of its own, which the WebGPU backend does not
 * have yet.
 */
export function checkedInputs(tensors: readonly unknown[], layout: Layout, output: Output): CheckedInput[] {
  const inputs = tensors.map((t, i) => toInputTensor('qkv'[i], t, true));
  if (layout === 'bhnd') return inputs;
  const onGpu = inputs.findIndex((t) => !isHostTensor(t));
  if (onGpu >= 0) {
    throw new HyperAttentionError('INVALID_OPTION', `layout 'bnhd' is not supported for GPU tensors yet (${'qkv'[onGpu]} is a GPUBuffer): pass [B, H, N, D] buffers with layout 'bhnd'`);
  }
  if (output === 'gpu') {
    throw new HyperAttentionError('INVALID_OPTION', "layout 'bnhd' is not supported with output 'gpu' yet (out would stay [B, H, N, Dv] on the device): use output 'host', or layout 'bhnd'");
  }
  return inputs;
}

/**
 * An input of checkedInputs as the kernels read it: float16 decoded, and [B, H, N, D] (a
 * transposed copy for 'bnhd'); at once (small tensors) or, given `slices`, in time slices of
 * the calling thread (slices.ts).
 */
export function readyInput(t: CheckedInput, layout: Layout): InputTensor;
export function readyInput(t: CheckedInput, layout: Layout, slices: { signal?: AbortSignal }): Promise<InputTensor>;
export function readyInput(t: CheckedInput, layout: Layout, slices?: { signal?: AbortSignal }): InputTensor | Promise<InputTensor> {
  const inBhnd = (x: InputTensor) => (layout === 'bhnd' || !isHostTensor(x) ? x : swapMiddle(x, slices));
  return slices ? decodeInput(t, slices).then(inBhnd) : inBhnd(decodeInput(t)) as InputTensor;
}

/**
 * The result in the caller's layout: out [B, N, H, Dv] for 'bnhd' (in time slices, into the
 * `out` option's array where it is float32); lse is [B, H, N] in both.
 */
export async function resultInLayout<R extends AttentionResult | GPUAttentionResult>(
  result: R, layout: Layout, o: { signal?: AbortSignal; out?: OutBuffer },
): Promise<R> {
  if (layout === 'bhnd') return result;
  const into = isTypedArray(o.out, 'Float32Array') ? o.out : undefined;
  return { ...result, out: await swapMiddle((result as AttentionResult).out, { signal: o.signal }, into) };
}

/** A shape-check error's message, told that the shapes it shows are the transposed ones. */
export function explainShapeError(error: unknown, layout: Layout): unknown {
  if (layout === 'bhnd' || !(error instanceof HyperAttentionError) || error.code !== 'INVALID_SHAPE') return error;
  return new HyperAttentionError(error.code, `${error.message} (shapes as [B, H, N, D], transposed from layout 'bnhd')`, { cause: error });
}

/** Shape arrays (explain()'s) in [B, H, N, D]; anything malformed is left for the shape check. */
export function shapeInBhnd<S>(shape: S, layout: Layout): S {
  if (layout === 'bhnd' || !Array.isArray(shape) || shape.length !== 4) return shape;
  const [b, x, y, d] = shape as unknown[];
  return [b, y, x, d] as S;
}

/**
 * [B, X, Y, D] -> [B, Y, X, D], a copy (into `into` where given): its own inverse, so it
 * serves both directions. At once, or given `slices`, a run of source rows at a time with
 * turns of the event loop.
 */
function swapMiddle(t: Tensor): Tensor;
function swapMiddle(t: Tensor, slices: { signal?: AbortSignal } | undefined, into?: Float32Array): Tensor | Promise<Tensor>;
function swapMiddle(t: Tensor, slices?: { signal?: AbortSignal }, into?: Float32Array): Tensor | Promise<Tensor> {
  const [B, X, Y, D] = t.shape;
  const src = t.data;
  const dst = into ?? new Float32Array(src.length);
  /** source rows [B * X) from..to, each Y runs of D */
  const rows = (from: number, to: number) => {
    for (let r = from; r < to; r++) {
      const b = Math.floor(r / X);
      const x = r - b * X;
      for (let y = 0; y < Y; y++) {
        const at = ((b * X + x) * Y + y) * D;
        const into = ((b * Y + y) * X + x) * D;
        // A loop, not set(subarray()): rows are short (D), and a view per row costs more than the copy.
        for (let i = 0; i < D; i++) dst[into + i] = src[at + i];
      }
    }
  };
  const result = { data: dst, shape: [B, Y, X, D] };
  if (!slices) {
    rows(0, B * X);
    return result;
  }
  return inSlices(B * X, Math.max(1, Math.floor(SLICE_ELEMENTS / (Y * D))), rows, slices.signal).then(() => result);
}
