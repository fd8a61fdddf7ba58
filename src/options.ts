// Options of hyperAttention / exactAttention: types, the authors' defaults, and validation
// that rejects anything malformed (including unknown keys) with a clear error.
import { describeValue } from './describe.ts';
import { HyperAttentionError } from './errors.ts';
import { resolveOutOption, type OutBuffer } from './outbuffer.ts';
import { isTypedArray, ownOptions } from './owned.ts';
import type { Sampler } from './random.ts';

/**
 * `reference` reproduces the authors' code; `fixed` corrects its known defects; `accurate`
 * computes what heads put their mass on exactly and estimates only a flat remainder.
 */
export type Mode = 'reference' | 'fixed' | 'accurate';

export type BackendChoice = 'auto' | 'cpu' | 'webgpu';

export interface Progress {
  /**
   * attention ops finished so far, of total (the same number for every head; exact
   * attention on WebAssembly counts runs of rows of about 40 ms each). Increases with each
   * report and ends at total. A verified call whose heads move to a costlier plan adds
   * that work to total when it starts (so done / total can fall back)
   */
  done: number;
  total: number;
}

/**
 * A WebGPU GPUDevice (typed structurally so that users without @webgpu/types can still
 * compile against this package).
 */
export interface WebGPUDeviceLike {
  readonly queue: object;
  readonly lost: Promise<unknown>;
}

/** A WebGPU GPUBuffer, typed structurally like WebGPUDeviceLike. */
export interface WebGPUBufferLike {
  readonly size: number;
  readonly usage: number;
  destroy(): void;
}

/** Where a call's result lands: host Float32Arrays, or new GPUBuffers on the call's device. */
export type Output = 'host' | 'gpu';

/** The element type of a host result's `out` (lse is always float32). */
export type OutputDtype = 'float32' | 'float16';

export interface ExactOptions {
  /**
   * causal mask, bottom-right aligned: the nq queries are the last nq of the nk key
   * positions (nq <= nk; chunked prefill, decoding), query i sees keys j <= nk - nq + i
   */
  causal?: boolean;
  /** softmax scale; default 1 / sqrt(D) */
  scale?: number;
  /**
   * 'auto' (default): the scheduler picks WebAssembly, WebGPU or the hybrid (and, for
   * hyperAttention without minSeqLen, how much runs exact) from a calibrated profile;
   * 'cpu' and 'webgpu' force a backend
   */
  backend?: BackendChoice;
  /** run on this GPUDevice (implies backend 'webgpu') instead of one the library acquires */
  device?: WebGPUDeviceLike;
  /** 'gpu': out and lse are new GPUBuffers on `device`, owned by the caller (default 'host') */
  output?: Output;
  /**
   * 'float32' (default) or 'float16': out's values rounded to float16 (to nearest, ties to
   * even), as a Float16Array where the runtime has one, else their bits in a Uint16Array;
   * out then says dtype: 'float16'. lse stays float32. A value beyond float16's range
   * (65504) is INPUT_OVERFLOW. Host output only (with output 'gpu': UNSUPPORTED)
   */
  outputDtype?: OutputDtype;
  /**
   * a host array that receives out instead of a new one (src/outbuffer.ts): a Float32Array
   * of B * H * nq * Dv values in the call's layout (with outputDtype 'float16', a
   * Float16Array or a Uint16Array for the bits); the result's out.data is this array. It
   * shares no memory with the inputs, and is neither read nor written until the promise
   * settles (after a rejection its values are undefined). lse is still a new array. Host
   * output only
   */
  out?: OutBuffer;
  /**
   * called as the work progresses: on WebAssembly after each attention op (at least every
   * ~40 ms of exact attention), on WebGPU after each (batch, head) is read back (with
   * output 'gpu': recorded, not necessarily run)
   */
  onProgress?: (p: Progress) => void;
  /**
   * true: the result also holds `profile`, the plan and the measured time of each step. The
   * call then waits for every op to finish before the next, so it runs slower than without.
   */
  profile?: boolean;
  /**
   * 'bhnd' (default): q [B, H, N, D]; 'bnhd': q [B, N, H, D] (k, v likewise) and out
   * [B, N, H, Dv]; lse is [B, H, N] in both. Host tensors only (checked in layout.ts)
   */
  layout?: 'bhnd' | 'bnhd';
  /**
   * WebAssembly threads for this call, 1 to 256: 1 runs on one thread; more split the work
   * over a pool of workers (shared memory: in browsers only on cross-origin-isolated pages,
   * elsewhere one thread), at most one per core the runtime reports: a larger count is
   * accepted and capped at the cores (explain() and a profile's plan report the threads the
   * call runs on, and say that the count was capped). Workers are the pool's, shared by
   * every call: none is started for a count beyond the cores. Results are bit-identical
   * for every count. Default: the global setting (configureThreads), which defaults to the
   * cores the runtime reports, at most 16
   */
  threads?: number;
  /**
   * aborting it rejects the call with code 'ABORTED' within a few ms (the call gives the
   * event loop a turn at least every 5 ms of its work on the calling thread), stops the
   * worker jobs not yet started (a running one ends within about 5 ms) and frees what the
   * call held
   */
  signal?: AbortSignal;
  /**
   * browsers: true (default, see configureThreads) runs the call in the library's worker,
   * so that the page stays responsive; false runs it on the calling thread. Calls with GPU
   * tensors, output 'gpu', a device or a sampler always run on the calling thread. Ignored
   * outside browsers
   */
  worker?: boolean;
}

