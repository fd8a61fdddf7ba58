// Loads the AssemblyScript kernels: the relaxed-SIMD build (fused multiply-add) where the
// engine validates it, else the SIMD build, else the scalar one; for threads, the same SIMD
// builds over an imported shared memory. All are embedded (base64) by the build, so the
// bundle needs no file beside it in any runtime.
import {
  RELAXED_THREADS_WASM_BASE64, RELAXED_WASM_BASE64, SCALAR_WASM_BASE64, SIMD_THREADS_WASM_BASE64, SIMD_WASM_BASE64,
} from './wasm.generated.ts';

/** The exports of assembly/index.ts; pointers are byte offsets into memory. */
export interface KernelExports {
  memory: WebAssembly.Memory;
  heapBase(): number;
  lshKeys(x: number, n: number, d: number, proj: number, r: number, mode: number, keys: number, scratch: number): void;
  sortByKey(keys: number, count: number, pads: number, numKeys: number, perm: number, scratch: number): void;
  attentionScratchBytes(d: number, dv: number, m: number): number;
  tileCacheBytes(d: number, dv: number, nk: number): number;
  exactAttention(
    q: number, k: number, v: number, nq: number, nk: number, d: number, dv: number, scale: number,
    causal: number, causalOffset: number, out: number, lse: number, write: number, scratch: number,
  ): void;
  blockAttention(
    q: number, k: number, v: number, qPerm: number, kPerm: number, nqSorted: number, nqReal: number, nk: number,
    d: number, dv: number, scale: number, qBlock: number, kBlock: number, nBlocks: number, phantomKeys: number,
    out: number, lse: number, write: number, scratch: number,
  ): void;
  sampledAttention(
    q: number, k: number, v: number, qPerm: number, kPerm: number, samples: number, m: number,
    nqSorted: number, nqReal: number, d: number, dv: number, scale: number, qBlock: number, kBlock: number,
    nBlocks: number, lseOffset: number, qFrom: number, qTo: number, out: number, lse: number, write: number, scratch: number,
  ): void;
  mergeRows(dstOut: number, dstLse: number, srcOut: number, srcLse: number, rows: number, dv: number, write: number): void;
  accurateColumns(
    q: number, k: number, v: number, nq: number, nk: number, d: number, dv: number, scale: number,
    cols: number, nCols: number, causal: number, qFrom: number, qTo: number,
    out: number, lse: number, cnt: number, vsum: number, scratch: number, cache: number,
  ): void;
  accurateWindow(
    q: number, k: number, v: number, nq: number, nk: number, d: number, dv: number, scale: number,
    flags: number, winLo: number, win: number, causal: number, rowFrom: number, rowTo: number,
    out: number, lse: number, cnt: number, vsum: number, scratch: number,
  ): void;
  accurateBuckets(
    q: number, k: number, v: number, nq: number, nk: number, d: number, dv: number, scale: number,
    qPerm: number, kPerm: number, qStarts: number, kStarts: number, numKeys: number, cap: number,
    flags: number, winLo: number, win: number, causal: number, rounds: number, qTags: number, kTags: number,
    uFrom: number, uTo: number, out: number, lse: number, cnt: number, vsum: number, scratch: number,
  ): void;
  accurateSamples(
    q: number, k: number, v: number, nq: number, nk: number, d: number, dv: number, scale: number,
    samples: number, m: number, qFrom: number, qTo: number,
    flags: number, winLo: number, win: number, causal: number, rounds: number, qTags: number, kTags: number,
    sOut: number, sLse: number, cnt: number, vsum: number, scratch: number, cache: number,
  ): void;
  bucketTags(keys: number, perm: number, count: number, numKeys: number, cap: number, tags: number, starts: number): void;
  remainderSums(v: number, nk: number, dv: number, causal: number, starts: number, count: number, sums: number): void;
  remainderMerge(
    v: number, nq: number, nk: number, dv: number, causal: number, cv: number, rowFrom: number, rowTo: number, start: number,
    out: number, lse: number, cntE: number, vsumE: number, sOut: number, sLse: number, cntS: number, vsumS: number,
    scratch: number,
  ): void;
  probeMass(
    q: number, k: number, nq: number, nk: number, d: number, scale: number, rows: number, nProbe: number,
    causal: number, sinks: number, winLo: number, win: number, mass: number, scratch: number,
  ): void;
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

/** Flavours this engine can run, fastest first. */
export function supportedFlavours(): KernelFlavour[] {
  return (['relaxed', 'simd', 'scalar'] as const).filter((f) => WebAssembly.validate(decodeBase64(SOURCES[f])));
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
