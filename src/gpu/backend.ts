// The WebGPU backend: the ops of src/ops.ts as WGSL kernels. Each op records its
// dispatches into one open command encoder, which is submitted only when data goes back
// to the host (download), when the caller syncs, or when the host data staged for it
// passes STAGING_FLUSH_BYTES: uploads are staged and copied in order with the ops, so a
// whole call is one command buffer and one readback. Buffers come from a pool, trimmed at
// the end of each call. GPU errors are caught with error scopes around every op and
// reported, typed, by the next download.
//
// Device-resident I/O: the caller's GPUBuffers are read and written by copies recorded
// into the same encoder as the ops, so a call with GPU inputs and output reads nothing
// back; finish() submits it and reports its errors as a download would.
//
// Subgroups (default where the device has them): the attention kernels share K and V rows
// between lanes by shuffles rather than through workgroup memory and barriers.
//
// Storage 'f16' (devices with shader-f16): the attention kernels read Q, K and V from f16
// copies (accumulating in f32), halving their memory traffic; a buffer's copy is made by
// the first attention op that reads it after an upload, and reused until the next
// upload or an op writing that buffer. Outputs stay f32.
//
// Device loss: the call in flight rejects with DEVICE_LOST (its pending download races
// device.lost, so it never hangs), and every later op on this backend throws DEVICE_LOST;
// createWebGPUBackend() then acquires a new device.
import { HyperAttentionError } from '../errors.ts';
import type {
  AttentionInputs, AccurateMask, Backend, BackendBuffer, BlockTask, BucketsTask, ColumnsTask, ExactTask, HashTask, HeadBatch, HeavyTask, MergeTask,
  PartOutput, ProbeTask, RemainderTask, RoundTask, RowView, SampledTask, SamplesTask, SortedRowsTask, SortTask, WindowTask,
  WriteMode,
} from '../ops.ts';
import type { WebGPUBufferLike } from '../options.ts';
import {
  PLAIN, keysPerTile, pipelineCache, type ElementType, type KernelName, type KernelVariant, type PipelineCache,
} from './kernels.ts';
import { BufferPool } from './pool.ts';

const WRITE_CODES: Record<WriteMode, number> = { write: 0, 'merge-reference': 1, 'merge-fixed': 2 };

/** Invocations per workgroup of the row-parallel kernels and of the sort passes. */
const ROW_WORKGROUP = 64;
const SORT_WORKGROUP = 256;

/** Key rows per chunk of the remainder's prefix sums (CHUNK in remainder.wgsl). */
const REMAINDER_CHUNK = 64;

// accurate.wgsl: its parts, and the window modes of its mask
const PART_LIST = 0;
const PART_WINDOW = 1;
const PART_ROUND = 2;
const WINDOW_HIDE_INSIDE = 1;
const WINDOW_HIDE_OUTSIDE = 2;

/**
 * Host data staged by uploads and not yet submitted, past which the encoder is submitted
 * so that the staging buffers go back to the pool: bounds a large call's extra memory.
 */
const STAGING_FLUSH_BYTES = 256 * 2 ** 20;

/** How long a failed readback waits for device.lost to tell a lost device from an error. */
const LOST_GRACE_MS = 1000;

class WebGPUBuffer implements BackendBuffer {
  readonly kind: 'f32' | 'i32';
  readonly length: number;
  readonly gpu: GPUBuffer;
  released = false;
  /** f16 copy of the contents for storage 'f16', valid while `halfFresh` */
  half: GPUBuffer | undefined;
  halfFresh = false;

  constructor(kind: 'f32' | 'i32', length: number, gpu: GPUBuffer) {
    this.kind = kind;
    this.length = length;
    this.gpu = gpu;
  }
}

/** A storage binding of part of a buffer, and where the part's first element lies in it. */
interface Bound {
  binding: GPUBufferBinding;
  /** element index, within the binding, of the view's first element */
  el: number;
}

/** Rows [view.row, view.row + rows) of a [*, width] matrix, to be packed by gather(). */
interface Span {
  view: RowView;
  width: number;
  rows: number;
}

/**
 * What one dispatch of accurate.wgsl computes: query rows [qFrom, qTo) (sorted positions
 * for PART_ROUND) against a key list (PART_LIST), their windows, or their buckets.
 */
interface AccuratePart {
  part: number;
  qFrom: number;
  qTo: number;
  causal: boolean;
  /** absent for the columns, which hide only causally */
  mask?: AccurateMask;
  list?: Span | Int32Array;
  round?: RoundTask;
  write: WriteMode;
  /** add the stats to the destination's rather than overwrite them */
  add: boolean;
}

type Field = ['u32' | 'i32' | 'f32', number];
const u32 = (value: number): Field => ['u32', value];
const i32 = (value: number): Field => ['i32', value];
const f32 = (value: number): Field => ['f32', value];

export interface WebGPUBackendOptions {
  /**
   * Largest storage binding in bytes, below the device's maxStorageBufferBindingSize;
   * lets tests exercise the splitting of ops over several bindings.
   */
  maxBindingBytes?: number;
  /**
   * Largest buffer in bytes, below the device's maxBufferSize; lets tests exercise calls
   * whose results take several readbacks.
   */
  maxBufferBytes?: number;
  /**
   * Storage type of Q, K and V in the attention kernels (default 'f32'); 'f16' needs the
   * device's shader-f16 feature and rounds those inputs to f16 (accumulation stays f32).
   */
  storage?: ElementType;
  /**
   * Attention kernels pass K and V between lanes with subgroup shuffles instead of
   * staging them in workgroup memory; default: when the device has the subgroups feature.
   */
  subgroups?: boolean;
}

