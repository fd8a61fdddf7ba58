// Helpers shared by the test suites: seeded random tensors and error measures against
// the float64 reference.
import { Xoshiro128 } from '../src/random.ts';
import type { Tensor } from '../src/tensor.ts';

/** A tensor of standard normal values (never zeros), deterministic in seed. */
export function randomTensor(shape: number[], seed: number, std = 1): Tensor {
  const rng = new Xoshiro128(seed);
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < data.length; i++) data[i] = rng.nextGaussian() * std;
  return { data, shape };
}

/** ||a - ref||_F / ||ref||_F */
export function relativeError(a: ArrayLike<number>, ref: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < ref.length; i++) {
    num += (a[i] - ref[i]) ** 2;
    den += ref[i] ** 2;
  }
  return Math.sqrt(num / den);
}

export function maxAbsError(a: ArrayLike<number>, ref: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < ref.length; i++) {
    const e = Math.abs(a[i] - ref[i]);
    if (!(e <= m)) m = e; // NaN propagates as a failure
  }
  return m;
}

export function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}
