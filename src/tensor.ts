// Tensors as the API takes them ({ data, shape } on the host, { data, dims } as
// onnxruntime-web and transformers.js tensors carry them, or { buffer, shape } on a WebGPU
// device; row-major [B, H, N, D]; host data float32, or float16 decoded on entry) and the
// checks that turn a malformed one into a clear error before anything is computed.
import { describeChoice, describeValue } from './describe.ts';
import { HyperAttentionError } from './errors.ts';
import { decodeFloat16, decodeFloat16Into, float16Bits, type Float16Data } from './float16.ts';
import { MAX_SAMPLE_SIZE, type WebGPUBufferLike } from './options.ts';
import { canShrink, isShared, isTypedArray } from './owned.ts';
import { inSlices, SLICE_ELEMENTS } from './slices.ts';

export interface Tensor {
  data: Float32Array;
  shape: readonly number[];
}

/**
 * A float16 host tensor: a Float16Array (where the runtime has one), or the float16 bits in
 * a Uint16Array, which must say `dtype: 'float16'` (an untagged Uint16Array is rejected,
 * never guessed). Decoded into float32 by the call (the kernels compute in float32, and a
 * float16 value is exactly a float32 one), a long one in time slices of the calling thread,
 * so that, as float32 data, it must stay unchanged until the call's promise settles; the
 * decoded copy takes twice the float16 data's memory.
 */
export interface Float16Tensor {
  data: Float16Data;
  shape: readonly number[];
  dtype?: 'float16';
}

/** A float32 tensor in a GPUBuffer (row-major, from byte 0), for device-resident I/O. */
export interface GPUTensor {
  buffer: WebGPUBufferLike;
  shape: readonly number[];
  dtype?: 'float32';
}

/**
 * A host tensor that names its shape `dims`: onnxruntime-web's `ort.Tensor` (of type
 * 'float32' or 'float16', on the CPU) and transformers.js's `Tensor` pass as they are.
 * float16 data is a Float16Array, or bits in a Uint16Array with type 'float16' (as
 * onnxruntime gives them), decoded as in Float16Tensor.
 */
export interface DimsTensor {
  data: Float32Array | Float16Data;
  dims: readonly number[];
  type?: 'float32' | 'float16';
}

/** A tensor as the rest of the library reads it, after toInputTensor. */
export type InputTensor = Tensor | GPUTensor;

/**
 * A float16 host input checked but not decoded yet (toInputTensor's `defer`): decodeInput
 * makes it a Tensor, at once or in time slices of the calling thread (decoding a 32k-token
 * layer's float16 queries at once held the thread for about 0.4 s).
 */
export interface HalfInput {
  name: string;
  bits: Uint16Array;
  shape: readonly number[];
}

/** An input as toInputTensor with `defer` gives it. */
export type CheckedInput = InputTensor | HalfInput;

export function isHalfInput(t: CheckedInput): t is HalfInput {
  return 'bits' in t;
}

/** Values of a checked input on the host (0 for a GPU tensor). */
export function hostElements(t: CheckedInput): number {
  return !isHostTensor(t) ? 0 : isHalfInput(t) ? t.bits.length : t.data.length;
}

/** t's float32 values: a HalfInput decoded (at once, or given `slices`, in time slices), anything else as it is. */
export function decodeInput(t: CheckedInput): InputTensor;
export function decodeInput(t: Tensor | HalfInput, slices: { signal?: AbortSignal }): Promise<Tensor>;
export function decodeInput(t: CheckedInput, slices: { signal?: AbortSignal }): Promise<InputTensor>;
export function decodeInput(t: CheckedInput, slices?: { signal?: AbortSignal }): InputTensor | Promise<InputTensor> {
  if (!isHalfInput(t)) return slices ? Promise.resolve(t) : t;
  const { name, bits, shape } = t;
  if (!slices) return { data: decodeFloat16(name, bits), shape };
  const data = new Float32Array(bits.length);
  return inSlices(bits.length, SLICE_ELEMENTS, (from, to) => decodeFloat16Into(name, bits, data, from, to), slices.signal)
    .then(() => ({ data, shape }));
}

