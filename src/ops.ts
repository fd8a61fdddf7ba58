// The backend interface: the few operations the algorithm (hyper.ts) is written over.
// A backend owns its buffers (wasm memory for the CPU backend, GPUBuffers for WebGPU);
// the algorithm only holds opaque handles and row offsets. Nothing here knows about
// recursion, sampling or modes beyond the flags each operation takes.
import type { WebGPUBufferLike } from './options.ts';

/** `reference` reproduces the authors' code; `fixed` corrects its known defects. */
export type Mode = 'reference' | 'fixed';

/** An opaque buffer owned by a backend. `length` counts elements (f32 or i32). */
export interface BackendBuffer {
  readonly kind: 'f32' | 'i32';
  readonly length: number;
}

/** How an attention result reaches its destination rows. */
export type WriteMode =
  /** overwrite out and lse */
  | 'write'
  /** merge as part 2 into what is there (part 1), reference lse formula (saturating) */
  | 'merge-reference'
  /** merge as part 2 into what is there (part 1), exact log-add-exp */
  | 'merge-fixed';

/**
 * Rows of a [rows, width] matrix inside a backend buffer. `row` is the first row used;
 * row r of the view is row (row + r) of the buffer.
 */
export interface RowView {
  buf: BackendBuffer;
  row: number;
}

/** Destination of an attention op: out is [rows, dv], lse is [rows]. */
export interface Destination {
  out: RowView;
  lse: RowView;
  write: WriteMode;
}

/**
 * Exact attention of a contiguous run of query rows against a contiguous run of keys.
 * causal: key j is excluded for query i when j > i + causalOffset (indices local to the runs).
 * Output row i goes to destination row i.
 */
export interface ExactTask {
  q: RowView;
  k: RowView;
  v: RowView;
  nq: number;
  nk: number;
  d: number;
  dv: number;
  scale: number;
  causal: boolean;
  causalOffset: number;
  dst: Destination;
}

/** LSH sort keys of `rows` rows of x (width d) against projections [d, r] (row-major). */
export interface HashTask {
  x: RowView;
  rows: number;
  d: number;
  proj: BackendBuffer;
  r: number;
  mode: Mode;
  keys: RowView;
}

/**
 * Stable counting sort of `count` keys (values in [0, numKeys)) followed by `pads` virtual
 * rows of key 0 (zero rows, reference-mode padding). perm[i] = local index (0 .. count+pads-1)
 * of the i-th row in sorted order; indices >= count are the pads.
 */
export interface SortTask {
  keys: RowView;
  count: number;
  pads: number;
  numKeys: number;
  perm: RowView;
}

/**
 * LSH-sorted rows of one sub-problem, as the block and sampled ops read them. Sorted query i
 * is row qPerm[i] of q (a zero vector whose result is dropped when qPerm[i] >= nqReal) and
 * lies in block min(floor(i / qBlock), nBlocks - 1); sorted key j is row kPerm[j] of k and v,
 * for j in [0, nk), in block floor(j / kBlock). Results go to destination row qPerm[i].
 */
export interface SortedRowsTask {
  q: RowView;
  k: RowView;
  v: RowView;
  qPerm: RowView;
  kPerm: RowView;
  nqSorted: number;
  nqReal: number;
  nk: number;
  d: number;
  dv: number;
  scale: number;
  qBlock: number;
  kBlock: number;
  nBlocks: number;
  dst: Destination;
}

/**
 * Block-diagonal attention: sorted query block blk attends to sorted keys
 * [blk * kBlock, min((blk + 1) * kBlock, nk)). phantomKeys: when true, a short last key
 * block is filled up to kBlock with zero keys (logit 0, value 0) that take part in the
 * softmax (reference-mode padding).
 */
export interface BlockTask extends SortedRowsTask {
  phantomKeys: boolean;
}

