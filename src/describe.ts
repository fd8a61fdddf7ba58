// Formats any value a caller may pass (a BigInt, a string that looks like a number, a
// typed array, a Proxy, a huge array) into a short phrase for an error message. Messages
// are built on the error path, so this must never throw and never dump a whole array.

const MAX_TEXT = 40;
const MAX_ITEMS = 8;

function article(name: string): string {
  return /^[aeiou]/i.test(name) ? `an ${name}` : `a ${name}`;
}

function className(x: object): string | undefined {
  const name = (x as { constructor?: { name?: unknown } }).constructor?.name;
  return typeof name === 'string' && name !== '' ? name : undefined;
}

/** One element of a short array: numbers as themselves, other things as describeValue says. */
function item(x: unknown): string {
  if (typeof x === 'number') return String(x);
  if (typeof x === 'bigint') return `${x}n`;
  if (typeof x === 'string') return quote(x);
  return describeValue(x);
}

function quote(s: string): string {
  const short = s.length > MAX_TEXT ? `${s.slice(0, MAX_TEXT)}…` : s;
  return `'${short}'`;
}

/**
 * A phrase naming what x is: "the string '1'", "the bigint 1n", "NaN", "an Int32Array of
 * length 4", "an Array of length 70000", "[1, 1, 4n, 8]" (short arrays of primitives).
 */
export function describeValue(x: unknown): string {
  try {
    switch (typeof x) {
      case 'undefined': return 'undefined';
      case 'number': return String(x);
      case 'boolean': return `the boolean ${x}`;
      case 'bigint': return `the bigint ${x}n`;
      case 'string': return `the string ${quote(x)}`;
      case 'symbol': return 'a symbol';
      case 'function': return 'a function';
    }
    if (x === null) return 'null';
    if (Array.isArray(x)) {
      const primitive = x.length <= MAX_ITEMS && x.every((e) => e === null || (typeof e !== 'object' && typeof e !== 'function'));
      return primitive ? `[${x.map(item).join(', ')}]` : `an Array of length ${x.length}`;
    }
    if (ArrayBuffer.isView(x)) {
      const length = (x as { length?: unknown }).length ?? (x as DataView).byteLength;
      return `${article(className(x) ?? 'ArrayBuffer view')} of length ${String(length)}`;
    }
    const name = className(x as object);
    // Not a view, yet its class says so: a Proxy of one, whose methods all throw.
    if (name && /^(Big)?(Int|Uint|Float)(8|16|32|64)(Clamped)?Array$/.test(name)) return `an object posing as ${article(name)} (a Proxy?)`;
    return name === undefined || name === 'Object' ? 'an object' : article(name);
  } catch {
    // A Proxy or a getter can throw; the message must still be built.
    return 'a value that cannot be inspected';
  }
}

/**
 * For a value expected to be one of a few strings: a string quoted as it was given ("BNHD"),
 * anything else described (a BigInt, an object) like describeValue does.
 */
export function describeChoice(x: unknown): string {
  return typeof x === 'string' && x.length <= MAX_TEXT ? JSON.stringify(x) : describeValue(x);
}
