// The `out` option: a host array of the caller's that a call writes its `out` into, instead of
// a new one per call. A runtime calls attention once per layer and token with the same
// shapes; a new array per call costs its first writes (a page fault per 4 KiB: about 12 ms for
// 4 MiB on the VMs this library is measured on, 90 ms for a 32 MiB chunk of one layer) and
// garbage to collect, both on the calling thread. `lse` is still a new array (1/Dv of out).
import { describeValue } from './describe.ts';
import { HyperAttentionError } from './errors.ts';
import { float16Bits, type Float16ArrayLike, type Float16Data } from './float16.ts';
import { isTypedArray } from './owned.ts';
import { isHalfInput, isHostTensor, type AttentionShape, type CheckedInput } from './tensor.ts';

/** What the option holds: a Float32Array, or with outputDtype 'float16' a Float16Array or Uint16Array. */
export type OutBuffer = Float32Array | Uint16Array | Float16ArrayLike;

function fail(message: string): never {
  throw new HyperAttentionError('INVALID_OPTION', message);
}

/** The option's value checked against the call's output and outputDtype (its length comes with the shapes: checkOutTarget). */
export function resolveOutOption(value: unknown, output: 'host' | 'gpu', outputDtype: 'float32' | 'float16'): OutBuffer | undefined {
  if (value === undefined) return undefined;
  if (output === 'gpu') fail("out: a host array for the result, but output is 'gpu' (the result is new GPUBuffers)");
  if (outputDtype === 'float32') {
    if (!isTypedArray(value, 'Float32Array')) fail(`out: expected a Float32Array (outputDtype 'float32'), got ${describeValue(value)}`);
  } else if (!isTypedArray(value, 'Uint16Array') && !isTypedArray(value, 'Float16Array')) {
    fail(`out: expected a Float16Array or a Uint16Array of float16 bits (outputDtype 'float16'), got ${describeValue(value)}`);
  }
  const out = value as OutBuffer;
  if ((out.buffer as { resizable?: boolean }).resizable) fail('out: its ArrayBuffer is resizable, so the array could shrink while the call writes it; pass one of fixed length');
  return out;
}

/**
 * The work of a call that writes into the option's array: an error that comes of the array
 * losing its memory meanwhile (its buffer transferred: a bare TypeError from the copy) is
 * INVALID_OPTION, saying so.
 */
export async function writingInto<T>(out: OutBuffer | undefined, work: () => Promise<T>): Promise<T> {
  try {
    return await work();
  } catch (error) {
    // checkOutTarget took it with at least one value: none left is a detached buffer.
    if (out && out.byteLength === 0) {
      throw new HyperAttentionError('INVALID_OPTION', "out: its ArrayBuffer was detached while the call ran (leave it alone until the call's promise settles)", { cause: error });
    }
    throw error;
  }
}

/** Byte range [from, to) of a typed array in its buffer. */
function span(a: ArrayBufferView): [number, number] {
  return [a.byteOffset, a.byteOffset + a.byteLength];
}

/**
 * The option's array fits the call: B * H * nq * Dv values (in the call's layout, the same
 * count), and no memory shared with a host input (the work reads the inputs while it writes
 * out: a shared byte would change an input under it). Before any work.
 */
export function checkOutTarget(out: OutBuffer | undefined, shape: AttentionShape, inputs: readonly (CheckedInput | undefined)[]): void {
  if (!out) return;
  const { B, H, nq, dv } = shape;
  const want = B * H * nq * dv;
  if (out.length !== want || out.byteLength !== want * (isTypedArray(out, 'Float32Array') ? 4 : 2)) {
    const detached = out.byteLength === 0 && out.buffer.byteLength === 0 ? ' (its ArrayBuffer is detached)' : '';
    fail(`out: expected ${want} values (out is [${B}, ${H}, ${nq}, ${dv}] in [B, H, N, Dv]), got an array of ${out.length}${detached}`);
  }
  const [from, to] = span(out);
  inputs.forEach((t, i) => {
    if (!t || !isHostTensor(t)) return;
    const data = isHalfInput(t) ? t.bits : t.data;
    const [a, b] = span(data);
    if (data.buffer === out.buffer && a < to && from < b) fail(`out: shares memory with ${'qkv'[i]}'s data; pass an array of its own`);
  });
}

/**
 * A result computed elsewhere (the browser build's worker, which cannot write the page's
 * array) copied into the option's array, which the result then holds: float16 as bits, so
 * that a Float16Array result lands in a Uint16Array as it is.
 */
export function copiedInto<R extends { out: { data: OutBuffer } }>(result: R, out: OutBuffer): R {
  const data = result.out.data;
  if (isTypedArray(out, 'Float32Array')) out.set(data as Float32Array);
  else float16Bits(out).set(float16Bits(data as Float16Data));
  return { ...result, out: { ...result.out, data: out } };
}
