// What the executor (hyper.ts) hands a plan's per-head work (the authors' steps there, the
// accurate mode's parts in accurate.ts): the backend, the op runner, the head's buffers,
// and the call's random draws.
import type { ColumnMassIndex, KeyCodeIndex } from './keyindex.ts';
import type { Backend, BackendBuffer, OpName } from './ops.ts';
import type { AttentionShape } from './tensor.ts';

/** A call's random draws, in the plan's order. */
export interface Randomness {
  /** LSH projections [d, r], one per hash round */
  projections: Float32Array[];
  samples: Int32Array[];
}

/**
 * What a head's work sees: the backend, op runner, and the head's buffers (q, k, v loaded).
 * The head's keys and values start at row kRow of kBuf and vBuf: 0 when the executor loaded
 * them, the head's first row in a key-value cache's buffers otherwise (src/cache.ts). The
 * executor sets kBuf, vBuf, kRow and kvHead before each head: a head's work reads them as it runs.
 */
export interface ExecContext {
  backend: Backend;
  shape: AttentionShape;
  scale: number;
  run: (op: OpName, fn: () => void | Promise<void>) => Promise<void>;
  f32: (n: number) => BackendBuffer;
  i32: (n: number) => BackendBuffer;
  /**
   * Heads the executor runs together (HeadWork.run): head slot s's rows of qBuf, outBuf and
   * lseBuf start at row s * slotRows (its nq rows, then its check rows).
   */
  slots: number;
  slotRows: number;
  qBuf: BackendBuffer;
  kBuf: BackendBuffer;
  vBuf: BackendBuffer;
  kRow: number;
  /** the flat key-value head (b * Hkv + kv) whose rows kBuf and vBuf hold now (-1 before the first) */
  kvHead: number;
  /** LSH codes of the keys kept between calls (a WebAssembly key-value cache's, keyindex.ts) */
  keyCodes?: KeyCodeIndex;
  /** heavy-column masses of the keys summed over calls (a WebAssembly key-value cache's, keyindex.ts) */
  masses?: ColumnMassIndex;
  outBuf: BackendBuffer;
  lseBuf: BackendBuffer;
  /** called after each attention op of a head, for progress (see HeadWork.units) */
  tick: () => void;
}

/** A head of the call: batch entry b, query head h. */
export interface HeadRef {
  b: number;
  h: number;
}

/**
 * A plan's per-head work, set up once per call (its buffers allocated): run is called for
 * heads of one key-value head, at most ctx.slots of them (head i in slot i), once their q,
 * and k and v when they changed (kvChanged), are loaded, and leaves each head's result in
 * its rows of outBuf and lseBuf; it calls tick() exactly `units` times per head, once after
 * each of the head's attention ops.
 */
export interface HeadWork {
  units: number;
  run: (heads: readonly HeadRef[], kvChanged: boolean) => Promise<void>;
}

/**
 * About the most memory a call's head slots take (a slot: a head's queries, results, part
 * outputs and statistics, about 4 rows (d + 4 dv + 8) bytes for its rows, checks included).
 * Grouped heads pay where a head's queries are few (a chunk against many keys: most buckets
 * hold one query per head); a whole long prompt's heads, whose slots would take gigabytes
 * of a 4 GiB WebAssembly memory, run one at a time, as they gain little.
 */
const GROUP_BYTES = 128 * 2 ** 20;

/** Head slots of a call whose key-value heads each serve `group` query heads (ExecContext.slots). */
export function headSlots(group: number, rows: number, d: number, dv: number): number {
  return Math.max(1, Math.min(group, Math.floor(GROUP_BYTES / (4 * rows * (d + 4 * dv + 8)))));
}
