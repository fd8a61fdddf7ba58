// The backend instances calls run on, shared by the public API and the scheduler: one
// WebAssembly backend, WebGPU backends per device (the library's shared one, or the
// caller's), and the hybrid over the first two. One queue serialises every call, because
// a backend's memory serves one call at a time.
import { createCpuBackend, type CpuBackend } from './cpu/backend.ts';
import { createWebGPUBackend, type WebGPUBackend } from './gpu/index.ts';
import { HybridBackend } from './hybrid.ts';
import type { WebGPUDeviceLike } from './options.ts';

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

/** Runs work after every call queued before it, whether they succeeded or not. */
export function serialize<T>(work: () => Promise<T>): Promise<T> {
  const next = queue.then(work, work);
  queue = next.catch(() => undefined);
  return next;
}
