// The backend instances calls run on, shared by the public API and the scheduler: WebGPU
// backends per device (the library's shared one, or the caller's), the hybrid over one of
// them and a one-thread WebAssembly backend; and a WebAssembly backend of its own for
// each call that runs on the CPU (a backend's memory serves one call at a time), so that
// such calls run side by side, on the thread pool's workers where they have threads. One
// queue serialises the calls on WebGPU and the hybrid, and the scheduler's work.
import { CpuBackend, createCpuBackend } from './cpu/backend.ts';
import {
  bestFlavour, instantiateThreaded, RENEW_ABOVE_BYTES, threadedBuild, threadedFlavour, type ThreadedFlavour,
} from './cpu/wasm.ts';
import { createWebGPUBackend, type WebGPUBackend } from './gpu/index.ts';
import { HybridBackend } from './hybrid.ts';
import type { WebGPUDeviceLike } from './options.ts';
import { threadPool, type ThreadPool } from './threads/pool.ts';
import { warn } from './warnings.ts';

let sharedGpu: Promise<WebGPUBackend> | undefined;
const callerGpus = new WeakMap<WebGPUDeviceLike, WebGPUBackend>();
const hybrids = new WeakMap<WebGPUBackend, HybridBackend>();
let queue: Promise<unknown> = Promise.resolve();

/**
 * `make`'s promise, made once and shared; one that rejects (out of memory, say) is
 * forgotten, so that the next caller tries again instead of failing for good.
 */
export function madeOnce<T>(make: () => Promise<T>): () => Promise<T> {
  let made: Promise<T> | undefined;
  return () => {
    if (made) return made;
    const attempt = make();
    made = attempt;
    attempt.catch(() => {
      if (made === attempt) made = undefined;
    });
    return attempt;
  };
}

/** The hybrid's WebAssembly backend: one thread, every op done when it returns. */
const cpuBackend = madeOnce(() => createCpuBackend());

/**
 * The WebGPU backend of the caller's device, or of the library's shared one. A backend
 * whose device was lost is replaced (the shared device is then re-acquired), so after a
 * DEVICE_LOST the next call runs on a fresh device. Rejects with UNSUPPORTED without WebGPU.
 */
export async function gpuBackend(device?: WebGPUDeviceLike): Promise<WebGPUBackend> {
  if (device) {
    let backend = callerGpus.get(device);
    if (!backend || backend.isLost) {
      backend = await createWebGPUBackend({ device: device as GPUDevice });
      callerGpus.set(device, backend);
    }
    return backend;
  }
  const current = await sharedGpu?.catch(() => undefined);
  if (current && !current.isLost) return current;
  const next = createWebGPUBackend();
  sharedGpu = next;
  return next;
}

/** Hashing and sorting on the WebAssembly backend, the rest on `gpu`. */
export async function hybridBackend(gpu: WebGPUBackend): Promise<HybridBackend> {
  let hybrid = hybrids.get(gpu);
  if (!hybrid) {
    hybrid = new HybridBackend(await cpuBackend(), gpu);
    hybrids.set(gpu, hybrid);
  }
  return hybrid;
}

/**
 * Idle backends of earlier calls, of one kind (one thread, or over shared memory): as many
 * as calls of that kind have been in flight at once, up to IDLE_BYTES in all, so that
 * overlapping calls take turns on the same memories instead of each making one and leaving
 * it to a garbage collector that may not run (a worker's, see pool.ts).
 */
class Idle {
  private readonly idle: CpuBackend[] = [];
  private inFlight = 0;
  private peak = 0;

  /**
   * A kept backend, if any, for a call starting now: the one with the most memory, so that
   * the others, which serve only when more calls overlap, seldom need to grow.
   */
  take(): CpuBackend | undefined {
    this.peak = Math.max(this.peak, ++this.inFlight);
    if (this.idle.length === 0) return undefined;
    const largest = this.idle.reduce((best, b, i) => (b.memoryBytes > this.idle[best].memoryBytes ? i : best), 0);
    return this.idle.splice(largest, 1)[0];
  }

  /** The call that took (or made) `backend` is done: keeps it if it may serve again (else false). */
  give(backend: CpuBackend | undefined, reusable: boolean): boolean {
    this.inFlight--;
    if (!backend || !reusable || this.idle.length >= this.peak) return false;
    if (this.idle.reduce((sum, b) => sum + b.memoryBytes, backend.memoryBytes) > IDLE_BYTES) return false;
    this.idle.push(backend);
    return true;
  }
}

