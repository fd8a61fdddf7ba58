// What the library takes from a caller's values, read once into values it owns: typed arrays
// recognised by their internal slots (a Proxy of one passes instanceof, then fails every
// method with a bare TypeError), and option objects as plain objects of known keys, each key
// read once (a getter or an inherited key cannot say one thing to the check and another to
// the work).
import { describeValue } from './describe.ts';
import { HyperAttentionError } from './errors.ts';
import type { Float16ArrayLike } from './float16.ts';

type TypedArrayName = 'Float32Array' | 'Int32Array' | 'Uint16Array' | 'Float16Array';

/** %TypedArray%.prototype[Symbol.toStringTag]'s getter: the array's kind for a real typed array, undefined for anything else (it never throws). */
const tagOf = Object.getOwnPropertyDescriptor(Object.getPrototypeOf(Int32Array.prototype), Symbol.toStringTag)!.get!;

/** Whether x is a real typed array of that kind (from any realm), not a look-alike. */
export function isTypedArray(x: unknown, kind: 'Float32Array'): x is Float32Array;
export function isTypedArray(x: unknown, kind: 'Int32Array'): x is Int32Array;
export function isTypedArray(x: unknown, kind: 'Uint16Array'): x is Uint16Array;
export function isTypedArray(x: unknown, kind: 'Float16Array'): x is Float16ArrayLike;
export function isTypedArray(x: unknown, kind: TypedArrayName): boolean {
  return tagOf.call(x) === kind;
}

/** Whether the array's buffer can shrink under it (a resizable ArrayBuffer): its length is then not its own to trust. */
export function canShrink(x: Float32Array | Int32Array | Uint16Array): boolean {
  return (x.buffer as { resizable?: boolean }).resizable === true;
}

/** Whether another thread may write the array while the library reads it. */
export function isShared(x: Float32Array | Int32Array): boolean {
  return typeof SharedArrayBuffer !== 'undefined' && x.buffer instanceof SharedArrayBuffer;
}

/**
 * The caller's options object as a plain object of its own keys, each read once. Rejects
 * (INVALID_OPTION) what is not a plain object (an array, a Date, a class instance, one with
 * an inherited prototype: keys it inherits would be read but never checked) and keys outside
 * `allowed`, enumerable or not. `what` names the object, `noun` its keys in messages.
 */
export function ownOptions(value: unknown, allowed: readonly string[], what = 'options', noun = 'option'): Record<string, unknown> {
  const fail = (message: string): never => {
    throw new HyperAttentionError('INVALID_OPTION', message);
  };
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail(`${what}: expected an object, got ${describeValue(value)}`);
  const proto = Object.getPrototypeOf(value);
  // Object.prototype of this realm or another (an iframe's, a vm context's): its own prototype is null.
  if (proto !== null && Object.getPrototypeOf(proto) !== null) {
    fail(`${what}: expected a plain object ({ ... }), got ${describeValue(value)} (keys it inherits would not be checked)`);
  }
  const own: Record<string, unknown> = {};
  for (const key of Reflect.ownKeys(value as object)) {
    if (typeof key !== 'string' || !allowed.includes(key)) {
      fail(`unknown ${noun} '${String(key)}'; expected one of: ${allowed.join(', ')}`);
    }
    own[key as string] = (value as Record<string, unknown>)[key as string];
  }
  return own;
}
