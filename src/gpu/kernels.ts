// WGSL sources of the kernels, composed from shaders/*.wgsl (embedded at build time into
// shaders.generated.ts) with the compile-time constants a device and a problem need,
// and a per-device cache of the compiled pipelines.
import { SHADERS } from './shaders.generated.ts';

export type KernelName =
  | 'exact'
  | 'block'
  | 'sampled'
  | 'accurate'
  | 'accurate-round'
  | 'probe'
  | 'heavy'
  | 'buckets'
  | 'remainder'
  | 'merge'
  | 'hash'
  | 'sort-count'
  | 'sort-scan'
  | 'sort-scatter'
  | 'to-f16';

/** Storage type of the attention kernels' Q, K and V (accumulation is always f32). */
export type ElementType = 'f32' | 'f16';

/** What a kernel is compiled for beyond its constants. */
export interface KernelVariant {
  elem: ElementType;
  /** attention tiles through subgroup shuffles instead of workgroup memory */
  subgroups: boolean;
}

export const PLAIN: KernelVariant = { elem: 'f32', subgroups: false };

/** Shared WGSL each kernel is built on, prepended in this order. */
const LIBRARIES: Record<KernelName, readonly string[]> = {
  exact: ['lib-common', 'lib-attention'],
  block: ['lib-common', 'lib-attention'],
  sampled: ['lib-common', 'lib-attention'],
  accurate: ['lib-common', 'lib-attention'],
  // Rows of a workgroup see different keys: no shared tiles.
  'accurate-round': ['lib-common', 'lib-attention', 'lib-tiles-own'],
  probe: ['lib-common'],
  heavy: [],
  buckets: ['lib-common'],
  remainder: ['lib-common'],
  merge: ['lib-common'],
  hash: ['lib-common'],
  'sort-count': ['lib-common'],
  'sort-scan': [],
  'sort-scatter': ['lib-common'],
  'to-f16': ['lib-common'],
};

/** Kernels that are another's source composed differently. */
const SOURCES: Partial<Record<KernelName, string>> = { 'accurate-round': 'accurate' };

function libraries(name: KernelName, variant: KernelVariant): readonly string[] {
  const libs = LIBRARIES[name];
  if (!libs.includes('lib-attention') || libs.some((lib) => lib.startsWith('lib-tiles-'))) return libs;
  return [...libs, variant.subgroups ? 'lib-tiles-subgroup' : 'lib-tiles-workgroup'];
}

function shaderText(name: string): string {
  const text = SHADERS[name];
  if (text === undefined) {
    throw new Error(`hyperattention: shaders/${name}.wgsl is not in src/gpu/shaders.generated.ts; run npm run build`);
  }
  return text;
}

/** Full WGSL of a kernel: header (directives, element alias, u32 constants), libraries, kernel. */
export function kernelSource(name: KernelName, constants: Record<string, number>, variant: KernelVariant): string {
  const header = [
    ...(variant.elem === 'f16' ? ['enable f16;'] : []),
    // Shuffles run in loops that are uniform per subgroup, which WGSL cannot prove.
    ...(variant.subgroups ? ['enable subgroups;', 'diagnostic(off, subgroup_uniformity);'] : []),
    `alias elem = ${variant.elem};`,
    ...Object.entries(constants).map(([key, value]) => `const ${key}: u32 = ${value}u;`),
  ];
  return [...header, ...libraries(name, variant).map(shaderText), shaderText(SOURCES[name] ?? name)].join('\n');
}

/** Compiled pipelines of one device, keyed by kernel, variant and constants. */
export class PipelineCache {
  private readonly device: GPUDevice;
  private readonly pipelines = new Map<string, GPUComputePipeline>();

  constructor(device: GPUDevice) {
    this.device = device;
  }

  get(name: KernelName, constants: Record<string, number>, variant: KernelVariant = PLAIN): GPUComputePipeline {
    const key = `${name}/${variant.elem}${variant.subgroups ? '/subgroups' : ''}/${JSON.stringify(constants)}`;
    let pipeline = this.pipelines.get(key);
    if (!pipeline) {
      const module = this.device.createShaderModule({ label: key, code: kernelSource(name, constants, variant) });
      pipeline = this.device.createComputePipeline({ label: key, layout: 'auto', compute: { module, entryPoint: 'main' } });
      this.pipelines.set(key, pipeline);
    }
    return pipeline;
  }
}

const caches = new WeakMap<GPUDevice, PipelineCache>();

/** The one pipeline cache of a device, shared by every backend on it. */
export function pipelineCache(device: GPUDevice): PipelineCache {
  let cache = caches.get(device);
  if (!cache) {
    cache = new PipelineCache(device);
    caches.set(device, cache);
  }
  return cache;
}

/**
 * Keys per K/V tile for head dims d, dv: the largest power of two up to 32 whose two
 * tiles (vec4-padded rows) fit the device's workgroup memory.
 */
export function keysPerTile(d: number, dv: number, workgroupStorageBytes: number): number {
  const bytesPerKey = 16 * (Math.ceil(d / 4) + Math.ceil(dv / 4));
  let bk = 32;
  while (bk > 1 && bk * bytesPerKey > workgroupStorageBytes) bk /= 2;
  return bk;
}
