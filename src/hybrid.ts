// The hybrid backend: LSH hashing and sorting on the CPU (WebAssembly), with the accurate
// mode's buckets (read off the sort), everything else (upload, download, exact, block,
// sampled, merge, and the accurate mode's probe, columns, window, round, samples and
// remainder) on WebGPU. The WebGPU backend records its ops into an encoder, and the
// executor submits each head's on its own (hyper.ts), so the CPU hashes and sorts one
// head while the GPU computes attention for the last.
//
// A hybrid buffer is a GPU-side buffer plus a CPU-side mirror made the first time a CPU
// op needs it. Uploads go to the GPU and are remembered (the caller's arrays stay valid
// for the whole call), to be copied into the mirror only when a CPU op needs it next.
//
// Invariant: CPU ops write only keys, perms, and the accurate mode's bucket tags and
// starts. Keys are read only by the CPU (sort, buckets); perms, tags and starts are
// copied to the GPU as soon as they are written. So the GPU side is always current for
// what GPU ops read, and the CPU side never needs what a GPU op wrote; an op that would
// break this throws (a bug in the caller's plan, not a runtime condition).
import type { CpuBackend } from './cpu/backend.ts';
import type { WebGPUBackend } from './gpu/backend.ts';
import {
  placementOf, type AttentionInputs, type AccurateMask, type Backend, type BackendBuffer, type BlockTask, type BucketsTask,
  type ColumnsTask, type Destination, type Device, type ExactTask, type HashTask, type PrefixesTask, type HeadBatch, type HeavyTask, type MergeTask, type OpName, type PartOutput,
  type ProbeTask, type RemainderTask, type RoundTask, type RowView, type SampledTask, type SamplesTask, type SortTask,
  type WindowTask,
} from './ops.ts';

class HybridBuffer implements BackendBuffer {
  readonly kind: 'f32' | 'i32';
  readonly length: number;
  readonly gpu: BackendBuffer;
  /** the CPU-side mirror, made on first use by a CPU op */
  cpu: BackendBuffer | undefined;
  /** uploads not yet copied into the mirror, oldest first */
  pending: { data: Float32Array | Int32Array; offset: number }[] = [];
  /** a CPU op wrote it without copying to the GPU (hash keys): the GPU side is stale */
  gpuStale = false;
  /** a GPU op wrote it: the CPU side is stale */
  cpuStale = false;

  constructor(kind: 'f32' | 'i32', length: number, gpu: BackendBuffer) {
    this.kind = kind;
    this.length = length;
    this.gpu = gpu;
  }
}

export class HybridBackend implements Backend {
  readonly name = 'hybrid' as const;
  readonly cpu: CpuBackend;
  readonly gpu: WebGPUBackend;
  /** Where each op runs. */
  static readonly placement: Readonly<Record<OpName, Device>> = Object.freeze(placementOf('hybrid'));
  private live = new Set<HybridBuffer>();

  constructor(cpu: CpuBackend, gpu: WebGPUBackend) {
    this.cpu = cpu;
    this.gpu = gpu;
  }

  createBuffer(kind: 'f32' | 'i32', length: number): BackendBuffer {
    const buf = new HybridBuffer(kind, length, this.gpu.createBuffer(kind, length));
    this.live.add(buf);
    return buf;
  }

  upload(buf: BackendBuffer, data: Float32Array | Int32Array, offset = 0): void {
    const h = this.handle(buf);
    this.gpu.upload(h.gpu, data, offset);
    // Uploads this one covers would be overwritten in the mirror anyway: dropping them
    // keeps the list short for buffers the CPU never reads (v, out).
    const end = offset + data.length;
    h.pending = h.pending.filter((p) => p.offset < offset || p.offset + p.data.length > end);
    h.pending.push({ data, offset });
    if (offset === 0 && data.length === h.length) h.gpuStale = h.cpuStale = false;
  }

  download(buf: BackendBuffer, offset: number, length: number, into: Float32Array | Int32Array, intoOffset = 0): Promise<void> {
    return this.gpu.download(this.onGpu(buf, 'download'), offset, length, into, intoOffset);
  }

  hash(t: HashTask): void {
    const x = this.onCpu(t.x, 'hash x');
    const proj = this.mirror(t.proj, 'hash proj');
    const keys = this.onCpu(t.keys, 'hash keys');
    this.cpu.hash({ ...t, x, proj, keys });
    // Only sort reads keys, on the CPU: the GPU side is never brought up to date.
    (t.keys.buf as HybridBuffer).gpuStale = true;
  }

