// Error of an attention output against float64 exact attention, estimated on a subset of
// query rows: the float64 reference is a plain JavaScript loop (about 1 GFLOP/s), so all
// n rows at n = 32768 would take minutes per case, while a few hundred evenly spaced rows
// (every position range, every head) estimate the same norms to a few percent.
import { referenceAttention } from '../test/reference.ts';
import type { WorkloadTensors } from './workloads.ts';

/** Float64 exact attention on chosen rows of the flattened [B * H * n] query rows. */
export interface ReferenceRows {
  rows: Int32Array;
  out: Float64Array; // [rows, dv]
  lse: Float64Array; // [rows]
}

/** `count` evenly spaced rows of the B * H * n query rows (all of them when count >= that). */
export function evenRows(total: number, count: number): Int32Array {
  if (count >= total) return Int32Array.from({ length: total }, (_, i) => i);
  return Int32Array.from({ length: count }, (_, i) => Math.floor(((i + 0.5) * total) / count));
}

export function referenceRows(x: WorkloadTensors, rows: Int32Array, causal: boolean): ReferenceRows {
  const [, H, n, d] = x.q.shape;
  const [, Hkv] = x.k.shape;
  const dv = x.v.shape[3];
  const out = new Float64Array(rows.length * dv);
  const lse = new Float64Array(rows.length);
  rows.forEach((row, r) => {
    const head = Math.floor(row / n);
    const i = row % n;
    const kvHead = Math.floor(head / H) * Hkv + Math.floor((head % H) / (H / Hkv));
    // A causal row i is exact attention over keys [0, i]: one query against a key prefix.
    const nk = causal ? i + 1 : n;
    const one = referenceAttention({
      q: x.q.data.subarray(row * d, (row + 1) * d),
      k: x.k.data.subarray(kvHead * n * d, (kvHead * n + nk) * d),
      v: x.v.data.subarray(kvHead * n * dv, (kvHead * n + nk) * dv),
      B: 1, H: 1, Hkv: 1, nq: 1, nk, d, dv,
    });
    out.set(one.out, r * dv);
    lse[r] = one.lse[0];
  });
  return { rows, out, lse };
}

export interface AttentionErrors {
  /** ||out - exact||_F / ||exact||_F over the rows */
  relFrobenius: number;
  /**
   * RMS row error over RMS row norm of V: the error in units of a typical value vector.
   * When attention is diffuse, exact rows average many values and have small norms, so
   * relFrobenius blows up on errors that are small next to the values being averaged.
   */
  relToV: number;
  /** max |lse - exact lse| over the rows (nats) */
  maxLseError: number;
}

export function attentionErrors(
  ref: ReferenceRows, out: Float32Array, lse: Float32Array, v: Float32Array, dv: number,
): AttentionErrors {
  let diff = 0;
  let norm = 0;
  let maxLse = 0;
  ref.rows.forEach((row, r) => {
    for (let c = 0; c < dv; c++) {
      const e = ref.out[r * dv + c];
      diff += (out[row * dv + c] - e) ** 2;
      norm += e * e;
    }
    maxLse = Math.max(maxLse, Math.abs(lse[row] - ref.lse[r]));
  });
  let vNorm = 0;
  for (let i = 0; i < v.length; i++) vNorm += v[i] * v[i];
  const rmsV = Math.sqrt(vNorm / (v.length / dv));
  return {
    relFrobenius: Math.sqrt(diff / norm),
    relToV: Math.sqrt(diff / ref.rows.length) / rmsV,
    maxLseError: maxLse,
  };
}

/** Largest elementwise |a - b|: do two implementations compute the same thing? */
export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}