/**
 * Attention of the sorted queries against m sampled sorted keys: samples[j] (in [0, nk))
 * names key row kPerm[samples[j]], masked for sorted query i when it lies in the query's
 * own block. lse gets + lseOffset (log(nk / m)). A row whose samples are all masked gets
 * lse -Infinity and out 0.
 */
export interface SampledTask extends SortedRowsTask {
  samples: Int32Array;
  lseOffset: number;
}

/** Merge rows [0, rows) of src (as part 2) into dst (part 1). */
export interface MergeTask {
  src: { out: RowView; lse: RowView };
  dst: Destination;
  rows: number;
  dv: number;
}

export interface Backend {
  readonly name: 'cpu' | 'webgpu' | 'hybrid';
  createBuffer(kind: 'f32' | 'i32', length: number): BackendBuffer;
  /** Copy host data into buf starting at element `offset`. */
  upload(buf: BackendBuffer, data: Float32Array | Int32Array, offset?: number): void;
  /** Copy `length` elements starting at `offset` out of buf into `into` (at intoOffset). */
  download(
    buf: BackendBuffer,
    offset: number,
    length: number,
    into: Float32Array | Int32Array,
    intoOffset?: number,
  ): Promise<void>;
  hash(t: HashTask): void;
  sort(t: SortTask): void;
  exact(t: ExactTask): void;
  block(t: BlockTask): void;
  sampled(t: SampledTask): void;
  merge(t: MergeTask): void;
  /** Release every buffer created since the last release. */
  releaseAll(): void;
  /**
   * Settles when every op issued so far has run (asynchronous backends), so that the time
   * an op takes can be measured; backends that run ops synchronously need not have it.
   */
  sync?(): Promise<void>;

  // Device-resident I/O, WebGPU only: the caller's buffers live on the backend's device
  // and are opaque to the algorithm. Offsets into them are in bytes, 4-byte aligned.

  /** Copy `length` elements of src from byte srcByteOffset into buf at element dstOffset, in order with the ops. */
  copyFromDevice?(dst: BackendBuffer, dstOffset: number, src: WebGPUBufferLike, srcByteOffset: number, length: number): void;
  /**
   * A new f32 buffer of `length` elements for the caller (storage, copy source and
   * destination), destroyed by the next releaseAll unless finish() handed it over first.
   */
  createDeviceBuffer?(length: number): WebGPUBufferLike;
  /** Copy `length` elements of buf from element srcOffset into dst at byte dstByteOffset, in order with the ops. */
  exportToDevice?(src: BackendBuffer, srcOffset: number, dst: WebGPUBufferLike, dstByteOffset: number, length: number): void;
  /**
   * Runs everything recorded and settles when it is done, rejecting with what went wrong
   * (GPU errors, DEVICE_LOST); hands the buffers of createDeviceBuffer to the caller.
   */
  finish?(): Promise<void>;
}

/** The backend operations, as the scheduler prices them and a traced call times them. */
export type OpName = 'upload' | 'download' | 'hash' | 'sort' | 'exact' | 'block' | 'sampled' | 'merge';
export const OP_NAMES: readonly OpName[] = ['upload', 'download', 'hash', 'sort', 'exact', 'block', 'sampled', 'merge'];

/** A device that runs ops: WebAssembly on the CPU, or WebGPU. */
export type Device = 'cpu' | 'webgpu';

/** One op of a traced call: where it ran and how long it took, synced. */
export interface OpTrace {
  op: OpName;
  device: Device;
  ms: number;
}

/** The device that runs each op of a backend; the hybrid hashes and sorts on the CPU. */
export function placementOf(backend: Backend['name']): Record<OpName, Device> {
  const all = (device: Device) => Object.fromEntries(OP_NAMES.map((op) => [op, device])) as Record<OpName, Device>;
  if (backend !== 'hybrid') return all(backend);
  return { ...all('webgpu'), hash: 'cpu', sort: 'cpu' };
}
