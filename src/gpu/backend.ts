// The WebGPU backend: the ops of src/ops.ts as WGSL kernels. It is three layers: the
// recorder (recorder.ts: one open command encoder per call, staging, error scopes, device
// loss), the bindings (bindings.ts: buffer handles, storage bindings, f16 copies,
// pipelines), and the op families with their kernels' declarations (ops/lsh.ts,
// ops/attention.ts, ops/accurate.ts). This class holds the host and device I/O.
//
// Device-resident I/O: the caller's GPUBuffers are read and written by copies recorded
// into the same encoder as the ops, so a call with GPU inputs and output reads nothing
// back; finish() submits it and reports its errors as a download would.
//
// Device loss: the call in flight rejects with DEVICE_LOST, and every later op on this
// backend throws DEVICE_LOST; createWebGPUBackend() then acquires a new device.
import type {
  Backend, BackendBuffer, BlockTask, BucketsTask, ColumnsTask, ExactTask, HashTask, PrefixesTask, HeadBatch, HeavyTask, MergeTask,
  ProbeTask, RemainderTask, RoundTask, SampledTask, SamplesTask, SortTask, WindowTask,
} from '../ops.ts';
import type { WebGPUBufferLike } from '../options.ts';
import { Bindings } from './bindings.ts';
import type { ElementType } from './kernels.ts';
import * as accurate from './ops/accurate.ts';
import * as attention from './ops/attention.ts';
import * as lsh from './ops/lsh.ts';

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
  private readonly g: Bindings;
  /** made by createDeviceBuffer for the call in flight; the caller's once finish() succeeds */
  private exports: GPUBuffer[] = [];

  constructor(device: GPUDevice, options: WebGPUBackendOptions = {}) {
    this.g = new Bindings(device, options);
  }

  get device(): GPUDevice {
    return this.g.device;
  }

  get storage(): ElementType {
    return this.g.storage;
  }

  get subgroups(): boolean {
    return this.g.subgroups;
  }

  /** Command buffers submitted and buffers read back (mapAsync) so far, for tests and benchmarks. */
  get counts(): { readonly submits: number; readonly readbacks: number } {
    return this.g.counts;
  }

  get maxBufferLength(): number {
    return Math.floor(this.g.maxBufferSize / 4);
  }

  /** Bytes in the pools' idle buffers: what the device keeps between calls. */
  get idleBytes(): number {
    return this.g.idleBytes;
  }

  /** True once the device is lost: every op throws DEVICE_LOST; create a new backend. */
  get isLost(): boolean {
    return this.g.isLost;
  }

  createBuffer(kind: 'f32' | 'i32', length: number): BackendBuffer {
    return this.g.createBuffer(kind, length);
  }

  /**
   * A buffer that releaseAll keeps (a key-value cache's, src/cache.ts), freed by
   * dropLasting. Uploads into it outside a call are submitted with submit().
   */
  createLasting(kind: 'f32' | 'i32', length: number): BackendBuffer {
    return this.g.createLasting(kind, length);
  }

  dropLasting(buf: BackendBuffer): void {
    this.g.destroyLasting(buf);
  }

  /** Submits what is recorded, without waiting (uploads made between calls, which releaseAll would otherwise drop). */
  submit(): void {
    this.g.submit();
  }

  upload(buf: BackendBuffer, data: Float32Array | Int32Array, offset = 0): void {
    const handle = this.g.written(buf, offset, data.length);
    if (data.length === 0) return;
    this.g.record(() => this.g.stage(data, handle.gpu, offset * 4));
  }

  copy(src: BackendBuffer, srcOffset: number, dst: BackendBuffer, dstOffset: number, length: number): void {
    const from = this.g.handle(src, srcOffset, length);
    const to = this.g.written(dst, dstOffset, length);
    if (length === 0) return;
    this.g.record(() => this.g.commandEncoder().copyBufferToBuffer(from.gpu, srcOffset * 4, to.gpu, dstOffset * 4, length * 4));
  }

  download(buf: BackendBuffer, offset: number, length: number, into: Float32Array | Int32Array, intoOffset = 0): Promise<void> {
    return this.g.readback(this.g.handle(buf, offset, length).gpu, offset * 4, length, into, intoOffset);
  }

  copyFromDevice(dst: BackendBuffer, dstOffset: number, src: WebGPUBufferLike, srcByteOffset: number, length: number): void {
    const handle = this.g.written(dst, dstOffset, length);
    if (length === 0) return;
    this.g.record(() => this.g.commandEncoder().copyBufferToBuffer(src as GPUBuffer, srcByteOffset, handle.gpu, dstOffset * 4, length * 4));
  }

  createDeviceBuffer(length: number): WebGPUBufferLike {
    const bytes = this.g.bufferBytes(length);
    // Not from the pool: the caller keeps it, and destroys it.
    const buffer = this.g.record(() => this.g.device.createBuffer({
      size: bytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    }));
    this.exports.push(buffer);
    return buffer;
  }

  exportToDevice(src: BackendBuffer, srcOffset: number, dst: WebGPUBufferLike, dstByteOffset: number, length: number): void {
    const handle = this.g.handle(src, srcOffset, length);
    if (length === 0) return;
    this.g.record(() => this.g.commandEncoder().copyBufferToBuffer(handle.gpu, srcOffset * 4, dst as GPUBuffer, dstByteOffset, length * 4));
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
  sync(): Promise<void> {
    return this.g.submitAndWait();
  }

  hash(t: HashTask): void {
    lsh.hash(this.g, t);
  }

  sort(t: SortTask): void {
    lsh.sort(this.g, t);
  }

  buckets(t: BucketsTask): void {
    lsh.buckets(this.g, t);
  }

  exact(t: ExactTask): void {
    attention.exactHeads(this.g, t, { count: 1, group: 1, phase: 0, qRows: t.nq, kRows: t.nk });
  }

  /** One dispatch a row: the exact kernel's causal mask is by row index, not a list. */
  prefixes(t: PrefixesTask): void {
    for (let i = 0; i < t.nq; i++) {
      const at = <V extends { row: number }>(view: V): V => ({ ...view, row: view.row + i });
      this.exact({
        ...t, q: at(t.q), nq: 1, nk: t.keys[i], causal: false, causalOffset: 0,
        dst: { ...t.dst, out: at(t.dst.out), lse: at(t.dst.lse) },
      });
    }
  }

  exactHeads(t: ExactTask, heads: HeadBatch): void {
    attention.exactHeads(this.g, t, heads);
  }

  block(t: BlockTask): void {
    attention.block(this.g, t);
  }

  sampled(t: SampledTask): void {
    attention.sampled(this.g, t);
  }

  merge(t: MergeTask): void {
    attention.merge(this.g, t);
  }

  probe(t: ProbeTask): void {
    accurate.probe(this.g, t);
  }

  heavy(t: HeavyTask): void {
    accurate.heavy(this.g, t);
  }

  columns(t: ColumnsTask): void {
    accurate.columns(this.g, t);
  }

  window(t: WindowTask): void {
    accurate.window(this.g, t);
  }

  round(t: RoundTask): void {
    accurate.round(this.g, t);
  }

  samples(t: SamplesTask): void {
    accurate.samples(this.g, t);
  }

  remainder(t: RemainderTask): void {
    accurate.remainder(this.g, t);
  }

  /**
   * Also drops commands recorded but not yet submitted and errors not yet reported: they
   * belong to a call that ended without a download or finish() (it failed), not to the next one.
   */
  releaseAll(): void {
    // The call failed before finish(): the caller never got these.
    for (const buffer of this.exports) buffer.destroy();
    this.exports = [];
    this.g.releaseBuffers();
    this.g.reset();
  }
}
