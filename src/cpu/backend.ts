// The WebAssembly backend: buffers are regions of the kernel module's linear memory
// (a bump arena, released after each call), ops call the AssemblyScript kernels. Each
// op's transient scratch sits just above the arena's top.
//
// The attention ops run as jobs over disjoint rows (blocks, buckets): on one thread in
// turn, yielding to the event loop between jobs now and then (so that an abort or a page
// event gets through), or with threads over a shared memory, claimed by the pool's
// workers, each with its own scratch. A row's result never depends on which job or thread
// computed it: results are bit-identical for every thread count.
import { abortedError, HyperAttentionError } from '../errors.ts';
import type {
  AttentionInputs, AccurateMask, Backend, BackendBuffer, BlockTask, BucketsTask, ColumnsTask, Destination, ExactTask, HashTask, HeavyTask,
  MergeTask,
  OpResult, PartOutput, ProbeTask, RemainderTask, RoundTask, RowView, SampledTask, SamplesTask, SortTask, WindowTask,
  WriteMode,
} from '../ops.ts';
import { heaviest } from '../heavy.ts';
import { stopBatch, type ThreadPool } from '../threads/pool.ts';
import { bestFlavour, instantiateKernels, renewKernels, type KernelExports, type KernelFlavour } from './wasm.ts';

interface CpuBuffer extends BackendBuffer {
  readonly ptr: number;
}

/** The threads a backend's arena runs on: its id in the pool, and how many workers a batch takes. */
export interface CpuThreads {
  pool: ThreadPool;
  arena: number;
  threads: number;
}

type KernelName = {
  [K in keyof KernelExports]: KernelExports[K] extends (...args: number[]) => void ? K : never;
}[keyof KernelExports];

const WRITE_CODES: Record<WriteMode, number> = { write: 0, 'merge-reference': 1, 'merge-fixed': 2 };
const PAGE = 65536;
const ALIGN = 64;
/**
 * Attention jobs split rows at multiples of this: a job's rows go through the attention core
 * in chunks of up to QC rows (assembly/attention.ts), so a 64-row job is one short chunk.
 */
const CORE_ROWS = 64;
/**
 * Rows of one window chunk (WC in assembly/accurate.ts): a chunk's keys are the union of its
 * rows' windows, so window jobs split rows only at its multiples.
 */
const WINDOW_ROWS = 32;
/** About 20 ms of attention on one core: the most one job does, so that an abort waits no longer. */
const JOB_FLOPS = 5e8;
/** Probe rows per job of the heavy-column probe: a fixed grouping, so that its sums do not depend on the threads. */
const PROBE_ROWS = 4;
/** On one thread, the longest run of jobs between two turns of the event loop. */
const YIELD_MS = 25;

export class CpuBackend implements Backend {
  readonly name = 'cpu' as const;
  private wasm: KernelExports;
  private readonly base: number;
  private top: number;
  private live = new Set<CpuBuffer>();
  readonly flavour: KernelFlavour;
  /** threads > 1: the pool and arena; undefined: the calling thread */
  readonly group: CpuThreads | undefined;
  /** the call's signal (see begin) and the batch it may stop */
  private signal: AbortSignal | undefined;
  private readonly stop: { control?: Int32Array } = {};
  private readonly onAbort = () => stopBatch(this.stop);
  /**
   * On one thread, whether ops give the event loop a turn every YIELD_MS (so that an abort,
   * a timer or a page event gets through); the hybrid's backend does not: it needs each op
   * done when it returns.
   */
  yields = false;
  private lastTurn = 0;

  constructor(wasm: KernelExports, flavour: KernelFlavour, group?: CpuThreads) {
    this.wasm = wasm;
    this.flavour = flavour;
    this.group = group;
    this.base = align(wasm.heapBase());
    this.top = this.base;
  }

  /** Threads an op's jobs run on. */
  get threads(): number {
    return this.group?.threads ?? 1;
  }

  /** Bytes of linear memory the module holds now (its high-water mark). */
  get memoryBytes(): number {
    return this.wasm.memory.buffer.byteLength;
  }

  /** Starts a call: its signal stops the jobs not yet started (the op then rejects with ABORTED). */
  begin(signal: AbortSignal | undefined): void {
    this.signal = signal;
    this.lastTurn = performance.now();
    signal?.addEventListener('abort', this.onAbort);
  }