export interface HyperOptions extends ExactOptions {
  /**
   * b: keys per diagonal block (default 256); in mode 'accurate', the most keys of one LSH
   * bucket computed exactly per round (default 64)
   */
  blockSize?: number;
  /**
   * m: sampled keys per row for the off-block residual (default 256; 0 disables); in mode
   * 'accurate', for the remainder (default 512, causal 1024)
   */
  sampleSize?: number;
  /**
   * r: LSH projections, 1..16 (2^r buckets; default 7); in mode 'accurate' per round, by
   * default about log2(keys / 16), so that buckets hold about 16 keys
   */
  lshNumProjs?: number;
  /**
   * below this many queries (non-causal) or up to this many keys (causal, whatever the
   * number of queries), attention is exact (default 4096); given, it fixes the plan: with
   * backend 'auto' the scheduler may otherwise raise it, up to all exact, where that is
   * predicted faster
   */
  minSeqLen?: number;
  /**
   * 'accurate' (default): the keys a head puts its mass on (sinks, heavy columns, a local
   * window, LSH blocks) exactly, only a flat remainder estimated; 'reference' reproduces
   * the authors' code; 'fixed' corrects its known defects
   */
  mode?: Mode;
  /** accurate mode: the first keys, always computed exactly (attention sinks) */
  sinkKeys?: number;
  /** accurate mode: key columns computed exactly for every query, the heaviest the probe finds (0: no probe) */
  heavyKeys?: number;
  /** accurate mode: query rows attended exactly against all keys to find the heavy columns */
  probeQueries?: number;
  /**
   * accurate mode: keys around each query's key position p (query i at p = nk - nq + i)
   * computed exactly ((p - window, p] when causal, else centred on p; default 64, causal 2048)
   */
  window?: number;
  /**
   * accurate mode: LSH tables, each adding the keys of the query's bucket (0: none; default
   * 1, causal 4)
   */
  lshRounds?: number;
  /**
   * The relative error the caller accepts in each head's `out` (Frobenius norm of the error
   * over that of the exact result), checked per (batch, head) on exact check rows: a head
   * whose error bound (95% confidence) exceeds it moves up to a costlier plan, and in the
   * end to exact attention. Default 0.1 in mode 'accurate'; in the authors' modes no
   * checks unless given. 0: every head exact. Infinity: no checks (the plan alone, as
   * before verification). Host results only: with GPU tensors or output 'gpu' a finite
   * tolerance is rejected (UNSUPPORTED) and the default runs unchecked
   */
  tolerance?: number;
  /**
   * exact check rows per head (8 to 4096); default: about 8% of the plan's own work, at
   * least 32 and at most 256
   */
  checkRows?: number;
  /** seed of the projections and samples when they are not given (default 0) */
  seed?: number;
  /** explicit LSH projections [D, lshNumProjs], row-major (column t is projection t) */
  projections?: Float32Array;
  /** explicit sampler, asked for each draw in order */
  sampler?: Sampler;
}

