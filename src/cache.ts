// A key-value cache that stays in the backend's memory: keys and values are copied in once,
// as they are appended, and every call on the cache (hyperAttention(q, cache),
// exactAttention(q, cache), src/index.ts) uploads only its queries. On WebAssembly the
// cache's buffers are the bottom of a memory of its own (shared with the thread pool's
// workers when calls run on threads); on WebGPU they are device buffers of their own on
// the backend's device. Both are kept between calls; docs/cache.md.
import { dropCpu, gpuBackend, ownCpu, serialize } from './backends.ts';
import type { CpuBackend } from './cpu/backend.ts';
import type { WebGPUBackend } from './gpu/index.ts';
import { describeValue } from './describe.ts';
import { HyperAttentionError, typedFailure, typedFailures } from './errors.ts';
import type { ResidentRows } from './hyper.ts';
import type { Verification } from './verification.ts';
import type { BackendBuffer } from './ops.ts';
import { isGPUDevice, MAX_THREADS, type BackendChoice, type WebGPUDeviceLike } from './options.ts';
import { ColumnMassIndex, KeyCodeIndex } from './keyindex.ts';
import { ownOptions } from './owned.ts';
import { decodeFloat16, encodeFloat16 } from './float16.ts';
import { inSlices, SLICE_ELEMENTS } from './slices.ts';
import { decodeInput, finiteMaxAbs, isHostTensor, MAX_HEAD_DIM, toInputTensor, type HalfInput, type Tensor, type TensorLike } from './tensor.ts';
import { threadsFor } from './threads/config.ts';

export interface KVCacheOptions {
  /** batch entries (default 1) */
  batch?: number;
  /** key-value heads: queries of a call may have any multiple of them (grouped-query attention) */
  kvHeads: number;
  /** head dim of queries and keys */
  headDim: number;
  /** head dim of values (default headDim) */
  valueDim?: number;
  /** the most tokens the cache holds: its memory is reserved when it is made */
  capacity: number;
  /**
   * where keys and values live and calls on the cache run: 'cpu' (WebAssembly), 'webgpu'
   * (device buffers; UNSUPPORTED without WebGPU), or 'auto' (default: WebAssembly)
   */
  backend?: BackendChoice;
  /** keep the cache on this GPUDevice (implies backend 'webgpu') instead of the library's own */
  device?: WebGPUDeviceLike;
  /**
   * how keys and values are stored: 'float32' (default), or 'float16' (backend 'cpu' only:
   * IEEE binary16, half the memory and half the bytes a decode step reads; appended values
   * are rounded to nearest even, and calls compute in float32 on the rounded values, see
   * docs/cache.md)
   */
  dtype?: KVCacheDtype;
  /** WebAssembly threads the cache's calls run on (default: configureThreads' setting) */
  threads?: number;
}

/** How a cache stores keys and values. */
export type KVCacheDtype = 'float32' | 'float16';

const OPTION_KEYS = ['batch', 'kvHeads', 'headDim', 'valueDim', 'capacity', 'backend', 'device', 'dtype', 'threads'];

/**
 * The most bytes a cache's keys and values may take: WebAssembly memory ends at 4 GiB, and
 * calls need room above the cache for their own buffers.
 */
const MAX_CACHE_BYTES = 3 * 2 ** 30;

/**
 * What calls on a cache use of it (src/index.ts); never part of the public API.
 * @internal
 */
export interface CacheState {
  backend: CpuBackend | WebGPUBackend;
  k: ResidentRows;
  v: ResidentRows;
  /** operations on the cache (calls, appends), started and not settled */
  busy: number;
  /** settles when the last operation queued on the cache is done (see enqueue) */
  queue: Promise<void>;
  /** the largest |value| among the first n tokens' keys and values */
  maxAbs(n: number): { k: number; v: number };
  /** which query heads missed the tolerance on the last verified calls (see exactFirstHeads) */
  misses?: HeadMisses;
}

/**
 * Per flat query head of verified calls with `heads` heads at `tolerance`: how many calls
 * in a row it has run exact attention without trying a plan (-1: a plan met the tolerance
 * on its last try, or it was never tried), and how many it is to run so before it tries
 * again.
 */
