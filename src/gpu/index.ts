// Entry point of the WebGPU backend: creating one on a given device or on a shared
// device acquired from whatever WebGPU the runtime has (src/runtime/).
import { requestWebGPUDevice } from '../runtime/webgpu.ts';
import { WebGPUBackend } from './backend.ts';
import type { ElementType } from './kernels.ts';

export { getWebGPU } from '../runtime/webgpu.ts';
export { WebGPUBackend, type WebGPUBackendOptions } from './backend.ts';
export type { ElementType } from './kernels.ts';

let shared: Promise<GPUDevice> | undefined;

/** The device backends share when none is given; a lost one is replaced on next use. */
async function sharedDevice(): Promise<GPUDevice> {
  if (shared) {
    const device = await shared;
    // device.lost, when already settled, wins this race against the fresh promise.
    const lost = await Promise.race([device.lost, Promise.resolve(undefined)]);
    if (!lost) return device;
    shared = undefined;
  }
  const acquiring = requestWebGPUDevice();
  shared = acquiring;
  acquiring.catch(() => {
    if (shared === acquiring) shared = undefined;
  });
  return acquiring;
}

/**
 * A WebGPU backend on opts.device, or on a device shared by every backend created without
 * one (acquired on first use through getWebGPU(), re-acquired after a device loss).
 * opts.storage 'f16' (devices with shader-f16 only) keeps Q, K, V as f16 for the attention
 * kernels. Rejects with UNSUPPORTED when the runtime has no WebGPU adapter.
 */
export async function createWebGPUBackend(
  opts: { device?: GPUDevice; storage?: ElementType } = {},
): Promise<WebGPUBackend> {
  return new WebGPUBackend(opts.device ?? (await sharedDevice()), { storage: opts.storage });
}
