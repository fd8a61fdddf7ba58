// Public API: HyperAttention and exact attention on Float32Array or float16 host tensors (in
// layout [B, H, N, D] or [B, N, H, D]), or on GPUBuffers of the caller's WebGPU device; the
// scheduler's calibration, profiles and explain().
import { acquireCpu, releaseCpu, serialize } from './backends.ts';
import { enqueue, exactFirstHeads, KVCache, openCache, rememberHeads, type CacheState } from './cache.ts';
import { runExact, runHyper } from './hyper.ts';
import { exactVerification, runVerified } from './verified.ts';
import { checkedInputs, explainShapeError, readyInput, resolveLayout, resultInLayout, shapeInBhnd, type Layout } from './layout.ts';
import type { Backend, OpTrace } from './ops.ts';
import { buildPlan, planParams, type Plan } from './plan.ts';
import {
  checkDeviceIO, resolveExactOptions, resolveHyperOptions, type ExactOptions, type HyperOptions, type Output,
  type ResolvedExactOptions, type ResolvedHyperOptions,
} from './options.ts';
import { abortedError, HyperAttentionError, typedFailure, typedFailures } from './errors.ts';
import { encodeFloat16, float16Array, float16Bits, type Float16Data } from './float16.ts';
import { checkOutTarget, writingInto } from './outbuffer.ts';
import type { AttentionResult, Float16AttentionResult, GPUAttentionResult } from './result.ts';
import type { Explanation } from './scheduler/cost.ts';
import {
  callProfile, explain as explainBhnd, schedule, scheduleResident, type CallShapes, type Scheduled,
} from './scheduler/index.ts';
import { threadsFor } from './threads/config.ts';
import { inSlices, SLICE_ELEMENTS } from './slices.ts';
import {
  allFinite, attentionShapeOf, checkMagnitudes, checkOutputSize, checkShape, checkValues, checkValuesNow, finiteMaxAbsInSlices, isHostTensor,
  hostElements, type AttentionShape, type CheckedInput, type InputTensor, type TensorLike,
} from './tensor.ts';

export { HyperAttentionError, type ErrorCode } from './errors.ts';
export { createKVCache, KVCache, type KVCacheDtype, type KVCacheOptions } from './cache.ts';
export {
  DEFAULTS, type BackendChoice, type ExactOptions, type HyperOptions, type Output, type OutputDtype, type Progress,
  type WebGPUBufferLike, type WebGPUDeviceLike,
} from './options.ts';
export type { Mode } from './options.ts';
export type { DrawRequest, Sampler } from './random.ts';
export type { DimsTensor, Float16Tensor, GPUTensor, InputTensor, Tensor, TensorLike } from './tensor.ts';
export type { Float16ArrayLike, Float16Data } from './float16.ts';
export type { Layout } from './layout.ts';
export type { AttentionResult, CallProfile, Float16AttentionResult, GPUAttentionResult } from './result.ts';
export type { CheckedPlan, HeadVerification, Verification } from './verification.ts';
export type { PlanName } from './plan.ts';
export { lshOrder, type LshOrder, type LshOrderOptions } from './inspect.ts';
export { calibrate, getProfile, setProfile, warmup, type CallShapes } from './scheduler/index.ts';
export { configureScheduler, type SchedulerConfig } from './scheduler/persistence.ts';
export type { Candidate, Explanation, Split, Step } from './scheduler/cost.ts';
export { formatPlan } from './scheduler/format.ts';
export { configureThreads, type ThreadConfig } from './threads/config.ts';
export type { AdapterIdentity, DeviceCosts, Environment, OpCost, Profile } from './scheduler/profile.ts';
export type { CostClass, Device, OpName } from './ops.ts';

/**
 * Host inputs of at most this many values each are transposed and scanned in the call
 * itself (a millisecond or so); larger ones in time slices once the call has returned its
 * promise (slices.ts), so that a long context never holds the calling thread.
 */
const AT_ONCE_ELEMENTS = 4 * SLICE_ELEMENTS;

/**
 * Validates a call's tensors (checkedInputs: each on its own, in the caller's layout), their
 * shapes together, and that GPU tensors among them run on the caller's device; not the values.
 */
