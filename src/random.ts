// Seeded randomness for the draws HyperAttention makes: the Gaussian LSH projections and
// the uniform key samples. A seed fixes every draw, so the same seed, inputs and options
// give bit-identical output on the same backend.
import { inSlices, SLICE_ELEMENTS } from './slices.ts';

/** A draw request, as passed to a caller's sampler: one draw of shape [batch, heads, count]. */
export interface DrawRequest {
  /** 0-based position of this draw in the call's draw order (deepest causal level first). */
  index: number;
  batch: number;
  heads: number;
  count: number;
  /** Values must lie in [0, high). */
  high: number;
}

/** Returns batch * heads * count integers in [0, high), row-major [batch, heads, count]. */
export type Sampler = (request: DrawRequest) => Int32Array;

/** xoshiro128** seeded through splitmix32: small, fast, and well distributed. */
export class Xoshiro128 {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(seed: number) {
    let x = seed >>> 0;
    const next = () => {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.s0 = next();
    this.s1 = next();
    this.s2 = next();
    this.s3 = next();
  }

  /** Next uint32. */
  nextU32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** Uniform in [0, 1) with 32 random bits. */
  nextUnit(): number {
    return this.nextU32() / 4294967296;
  }

  /** Uniform integer in [0, high), unbiased (rejection of the short last bucket). */
  nextBelow(high: number): number {
    const limit = 4294967296 - (4294967296 % high);
    let x = this.nextU32();
    while (x >= limit) x = this.nextU32();
    return x % high;
  }

  /** Standard normal (Box-Muller; one value per call, the pair's second is dropped). */
  nextGaussian(): number {
    const u1 = 1 - this.nextUnit(); // (0, 1]: log is finite
    const u2 = this.nextUnit();
    return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** Gaussian projections [d, r], row-major (column t is projection t). */
export function gaussianProjections(rng: Xoshiro128, d: number, r: number): Float32Array {
  const p = new Float32Array(d * r);
  for (let i = 0; i < p.length; i++) p[i] = rng.nextGaussian();
  return p;
}

/**
 * `length` draws from [0, high), uniformly with replacement, the generator's next ones in
 * order; in time slices (slices.ts): a long prompt's samples are millions of draws.
 */
export async function uniformDraws(rng: Xoshiro128, length: number, high: number, signal?: AbortSignal): Promise<Int32Array> {
  const out = new Int32Array(length);
  await inSlices(length, SLICE_ELEMENTS, (from, to) => {
    for (let i = from; i < to; i++) out[i] = rng.nextBelow(high);
  }, signal);
  return out;
}
