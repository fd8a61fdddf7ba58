// What the accurate mode's plans need about a key-value cache's keys, kept between calls
// (src/cache.ts) so that a chunk of a long prompt, or a decoding step, does not redo work
// that grows with the tokens held while the chunk's own work does not.
//
// - The LSH sort keys (KeyCodeIndex): each LSH round (accurate.ts) otherwise hashes every key
//   held again. A key's code depends on the key and the round's projections alone, so codes
//   computed once serve every later call with the same projections (the same seed and bit
//   count, or the same caller's projections): such a call hashes only the tokens appended
//   since. The codes are the ones the call would compute, so results are bit for bit the same.
// - The heavy columns' masses (ColumnMassIndex): the probe's rows otherwise score every key
//   held, on every call. The masses the probes found are summed per query head instead, and
//   a causal call whose heads hold the masses of at least a full probe's rows probes only its
//   share of them (probeQueries × its queries / the keys, at least one row) and chooses its
//   heavy columns from the sum. Over the chunks of a prompt the probes then score about as
//   many keys as one call's probe over the whole prompt does. This changes the columns, not
//   how they are computed: a call's result depends on the calls made on the cache before it
//   (the same calls give the same bits), and truncate() forgets the masses.
//
// WebAssembly caches only: codes and masses go back and forth between the call's buffers and
// the host arrays kept here by plain copies there. On WebGPU, hashing all keys is one small
// dense pass and the probe runs where the keys are.

/** Sets of projections (or of mass keys) remembered at once (beyond it, the least recently used is dropped). */
const MAX_ENTRIES = 16;

/** The codes of one round's projections, per flat key-value head. */
export interface KeyCodes {
  /** codes of tokens [0, hashed[g]) of flat key-value head g, in codes[g] */
  readonly codes: Int32Array[];
  readonly hashed: Int32Array;
}

interface Entry extends KeyCodes {
  proj: Float32Array;
  r: number;
}

export class KeyCodeIndex {
  private entries: Entry[] = [];

  /** kvHeads: flat key-value heads (batch × key-value heads) of the cache. */
  constructor(private readonly kvHeads: number) {}

  /**
   * The codes kept for projections proj ([d, r], fixed-mode keys of r bits): a new, empty
   * entry when none matches.
   */
  entry(proj: Float32Array, r: number): KeyCodes {
    const at = this.entries.findIndex((e) => e.r === r && sameValues(e.proj, proj));
    const found = at >= 0 ? this.entries.splice(at, 1)[0] : undefined;
    const entry = found ?? {
      proj: proj.slice(), r, codes: Array.from({ length: this.kvHeads }, () => new Int32Array(0)), hashed: new Int32Array(this.kvHeads),
    };
    this.entries.push(entry);
    if (this.entries.length > MAX_ENTRIES) this.entries.shift();
    return entry;
  }

  /** The cache now holds n tokens: codes of later positions are no longer valid. */
  truncate(n: number): void {
    for (const e of this.entries) {
      for (let g = 0; g < e.hashed.length; g++) e.hashed[g] = Math.min(e.hashed[g], n);
    }
  }
}

/** codes[g] with room for n codes, those kept: grows by doubling, as tokens are appended. */
export function codesWithRoom(keys: KeyCodes, g: number, n: number): Int32Array {
  return (keys.codes[g] = withRoom(keys.codes[g], keys.hashed[g], n));
}

/** The heavy-column masses of one query head, summed over the probes of the calls so far. */
export interface HeadMasses {
  /** mass[j] for the keys j held: the sum of the probe rows' softmax weights on key j */
  mass: Float32Array;
  /** probe rows summed into mass */
  rows: number;
}

/**
 * What the masses depend on besides the queries and keys: the query heads (they are kept per
 * flat query head b × H + h), the softmax scale, and the keys the probe leaves out (the sinks
 * and each row's window).
 */
export interface MassKey {
  heads: number;
  scale: number;
  sinks: number;
  winLo: number;
  window: number;
}

export class ColumnMassIndex {
  private entries = new Map<string, HeadMasses[]>();

  /** Flat query head i's masses for calls with this key: empty (no rows) the first time. */
  head(key: MassKey, i: number): HeadMasses {
    const name = `${key.heads} ${key.scale} ${key.sinks} ${key.winLo} ${key.window}`;
    let heads = this.entries.get(name);
    if (heads) {
      this.entries.delete(name);
    } else {
      heads = Array.from({ length: key.heads }, () => ({ mass: new Float32Array(0), rows: 0 }));
    }
    this.entries.set(name, heads);
    if (this.entries.size > MAX_ENTRIES) this.entries.delete(this.entries.keys().next().value!);
    return heads[i];
  }

  /** The cache dropped tokens: the masses the probes put on them are gone with them. */
  truncate(): void {
    this.entries.clear();
  }

  /**
   * Adds a probe's masses over keys [0, fresh.length) (of `rows` probe rows) to the head's,
   * which it returns: the masses to choose the call's heavy columns from.
   */
  static add(head: HeadMasses, fresh: Float32Array, rows: number): Float32Array {
    const n = fresh.length;
    head.mass = withRoom(head.mass, head.mass.length, n);
    for (let j = 0; j < n; j++) head.mass[j] += fresh[j];
    head.rows += rows;
    return head.mass.subarray(0, n);
  }
}

/** have, or a copy of its first `kept` values in an array of room for n (doubling). */
function withRoom<T extends Int32Array | Float32Array>(have: T, kept: number, n: number): T {
  if (have.length >= n) return have;
  const grown = new (have.constructor as new (length: number) => T)(Math.max(n, 2 * have.length));
  grown.set(have.subarray(0, kept));
  return grown;
}

function sameValues(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return false;
  return true;
}
