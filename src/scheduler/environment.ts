// The environment the scheduler plans for: the runtime, the CPU and the WebAssembly build,
// the GPU adapter if there is one (what a profile is measured on and keyed by), and the
// backends that calibration measures.
import { acquireCpu, gpuBackend, madeOnce } from '../backends.ts';
import type { CpuBackend } from '../cpu/backend.ts';
import { HyperAttentionError } from '../errors.ts';
import type { WebGPUBackend } from '../gpu/index.ts';
import { threadsFor } from '../threads/config.ts';
import type { Environment } from './profile.ts';

/** The devices calls may run on here, and the environment a profile is measured in. */
export interface Devices {
  cpu: CpuBackend;
  gpu: WebGPUBackend | undefined;
  env: Environment;
}

let sharedDevices: Promise<Devices> | undefined;

function runtimeName(): string {
  const g = globalThis as {
    Deno?: { version?: { deno?: string } };
    process?: { versions?: { node?: string } };
    navigator?: { userAgent?: string };
  };
  if (g.Deno?.version?.deno) return `deno ${g.Deno.version.deno}`;
  if (g.process?.versions?.node) return `node ${g.process.versions.node}`;
  return g.navigator?.userAgent ?? 'unknown runtime';
}

/**
 * A Node built-in (also in Deno, through its Node compatibility). The specifier is built at
 * run time, like the `webgpu` import, so that browser bundles leave it alone and never name it.
 */
export function nodeBuiltin<T>(name: string): Promise<T> {
  const specifier = ['node', name].join(':');
  return import(/* @vite-ignore */ specifier) as Promise<T>;
}

let cpuModelOnce: Promise<{ name: string; count: number } | undefined> | undefined;

/** The CPU's model and count where the runtime has node:os (Node, Deno); browsers do not tell. */
function cpuModel(): Promise<{ name: string; count: number } | undefined> {
  cpuModelOnce ??= (async () => {
    const g = globalThis as { process?: { versions?: { node?: string } }; Deno?: unknown };
    if (!g.process?.versions?.node && !g.Deno) return undefined;
    try {
      const cpus = (await nodeBuiltin<{ cpus(): { model: string }[] }>('os')).cpus();
      return cpus.length > 0 ? { name: `${cpus[0].model.trim()} x${cpus.length}`, count: cpus.length } : undefined;
    } catch {
      return undefined;
    }
  })();
  return cpuModelOnce;
}

export async function environmentOf(cpu: CpuBackend, gpu: WebGPUBackend | undefined): Promise<Environment> {
  const model = await cpuModel();
  const threads = (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator?.hardwareConcurrency ?? model?.count;
  let adapter: Environment['adapter'] = null;
  if (gpu) {
    const info: Partial<GPUAdapterInfo> & { isFallbackAdapter?: boolean } = (gpu.device as Partial<GPUDevice>).adapterInfo ?? {};
    const identity = {
      vendor: info.vendor ?? '', architecture: info.architecture ?? '', device: info.device ?? '', description: info.description ?? '',
    };
    // Not every runtime reports isFallbackAdapter; the software rasterisers name themselves.
    const named = /swiftshader|llvmpipe|lavapipe|softpipe|warp|basic render/i.test(Object.values(identity).join(' '));
    adapter = {
      ...identity,
      fallback: info.isFallbackAdapter === true || named,
      maxBufferBytes: gpu.device.limits.maxBufferSize,
      maxBindingBytes: gpu.device.limits.maxStorageBufferBindingSize,
    };
  }
  return {
    runtime: runtimeName(), wasm: cpu.flavour, cpu: model?.name ?? null, threads: typeof threads === 'number' ? threads : null,
    wasmThreads: cpu.threads, adapter,
  };
}

/** The WebAssembly backend calibration measures: on the default thread count (the pool's, where the runtime has threads). */
export const measuredCpu = madeOnce(async () => acquireCpu(await threadsFor(undefined)));

/** The WebAssembly backend calibration measures, and the shared WebGPU one, when the runtime has an adapter. */
export async function devicesAtHand(): Promise<Devices> {
  const known = await sharedDevices?.catch(() => undefined);
  if (known && !known.gpu?.isLost) return known;
  sharedDevices = (async () => {
    const cpu = await measuredCpu();
    const gpu = await gpuBackend().catch((error: unknown) => {
      if (error instanceof HyperAttentionError && error.code === 'UNSUPPORTED') return undefined;
      throw error;
    });
    return { cpu, gpu, env: await environmentOf(cpu, gpu) };
  })();
  return sharedDevices;
}