interface HeadMisses {
  heads: number;
  tolerance: number;
  skips: Int32Array;
  wait: Int32Array;
}

/**
 * Calls in a row a head that missed the tolerance runs exact attention at once, before it
 * tries its plans again; each try that misses again doubles it, up to MAX_WAIT. The chunks
 * of a prompt see the same heads: a head whose attention no plan approximates on one chunk
 * (diffuse, or a retrieval head LSH misses) mostly misses on the next, and its plans would
 * be paid for and then exact attention too; the tries find a head that has changed.
 */
const FIRST_WAIT = 3;
const MAX_WAIT = 48;

/**
 * The flat query heads a verified call on the cache runs exact attention for at once:
 * those that missed `tolerance` with every plan on their last try, on calls with as many
 * heads, until their wait is over.
 * @internal
 */
export function exactFirstHeads(state: CacheState, heads: number, tolerance: number): Set<number> {
  const m = state.misses;
  const first = new Set<number>();
  if (!m || m.heads !== heads || m.tolerance !== tolerance) return first;
  for (let h = 0; h < heads; h++) if (m.skips[h] >= 0 && m.skips[h] < m.wait[h]) first.add(h);
  return first;
}

/**
 * Records what a verified call on the cache found of each head (its verification), for
 * exactFirstHeads. A call that checked nothing (an exact plan) changes nothing.
 * @internal
 */
export function rememberHeads(state: CacheState, verification: Verification): void {
  if (verification.checkRows === 0) return;
  const heads = verification.heads.length;
  let m = state.misses;
  if (!m || m.heads !== heads || m.tolerance !== verification.tolerance) {
    m = state.misses = { heads, tolerance: verification.tolerance, skips: new Int32Array(heads).fill(-1), wait: new Int32Array(heads) };
  }
  for (const [h, head] of verification.heads.entries()) {
    if (head.predicted) {
      m.skips[h]++;
    } else if (head.plan === 'exact' && head.tried.length > 1) {
      // Missed: a first miss waits FIRST_WAIT calls, a miss on a try twice the last wait.
      m.wait[h] = m.skips[h] >= 0 ? Math.min(MAX_WAIT, 2 * m.wait[h]) : FIRST_WAIT;
      m.skips[h] = 0;
    } else {
      m.skips[h] = -1;
    }
  }
}

const states = new WeakMap<KVCache, CacheState>();

/**
 * Keys [B, Hkv, length, headDim] and values [B, Hkv, length, valueDim] kept in a backend's
 * memory, up to `capacity` tokens. Make one with createKVCache; free it with release().
 */
export class KVCache {
  readonly batch: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly valueDim: number;
  readonly capacity: number;
  /** where its keys and values live, and its calls run */
  readonly backend: 'cpu' | 'webgpu';
  /** how its keys and values are stored */
  readonly dtype: KVCacheDtype;
  private tokens = 0;
  /** per token, the largest |k| and |v| of its append (the call's overflow bounds) */
  private readonly kMax: Float32Array;
  private readonly vMax: Float32Array;

  /** Use createKVCache: it reserves the backend memory this needs. */
  private constructor(o: Resolved, backend: CpuBackend | WebGPUBackend, k: BackendBuffer, v: BackendBuffer) {
    this.batch = o.batch;
    this.kvHeads = o.kvHeads;
    this.headDim = o.headDim;
    this.valueDim = o.valueDim;
    this.capacity = o.capacity;
    this.backend = backend.name;
    this.dtype = o.dtype;
    this.kMax = new Float32Array(o.capacity);
    this.vMax = new Float32Array(o.capacity);
    states.set(this, {
      backend,
      k: {
        resident: k, stride: o.capacity,
        ...(backend.name === 'cpu' ? { codes: new KeyCodeIndex(o.batch * o.kvHeads), masses: new ColumnMassIndex() } : {}),
      },
      v: { resident: v, stride: o.capacity },
      busy: 0,
      queue: Promise.resolve(),
      maxAbs: (n) => ({ k: maxOf(this.kMax, n), v: maxOf(this.vMax, n) }),
    });
  }