  sort(t: SortTask): void {
    const keys = this.onCpu(t.keys, 'sort keys');
    const perm = this.onCpu(t.perm, 'sort perm');
    this.cpu.sort({ ...t, keys, perm });
    // The block, sampled and round ops read perm on the GPU.
    this.copyToGpu(t.perm, perm, t.count + t.pads);
  }

  get maxBufferLength(): number {
    return this.gpu.maxBufferLength;
  }

  copy(src: BackendBuffer, srcOffset: number, dst: BackendBuffer, dstOffset: number, length: number): void {
    this.gpu.copy(this.onGpu(src, 'copy src'), srcOffset, this.output({ buf: dst, row: 0 }, 'copy dst').buf, dstOffset, length);
  }

  prefixes(t: PrefixesTask): void {
    this.gpu.prefixes({ ...this.exactOnGpu({ ...t, causal: false, causalOffset: 0 }), keys: t.keys });
  }

  exact(t: ExactTask): void {
    this.gpu.exact(this.exactOnGpu(t));
  }

  exactHeads(t: ExactTask, heads: HeadBatch): void {
    this.gpu.exactHeads(this.exactOnGpu(t), heads);
  }

  block(t: BlockTask): void {
    this.gpu.block({ ...t, ...this.sortedRows(t, 'block'), dst: this.dst(t.dst, 'block') });
  }

  sampled(t: SampledTask): void {
    this.gpu.sampled({ ...t, ...this.sortedRows(t, 'sampled'), dst: this.dst(t.dst, 'sampled') });
  }

  merge(t: MergeTask): void {
    this.gpu.merge({
      ...t,
      src: { out: this.onGpuRows(t.src.out, 'merge src out'), lse: this.onGpuRows(t.src.lse, 'merge src lse') },
      dst: this.dst(t.dst, 'merge'),
    });
  }

  probe(t: ProbeTask): void {
    this.gpu.probe({
      ...t, q: this.onGpuRows(t.q, 'probe q'), k: this.onGpuRows(t.k, 'probe k'), rows: this.onGpuRows(t.rows, 'probe rows'),
      mass: this.output(t.mass, 'probe mass'),
    });
  }

  heavy(t: HeavyTask): void {
    this.gpu.heavy({
      ...t, mass: this.onGpuRows(t.mass, 'heavy mass'), cols: this.output(t.cols, 'heavy cols'), flags: this.output(t.flags, 'heavy flags'),
    });
  }

  columns(t: ColumnsTask): void {
    this.gpu.columns({ ...t, ...this.head(t, 'columns'), cols: this.onGpuRows(t.cols, 'columns cols'), dst: this.part(t.dst, 'columns') });
  }

  window(t: WindowTask): void {
    this.gpu.window({ ...t, ...this.head(t, 'window'), mask: this.mask(t.mask, 'window'), dst: this.part(t.dst, 'window') });
  }

  round(t: RoundTask): void {
    this.gpu.round({
      ...t, ...this.head(t, 'round'), mask: this.mask(t.mask, 'round'), dst: this.part(t.dst, 'round'),
      qPerm: this.onGpuRows(t.qPerm, 'round qPerm'), kPerm: this.onGpuRows(t.kPerm, 'round kPerm'),
      qStarts: this.onGpuRows(t.qStarts, 'round qStarts'), kStarts: this.onGpuRows(t.kStarts, 'round kStarts'),
    });
  }

  buckets(t: BucketsTask): void {
    // Keys are only on the CPU (hash) and perm is current there (sort).
    const tags = this.onCpu(t.tags, 'buckets tags');
    const starts = this.onCpu(t.starts, 'buckets starts');
    this.cpu.buckets({ ...t, keys: this.onCpu(t.keys, 'buckets keys'), perm: this.onCpu(t.perm, 'buckets perm'), tags, starts });
    this.copyToGpu(t.tags, tags, t.count);
    this.copyToGpu(t.starts, starts, t.numKeys + 1);
  }

  samples(t: SamplesTask): void {
    this.gpu.samples({ ...t, ...this.head(t, 'samples'), mask: this.mask(t.mask, 'samples'), dst: this.part(t.dst, 'samples') });
  }

  remainder(t: RemainderTask): void {
    const samples = t.samples;
    this.gpu.remainder({
      ...t, v: this.onGpuRows(t.v, 'remainder v'), exact: this.part(t.exact, 'remainder'),
      samples: {
        out: this.onGpuRows(samples.out, 'remainder samples out'), lse: this.onGpuRows(samples.lse, 'remainder samples lse'),
        cnt: this.onGpuRows(samples.cnt, 'remainder samples cnt'), vsum: this.onGpuRows(samples.vsum, 'remainder samples vsum'),
      },
    });
  }