/** Anything hyperAttention and exactAttention take as q, k or v. */
export type TensorLike = Tensor | Float16Tensor | DimsTensor | GPUTensor;

/** Whether t lives on the host (a float32 tensor, or float16 bits not yet decoded), not in a GPUBuffer. */
export function isHostTensor<T extends CheckedInput>(t: T): t is Exclude<T, GPUTensor> {
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
  toInputTensor(name, t);
}

/**
 * Checks one tensor on its own (its fields, dtype, shape and size; not its values) and
 * returns what the call uses of it, read once: a new { data, shape } or { buffer, shape }
 * with the shape copied, so that a getter or a later change to the caller's object cannot
 * make the work read something other than what was checked. The values are not copied (that
 * would double a long context's memory), except where the buffer can shrink under the call (a
 * resizable ArrayBuffer); readRows checks them as the work reads them.
 */
export function toInputTensor(name: string, t: unknown): InputTensor;
export function toInputTensor(name: string, t: unknown, defer: true): CheckedInput;
export function toInputTensor(name: string, t: unknown, defer = false): CheckedInput {
  if (typeof t !== 'object' || t === null) {
    throw new HyperAttentionError('INVALID_SHAPE', `${name}: expected { data: Float32Array, shape: [B, H, N, D] } or { buffer: GPUBuffer, shape }, got ${describeValue(t)}`);
  }
  if ('buffer' in t) {
    const { buffer, shape: given, dtype } = t as Partial<GPUTensor>;
    const shape = checkShape(name, given);
    checkGPUTensor(name, buffer, dtype, shape, elements(shape));
    return dtype === undefined ? { buffer: buffer!, shape } : { buffer: buffer!, shape, dtype };
  }
  checkForeign(name, t);
  // Every field once, in one place.
  const { data, dataSync, shape: shapeField, dims, type, dtype } = t as {
    data?: unknown; dataSync?: unknown; shape?: unknown; dims?: unknown; type?: unknown; dtype?: unknown;
  };
  const shapeKey = shapeField === undefined && dims !== undefined ? 'dims' : 'shape';
  const shape = checkShape(name, shapeKey === 'dims' ? dims : shapeField, shapeKey);
  const tag = dtypeOf(name, type, dtype);
  // tf.js: `data` is an async method and `dataSync` its blocking twin; the values live on its backend.
  if (typeof dataSync === 'function' || typeof data === 'function') {
    throw new HyperAttentionError('INVALID_SHAPE', `${name}: a tf.js-style tensor (its values are on its backend, data is a method): pass { data: await ${name}.data(), shape: ${name}.shape } (a float32 tensor's data() is a Float32Array)`);
  }
  const half = float16Data(name, data, tag);
  if (!half && !isTypedArray(data, 'Float32Array')) {
    throw new HyperAttentionError('INVALID_SHAPE', `${name}.data: expected a Float32Array (or float16: a Float16Array, or a Uint16Array of float16 bits with dtype: 'float16'), got ${describeValue(data)}`);
  }
  const values: Float32Array | Float16Data = half ?? (data as Float32Array);
  const size = elements(shape);
  const width = half ? 2 : 4;
  // byteLength too: Node 20's V8, once a resizable buffer has been used, can report a
  // detached array's former length from optimised code (its byteLength is right).
  if (values.length !== size || values.byteLength !== size * width) {
    // A transferred (detached) buffer reads as length 0: say so rather than leave a puzzle.
    const detached = values.byteLength === 0 && values.byteOffset === 0 && values.buffer.byteLength === 0 ? ' (its ArrayBuffer is detached)' : '';
    throw new HyperAttentionError('INVALID_SHAPE', `${name}: ${shapeKey} ${describeValue(shape)} needs ${size} elements, data has ${values.byteLength / width}${detached}`);
  }
  if (half) {
    const bits = float16Bits(half);
    // Deferred, the bits are read later: a copy where the buffer can shrink under the call.
    if (defer) return { name, bits: canShrink(bits) ? bits.slice() : bits, shape };
    return { data: decodeFloat16(name, bits), shape };
  }
  const float32 = data as Float32Array;
  return { data: canShrink(float32) ? float32.slice() : float32, shape };
}

