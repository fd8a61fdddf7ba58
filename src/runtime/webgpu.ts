// Finding WebGPU in whichever runtime we are in, and acquiring a device from it. Browsers
// and Deno expose navigator.gpu; Node gets it from the optional `webgpu` package (Dawn),
// loaded by a dynamic import whose specifier is built at run time so that bundlers for
// browsers and Deno (esbuild platform 'neutral') leave it alone and never pull in Node
// built-ins. Without a GPU, Dawn needs a Vulkan ICD such as SwiftShader
// (VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json); that is the caller's
// environment, not ours to set.
import { HyperAttentionError } from '../errors.ts';

let nodeGpu: Promise<GPU | undefined> | undefined;
/** Why there is no WebGPU here, for the UNSUPPORTED message. */
let missing = 'no navigator.gpu in this runtime and no `webgpu` package to load';

function isNode(): boolean {
  const g = globalThis as { process?: { versions?: { node?: string } }; Deno?: unknown };
  // Deno defines process.versions.node too, for npm compatibility; its WebGPU is navigator.gpu
  // (behind --unstable-webgpu), not Dawn's addon.
  return typeof g.process?.versions?.node === 'string' && g.Deno === undefined;
}

/** Where the Vulkan loader looks for drivers (ICD manifests) on Linux, besides the environment. */
function icdFolders(env: Record<string, string | undefined>): string[] {
  const config = (env.XDG_CONFIG_DIRS || '/etc/xdg').split(':');
  const data = (env.XDG_DATA_DIRS || '/usr/local/share:/usr/share').split(':');
  const home = env.HOME ? [`${env.HOME}/.local/share`] : [];
  return [...config, '/etc', ...home, ...data, '/usr/local/share', '/usr/share'].map((d) => `${d}/vulkan/icd.d`);
}

/** Device nodes through which a hardware GPU is reached on Linux: DRM render nodes, NVIDIA's, WSL's. */
const GPU_NODES: [string, RegExp][] = [['/dev/dri', /^renderD\d+$/], ['/dev', /^(nvidia\d+|dxg)$/]];

/**
 * Dawn on Linux runs on Vulkan only, and on a machine without a GPU its first
 * requestAdapter() writes to stderr what the caller cannot silence: Mesa's 'XDG_RUNTIME_DIR
 * is invalid' and Dawn's warnings about a software driver (lavapipe) it then finds. So on
 * Linux it is loaded only where a hardware adapter could exist (a Vulkan manifest in the
 * loader's folders and a GPU device node), or where the environment names a driver
 * (VK_ICD_FILENAMES: how the tests pick SwiftShader). A software adapter found otherwise
 * would not be used by backend 'auto' anyway (the scheduler keeps calls off it).
 */
async function vulkanAdapterMayExist(): Promise<boolean> {
  const g = globalThis as { process?: { platform?: string; env?: Record<string, string | undefined> } };
  if (g.process?.platform !== 'linux') return true;
  const env = g.process.env ?? {};
  if (env.VK_ICD_FILENAMES || env.VK_DRIVER_FILES || env.VK_ADD_DRIVER_FILES) return true;
  try {
    const fs = (await import(/* @vite-ignore */ ['node', 'fs'].join(':'))) as { readdirSync(path: string): string[] };
    const any = (folder: string, name: RegExp) => {
      try {
        return fs.readdirSync(folder).some((f) => name.test(f));
      } catch {
        return false;
      }
    };
    return icdFolders(env).some((folder) => any(folder, /\.json$/)) && GPU_NODES.some(([folder, name]) => any(folder, name));
  } catch {
    return true; // cannot look: let Dawn decide
  }
}

async function loadNodeWebGPU(): Promise<GPU | undefined> {
  const specifier = ['web', 'gpu'].join('');
  if (!(await vulkanAdapterMayExist())) {
    missing = 'no GPU on this Linux machine (no Vulkan driver manifest, or no /dev/dri/renderD*, /dev/nvidia* or /dev/dxg); '
      + 'a software driver is used only when VK_ICD_FILENAMES names it';
    return undefined;
  }
  try {
    // The hint keeps Vite, in applications that bundle this library, from warning here.
    const mod = (await import(/* @vite-ignore */ specifier)) as {
      create: (options: string[]) => GPU;
      globals: Record<string, unknown>;
    };
    // Dawn's GPUBufferUsage, GPUMapMode etc. are only globals once installed.
    for (const [name, value] of Object.entries(mod.globals)) {
      if (!(name in globalThis)) (globalThis as Record<string, unknown>)[name] = value;
    }
    return mod.create([]);
  } catch {
    return undefined;
  }
}

/** navigator.gpu where the runtime has one, else the `webgpu` package in Node, else undefined. */
export function getWebGPU(): Promise<GPU | undefined> {
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  if (nav?.gpu) return Promise.resolve(nav.gpu);
  if (!isNode()) return Promise.resolve(undefined);
  nodeGpu ??= loadNodeWebGPU();
  return nodeGpu;
}

/** Optional features the kernels use when the adapter offers them. */
const WANTED_FEATURES: GPUFeatureName[] = ['shader-f16', 'subgroups'];

/** Limits raised to the adapter's maximum, because the defaults are far below real hardware. */
const WANTED_LIMITS = [
  'maxStorageBufferBindingSize',
  'maxBufferSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxStorageBuffersPerShaderStage',
  'maxComputeWorkgroupsPerDimension',
] as const;

/**
 * A new device on the best adapter (high-performance preference), with every optional
 * feature we can use and the adapter's maximum limits. Rejects with UNSUPPORTED when
 * there is no WebGPU or no adapter.
 */
export async function requestWebGPUDevice(): Promise<GPUDevice> {
  const gpu = await getWebGPU();
  if (!gpu) {
    throw new HyperAttentionError('UNSUPPORTED', `WebGPU: ${missing}`);
  }
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) {
    throw new HyperAttentionError('UNSUPPORTED', 'WebGPU: requestAdapter() found no adapter');
  }
  const requiredFeatures = WANTED_FEATURES.filter((f) => adapter.features.has(f));
  const requiredLimits: Record<string, number> = {};
  for (const name of WANTED_LIMITS) requiredLimits[name] = adapter.limits[name];
  try {
    return await adapter.requestDevice({ requiredFeatures, requiredLimits });
  } catch (cause) {
    throw new HyperAttentionError('UNSUPPORTED', `WebGPU: requestDevice() failed: ${String(cause)}`, { cause });
  }
}
