// Shared by the WebGPU suites in every runtime (Node, Deno, Chromium): the backend under
// test, seeded random inputs (a fresh seed per run, printed so a failure can be replayed),
// poisoned output buffers with guard rows, float64 expectations built on
// test/reference.ts, and comparisons with stated tolerances.
import * as assert from 'uvu/assert';
import type { Backend, BackendBuffer, Destination, KernelMode, RowView, WriteMode } from '../../src/ops.ts';
import { Xoshiro128 } from '../../src/random.ts';
import { referenceAttention } from '../reference.ts';

/** Tolerances: max abs error of out and of lse against float64. */
export const OUT_TOL = 1e-4;
export const LSE_TOL = 1e-4;
/**
 * For storage 'f16', against float64 on inputs rounded to nearest f16: WGSL lets the
 * f32 -> f16 conversion round either way, one f16 ulp (2^-11 relative) per input.
 */
export const F16_TOL = 2e-3;

/** Rows kept in front of and behind every view, filled with GUARD and checked untouched. */
export const GUARD_ROWS = 3;
export const GUARD = 777.25;

const seedOverride = (globalThis as { GPU_TEST_SEED?: number }).GPU_TEST_SEED;
export const RUN_SEED = seedOverride ?? Math.floor(Math.random() * 2 ** 31);
console.log(`gpu suites: seed ${RUN_SEED} (set globalThis.GPU_TEST_SEED to replay)`);

let streams = 0;
/** A new random stream for each call, all derived from the run's seed. */
export function random(): Xoshiro128 {
  return new Xoshiro128(RUN_SEED * 7919 + ++streams);
}

/** Normal values times std; an exact zero is redrawn so inputs are never zeros. */
export function gaussian(rng: Xoshiro128, length: number, std = 1): Float32Array {
  const data = new Float32Array(length);
  for (let i = 0; i < length; i++) {
    let x = 0;
    while (x === 0) x = Math.fround(rng.nextGaussian() * std);
    data[i] = x;
  }
  return data;
}

/** Uniform permutation of [0, n). */
export function permutation(rng: Xoshiro128, n: number): Int32Array {
  const p = Int32Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.nextBelow(i + 1);
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}

/** A [rows, width] matrix in a backend buffer, behind and followed by guard rows. */
export interface Guarded {
  view: RowView;
  buf: BackendBuffer;
  rows: number;
  width: number;
}

/** A guarded matrix holding `data` ([rows, width]), or poison (NaN, or -7 for i32) when omitted. */
export function guarded(
  be: Backend, rows: number, width: number, data?: Float32Array | Int32Array, kind: 'f32' | 'i32' = data instanceof Int32Array ? 'i32' : 'f32',
): Guarded {
  const buf = be.createBuffer(kind, (rows + 2 * GUARD_ROWS) * width);
  const fill = kind === 'i32' ? new Int32Array(buf.length).fill(GUARD) : new Float32Array(buf.length).fill(GUARD);
  if (data) fill.set(data, GUARD_ROWS * width);
  else fill.fill(kind === 'i32' ? -7 : NaN, GUARD_ROWS * width, (GUARD_ROWS + rows) * width);
  be.upload(buf, fill);
  return { view: { buf, row: GUARD_ROWS }, buf, rows, width };
}

/** The matrix's rows, after checking that its guard rows were left alone. */
export async function readGuarded(be: Backend, g: Guarded, label: string): Promise<Float32Array | Int32Array> {
  const all = g.buf.kind === 'i32' ? new Int32Array(g.buf.length) : new Float32Array(g.buf.length);
  await be.download(g.buf, 0, g.buf.length, all);
  const from = GUARD_ROWS * g.width;
  const to = (GUARD_ROWS + g.rows) * g.width;
  const expected = g.buf.kind === 'i32' ? (GUARD | 0) : GUARD;
  for (let i = 0; i < all.length; i++) {
    if ((i < from || i >= to) && all[i] !== expected) {
      assert.unreachable(`${label}: guard element ${i} was overwritten with ${all[i]}`);
    }
  }
  return all.subarray(from, to);
}

/** float64 result of one query row against a list of key rows (each [d]) and values ([dv]). */
export interface RowResult {
  out: Float64Array;
  lse: number;
}

/**
 * Attention of query row q against the given keys plus `phantom` zero keys of value 0,
 * via referenceAttention on the gathered rows. No keys at all gives out 0, lse -Infinity.
 */
export function rowAttention(
  q: Float32Array, keys: Float32Array[], values: Float32Array[], d: number, dv: number, scale: number, phantom = 0,
): RowResult {
  const nk = keys.length + phantom;
  if (nk === 0) return { out: new Float64Array(dv), lse: -Infinity };
  const k = new Float32Array(nk * d);
  const v = new Float32Array(nk * dv);
  keys.forEach((row, j) => k.set(row, j * d));
  values.forEach((row, j) => v.set(row, j * dv));
  const r = referenceAttention({ q, k, v, B: 1, H: 1, Hkv: 1, nq: 1, nk, d, dv, scale });
  return { out: r.out, lse: r.lse[0] };
}

export function row(data: Float32Array, i: number, width: number): Float32Array {
  return data.subarray(i * width, (i + 1) * width);
}

const EPS_F32 = 2 ** -23;