export interface ResolvedExactOptions {
  causal: boolean;
  scale: number | undefined;
  backend: BackendChoice;
  device: WebGPUDeviceLike | undefined;
  output: Output;
  outputDtype: OutputDtype;
  out: OutBuffer | undefined;
  onProgress: ((p: Progress) => void) | undefined;
  profile: boolean;
  /** undefined: the global setting */
  threads: number | undefined;
  signal: AbortSignal | undefined;
  /** undefined: the global setting */
  worker: boolean | undefined;
}

export interface ResolvedHyperOptions extends ResolvedExactOptions {
  blockSize: number;
  sampleSize: number;
  lshNumProjs: number;
  minSeqLen: number;
  /** whether the caller gave minSeqLen (then the scheduler keeps it) */
  minSeqLenGiven: boolean;
  mode: Mode;
  sinkKeys: number;
  heavyKeys: number;
  probeQueries: number;
  window: number;
  lshRounds: number;
  /** Infinity: no checks (see HyperOptions.tolerance) */
  tolerance: number;
  /** whether the caller gave tolerance */
  toleranceGiven: boolean;
  /** undefined: chosen from the plan (verified.ts) */
  checkRows: number | undefined;
  /**
   * accurate mode: weight of the remainder estimator's control variate (1; 0 leaves it out).
   * Not an option: the accuracy benchmark sets it to measure what the control variate gains.
   */
  controlVariate: number;
  seed: number;
  projections: Float32Array | undefined;
  sampler: Sampler | undefined;
}

/**
 * Largest blockSize and sampleSize: a row's work grows with both (a block of b keys, m
 * sampled keys), and beyond 65536 keys per row either is as slow as exact attention over
 * the longest contexts this library targets; larger values only came from mistakes (2^31
 * wrapped to nothing in 32-bit arithmetic, 2^28 sampled keys ran out of memory). The
 * accurate mode's counts of keys per row (sinkKeys, heavyKeys, window, probeQueries) have
 * the same bound for the same reason.
 */
export const MAX_BLOCK_SIZE = 65536;
export const MAX_SAMPLE_SIZE = 65536;

/** The defaults of the authors' modes ('reference', 'fixed'): the authors' own. */
export const DEFAULTS = {
  blockSize: 256,
  sampleSize: 256,
  lshNumProjs: 7,
  minSeqLen: 4096,
  mode: 'accurate' as Mode,
  seed: 0,
};

/**
 * The accurate mode's defaults, chosen by the sweep in bench/sweep.bench.ts (docs/results.md,
 * "The sweep that chose the accurate mode's defaults"). Causal calls get a wider window, more LSH rounds and more
 * samples: the authors' causal plan computes 4096-key diagonal leaves exactly, so the same
 * time buys more there, and the window also covers the keys a causal segment's samples
 * leave out.
 */
export const ACCURATE_DEFAULTS = {
  /** most keys of one LSH bucket computed exactly per round */
  blockSize: 64,
  sampleSize: 512,
  causalSampleSize: 1024,
  /** 0: chosen from the number of keys, buckets of about BUCKET_KEYS (plan.ts) */
  lshNumProjs: 0,
  sinkKeys: 16,
  heavyKeys: 32,
  probeQueries: 32,
  window: 64,
  causalWindow: 2048,
  lshRounds: 1,
  causalLshRounds: 4,
};