export class WebGPUBackend implements Backend {
  readonly name = 'webgpu' as const;
  readonly device: GPUDevice;
  readonly storage: ElementType;
  readonly subgroups: boolean;
  private readonly pipelines: PipelineCache;
  private readonly pool: BufferPool;
  /**
   * Scratch that only recorded commands touch (the sort histograms), apart from the pool:
   * released at once, it serves later commands of the open encoder, which run after the
   * ones before. A pooled buffer may instead be filled by queue.writeBuffer (hostData,
   * uniform), which runs ahead of every command not yet submitted, and would so change
   * the contents those commands see.
   */
  private readonly scratch: BufferPool;
  private readonly rowWorkgroup: number;
  private readonly sortWorkgroup: number;
  private readonly workgroupStorage: number;
  private readonly maxSubgroupSize: number;
  private readonly maxBinding: number;
  private readonly maxBufferSize: number;
  private readonly maxGrid: number;
  private readonly align: number;
  private readonly live = new Set<WebGPUBuffer>();
  private encoder: GPUCommandEncoder | undefined;
  private pass: GPUComputePassEncoder | undefined;
  /** written by queue.writeBuffer for the open encoder: not reusable before it is submitted */
  private held: GPUBuffer[] = [];
  /** bytes of upload staging among `held` */
  private staged = 0;
  /** Command buffers submitted and buffers read back (mapAsync) so far, for tests and benchmarks. */
  readonly counts = { submits: 0, readbacks: 0 };
  private errors: Promise<HyperAttentionError | undefined>[] = [];
  /** made by createDeviceBuffer for the call in flight; the caller's once finish() succeeds */
  private exports: GPUBuffer[] = [];
  private lost: HyperAttentionError | undefined;
  private readonly lostSignal: Promise<never>;

  constructor(device: GPUDevice, options: WebGPUBackendOptions = {}) {
    this.device = device;
    this.storage = options.storage ?? 'f32';
    if (this.storage === 'f16' && !device.features.has('shader-f16')) {
      throw new HyperAttentionError('UNSUPPORTED', "WebGPU: storage 'f16' needs a device with the shader-f16 feature");
    }
    this.subgroups = options.subgroups ?? device.features.has('subgroups');
    if (this.subgroups && !device.features.has('subgroups')) {
      throw new HyperAttentionError('UNSUPPORTED', 'WebGPU: subgroups need a device with the subgroups feature');
    }
    // 128 is the largest subgroup size WebGPU allows, for runtimes without adapterInfo.
    this.maxSubgroupSize = (device as Partial<GPUDevice>).adapterInfo?.subgroupMaxSize ?? 128;
    this.pipelines = pipelineCache(device);
    this.pool = new BufferPool(device);
    this.scratch = new BufferPool(device);
    const limits = device.limits;
    const invocations = Math.min(limits.maxComputeInvocationsPerWorkgroup, limits.maxComputeWorkgroupSizeX);
    this.rowWorkgroup = Math.min(ROW_WORKGROUP, invocations);
    this.sortWorkgroup = Math.min(SORT_WORKGROUP, invocations);
    this.workgroupStorage = limits.maxComputeWorkgroupStorageSize;
    this.maxBinding = Math.min(options.maxBindingBytes ?? Infinity, limits.maxStorageBufferBindingSize);
    this.maxBufferSize = Math.min(options.maxBufferBytes ?? Infinity, limits.maxBufferSize);
    this.maxGrid = limits.maxComputeWorkgroupsPerDimension;
    this.align = limits.minStorageBufferOffsetAlignment;
    this.lostSignal = device.lost.then((info) => {
      this.lost = new HyperAttentionError('DEVICE_LOST', `WebGPU device lost (${info.reason}): ${info.message || 'no message'}`);
      throw this.lost;
    });
    this.lostSignal.catch(() => {});
  }

  get maxBufferLength(): number {
    return Math.floor(this.maxBufferSize / 4);
  }

  /** Bytes in the pools' idle buffers: what the device keeps between calls. */
  get idleBytes(): number {
    return this.pool.idleBytes + this.scratch.idleBytes;
  }

  /** True once the device is lost: every op throws DEVICE_LOST; create a new backend. */
  get isLost(): boolean {
    return this.lost !== undefined;
  }

  createBuffer(kind: 'f32' | 'i32', length: number): BackendBuffer {
    const bytes = this.bufferBytes(length);
    const gpu = this.record(() =>
      this.pool.acquire(bytes, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST));
    const buf = new WebGPUBuffer(kind, length, gpu);
    this.live.add(buf);
    return buf;
  }

  upload(buf: BackendBuffer, data: Float32Array | Int32Array, offset = 0): void {
    const handle = this.handle(buf, offset, data.length);
    if (data.length === 0) return;
    handle.halfFresh = false;
    this.record(() => {
      // queue.writeBuffer runs ahead of the commands not yet submitted, which must not see
      // the new contents: it fills a staging buffer, copied into place in order with them.
      const staging = this.pool.acquire(data.byteLength, GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST);
      this.device.queue.writeBuffer(staging, 0, data as ArrayBufferView<ArrayBuffer>);
      this.held.push(staging);
      this.staged += staging.size;
      this.commandEncoder().copyBufferToBuffer(staging, 0, handle.gpu, offset * 4, data.byteLength);
      if (this.staged >= STAGING_FLUSH_BYTES) this.flush();
    });
  }

  copy(src: BackendBuffer, srcOffset: number, dst: BackendBuffer, dstOffset: number, length: number): void {
    const from = this.handle(src, srcOffset, length);
    const to = this.handle(dst, dstOffset, length);
    if (length === 0) return;
    to.halfFresh = false;
    this.record(() => this.commandEncoder().copyBufferToBuffer(from.gpu, srcOffset * 4, to.gpu, dstOffset * 4, length * 4));
  }