/** The tensor's dtype from its `type` (onnxruntime's name) or `dtype`, undefined where it gives none. */
function dtypeOf(name: string, type: unknown, dtype: unknown): 'float32' | 'float16' | undefined {
  for (const [key, value] of [['type', type], ['dtype', dtype]] as const) {
    if (value !== undefined && value !== 'float32' && value !== 'float16') {
      throw new HyperAttentionError('INVALID_SHAPE', `${name}.${key}: only 'float32' and 'float16' tensors are supported, got ${describeChoice(value)}`);
    }
  }
  if (type !== undefined && dtype !== undefined && type !== dtype) {
    throw new HyperAttentionError('INVALID_SHAPE', `${name}: type ${describeChoice(type)} and dtype ${describeChoice(dtype)} disagree`);
  }
  return (dtype ?? type) as 'float32' | 'float16' | undefined;
}

/**
 * The data when it is float16 (a Float16Array untagged or tagged 'float16', or a Uint16Array
 * tagged 'float16'), undefined when it should be float32; a Uint16Array without the tag, or
 * data of another dtype than the tag says, is an error: bits are never guessed to be float16.
 */
function float16Data(name: string, data: unknown, tag: 'float32' | 'float16' | undefined): Float16Data | undefined {
  const kind = isTypedArray(data, 'Float16Array') ? 'Float16Array' : isTypedArray(data, 'Uint16Array') ? 'Uint16Array' : undefined;
  if (tag === 'float16' ? kind !== undefined : kind === 'Float16Array' && tag === undefined) return data as Float16Data;
  if (kind === 'Uint16Array') {
    throw new HyperAttentionError('INVALID_SHAPE', `${name}.data: a Uint16Array is taken only as float16 bits, and only when the tensor says so: pass { data, shape, dtype: 'float16' } (onnxruntime's 'float16' tensors say type: 'float16'); other 16-bit data is not supported`);
  }
  if (kind === 'Float16Array') {
    throw new HyperAttentionError('INVALID_SHAPE', `${name}: data is a Float16Array but the tensor says 'float32': leave the dtype out or say 'float16'`);
  }
  if (tag === 'float16') {
    throw new HyperAttentionError('INVALID_SHAPE', `${name}: the tensor says 'float16', so data must be a Float16Array or a Uint16Array of float16 bits, got ${describeValue(data)}`);
  }
  return undefined;
}

/**
 * An onnxruntime tensor whose values are off the CPU: a clear way to pass it instead of a
 * confusing message about `data` (which, on it, throws: so it is read only after this).
 */
function checkForeign(name: string, t: object): void {
  const { location } = t as { location?: unknown };
  if (typeof location === 'string' && location !== 'cpu' && location !== 'cpu-pinned') {
    throw new HyperAttentionError('INVALID_SHAPE', `${name}: an onnxruntime tensor on '${location}': pass { data: await ${name}.getData(), dims: ${name}.dims }, or a GPU buffer as { buffer: ${name}.gpuBuffer, shape: ${name}.dims } with options.device`);
  }
}