function checkInputs(inputs: CheckedInput[], o: ResolvedExactOptions, layout: Layout): AttentionShape {
  let shape: AttentionShape;
  try {
    const [q, k, v] = inputs.map((t) => shapeInBhnd(t.shape, layout));
    shape = attentionShapeOf(q, k, v, o.causal);
  } catch (error) {
    throw explainShapeError(error, layout);
  }
  if (o.output === 'host') checkOutputSize(shape);
  const onGpu = inputs.map((t, i) => ['qkv'[i], t] as const).find(([, t]) => !isHostTensor(t));
  if (onGpu) checkDeviceIO(o, `${onGpu[0]} (a GPU tensor)`);
  return shape;
}

/**
 * Checked inputs give finite results, and the work checks each host value as it reads it
 * (readRows), so a non-finite host result comes from a GPU tensor (never read back to be
 * checked) or an input changed between two reads (a shared buffer another thread writes):
 * never returned as a result. Checked in time slices.
 */
async function checkFiniteResult<R extends AttentionResult | GPUAttentionResult>(result: R, signal?: AbortSignal): Promise<R> {
  if (!('data' in result.out)) return result;
  const { out, lse } = result as AttentionResult;
  if ((await allFinite(out.data, signal)) && (await allFinite(lse.data, signal))) return result;
  throw new HyperAttentionError(
    'NON_FINITE_INPUT',
    "the result is not finite: a GPU tensor among the inputs holds NaN, infinity or magnitudes that overflow, or a host input changed while the call ran (inputs must stay unchanged until the call's promise settles)",
  );
}


/**
 * The result with out in the call's outputDtype (float16: rounded to nearest even, in time
 * slices, into the `out` option's array where given; lse stays float32).
 */
async function resultInDtype(result: AttentionResult | GPUAttentionResult, o: ResolvedExactOptions): Promise<AnyResult> {
  if (o.outputDtype === 'float32' || !('data' in result.out)) return result;
  const host = result as AttentionResult;
  const values = host.out.data;
  const given = o.out as Float16Data | undefined;
  const fresh = given ? undefined : new Uint16Array(values.length);
  const bits = fresh ?? float16Bits(given!);
  await inSlices(values.length, SLICE_ELEMENTS, (from, to) => encodeFloat16('out', "use outputDtype 'float32'", values, from, to, bits), o.signal);
  return { ...host, out: { data: fresh ? float16Array(fresh) : given!, shape: host.out.shape, dtype: 'float16' } };
}

/**
 * The options the work runs with: the `out` option's array is the executor's to write
 * (hyper.ts) where the work's own result is the call's (layout 'bhnd', float32); otherwise
 * the result is transposed or encoded into it afterwards (resultInLayout, resultInDtype).
 */
function runOptions<T extends ResolvedExactOptions>(o: T, layout: Layout): T {
  return o.out && (layout !== 'bhnd' || o.outputDtype !== 'float32') ? { ...o, out: undefined } : o;
}

/** What a call may return, whatever its options. */
type AnyResult = AttentionResult | Float16AttentionResult | GPUAttentionResult;

/**
 * Resolves the options and checks the tensors before any work (so bad input computes
 * nothing: the values of large host inputs are scanned in time slices before the call is
 * queued), then queues the call; in the queue the scheduler picks its backend (and, with
 * backend 'auto', its cutoff). Every error arrives as a rejection.
 */