  async download(
    buf: BackendBuffer, offset: number, length: number, into: Float32Array | Int32Array, intoOffset = 0,
  ): Promise<void> {
    const handle = this.handle(buf, offset, length);
    const bytes = Math.max(4, length * 4);
    const staging = this.record(() => {
      const target = this.pool.acquire(bytes, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST);
      if (length > 0) this.commandEncoder().copyBufferToBuffer(handle.gpu, offset * 4, target, 0, length * 4);
      this.flush();
      return target;
    });
    this.counts.readbacks++;
    try {
      await Promise.race([staging.mapAsync(GPUMapMode.READ, 0, bytes), this.lostSignal]);
    } catch (cause) {
      throw (await this.takeError()) ?? (await this.lostOrNot()) ??
        new HyperAttentionError('GPU_ERROR', `WebGPU: reading back a buffer failed: ${String(cause)}`, { cause });
    }
    const error = await this.takeError();
    if (!error && length > 0) {
      const Ctor = into instanceof Float32Array ? Float32Array : Int32Array;
      into.set(new Ctor(staging.getMappedRange(0, length * 4)), intoOffset);
    }
    staging.unmap();
    this.pool.release(staging);
    if (error) throw error;
  }

  copyFromDevice(dst: BackendBuffer, dstOffset: number, src: WebGPUBufferLike, srcByteOffset: number, length: number): void {
    const handle = this.handle(dst, dstOffset, length);
    if (length === 0) return;
    handle.halfFresh = false;
    this.record(() => this.commandEncoder().copyBufferToBuffer(src as GPUBuffer, srcByteOffset, handle.gpu, dstOffset * 4, length * 4));
  }

  createDeviceBuffer(length: number): WebGPUBufferLike {
    const bytes = this.bufferBytes(length);
    // Not from the pool: the caller keeps it, and destroys it.
    const buffer = this.record(() => this.device.createBuffer({
      size: bytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    }));
    this.exports.push(buffer);
    return buffer;
  }

  exportToDevice(src: BackendBuffer, srcOffset: number, dst: WebGPUBufferLike, dstByteOffset: number, length: number): void {
    const handle = this.handle(src, srcOffset, length);
    if (length === 0) return;
    this.record(() => this.commandEncoder().copyBufferToBuffer(handle.gpu, srcOffset * 4, dst as GPUBuffer, dstByteOffset, length * 4));
  }

  /**
   * Waits for the work to finish, not only for its submission, so that a device lost
   * while it runs rejects this call, as it would a download.
   */
  async finish(): Promise<void> {
    await this.sync();
    this.exports = [];
  }

  /** Submits what is recorded and waits until the GPU has run it, rejecting with its errors. */
  async sync(): Promise<void> {
    this.record(() => this.flush());
    try {
      await Promise.race([this.device.queue.onSubmittedWorkDone(), this.lostSignal]);
    } catch (cause) {
      throw (await this.takeError()) ?? (await this.lostOrNot()) ??
        new HyperAttentionError('GPU_ERROR', `WebGPU: waiting for the submitted work failed: ${String(cause)}`, { cause });
    }
    const error = (await this.takeError()) ?? this.lost;
    if (error) throw error;
  }

  hash(t: HashTask): void {
    if (t.rows === 0) return;
    this.record(() => {
      const x = this.bind(t.x, t.d, t.rows);
      const proj = this.bind({ buf: t.proj, row: 0 }, 1, t.d * t.r);
      const keys = this.bindOutput(t.keys, 1, t.rows);
      const params = this.uniform([
        u32(x.el), u32(t.rows), u32(t.d), u32(t.r), u32(t.mode === 'fixed' ? 1 : 0), u32(keys.el),
      ]);
      this.dispatch(this.rowKernel('hash'), [x.binding, proj.binding, keys.binding, params], this.rowGroups(t.rows));
    });
  }

  sort(t: SortTask): void {
    const total = t.count + t.pads;
    if (total === 0) return;
    this.record(() => {
      const wg = this.sortWorkgroup;
      const chunks = Math.ceil(total / wg);
      const countBytes = t.numKeys * chunks * 4;
      if (countBytes > this.maxBinding) {
        throw new HyperAttentionError(
          'UNSUPPORTED',
          `WebGPU: sorting ${total} rows by ${t.numKeys} keys needs a ${countBytes}-byte histogram; the device binds at most ${this.maxBinding} bytes`,
        );
      }
      const keys = this.bind(t.keys, 1, t.count);
      const perm = this.bindOutput(t.perm, 1, total);
      const counts = this.scratch.acquire(countBytes, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST);
      const countsBinding: GPUBufferBinding = { buffer: counts, offset: 0, size: countBytes };
      this.endPass();
      this.commandEncoder().clearBuffer(counts, 0, countBytes);
      const constants = { WG: wg };
      this.dispatch(
        this.pipelines.get('sort-count', constants),
        [keys.binding, countsBinding, this.uniform([u32(keys.el), u32(t.count), u32(total), u32(chunks)])],
        chunks,
      );
      this.dispatch(
        this.pipelines.get('sort-scan', constants),
        [countsBinding, this.uniform([u32(t.numKeys * chunks)])],
        1,
      );
      this.dispatch(
        this.pipelines.get('sort-scatter', constants),
        [keys.binding, countsBinding, perm.binding,
          this.uniform([u32(keys.el), u32(t.count), u32(total), u32(chunks), u32(perm.el)])],
        chunks,
      );
      this.scratch.release(counts);
    });
  }

  exact(t: ExactTask): void {
    this.exactHeads(t, { count: 1, group: 1, phase: 0, qRows: t.nq, kRows: t.nk });
  }

