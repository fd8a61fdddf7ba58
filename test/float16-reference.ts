// float16 conversions written for the tests, independently of src/float16.ts: decoding by
// building the float32 bit pattern (DataView's getFloat16 where the runtime has it), and
// encoding by searching the sorted float16 values for the nearest one, ties to the even
// pattern. Slow and plain, to hold the library's table and bit arithmetic to.

const word = new Uint32Array(1);
const single = new Float32Array(word.buffer);
const view = new DataView(new ArrayBuffer(2));
const getFloat16 = (view as DataView & { getFloat16?: (offset: number) => number }).getFloat16;

/** The value of float16 bit pattern h, through its float32 bit pattern (or DataView.getFloat16). */
export function referenceDecode(h: number): number {
  if (getFloat16) {
    view.setUint16(0, h);
    return getFloat16.call(view, 0);
  }
  const sign = (h & 0x8000) << 16;
  const exponent = (h >> 10) & 0x1f;
  let mantissa = h & 0x3ff;
  let bits: number;
  if (exponent === 0x1f) {
    bits = sign | 0x7f800000 | (mantissa << 13);
  } else if (exponent === 0) {
    if (mantissa === 0) {
      bits = sign;
    } else {
      // A subnormal: normalise the mantissa, one step down in exponent per shift.
      let e = 113;
      while ((mantissa & 0x400) === 0) {
        mantissa <<= 1;
        e--;
      }
      bits = sign | (e << 23) | ((mantissa & 0x3ff) << 13);
    }
  } else {
    bits = sign | ((exponent + 112) << 23) | (mantissa << 13);
  }
  word[0] = bits >>> 0;
  return single[0];
}

let positives: Float64Array | undefined;

/** The finite non-negative float16 values in bit order (which is value order), 0 to 65504. */
function finitePositives(): Float64Array {
  positives ??= Float64Array.from({ length: 0x7c00 }, (_, h) => referenceDecode(h));
  return positives;
}

/** The float16 bits nearest x (ties to the even pattern); Infinity from 65520 on, NaN as 0x7e00. */
export function referenceEncode(x: number): number {
  if (Number.isNaN(x)) return 0x7e00;
  const sign = x < 0 || Object.is(x, -0) ? 0x8000 : 0;
  const a = Math.abs(x);
  // 65520 is halfway between 65504 (odd pattern 0x7bff) and 65536, which would be 0x7c00.
  if (a >= 65520) return sign | 0x7c00;
  const values = finitePositives();
  let lo = 0;
  let hi = values.length - 1;
  // The last pattern whose value is at most a.
  while (lo < hi) {
    const mid = (lo + hi + 1) >> 1;
    if (values[mid] <= a) lo = mid;
    else hi = mid - 1;
  }
  if (values[lo] === a || lo === values.length - 1) return sign | lo;
  // Both neighbours and their midpoint are exact in float64.
  const half = (values[lo] + values[lo + 1]) / 2;
  if (a < half) return sign | lo;
  if (a > half) return sign | (lo + 1);
  return sign | (lo % 2 === 0 ? lo : lo + 1);
}

/** float32 values rounded to float16 bits, element by element. */
export function referenceEncodeAll(values: ArrayLike<number>): Uint16Array {
  return Uint16Array.from({ length: values.length }, (_, i) => referenceEncode(values[i]));
}

/** float16 bits decoded into float32, element by element. */
export function referenceDecodeAll(bits: ArrayLike<number>): Float32Array {
  return Float32Array.from({ length: bits.length }, (_, i) => referenceDecode(bits[i]));
}