function startCall<O extends ResolvedExactOptions>(
  options: unknown, resolve: () => O, hyper: (o: O) => ResolvedHyperOptions | undefined, tensors: readonly TensorLike[],
  run: (
    backend: Backend, shape: AttentionShape, o: O, qkv: InputTensor[], trace: OpTrace[] | undefined, plan: Plan | undefined,
  ) => Promise<AttentionResult | GPUAttentionResult>,
): Promise<AnyResult> {
  try {
    const o = resolve();
    const layout = resolveLayout(options);
    const inputs = checkedInputs(tensors, layout, o.output);
    const shape = checkInputs(inputs, o, layout);
    checkOutTarget(o.out, shape, inputs);
    const atOnce = inputs.every((t) => hostElements(t) <= AT_ONCE_ELEMENTS);
    let ready: InputTensor[] | undefined;
    if (atOnce) {
      ready = inputs.map((t) => readyInput(t, layout));
      checkValuesNow(ready, shape, o.scale);
    }
    const runOn = (backend: Backend, scheduled: Scheduled, qkv: InputTensor[]) => writingInto(o.out, async () => {
      const chosen = runOptions(scheduled.minSeqLen === undefined ? o : { ...o, minSeqLen: scheduled.minSeqLen }, layout);
      const checked = async (result: AttentionResult | GPUAttentionResult) => checkFiniteResult(result, o.signal);
      if (!o.profile) return resultInDtype(await resultInLayout(await checked(await run(backend, shape, chosen, qkv, undefined, scheduled.work)), layout, o), o);
      const trace: OpTrace[] = [];
      const start = performance.now();
      const result = await checked(await run(backend, shape, chosen, qkv, trace, scheduled.work));
      return resultInDtype(await resultInLayout({ ...result, profile: callProfile(scheduled.plan!, trace, performance.now() - start) }, layout, o), o);
    });
    return settlesOnAbort(o.signal, typedFailures((async () => {
      let qkv = ready;
      if (!qkv) {
        qkv = [];
        for (const t of inputs) qkv.push(await readyInput(t, layout, { signal: o.signal }));
        await checkValues(qkv, shape, o.scale, o.signal);
      }
      const scheduled = await serialize(() => schedule(shape, o, hyper(o), o.profile));
      if (o.signal?.aborted) throw abortedError(o.signal);
      // WebGPU and the hybrid hold one device's buffers: their calls take turns.
      const shared = scheduled.backend;
      if (shared) return serialize(() => runOn(shared, scheduled, qkv));
      const cpu = await acquireCpu(await threadsFor(o.threads));
      try {
        return await runOn(cpu, scheduled, qkv);
      } finally {
        releaseCpu(cpu);
      }
    })()));
  } catch (error) {
    return Promise.reject(typedFailure(error));
  }
}

/**
 * The call, rejected with ABORTED as soon as its signal aborts, even while it waits for its
 * turn; the work itself sees the signal and stops (see hyper.ts, the WebAssembly backend).
 */
function settlesOnAbort<T>(signal: AbortSignal | undefined, call: Promise<T>): Promise<T> {
  if (!signal) return call;
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(abortedError(signal));
    // The call's outcome is observed first and in one chain, so that nothing the signal's
    // methods throw can leave a rejection unobserved (which ends a Node process).
    call.then(resolve, reject);
    try {
      signal.addEventListener('abort', onAbort, { once: true });
    } catch (error) {
      reject(error);
      return;
    }
    call.catch(() => {}).then(() => signal.removeEventListener('abort', onAbort)).catch(() => {});
  });
}

/**
 * HyperAttention of q [B, H, Nq, D] against k [B, Hkv, Nk, D], v [B, Hkv, Nk, Dv]
 * (H a multiple of Hkv; with layout 'bnhd', q [B, Nq, H, D] and so on). Returns out
 * [B, H, Nq, Dv] ([B, Nq, H, Dv] with 'bnhd') and lse [B, H, Nq] (natural log), as
 * Float32Arrays, or with output 'gpu' as new GPUBuffers on `device`.
 *
 * The result's type follows the options' type: `output: 'gpu'` gives GPUAttentionResult,
 * `outputDtype: 'float16'` Float16AttentionResult; a wide `Output` given as such gives the
 * union; anything else, a plain HyperOptions variable included, gives AttentionResult (a
 * variable that may hold 'gpu' should say so in its type, e.g. `HyperOptions & { output:
 * Output }`; one that may hold outputDtype 'float16', as `HyperOptions & { outputDtype:
 * 'float16' }`).
 */
export function hyperAttention(
  q: TensorLike, k: TensorLike, v: TensorLike, options: HyperOptions & { output: 'gpu' },
): Promise<GPUAttentionResult>;
export function hyperAttention(
  q: TensorLike, k: TensorLike, v: TensorLike, options: HyperOptions & { output?: 'host'; outputDtype: 'float16' },
): Promise<Float16AttentionResult>;
export function hyperAttention(
  q: TensorLike, k: TensorLike, v: TensorLike, options?: HyperOptions & { output?: 'host' },
): Promise<AttentionResult>;
export function hyperAttention(
  q: TensorLike, k: TensorLike, v: TensorLike, options: HyperOptions & { output: Output },
): Promise<AttentionResult | GPUAttentionResult>;
export function hyperAttention(q: TensorLike, k: TensorLike, v: TensorLike, options?: HyperOptions): Promise<AttentionResult>;
/**
 * HyperAttention of q [B, H, Nq, D] against the keys and values a cache holds now
 * (createKVCache; H a multiple of its kvHeads): only q is uploaded. Causal queries are the
 * cache's last Nq positions (docs/cache.md).
 */