  /**
   * Whole heads go side by side, as many per dispatch as their bindings' spans let
   * maxStorageBufferBindingSize (and the grid) take. A head too large for one binding goes
   * alone, in runs of query rows and of keys that fit, the key runs merged by log-add-exp.
   */
  exactHeads(t: ExactTask, heads: HeadBatch): void {
    if (t.nq === 0 || heads.count === 0) return;
    this.record(() => {
      const rowsPerBinding = Math.max(1, Math.floor((this.maxBinding - this.align) / (4 * Math.max(t.d, t.dv))));
      const qRun = Math.min(t.nq, rowsPerBinding);
      const kRun = Math.max(1, Math.min(t.nk, rowsPerBinding));
      const whole = qRun === t.nq && kRun >= t.nk;
      for (let h0 = 0; h0 < heads.count;) {
        const phase = (heads.phase + h0) % heads.group;
        let count = 1;
        if (whole) {
          const byQ = Math.floor((rowsPerBinding - t.nq) / Math.max(1, heads.qRows)) + 1;
          const byKv = (Math.floor((rowsPerBinding - t.nk) / Math.max(1, heads.kRows)) + 1) * heads.group - phase;
          count = Math.max(1, Math.min(heads.count - h0, byQ, byKv, this.maxGrid));
        }
        const kvRow = Math.floor((heads.phase + h0) / heads.group) * heads.kRows;
        const part: ExactTask = {
          ...t, q: shift(t.q, h0 * heads.qRows), k: shift(t.k, kvRow), v: shift(t.v, kvRow),
          dst: { ...t.dst, out: shift(t.dst.out, h0 * heads.qRows), lse: shift(t.dst.lse, h0 * heads.qRows) },
        };
        for (let q0 = 0; q0 < t.nq; q0 += qRun) this.exactRun(part, { ...heads, count, phase }, q0, Math.min(qRun, t.nq - q0), kRun);
        h0 += count;
      }
    });
  }

  /** Query rows [q0, q0 + rows) of the batch's heads, against the keys in runs of kRun. */
  private exactRun(t: ExactTask, heads: HeadBatch, q0: number, rows: number, kRun: number): void {
    const pipeline = this.attentionKernel('exact', t.d, t.dv);
    const span = (n: number, stride: number, count: number) => (count - 1) * stride + n;
    const kvCount = Math.floor((heads.phase + heads.count - 1) / heads.group) + 1;
    const q = this.bindInput(shift(t.q, q0), t.d, span(rows, heads.qRows, heads.count));
    const runs = Math.max(1, Math.ceil(t.nk / kRun));
    // The authors' saturating merge is of whole parts: the key runs' part is formed apart first.
    const apart = runs > 1 && t.dst.write === 'merge-reference';
    const dst = apart
      ? { out: { buf: this.createBuffer('f32', rows * t.dv), row: 0 }, lse: { buf: this.createBuffer('f32', rows), row: 0 }, write: 'write' as const }
      : { ...t.dst, out: shift(t.dst.out, q0), lse: shift(t.dst.lse, q0) };
    const out = this.bindOutput(dst.out, t.dv, span(rows, heads.qRows, heads.count));
    const lse = this.bindOutput(dst.lse, 1, span(rows, heads.qRows, heads.count));
    for (let k0 = 0; k0 === 0 || k0 < t.nk; k0 += kRun) {
      const offset = t.causalOffset + q0 - k0;
      // Keys no row of the run sees add nothing to a merge (the first run always writes).
      if (k0 > 0 && t.causal && rows - 1 + offset < 0) break;
      const nk = Math.min(kRun, t.nk - k0);
      const k = this.bindInput(shift(t.k, k0), t.d, span(nk, heads.kRows, kvCount));
      const v = this.bindInput(shift(t.v, k0), t.dv, span(nk, heads.kRows, kvCount));
      const write = k0 === 0 ? dst.write : 'merge-fixed';
      const params = this.uniform([
        u32(q.el), u32(k.el), u32(v.el), u32(out.el), u32(lse.el), u32(rows), u32(nk),
        u32(t.causal ? 1 : 0), i32(offset), u32(WRITE_CODES[write]), f32(t.scale),
        u32(heads.phase), u32(heads.group), u32(heads.qRows * t.d), u32(heads.kRows * t.d), u32(heads.kRows * t.dv),
        u32(heads.qRows * t.dv), u32(heads.qRows),
      ]);
      this.dispatch(pipeline, [q.binding, k.binding, v.binding, out.binding, lse.binding, params], this.rowGroups(rows), heads.count);
    }
    if (apart) {
      this.merge({ src: dst, dst: { ...t.dst, out: shift(t.dst.out, q0), lse: shift(t.dst.lse, q0) }, rows, dv: t.dv });
    }
  }

  /**
   * The seven bindings every op over sorted rows reads (q, k, v, out, lse, qPerm, kPerm, in
   * the kernels' binding order) and their element offsets, the first Params fields.
   */
  private bindSortedRows(t: SortedRowsTask): { bindings: GPUBufferBinding[]; offsets: Field[] } {
    const bound = [
      this.bindInput(t.q, t.d, t.nqReal),
      this.bindInput(t.k, t.d, t.nk),
      this.bindInput(t.v, t.dv, t.nk),
      this.bindOutput(t.dst.out, t.dv, t.nqReal),
      this.bindOutput(t.dst.lse, 1, t.nqReal),
      this.bind(t.qPerm, 1, t.nqSorted),
      this.bind(t.kPerm, 1, t.nk),
    ];
    return { bindings: bound.map((b) => b.binding), offsets: bound.map((b) => u32(b.el)) };
  }