  private reserve(bytes: number): void {
    const have = this.wasm.memory.buffer.byteLength;
    if (bytes <= have) return;
    try {
      this.wasm.memory.grow(Math.ceil((bytes - have) / PAGE));
    } catch (cause) {
      throw new HyperAttentionError('OUT_OF_MEMORY', `WebAssembly memory could not grow to ${bytes} bytes`, { cause });
    }
  }

  /** Scratch above the arena, valid until the next op. */
  private scratch(bytes: number): number {
    this.reserve(this.top + bytes);
    return this.top;
  }

  createBuffer(kind: 'f32' | 'i32', length: number): BackendBuffer {
    const ptr = this.top;
    this.reserve(ptr + length * 4);
    this.top = align(ptr + length * 4);
    const buf: CpuBuffer = { kind, length, ptr };
    this.live.add(buf);
    return buf;
  }

  private ptr(view: RowView, width: number): number {
    const buf = view.buf as CpuBuffer;
    if (!this.live.has(buf)) throw new Error('hyperattention: buffer used after release');
    return buf.ptr + view.row * width * 4;
  }

  upload(buf: BackendBuffer, data: Float32Array | Int32Array, offset = 0): void {
    const ptr = this.ptr({ buf, row: offset }, 1);
    const Ctor = data instanceof Float32Array ? Float32Array : Int32Array;
    new Ctor(this.wasm.memory.buffer, ptr, data.length).set(data);
  }

  download(buf: BackendBuffer, offset: number, length: number, into: Float32Array | Int32Array, intoOffset = 0): Promise<void> {
    const ptr = this.ptr({ buf, row: offset }, 1);
    const Ctor = into instanceof Float32Array ? Float32Array : Int32Array;
    into.set(new Ctor(this.wasm.memory.buffer, ptr, length), intoOffset);
    return Promise.resolve();
  }

  /**
   * `length` elements of buf from element `offset`, as a view into linear memory: no copy,
   * valid until the next op or buffer creation (either may grow, and so move, the memory).
   */
  view(buf: BackendBuffer, offset: number, length: number): Float32Array | Int32Array {
    const ptr = this.ptr({ buf, row: offset }, 1);
    return buf.kind === 'f32'
      ? new Float32Array(this.wasm.memory.buffer, ptr, length)
      : new Int32Array(this.wasm.memory.buffer, ptr, length);
  }

  /**
   * Ranges [from, to) covering [0, total) in multiples of `grain` (the last may be shorter):
   * enough of them that each is about JOB_FLOPS at most and, with threads, that every
   * thread gets several. `flopsPerUnit` prices one unit of the range.
   */
  private ranges(total: number, flopsPerUnit: number, grain: number): [number, number][] {
    const byWork = Math.ceil((total * flopsPerUnit) / JOB_FLOPS);
    const wanted = Math.max(1, byWork, this.threads > 1 ? 4 * this.threads : 1);
    const size = Math.max(grain, Math.ceil(total / wanted / grain) * grain);
    const out: [number, number][] = [];
    for (let from = 0; from < total; from += size) out.push([from, Math.min(total, from + size)]);
    return out;
  }

  /**
   * Runs kernel fn once per job. Each thread gets its own `stride` bytes of scratch from
   * `scratch` on: the job arguments at `offsets` are the first thread's addresses in it.
   */
  private jobs(fn: KernelName, jobs: number[][], scratch: number, stride: number, offsets: number[]): OpResult {
    if (this.signal?.aborted) throw abortedError(this.signal);
    if (this.group && jobs.length > 1) {
      this.reserve(scratch + stride * this.group.threads);
      const argc = jobs[0].length;
      const flat = new Float64Array(jobs.length * argc);
      jobs.forEach((job, j) => flat.set(job, j * argc));
      const spec = { fn, jobs: flat, argc, offsets, stride };
      return this.group.pool.run(this.group.arena, this.group.threads, spec, this.stop).then(() => {
        if (this.signal?.aborted) throw abortedError(this.signal);
      });
    }
    this.reserve(scratch + stride);
    const kernel = this.wasm[fn] as (...args: number[]) => void;
    const due = () => performance.now() - this.lastTurn > YIELD_MS;
    if (!this.yields) {
      for (const job of jobs) kernel(...job);
      return;
    }
    return (async () => {
      for (const job of jobs) {
        if (due()) {
          await nextTurn();
          this.lastTurn = performance.now();
          if (this.signal?.aborted) throw abortedError(this.signal);
        }
        kernel(...job);
      }
    })();
  }