export function hyperAttention(q: TensorLike, cache: KVCache, options: HyperOptions & { output: 'gpu' }): Promise<GPUAttentionResult>;
export function hyperAttention(q: TensorLike, cache: KVCache, options?: HyperOptions): Promise<AttentionResult>;
export function hyperAttention(
  q: TensorLike, k: TensorLike | KVCache, v?: TensorLike | HyperOptions, options: HyperOptions = {},
): Promise<AnyResult> {
  if (k instanceof KVCache) return cacheCall('hyper', q, k, v ?? {});
  return startCall(options, () => resolveHyperOptions(options), (o) => o, [q, k, v as TensorLike], (backend, shape, o, qkv, trace, plan) =>
    o.output === 'host'
      ? runVerified(backend, shape, o, qkv[0], qkv[1], qkv[2], trace, plan)
      : runHyper(backend, shape, o, qkv[0], qkv[1], qkv[2], o.output, trace, plan));
}

/**
 * Exact attention (flash-style, never materialising Nq x Nk), same shapes, layouts, outputs
 * and result types as hyperAttention.
 */
export function exactAttention(
  q: TensorLike, k: TensorLike, v: TensorLike, options: ExactOptions & { output: 'gpu' },
): Promise<GPUAttentionResult>;
export function exactAttention(
  q: TensorLike, k: TensorLike, v: TensorLike, options: ExactOptions & { output?: 'host'; outputDtype: 'float16' },
): Promise<Float16AttentionResult>;
export function exactAttention(
  q: TensorLike, k: TensorLike, v: TensorLike, options?: ExactOptions & { output?: 'host' },
): Promise<AttentionResult>;
export function exactAttention(
  q: TensorLike, k: TensorLike, v: TensorLike, options: ExactOptions & { output: Output },
): Promise<AttentionResult | GPUAttentionResult>;
export function exactAttention(q: TensorLike, k: TensorLike, v: TensorLike, options?: ExactOptions): Promise<AttentionResult>;
/** Exact attention of q against the keys and values a cache holds now, as hyperAttention(q, cache). */
export function exactAttention(q: TensorLike, cache: KVCache, options: ExactOptions & { output: 'gpu' }): Promise<GPUAttentionResult>;
export function exactAttention(q: TensorLike, cache: KVCache, options?: ExactOptions): Promise<AttentionResult>;
export function exactAttention(
  q: TensorLike, k: TensorLike | KVCache, v?: TensorLike | ExactOptions, options: ExactOptions = {},
): Promise<AnyResult> {
  if (k instanceof KVCache) return cacheCall('exact', q, k, v ?? {});
  return startCall(options, () => resolveExactOptions(options), () => undefined, [q, k, v as TensorLike], (backend, shape, o, qkv, trace, plan) =>
    runExact(backend, shape, o, qkv[0], qkv[1], qkv[2], o.output, trace, plan));
}

/** A call's options as hyperAttention (kind 'hyper') or exactAttention resolves them. */
function resolveCacheOptions(kind: 'hyper' | 'exact', options: unknown): { hyperGiven: ResolvedHyperOptions | undefined; given: ResolvedExactOptions } {
  const hyperGiven = kind === 'hyper' ? resolveHyperOptions(options as HyperOptions) : undefined;
  return { hyperGiven, given: hyperGiven ?? resolveExactOptions(options as ExactOptions) };
}

/**
 * The shape of a call on a cache, checked against it (CACHE_MISMATCH), and its options with
 * `causal` as it runs: one query sees every key, and causal queries are the cache's last nq
 * positions.
 */
function cacheShape(
  qShape: readonly number[], cache: KVCache, hyperGiven: ResolvedHyperOptions | undefined, given: ResolvedExactOptions,
): { shape: AttentionShape; hyper: ResolvedHyperOptions | undefined; o: ResolvedExactOptions } {
  const causal = given.causal;
  const [B, H, nq, d] = qShape;
  const { batch, kvHeads, headDim } = cache;
  if (B !== batch || d !== headDim || H % kvHeads !== 0) {
    throw new HyperAttentionError(
      'CACHE_MISMATCH',
      `q ${JSON.stringify(qShape)}: the cache holds batch ${batch}, ${kvHeads} key-value heads (q's heads must be a multiple) and head dim ${headDim}`,
    );
  }
  const nk = cache.length;
  if (nk === 0) throw new HyperAttentionError('INVALID_SHAPE', 'the cache holds no tokens: append keys and values first');
  if (causal && nq > nk) {
    throw new HyperAttentionError('INVALID_SHAPE', `causal: ${nq} queries are the cache's last positions, but it holds ${nk} tokens`);
  }
  const runsCausal = causal && nq > 1;
  const hyper = hyperGiven && { ...hyperGiven, causal: runsCausal };
  return { shape: { B, H, Hkv: kvHeads, nq, nk, d, dv: cache.valueDim }, hyper, o: hyper ?? { ...given, causal: runsCausal } };
}