  block(t: BlockTask): void {
    if (t.nqSorted === 0 || t.nqReal === 0 || t.nBlocks === 0) return;
    this.record(() => {
      const { bindings, offsets } = this.bindSortedRows(t);
      // The last block also takes every sorted row past nBlocks * qBlock.
      const maxRows = Math.max(t.qBlock, t.nqSorted - (t.nBlocks - 1) * t.qBlock);
      const wgPerBlock = Math.ceil(maxRows / this.rowWorkgroup);
      const params = this.uniform([
        ...offsets,
        u32(t.nqSorted), u32(t.nqReal), u32(t.nk), u32(t.qBlock), u32(t.kBlock), u32(t.nBlocks), u32(wgPerBlock),
        u32(t.phantomKeys ? 1 : 0), u32(WRITE_CODES[t.dst.write]), f32(t.scale),
      ]);
      this.dispatch(this.attentionKernel('block', t.d, t.dv), [...bindings, params], t.nBlocks * wgPerBlock);
    });
  }

  sampled(t: SampledTask): void {
    if (t.nqSorted === 0 || t.nqReal === 0) return;
    this.record(() => {
      const { bindings, offsets } = this.bindSortedRows(t);
      const samples = this.hostData(t.samples);
      const params = this.uniform([
        ...offsets,
        u32(t.nqSorted), u32(t.nqReal), u32(t.samples.length), u32(t.qBlock), u32(t.kBlock), u32(t.nBlocks),
        u32(WRITE_CODES[t.dst.write]), f32(t.scale), f32(t.lseOffset),
      ]);
      this.dispatch(this.attentionKernel('sampled', t.d, t.dv), [...bindings, samples, params], this.rowGroups(t.nqSorted));
    });
  }

  merge(t: MergeTask): void {
    if (t.rows === 0) return;
    this.record(() => {
      const srcOut = this.bind(t.src.out, t.dv, t.rows);
      const srcLse = this.bind(t.src.lse, 1, t.rows);
      const dstOut = this.bindOutput(t.dst.out, t.dv, t.rows);
      const dstLse = this.bindOutput(t.dst.lse, 1, t.rows);
      const params = this.uniform([
        u32(srcOut.el), u32(srcLse.el), u32(dstOut.el), u32(dstLse.el), u32(t.rows), u32(t.dv),
        u32(WRITE_CODES[t.dst.write]),
      ]);
      this.dispatch(
        this.rowKernel('merge'),
        [srcOut.binding, srcLse.binding, dstOut.binding, dstLse.binding, params],
        this.rowGroups(t.rows),
      );
    });
  }

  /**
   * One dispatch of accurate.wgsl: PART_LIST and PART_WINDOW on shared tiles, PART_ROUND on
   * each invocation's own keys. Index data goes packed into one buffer (gather).
   */
  private accuratePart(t: AttentionInputs, dst: PartOutput, o: AccuratePart): void {
    if (o.qTo <= o.qFrom) return;
    this.record(() => {
      const { mask, round } = o;
      const rounds = mask?.rounds ?? 0;
      const spans: (Span | Int32Array)[] = [];
      const place = (span: Span | Int32Array): number => spans.push(span) - 1;
      const flags = mask ? place({ view: mask.flags, width: 1, rows: t.nk }) : -1;
      const qTags = mask ? place({ view: mask.qTags, width: t.nq, rows: rounds }) : -1;
      const kTags = mask ? place({ view: mask.kTags, width: t.nk, rows: rounds }) : -1;
      const list = o.list ? place(o.list) : -1;
      const numKeys = round?.numKeys ?? 0;
      const perms = round ? [
        place({ view: round.qPerm, width: 1, rows: t.nq }), place({ view: round.kPerm, width: 1, rows: t.nk }),
        place({ view: round.qStarts, width: 1, rows: numKeys + 1 }), place({ view: round.kStarts, width: 1, rows: numKeys + 1 }),
      ] : [-1, -1, -1, -1];
      const idx = this.gather(spans);
      const at = (index: number): Field => u32(index < 0 ? 0 : idx.at[index]);
      const bound = [
        this.bindInput(t.q, t.d, t.nq), this.bindInput(t.k, t.d, t.nk), this.bindInput(t.v, t.dv, t.nk),
        this.bindOutput(dst.out, t.dv, t.nq), this.bindOutput(dst.lse, 1, t.nq),
        this.bindOutput(dst.cnt, 1, t.nq), this.bindOutput(dst.vsum, t.dv, t.nq),
      ];
      const window = mask?.window ?? 0;
      const winMode = window === 0 ? 0 : o.part === PART_WINDOW ? WINDOW_HIDE_OUTSIDE : WINDOW_HIDE_INSIDE;
      const listLength = o.list instanceof Int32Array ? o.list.length : o.list?.rows ?? 0;
      const params = this.uniform([
        ...bound.map((b) => u32(b.el)),
        u32(o.part), u32(o.qFrom), u32(o.qTo), u32(t.nq), u32(t.nk), u32(listLength), at(list),
        u32(o.causal ? 1 : 0), u32(mask ? 1 : 0), at(flags), u32(winMode), i32(mask?.winLo ?? 0), u32(window),
        u32(rounds), at(qTags), at(kTags), ...perms.map(at), u32(numKeys), u32(round?.cap ?? 0),
        u32(WRITE_CODES[o.write]), u32(o.add ? 1 : 0), f32(t.scale),
      ]);
      this.dispatch(
        this.attentionKernel(round ? 'accurate-round' : 'accurate', t.d, t.dv),
        [...bound.map((b) => b.binding), idx.binding, params],
        this.rowGroups(o.qTo - o.qFrom),
      );
    });
  }