  hash(t: HashTask): OpResult {
    const scratch = this.top;
    const x = this.ptr(t.x, t.d);
    const keys = this.ptr(t.keys, 1);
    const proj = this.ptr({ buf: t.proj, row: 0 }, 1);
    const mode = t.mode === 'reference' ? 0 : 1;
    const jobs = this.ranges(t.rows, 2 * t.d * t.r, CORE_ROWS)
      .map(([r0, r1]) => [x + r0 * t.d * 4, r1 - r0, t.d, proj, t.r, mode, keys + r0 * 4, scratch]);
    return this.jobs('lshKeys', jobs, scratch, align(t.d * 16 * 4), [7]);
  }

  sort(t: SortTask): void {
    const scratch = this.scratch(t.numKeys * 4);
    this.wasm.sortByKey(this.ptr(t.keys, 1), t.count, t.pads, t.numKeys, this.ptr(t.perm, 1), scratch);
  }

  private dst(dst: Destination, dv: number): [number, number, number] {
    return [this.ptr(dst.out, dv), this.ptr(dst.lse, 1), WRITE_CODES[dst.write]];
  }

  private attentionStride(t: { d: number; dv: number }, m = 0): number {
    return align(this.wasm.attentionScratchBytes(t.d, t.dv, m));
  }

  exact(t: ExactTask): OpResult {
    const scratch = this.top;
    const q = this.ptr(t.q, t.d);
    const [out, lse, write] = this.dst(t.dst, t.dv);
    const jobs = this.ranges(t.nq, 2 * t.nk * (t.d + t.dv), CORE_ROWS).map(([r0, r1]) => [
      q + r0 * t.d * 4, this.ptr(t.k, t.d), this.ptr(t.v, t.dv), r1 - r0,
      // Causal rows never see keys past their own: a job's keys end at its last row's.
      t.causal ? Math.min(t.nk, r1 + t.causalOffset) : t.nk, t.d, t.dv, t.scale,
      t.causal ? 1 : 0, t.causalOffset + r0, out + r0 * t.dv * 4, lse + r0 * 4, write, scratch,
    ]);
    return this.jobs('exactAttention', jobs, scratch, this.attentionStride(t), [13]);
  }

  block(t: BlockTask): OpResult {
    const scratch = this.top;
    const head = [
      this.ptr(t.q, t.d), this.ptr(t.k, t.d), this.ptr(t.v, t.dv), this.ptr(t.qPerm, 1), this.ptr(t.kPerm, 1),
      t.nqSorted, t.nqReal, t.nk, t.d, t.dv, t.scale, t.qBlock, t.kBlock, t.nBlocks, t.phantomKeys ? 1 : 0,
    ];
    const jobs = this.ranges(t.nBlocks, 2 * t.qBlock * t.kBlock * (t.d + t.dv), 1)
      .map(([b0, b1]) => [...head, b0, b1, ...this.dst(t.dst, t.dv), scratch]);
    return this.jobs('blockAttention', jobs, scratch, this.attentionStride(t), [20]);
  }

  sampled(t: SampledTask): OpResult {
    const m = t.samples.length;
    const samples = this.top;
    const scratch = align(samples + m * 4);
    this.reserve(scratch);
    new Int32Array(this.wasm.memory.buffer, samples, m).set(t.samples);
    const head = [
      this.ptr(t.q, t.d), this.ptr(t.k, t.d), this.ptr(t.v, t.dv), this.ptr(t.qPerm, 1), this.ptr(t.kPerm, 1),
      samples, m, t.nqSorted, t.nqReal, t.d, t.dv, t.scale, t.qBlock, t.kBlock, t.nBlocks, t.lseOffset,
    ];
    const jobs = this.ranges(t.nqSorted, 2 * m * (t.d + t.dv), CORE_ROWS)
      .map(([r0, r1]) => [...head, r0, r1, ...this.dst(t.dst, t.dv), scratch]);
    return this.jobs('sampledAttention', jobs, scratch, this.attentionStride(t, m), [21]);
  }

  merge(t: MergeTask): void {
    this.wasm.mergeRows(
      this.ptr(t.dst.out, t.dv), this.ptr(t.dst.lse, 1), this.ptr(t.src.out, t.dv), this.ptr(t.src.lse, 1),
      t.rows, t.dv, WRITE_CODES[t.dst.write],
    );
  }

  private head(t: AttentionInputs): number[] {
    return [this.ptr(t.q, t.d), this.ptr(t.k, t.d), this.ptr(t.v, t.dv), t.nq, t.nk, t.d, t.dv, t.scale];
  }