/**
 * A call on a cache: on the cache's backend, in its turn after the operations queued on it
 * before (cache.ts, enqueue), against the tokens the cache holds then; the cache is busy
 * (CACHE_BUSY for truncate, release) from the call's start until it settles, an aborted one
 * included. A plan of exact attention alone, not causal, runs the query heads of a
 * key-value head as one head of H / Hkv times the rows (a reshape of q, not a copy): each
 * key is then read once for all of them.
 */
function cacheCall(kind: 'hyper' | 'exact', q: TensorLike, cache: KVCache, options: unknown): Promise<AnyResult> {
  try {
    const { hyperGiven, given } = resolveCacheOptions(kind, options);
    const layout = resolveLayout(options);
    const state = openCache(cache);
    if (given.backend !== 'auto' && given.backend !== cache.backend) {
      throw new HyperAttentionError('INVALID_OPTION', `backend '${given.backend}': calls on a cache run where it lives ('${cache.backend}')`);
    }
    if (given.device !== undefined && given.device !== (state.backend.name === 'webgpu' ? state.backend.device : undefined)) {
      throw new HyperAttentionError('INVALID_OPTION', "device: not the GPUDevice the cache lives on (calls on a cache run where it lives)");
    }
    const qIn = checkedInputs([q], layout, given.output)[0];
    // GPU tensors in or out: the caller's device, the one the cache lives on (checked above).
    if (given.output === 'gpu') checkDeviceIO(given, "output 'gpu'");
    if (!isHostTensor(qIn)) checkDeviceIO(given, 'q (a GPU tensor)');
    // Not settled ahead of its work on an abort (as other calls are): the work stops within
    // a job, and the cache is free again once the promise settles.
    return typedFailures(enqueue(state, async () => {
      if (given.signal?.aborted) throw abortedError(given.signal);
      // The tokens held once the appends queued before have landed.
      const { shape, hyper, o } = cacheShape(shapeInBhnd(qIn.shape, layout), cache, hyperGiven, given);
      if (o.output === 'host') checkOutputSize(shape);
      checkOutTarget(o.out, shape, [qIn]);
      const qt = await readyInput(qIn, layout, { signal: o.signal });
      const qMax = isHostTensor(qt) ? await finiteMaxAbsInSlices('q', qt.data, o.signal) : 0;
      checkMagnitudes(shape, { q: qMax, ...state.maxAbs(shape.nk) }, o.scale ?? 1 / Math.sqrt(shape.d));
      return writingInto(o.out, async () => {
        const result = await runOnCache(state, shape, runOptions(o, layout), hyper && runOptions(hyper, layout), qt);
        return resultInDtype(await resultInLayout(result, layout, o), o);
      });
    }));
  } catch (error) {
    return Promise.reject(typedFailure(error));
  }
}

