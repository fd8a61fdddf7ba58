// Tensors as the API takes them ({ data, shape }, row-major [B, H, N, D]) and the checks
// that turn a malformed one into a clear error before anything is computed.
import { HyperAttentionError } from './errors.ts';

export interface Tensor {
  data: Float32Array;
  shape: readonly number[];
}

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

function checkTensor(name: string, t: unknown): asserts t is Tensor {
  if (typeof t !== 'object' || t === null) {
    throw new HyperAttentionError('INVALID_SHAPE', `${name}: expected { data: Float32Array, shape: [B, H, N, D] }, got ${t === null ? 'null' : typeof t}`);
  }
  const { data, shape } = t as Partial<Tensor>;
  if (!(data instanceof Float32Array)) {
    throw new HyperAttentionError('INVALID_SHAPE', `${name}.data: expected a Float32Array, got ${describe(data)}`);
  }
  if (!Array.isArray(shape) || shape.length !== 4) {
    throw new HyperAttentionError('INVALID_SHAPE', `${name}.shape: expected 4 dimensions [B, H, N, D], got ${JSON.stringify(shape)}`);
  }
  for (const s of shape) {
    if (!Number.isInteger(s) || s < 1) {
      throw new HyperAttentionError('INVALID_SHAPE', `${name}.shape: expected positive integers, got ${JSON.stringify(shape)}`);
    }
  }
  const size = shape.reduce((a: number, b: number) => a * b, 1);
  if (data.length !== size) {
    throw new HyperAttentionError('INVALID_SHAPE', `${name}: shape ${JSON.stringify(shape)} needs ${size} elements, data has ${data.length}`);
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
  const [B, H, nq, d] = q.shape;
  const [Bk, Hkv, nk, dk] = k.shape;
  const [Bv, Hv, nv, dv] = v.shape;
  const shapes = `q ${JSON.stringify(q.shape)}, k ${JSON.stringify(k.shape)}, v ${JSON.stringify(v.shape)}`;
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
  for (const [name, t] of [['q', q], ['k', k], ['v', v]] as const) checkFinite(name, t.data);
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
