// Loads the AssemblyScript kernels: the relaxed-SIMD build (fused multiply-add) where the
// engine validates it, else the SIMD build, else the scalar one; for threads, the same SIMD
// builds over an imported shared memory. All are embedded (base64) by the build, so the
// bundle needs no file beside it in any runtime.
import {
  RELAXED_THREADS_WASM_BASE64, RELAXED_WASM_BASE64, SCALAR_WASM_BASE64, SIMD_THREADS_WASM_BASE64, SIMD_WASM_BASE64,
} from './wasm.generated.ts';

/**
 * The kernels' parameters, in the order of their exports' positional parameters and named
 * as in their signatures in assembly/*.ts (test/interfaces.test.ts holds the two to each
 * other): the one declaration from which a call's arguments, an object with a value for
 * every name, become the export's argument list (kernelArgs). Pointers are byte offsets
 * into the module's memory.
 */
export const KERNEL_PARAMS = {
  lshKeys: ['x', 'n', 'd', 'proj', 'r', 'mode', 'keys', 'scratch'],
  sortByKey: ['keys', 'count', 'pads', 'numKeys', 'perm', 'scratch'],
  exactAttention: ['q', 'k', 'v', 'nq', 'nk', 'd', 'dv', 'scale', 'causal', 'causalOffset', 'out', 'lse', 'write', 'scratch'],
  fewRowsAttention: ['q', 'k', 'v', 'nq', 'nk', 'd', 'dv', 'scale', 'out', 'lse', 'write', 'scratch'],
  fewRowsAttentionHalf: ['q', 'k', 'v', 'nq', 'nk', 'd', 'dv', 'scale', 'out', 'lse', 'write', 'scratch'],
  widenHalf: ['src', 'dst', 'n'],
  blockAttention: [
    'q', 'k', 'v', 'qPerm', 'kPerm', 'nqSorted', 'nqReal', 'nk', 'd', 'dv', 'scale', 'qBlock', 'kBlock', 'nBlocks',
    'phantomKeys', 'blkFrom', 'blkTo', 'out', 'lse', 'write', 'scratch',
  ],
  sampledAttention: [
    'q', 'k', 'v', 'qPerm', 'kPerm', 'samples', 'm', 'nqSorted', 'nqReal', 'd', 'dv', 'scale', 'qBlock', 'kBlock',
    'nBlocks', 'lseOffset', 'qFrom', 'qTo', 'out', 'lse', 'write', 'scratch',
  ],
  mergeRows: ['dstOut', 'dstLse', 'srcOut', 'srcLse', 'rows', 'dv', 'write'],
  accurateColumns: [
    'q', 'k', 'v', 'nq', 'nk', 'd', 'dv', 'scale', 'cols', 'nCols', 'causal', 'causalOffset', 'qFrom', 'qTo',
    'out', 'lse', 'cnt', 'vsum', 'scratch', 'cache',
  ],
  accurateWindow: [
    'q', 'k', 'v', 'nq', 'nk', 'd', 'dv', 'scale', 'flags', 'winLo', 'win', 'causal', 'causalOffset', 'rowFrom', 'rowTo',
    'out', 'lse', 'cnt', 'vsum', 'scratch',
  ],
  accurateBuckets: [
    'table', 'heads', 'k', 'v', 'nq', 'nk', 'd', 'dv', 'scale', 'kPerm', 'kStarts', 'numKeys', 'cap',
    'winLo', 'win', 'causal', 'causalOffset', 'rounds', 'kTags', 'uFrom', 'uTo', 'scratch',
  ],
  accurateSamples: [
    'q', 'k', 'v', 'nq', 'nk', 'd', 'dv', 'scale', 'samples', 'm', 'qFrom', 'qTo',
    'flags', 'winLo', 'win', 'causal', 'causalOffset', 'rounds', 'qTags', 'kTags', 'sOut', 'sLse', 'cnt', 'vsum', 'scratch', 'cache',
  ],
  bucketTags: ['keys', 'perm', 'count', 'numKeys', 'cap', 'tags', 'starts'],
  remainderSums: ['v', 'nk', 'dv', 'causal', 'starts', 'count', 'sums'],
  remainderMerge: [
    'v', 'nq', 'nk', 'dv', 'causal', 'causalOffset', 'cv', 'rowFrom', 'rowTo', 'start',
    'out', 'lse', 'cntE', 'vsumE', 'sOut', 'sLse', 'cntS', 'vsumS', 'scratch',
  ],
  probeScores: ['q', 'k', 'nk', 'd', 'scale', 'rows', 'nProbe', 'causal', 'causalOffset', 'kFrom', 'kTo', 'scores', 'stats'],
  probeMass: [
    'nk', 'rows', 'nProbe', 'causal', 'causalOffset', 'sinks', 'winLo', 'win', 'kFrom', 'kTo', 'range', 'ranges', 'scores', 'stats', 'mass',
  ],
} as const;

export type KernelName = keyof typeof KERNEL_PARAMS;

/** A parameter of a kernel, by name. */
export type KernelParam<K extends KernelName> = (typeof KERNEL_PARAMS)[K][number];

/** A call's arguments by name; a flag (i32 0 or 1 in the kernel) also takes a boolean. */
export type KernelArgs<K extends KernelName> = { readonly [N in KernelParam<K>]: number | boolean };

/** The export's argument list: the values in declaration order. */
export function kernelArgs<K extends KernelName>(fn: K, args: KernelArgs<K>): number[] {
  return KERNEL_PARAMS[fn].map((name: KernelParam<K>) => {
    const value = args[name];
    // A missing value would reach the kernel as 0 (NaN): a wrong pointer, not an error.
    if (value === undefined) throw new Error(`hyperattention: ${fn}: no value for ${name}`);
    return Number(value);
  });
}

