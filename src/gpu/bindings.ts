// The WebGPU backend's buffers as its kernels see them: the backend's buffer handles,
// storage bindings of row ranges within the device's binding limits, the f16 copies of Q,
// K and V for storage 'f16', index data gathered into one buffer, and the pipelines of a
// kernel for this device (workgroup sizes, tiles, variant).
//
// Storage 'f16' (devices with shader-f16): the attention kernels read Q, K and V from f16
// copies (accumulating in f32), halving their memory traffic; a buffer's copy is made by
// the first attention op that reads it after an upload, and reused until the next
// upload or an op writing that buffer. Outputs stay f32.
//
// Subgroups (default where the device has them): the attention kernels share K and V rows
// between lanes by shuffles rather than through workgroup memory and barriers.
import { HyperAttentionError } from '../errors.ts';
import type { BackendBuffer, RowView } from '../ops.ts';
import { kernel, keysPerTile, pipelineCache, PLAIN, type ElementType, type Kernel, type KernelVariant, type PipelineCache } from './kernels.ts';
import { Recorder } from './recorder.ts';

/** Invocations per workgroup of the row-parallel kernels and of the sort passes. */
const ROW_WORKGROUP = 64;
const SORT_WORKGROUP = 256;

export const TO_F16 = kernel('to-f16', { libraries: ['lib-common'], params: { count: 'u32' } });

export class WebGPUBuffer implements BackendBuffer {
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
export interface Bound {
  binding: GPUBufferBinding;
  /** element index, within the binding, of the view's first element */
  el: number;
}

/** Rows [view.row, view.row + rows) of a [*, width] matrix, to be packed by gather(). */
export interface Span {
  view: RowView;
  width: number;
  rows: number;
}

export interface BindingOptions {
  /** largest storage binding in bytes, below the device's maxStorageBufferBindingSize */
  maxBindingBytes?: number;
  /** largest buffer in bytes, below the device's maxBufferSize */
  maxBufferBytes?: number;
  /** storage type of Q, K and V in the attention kernels (default 'f32') */
  storage?: ElementType;
  /** attention kernels pass K and V between lanes by subgroup shuffles (default: where the device can) */
  subgroups?: boolean;
}

/** A recorder that also binds the backend's buffers and compiles its kernels. */
export class Bindings extends Recorder {
  readonly storage: ElementType;
  readonly subgroups: boolean;
  /** invocations per workgroup of the row kernels (rowKernel, attentionKernel) */
  readonly rowWorkgroup: number;
  /** invocations per workgroup of the sort passes */
  readonly sortWorkgroup: number;
  /** bytes one storage binding may span */
  readonly maxBinding: number;
  readonly maxBufferSize: number;
  /** the device's minStorageBufferOffsetAlignment */
  readonly align: number;
  private readonly pipelines: PipelineCache;
  private readonly workgroupStorage: number;
  private readonly maxSubgroupSize: number;
  private readonly live = new Set<WebGPUBuffer>();
  /** buffers that releaseBuffers keeps (a key-value cache's, src/cache.ts), until destroyLasting */
  private readonly lasting = new Set<WebGPUBuffer>();

  constructor(device: GPUDevice, options: BindingOptions = {}) {
    super(device);
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
    const limits = device.limits;
    const invocations = Math.min(limits.maxComputeInvocationsPerWorkgroup, limits.maxComputeWorkgroupSizeX);
    this.rowWorkgroup = Math.min(ROW_WORKGROUP, invocations);
    this.sortWorkgroup = Math.min(SORT_WORKGROUP, invocations);
    this.workgroupStorage = limits.maxComputeWorkgroupStorageSize;
    this.maxBinding = Math.min(options.maxBindingBytes ?? Infinity, limits.maxStorageBufferBindingSize);
    this.maxBufferSize = Math.min(options.maxBufferBytes ?? Infinity, limits.maxBufferSize);
    this.align = limits.minStorageBufferOffsetAlignment;
  }

  createBuffer(kind: 'f32' | 'i32', length: number): WebGPUBuffer {
    const bytes = this.bufferBytes(length);
    const gpu = this.record(() =>
      this.pool.acquire(bytes, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST));
    const buf = new WebGPUBuffer(kind, length, gpu);
    this.live.add(buf);
    return buf;
  }

  /** A buffer of its own (not the pool's) that releaseBuffers keeps, until destroyLasting. */
  createLasting(kind: 'f32' | 'i32', length: number): WebGPUBuffer {
    const bytes = this.bufferBytes(length);
    const gpu = this.record(() => this.device.createBuffer({
      size: bytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    }));
    const buf = new WebGPUBuffer(kind, length, gpu);
    this.lasting.add(buf);
    return buf;
  }

  /** Frees a buffer of createLasting (and its f16 copy); it is then unusable. */
  destroyLasting(buf: BackendBuffer): void {
    if (!(buf instanceof WebGPUBuffer) || !this.lasting.delete(buf)) return;
    buf.released = true;
    buf.gpu.destroy();
    if (buf.half) this.pool.release(buf.half);
  }

  /** Back to the pool: every buffer created since the last release (they are then unusable). */
  releaseBuffers(): void {
    for (const buf of this.live) {
      buf.released = true;
      this.pool.release(buf.gpu);
      if (buf.half) this.pool.release(buf.half);
    }
    this.live.clear();
  }

