// The WebAssembly backend: buffers are regions of the kernel module's linear memory
// (a bump arena, released after each call), ops call the AssemblyScript kernels. Each
// op's transient scratch sits just above the arena's top.
import { HyperAttentionError } from '../errors.ts';
import type {
  AttentionInputs, AccurateMask, Backend, BackendBuffer, BlockTask, BucketsTask, ColumnsTask, Destination, ExactTask, HashTask, MergeTask,
  PartOutput, ProbeTask, RemainderTask, RoundTask, RowView, SampledTask, SamplesTask, SortTask, WindowTask,
  WriteMode,
} from '../ops.ts';
import { bestFlavour, instantiateKernels, renewKernels, type KernelExports, type KernelFlavour } from './wasm.ts';

interface CpuBuffer extends BackendBuffer {
  readonly ptr: number;
}

const WRITE_CODES: Record<WriteMode, number> = { write: 0, 'merge-reference': 1, 'merge-fixed': 2 };
const PAGE = 65536;
const ALIGN = 64;

export class CpuBackend implements Backend {
  readonly name = 'cpu' as const;
  private wasm: KernelExports;
  private readonly base: number;
  private top: number;
  private live = new Set<CpuBuffer>();
  readonly flavour: KernelFlavour;

  constructor(wasm: KernelExports, flavour: KernelFlavour) {
    this.wasm = wasm;
    this.flavour = flavour;
    this.base = align(wasm.heapBase());
    this.top = this.base;
  }

