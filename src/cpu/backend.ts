// The WebAssembly backend: buffers are regions of the kernel module's linear memory
// (a bump arena, released after each call), ops call the AssemblyScript kernels. Each
// op's transient scratch sits just above the arena's top.
//
// The attention ops (and merges) run as jobs over disjoint rows (blocks, buckets) of about
// JOB_MS each: on one thread in turn, giving the event loop a turn between jobs once a time
// slice is due (slices.ts: so that an abort, a timer or a page event gets through), or with
// threads over a shared memory, claimed by the pool's workers, each with its own scratch;
// an abort stops the jobs not yet started. A row's result never depends on which job or thread
// computed it: results are bit-identical for every thread count.
import { abortedError, HyperAttentionError } from '../errors.ts';
import {
  shift, type AttentionInputs, type AccurateMask, type Backend, type BackendBuffer, type BlockTask, type BucketsTask, type ColumnsTask,
  type Destination, type ExactTask, type HashTask, type HeadBatch, type PrefixesTask, type HeavyTask, type MergeTask, type OpResult,
  type PartOutput, type ProbeTask, type RemainderTask, type RoundHead, type RoundTask, type RowView, type SampledTask, type SamplesTask,
  type SortedRowsTask, type SortTask, type WidenTask, type WindowTask,
} from '../ops.ts';
import { heaviest } from '../heavy.ts';
import { stopBatch, type ThreadPool } from '../threads/pool.ts';
import { WRITE_CODES } from '../codes.ts';
import { sliceDue, turn } from '../slices.ts';
import {
  bestFlavour, callKernel, instantiateKernels, kernelArgIndexes, kernelArgs, renewKernels, type KernelArgs, type KernelExports,
  type KernelFlavour, type KernelName, type KernelParam,
} from './wasm.ts';

interface CpuBuffer extends BackendBuffer {
  readonly ptr: number;
}

/** The threads a backend's arena runs on: its id in the pool, and how many workers a batch takes. */
export interface CpuThreads {
  pool: ThreadPool;
  arena: number;
  threads: number;
}

const PAGE = 65536;
const ALIGN = 64;
/** Bytes of one element of a buffer of each kind. */
const ELEMENT_BYTES: Readonly<Record<BackendBuffer['kind'], number>> = { f32: 4, i32: 4, f16: 2 };
/** float16 values per job of widen: a fixed split, about a millisecond each. */
const WIDEN_ELEMENTS = 1 << 20;
/**
 * Attention jobs split rows at multiples of this where such a job is short enough: a job's
 * rows go through the attention core in chunks of up to QC rows (assembly/attention.ts),
 * each reading every key tile once, so a 64-row job is one short chunk.
 */
const CORE_ROWS = 64;
/**
 * Rows of one micro-tile of the attention core (MR in assembly/attention.ts), the finest
 * split of an attention job whose 64 rows would take longer than JOB_FLOPS (long keys,
 * large d): a row's result never depends on the rows it shares a job with.
 */
const MICRO_ROWS = 4;
/**
 * Rows of one run of the window's stats (STATS_ROWS in assembly/accurate.ts): its running
 * V sum restarts with each run, so window jobs split rows only at its multiples.
 */
const WINDOW_ROWS = 64;
/**
 * About 4 ms of attention on one core: the most one job does where its rows allow, so that
 * an abort stops the workers (which finish the job they run) that soon, and so that on one
 * thread the event loop waits no longer than a job for its turn.
 */
const JOB_FLOPS = 1e8;
/**
 * The accurate mode's kernels mask every score (and count what they hide): about twice the
 * time of plain attention per flop, so their jobs are priced at this many times the flops.
 */
const MASKED = 2;
/**
 * Keys per part when a few query rows (at most CORE_ROWS: decoding, or a run of a long
 * exact call's rows) face many more keys: each part is a job, so that the threads share the
 * keys of one head instead of one thread taking them all, and each job's keys stay in cache
 * for all its rows; the parts' results merge by lse in part order. The split depends on the
 * shape alone, so results stay bit-identical for every thread count.
 */
const KEY_PART = 2048;

