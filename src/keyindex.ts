// The LSH sort keys of a key-value cache's keys, kept between calls (src/cache.ts): a chunk of
// a long prompt, or a decoding step, otherwise hashes every key held again in each LSH round
// of the accurate mode (accurate.ts), work that grows with the tokens held while the chunk's
// own work does not. A key's code depends on the key and the round's projections alone, so
// codes computed once serve every later call with the same projections (the same seed and bit
// count, or the same caller's projections): such a call hashes only the tokens appended since.
// The codes are the ones the call would compute, so results are bit for bit the same.
//
// WebAssembly caches only: codes go back and forth between the call's buffers and the host
// arrays kept here by plain copies there. On WebGPU, hashing all keys is one small dense pass.

/** Sets of projections remembered at once (beyond it, the least recently used is dropped). */
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
  const have = keys.codes[g];
  if (have.length >= n) return have;
  const grown = new Int32Array(Math.max(n, 2 * have.length));
  grown.set(have.subarray(0, keys.hashed[g]));
  keys.codes[g] = grown;
  return grown;
}

function sameValues(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (!Object.is(a[i], b[i])) return false;
  return true;
}