  /** Bytes of linear memory the module holds now (its high-water mark). */
  get memoryBytes(): number {
    return this.wasm.memory.buffer.byteLength;
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

  hash(t: HashTask): void {
    const scratch = this.scratch(t.d * 16 * 4);
    this.wasm.lshKeys(
      this.ptr(t.x, t.d), t.rows, t.d, this.ptr({ buf: t.proj, row: 0 }, 1), t.r,
      t.mode === 'reference' ? 0 : 1, this.ptr(t.keys, 1), scratch,
    );
  }

  sort(t: SortTask): void {
    const scratch = this.scratch(t.numKeys * 4);
    this.wasm.sortByKey(this.ptr(t.keys, 1), t.count, t.pads, t.numKeys, this.ptr(t.perm, 1), scratch);
  }

  private dst(dst: Destination, dv: number): [number, number, number] {
    return [this.ptr(dst.out, dv), this.ptr(dst.lse, 1), WRITE_CODES[dst.write]];
  }

  exact(t: ExactTask): void {
    const scratch = this.scratch(this.wasm.attentionScratchBytes(t.d, t.dv, 0));
    this.wasm.exactAttention(
      this.ptr(t.q, t.d), this.ptr(t.k, t.d), this.ptr(t.v, t.dv), t.nq, t.nk, t.d, t.dv, t.scale,
      t.causal ? 1 : 0, t.causalOffset, ...this.dst(t.dst, t.dv), scratch,
    );
  }

  block(t: BlockTask): void {
    const scratch = this.scratch(this.wasm.attentionScratchBytes(t.d, t.dv, 0));
    this.wasm.blockAttention(
      this.ptr(t.q, t.d), this.ptr(t.k, t.d), this.ptr(t.v, t.dv), this.ptr(t.qPerm, 1), this.ptr(t.kPerm, 1),
      t.nqSorted, t.nqReal, t.nk, t.d, t.dv, t.scale, t.qBlock, t.kBlock, t.nBlocks, t.phantomKeys ? 1 : 0,
      ...this.dst(t.dst, t.dv), scratch,
    );
  }

  sampled(t: SampledTask): void {
    const m = t.samples.length;
    const bytes = this.wasm.attentionScratchBytes(t.d, t.dv, m);
    const scratch = this.scratch(bytes + m * 4);
    const samples = scratch + bytes;
    new Int32Array(this.wasm.memory.buffer, samples, m).set(t.samples);
    this.wasm.sampledAttention(
      this.ptr(t.q, t.d), this.ptr(t.k, t.d), this.ptr(t.v, t.dv), this.ptr(t.qPerm, 1), this.ptr(t.kPerm, 1),
      samples, m, t.nqSorted, t.nqReal, t.d, t.dv, t.scale, t.qBlock, t.kBlock, t.nBlocks, t.lseOffset,
      ...this.dst(t.dst, t.dv), scratch,
    );
  }

  merge(t: MergeTask): void {
    this.wasm.mergeRows(
      this.ptr(t.dst.out, t.dv), this.ptr(t.dst.lse, 1), this.ptr(t.src.out, t.dv), this.ptr(t.src.lse, 1),
      t.rows, t.dv, WRITE_CODES[t.dst.write],
    );
  }

  private head(t: AttentionInputs): [number, number, number, number, number, number, number, number] {
    return [this.ptr(t.q, t.d), this.ptr(t.k, t.d), this.ptr(t.v, t.dv), t.nq, t.nk, t.d, t.dv, t.scale];
  }

  private part(dst: PartOutput, dv: number): [number, number, number, number] {
    return [this.ptr(dst.out, dv), this.ptr(dst.lse, 1), this.ptr(dst.cnt, 1), this.ptr(dst.vsum, dv)];
  }

  private mask(m: AccurateMask, nq: number, nk: number): [number, number, number, number, number, number, number] {
    const tags = (view: RowView, n: number) => (m.rounds > 0 ? this.ptr(view, n) : 0);
    return [this.ptr(m.flags, 1), m.winLo, m.window, m.causal ? 1 : 0, m.rounds, tags(m.qTags, nq), tags(m.kTags, nk)];
  }

  private attentionScratch(t: AttentionInputs): number {
    return this.scratch(this.wasm.attentionScratchBytes(t.d, t.dv, 0));
  }

  /**
   * Scratch for attention against a key list shared by every row: the core's scratch, then
   * room for `listLength` i32 (the list, when the host supplies it), then the tile cache
   * for `keys` keys (cache 0 where the list is too long to cache).
   */
  private listScratch(t: AttentionInputs, listLength: number, keys: number): { scratch: number; list: number; cache: number } {
    const bytes = this.wasm.attentionScratchBytes(t.d, t.dv, 0);
    const cacheAt = align(bytes + listLength * 4);
    const cacheBytes = this.wasm.tileCacheBytes(t.d, t.dv, keys);
    const scratch = this.scratch(cacheAt + cacheBytes);
    return { scratch, list: scratch + bytes, cache: cacheBytes > 0 ? scratch + cacheAt : 0 };
  }

  probe(t: ProbeTask): void {
    const scratch = this.scratch(t.nk * 4);
    this.wasm.probeMass(
      this.ptr(t.q, t.d), this.ptr(t.k, t.d), t.nq, t.nk, t.d, t.scale, this.ptr(t.rows, 1), t.count,
      t.causal ? 1 : 0, t.sinks, t.winLo, t.window, this.ptr(t.mass, 1), scratch,
    );
  }

  columns(t: ColumnsTask): void {
    const { scratch, cache } = this.listScratch(t, 0, t.count);
    this.wasm.accurateColumns(
      ...this.head(t), this.ptr(t.cols, 1), t.count, t.causal ? 1 : 0, ...this.part(t.dst, t.dv), scratch, cache,
    );
  }

  window(t: WindowTask): void {
    const scratch = this.attentionScratch(t);
    const [flags, winLo, win, causal] = this.mask(t.mask, t.nq, t.nk);
    this.wasm.accurateWindow(...this.head(t), flags, winLo, win, causal, ...this.part(t.dst, t.dv), scratch);
  }

  round(t: RoundTask): void {
    const scratch = this.attentionScratch(t);
    this.wasm.accurateBuckets(
      ...this.head(t), this.ptr(t.qPerm, 1), this.ptr(t.kPerm, 1), this.ptr(t.qStarts, 1), this.ptr(t.kStarts, 1),
      t.numKeys, t.cap,
      ...this.mask(t.mask, t.nq, t.nk), ...this.part(t.dst, t.dv), scratch,
    );
  }

  buckets(t: BucketsTask): void {
    this.wasm.bucketTags(
      this.ptr(t.keys, 1), this.ptr(t.perm, 1), t.count, t.numKeys, t.cap, this.ptr(t.tags, 1), this.ptr(t.starts, 1),
    );
  }

  samples(t: SamplesTask): void {
    const m = t.samples.length;
    const { scratch, list, cache } = this.listScratch(t, m, m);
    new Int32Array(this.wasm.memory.buffer, list, m).set(t.samples);
    this.wasm.accurateSamples(
      ...this.head(t), list, m, t.qFrom, t.qTo, ...this.mask(t.mask, t.nq, t.nk), ...this.part(t.dst, t.dv), scratch, cache,
    );
  }

  remainder(t: RemainderTask): void {
    const scratch = this.scratch(t.dv * 8);
    this.wasm.remainderMerge(
      this.ptr(t.v, t.dv), t.nq, t.nk, t.dv, t.causal ? 1 : 0, t.controlVariate,
      ...this.part(t.exact, t.dv), ...this.part(t.samples, t.dv), scratch,
    );
  }

  releaseAll(): void {
    this.live.clear();
    this.top = this.base;
    // A large call's memory would otherwise stay with the process for good.
    this.wasm = renewKernels(this.wasm, this.flavour);
  }
}

function align(x: number): number {
  return Math.ceil(x / ALIGN) * ALIGN;
}

/** A WebAssembly backend; flavour defaults to SIMD where the engine supports it. */
export async function createCpuBackend(flavour: KernelFlavour = bestFlavour()): Promise<CpuBackend> {
  return new CpuBackend(await instantiateKernels(flavour), flavour);
}