/** Positions of the named parameters in the export's argument list. */
export function kernelArgIndexes<K extends KernelName>(fn: K, names: readonly KernelParam<K>[]): number[] {
  return names.map((name) => (KERNEL_PARAMS[fn] as readonly string[]).indexOf(name));
}

/** The exports of assembly/index.ts: the kernels positional, as KERNEL_PARAMS lists their parameters. */
export type KernelExports = {
  memory: WebAssembly.Memory;
  heapBase(): number;
  attentionScratchBytes(d: number, dv: number, m: number): number;
  tileCacheBytes(d: number, dv: number, nk: number): number;
} & { readonly [K in KernelName]: (...positional: number[]) => void };

/** Calls a kernel with its arguments by name. */
export function callKernel<K extends KernelName>(wasm: KernelExports, fn: K, args: KernelArgs<K>): void {
  wasm[fn](...kernelArgs(fn, args));
}

export type KernelFlavour = 'relaxed' | 'simd' | 'scalar';
/** The builds over a shared memory, for threads. */
export type ThreadedFlavour = 'relaxed-threads' | 'simd-threads';

const SOURCES: Record<KernelFlavour | ThreadedFlavour, string> = {
  relaxed: RELAXED_WASM_BASE64,
  simd: SIMD_WASM_BASE64,
  scalar: SCALAR_WASM_BASE64,
  'relaxed-threads': RELAXED_THREADS_WASM_BASE64,
  'simd-threads': SIMD_THREADS_WASM_BASE64,
};

function decodeBase64(s: string): Uint8Array<ArrayBuffer> {
  const bin = atob(s);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  return bytes;
}

const modules = new Map<KernelFlavour | ThreadedFlavour, Promise<WebAssembly.Module>>();
/** The same modules once compiled, for renewKernels' synchronous instantiation. */
const compiled = new Map<KernelFlavour, WebAssembly.Module>();

/**
 * Linear memory only grows: after a call that needed more than this, its backend swaps in
 * a fresh instance (see renewKernels) so that the old memory can be collected. Below it,
 * keeping the memory saves the regrowth on the next call.
 */
export const RENEW_ABOVE_BYTES = 256 * 1024 * 1024;

let supported: readonly KernelFlavour[] | undefined;

/**
 * Flavours this engine can run, fastest first: validated once (decoding and validating the
 * builds took about 2 ms, and every threaded call asks).
 */
export function supportedFlavours(): KernelFlavour[] {
  supported ??= (['relaxed', 'simd', 'scalar'] as const).filter((f) => WebAssembly.validate(decodeBase64(SOURCES[f])));
  return [...supported];
}

/** The fastest flavour this engine runs. */
export function bestFlavour(): KernelFlavour {
  return supportedFlavours()[0];
}

const IMPORTS = {
  env: {
    abort(_msg: number, _file: number, line: number, column: number) {
      throw new Error(`hyperattention wasm kernel aborted at ${line}:${column}`);
    },
  },
};

/** The threaded build of a flavour, or undefined for the scalar one (engines with threads have SIMD). */
export function threadedFlavour(flavour: KernelFlavour): ThreadedFlavour | undefined {
  return flavour === 'scalar' ? undefined : `${flavour}-threads`;
}

/** A threaded build's bytes, for the workers to compile, and a new shared memory for it. */
export function threadedBuild(flavour: ThreadedFlavour): { bytes: Uint8Array<ArrayBuffer>; memory: WebAssembly.Memory } {
  return {
    bytes: decodeBase64(SOURCES[flavour]),
    // The builds declare 1 initial and 65536 maximum pages (scripts/build.mjs); the memory must match.
    memory: new WebAssembly.Memory({ initial: 1, maximum: 65536, shared: true }),
  };
}

/** The build compiled once; a failed compile (out of memory, say) is forgotten, so that a later call tries again. */
function moduleOf(flavour: KernelFlavour | ThreadedFlavour): Promise<WebAssembly.Module> {
  let module = modules.get(flavour);
  if (!module) {
    module = WebAssembly.compile(decodeBase64(SOURCES[flavour]));
    modules.set(flavour, module);
    module.catch(() => modules.delete(flavour));
  }
  return module;
}

/** The kernels of a threaded build over `memory`, on the calling thread. */
export async function instantiateThreaded(flavour: ThreadedFlavour, memory: WebAssembly.Memory): Promise<KernelExports> {
  const instance = await WebAssembly.instantiate(await moduleOf(flavour), { env: { ...IMPORTS.env, memory } });
  return instance.exports as unknown as KernelExports;
}

export async function instantiateKernels(flavour: KernelFlavour = bestFlavour()): Promise<KernelExports> {
  const ready = await moduleOf(flavour);
  compiled.set(flavour, ready);
  const instance = await WebAssembly.instantiate(ready, IMPORTS);
  return instance.exports as unknown as KernelExports;
}

/**
 * `current` itself while its memory is small, else a fresh instance of the same build
 * (same heap base, initial memory), made synchronously from the compiled module so that a
 * backend can swap it between calls; the old memory is freed once unreferenced. Where the
 * engine refuses synchronous instantiation (a browser's main thread may), keeps `current`.
 */
export function renewKernels(current: KernelExports, flavour: KernelFlavour): KernelExports {
  const module = compiled.get(flavour);
  if (!module || current.memory.buffer.byteLength <= RENEW_ABOVE_BYTES) return current;
  try {
    return new WebAssembly.Instance(module, IMPORTS).exports as unknown as KernelExports;
  } catch {
    return current;
  }
}