  /** @internal */
  static async create(o: Resolved): Promise<KVCache> {
    const rows = o.batch * o.kvHeads * o.capacity;
    if (o.backend === 'webgpu') {
      const gpu = await gpuBackend(o.device);
      const k = gpu.createLasting('f32', rows * o.headDim);
      try {
        const v = gpu.createLasting('f32', rows * o.valueDim);
        gpu.submit();
        return new KVCache(o, gpu, k, v);
      } catch (error) {
        gpu.dropLasting(k);
        throw error;
      }
    }
    const cpu = await ownCpu(await threadsFor(o.threads));
    const kind = o.dtype === 'float16' ? 'f16' : 'f32';
    try {
      return new KVCache(o, cpu, cpu.createLasting(kind, rows * o.headDim), cpu.createLasting(kind, rows * o.valueDim));
    } catch (error) {
      dropCpu(cpu);
      throw error;
    }
  }

  /** Tokens held now. */
  get length(): number {
    return this.tokens;
  }

  /** Whether release() has freed the cache. */
  get released(): boolean {
    return !states.has(this);
  }

  /**
   * Copies k [B, Hkv, t, headDim] and v [B, Hkv, t, valueDim] (host tensors, as the calls
   * take them) behind the tokens held. The copy waits for the operations queued on the
   * cache before it (calls, appends) and runs in time slices, so a long chunk never holds
   * the caller's thread; calls made after append() see its tokens. The caller's arrays are
   * read until the promise settles (do not change them before) and not kept after.
   */
  append(k: TensorLike, v: TensorLike): Promise<void> {
    try {
      const state = openCache(this);
      const kt = this.checkRows('k', k, this.headDim);
      const vt = this.checkRows('v', v, this.valueDim);
      if (vt.shape[2] !== kt.shape[2]) {
        throw new HyperAttentionError('CACHE_MISMATCH', `k and v hold different token counts: k ${JSON.stringify(kt.shape)}, v ${JSON.stringify(vt.shape)}`);
      }
      const copy = () => this.copyIn(state, kt, vt);
      // On WebGPU the copies are recorded on the backend's device: they take turns with its calls.
      return typedFailures(enqueue(state, state.backend.name === 'webgpu' ? () => serialize(copy) : copy));
    } catch (error) {
      return Promise.reject(typedFailure(error));
    }
  }

  /**
   * append's work, in its turn: every value checked and copied in one pass, slice by slice
   * (for float16 storage rounded to nearest even on the way; a float16 input's values come
   * back as the same bits).
   */
  private async copyIn(state: CacheState, kIn: Tensor | HalfInput, vIn: Tensor | HalfInput): Promise<void> {
    const t = kIn.shape[2];
    if (this.tokens + t > this.capacity) {
      throw new HyperAttentionError('CACHE_FULL', `appending ${t} tokens to the ${this.tokens} held would pass the capacity of ${this.capacity}; truncate() or make a larger cache`);
    }
    const at = this.tokens;
    const max = { k: 0, v: 0 };
    const half = this.dtype === 'float16';
    // float16 inputs are decoded first, in time slices too.
    const kt = await decodeInput(kIn, {});
    const vt = await decodeInput(vIn, {});
    for (const [name, rows, t3, width] of [['k', state.k, kt, this.headDim], ['v', state.v, vt, this.valueDim]] as const) {
      const bits = half ? new Uint16Array(t3.data.length) : undefined;
      for (let g = 0; g < this.batch * this.kvHeads; g++) {
        const start = g * t * width;
        // Past the tokens held until the last slice is in: a failed append leaves the cache as it was.
        await inSlices(t * width, SLICE_ELEMENTS, (from, to) => {
          const piece = t3.data.subarray(start + from, start + to);
          max[name] = Math.max(max[name], finiteMaxAbs(name, piece, start + from));
          const offset = (g * rows.stride + at) * width + from;
          if (!bits) return state.backend.upload(rows.resident, piece, offset);
          // Only WebAssembly caches store float16 (resolve).
          const stored = encodeFloat16(name, FLOAT16_REMEDY, t3.data, start + from, start + to, bits).subarray(start + from, start + to);
          (state.backend as CpuBackend).upload(rows.resident, stored, offset);
        });
      }
      // Rounding is monotonic: the largest stored magnitude is the largest input's, rounded.
      if (half) max[name] = decodeFloat16(name, encodeFloat16(name, FLOAT16_REMEDY, Float32Array.of(max[name])))[0];
    }
    // On WebGPU the copies are submitted now: a call that fails later drops only its own commands.
    if (state.backend.name === 'webgpu') state.backend.submit();
    this.kMax.fill(max.k, at, at + t);
    this.vMax.fill(max.v, at, at + t);
    this.tokens = at + t;
  }

