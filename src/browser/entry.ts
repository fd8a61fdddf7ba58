// The library as browsers load it (dist/browser/index.js): the public API of src/index.ts,
// with calls made from a page run in the library's worker (proxy.ts) by default, so that
// the page stays responsive. What runs where:
// - hyperAttention, exactAttention, explain: in the worker unless the call says worker:
//   false (or configureThreads({ worker: false })), or holds what cannot leave the calling
//   thread: GPU tensors, `device`, output 'gpu', a `sampler` function.
// - warmup, calibrate, getProfile, setProfile: where calls run by default, since the
//   profile they read or set is that copy of the library's.
// - configureScheduler, configureThreads: on the page, and passed on to the worker.
// - lshOrder, formatPlan: on the calling thread (lshOrder hashes and sorts, milliseconds).
// - createKVCache, and every call on a cache (and explain of one): on the calling thread,
//   where the cache's memory is (its kernels on the pool's workers where the page has threads).
import * as library from '../index.ts';
import { resolveExactOptions, resolveHyperOptions, type ExactOptions, type HyperOptions } from '../options.ts';
import type { SchedulerConfig } from '../scheduler/persistence.ts';
import type { Profile } from '../scheduler/profile.ts';
import { resolveLayout, shapeInBhnd } from '../layout.ts';
import { checkOutTarget, copiedInto } from '../outbuffer.ts';
import type { AttentionResult } from '../result.ts';
import { attentionShapeOf, isHostTensor, toInputTensor, type Tensor, type TensorLike } from '../tensor.ts';
import { workerByDefault, type ThreadConfig } from '../threads/config.ts';
import type { RemoteName } from './protocol.ts';
import { configureWorker, runInWorker, workerAvailable } from './proxy.ts';

export * from '../index.ts';

/** Whether a call with these options runs on the calling thread rather than in the worker. */
function staysHere(options: unknown): boolean {
  const o = (typeof options === 'object' && options !== null ? options : {}) as HyperOptions;
  return !(o.worker ?? workerByDefault()) || o.device !== undefined || o.output === 'gpu' || o.sampler !== undefined ||
    !workerAvailable();
}

/**
 * A copy-friendly tensor: a view into a larger buffer (one layer of a cache, say) is sliced,
 * since the worker would otherwise be sent the whole buffer.
 */
function portable(t: Tensor): Tensor {
  const { data } = t;
  const whole = !(data.buffer instanceof ArrayBuffer) || data.byteLength === data.buffer.byteLength;
  return { data: whole ? data : data.slice(), shape: [...t.shape] };
}

function attention(name: 'hyperAttention' | 'exactAttention', q: TensorLike, k: TensorLike, v: TensorLike, options: unknown): Promise<unknown> {
  const local = () => (library[name] as (...args: unknown[]) => Promise<unknown>)(q, k, v, options);
  if (k instanceof library.KVCache) return local();
  let tensors: Tensor[];
  try {
    if (name === 'hyperAttention') resolveHyperOptions(options as HyperOptions);
    else resolveExactOptions(options as ExactOptions);
    if (staysHere(options)) return local();
    const inputs = [toInputTensor('q', q), toInputTensor('k', k), toInputTensor('v', v)];
    if (!inputs.every(isHostTensor)) return local();
    tensors = inputs.map(portable);
    const o = options as ExactOptions | undefined;
    if (o?.out !== undefined) {
      const layout = resolveLayout(o);
      const [qs, ks, vs] = inputs.map((t) => shapeInBhnd(t.shape, layout));
      checkOutTarget(o.out, attentionShapeOf(qs, ks, vs, o.causal ?? false), inputs);
    }
  } catch {
    return local(); // the library rejects it, with the message it gives everywhere
  }
  // onProgress and the signal stay here: the worker reports progress and hears of an abort.
  // So does the `out` option's array: the worker's result is copied into it.
  const { onProgress, signal, out, ...rest } = (options ?? {}) as ExactOptions;
  const result = runInWorker(name, [...tensors, rest], { local, onProgress, signal });
  return out === undefined ? result : result.then((r) => copiedInto(r as AttentionResult, out));
}

export const hyperAttention = ((q: TensorLike, k: TensorLike, v: TensorLike, options?: HyperOptions) =>
  attention('hyperAttention', q, k, v, options)) as typeof library.hyperAttention;

export const exactAttention = ((q: TensorLike, k: TensorLike, v: TensorLike, options?: ExactOptions) =>
  attention('exactAttention', q, k, v, options)) as typeof library.exactAttention;

export const explain: typeof library.explain = (shapes, options = {}, kind = 'hyper') => {
  const local = () => library.explain(shapes, options, kind);
  const onCache = typeof shapes === 'object' && shapes !== null && 'cache' in shapes;
  return staysHere(options) || onCache ? local() : (runInWorker('explain', [shapes, options, kind], { local }) as ReturnType<typeof local>);
};

/** A profile function, run where calls run by default. */
function whereCallsRun<A extends unknown[]>(name: RemoteName, run: (...args: A) => Promise<Profile>): (...args: A) => Promise<Profile> {
  return (...args) => (staysHere(undefined) ? run(...args) : (runInWorker(name, args, { local: () => run(...args) }) as Promise<Profile>));
}

export const warmup = whereCallsRun('warmup', library.warmup);
export const calibrate = whereCallsRun('calibrate', library.calibrate);
export const getProfile = whereCallsRun('getProfile', library.getProfile);
export const setProfile = whereCallsRun('setProfile', library.setProfile);

export function configureScheduler(options: SchedulerConfig): void {
  library.configureScheduler(options);
  // profilePath is for Node and Deno; onWarning stays here, where the worker's warnings arrive.
  if (options.persist !== undefined) configureWorker({ scheduler: { persist: options.persist } });
}

export function configureThreads(options: ThreadConfig): void {
  library.configureThreads(options);
  if (options.threads !== undefined) configureWorker({ threads: { threads: options.threads } });
}