  /** Bytes of a buffer of `length` elements, within the device's maxBufferSize. */
  bufferBytes(length: number): number {
    const bytes = Math.max(4, length * 4);
    if (bytes > this.maxBufferSize) {
      throw new HyperAttentionError(
        'OUT_OF_MEMORY',
        `WebGPU: a buffer of ${length} elements (${bytes} bytes) exceeds the device's maxBufferSize of ${this.maxBufferSize} bytes`,
      );
    }
    return bytes;
  }

  /** The backend's buffer, checked to be live and to hold elements [offset, offset + length). */
  handle(buf: BackendBuffer, offset: number, length: number): WebGPUBuffer {
    if (!(buf instanceof WebGPUBuffer) || !(this.live.has(buf) || this.lasting.has(buf))) {
      throw new Error(`hyperattention: ${buf instanceof WebGPUBuffer && buf.released ? 'buffer used after releaseAll' : 'not a buffer of this WebGPU backend'}`);
    }
    if (offset < 0 || offset + length > buf.length) {
      throw new Error(`hyperattention: elements [${offset}, ${offset + length}) are outside a buffer of ${buf.length}`);
    }
    return buf;
  }

  /** As handle, for a buffer about to be written: its f16 copy, if any, goes stale. */
  written(buf: BackendBuffer, offset: number, length: number): WebGPUBuffer {
    const handle = this.handle(buf, offset, length);
    handle.halfFresh = false;
    return handle;
  }

  /** Binding of rows [view.row, view.row + rows) of a [*, width] matrix. */
  bind(view: RowView, width: number, rows: number): Bound {
    const start = view.row * width;
    return this.bindElements(this.handle(view.buf, start, rows * width).gpu, start, rows * width, 4);
  }

  /** As bind, for a matrix the op writes: its f16 copy, if any, goes stale. */
  bindOutput(view: RowView, width: number, rows: number): Bound {
    const bound = this.bind(view, width, rows);
    (view.buf as WebGPUBuffer).halfFresh = false;
    return bound;
  }

  /** As bind, for Q, K, V of the attention kernels: the f16 copy under storage 'f16'. */
  bindInput(view: RowView, width: number, rows: number): Bound {
    if (this.storage === 'f32') return this.bind(view, width, rows);
    const start = view.row * width;
    return this.bindElements(this.halfCopy(this.handle(view.buf, start, rows * width)), start, rows * width, 2);
  }

  /** Elements [start, start + count) of a buffer, at an aligned offset within the limit. */
  bindElements(buffer: GPUBuffer, start: number, count: number, elementBytes: number): Bound {
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
      const pipeline = this.rowKernel(TO_F16, { elem: 'f16', subgroups: false });
      for (let from = 0; from < handle.length; from += run) {
        const count = Math.min(run, handle.length - from);
        const src = this.bindElements(handle.gpu, from, count, 4);
        const dst = this.bindElements(handle.half, from, count, 2);
        this.dispatch(pipeline, [src.binding, dst.binding, this.uniform(TO_F16, { count })], this.rowGroups(Math.ceil(count / 2)));
      }
      handle.halfFresh = true;
    }
    return handle.half;
  }

  /**
   * One buffer for the open encoder holding, in order, copies of the spans (recorded
   * copies) and of host arrays (written now), then `extra` elements for the kernel; `at`
   * holds the element offset of each part and then of the extra. For kernels whose inputs
   * would otherwise take more storage bindings than a device guarantees (8).
   */
  gather(parts: (Span | Int32Array)[], extra = 0): { binding: GPUBufferBinding; at: number[] } {
    const at: number[] = [];
    let total = 0;
    for (const part of parts) {
      at.push(total);
      total += part instanceof Int32Array ? part.length : part.rows * part.width;
    }
    at.push(total);
    const buffer = this.heldBuffer(Math.max(4, (total + extra) * 4), GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST);
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

  /** Workgroups of a row kernel for `rows` invocations. */
  rowGroups(rows: number): number {
    return Math.ceil(rows / this.rowWorkgroup);
  }

  /** A kernel with one invocation per row, in workgroups of rowWorkgroup (WG). */
  rowKernel(k: Kernel, variant: KernelVariant = PLAIN): GPUComputePipeline {
    return this.pipelines.get(k, { WG: this.rowWorkgroup }, variant);
  }

  /** A kernel of the sort, in workgroups of sortWorkgroup (WG). */
  sortKernel(k: Kernel): GPUComputePipeline {
    return this.pipelines.get(k, { WG: this.sortWorkgroup });
  }

  /**
   * An attention kernel (lib-attention.wgsl) for head dims d, dv: on shared tiles of the
   * backend's kind (subgroup shuffles, or workgroup memory of as many keys as fit), or on
   * each row's own keys where the kernel names lib-tiles-own.
   */
  attentionKernel(k: Kernel, d: number, dv: number): GPUComputePipeline {
    const dims = { WG: this.rowWorkgroup, D: d, D4: Math.ceil(d / 4), DV: dv, DV4: Math.ceil(dv / 4) };
    if (k.libraries.includes('lib-tiles-own')) return this.pipelines.get(k, dims, { elem: this.storage, subgroups: false });
    const tiles: Record<string, number> = this.subgroups
      ? { SG_MAX: this.maxSubgroupSize }
      : { BK: keysPerTile(d, dv, this.workgroupStorage) };
    return this.pipelines.get(k, { ...dims, ...tiles }, { elem: this.storage, subgroups: this.subgroups });
  }
}
