// Reuse of GPU buffers across ops and calls: released buffers wait in free lists keyed
// by usage and size class, so that a steady stream of same-shaped calls allocates
// nothing after the first.

/**
 * Sizes round up to an eighth of their power of two (at most 12.5% slack), never below
 * 256 bytes, so that nearby sizes share buffers.
 */
function sizeClass(bytes: number): number {
  if (bytes <= 256) return 256;
  const step = Math.max(256, 2 ** Math.ceil(Math.log2(bytes)) / 8);
  return Math.ceil(bytes / step) * step;
}

export class BufferPool {
  private readonly device: GPUDevice;
  private readonly maxBufferSize: number;
  private readonly free = new Map<string, GPUBuffer[]>();

  constructor(device: GPUDevice) {
    this.device = device;
    this.maxBufferSize = device.limits.maxBufferSize;
  }

  /** A buffer of at least `bytes` bytes (at most maxBufferSize, checked by the caller). */
  acquire(bytes: number, usage: GPUBufferUsageFlags): GPUBuffer {
    const size = Math.min(sizeClass(bytes), this.maxBufferSize - (this.maxBufferSize % 4));
    const buffer = this.free.get(`${usage}/${size}`)?.pop();
    return buffer ?? this.device.createBuffer({ size, usage });
  }

  /**
   * Back to the free list. Commands already recorded with it run before later commands
   * that reuse it, but a queue.writeBuffer into it would run ahead of every command not
   * yet submitted: a buffer such commands still use goes only to a pool that no
   * writeBuffer target is taken from.
   */
  release(buffer: GPUBuffer): void {
    const key = `${buffer.usage}/${buffer.size}`;
    const list = this.free.get(key);
    if (list) list.push(buffer);
    else this.free.set(key, [buffer]);
  }
}