  probe(t: ProbeTask): void {
    if (t.nk === 0) return;
    this.record(() => {
      const q = this.bind(t.q, t.d, t.nq);
      const k = this.bind(t.k, t.d, t.nk);
      const rows = this.bind(t.rows, 1, t.count);
      const mass = this.bindOutput(t.mass, 1, t.nk);
      const lseBytes = Math.max(4, t.count * 4);
      const lse: GPUBufferBinding = {
        buffer: this.scratch.acquire(lseBytes, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST), offset: 0, size: lseBytes,
      };
      // Step 0: each probe row's lse (a workgroup per row); step 1: the mass of each key.
      for (const [step, workgroups] of [Math.max(1, t.count), this.rowGroups(t.nk)].entries()) {
        const params = this.uniform([
          u32(q.el), u32(k.el), u32(rows.el), u32(mass.el), u32(t.count), u32(t.nk), u32(t.d), u32(t.causal ? 1 : 0),
          u32(t.sinks), i32(t.winLo), u32(t.window), u32(step), f32(t.scale),
        ]);
        this.dispatch(this.rowKernel('probe'), [q.binding, k.binding, rows.binding, lse, mass.binding, params], workgroups);
      }
      this.scratch.release(lse.buffer);
    });
  }

  heavy(t: HeavyTask): void {
    this.record(() => {
      const mass = this.bind(t.mass, 1, t.nk);
      const cols = this.bindOutput(t.cols, 1, Math.max(1, t.sinks + t.count));
      const flags = this.bindOutput(t.flags, 1, t.nk);
      const params = this.uniform([u32(mass.el), u32(cols.el), u32(flags.el), u32(t.nk), u32(t.sinks), u32(t.count)]);
      this.dispatch(this.rowKernel('heavy'), [mass.binding, cols.binding, flags.binding, params], 1);
    });
  }

  columns(t: ColumnsTask): void {
    this.accuratePart(t, t.dst, {
      part: PART_LIST, qFrom: 0, qTo: t.nq, causal: t.causal, list: { view: t.cols, width: 1, rows: t.count },
      write: 'write', add: false,
    });
  }

  window(t: WindowTask): void {
    this.accuratePart(t, t.dst, {
      part: PART_WINDOW, qFrom: 0, qTo: t.nq, causal: t.mask.causal, mask: t.mask, write: 'merge-fixed', add: true,
    });
  }

  round(t: RoundTask): void {
    this.accuratePart(t, t.dst, {
      part: PART_ROUND, qFrom: 0, qTo: t.nq, causal: t.mask.causal, mask: t.mask, round: t, write: 'merge-fixed', add: true,
    });
  }

  samples(t: SamplesTask): void {
    this.accuratePart(t, t.dst, {
      part: PART_LIST, qFrom: t.qFrom, qTo: t.qTo, causal: t.mask.causal, mask: t.mask, list: t.samples,
      write: 'write', add: false,
    });
  }

  buckets(t: BucketsTask): void {
    this.record(() => {
      const bound = [
        this.bind(t.keys, 1, t.count), this.bind(t.perm, 1, t.count),
        this.bindOutput(t.tags, 1, t.count), this.bindOutput(t.starts, 1, t.numKeys + 1),
      ];
      const params = this.uniform([...bound.map((b) => u32(b.el)), u32(t.count), u32(t.numKeys), u32(t.cap)]);
      this.dispatch(
        this.rowKernel('buckets'), [...bound.map((b) => b.binding), params], this.rowGroups(Math.max(t.count, t.numKeys + 1)),
      );
    });
  }

  remainder(t: RemainderTask): void {
    if (t.nq === 0 || t.dv === 0) return;
    this.record(() => {
      const chunks = Math.ceil(t.nk / REMAINDER_CHUNK);
      // The per-row scalars, then the chunk sums of V (written by the kernel).
      const aux = this.gather([
        { view: t.exact.cnt, width: 1, rows: t.nq }, { view: t.samples.cnt, width: 1, rows: t.nq },
        { view: t.samples.lse, width: 1, rows: t.nq },
      ], (chunks + 1) * t.dv);
      const bound = [
        this.bind(t.v, t.dv, t.nk), this.bindOutput(t.exact.out, t.dv, t.nq), this.bindOutput(t.exact.lse, 1, t.nq),
        this.bind(t.exact.vsum, t.dv, t.nq), this.bind(t.samples.out, t.dv, t.nq), this.bind(t.samples.vsum, t.dv, t.nq),
      ];
      // Step 0: chunk sums; step 1: their prefix over chunks; step 2: the rows.
      for (const [step, invocations] of [chunks * t.dv, t.dv, t.nq].entries()) {
        const params = this.uniform([
          ...bound.map((b) => u32(b.el)), ...aux.at.map(u32), u32(t.nq), u32(t.nk), u32(t.dv),
          u32(t.causal ? 1 : 0), u32(chunks), u32(step), f32(t.controlVariate),
        ]);
        this.dispatch(
          this.rowKernel('remainder'), [...bound.map((b) => b.binding), aux.binding, params],
          this.rowGroups(Math.max(1, invocations)),
        );
      }
    });
  }

  /**
   * Also drops commands recorded but not yet submitted and errors not yet reported: they
   * belong to a call that ended without a download or finish() (it failed), not to the next one.
   */
  releaseAll(): void {
    this.endPass();
    this.encoder = undefined;
    this.errors = [];
    for (const buffer of this.held) this.pool.release(buffer);
    this.held = [];
    this.staged = 0;
    // The call failed before finish(): the caller never got these.
    for (const buffer of this.exports) buffer.destroy();
    this.exports = [];
    for (const buf of this.live) {
      buf.released = true;
      this.pool.release(buf.gpu);
      if (buf.half) this.pool.release(buf.half);
    }
    this.live.clear();
    // What this call left idle and the next does not take is freed at the end of the next:
    // a run of like calls allocates nothing, and a large call's buffers do not outlive it for long.
    this.pool.trim();
    this.scratch.trim();
  }