  releaseAll(): void {
    this.cpu.releaseAll();
    this.gpu.releaseAll();
    for (const buf of this.live) {
      buf.cpu = undefined;
      buf.pending = [];
    }
    this.live.clear();
  }

  /** Submits what the GPU has recorded and waits until it has run (CPU ops are synchronous). */
  sync(): Promise<void> {
    return this.gpu.sync();
  }

  private handle(buf: BackendBuffer): HybridBuffer {
    if (!(buf instanceof HybridBuffer) || !this.live.has(buf)) {
      throw new Error(`hyperattention: ${buf instanceof HybridBuffer ? 'buffer used after releaseAll' : 'not a buffer of this hybrid backend'}`);
    }
    return buf;
  }

  /** The CPU-side mirror of buf, made if missing and brought up to date with its uploads. */
  private mirror(buf: BackendBuffer, what: string): BackendBuffer {
    const h = this.handle(buf);
    if (h.cpuStale) throw new Error(`hyperattention: hybrid ${what} needs on the CPU a buffer that a GPU op wrote`);
    h.cpu ??= this.cpu.createBuffer(h.kind, h.length);
    for (const { data, offset } of h.pending) this.cpu.upload(h.cpu, data, offset);
    h.pending = [];
    return h.cpu;
  }

  private onCpu(view: RowView, what: string): RowView {
    return { buf: this.mirror(view.buf, what), row: view.row };
  }

  /** The GPU side of buf, which must not hold rows only the CPU has (keys). */
  private onGpu(buf: BackendBuffer, what: string): BackendBuffer {
    const h = this.handle(buf);
    if (h.gpuStale) throw new Error(`hyperattention: hybrid ${what} needs on the GPU a buffer that a CPU op wrote (LSH keys)`);
    return h.gpu;
  }

  private onGpuRows(view: RowView, what: string): RowView {
    return { buf: this.onGpu(view.buf, what), row: view.row };
  }

  /**
   * Copies `rows` elements a CPU op wrote (its view of the mirror) to the GPU side. view()
   * is no copy, and is valid until the next CPU op; upload copies it at once (queue.writeBuffer).
   */
  private copyToGpu(view: RowView, written: RowView, rows: number): void {
    if (rows > 0) this.gpu.upload(this.handle(view.buf).gpu, this.cpu.view(written.buf, written.row, rows), written.row);
  }

  /** The GPU side of rows a GPU op writes, marked as GPU-written (the mirror, if any, goes stale). */
  private output(view: RowView, what: string): RowView {
    const rows = this.onGpuRows(view, what);
    (view.buf as HybridBuffer).cpuStale = true;
    return rows;
  }

  /** The GPU side of a destination, marked as GPU-written. */
  private dst(dst: Destination, op: string): Destination {
    return { out: this.output(dst.out, `${op} out`), lse: this.output(dst.lse, `${op} lse`), write: dst.write };
  }

  /** The GPU side of an accurate part's output, marked as GPU-written. */
  private part(dst: PartOutput, op: string): PartOutput {
    return {
      out: this.output(dst.out, `${op} out`), lse: this.output(dst.lse, `${op} lse`),
      cnt: this.output(dst.cnt, `${op} cnt`), vsum: this.output(dst.vsum, `${op} vsum`),
    };
  }

  private exactOnGpu(t: ExactTask): ExactTask {
    return {
      ...t, q: this.onGpuRows(t.q, 'exact q'), k: this.onGpuRows(t.k, 'exact k'), v: this.onGpuRows(t.v, 'exact v'),
      dst: this.dst(t.dst, 'exact'),
    };
  }

  private head(t: AttentionInputs, op: string) {
    return { q: this.onGpuRows(t.q, `${op} q`), k: this.onGpuRows(t.k, `${op} k`), v: this.onGpuRows(t.v, `${op} v`) };
  }

  private mask(m: AccurateMask, op: string): AccurateMask {
    return {
      ...m, flags: this.onGpuRows(m.flags, `${op} flags`),
      qTags: this.onGpuRows(m.qTags, `${op} qTags`), kTags: this.onGpuRows(m.kTags, `${op} kTags`),
    };
  }

  private sortedRows(t: BlockTask | SampledTask, op: string) {
    return {
      q: this.onGpuRows(t.q, `${op} q`), k: this.onGpuRows(t.k, `${op} k`), v: this.onGpuRows(t.v, `${op} v`),
      qPerm: this.onGpuRows(t.qPerm, `${op} qPerm`), kPerm: this.onGpuRows(t.kPerm, `${op} kPerm`),
    };
  }
}