/** The accurate mode's default tolerance: a head's out within 10% of exact (Frobenius). */
export const DEFAULT_TOLERANCE = 0.1;
/** Bounds of checkRows: fewer rows make the error bound useless, more cost like exact attention. */
export const MIN_CHECK_ROWS = 8;
export const MAX_CHECK_ROWS = 4096;

const EXACT_KEYS = [
  'causal', 'scale', 'backend', 'device', 'output', 'outputDtype', 'out', 'onProgress', 'profile', 'layout', 'threads', 'signal', 'worker',
];

/** Most WebAssembly threads a call may ask for. */
export const MAX_THREADS = 256;
const HYPER_KEYS = [
  ...EXACT_KEYS, 'blockSize', 'sampleSize', 'lshNumProjs', 'minSeqLen', 'mode', 'seed', 'projections', 'sampler',
  'sinkKeys', 'heavyKeys', 'probeQueries', 'window', 'lshRounds', 'tolerance', 'checkRows',
];
const ACCURATE_KEYS = ['sinkKeys', 'heavyKeys', 'probeQueries', 'window', 'lshRounds'] as const;

function fail(message: string): never {
  throw new HyperAttentionError('INVALID_OPTION', message);
}

function integer(name: string, value: unknown, fallback: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    fail(`${name}: expected an integer in [${min}, ${max === Number.MAX_SAFE_INTEGER ? 'inf' : max}], got ${describeValue(value)}`);
  }
  return value;
}

export function resolveExactOptions(options: ExactOptions = {}, allowed = EXACT_KEYS): ResolvedExactOptions {
  options = ownOptions(options, allowed) as ExactOptions;
  // Only undefined means "the default": null is a mistake for every option alike.
  for (const key of allowed) {
    if ((options as Record<string, unknown>)[key] === null) fail(`${key}: got null; leave it out (or undefined) for the default`);
  }
  const { causal = false, scale, device, output = 'host', outputDtype = 'float32', onProgress, profile = false, signal, worker } = options;
  const backend = options.backend ?? (device ? 'webgpu' : 'auto');
  if (typeof causal !== 'boolean') fail(`causal: expected a boolean, got ${describeValue(causal)}`);
  // The kernels compute in float32: 1e39 would be Infinity there (all NaN), 1e-50 zero.
  if (scale !== undefined && (typeof scale !== 'number' || !(Math.fround(scale) > 0) || !Number.isFinite(Math.fround(scale)))) {
    fail(`scale: expected a finite positive number, also in float32 (about 1.4e-45 to 3.4e38), got ${describeValue(scale)}`);
  }
  if (!['auto', 'cpu', 'webgpu'].includes(backend)) fail(`backend: expected 'auto', 'cpu' or 'webgpu', got ${describeValue(backend)}`);
  if (device !== undefined) {
    if (!isGPUDevice(device)) {
      fail(`device: expected a GPUDevice, got ${describeValue(device)}`);
    }
    if (backend !== 'webgpu') fail(`device: a GPUDevice runs on backend 'webgpu', but backend is '${backend}'`);
  }
  if (output !== 'host' && output !== 'gpu') fail(`output: expected 'host' or 'gpu', got ${describeValue(output)}`);
  if (outputDtype !== 'float32' && outputDtype !== 'float16') fail(`outputDtype: expected 'float32' or 'float16', got ${describeValue(outputDtype)}`);
  if (onProgress !== undefined && typeof onProgress !== 'function') fail(`onProgress: expected a function, got ${describeValue(onProgress)}`);
  if (typeof profile !== 'boolean') fail(`profile: expected a boolean, got ${describeValue(profile)}`);
  const threads = options.threads === undefined ? undefined : integer('threads', options.threads, 1, 1, MAX_THREADS);
  if (signal !== undefined && !isAbortSignal(signal)) fail(`signal: expected an AbortSignal, got ${describeValue(signal)}`);
  if (worker !== undefined && typeof worker !== 'boolean') fail(`worker: expected a boolean, got ${describeValue(worker)}`);
  const out = resolveOutOption(options.out, output, outputDtype);
  const resolved = { causal, scale, backend, device, output, outputDtype, out, onProgress, profile, threads, signal, worker };
  if (output === 'gpu') checkDeviceIO(resolved, "output 'gpu'");
  if (output === 'gpu' && outputDtype === 'float16') {
    throw new HyperAttentionError('UNSUPPORTED', "outputDtype 'float16': results on the device are float32 buffers; use output 'host', or leave outputDtype out");
  }
  return resolved;
}