  /** Runs fn inside error scopes whose findings the next download reports. */
  private record<T>(fn: () => T): T {
    if (this.lost) throw this.lost;
    const device = this.device;
    device.pushErrorScope('out-of-memory');
    device.pushErrorScope('validation');
    device.pushErrorScope('internal');
    try {
      return fn();
    } catch (cause) {
      if (cause instanceof HyperAttentionError) throw cause;
      throw new HyperAttentionError('GPU_ERROR', `WebGPU: ${String(cause)}`, { cause });
    } finally {
      const internal = device.popErrorScope();
      const validation = device.popErrorScope();
      const oom = device.popErrorScope();
      this.errors.push(Promise.all([oom, validation, internal]).then(
        ([o, v, i]) => {
          if (o) return new HyperAttentionError('OUT_OF_MEMORY', `WebGPU: ${o.message}`);
          const e = v ?? i;
          return e ? new HyperAttentionError('GPU_ERROR', `WebGPU: ${e.message}`) : undefined;
        },
        (cause) => this.lost ?? new HyperAttentionError('GPU_ERROR', `WebGPU: error scope failed: ${String(cause)}`, { cause }),
      ));
    }
  }

  /** The first error the error scopes found since the last call, if any. */
  private async takeError(): Promise<HyperAttentionError | undefined> {
    const pending = this.errors;
    this.errors = [];
    return (await Promise.all(pending)).find((e) => e !== undefined);
  }

