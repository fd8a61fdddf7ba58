// What the executor (hyper.ts) hands a plan's per-head work (the authors' steps there, the
// accurate mode's parts in accurate.ts): the backend, the op runner, the head's buffers,
// and the call's random draws.
import type { KeyCodeIndex } from './keyindex.ts';
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
  qBuf: BackendBuffer;
  kBuf: BackendBuffer;
  vBuf: BackendBuffer;
  kRow: number;
  /** the flat key-value head (b * Hkv + kv) whose rows kBuf and vBuf hold now */
  kvHead: number;
  /** LSH codes of the keys kept between calls (a WebAssembly key-value cache's, keyindex.ts) */
  keyCodes?: KeyCodeIndex;
  outBuf: BackendBuffer;
  lseBuf: BackendBuffer;
  /** called after each attention op of a head, for progress (see HeadWork.units) */
  tick: () => void;
}

/**
 * A plan's per-head work, set up once per call (its buffers allocated): run is called for
 * head (b, h) once q, and k and v when they changed (kvChanged), are loaded, and leaves the
 * head's result in outBuf and lseBuf; it calls tick() exactly `units` times, once after
 * each attention op.
 */
export interface HeadWork {
  units: number;
  run: (b: number, h: number, kvChanged: boolean) => Promise<void>;
}


