// WGSL kernels: each declared once (its source in shaders/, the shared WGSL it is built on,
// and its uniform parameters, src/gpu/params.ts) next to the ops that dispatch it
// (src/gpu/ops/), and composed here into a module with the compile-time constants a
// device and a problem need, the shared codes (src/codes.ts) and its generated struct
// Params; and a per-device cache of the compiled pipelines.
import { KERNEL_CODES } from '../codes.ts';
import { wgslStruct, type ParamsDecl } from './params.ts';
import { SHADERS } from './shaders.generated.ts';

/** Storage type of the attention kernels' Q, K and V (accumulation is always f32). */
export type ElementType = 'f32' | 'f16';

/** What a kernel is compiled for beyond its constants. */
export interface KernelVariant {
  elem: ElementType;
  /** attention tiles through subgroup shuffles instead of workgroup memory */
  subgroups: boolean;
}

export const PLAIN: KernelVariant = { elem: 'f32', subgroups: false };

/** A WGSL kernel: the one declaration its source, pipelines and uniform data come from. */
export interface Kernel<P extends ParamsDecl = ParamsDecl> {
  /** names its pipelines (and, unless `source` says otherwise, shaders/<name>.wgsl) */
  readonly name: string;
  /** shaders/<source>.wgsl holds its entry point main */
  readonly source: string;
  /** shared WGSL (shaders/lib-*.wgsl) it is built on, prepended in this order */
  readonly libraries: readonly string[];
  /** its struct Params, bound as `var<uniform> p: Params` */
  readonly params: P;
  /** compile-time constants of its own, beside those of the device and the problem */
  readonly constants: Readonly<Record<string, number>>;
}

export function kernel<P extends ParamsDecl>(
  name: string,
  o: { libraries: readonly string[]; params: P; source?: string; constants?: Record<string, number> },
): Kernel<P> {
  return { name, source: o.source ?? name, libraries: o.libraries, params: o.params, constants: o.constants ?? {} };
}

/** The libraries of a kernel as compiled: attention kernels get the tiles of the variant unless they name their own. */
function libraries(k: Kernel, variant: KernelVariant): readonly string[] {
  const libs = k.libraries;
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

/** The shared codes as WGSL constants. */
const CODES = Object.entries(KERNEL_CODES).map(([name, value]) => `const ${name}: u32 = ${value}u;`);

/**
 * Full WGSL of a kernel: directives, element alias, u32 constants, the shared codes and
 * struct Params (module-scope declarations may come in any order), libraries, kernel.
 */
export function kernelSource(k: Kernel, constants: Record<string, number>, variant: KernelVariant): string {
  const header = [
    ...(variant.elem === 'f16' ? ['enable f16;'] : []),
    // Shuffles run in loops that are uniform per subgroup, which WGSL cannot prove.
    ...(variant.subgroups ? ['enable subgroups;', 'diagnostic(off, subgroup_uniformity);'] : []),
    `alias elem = ${variant.elem};`,
    ...Object.entries({ ...k.constants, ...constants }).map(([key, value]) => `const ${key}: u32 = ${value}u;`),
    ...CODES,
    wgslStruct(k.params),
  ];
  return [...header, ...libraries(k, variant).map(shaderText), shaderText(k.source)].join('\n');
}

/** Compiled pipelines of one device, keyed by kernel, variant and constants. */
export class PipelineCache {
  private readonly device: GPUDevice;
  private readonly pipelines = new Map<string, GPUComputePipeline>();

  constructor(device: GPUDevice) {
    this.device = device;
  }

  get(k: Kernel, constants: Record<string, number>, variant: KernelVariant = PLAIN): GPUComputePipeline {
    const key = `${k.name}/${variant.elem}${variant.subgroups ? '/subgroups' : ''}/${JSON.stringify(constants)}`;
    let pipeline = this.pipelines.get(key);
    if (!pipeline) {
      const module = this.device.createShaderModule({ label: key, code: kernelSource(k, constants, variant) });
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