  /** DEVICE_LOST if device.lost settles within a short grace period. */
  private async lostOrNot(): Promise<HyperAttentionError | undefined> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const grace = new Promise<void>((resolve) => { timer = setTimeout(resolve, LOST_GRACE_MS); });
    await Promise.race([this.lostSignal.catch(() => {}), grace]);
    clearTimeout(timer);
    return this.lost;
  }

  /** Bytes of a buffer of `length` elements, within the device's maxBufferSize. */
  private bufferBytes(length: number): number {
    const bytes = Math.max(4, length * 4);
    if (bytes > this.maxBufferSize) {
      throw new HyperAttentionError(
        'OUT_OF_MEMORY',
        `WebGPU: a buffer of ${length} elements (${bytes} bytes) exceeds the device's maxBufferSize of ${this.maxBufferSize} bytes`,
      );
    }
    return bytes;
  }

  private handle(buf: BackendBuffer, offset: number, length: number): WebGPUBuffer {
    if (!(buf instanceof WebGPUBuffer) || !this.live.has(buf)) {
      throw new Error(`hyperattention: ${buf instanceof WebGPUBuffer && buf.released ? 'buffer used after releaseAll' : 'not a buffer of this WebGPU backend'}`);
    }
    if (offset < 0 || offset + length > buf.length) {
      throw new Error(`hyperattention: elements [${offset}, ${offset + length}) are outside a buffer of ${buf.length}`);
    }
    return buf;
  }

  /** Binding of rows [view.row, view.row + rows) of a [*, width] matrix. */
  private bind(view: RowView, width: number, rows: number): Bound {
    const start = view.row * width;
    return this.bindElements(this.handle(view.buf, start, rows * width).gpu, start, rows * width, 4);
  }

  /** As bind, for a matrix the op writes: its f16 copy, if any, goes stale. */
  private bindOutput(view: RowView, width: number, rows: number): Bound {
    const bound = this.bind(view, width, rows);
    (view.buf as WebGPUBuffer).halfFresh = false;
    return bound;
  }

  /** As bind, for Q, K, V of the attention kernels: the f16 copy under storage 'f16'. */
  private bindInput(view: RowView, width: number, rows: number): Bound {
    if (this.storage === 'f32') return this.bind(view, width, rows);
    const start = view.row * width;
    return this.bindElements(this.halfCopy(this.handle(view.buf, start, rows * width)), start, rows * width, 2);
  }

  /** Elements [start, start + count) of a buffer, at an aligned offset within the limit. */
  private bindElements(buffer: GPUBuffer, start: number, count: number, elementBytes: number): Bound {
    if (count === 0) return { binding: { buffer, offset: 0, size: 4 }, el: 0 };
    const offset = Math.floor((start * elementBytes) / this.align) * this.align;
    const size = Math.min(buffer.size, Math.ceil(((start + count) * elementBytes) / 4) * 4) - offset;
    if (size > this.maxBinding) {
      throw new HyperAttentionError(
        'UNSUPPORTED',
        `WebGPU: an op needs ${count} elements (${size} bytes) in one binding; the device allows ${this.maxBinding} bytes (maxStorageBufferBindingSize)`,
      );
    }
    return { binding: { buffer, offset, size }, el: (start * elementBytes - offset) / elementBytes };
  }

  /** The buffer's f16 copy, made (in the open encoder) if stale. */
  private halfCopy(handle: WebGPUBuffer): GPUBuffer {
    handle.half ??= this.pool.acquire(
      Math.ceil(handle.length / 2) * 4, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    );
    if (!handle.halfFresh) {
      // Runs of whole 128-element groups keep both bindings' offsets 256-byte aligned.
      const run = Math.max(128, Math.floor((this.maxBinding - this.align) / 4 / 128) * 128);
      const pipeline = this.rowKernel('to-f16', { elem: 'f16', subgroups: false });
      for (let from = 0; from < handle.length; from += run) {
        const count = Math.min(run, handle.length - from);
        const src = this.bindElements(handle.gpu, from, count, 4);
        const dst = this.bindElements(handle.half, from, count, 2);
        const params = this.uniform([u32(count)]);
        this.dispatch(pipeline, [src.binding, dst.binding, params], this.rowGroups(Math.ceil(count / 2)));
      }
      handle.halfFresh = true;
    }
    return handle.half;
  }

  private commandEncoder(): GPUCommandEncoder {
    this.endPass();
    this.encoder ??= this.device.createCommandEncoder();
    return this.encoder;
  }

  private endPass(): void {
    this.pass?.end();
    this.pass = undefined;
  }

  private computePass(): GPUComputePassEncoder {
    if (!this.pass) this.pass = this.commandEncoder().beginComputePass();
    return this.pass;
  }

  private flush(): void {
    this.endPass();
    if (this.encoder) {
      this.device.queue.submit([this.encoder.finish()]);
      this.counts.submits++;
      this.encoder = undefined;
    }
    for (const buffer of this.held) this.pool.release(buffer);
    this.held = [];
    this.staged = 0;
  }

  /** A buffer holding host data for the open encoder (written now, read when it runs). */
  private hostData(data: Int32Array): GPUBufferBinding {
    const bytes = Math.max(4, data.byteLength);
    const buffer = this.pool.acquire(bytes, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST);
    if (data.length > 0) this.device.queue.writeBuffer(buffer, 0, data as ArrayBufferView<ArrayBuffer>);
    this.held.push(buffer);
    return { buffer, offset: 0, size: bytes };
  }

  /**
   * One buffer for the open encoder holding, in order, copies of the spans (recorded
   * copies) and of host arrays (written now), then `extra` elements for the kernel; `at`
   * holds the element offset of each part and then of the extra. For kernels whose inputs
   * would otherwise take more storage bindings than a device guarantees (8).
   */
  private gather(parts: (Span | Int32Array)[], extra = 0): { binding: GPUBufferBinding; at: number[] } {
    const at: number[] = [];
    let total = 0;
    for (const part of parts) {
      at.push(total);
      total += part instanceof Int32Array ? part.length : part.rows * part.width;
    }
    at.push(total);
    const buffer = this.pool.acquire(Math.max(4, (total + extra) * 4), GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST);
    this.held.push(buffer);
    parts.forEach((part, index) => {
      if (part instanceof Int32Array) {
        if (part.length > 0) this.device.queue.writeBuffer(buffer, at[index] * 4, part as ArrayBufferView<ArrayBuffer>);
        return;
      }
      const start = part.view.row * part.width;
      const count = part.rows * part.width;
      const src = this.handle(part.view.buf, start, count);
      if (count > 0) this.commandEncoder().copyBufferToBuffer(src.gpu, start * 4, buffer, at[index] * 4, count * 4);
    });
    return { binding: this.bindElements(buffer, 0, total + extra, 4).binding, at };
  }

  /** A uniform buffer with the fields packed in order (4 bytes each, as the WGSL structs). */
  private uniform(fields: Field[]): GPUBufferBinding {
    const data = new DataView(new ArrayBuffer(Math.ceil(fields.length / 4) * 16));
    fields.forEach(([type, value], index) => {
      if (type === 'f32') data.setFloat32(index * 4, value, true);
      else if (type === 'i32') data.setInt32(index * 4, value, true);
      else data.setUint32(index * 4, value, true);
    });
    const buffer = this.pool.acquire(data.byteLength, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST);
    this.device.queue.writeBuffer(buffer, 0, data.buffer);
    this.held.push(buffer);
    return { buffer, offset: 0, size: data.byteLength };
  }

  /** `workgroups` in x (spilling into y), times `layers` in z (the heads of a batch). */
  private dispatch(pipeline: GPUComputePipeline, resources: GPUBufferBinding[], workgroups: number, layers = 1): void {
    const bindGroup = this.device.createBindGroup({
      layout: pipeline.getBindGroupLayout(0),
      entries: resources.map((resource, binding) => ({ binding, resource })),
    });
    const x = Math.min(workgroups, this.maxGrid);
    const y = Math.ceil(workgroups / x);
    if (y > this.maxGrid) {
      throw new HyperAttentionError('UNSUPPORTED', `WebGPU: ${workgroups} workgroups exceed the device's dispatch grid`);
    }
    const pass = this.computePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(x, y, layers);
  }

  private rowGroups(rows: number): number {
    return Math.ceil(rows / this.rowWorkgroup);
  }

  private rowKernel(name: KernelName, variant: KernelVariant = PLAIN): GPUComputePipeline {
    return this.pipelines.get(name, { WG: this.rowWorkgroup }, variant);
  }

  private attentionKernel(
    name: 'exact' | 'block' | 'sampled' | 'accurate' | 'accurate-round', d: number, dv: number,
  ): GPUComputePipeline {
    const dims = {
      WG: this.rowWorkgroup, D: d, D4: Math.ceil(d / 4), DV: dv, DV4: Math.ceil(dv / 4),
      STATS: name.startsWith('accurate') ? 1 : 0,
    };
    // Its rows see different keys: tiles of their own (lib-tiles-own.wgsl), never shared.
    if (name === 'accurate-round') return this.pipelines.get(name, dims, { elem: this.storage, subgroups: false });
    const tiles: Record<string, number> = this.subgroups
      ? { SG_MAX: this.maxSubgroupSize }
      : { BK: keysPerTile(d, dv, this.workgroupStorage) };
    return this.pipelines.get(name, { ...dims, ...tiles }, { elem: this.storage, subgroups: this.subgroups });
  }
}

function shift(view: RowView, rows: number): RowView {
  return { buf: view.buf, row: view.row + rows };
}