/**
 * An AbortSignal, checked by shape so that a signal from another realm (a polyfill, a worker)
 * is taken too: everything the library calls on it (aborted, add and removeEventListener).
 */
function isAbortSignal(value: unknown): value is AbortSignal {
  return typeof value === 'object' && value !== null && typeof (value as AbortSignal).aborted === 'boolean' &&
    typeof (value as AbortSignal).addEventListener === 'function' && typeof (value as AbortSignal).removeEventListener === 'function';
}

/** What the WebGPU backend calls on a caller's GPUDevice, so that a look-alike fails here and not midway through a call. */
const DEVICE_METHODS = [
  'createBuffer', 'createBindGroup', 'createCommandEncoder', 'createComputePipeline', 'createShaderModule', 'pushErrorScope', 'popErrorScope',
] as const;
const QUEUE_METHODS = ['submit', 'writeBuffer', 'onSubmittedWorkDone'] as const;

export function isGPUDevice(value: unknown): value is WebGPUDeviceLike {
  const device = value as Record<string, unknown> & { queue?: Record<string, unknown>; lost?: { then?: unknown } };
  return typeof value === 'object' && value !== null && DEVICE_METHODS.every((m) => typeof device[m] === 'function') &&
    typeof device.queue === 'object' && device.queue !== null && QUEUE_METHODS.every((m) => typeof device.queue![m] === 'function') &&
    typeof device.lost?.then === 'function' && typeof device.limits === 'object' && device.limits !== null;
}

/**
 * GPU tensors in or out (`what` names one) run on the caller's device: buffers belong to
 * one device, and the library's own device could neither read the caller's nor hand back
 * buffers the caller can use.
 */
export function checkDeviceIO(o: ResolvedExactOptions, what: string): void {
  if (o.backend === 'cpu') fail(`${what} needs backend 'webgpu', but backend is 'cpu'`);
  if (!o.device) fail(`${what} needs the GPUDevice the buffers belong to: pass it as the 'device' option`);
}

