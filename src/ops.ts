// The backend interface: the few operations the algorithm (hyper.ts) is written over.
// A backend owns its buffers (wasm memory for the CPU backend, GPUBuffers for WebGPU);
// the algorithm only holds opaque handles and row offsets. Nothing here knows about
// recursion, sampling or modes beyond the flags each operation takes.
import type { WebGPUBufferLike } from './options.ts';

/** How a kernel hashes and merges: the authors' way, or corrected (fixed and accurate modes). */
export type KernelMode = 'reference' | 'fixed';

/**
 * An opaque buffer owned by a backend. `length` counts elements (f32 or i32; f16, the bits
 * of a float16 key-value cache's rows on WebAssembly: read in place by the few-rows kernel
 * only, else widened first, see Backend.widen).
 */
export interface BackendBuffer {
  readonly kind: 'f32' | 'i32' | 'f16';
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

/** The view `rows` rows further down its buffer. */
export function shift(view: RowView, rows: number): RowView {
  return { buf: view.buf, row: view.row + rows };
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
export interface ExactTask extends AttentionInputs {
  causal: boolean;
  causalOffset: number;
  dst: Destination;
}

/**
 * Exact attention of query rows each against its own prefix of the keys: row i sees keys
 * [0, keys[i]) (keys[i] <= nk), not causally masked otherwise; row i goes to destination
 * row i. The causal check rows of a verified call (verified.ts), one job a row.
 */
export interface PrefixesTask extends AttentionInputs {
  keys: Int32Array;
  dst: Destination;
}

/**
 * Several heads in one op, side by side in the same buffers: head i (of `count`) reads and
 * writes the task's rows moved on by i * qRows (q, out, lse), and reads those of key-value
 * head floor((i + phase) / group) moved on by that many times kRows (k, v).
 */
export interface HeadBatch {
  count: number;
  group: number;
  phase: number;
  qRows: number;
  kRows: number;
}

/** LSH sort keys of `rows` rows of x (width d) against projections [d, r] (row-major). */
export interface HashTask {
  x: RowView;
  rows: number;
  d: number;
  proj: BackendBuffer;
  r: number;
  mode: KernelMode;
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

/**
 * The accurate mode's mask, in original row positions of the head (assembly/accurate.ts):
 * key j is hidden from query i when causal and j > i + causalOffset (the query's key
 * position: nk - nq, the queries being the last nq positions); when flags[j] != 0 (a
 * column, counted by the columns part); by the window test (the window of i is [i + winLo,
 * i + winLo + window)); or when qTags[t][i] == kTags[t][j] for t < rounds (the same LSH
 * block in an earlier round: the same bucket). Tags are i32 [rounds, nq] and [rounds, nk].
 */
export interface AccurateMask {
  causal: boolean;
  causalOffset: number;
  flags: RowView;
  winLo: number;
  window: number;
  rounds: number;
  qTags: RowView;
  kTags: RowView;
}

/** The rows an attention op reads: q [nq, d], k [nk, d], v [nk, dv], from the views' rows. */
export interface AttentionInputs {
  q: RowView;
  k: RowView;
  v: RowView;
  nq: number;
  nk: number;
  d: number;
  dv: number;
  scale: number;
}

/**
 * Where an accurate part's rows go: out [nq, dv] and lse [nq], and per row the count of
 * keys it counted (f32) and the plain sum of their V rows [nq, dv].
 */
export interface PartOutput {
  out: RowView;
  lse: RowView;
  cnt: RowView;
  vsum: RowView;
}

/**
 * Every query row against key positions cols (ascending), hidden only causally (key j from
 * query i when j > i + causalOffset); overwrites dst.
 */
export interface ColumnsTask extends AttentionInputs {
  cols: RowView;
  count: number;
  causal: boolean;
  causalOffset: number;
  dst: PartOutput;
}

/** Each query row against its window, hiding the columns; merged into dst, stats added. */
export interface WindowTask extends AttentionInputs {
  mask: AccurateMask;
  dst: PartOutput;
}

/**
 * One hash round (an LSH table): for each bucket u < numKeys, the sorted queries of u
 * (qPerm positions [qStarts[u], qStarts[u + 1])) against the first `cap` sorted keys of u
 * (kPerm positions from kStarts[u]); the mask's rounds are the earlier rounds. Merged into
 * dst, stats added. Perms as SortTask writes them (no pads), starts as BucketsTask does.
 */
export interface RoundTask extends AttentionInputs {
  qPerm: RowView;
  kPerm: RowView;
  qStarts: RowView;
  kStarts: RowView;
  numKeys: number;
  cap: number;
  mask: AccurateMask;
  dst: PartOutput;
  /**
   * Backends with groupedHeads: more query heads of the same key-value head (grouped-query
   * attention), whose queries meet the same keys' buckets, run in the same pass; the mask's
   * flags and qTags are each head's own. Each head's result is the one it gets alone.
   */
  group?: RoundHead[];
}

/** A further query head of a RoundTask: its rows, their buckets, its mask's own parts, its destination. */
export interface RoundHead {
  q: RowView;
  qPerm: RowView;
  qStarts: RowView;
  flags: RowView;
  qTags: RowView;
  dst: PartOutput;
}

/**
 * Query rows [qFrom, qTo) against the sampled key positions `samples`, with everything an
 * exact part counts hidden (the mask's rounds are all of them). Overwrites those rows of
 * dst: the plain softmax over the visible samples, their count and V sum.
 */
export interface SamplesTask extends AttentionInputs {
  samples: Int32Array;
  qFrom: number;
  qTo: number;
  mask: AccurateMask;
  dst: PartOutput;
}

/**
 * Estimates each row's remainder from its samples (ratio estimator and, weighted by
 * controlVariate, the control variate of the sum of V over the remainder) and merges it
 * into the exact parts' result `exact` (assembly/accurate.ts, remainderMerge).
 */
export interface RemainderTask {
  v: RowView;
  nq: number;
  nk: number;
  dv: number;
  /** causal: row i sees keys [0, i + causalOffset] */
  causal: boolean;
  causalOffset: number;
  controlVariate: number;
  exact: PartOutput;
  samples: PartOutput;
  /**
   * Backends with groupedHeads: more query heads of the same key-value head, whose
   * remainders share the sums of V over the keys (computed once for all of them).
   */
  group?: { exact: PartOutput; samples: PartOutput }[];
}

/**
 * The probe for heavy columns: mass[j] = sum over probe rows i of softmax_i(j), over keys
 * j >= sinks outside i's window ([i + winLo, i + winLo + window)); hidden causally (keys
 * past i + causalOffset).
 */
export interface ProbeTask {
  q: RowView;
  k: RowView;
  nq: number;
  nk: number;
  d: number;
  scale: number;
  rows: RowView;
  count: number;
  causal: boolean;
  causalOffset: number;
  sinks: number;
  winLo: number;
  window: number;
  mass: RowView;
}

/**
 * The columns of a head from its probe's masses (src/heavy.ts): cols = the positions
 * [0, sinks), then the `count` positions j >= sinks of largest mass[j] (ties to the lower
 * position) in ascending order; flags[j] = 1 for every column, 0 for every other key.
 * count <= nk - sinks.
 */
export interface HeavyTask {
  mass: RowView;
  nk: number;
  sinks: number;
  count: number;
  cols: RowView;
  flags: RowView;
}

/**
 * The buckets of a hash round, from LSH keys (original order) and their sort perm:
 * starts[u] = first sorted position with key u, for u <= numKeys (starts[numKeys] = count);
 * tags[row] = the row's key, or -1 past the first `cap` rows of its bucket.
 */
export interface BucketsTask {
  keys: RowView;
  perm: RowView;
  count: number;
  numKeys: number;
  cap: number;
  tags: RowView;
  starts: RowView;
}

/** `rows` rows of `width` float16 values from src (an f16 buffer) into the same rows of dst as float32. */
export interface WidenTask {
  src: RowView;
  dst: RowView;
  rows: number;
  width: number;
}

/** An op runs when it returns, or (WebAssembly jobs on threads, or yielding) once its promise settles. */
export type OpResult = void | Promise<void>;

export interface Backend {
  readonly name: 'cpu' | 'webgpu' | 'hybrid';
  /** threads the WebAssembly ops run on (1 when not said) */
  readonly threads?: number;
  /** Starts a call: the backend stops its work early when the signal aborts (ops then reject with ABORTED). */
  begin?(signal: AbortSignal | undefined): void;
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
  /**
   * Exact attention of every head of the batch in one op: the executor then runs a plan
   * made only of exact steps this way (WebGPU and the hybrid: many heads per dispatch;
   * WebAssembly: the calls batchesHeads accepts).
   */
  exactHeads?(t: ExactTask, heads: HeadBatch): OpResult;
  /**
   * Whether exactHeads pays for a call of `rows` query rows a head, whose keys and values
   * are read where they reside (`inPlace`, a cache's) or loaded per call; absent: always.
   */
  batchesHeads?(rows: number, inPlace: boolean): boolean;
  /** Copy `length` elements of src from srcOffset into dst at dstOffset, in order with the ops (asynchronous backends). */
  copy?(src: BackendBuffer, srcOffset: number, dst: BackendBuffer, dstOffset: number, length: number): void;
  /** The most elements one buffer may hold (asynchronous backends: the device's maxBufferSize). */
  readonly maxBufferLength?: number;
  hash(t: HashTask): OpResult;
  sort(t: SortTask): void;
  exact(t: ExactTask): OpResult;
  prefixes(t: PrefixesTask): OpResult;
  block(t: BlockTask): OpResult;
  sampled(t: SampledTask): OpResult;
  merge(t: MergeTask): OpResult;
  // The accurate mode's parts.
  probe(t: ProbeTask): OpResult;
  heavy(t: HeavyTask): void;
  columns(t: ColumnsTask): OpResult;
  window(t: WindowTask): OpResult;
  round(t: RoundTask): OpResult;
  /**
   * Whether round() and remainder() take further query heads of the same key-value head
   * (RoundTask.group, RemainderTask.group) in one op.
   */
  readonly groupedHeads?: boolean;
  buckets(t: BucketsTask): void;
  samples(t: SamplesTask): OpResult;
  remainder(t: RemainderTask): OpResult;
  /**
   * WebAssembly: float16 rows (an f16 buffer's) widened into float32 rows of dst, exactly;
   * the executor's load of a float16 cache's keys and values per key-value head.
   */
  widen?(t: WidenTask): OpResult;
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

/**
 * What the scheduler prices and a calibration measures: each op is priced as the class
 * whose calibrated kernel has its shape (COST_CLASS).
 */
export type CostClass = 'upload' | 'download' | 'hash' | 'sort' | 'exact' | 'block' | 'sampled' | 'merge';
export const COST_CLASSES: readonly CostClass[] = ['upload', 'download', 'hash', 'sort', 'exact', 'block', 'sampled', 'merge'];

/** The backend's operations, as a call runs and a traced call times them. */
export type OpName =
  | CostClass
  | 'probe' | 'heavy' | 'columns' | 'window' | 'round' | 'buckets' | 'samples' | 'remainder' | 'prefixes';

/**
 * The cost class of each op. The accurate mode's parts are priced as the op whose kernel
 * has the same shape: the probe as exact attention, the columns and the samples as
 * sampled attention (a list of keys shared by the rows), the window and a round's buckets
 * as block attention, the heavy columns' choice and the bucket tags with the sort, the
 * remainder's estimate as a merge.
 */
export const COST_CLASS: Readonly<Record<OpName, CostClass>> = {
  upload: 'upload', download: 'download', hash: 'hash', sort: 'sort', exact: 'exact', block: 'block', sampled: 'sampled',
  merge: 'merge', probe: 'exact', heavy: 'sort', columns: 'sampled', window: 'block', round: 'block', buckets: 'sort',
  samples: 'sampled', remainder: 'merge', prefixes: 'exact',
};
export const OP_NAMES = Object.keys(COST_CLASS) as readonly OpName[];

/** A device that runs ops: WebAssembly on the CPU, or WebGPU. */
export type Device = 'cpu' | 'webgpu';

/** One op of a traced call: where it ran and how long it took, synced. */
export interface OpTrace {
  op: OpName;
  device: Device;
  ms: number;
}

/**
 * The device that runs each op of a backend. The hybrid hashes, sorts and tags buckets on
 * the CPU (sort keys never reach the GPU); everything else, the heavy columns' choice
 * included, runs on WebGPU.
 */
export function placementOf(backend: Backend['name']): Record<OpName, Device> {
  const all = (device: Device) => Object.fromEntries(OP_NAMES.map((op) => [op, device])) as Record<OpName, Device>;
  if (backend !== 'hybrid') return all(backend);
  return { ...all('webgpu'), hash: 'cpu', sort: 'cpu', buckets: 'cpu' };
}