/**
 * Whether exact attention of t runs in key parts (exactByKeys): a few rows against at least
 * two parts' keys; causal, at least a part's keys before the rows' own (keyParts).
 */
function byKeys(t: ExactTask): boolean {
  return t.nq <= CORE_ROWS && (t.causal ? t.causalOffset >= KEY_PART : t.nk >= 2 * KEY_PART);
}

/**
 * The key parts of exactByKeys: [from, to) in order, and whether the part is causal. Not
 * causal, KEY_PART keys each; causal (row i at key position causalOffset + i, nk =
 * causalOffset + nq), the keys before row 0's position in parts that every row sees whole,
 * then the square of the rows' own positions, which row i sees up to its own.
 */
function keyParts(t: ExactTask): { from: number; to: number; causal: boolean }[] {
  const before = t.causal ? t.causalOffset : t.nk;
  const parts = Array.from({ length: Math.ceil(before / KEY_PART) }, (_, p) => ({
    from: p * KEY_PART, to: Math.min(before, (p + 1) * KEY_PART), causal: false,
  }));
  if (t.causal) parts.push({ from: before, to: t.nk, causal: true });
  return parts;
}

/**
 * Rows up to which a key part runs the few-rows kernel (assembly/attention.ts,
 * fewRowsAttention: keys read in place) rather than the tiled core, whose tile copies cost
 * about what the arithmetic does when the rows are few.
 */
const FEW_ROWS = 16;
/**
 * Keys per job of the heavy-column probe (every probe row against a range of keys): a
 * split fixed by the number of keys, so that its sums do not depend on the threads.
 */
const PROBE_RANGE = 2048;

/** Words of a query head's entry in accurateBuckets' table (assembly/accurate.ts, HEAD_WORDS). */
const ROUND_HEAD_WORDS = 9;

export class CpuBackend implements Backend {
  readonly name = 'cpu' as const;
  /** round() and remainder() take a key-value head's query heads in one op (RoundTask.group, RemainderTask.group). */
  readonly groupedHeads = true;
  private wasm: KernelExports;
  /** where a call's buffers start: past the lasting buffers */
  private base: number;
  private top: number;
  private live = new Set<CpuBuffer>();
  /** buffers that releaseAll keeps (a key-value cache's, src/cache.ts) */
  private readonly lasting = new Set<CpuBuffer>();
  readonly flavour: KernelFlavour;
  /** threads > 1: the pool and arena; undefined: the calling thread */
  readonly group: CpuThreads | undefined;
  /** the call's signal (see begin) and the batch it may stop */
  private signal: AbortSignal | undefined;
  private readonly stop: { control?: Int32Array } = {};
  private readonly onAbort = () => stopBatch(this.stop);
  /**
   * On one thread, whether ops give the event loop a turn between jobs once a time slice is
   * due (slices.ts); the hybrid's backend does not: it needs each op done when it returns.
   */
  yields = false;

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

  createBuffer(kind: BackendBuffer['kind'], length: number): BackendBuffer {
    const ptr = this.top;
    const bytes = length * ELEMENT_BYTES[kind];
    this.reserve(ptr + bytes);
    this.top = align(ptr + bytes);
    const buf: CpuBuffer = { kind, length, ptr };
    this.live.add(buf);
    return buf;
  }

  /**
   * A buffer that releaseAll keeps, at the bottom of the arena: made before any call's
   * buffers, it stays where it is for the backend's life (the memory is never renewed).
   */
  createLasting(kind: BackendBuffer['kind'], length: number): BackendBuffer {
    if (this.live.size > 0) throw new Error('hyperattention: lasting buffers are made between calls');
    const buf = this.createBuffer(kind, length) as CpuBuffer;
    this.live.delete(buf);
    this.lasting.add(buf);
    this.base = this.top;
    return buf;
  }

  /** The view's address; float16 rows only where the caller reads them as such (`half`). */
  private ptr(view: RowView, width: number, half = false): number {
    const buf = view.buf as CpuBuffer;
    if (!this.live.has(buf) && !this.lasting.has(buf)) throw new Error('hyperattention: buffer used after release');
    if (buf.kind === 'f16' && !half) throw new Error('hyperattention: float16 rows reach the kernels of readsHalf alone (else widen them first)');
    return buf.ptr + view.row * width * ELEMENT_BYTES[buf.kind];
  }