/** float64 merge of part 2 into part 1 with the formulas of docs/algorithm.md. */
export function mergeRows(p1: RowResult, p2: RowResult, write: WriteMode): RowResult {
  if (write === 'write') return p2;
  const { lse: l1 } = p1;
  const { lse: l2 } = p2;
  let c: number;
  let lse: number;
  if (write === 'merge-reference') {
    c = 1 / (1 + Math.exp(l2 - l1));
    lse = l1 - Math.log(c + EPS_F32);
  } else if (l2 === -Infinity) {
    c = 1;
    lse = l1;
  } else if (l1 === -Infinity) {
    c = 0;
    lse = l2;
  } else {
    c = 1 / (1 + Math.exp(l2 - l1));
    lse = Math.max(l1, l2) + Math.log1p(Math.exp(-Math.abs(l1 - l2)));
  }
  return { out: p1.out.map((x, i) => c * x + (1 - c) * p2.out[i]), lse };
}

/** Destination matrices for an attention op: poisoned for 'write', part 1 otherwise. */
export interface Dest {
  out: Guarded;
  lse: Guarded;
  dst: Destination;
  /** what the rows held before (part 1 of a merge) */
  before: RowResult[];
}

export function destination(be: Backend, rng: Xoshiro128, rows: number, dv: number, write: WriteMode): Dest {
  if (write === 'write') {
    const out = guarded(be, rows, dv);
    const lse = guarded(be, rows, 1);
    return { out, lse, dst: { out: out.view, lse: lse.view, write }, before: [] };
  }
  const outData = gaussian(rng, rows * dv, 0.5);
  const lseData = gaussian(rng, rows, 2);
  const out = guarded(be, rows, dv, outData);
  const lse = guarded(be, rows, 1, lseData);
  const before = Array.from({ length: rows }, (_, i) => ({ out: Float64Array.from(row(outData, i, dv)), lse: lseData[i] }));
  return { out, lse, dst: { out: out.view, lse: lse.view, write }, before };
}

/** Downloads the destination and compares every row with the float64 expectation. */
export async function checkDestination(
  be: Backend, dest: Dest, expected: RowResult[], dv: number, label: string, tol = OUT_TOL,
): Promise<void> {
  const out = await readGuarded(be, dest.out, `${label} out`);
  const lse = await readGuarded(be, dest.lse, `${label} lse`);
  expected.forEach((want, i) => {
    expectClose(`${label} lse row ${i}`, lse[i], want.lse, Math.max(tol, LSE_TOL));
    for (let c = 0; c < dv; c++) expectClose(`${label} out row ${i} col ${c}`, out[i * dv + c], want.out[c], tol);
  });
}

/** Values rounded to the nearest f16 (ties upward; random inputs practically never tie). */
export function f16Rounded(x: Float32Array): Float32Array {
  return x.map((value) => {
    if (value === 0) return 0;
    const exponent = Math.max(Math.floor(Math.log2(Math.abs(value))), -14);
    const ulp = 2 ** (exponent - 10);
    return Math.round(value / ulp) * ulp;
  });
}

/** |got - want| <= tol; infinities and NaN must match exactly. */
export function expectClose(label: string, got: number, want: number, tol: number): void {
  if (!Number.isFinite(want)) {
    if (!Object.is(got, want) && !(Number.isNaN(got) && Number.isNaN(want))) {
      assert.unreachable(`${label}: got ${got}, expected ${want}`);
    }
    return;
  }
  if (!(Math.abs(got - want) <= tol)) assert.unreachable(`${label}: got ${got}, expected ${want} (tolerance ${tol})`);
}

/** Same lengths, and every element within tol (expectClose). */
export function expectSame(label: string, a: ArrayLike<number>, b: ArrayLike<number>, tol: number): void {
  assert.is(a.length, b.length, `${label}: lengths`);
  for (let i = 0; i < a.length; i++) expectClose(`${label}[${i}]`, a[i], b[i], tol);
}

function gray(bin: number): number {
  return bin ^ (bin >> 1);
}

function inverseGray(g: number): number {
  let bin = 0;
  for (let x = g; x; x >>= 1) bin ^= x;
  return bin;
}

/**
 * The sort key of row x (float64, independent of the kernels) first, then the keys it may
 * also get in float32: a bit whose projection is within 1e-5 of zero (relative to
 * |x| |p|) may go either way.
 */
export function hashKeys(x: Float32Array, proj: Float32Array, d: number, r: number, mode: KernelMode): number[] {
  const ambiguous: number[] = [];
  let bin = 0;
  for (let t = 0; t < r; t++) {
    let dot = 0;
    let xx = 0;
    let pp = 0;
    for (let j = 0; j < d; j++) {
      dot += x[j] * proj[j * r + t];
      xx += x[j] ** 2;
      pp += proj[j * r + t] ** 2;
    }
    if (dot > 0) bin |= 1 << t;
    if (Math.abs(dot) < 1e-5 * Math.sqrt(xx * pp)) ambiguous.push(t);
  }
  const key = (b: number) => (mode === 'reference' ? gray(b) : inverseGray(b));
  return [key(bin), ...ambiguous.map((t) => key(bin ^ (1 << t)))];
}

/** A storage buffer's float32 contents, read back through a staging buffer. */
export async function readBuffer(device: GPUDevice, buffer: GPUBuffer): Promise<Float32Array> {
  const staging = device.createBuffer({ size: buffer.size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const encoder = device.createCommandEncoder();
  encoder.copyBufferToBuffer(buffer, 0, staging, 0, buffer.size);
  device.queue.submit([encoder.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const data = new Float32Array(staging.getMappedRange().slice(0));
  staging.destroy();
  return data;
}
