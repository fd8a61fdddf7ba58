// The backend instances calls run on, shared by the public API and the scheduler: the
// scheduler's WebAssembly backend, WebGPU backends per device (the library's shared one, or
// the caller's), and the hybrid over those two; and a WebAssembly backend of its own for
// each call that runs on the CPU (a backend's memory serves one call at a time), so that
// such calls run side by side, on the thread pool's workers where they have threads. One
// queue serialises the calls on WebGPU and the hybrid, and the scheduler's work.
import { CpuBackend, createCpuBackend } from './cpu/backend.ts';
import { bestFlavour, instantiateThreaded, RENEW_ABOVE_BYTES, threadedBuild, threadedFlavour } from './cpu/wasm.ts';
import { createWebGPUBackend, type WebGPUBackend } from './gpu/index.ts';
import { HybridBackend } from './hybrid.ts';
import type { WebGPUDeviceLike } from './options.ts';
import { threadPool } from './threads/pool.ts';
import { warn } from './warnings.ts';

let cpu: Promise<CpuBackend> | undefined;
let sharedGpu: Promise<WebGPUBackend> | undefined;
const callerGpus = new WeakMap<WebGPUDeviceLike, WebGPUBackend>();
const hybrids = new WeakMap<WebGPUBackend, HybridBackend>();
let queue: Promise<unknown> = Promise.resolve();

export function cpuBackend(): Promise<CpuBackend> {
  cpu ??= createCpuBackend();
  return cpu;
}

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

/** Idle backends of earlier calls, on one thread and over shared memory: one of each is kept. */
const idleSingle: CpuBackend[] = [];
const idleShared: CpuBackend[] = [];
const KEEP_IDLE = 1;
let threadsWarned = false;

/**
 * A WebAssembly backend for one call on `threads` threads, to give back with releaseCpu.
 * Where the runtime has no threads (no SharedArrayBuffer, a page without cross-origin
 * isolation, no Worker) it runs on one thread, and says why once through the warning hook.
 */
export async function acquireCpu(threads: number): Promise<CpuBackend> {
  if (threads > 1) {
    const pool = await threadPool();
    const flavour = threadedFlavour(bestFlavour());
    let why = typeof pool === 'string' ? pool : pool.broken ?? (flavour ? undefined : 'this engine has no WebAssembly SIMD');
    if (why === undefined && typeof pool !== 'string') why = await pool.ready(threads).then(() => undefined, () => pool.broken);
    if (why === undefined && typeof pool !== 'string' && flavour) {
      const reused = idleShared.pop();
      if (reused) {
        reused.group!.threads = threads;
        return reused;
      }
      const { bytes, memory } = threadedBuild(flavour);
      const wasm = await instantiateThreaded(flavour, memory);
      return new CpuBackend(wasm, bestFlavour(), { pool, arena: pool.addArena(flavour, bytes, memory), threads });
    }
    if (!threadsWarned) warn(`running on one thread instead of ${threads}: ${why}`);
    threadsWarned = true;
  }
  const single = idleSingle.pop() ?? await createCpuBackend();
  single.yields = true;
  return single;
}

/** Whether calls can have more than one WebAssembly thread here (see acquireCpu). */
export async function threadsAvailable(): Promise<boolean> {
  const pool = await threadPool();
  return typeof pool !== 'string' && !pool.broken && threadedFlavour(bestFlavour()) !== undefined;
}

/** Takes back a backend of acquireCpu once its call has released its buffers. */
export function releaseCpu(backend: CpuBackend): void {
  const group = backend.group;
  if (!group) {
    if (idleSingle.length < KEEP_IDLE) idleSingle.push(backend);
    return;
  }
  // A large arena is dropped so that its memory can go (a shared memory never shrinks),
  // and one a failed worker may still write to is never reused.
  if (idleShared.length < KEEP_IDLE && backend.memoryBytes <= RENEW_ABOVE_BYTES && !group.pool.isPoisoned(group.arena)) {
    idleShared.push(backend);
  } else {
    group.pool.dropArena(group.arena);
  }
}

/** Runs work after every call queued before it, whether they succeeded or not. */
export function serialize<T>(work: () => Promise<T>): Promise<T> {
  const next = queue.then(work, work);
  queue = next.catch(() => undefined);
  return next;
}