export function resolveHyperOptions(options: HyperOptions = {}): ResolvedHyperOptions {
  options = ownOptions(options, HYPER_KEYS) as HyperOptions;
  const base = resolveExactOptions(options, HYPER_KEYS);
  const mode = options.mode ?? DEFAULTS.mode;
  if (mode !== 'reference' && mode !== 'fixed' && mode !== 'accurate') {
    fail(`mode: expected 'accurate', 'reference' or 'fixed', got ${describeValue(mode)}`);
  }
  const accurate = mode === 'accurate';
  if (!accurate) {
    const given = ACCURATE_KEYS.find((key) => options[key] !== undefined);
    if (given) fail(`${given}: an option of mode 'accurate', but mode is '${mode}'`);
  }
  const fallback = accurate ? ACCURATE_DEFAULTS : DEFAULTS;
  /** The accurate mode's default for a causal call, where it has its own. */
  const byCausal = (value: number, causal: number) => (accurate && base.causal ? causal : value);
  const most = MAX_BLOCK_SIZE;
  const { projections, sampler } = options;
  if (projections !== undefined && !isTypedArray(projections, 'Float32Array')) {
    fail(`projections: expected a Float32Array [D, lshNumProjs], got ${describeValue(projections)}`);
  }
  if (sampler !== undefined && typeof sampler !== 'function') fail(`sampler: expected a function, got ${describeValue(sampler)}`);
  const { tolerance } = options;
  if (tolerance !== undefined && (typeof tolerance !== 'number' || Number.isNaN(tolerance) || tolerance < 0)) {
    fail(`tolerance: expected a number >= 0 (Infinity: no checks), got ${describeValue(tolerance)}`);
  }
  const onDevice = base.output === 'gpu';
  if (onDevice && tolerance !== undefined && tolerance !== Infinity) {
    throw new HyperAttentionError('UNSUPPORTED', `tolerance ${tolerance}: checks need host results, not output 'gpu'; leave tolerance out or pass Infinity`);
  }
  return {
    ...base,
    blockSize: integer('blockSize', options.blockSize, fallback.blockSize, 1, MAX_BLOCK_SIZE),
    sampleSize: integer('sampleSize', options.sampleSize, byCausal(fallback.sampleSize, ACCURATE_DEFAULTS.causalSampleSize), 0, MAX_SAMPLE_SIZE),
    lshNumProjs: integer('lshNumProjs', options.lshNumProjs, fallback.lshNumProjs, 1, 16),
    minSeqLen: integer('minSeqLen', options.minSeqLen, DEFAULTS.minSeqLen, 0),
    minSeqLenGiven: options.minSeqLen !== undefined,
    mode,
    sinkKeys: integer('sinkKeys', options.sinkKeys, ACCURATE_DEFAULTS.sinkKeys, 0, most),
    heavyKeys: integer('heavyKeys', options.heavyKeys, ACCURATE_DEFAULTS.heavyKeys, 0, most),
    probeQueries: integer('probeQueries', options.probeQueries, ACCURATE_DEFAULTS.probeQueries, 1, most),
    window: integer('window', options.window, byCausal(ACCURATE_DEFAULTS.window, ACCURATE_DEFAULTS.causalWindow), 0, most),
    lshRounds: integer('lshRounds', options.lshRounds, byCausal(ACCURATE_DEFAULTS.lshRounds, ACCURATE_DEFAULTS.causalLshRounds), 0, 8),
    tolerance: tolerance ?? (accurate && !onDevice ? DEFAULT_TOLERANCE : Infinity),
    toleranceGiven: tolerance !== undefined,
    checkRows: options.checkRows === undefined ? undefined : integer('checkRows', options.checkRows, 0, MIN_CHECK_ROWS, MAX_CHECK_ROWS),
    controlVariate: 1,
    seed: integer('seed', options.seed, DEFAULTS.seed, 0, 0xffffffff),
    // A copy: the caller's array may change while the call runs.
    projections: projections && new Float32Array(projections),
    sampler: sampler && checkedSampler(sampler),
  };
}

/**
 * The caller's sampler, its output checked before the algorithm sees it, with messages that
 * describe a wrong value instead of printing it (a plain array of 70000 numbers, a BigInt).
 * Errors the sampler itself throws pass through as they are.
 */
function checkedSampler(sampler: Sampler): Sampler {
  return (request) => {
    const given: unknown = sampler(request);
    const { index, batch, heads, count, high } = request;
    const expected = batch * heads * count;
    const wanted = `sampler: draw ${index} ([${batch}, ${heads}, ${count}] over [0, ${high})) must return an Int32Array of ${expected} values`;
    if (!isTypedArray(given, 'Int32Array')) throw new HyperAttentionError('INVALID_SAMPLER_OUTPUT', `${wanted}, got ${describeValue(given)}`);
    // (A detached array has length 0: it fails here, before the copy could throw.)
    if (given.length !== expected || given.byteLength !== expected * 4) {
      throw new HyperAttentionError('INVALID_SAMPLER_OUTPUT', `${wanted}, got length ${given.byteLength / 4}`);
    }
    // Checked and used as one copy: the caller may refill or change its array while the call runs.
    const s = new Int32Array(given);
    for (let i = 0; i < s.length; i++) {
      if (s[i] < 0 || s[i] >= high) {
        throw new HyperAttentionError('INVALID_SAMPLER_OUTPUT', `sampler: draw ${index} value ${i} is ${s[i]}, outside [0, ${high})`);
      }
    }
    return s;
  };
}