  private part(dst: PartOutput, dv: number): number[] {
    return [this.ptr(dst.out, dv), this.ptr(dst.lse, 1), this.ptr(dst.cnt, 1), this.ptr(dst.vsum, dv)];
  }

  private mask(m: AccurateMask, nq: number, nk: number): number[] {
    const tags = (view: RowView, n: number) => (m.rounds > 0 ? this.ptr(view, n) : 0);
    return [this.ptr(m.flags, 1), m.winLo, m.window, m.causal ? 1 : 0, m.rounds, tags(m.qTags, nq), tags(m.kTags, nk)];
  }

  /**
   * A thread's scratch for attention against a key list shared by every row: the core's
   * scratch, then the tile cache for `keys` keys (cache 0 where the list is too long to
   * cache). Returns the stride and the cache's offset in it.
   */
  private listStride(t: AttentionInputs, keys: number): { stride: number; cacheAt: number | undefined } {
    const core = this.attentionStride(t);
    const cacheBytes = this.wasm.tileCacheBytes(t.d, t.dv, keys);
    return { stride: align(core + cacheBytes), cacheAt: cacheBytes > 0 ? core : undefined };
  }

  /**
   * The probe rows in groups of PROBE_ROWS, each group's mass into its own partial (jobs),
   * then the partials summed in group order: the same sums for every thread count.
   */
  probe(t: ProbeTask): OpResult {
    const groups = Math.ceil(t.count / PROBE_ROWS);
    const partials = this.top;
    const scratch = align(partials + groups * t.nk * 4);
    this.reserve(scratch);
    const mass = this.ptr(t.mass, 1);
    const rows = this.ptr(t.rows, 1);
    const jobs = Array.from({ length: groups }, (_, g) => [
      this.ptr(t.q, t.d), this.ptr(t.k, t.d), t.nq, t.nk, t.d, t.scale, rows + g * PROBE_ROWS * 4,
      Math.min(PROBE_ROWS, t.count - g * PROBE_ROWS), t.causal ? 1 : 0, t.sinks, t.winLo, t.window,
      groups === 1 ? mass : partials + g * t.nk * 4, scratch,
    ]);
    const sum = () => {
      if (groups === 1) return;
      const out = new Float32Array(this.wasm.memory.buffer, mass, t.nk);
      const all = new Float32Array(this.wasm.memory.buffer, partials, groups * t.nk);
      out.set(all.subarray(0, t.nk));
      for (let g = 1; g < groups; g++) {
        const part = all.subarray(g * t.nk, (g + 1) * t.nk);
        for (let j = 0; j < t.nk; j++) out[j] = Math.fround(out[j] + part[j]);
      }
    };
    const ran = this.jobs('probeMass', jobs, scratch, align(t.nk * 4), [13]);
    return ran ? ran.then(sum) : sum();
  }

  heavy(t: HeavyTask): void {
    const chosen = heaviest(this.view(t.mass.buf, t.mass.row, t.nk) as Float32Array, t.sinks, t.count);
    const cols = this.view(t.cols.buf, t.cols.row, t.sinks + t.count);
    const flags = this.view(t.flags.buf, t.flags.row, t.nk);
    flags.fill(0);
    for (let j = 0; j < t.sinks; j++) cols[j] = j;
    chosen.forEach((j, i) => (cols[t.sinks + i] = j));
    for (let i = 0; i < t.sinks + chosen.length; i++) flags[cols[i]] = 1;
  }

  columns(t: ColumnsTask): OpResult {
    const scratch = this.top;
    const { stride, cacheAt } = this.listStride(t, t.count);
    const cache = cacheAt === undefined ? 0 : scratch + cacheAt;
    const jobs = this.ranges(t.nq, 2 * t.count * (t.d + t.dv), CORE_ROWS).map(([r0, r1]) => [
      ...this.head(t), this.ptr(t.cols, 1), t.count, t.causal ? 1 : 0, r0, r1, ...this.part(t.dst, t.dv), scratch, cache,
    ]);
    return this.jobs('accurateColumns', jobs, scratch, stride, cache ? [17, 18] : [17]);
  }

  window(t: WindowTask): OpResult {
    const scratch = this.top;
    const keys = t.mask.window + WINDOW_ROWS - 1;
    const jobs = this.ranges(t.nq, 2 * keys * (t.d + t.dv), WINDOW_ROWS).map(([r0, r1]) => [
      ...this.head(t), ...this.mask(t.mask, t.nq, t.nk).slice(0, 4), r0, r1, ...this.part(t.dst, t.dv), scratch,
    ]);
    return this.jobs('accurateWindow', jobs, scratch, this.attentionStride(t), [18]);
  }