  /** Copies data (float16 bits into an f16 buffer) into buf from element `offset`. */
  upload(buf: BackendBuffer, data: Float32Array | Int32Array | Uint16Array, offset = 0): void {
    const ptr = this.ptr({ buf, row: offset }, 1, true);
    const Ctor = data instanceof Float32Array ? Float32Array : data instanceof Int32Array ? Int32Array : Uint16Array;
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
   * thread gets several. `flopsPerUnit` prices one unit of the range. Where `grain` units
   * cost more than JOB_FLOPS, ranges are multiples of `minGrain` instead, as few as fit.
   */
  private ranges(total: number, flopsPerUnit: number, grain: number, minGrain = grain): [number, number][] {
    const fit = Math.floor(JOB_FLOPS / flopsPerUnit);
    if (fit < grain) grain = Math.max(minGrain, Math.floor(fit / minGrain) * minGrain);
    const byWork = Math.ceil((total * flopsPerUnit) / JOB_FLOPS);
    const wanted = Math.max(1, byWork, this.threads > 1 ? 4 * this.threads : 1);
    const size = Math.max(grain, Math.ceil(total / wanted / grain) * grain);
    const out: [number, number][] = [];
    for (let from = 0; from < total; from += size) out.push([from, Math.min(total, from + size)]);
    return out;
  }

  /**
   * Runs kernel fn once per job. Each thread gets its own `stride` bytes of scratch from
   * `scratch` on: the job arguments named `perThread` are the first thread's addresses in it.
   */
  private jobs<K extends KernelName>(
    fn: K, named: KernelArgs<K>[], scratch: number, stride: number, perThread: readonly KernelParam<K>[],
  ): OpResult {
    if (this.signal?.aborted) throw abortedError(this.signal);
    if (named.length === 0) return; // an empty part (e.g. a causal chunk's step without rows)
    const jobs = named.map((job) => kernelArgs(fn, job));
    // With threads, even one job goes to a worker: the calling thread only waits.
    if (this.group) {
      const offsets = kernelArgIndexes(fn, perThread);
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
    const kernel = this.wasm[fn];
    if (!this.yields) {
      for (const job of jobs) kernel(...job);
      return;
    }
    return (async () => {
      for (const job of jobs) {
        if (sliceDue()) await turn(this.signal);
        kernel(...job);
      }
    })();
  }

  hash(t: HashTask): OpResult {
    const scratch = this.top;
    const x = this.ptr(t.x, t.d);
    const keys = this.ptr(t.keys, 1);
    const proj = this.ptr({ buf: t.proj, row: 0 }, 1);
    const jobs = this.ranges(t.rows, 2 * t.d * t.r, CORE_ROWS).map(([r0, r1]) => ({
      x: x + r0 * t.d * 4, n: r1 - r0, d: t.d, proj, r: t.r, mode: t.mode === 'fixed', keys: keys + r0 * 4, scratch,
    }));
    return this.jobs('lshKeys', jobs, scratch, align(t.d * 16 * 4), ['scratch']);
  }

  sort(t: SortTask): void {
    const scratch = this.scratch(t.numKeys * 4);
    callKernel(this.wasm, 'sortByKey', {
      keys: this.ptr(t.keys, 1), count: t.count, pads: t.pads, numKeys: t.numKeys, perm: this.ptr(t.perm, 1), scratch,
    });
  }

  private dst(dst: Destination, dv: number): { out: number; lse: number; write: number } {
    return { out: this.ptr(dst.out, dv), lse: this.ptr(dst.lse, 1), write: WRITE_CODES[dst.write] };
  }

  private attentionStride(t: { d: number; dv: number }, m = 0): number {
    return align(this.wasm.attentionScratchBytes(t.d, t.dv, m));
  }

  /**
   * Whether exact attention of `rows` query rows against nk keys reads a float16 cache's
   * rows in place: where float32 rows would go to the few-rows kernel (SIMD builds), its
   * float16 variant computes the same bits from the same (rounded) values. Every other op
   * takes them widened (widen), which gives those bits too.
   */
  readsHalf(rows: number, nk: number, causal: boolean): boolean {
    return !causal && rows <= FEW_ROWS && nk >= 2 * KEY_PART && this.flavour !== 'scalar';
  }

  exact(t: ExactTask): OpResult {
    const half = t.k.buf.kind === 'f16';
    if (half && !this.readsHalf(t.nq, t.nk, t.causal)) throw new Error('hyperattention: float16 rows for exact attention beyond readsHalf');
    if (byKeys(t)) return this.exactByKeys([t]);
    const scratch = this.top;
    const q = this.ptr(t.q, t.d);
    const { out, lse, write } = this.dst(t.dst, t.dv);
    const jobs = this.ranges(t.nq, 2 * t.nk * (t.d + t.dv), CORE_ROWS, MICRO_ROWS).map(([r0, r1]) => ({
      q: q + r0 * t.d * 4, k: this.ptr(t.k, t.d), v: this.ptr(t.v, t.dv), nq: r1 - r0,
      // Causal rows never see keys past their own: a job's keys end at its last row's.
      nk: t.causal ? Math.min(t.nk, r1 + t.causalOffset) : t.nk, d: t.d, dv: t.dv, scale: t.scale,
      causal: t.causal, causalOffset: t.causalOffset + r0, out: out + r0 * t.dv * 4, lse: lse + r0 * 4, write, scratch,
    }));
    return this.jobs('exactAttention', jobs, scratch, this.attentionStride(t), ['scratch']);
  }

  /**
   * Decoding on a cache (a few rows a head, keys read in place): the heads' key parts
   * (exactByKeys) go to the threads as one batch, so that a call waits for the workers once
   * rather than once a head, and each head's result is the bits exact() gives it.
   */
  batchesHeads(rows: number, inPlace: boolean): boolean {
    return inPlace && rows <= FEW_ROWS;
  }

  /** Exact attention of every head of the batch: key parts as one batch where exact() would split keys, else head by head. */
  exactHeads(t: ExactTask, heads: HeadBatch): OpResult {
    const each = Array.from({ length: heads.count }, (_, i): ExactTask => {
      const kvRow = Math.floor((heads.phase + i) / heads.group) * heads.kRows;
      return {
        ...t, q: shift(t.q, i * heads.qRows), k: shift(t.k, kvRow), v: shift(t.v, kvRow),
        dst: { ...t.dst, out: shift(t.dst.out, i * heads.qRows), lse: shift(t.dst.lse, i * heads.qRows) },
      };
    });
    if (byKeys(t)) return this.exactByKeys(each);
    return (async () => {
      for (const head of each) await this.exact(head);
    })();
  }

  /**
   * Exact attention of a few rows (tasks of one shape: a head each) in key parts (keyParts;
   * not causal and up to FEW_ROWS rows, with the few-rows kernel, its float16 variant for
   * float16 keys and values): each part's out and lse into its own rows above the arena,
   * then merged into the head's part 0 in order (exact log-add-exp), and part 0 into the
   * destination as it asks.
   */
  private exactByKeys(tasks: ExactTask[]): OpResult {
    const t = tasks[0];
    const spans = keyParts(t);
    const parts = spans.length;
    const perHead = parts * t.nq;
    const outs = this.top;
    const lses = align(outs + tasks.length * perHead * t.dv * 4);
    const scratch = align(lses + tasks.length * perHead * 4);
    this.reserve(scratch);
    const half = t.k.buf.kind === 'f16';
    const bytes = ELEMENT_BYTES[t.k.buf.kind];
    const jobs = tasks.flatMap((task, h) => {
      const q = this.ptr(task.q, t.d);
      const k = this.ptr(task.k, t.d, half);
      const v = this.ptr(task.v, t.dv, half);
      return spans.map(({ from, to, causal }, p) => ({
        q, k: k + from * t.d * bytes, v: v + from * t.dv * bytes, nq: t.nq, nk: to - from,
        d: t.d, dv: t.dv, scale: t.scale, causal, causalOffset: 0,
        out: outs + (h * perHead + p * t.nq) * t.dv * 4, lse: lses + (h * perHead + p * t.nq) * 4,
        write: WRITE_CODES.write, scratch,
      }));
    });
    const ran = half
      ? this.jobs('fewRowsAttentionHalf', jobs, scratch, this.attentionStride(t), ['scratch'])
      : t.nq <= FEW_ROWS && !t.causal
        ? this.jobs('fewRowsAttention', jobs, scratch, this.attentionStride(t), ['scratch'])
        : this.jobs('exactAttention', jobs, scratch, this.attentionStride(t), ['scratch']);
    const merge = () => {
      for (const [h, task] of tasks.entries()) {
        const { out, lse, write } = this.dst(task.dst, t.dv);
        const out0 = outs + h * perHead * t.dv * 4;
        const lse0 = lses + h * perHead * 4;
        for (let p = 1; p < parts; p++) {
          callKernel(this.wasm, 'mergeRows', {
            dstOut: out0, dstLse: lse0, srcOut: out0 + p * t.nq * t.dv * 4, srcLse: lse0 + p * t.nq * 4, rows: t.nq, dv: t.dv,
            write: WRITE_CODES['merge-fixed'],
          });
        }
        callKernel(this.wasm, 'mergeRows', { dstOut: out, dstLse: lse, srcOut: out0, srcLse: lse0, rows: t.nq, dv: t.dv, write });
      }
    };
    return ran ? ran.then(merge) : merge();
  }

  prefixes(t: PrefixesTask): OpResult {
    const scratch = this.top;
    const q = this.ptr(t.q, t.d);
    const { out, lse, write } = this.dst(t.dst, t.dv);
    const jobs = Array.from(t.keys.subarray(0, t.nq), (nk, i) => ({
      q: q + i * t.d * 4, k: this.ptr(t.k, t.d), v: this.ptr(t.v, t.dv), nq: 1, nk, d: t.d, dv: t.dv, scale: t.scale,
      causal: false, causalOffset: 0, out: out + i * t.dv * 4, lse: lse + i * 4, write, scratch,
    }));
    return this.jobs('exactAttention', jobs, scratch, this.attentionStride(t), ['scratch']);
  }

  /** The arguments of the kernels over sorted rows that every job shares. */
  private sortedRows(t: SortedRowsTask) {
    return {
      q: this.ptr(t.q, t.d), k: this.ptr(t.k, t.d), v: this.ptr(t.v, t.dv), qPerm: this.ptr(t.qPerm, 1), kPerm: this.ptr(t.kPerm, 1),
      nqSorted: t.nqSorted, nqReal: t.nqReal, d: t.d, dv: t.dv, scale: t.scale, qBlock: t.qBlock, kBlock: t.kBlock,
      nBlocks: t.nBlocks, ...this.dst(t.dst, t.dv),
    };
  }

  block(t: BlockTask): OpResult {
    const scratch = this.top;
    const shared = { ...this.sortedRows(t), nk: t.nk, phantomKeys: t.phantomKeys, scratch };
    const jobs = this.ranges(t.nBlocks, 2 * t.qBlock * t.kBlock * (t.d + t.dv), 1)
      .map(([blkFrom, blkTo]) => ({ ...shared, blkFrom, blkTo }));
    return this.jobs('blockAttention', jobs, scratch, this.attentionStride(t), ['scratch']);
  }

  sampled(t: SampledTask): OpResult {
    const m = t.samples.length;
    const samples = this.top;
    const scratch = align(samples + m * 4);
    this.reserve(scratch);
    new Int32Array(this.wasm.memory.buffer, samples, m).set(t.samples);
    const shared = { ...this.sortedRows(t), samples, m, lseOffset: t.lseOffset, scratch };
    const jobs = this.ranges(t.nqSorted, 2 * m * (t.d + t.dv), CORE_ROWS, MICRO_ROWS).map(([qFrom, qTo]) => ({ ...shared, qFrom, qTo }));
    return this.jobs('sampledAttention', jobs, scratch, this.attentionStride(t, m), ['scratch']);
  }

  merge(t: MergeTask): OpResult {
    const [dstOut, dstLse, srcOut, srcLse] = [this.ptr(t.dst.out, t.dv), this.ptr(t.dst.lse, 1), this.ptr(t.src.out, t.dv), this.ptr(t.src.lse, 1)];
    const jobs = this.ranges(t.rows, 16 * t.dv, CORE_ROWS).map(([r0, r1]) => ({
      dstOut: dstOut + r0 * t.dv * 4, dstLse: dstLse + r0 * 4, srcOut: srcOut + r0 * t.dv * 4, srcLse: srcLse + r0 * 4,
      rows: r1 - r0, dv: t.dv, write: WRITE_CODES[t.dst.write],
    }));
    return this.jobs('mergeRows', jobs, this.top, 0, []);
  }

  private head(t: AttentionInputs) {
    return { q: this.ptr(t.q, t.d), k: this.ptr(t.k, t.d), v: this.ptr(t.v, t.dv), nq: t.nq, nk: t.nk, d: t.d, dv: t.dv, scale: t.scale };
  }

  private part(dst: PartOutput, dv: number) {
    return { out: this.ptr(dst.out, dv), lse: this.ptr(dst.lse, 1), cnt: this.ptr(dst.cnt, 1), vsum: this.ptr(dst.vsum, dv) };
  }

  private mask(m: AccurateMask, nq: number, nk: number) {
    const tags = (view: RowView, n: number) => (m.rounds > 0 ? this.ptr(view, n) : 0);
    return {
      flags: this.ptr(m.flags, 1), winLo: m.winLo, win: m.window, causal: m.causal, causalOffset: m.causalOffset, rounds: m.rounds,
      qTags: tags(m.qTags, nq), kTags: tags(m.kTags, nk),
    };
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
   * The probe in two steps over the same ranges of PROBE_RANGE keys (jobs): every probe
   * row's scores against the range's keys and their softmax terms (probeScores), then each
   * range's mass from the rows' softmax over all ranges (probeMass).
   */
  probe(t: ProbeTask): OpResult {
    const ranges = Math.ceil(t.nk / PROBE_RANGE);
    const scores = this.top;
    const stats = align(scores + t.count * t.nk * 4);
    this.reserve(stats + ranges * t.count * 8);
    const rows = this.ptr(t.rows, 1);
    const shared = { nk: t.nk, rows, nProbe: t.count, causal: t.causal, causalOffset: t.causalOffset, scores };
    const span = (r: number) => ({ kFrom: r * PROBE_RANGE, kTo: Math.min(t.nk, (r + 1) * PROBE_RANGE) });
    const scoreJobs = Array.from({ length: ranges }, (_, r) => ({
      ...shared, ...span(r), q: this.ptr(t.q, t.d), k: this.ptr(t.k, t.d), d: t.d, scale: t.scale, stats: stats + r * t.count * 8,
    }));
    const massJobs = Array.from({ length: ranges }, (_, r) => ({
      ...shared, ...span(r), sinks: t.sinks, winLo: t.winLo, win: t.window, range: r, ranges, stats, mass: this.ptr(t.mass, 1),
    }));
    const mass = () => this.jobs('probeMass', massJobs, this.top, 0, []);
    const ran = this.jobs('probeScores', scoreJobs, this.top, 0, []);
    return ran ? ran.then(mass) : mass();
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
    const shared = {
      ...this.head(t), cols: this.ptr(t.cols, 1), nCols: t.count, causal: t.causal, causalOffset: t.causalOffset,
      ...this.part(t.dst, t.dv), scratch, cache,
    };
    const jobs = this.ranges(t.nq, MASKED * 2 * t.count * (t.d + t.dv), CORE_ROWS, MICRO_ROWS).map(([qFrom, qTo]) => ({ ...shared, qFrom, qTo }));
    return this.jobs('accurateColumns', jobs, scratch, stride, cache ? ['scratch', 'cache'] : ['scratch']);
  }

  window(t: WindowTask): OpResult {
    const scratch = this.top;
    const keys = t.mask.window + WINDOW_ROWS - 1;
    const { flags, winLo, win, causal, causalOffset } = this.mask(t.mask, t.nq, t.nk);
    const shared = { ...this.head(t), flags, winLo, win, causal, causalOffset, ...this.part(t.dst, t.dv), scratch };
    const jobs = this.ranges(t.nq, MASKED * 2 * keys * (t.d + t.dv), WINDOW_ROWS).map(([rowFrom, rowTo]) => ({ ...shared, rowFrom, rowTo }));
    return this.jobs('accurateWindow', jobs, scratch, this.attentionStride(t), ['scratch']);
  }

  round(t: RoundTask): OpResult {
    // The heads' table (accurateBuckets): per head its queries, perm, starts, flags, tags and destination.
    const heads: RoundHead[] = [{ q: t.q, qPerm: t.qPerm, qStarts: t.qStarts, flags: t.mask.flags, qTags: t.mask.qTags, dst: t.dst }, ...t.group ?? []];
    const table = this.top;
    const scratch = align(table + heads.length * ROUND_HEAD_WORDS * 4);
    this.reserve(scratch);
    const entries = new Int32Array(this.wasm.memory.buffer, table, heads.length * ROUND_HEAD_WORDS);
    for (const [g, h] of heads.entries()) {
      const { flags, qTags } = this.mask({ ...t.mask, flags: h.flags, qTags: h.qTags }, t.nq, t.nk);
      const { out, lse, cnt, vsum } = this.part(h.dst, t.dv);
      entries.set([this.ptr(h.q, t.d), this.ptr(h.qPerm, 1), this.ptr(h.qStarts, 1), flags, qTags, out, lse, cnt, vsum], g * ROUND_HEAD_WORDS);
    }
    // Buckets hold nq / numKeys queries of each head on average, each against up to cap keys.
    const perBucket = MASKED * 2 * heads.length * (t.nq / t.numKeys) * t.cap * (t.d + t.dv);
    // The first head's own fields (q, flags, qTags) are in the table; the kernel takes the rest.
    const shared = {
      table, heads: heads.length, ...this.head(t), kPerm: this.ptr(t.kPerm, 1), kStarts: this.ptr(t.kStarts, 1),
      numKeys: t.numKeys, cap: t.cap, ...this.mask(t.mask, t.nq, t.nk), scratch,
    };
    const jobs = this.ranges(t.numKeys, perBucket, 1).map(([uFrom, uTo]) => ({ ...shared, uFrom, uTo }));
    return this.jobs('accurateBuckets', jobs, scratch, this.attentionStride(t), ['scratch']);
  }

  buckets(t: BucketsTask): void {
    callKernel(this.wasm, 'bucketTags', {
      keys: this.ptr(t.keys, 1), perm: this.ptr(t.perm, 1), count: t.count, numKeys: t.numKeys, cap: t.cap,
      tags: this.ptr(t.tags, 1), starts: this.ptr(t.starts, 1),
    });
  }

  samples(t: SamplesTask): OpResult {
    const list = this.top;
    const scratch = align(list + t.samples.length * 4);
    this.reserve(scratch);
    // Ascending: each tile of the list then spans a short run of key positions, so that
    // the window test rules out whole tiles for most rows. Samples at the columns' keys are
    // hidden from every row: they leave the list, so that no tile holds a flagged key and
    // no row tests its keys one by one for them. (The set each row counts, and so the
    // estimate, is the same; only the order of the sums changes.)
    const flags = this.view(t.mask.flags.buf, t.mask.flags.row, t.nk) as Int32Array;
    const sorted = new Int32Array(this.wasm.memory.buffer, list, t.samples.length);
    let m = 0;
    for (const j of t.samples) if (flags[j] === 0) sorted[m++] = j;
    sorted.subarray(0, m).sort();
    const { stride, cacheAt } = this.listStride(t, m);
    const cache = cacheAt === undefined ? 0 : scratch + cacheAt;
    const { out, lse, cnt, vsum } = this.part(t.dst, t.dv);
    const shared = {
      ...this.head(t), samples: list, m, ...this.mask(t.mask, t.nq, t.nk), sOut: out, sLse: lse, cnt, vsum, scratch, cache,
    };
    const jobs = this.ranges(t.qTo - t.qFrom, MASKED * 2 * Math.max(1, m) * (t.d + t.dv), CORE_ROWS, MICRO_ROWS)
      .map(([r0, r1]) => ({ ...shared, qFrom: t.qFrom + r0, qTo: t.qFrom + r1 }));
    return this.jobs('accurateSamples', jobs, scratch, stride, cache ? ['scratch', 'cache'] : ['scratch']);
  }

  /**
   * Runs of rows, each from the running sum of V it starts with (one pass over V first,
   * remainderSums, a job of its own: at 64k keys and dv = 128 it reads 32 MB, which held
   * the calling thread for tens of ms), so that every run continues the one sequential sum
   * exactly.
   */
  remainder(t: RemainderTask): OpResult {
    const split = this.ranges(t.nq, 16 * t.dv, CORE_ROWS);
    const starts = this.top;
    const sums = align(starts + split.length * 4);
    const scratch = align(sums + split.length * t.dv * 8);
    this.reserve(scratch);
    // Causal, each run's sum starts at its first row's key position.
    const offset = t.causal ? t.causalOffset : 0;
    new Int32Array(this.wasm.memory.buffer, starts, split.length).set(split.map(([r0]) => r0 + offset));
    const v = this.ptr(t.v, t.dv);
    const summed = this.jobs('remainderSums', [{ v, nk: t.nk, dv: t.dv, causal: t.causal, starts, count: split.length, sums }], scratch, 0, []);
    // The sums serve every head of the group: they depend on V and the rows alone.
    const jobs = [t, ...t.group ?? []].flatMap((head) => {
      const exact = this.part(head.exact, t.dv);
      const sampled = this.part(head.samples, t.dv);
      const shared = {
        v, nq: t.nq, nk: t.nk, dv: t.dv, causal: t.causal, causalOffset: t.causalOffset, cv: t.controlVariate, out: exact.out, lse: exact.lse,
        cntE: exact.cnt, vsumE: exact.vsum, sOut: sampled.out, sLse: sampled.lse, cntS: sampled.cnt, vsumS: sampled.vsum, scratch,
      };
      return split.map(([rowFrom, rowTo], j) => ({ ...shared, rowFrom, rowTo, start: sums + j * t.dv * 8 }));
    });
    const merge = () => this.jobs('remainderMerge', jobs, scratch, align(t.dv * 8), ['scratch']);
    return summed ? summed.then(merge) : merge();
  }

  widen(t: WidenTask): OpResult {
    const src = this.ptr(t.src, t.width, true);
    const dst = this.ptr(t.dst, t.width);
    const n = t.rows * t.width;
    const jobs = Array.from({ length: Math.ceil(n / WIDEN_ELEMENTS) }, (_, i) => ({
      src: src + i * WIDEN_ELEMENTS * 2, dst: dst + i * WIDEN_ELEMENTS * 4, n: Math.min(WIDEN_ELEMENTS, n - i * WIDEN_ELEMENTS),
    }));
    return this.jobs('widenHalf', jobs, this.top, 0, []);
  }

  releaseAll(): void {
    this.live.clear();
    this.top = this.base;
    this.signal?.removeEventListener('abort', this.onAbort);
    this.signal = undefined;
    this.stop.control = undefined;
    // A large call's memory would otherwise stay with the process for good (threaded
    // arenas are dropped instead: see backends.ts).
    if (!this.group && this.lasting.size === 0) this.wasm = renewKernels(this.wasm, this.flavour);
  }
}

function align(x: number): number {
  return Math.ceil(x / ALIGN) * ALIGN;
}

/** A WebAssembly backend on the calling thread; flavour defaults to SIMD where the engine supports it. */
export async function createCpuBackend(flavour: KernelFlavour = bestFlavour()): Promise<CpuBackend> {
  return new CpuBackend(await instantiateKernels(flavour), flavour);
}