async function runOnCache(
  state: CacheState, shape: AttentionShape, o: ResolvedExactOptions, hyper: ResolvedHyperOptions | undefined, q: InputTensor,
): Promise<AttentionResult | GPUAttentionResult> {
  const { backend } = state;
  const scheduled = o.backend === 'auto' || o.profile
    ? await serialize(() => scheduleResident(shape, o, hyper, backend))
    : undefined;
  if (o.signal?.aborted) throw abortedError(o.signal);
  const chosen = hyper && scheduled?.plan.minSeqLen != null ? { ...hyper, minSeqLen: scheduled.plan.minSeqLen } : hyper;
  const plan = scheduled?.work ?? buildPlan(planParams(shape, o, chosen));
  const { B, H, Hkv, nq, d, dv } = shape;
  const exactOnly = plan.kind === 'authors' && plan.leaves.length === 0 && plan.steps.every((s) => s.kind === 'exact');
  const packed = exactOnly && !o.causal && H > Hkv;
  // A float16 cache's rows are read in place by exact attention of a few rows (decoding),
  // and widened per key-value head into float32 for anything else.
  const inPlace = exactOnly && !o.causal && backend.name === 'cpu' && backend.readsHalf(packed ? (H / Hkv) * nq : nq, shape.nk, false);
  const widen = state.k.resident.kind === 'f16' && !inPlace;
  const [k, v] = widen ? [{ ...state.k, widen }, { ...state.v, widen }] : [state.k, state.v];
  const run = async (): Promise<AttentionResult | GPUAttentionResult> => {
    const trace: OpTrace[] | undefined = o.profile ? [] : undefined;
    const start = performance.now();
    const onHost = o.output === 'host' && isHostTensor(q);
    let result: AttentionResult | GPUAttentionResult;
    if (packed) {
      const rows = (H / Hkv) * nq;
      const packed = { ...shape, H: Hkv, nq: rows };
      const qPacked = isHostTensor(q) ? { data: q.data, shape: [B, Hkv, rows, d] } : { ...q, shape: [B, Hkv, rows, d] };
      const r = await runExact(backend, packed, o, qPacked, k, v, o.output, trace);
      // The rows of a key-value head's query heads are those heads' rows: the result only changes shape.
      result = { ...r, out: { ...r.out, shape: [B, H, nq, dv] }, lse: { ...r.lse, shape: [B, H, nq] } } as AttentionResult | GPUAttentionResult;
      if (hyper && onHost && hyper.tolerance !== Infinity) (result as AttentionResult).verification = exactVerification(hyper, B, H);
    } else if (chosen) {
      if (o.output === 'host') {
        const verified = await runVerified(backend, shape, chosen, q, k, v, trace, plan, exactFirstHeads(state, B * H, chosen.tolerance));
        if (verified.verification) rememberHeads(state, verified.verification);
        result = verified;
      } else {
        result = await runHyper(backend, shape, chosen, q, k, v, o.output, trace, plan);
      }
    } else {
      result = await runExact(backend, shape, o, q, k, v, o.output, trace, plan);
    }
    await checkFiniteResult(result, o.signal);
    return trace ? { ...result, profile: callProfile(scheduled!.plan, trace, performance.now() - start) } : result;
  };
  // WebGPU holds one device's buffers: its calls take turns with every other call on it.
  return backend.name === 'webgpu' ? serialize(run) : run();
}

/** A call on a key-value cache, for explain(): q's shape and the cache (its keys as it holds them now). */
export interface CacheCallShapes {
  q: readonly number[];
  cache: KVCache;
}

/** explain() of a call on a cache: its plan on the cache's backend, the keys and values never uploaded. */
async function explainCacheCall(
  shapes: CacheCallShapes, options: HyperOptions | ExactOptions, kind: 'hyper' | 'exact', layout: Layout,
): Promise<Explanation> {
  if (kind !== 'hyper' && kind !== 'exact') throw new HyperAttentionError('INVALID_OPTION', `kind: expected 'hyper' or 'exact', got ${String(kind)}`);
  if (!(shapes.cache instanceof KVCache)) throw new HyperAttentionError('INVALID_OPTION', 'shapes.cache: expected a KVCache (createKVCache)');
  const { hyperGiven, given } = resolveCacheOptions(kind, options);
  const state = openCache(shapes.cache);
  const { shape, hyper, o } = cacheShape(checkShape('q', shapeInBhnd(shapes.q, layout)), shapes.cache, hyperGiven, given);
  return typedFailures(serialize(async () => (await scheduleResident(shape, o, hyper, state.backend)).plan));
}

/**
 * What hyperAttention (or, with kind 'exact', exactAttention) would do with these shapes
 * and options: the backend split, exact or HyperAttention, the cutoff, the predicted time
 * of each step, and every candidate considered. Calibrates first if there is no profile.
 * Shapes are read in the options' `layout`.
 */
export function explain(
  shapes: CallShapes | CacheCallShapes, options: HyperOptions | ExactOptions = {}, kind: 'hyper' | 'exact' = 'hyper',
): Promise<Explanation> {
  try {
    const layout = resolveLayout(options);
    if (typeof shapes === 'object' && shapes !== null && 'cache' in shapes) return explainCacheCall(shapes, options, kind, layout);
    if (layout === 'bhnd' || typeof shapes !== 'object' || shapes === null) return typedFailures(explainBhnd(shapes, options, kind));
    const { q, k, v } = shapes;
    return typedFailures(explainBhnd({ q: shapeInBhnd(q, layout), k: shapeInBhnd(k, layout), v: shapeInBhnd(v, layout) }, options, kind))
      .catch((error: unknown) => Promise.reject(explainShapeError(error, layout)));
  } catch (error) {
    return Promise.reject(error);
  }
}