  /** Keeps the first n tokens and drops the rest (rejected speculative drafts, say). */
  truncate(n: number): void {
    const state = this.idle('truncate');
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 0 || n > this.tokens) {
      throw new HyperAttentionError('INVALID_OPTION', `truncate: expected an integer in [0, ${this.tokens}] (the tokens held), got ${describeValue(n)}`);
    }
    // -0 passes the check above: the cache then holds 0 tokens, not -0.
    this.tokens = n || 0;
    state.k.codes?.truncate(this.tokens);
    state.k.masses?.truncate();
  }

  /**
   * Frees the backend memory the cache holds; any later use of it is CACHE_RELEASED.
   * Releasing twice does nothing. A cache is never freed otherwise: release each one.
   */
  release(): void {
    const state = states.get(this);
    if (!state) return;
    if (state.busy > 0) throw busyError('release');
    states.delete(this);
    this.tokens = 0;
    if (state.backend.name === 'webgpu') {
      state.backend.dropLasting(state.k.resident);
      state.backend.dropLasting(state.v.resident);
    } else {
      dropCpu(state.backend);
    }
  }

  /** The cache's state when no call reads it (append, truncate). */
  private idle(what: string): CacheState {
    const state = openCache(this);
    if (state.busy > 0) throw busyError(what);
    return state;
  }

  private checkRows(name: 'k' | 'v', t: TensorLike, width: number): Tensor | HalfInput {
    const input = toInputTensor(name, t, true);
    if (!isHostTensor(input)) {
      throw new HyperAttentionError('INVALID_OPTION', `${name}: a GPU tensor; a cache takes host tensors { data, shape }`);
    }
    const [B, H, , D] = input.shape;
    if (B !== this.batch || H !== this.kvHeads || D !== width) {
      throw new HyperAttentionError(
        'CACHE_MISMATCH',
        `${name}: expected [${this.batch}, ${this.kvHeads}, t, ${width}] ([batch, kvHeads, tokens, ${name === 'k' ? 'headDim' : 'valueDim'}]), got ${JSON.stringify(input.shape)}`,
      );
    }
    return input;
  }
}

/**
 * Runs work on the cache after every operation queued on it before (calls and appends take
 * turns: one memory serves one at a time). The cache is busy (CACHE_BUSY for truncate and
 * release) from now until the work settles.
 * @internal
 */
export function enqueue<T>(state: CacheState, work: () => Promise<T>): Promise<T> {
  state.busy++;
  const ready = state.queue;
  let done = () => {};
  state.queue = new Promise<void>((resolve) => (done = resolve));
  return (async () => {
    try {
      await ready;
      return await work();
    } finally {
      state.busy--;
      done();
    }
  })();
}

/** What an append of values beyond float16's range can do instead. */
const FLOAT16_REMEDY = "a float16 cache holds magnitudes up to 65504: scale the values down or make the cache with dtype 'float32'";

function busyError(what: string): HyperAttentionError {
  return new HyperAttentionError('CACHE_BUSY', `cannot ${what} the cache while a call or an append on it is pending: await it first`);
}

function maxOf(values: Float32Array, n: number): number {
  let max = 0;
  for (let i = 0; i < n; i++) max = Math.max(max, values[i]);
  return max;
}

/**
 * The state of a cache not yet released (else CACHE_RELEASED).
 * @internal
 */
