// float16 on the host: inputs decoded into the float32 the kernels compute in (a 65536-entry
// table, exact for every pattern: subnormals, ±0, ±Infinity, NaN), and the `outputDtype:
// 'float16'` result encoded with round-to-nearest-even. A float16 array is a Float16Array
// where the runtime has one (ES2025), else its bits in a Uint16Array, as onnxruntime gives a
// 'float16' tensor's data.
import { HyperAttentionError } from './errors.ts';

/**
 * A Float16Array (ES2025), typed by what the library needs of it, so that the library's types
 * do not need a TypeScript lib that has Float16Array.
 */
export interface Float16ArrayLike extends ArrayBufferView {
  readonly length: number;
  readonly [Symbol.toStringTag]: 'Float16Array';
  [index: number]: number;
}

/** float16 values: a Float16Array, or their bits in a Uint16Array. */
export type Float16Data = Float16ArrayLike | Uint16Array;

let table: Float32Array | undefined;

/** The float32 value of every float16 bit pattern (float16 widens to float32 exactly). */
function decodeTable(): Float32Array {
  if (table) return table;
  table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const exponent = (h >> 10) & 0x1f;
    const mantissa = h & 0x3ff;
    const magnitude = exponent === 0 ? mantissa * 2 ** -24
      : exponent === 0x1f ? (mantissa === 0 ? Infinity : NaN)
      : (0x400 + mantissa) * 2 ** (exponent - 25);
    table[h] = h & 0x8000 ? -magnitude : magnitude;
  }
  return table;
}

/** The bits of float16 data, as a view (no copy). */
export function float16Bits(data: Float16Data): Uint16Array {
  return new Uint16Array(data.buffer, data.byteOffset, data.length);
}

/**
 * float16 bits decoded into a new Float32Array. A NaN or infinity is NON_FINITE_INPUT, as
 * in a float32 input, naming the element and its bits.
 */
export function decodeFloat16(name: string, bits: Uint16Array): Float32Array {
  const out = new Float32Array(bits.length);
  decodeFloat16Into(name, bits, out, 0, bits.length);
  return out;
}

/**
 * bits [from, to) decoded into out [from, to) (a part at a time lets the caller work in
 * time slices); a NaN or infinity among them is NON_FINITE_INPUT, as in decodeFloat16.
 */
export function decodeFloat16Into(name: string, bits: Uint16Array, out: Float32Array, from: number, to: number): void {
  const values = decodeTable();
  // An exponent field of all ones (0x7c00) is Infinity or NaN: at most one branch taken.
  let special = 0;
  for (let i = from; i < to; i++) {
    const h = bits[i];
    out[i] = values[h];
    special |= (h & 0x7c00) === 0x7c00 ? 1 : 0;
  }
  if (special !== 0) {
    let at = from;
    while ((bits[at] & 0x7c00) !== 0x7c00) at++;
    throw new HyperAttentionError('NON_FINITE_INPUT', `${name}: element ${at} is ${out[at]} (float16 bits 0x${bits[at].toString(16).padStart(4, '0')}); inputs must be finite`);
  }
}

/** The largest finite float16, 65504; values from 65520 on round to Infinity. */
export const FLOAT16_MAX = 65504;

/**
 * float32 values as float16 bits, rounded to nearest, ties to even: values [from, to) into
 * out (by default all of them, into a new array; a part at a time lets the caller work in
 * time slices). A finite value that rounds past FLOAT16_MAX is INPUT_OVERFLOW (`what` names
 * the values, `remedy` says what the caller can do): an infinite result would be silently
 * wrong.
 */
export function encodeFloat16<B extends ArrayBufferLike = ArrayBuffer>(
  what: string, remedy: string, values: Float32Array, from = 0, to = values.length,
  out: Uint16Array<B> = new Uint16Array(values.length) as Uint16Array<B>,
): Uint16Array<B> {
  const words = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let i = from; i < to; i++) {
    const w = words[i];
    const sign = (w >>> 16) & 0x8000;
    const exponent = (w >>> 23) & 0xff;
    const mantissa = w & 0x7fffff;
    let h: number;
    if (exponent === 0xff) {
      h = sign | 0x7c00 | (mantissa === 0 ? 0 : 0x200);
    } else if (exponent >= 113) {
      // A normal float16 (or, past 2^16, Infinity): the top 10 mantissa bits, rounded on the other 13.
      if (exponent > 142) {
        h = sign | 0x7c00;
      } else {
        h = sign | ((exponent - 112) << 10) | (mantissa >>> 13);
        const rest = mantissa & 0x1fff;
        // A carry out of the mantissa steps the exponent, up to Infinity: still right.
        if (rest > 0x1000 || (rest === 0x1000 && (h & 1) === 1)) h++;
      }
    } else {
      // A subnormal float16 (or zero): the significand in units of 2^-24, rounded.
      const shift = 126 - exponent;
      if (shift > 24) {
        h = sign; // below half of 2^-24 (float32 subnormals included)
      } else {
        const significand = mantissa | 0x800000;
        let q = significand >>> shift;
        const rest = significand & ((1 << shift) - 1);
        const half = 1 << (shift - 1);
        if (rest > half || (rest === half && (q & 1) === 1)) q++;
        h = sign | q;
      }
    }
    out[i] = h;
    if ((h & 0x7c00) === 0x7c00 && exponent !== 0xff) {
      throw new HyperAttentionError('INPUT_OVERFLOW', `${what}: element ${i} is ${values[i]}, beyond float16's range (largest ${FLOAT16_MAX}, values from 65520 on round to Infinity); ${remedy}`);
    }
  }
  return out;
}

/** float16 bits as a Float16Array where the runtime has one (a view of the same memory), else as they are. */
export function float16Array(bits: Uint16Array<ArrayBuffer>): Float16Data {
  const Float16 = (globalThis as { Float16Array?: new (buffer: ArrayBuffer, offset: number, length: number) => Float16ArrayLike }).Float16Array;
  return Float16 ? new Float16(bits.buffer, bits.byteOffset, bits.length) : bits;
}
