// LSH keys computed independently of the kernels, for the suites that check hashing and
// what HyperAttention builds on it.
import type { KernelMode } from '../src/ops.ts';

export const gray = (x: number) => x ^ (x >> 1);
export function inverseGray(x: number): number {
  let y = x;
  for (let s = 1; s < 32; s <<= 1) y ^= y >> s;
  return y;
}

/** LSH keys computed here, in float32 with the kernels' summation order (k ascending). */
export function lshKeys(x: Float32Array, rows: number, d: number, proj: Float32Array, r: number, mode: KernelMode): Int32Array {
  const keys = new Int32Array(rows);
  for (let i = 0; i < rows; i++) {
    let bin = 0;
    for (let t = 0; t < r; t++) {
      let acc = 0;
      for (let c = 0; c < d; c++) acc = Math.fround(acc + Math.fround(x[i * d + c] * proj[c * r + t]));
      if (acc > 0) bin |= 1 << t;
    }
    keys[i] = mode === 'reference' ? gray(bin) : inverseGray(bin);
  }
  return keys;
}