function elements(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** The shape, checked, as a copy read once (a getter or a Proxy cannot change it afterwards). */
export function checkShape(name: string, given: unknown, key = 'shape'): number[] {
  const shape: unknown[] | undefined = Array.isArray(given) ? Array.from(given) : undefined;
  if (!shape || shape.length !== 4) {
    const what = shape ? `${shape.length} dimensions: ${describeValue(shape)}` : describeValue(given);
    throw new HyperAttentionError('INVALID_SHAPE', `${name}.${key}: expected 4 dimensions [B, H, N, D] (or [B, N, H, D] with layout 'bnhd') in an array, got ${what}`);
  }
  for (const [i, s] of shape.entries()) {
    if (!Number.isInteger(s) || (s as number) < 1) {
      throw new HyperAttentionError('INVALID_SHAPE', `${name}.${key}: expected positive integers, got ${describeValue(shape)} (dimension ${i} is ${describeValue(s)})`);
    }
  }
  return shape as number[];
}

/** What can be checked without a readback: dtype, size and usage (not the values). */
function checkGPUTensor(name: string, buffer: unknown, dtype: unknown, shape: readonly number[], size: number): asserts buffer is WebGPUBufferLike {
  if (dtype === 'float16') {
    throw new HyperAttentionError('UNSUPPORTED', `${name}.dtype: float16 GPU tensors are not supported (the WebGPU kernels read float32 buffers): convert to float32 on the device, or pass the values from the host as float16 ({ data: Uint16Array or Float16Array, shape, dtype: 'float16' })`);
  }
  if (dtype !== undefined && dtype !== 'float32') {
    throw new HyperAttentionError('INVALID_SHAPE', `${name}.dtype: only 'float32' GPU tensors are supported, got ${describeValue(dtype)}`);
  }
  const { size: bytes, usage } = (buffer ?? {}) as Partial<WebGPUBufferLike>;
  if (typeof buffer !== 'object' || buffer === null || typeof bytes !== 'number' || typeof usage !== 'number') {
    throw new HyperAttentionError('INVALID_SHAPE', `${name}.buffer: expected a GPUBuffer, got ${describeValue(buffer)}`);
  }
  if (bytes < size * 4) {
    throw new HyperAttentionError('INVALID_SHAPE', `${name}: shape ${JSON.stringify(shape)} needs ${size * 4} bytes, the buffer has ${bytes}`);
  }
  if ((usage & COPY_SRC) === 0) {
    throw new HyperAttentionError('INVALID_OPTION', `${name}.buffer: needs GPUBufferUsage.COPY_SRC (the call copies from it); its usage is ${usage}`);
  }
}

/**
 * Validates q [B, H, nq, d], k [B, Hkv, nk, d], v [B, Hkv, nk, dv]: shapes, finite values,
 * and magnitudes whose float32 arithmetic cannot overflow (with the call's scale, default
 * 1 / sqrt(d)).
 */
export function attentionShape(q: unknown, k: unknown, v: unknown, causal: boolean, scale?: number): AttentionShape {
  checkTensor('q', q);
  checkTensor('k', k);
  checkTensor('v', v);
  const shape = shapeOf(q.shape, k.shape, v.shape, causal);
  checkValuesNow([q, k, v], shape, scale);
  return shape;
}

/**
 * The values of a call's host inputs (of this shape) checked at once: finite, magnitudes
 * that cannot overflow; GPU tensors are not checked (that would need a readback, which is
 * what they avoid). checkValues does the same in time slices.
 */
export function checkValuesNow(qkv: readonly InputTensor[], shape: AttentionShape, scale: number | undefined): void {
  const max = { q: 0, k: 0, v: 0 };
  for (const [i, name] of (['q', 'k', 'v'] as const).entries()) {
    const t = qkv[i];
    if (isHostTensor(t)) max[name] = finiteMaxAbs(name, t.data);
  }
  boundValues(shape, qkv, max, scale);
}

/**
 * The values of a call's q, k and v (each checked on its own, their shapes together: shape)
 * checked as checkValuesNow checks them, in time slices of the calling thread (slices.ts).
 */
export async function checkValues(
  qkv: readonly InputTensor[], shape: AttentionShape, scale: number | undefined, signal?: AbortSignal,
): Promise<void> {
  const max = { q: 0, k: 0, v: 0 };
  for (const [i, name] of (['q', 'k', 'v'] as const).entries()) {
    const t = qkv[i];
    if (isHostTensor(t)) max[name] = await finiteMaxAbsInSlices(name, t.data, signal);
  }
  boundValues(shape, qkv, max, scale);
}

/** finiteMaxAbs of the whole array, in time slices (slices.ts). */
export async function finiteMaxAbsInSlices(name: string, data: Float32Array, signal?: AbortSignal): Promise<number> {
  let max = 0;
  await inSlices(data.length, SLICE_ELEMENTS, (from, to) => {
    max = Math.max(max, finiteMaxAbs(name, data.subarray(from, to), from));
  }, signal);
  return max;
}

/** Rejects magnitudes that overflow, and records the call's bounds for readRows. */
function boundValues(
  shape: AttentionShape, qkv: readonly InputTensor[], max: { q: number; k: number; v: number }, scale: number | undefined,
): void {
  const bounds = { shape, scale: scale ?? 1 / Math.sqrt(shape.d), max };
  checkMagnitudes(shape, max, bounds.scale);
  for (const [i, name] of (['q', 'k', 'v'] as const).entries()) {
    const t = qkv[i];
    if (isHostTensor(t)) checked.set(t, { name, bounds });
  }
}

/** What attentionShape found of a host input: its name, and the call's bounds its values must keep to while the call reads them. */
const checked = new WeakMap<Tensor, { name: 'q' | 'k' | 'v'; bounds: { shape: AttentionShape; scale: number; max: { q: number; k: number; v: number } } }>();

/**
 * `length` values of a host input from `from`, as the work reads them (into a backend's own
 * memory, once per call), checked like the call checked them: a caller that shrinks the
 * buffer, writes NaN, or writes magnitudes that would overflow while the call runs gets a
 * typed error, not a result computed from stale memory or an infinite one. A shared buffer
 * (another thread may write it meanwhile) is copied first, so that the check and the work
 * see the same values.
 */
export function readRows(t: Tensor, from: number, length: number): Float32Array {
  const check = checked.get(t);
  const changed = (what: string) => `${what} (the input changed while the call ran: inputs must stay unchanged until the call's promise settles)`;
  let rows: Float32Array;
  try {
    rows = t.data.subarray(from, from + length);
  } catch {
    rows = new Float32Array(0); // detached
  }
  if (rows.length !== length || rows.byteLength !== length * 4) {
    throw new HyperAttentionError('INVALID_SHAPE', changed(`${check?.name ?? 'input'}.data: its buffer was detached or resized, ${t.data.length} values left of ${elements(t.shape)}`));
  }
  if (!check) return rows;
  if (isShared(rows)) rows = rows.slice();
  const { name, bounds } = check;
  try {
    const max = finiteMaxAbs(name, rows);
    if (max > bounds.max[name]) {
      bounds.max[name] = max;
      checkMagnitudes(bounds.shape, bounds.max, bounds.scale);
    }
  } catch (error) {
    const e = error as HyperAttentionError;
    throw new HyperAttentionError(e.code, changed(e.message));
  }
  return rows;
}

/** Half of float32's largest value: the margin covers rounding in the kernels' sums. */
const FLOAT32_SAFE = 1.7e38;

/**
 * Finite inputs can still overflow float32 inside the kernels: a score q·k·scale is at most
 * d·max|q|·max|k|·scale, and a row's unnormalised sum of values at most max(nk, m)·max|v|.
 * Past float32's range those give Infinity, then NaN, in every output: reject them up front.
 * Each factor counts as at least 1 because the kernels form partial products (q·scale
 * first) that may exceed the whole: 3e38 · scale 2 overflows though k's 0.1 would not.
 */
export function checkMagnitudes(s: AttentionShape, max: { q: number; k: number; v: number }, scale: number): void {
  const score = s.d * Math.max(1, max.q) * Math.max(1, max.k) * Math.max(1, scale);
  if (score > FLOAT32_SAFE) {
    throw new HyperAttentionError(
      'INPUT_OVERFLOW',
      `q and k: scores and their partial products can reach d * max|q| * max|k| * scale (each at least 1) = ${s.d} * ${short(max.q)} * ${short(max.k)} * ${short(scale)} = ${short(score)}, beyond float32 (expected at most ${FLOAT32_SAFE}); scale the inputs down`,
    );
  }
  const sum = Math.max(s.nk, MAX_SAMPLE_SIZE) * max.v;
  if (sum > FLOAT32_SAFE) {
    throw new HyperAttentionError(
      'INPUT_OVERFLOW',
      `v: max|v| = ${short(max.v)} times up to ${Math.max(s.nk, MAX_SAMPLE_SIZE)} summed values is ${short(sum)}, beyond float32 (expected at most ${FLOAT32_SAFE}); scale v down`,
    );
  }
}

function short(x: number): string {
  return x !== 0 && (Math.abs(x) >= 1e6 || Math.abs(x) < 1e-3) ? x.toExponential(3) : String(Number(x.toPrecision(4)));
}

/**
 * The largest Float32Array a call allocates for its result, in elements: 2^31 - 1 is within
 * every engine's typed-array limit (V8's, SpiderMonkey's, JavaScriptCore's).
 */
export const MAX_OUTPUT_ELEMENTS = 2 ** 31 - 1;

/** Host outputs out [B, H, nq, dv] and lse [B, H, nq] must fit a Float32Array: checked before any work. */
export function checkOutputSize(s: AttentionShape): void {
  const elements = s.B * s.H * s.nq * s.dv;
  if (elements > MAX_OUTPUT_ELEMENTS) {
    throw new HyperAttentionError(
      'OUT_OF_MEMORY',
      `out [${s.B}, ${s.H}, ${s.nq}, ${s.dv}] would hold ${elements} values; a result holds at most ${MAX_OUTPUT_ELEMENTS} (2^31 - 1)`,
    );
  }
}

/** Validates the shapes alone (of tensors yet to come: the scheduler's explain()). */
export function attentionShapeOf(q: unknown, k: unknown, v: unknown, causal: boolean): AttentionShape {
  return shapeOf(checkShape('q', q), checkShape('k', k), checkShape('v', v), causal);
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
  // Causal queries are the last nq key positions (bottom-right aligned): there must be at
  // least as many keys as queries.
  if (causal && nq > nk) {
    throw new HyperAttentionError(
      'INVALID_SHAPE',
      `causal attention needs at least as many keys as queries (the queries are the last nq key positions): ${shapes}`,
    );
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
  finiteMaxAbs(name, data);
}

/** float32 bits from which a value is not finite: infinity's exponent (NaNs lie above it). */
const NON_FINITE_BITS = 0x7f800000;
const BITS = new Int32Array(1);
const BITS_AS_FLOAT = new Float32Array(BITS.buffer);

/**
 * The largest of data's values' float32 bits with the sign cleared: the bits of
 * non-negative float32 values order as integers do, so this is max |x|'s bits where every
 * value is finite, and NON_FINITE_BITS or more where any is not. One pass of integer
 * operations, four running maxima (no chain of float operations to wait on).
 */
function maxAbsBits(data: Float32Array): number {
  const u = new Int32Array(data.buffer, data.byteOffset, data.length);
  const n = u.length;
  let a = 0;
  let b = 0;
  let c = 0;
  let d = 0;
  let i = 0;
  for (; i + 3 < n; i += 4) {
    const x = u[i] & 0x7fffffff;
    const y = u[i + 1] & 0x7fffffff;
    const z = u[i + 2] & 0x7fffffff;
    const w = u[i + 3] & 0x7fffffff;
    a = x > a ? x : a;
    b = y > b ? y : b;
    c = z > c ? z : c;
    d = w > d ? w : d;
  }
  for (; i < n; i++) {
    const x = u[i] & 0x7fffffff;
    a = x > a ? x : a;
  }
  return Math.max(a, b, c, d);
}

/**
 * max |x| over data; throws NON_FINITE_INPUT naming the first NaN or infinity (its index
 * plus `at`: where data starts in the tensor). One pass (maxAbsBits): it scans every input
 * of a call before any work, 12 M values at 64k.
 */
export function finiteMaxAbs(name: string, data: Float32Array, at = 0): number {
  const bits = maxAbsBits(data);
  if (bits >= NON_FINITE_BITS) {
    const first = data.findIndex((x) => x - x !== 0);
    throw new HyperAttentionError('NON_FINITE_INPUT', `${name}: element ${at + first} is ${data[first]}; inputs must be finite`);
  }
  BITS[0] = bits;
  return BITS_AS_FLOAT[0];
}

/** Whether every value is finite (the check of finiteMaxAbs, without the maximum), in time slices (slices.ts). */
export async function allFinite(data: Float32Array, signal?: AbortSignal): Promise<boolean> {
  let finite = true;
  await inSlices(data.length, SLICE_ELEMENTS, (from, to) => {
    if (finite && maxAbsBits(data.subarray(from, to)) >= NON_FINITE_BITS) finite = false;
  }, signal);
  return finite;
}
