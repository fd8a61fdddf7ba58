// Tensors as the API takes them ({ data, shape } on the host, or { buffer, shape } on a
// WebGPU device; row-major [B, H, N, D]) and the checks that turn a malformed one into a
// clear error before anything is computed.
import { HyperAttentionError } from './errors.ts';
import type { WebGPUBufferLike } from './options.ts';

export interface Tensor {
  data: Float32Array;
  shape: readonly number[];
}

/** A float32 tensor in a GPUBuffer (row-major, from byte 0), for device-resident I/O. */
export interface GPUTensor {
  buffer: WebGPUBufferLike;
  shape: readonly number[];
  dtype?: 'float32';
}

export type InputTensor = Tensor | GPUTensor;

export function isHostTensor(t: InputTensor): t is Tensor {
  return !('buffer' in t);
}

/** GPUBufferUsage.COPY_SRC, a constant of the WebGPU spec: no WebGPU global is needed here. */
const COPY_SRC = 0x4;

/** Shapes of one attention problem, after validation. */
export interface AttentionShape {
  B: number;
  H: number;
  Hkv: number;
  nq: number;
  nk: number;
  d: number;
  dv: number;
}

export const MAX_HEAD_DIM = 512;

function checkTensor(name: string, t: unknown): asserts t is InputTensor {
  if (typeof t !== 'object' || t === null) {
    throw new HyperAttentionError('INVALID_SHAPE', `${name}: expected { data: Float32Array, shape: [B, H, N, D] } or { buffer: GPUBuffer, shape }, got ${t === null ? 'null' : typeof t}`);
  }
  const { shape } = t as Partial<Tensor>;
  checkShape(name, shape);
  const size = shape.reduce((a: number, b: number) => a * b, 1);
  if ('buffer' in t) {
    checkGPUTensor(name, t as Partial<GPUTensor>, size);
    return;
  }
  const { data } = t as Partial<Tensor>;
  if (!(data instanceof Float32Array)) {
    throw new HyperAttentionError('INVALID_SHAPE', `${name}.data: expected a Float32Array, got ${describe(data)}`);
  }
  if (data.length !== size) {
    throw new HyperAttentionError('INVALID_SHAPE', `${name}: shape ${JSON.stringify(shape)} needs ${size} elements, data has ${data.length}`);
  }
}

function checkShape(name: string, shape: unknown): asserts shape is number[] {
  if (!Array.isArray(shape) || shape.length !== 4) {
    throw new HyperAttentionError('INVALID_SHAPE', `${name}.shape: expected 4 dimensions [B, H, N, D], got ${JSON.stringify(shape)}`);
  }
  for (const s of shape) {
    if (!Number.isInteger(s) || s < 1) {
      throw new HyperAttentionError('INVALID_SHAPE', `${name}.shape: expected positive integers, got ${JSON.stringify(shape)}`);
    }
  }
}

/** What can be checked without a readback: dtype, size and usage (not the values). */
function checkGPUTensor(name: string, t: Partial<GPUTensor>, size: number): void {
  const { buffer, dtype } = t;
  if (dtype !== undefined && dtype !== 'float32') {
    throw new HyperAttentionError('INVALID_SHAPE', `${name}.dtype: only 'float32' GPU tensors are supported, got ${String(dtype)}`);
  }
  if (typeof buffer !== 'object' || buffer === null || typeof buffer.size !== 'number' || typeof buffer.usage !== 'number') {
    throw new HyperAttentionError('INVALID_SHAPE', `${name}.buffer: expected a GPUBuffer, got ${describe(buffer)}`);
  }
  if (buffer.size < size * 4) {
    throw new HyperAttentionError('INVALID_SHAPE', `${name}: shape ${JSON.stringify(t.shape)} needs ${size * 4} bytes, the buffer has ${buffer.size}`);
  }
  if ((buffer.usage & COPY_SRC) === 0) {
    throw new HyperAttentionError('INVALID_OPTION', `${name}.buffer: needs GPUBufferUsage.COPY_SRC (the call copies from it); its usage is ${buffer.usage}`);
  }
}

function describe(x: unknown): string {
  if (x === null) return 'null';
  if (typeof x === 'object') return (x as object).constructor?.name ?? 'object';
  return typeof x;
}

/** Validates q [B, H, nq, d], k [B, Hkv, nk, d], v [B, Hkv, nk, dv]. */
export function attentionShape(q: unknown, k: unknown, v: unknown, causal: boolean): AttentionShape {
  checkTensor('q', q);
  checkTensor('k', k);
  checkTensor('v', v);
  const shape = shapeOf(q.shape, k.shape, v.shape, causal);
  // GPU tensors are not checked: that would need a readback, which is what they avoid.
  for (const [name, t] of [['q', q], ['k', k], ['v', v]] as const) if (isHostTensor(t)) checkFinite(name, t.data);
  return shape;
}

/** Validates the shapes alone (of tensors yet to come: the scheduler's explain()). */
export function attentionShapeOf(q: unknown, k: unknown, v: unknown, causal: boolean): AttentionShape {
  checkShape('q', q);
  checkShape('k', k);
  checkShape('v', v);
  return shapeOf(q, k, v, causal);
}

function shapeOf(qShape: readonly number[], kShape: readonly number[], vShape: readonly number[], causal: boolean): AttentionShape {
  const [B, H, nq, d] = qShape;
  const [Bk, Hkv, nk, dk] = kShape;
  const [Bv, Hv, nv, dv] = vShape;
  const shapes = `q ${JSON.stringify(qShape)}, k ${JSON.stringify(kShape)}, v ${JSON.stringify(vShape)}`;
  if (Bk !== B || Bv !== B) throw new HyperAttentionError('INVALID_SHAPE', `batch sizes differ: ${shapes}`);
  if (Hv !== Hkv) throw new HyperAttentionError('INVALID_SHAPE', `k and v head counts differ: ${shapes}`);
  if (H % Hkv !== 0) {
    throw new HyperAttentionError('INVALID_SHAPE', `query heads (${H}) must be a multiple of key/value heads (${Hkv}): ${shapes}`);
  }
  if (nv !== nk) throw new HyperAttentionError('INVALID_SHAPE', `k and v sequence lengths differ: ${shapes}`);
  if (dk !== d) throw new HyperAttentionError('INVALID_SHAPE', `q and k head dims differ: ${shapes}`);
  if (causal && nq !== nk) {
    throw new HyperAttentionError('INVALID_SHAPE', `causal attention needs as many queries as keys: ${shapes}`);
  }
  for (const [name, dim] of [['q/k', d], ['v', dv]] as const) {
    if (dim > MAX_HEAD_DIM) {
      throw new HyperAttentionError('UNSUPPORTED_HEAD_DIM', `${name} head dim ${dim} exceeds the supported maximum of ${MAX_HEAD_DIM}`);
    }
  }
  return { B, H, Hkv, nq, nk, d, dv };
}

/** Throws NON_FINITE_INPUT naming the first NaN or infinite element. */
export function checkFinite(name: string, data: Float32Array): void {
  for (let i = 0; i < data.length; i++) {
    const x = data[i];
    if (x - x !== 0) {
      throw new HyperAttentionError('NON_FINITE_INPUT', `${name}: element ${i} is ${x}; inputs must be finite`);
    }
  }
}