export function openCache(cache: KVCache): CacheState {
  const state = states.get(cache);
  if (!state) throw new HyperAttentionError('CACHE_RELEASED', 'the cache was released: make a new one with createKVCache');
  return state;
}

interface Resolved {
  batch: number;
  kvHeads: number;
  headDim: number;
  valueDim: number;
  capacity: number;
  threads: number | undefined;
  backend: 'cpu' | 'webgpu';
  device: WebGPUDeviceLike | undefined;
  dtype: KVCacheDtype;
}

function resolve(options: KVCacheOptions): Resolved {
  const o = ownOptions(options, OPTION_KEYS, 'createKVCache options') as Partial<KVCacheOptions>;
  const integer = (name: string, value: unknown, fallback: number | undefined, max: number): number => {
    if (value === undefined && fallback !== undefined) return fallback;
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > max) {
      throw new HyperAttentionError('INVALID_OPTION', `${name}: expected an integer in [1, ${max}], got ${describeValue(value)}`);
    }
    return value;
  };
  const headDim = integer('headDim', o.headDim, undefined, MAX_HEAD_DIM);
  const resolved: Resolved = {
    batch: integer('batch', o.batch, 1, 2 ** 20),
    kvHeads: integer('kvHeads', o.kvHeads, undefined, 2 ** 20),
    headDim,
    valueDim: integer('valueDim', o.valueDim, headDim, MAX_HEAD_DIM),
    capacity: integer('capacity', o.capacity, undefined, 2 ** 30),
    threads: o.threads === undefined ? undefined : integer('threads', o.threads, 1, MAX_THREADS),
    backend: 'cpu',
    device: undefined,
    dtype: 'float32',
  };
  const backend = o.backend ?? (o.device ? 'webgpu' : 'auto');
  if (!['auto', 'cpu', 'webgpu'].includes(backend)) {
    throw new HyperAttentionError('INVALID_OPTION', `backend: expected 'auto', 'cpu' or 'webgpu', got ${describeValue(backend)}`);
  }
  if (o.device !== undefined) {
    if (!isGPUDevice(o.device)) throw new HyperAttentionError('INVALID_OPTION', `device: expected a GPUDevice, got ${describeValue(o.device)}`);
    if (backend !== 'webgpu') throw new HyperAttentionError('INVALID_OPTION', `device: a GPUDevice needs backend 'webgpu', but backend is '${backend}'`);
  }
  resolved.backend = backend === 'webgpu' ? 'webgpu' : 'cpu';
  resolved.device = o.device;
  if (o.dtype !== undefined && o.dtype !== 'float32' && o.dtype !== 'float16') {
    throw new HyperAttentionError('INVALID_OPTION', `dtype: expected 'float32' or 'float16', got ${describeValue(o.dtype)}`);
  }
  resolved.dtype = o.dtype ?? 'float32';
  if (resolved.dtype === 'float16' && resolved.backend === 'webgpu') {
    throw new HyperAttentionError('INVALID_OPTION', "dtype 'float16': a WebGPU cache stores float32 (float16 storage is for backend 'cpu', WebAssembly)");
  }
  const bytes = resolved.batch * resolved.kvHeads * resolved.capacity * (resolved.headDim + resolved.valueDim) * (resolved.dtype === 'float16' ? 2 : 4);
  if (resolved.backend === 'cpu' && bytes > MAX_CACHE_BYTES) {
    throw new HyperAttentionError('INVALID_OPTION', `capacity: ${resolved.capacity} tokens of ${resolved.batch} x ${resolved.kvHeads} heads would take ${bytes} bytes; a WebAssembly cache holds at most ${MAX_CACHE_BYTES}`);
  }
  return resolved;
}

/**
 * A key-value cache: keys and values kept in the backend's memory between calls (see
 * KVCache). Rejects with INVALID_OPTION for malformed options, OUT_OF_MEMORY where the
 * memory cannot be reserved.
 */
export async function createKVCache(options: KVCacheOptions): Promise<KVCache> {
  return KVCache.create(resolve(options));
}
