// Reuse of GPU buffers across ops and calls: released buffers wait in free lists keyed
// by usage and size class, so that a steady stream of same-shaped calls allocates
// nothing after the first; trim() at the end of each call frees what the call did not
// take, so that a large call's buffers are gone after the next one.

/**
 * Sizes round up to an eighth of their power of two (at most 12.5% slack), never below
 * 256 bytes, so that nearby sizes share buffers.
 */
function sizeClass(bytes: number): number {
  if (bytes <= 256) return 256;
  const step = Math.max(256, 2 ** Math.ceil(Math.log2(bytes)) / 8);
  return Math.ceil(bytes / step) * step;
}

/** An idle buffer and the call (trim generation) in which it was last released. */
interface Idle {
  buffer: GPUBuffer;
  released: number;
}

export class BufferPool {
  private readonly device: GPUDevice;
  private readonly maxBufferSize: number;
  private readonly free = new Map<string, Idle[]>();
  private generation = 0;
  private idle = 0;

  constructor(device: GPUDevice) {
    this.device = device;
    this.maxBufferSize = device.limits.maxBufferSize;
  }

  /** Bytes held in idle buffers. */
  get idleBytes(): number {
    return this.idle;
  }

  /** A buffer of at least `bytes` bytes (at most maxBufferSize, checked by the caller). */
  acquire(bytes: number, usage: GPUBufferUsageFlags): GPUBuffer {
    const size = Math.min(sizeClass(bytes), this.maxBufferSize - (this.maxBufferSize % 4));
    const idle = this.free.get(`${usage}/${size}`)?.pop();
    if (!idle) return this.device.createBuffer({ size, usage });
    this.idle -= size;
    return idle.buffer;
  }

  /**
   * Back to the free list. Commands already recorded with it run before later commands
   * that reuse it, but a queue.writeBuffer into it would run ahead of every command not
   * yet submitted: a buffer such commands still use goes only to a pool that no
   * writeBuffer target is taken from.
   */
  release(buffer: GPUBuffer): void {
    const key = `${buffer.usage}/${buffer.size}`;
    const idle = { buffer, released: this.generation };
    const list = this.free.get(key);
    if (list) list.push(idle);
    else this.free.set(key, [idle]);
    this.idle += buffer.size;
  }

  /**
   * Ends a call (the backend's releaseAll, when none of its buffers is in use): destroys
   * the idle buffers that sat unused through it, which were released before it began.
   */
  trim(): void {
    for (const [key, list] of this.free) {
      const kept = list.filter((idle) => idle.released === this.generation);
      for (const idle of list) {
        if (idle.released === this.generation) continue;
        idle.buffer.destroy();
        this.idle -= idle.buffer.size;
      }
      if (kept.length > 0) this.free.set(key, kept);
      else this.free.delete(key);
    }
    this.generation++;
  }
}
