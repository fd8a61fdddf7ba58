// Command recording for the WebGPU backend: ops record their dispatches and copies into
// one open command encoder, which is submitted only when data goes back to the host
// (readback), when the caller waits for the work (submitAndWait), or when the host data
// staged for it passes STAGING_FLUSH_BYTES: uploads are staged and copied in order with
// the ops, so a whole call is one command buffer and one readback. Buffers come from a
// pool, trimmed at the end of each call (reset). GPU errors are caught with error scopes
// around every op and reported, typed, by the next readback or wait.
//
// Device loss: the readback or wait in flight rejects with DEVICE_LOST (it races
// device.lost, so it never hangs), and every later record() throws DEVICE_LOST.
import { HyperAttentionError } from '../errors.ts';
import type { Kernel } from './kernels.ts';
import { packParams, type ParamsDecl, type ParamValues } from './params.ts';
import { BufferPool } from './pool.ts';

/**
 * Host data staged by uploads and not yet submitted, past which the encoder is submitted
 * so that the staging buffers go back to the pool: bounds a large call's extra memory.
 */
const STAGING_FLUSH_BYTES = 256 * 2 ** 20;

/** How long a failed readback waits for device.lost to tell a lost device from an error. */
const LOST_GRACE_MS = 1000;

export class Recorder {
  readonly device: GPUDevice;
  protected readonly pool: BufferPool;
  /**
   * Scratch that only recorded commands touch (the sort histograms), apart from the pool:
   * released at once, it serves later commands of the open encoder, which run after the
   * ones before. A pooled buffer may instead be filled by queue.writeBuffer (hostData,
   * uniform), which runs ahead of every command not yet submitted, and would so change
   * the contents those commands see.
   */
  readonly scratch: BufferPool;
  /** Command buffers submitted and buffers read back (mapAsync) so far, for tests and benchmarks. */
  readonly counts = { submits: 0, readbacks: 0 };
  /** the device's maxComputeWorkgroupsPerDimension */
  readonly maxGrid: number;
  private encoder: GPUCommandEncoder | undefined;
  private pass: GPUComputePassEncoder | undefined;
  /** written by queue.writeBuffer for the open encoder: not reusable before it is submitted */
  private held: GPUBuffer[] = [];
  /** bytes of upload staging among `held` */
  private staged = 0;
  private errors: Promise<HyperAttentionError | undefined>[] = [];
  private lost: HyperAttentionError | undefined;
  private readonly lostSignal: Promise<never>;

  constructor(device: GPUDevice) {
    this.device = device;
    this.pool = new BufferPool(device);
    this.scratch = new BufferPool(device);
    this.maxGrid = device.limits.maxComputeWorkgroupsPerDimension;
    this.lostSignal = device.lost.then((info) => {
      this.lost = new HyperAttentionError('DEVICE_LOST', `WebGPU device lost (${info.reason}): ${info.message || 'no message'}`);
      throw this.lost;
    });
    this.lostSignal.catch(() => {});
  }

  /** Bytes in the pools' idle buffers: what the device keeps between calls. */
  get idleBytes(): number {
    return this.pool.idleBytes + this.scratch.idleBytes;
  }

  /** True once the device is lost: every op throws DEVICE_LOST. */
  get isLost(): boolean {
    return this.lost !== undefined;
  }

  /** Runs fn inside error scopes whose findings the next readback or wait reports. */
  record<T>(fn: () => T): T {
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

  /** Copies host data into target at a byte offset, in order with the commands recorded (inside record). */
  stage(data: Float32Array | Int32Array, target: GPUBuffer, byteOffset: number): void {
    // queue.writeBuffer runs ahead of the commands not yet submitted, which must not see
    // the new contents: it fills a staging buffer, copied into place in order with them.
    const staging = this.pool.acquire(data.byteLength, GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST);
    this.device.queue.writeBuffer(staging, 0, data as ArrayBufferView<ArrayBuffer>);
    this.held.push(staging);
    this.staged += staging.size;
    this.commandEncoder().copyBufferToBuffer(staging, 0, target, byteOffset, data.byteLength);
    if (this.staged >= STAGING_FLUSH_BYTES) this.flush();
  }

  /**
   * Submits what is recorded with a copy of `length` elements of source from a byte
   * offset, and puts them into `into` once the GPU has run it, rejecting with its errors.
   */
  async readback(
    source: GPUBuffer, byteOffset: number, length: number, into: Float32Array | Int32Array, intoOffset: number,
  ): Promise<void> {
    const bytes = Math.max(4, length * 4);
    const staging = this.record(() => {
      const target = this.pool.acquire(bytes, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST);
      if (length > 0) this.commandEncoder().copyBufferToBuffer(source, byteOffset, target, 0, length * 4);
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

  /** Submits what is recorded now, without waiting: a later reset cannot drop it. */
  submit(): void {
    this.record(() => this.flush());
  }

  /** Submits what is recorded and waits until the GPU has run it, rejecting with its errors. */
  async submitAndWait(): Promise<void> {
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

  /**
   * Drops the commands recorded but not yet submitted and the errors not yet reported:
   * they belong to a call that ended without a readback or wait (it failed), not to the
   * next one. Then trims the pools: what this call left idle and the next does not take
   * is freed at the end of the next, so a run of like calls allocates nothing and a large
   * call's buffers do not outlive it for long. The caller releases its buffers first.
   */
  reset(): void {
    this.endPass();
    this.encoder = undefined;
    this.errors = [];
    for (const buffer of this.held) this.pool.release(buffer);
    this.held = [];
    this.staged = 0;
    this.pool.trim();
    this.scratch.trim();
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

  /** The open encoder, outside any compute pass (for copies and clears). */
  commandEncoder(): GPUCommandEncoder {
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
  hostData(data: Int32Array): GPUBufferBinding {
    const bytes = Math.max(4, data.byteLength);
    const buffer = this.heldBuffer(bytes, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST);
    if (data.length > 0) this.device.queue.writeBuffer(buffer, 0, data as ArrayBufferView<ArrayBuffer>);
    return { buffer, offset: 0, size: bytes };
  }

  /** A pooled buffer for the open encoder, not reused before it is submitted (for host data written now). */
  heldBuffer(bytes: number, usage: GPUBufferUsageFlags): GPUBuffer {
    const buffer = this.pool.acquire(bytes, usage);
    this.held.push(buffer);
    return buffer;
  }

  /** A uniform buffer holding a kernel's parameters, packed by name as its struct Params. */
  uniform<P extends ParamsDecl>(k: Kernel<P>, values: ParamValues<P>): GPUBufferBinding {
    const data = packParams(k.params, values);
    const buffer = this.pool.acquire(data.byteLength, GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST);
    this.device.queue.writeBuffer(buffer, 0, data);
    this.held.push(buffer);
    return { buffer, offset: 0, size: data.byteLength };
  }

  /** `workgroups` in x (spilling into y), times `layers` in z (the heads of a batch). */
  dispatch(pipeline: GPUComputePipeline, resources: GPUBufferBinding[], workgroups: number, layers = 1): void {
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
}