  round(t: RoundTask): OpResult {
    const scratch = this.top;
    // Buckets hold nq / numKeys queries on average, each against up to cap keys.
    const perBucket = 2 * (t.nq / t.numKeys) * t.cap * (t.d + t.dv);
    const jobs = this.ranges(t.numKeys, perBucket, 1).map(([u0, u1]) => [
      ...this.head(t), this.ptr(t.qPerm, 1), this.ptr(t.kPerm, 1), this.ptr(t.qStarts, 1), this.ptr(t.kStarts, 1),
      t.numKeys, t.cap, ...this.mask(t.mask, t.nq, t.nk), u0, u1, ...this.part(t.dst, t.dv), scratch,
    ]);
    return this.jobs('accurateBuckets', jobs, scratch, this.attentionStride(t), [27]);
  }

  buckets(t: BucketsTask): void {
    this.wasm.bucketTags(
      this.ptr(t.keys, 1), this.ptr(t.perm, 1), t.count, t.numKeys, t.cap, this.ptr(t.tags, 1), this.ptr(t.starts, 1),
    );
  }

  samples(t: SamplesTask): OpResult {
    const m = t.samples.length;
    const list = this.top;
    const scratch = align(list + m * 4);
    this.reserve(scratch);
    new Int32Array(this.wasm.memory.buffer, list, m).set(t.samples);
    const { stride, cacheAt } = this.listStride(t, m);
    const cache = cacheAt === undefined ? 0 : scratch + cacheAt;
    const jobs = this.ranges(t.qTo - t.qFrom, 2 * m * (t.d + t.dv), CORE_ROWS).map(([r0, r1]) => [
      ...this.head(t), list, m, t.qFrom + r0, t.qFrom + r1, ...this.mask(t.mask, t.nq, t.nk), ...this.part(t.dst, t.dv),
      scratch, cache,
    ]);
    return this.jobs('accurateSamples', jobs, scratch, stride, cache ? [23, 24] : [23]);
  }

  /**
   * Runs of rows, each from the running sum of V it starts with (one pass over V here,
   * remainderSums), so that every run continues the one sequential sum exactly.
   */
  remainder(t: RemainderTask): OpResult {
    const split = this.ranges(t.nq, 16 * t.dv, CORE_ROWS);
    const starts = this.top;
    const sums = align(starts + split.length * 4);
    const scratch = align(sums + split.length * t.dv * 8);
    this.reserve(scratch);
    new Int32Array(this.wasm.memory.buffer, starts, split.length).set(split.map(([r0]) => r0));
    const v = this.ptr(t.v, t.dv);
    this.wasm.remainderSums(v, t.nk, t.dv, t.causal ? 1 : 0, starts, split.length, sums);
    const jobs = split.map(([r0, r1], j) => [
      v, t.nq, t.nk, t.dv, t.causal ? 1 : 0, t.controlVariate, r0, r1, sums + j * t.dv * 8,
      ...this.part(t.exact, t.dv), ...this.part(t.samples, t.dv), scratch,
    ]);
    return this.jobs('remainderMerge', jobs, scratch, align(t.dv * 8), [17]);
  }

  releaseAll(): void {
    this.live.clear();
    this.top = this.base;
    this.signal?.removeEventListener('abort', this.onAbort);
    this.signal = undefined;
    this.stop.control = undefined;
    // A large call's memory would otherwise stay with the process for good (threaded
    // arenas are dropped instead: see backends.ts).
    if (!this.group) this.wasm = renewKernels(this.wasm, this.flavour);
  }
}

function align(x: number): number {
  return Math.ceil(x / ALIGN) * ALIGN;
}

/** Resolves on a later turn of the event loop, without the clamping of nested timers. */
function nextTurn(): Promise<void> {
  const immediate = (globalThis as { setImmediate?: (fn: () => void) => void }).setImmediate;
  if (immediate) return new Promise((resolve) => immediate(resolve));
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = () => {
      channel.port1.close();
      resolve();
    };
    channel.port2.postMessage(0);
  });
}

/** A WebAssembly backend on the calling thread; flavour defaults to SIMD where the engine supports it. */
export async function createCpuBackend(flavour: KernelFlavour = bestFlavour()): Promise<CpuBackend> {
  return new CpuBackend(await instantiateKernels(flavour), flavour);
}