const IDLE_BYTES = 2 * RENEW_ABOVE_BYTES;
const idleSingle = new Idle();
const idleShared = new Idle();
let threadsWarned = false;

/** The pool and the threaded build that calls with threads run on, or why this runtime has none. */
async function threading(): Promise<{ pool: ThreadPool; flavour: ThreadedFlavour } | string> {
  const pool = await threadPool();
  if (typeof pool === 'string') return pool;
  if (pool.broken) return pool.broken;
  const flavour = threadedFlavour(bestFlavour());
  return flavour ? { pool, flavour } : 'this engine has no WebAssembly SIMD';
}

/** The pool and threaded build ready for `threads` threads, or why calls run on one thread here. */
async function readyThreads(threads: number): Promise<{ pool: ThreadPool; flavour: ThreadedFlavour } | string> {
  const found = await threading();
  return typeof found === 'string' ? found : found.pool.ready(threads).then(() => found, () => found.pool.broken!);
}

/** A new WebAssembly backend over a shared memory of its own (an arena of the pool). */
async function threadedCpu({ pool, flavour }: { pool: ThreadPool; flavour: ThreadedFlavour }, threads: number): Promise<CpuBackend> {
  const { bytes, memory } = threadedBuild(flavour);
  const wasm = await instantiateThreaded(flavour, memory);
  return new CpuBackend(wasm, bestFlavour(), { pool, arena: pool.addArena(flavour, bytes, memory), threads });
}

function warnOneThread(threads: number, why: string): void {
  if (!threadsWarned) warn(`running on one thread instead of ${threads}: ${why}`);
  threadsWarned = true;
}

/**
 * A WebAssembly backend for one call on `threads` threads, to give back with releaseCpu.
 * Where the runtime has no threads (no SharedArrayBuffer, a page without cross-origin
 * isolation, no Worker, workers that cannot start) it runs on one thread, and says why once
 * through the warning hook.
 */
export async function acquireCpu(threads: number): Promise<CpuBackend> {
  if (threads > 1) {
    const ready = await readyThreads(threads);
    if (typeof ready !== 'string') {
      const reused = idleShared.take();
      if (reused) {
        reused.group!.threads = threads;
        return reused;
      }
      try {
        return await threadedCpu(ready, threads);
      } catch (error) {
        idleShared.give(undefined, false);
        throw error;
      }
    }
    warnOneThread(threads, ready);
  }
  let single = idleSingle.take();
  try {
    single ??= await createCpuBackend();
  } catch (error) {
    idleSingle.give(undefined, false);
    throw error;
  }
  single.yields = true;
  return single;
}

/**
 * A WebAssembly backend that one owner keeps (a key-value cache, src/cache.ts): never
 * shared with calls, freed by dropCpu. On `threads` threads where the runtime has them.
 */
export async function ownCpu(threads: number): Promise<CpuBackend> {
  if (threads > 1) {
    const ready = await readyThreads(threads);
    if (typeof ready !== 'string') return threadedCpu(ready, threads);
    warnOneThread(threads, ready);
  }
  const single = await createCpuBackend();
  single.yields = true;
  return single;
}

/** Frees the memory of a backend of ownCpu: its arena leaves the pool (a one-thread one is left to the collector). */
export function dropCpu(backend: CpuBackend): void {
  if (backend.group) backend.group.pool.dropArena(backend.group.arena);
}

/** Whether calls can have more than one WebAssembly thread here (see acquireCpu). */
export async function threadsAvailable(): Promise<boolean> {
  return typeof (await threading()) !== 'string';
}

/** Takes back a backend of acquireCpu once its call has released its buffers. */
export function releaseCpu(backend: CpuBackend): void {
  const group = backend.group;
  if (!group) {
    idleSingle.give(backend, true);
    return;
  }
  // A large arena is dropped so that its memory can go (a shared memory never shrinks),
  // and one a failed worker may still write to is never reused.
  if (!idleShared.give(backend, backend.memoryBytes <= RENEW_ABOVE_BYTES && !group.pool.isPoisoned(group.arena))) {
    group.pool.dropArena(group.arena);
  }
}

/** Runs work after every call queued before it, whether they succeeded or not. */
export function serialize<T>(work: () => Promise<T>): Promise<T> {
  const next = queue.then(work, work);
  queue = next.catch(() => undefined);
  return next;
}
