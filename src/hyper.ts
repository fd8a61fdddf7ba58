// The executor: runs a plan (plan.ts) over the backend operations of ops.ts, head by head
// (a plan of exact attention alone: many heads per op, on backends that batch heads),
// with the call's random draws in the plan's order. Backends never see recursion, sampling
// or modes; the accurate mode's parts are in accurate.ts.
import { runAccurateHead } from './accurate.ts';
import { headSlots, type ExecContext, type HeadWork, type Randomness } from './context.ts';
import { abortedError, HyperAttentionError } from './errors.ts';
import type { ColumnMassIndex, KeyCodeIndex } from './keyindex.ts';
import {
  placementOf, type Backend, type BackendBuffer, type Destination, type ExactTask, type HeadBatch, type KernelMode, type OpName,
  type OpTrace, type WriteMode,
} from './ops.ts';
import type { Output, ResolvedExactOptions, ResolvedHyperOptions } from './options.ts';
import { isTypedArray } from './owned.ts';
import { buildPlan, planParams, type AuthorsPlan, type Plan } from './plan.ts';
import { Xoshiro128, gaussianProjections, uniformDraws } from './random.ts';
import type { AttentionResult, GPUAttentionResult, ResultFor } from './result.ts';
import { inSlices, SLICE_ELEMENTS, touchPages } from './slices.ts';
import { checkFinite, isHostTensor, readRows, type AttentionShape, type InputTensor } from './tensor.ts';

/**
 * Keys or values already in the backend's memory (a key-value cache, src/cache.ts): flat
 * key-value head g's rows start at row g * stride of buf. Read in place, never copied;
 * float16 rows (an f16 buffer) with `widen` are widened into float32 rows of the call's own
 * per key-value head instead (Backend.widen), as tensors are uploaded.
 */
export interface ResidentRows {
  resident: BackendBuffer;
  stride: number;
  widen?: boolean;
  /** the keys' LSH codes kept with them (keys only; keyindex.ts) */
  codes?: KeyCodeIndex;
  /** the heavy-column masses of the keys, summed over calls (keys only; keyindex.ts) */
  masses?: ColumnMassIndex;
}

/** What a call's keys and values come as: tensors (copied in per call) or resident rows. */
export type KeyValueInput = InputTensor | ResidentRows;

export function isResident(t: KeyValueInput): t is ResidentRows {
  return 'resident' in t;
}

/** Rows the ops read where they lie (resident, not widened). */
function inPlace(t: KeyValueInput): t is ResidentRows {
  return isResident(t) && !t.widen;
}

/**
 * The LSH projections of a call, one [d, r] matrix per hash round: the caller's (checked;
 * rounds of them back to back), else the generator's first draws.
 */
export function callProjections(
  o: ResolvedHyperOptions, d: number, rng: Xoshiro128, rounds = 1, r = o.lshNumProjs,
): Float32Array[] {
  if (!o.projections) return Array.from({ length: rounds }, () => gaussianProjections(rng, d, r));
  if (o.projections.length !== d * r * rounds) {
    const what = rounds === 1 ? `[D = ${d}, lshNumProjs = ${r}]` : `[lshRounds = ${rounds}, D = ${d}, lshNumProjs = ${r}]`;
    throw new HyperAttentionError(
      'INVALID_OPTION',
      `projections: expected ${d * r * rounds} values (${what}), got ${o.projections.length}`,
    );
  }
  checkFinite('projections', o.projections);
  return Array.from({ length: rounds }, (_, t) => o.projections!.subarray(t * d * r, (t + 1) * d * r));
}

async function drawRandomness(plan: Plan, shape: AttentionShape, o: ResolvedHyperOptions): Promise<Randomness> {
  const rng = new Xoshiro128(o.seed);
  const rounds = plan.kind === 'accurate' ? plan.rounds : 1;
  const r = plan.kind === 'accurate' ? plan.r : o.lshNumProjs;
  const projections = rounds > 0 ? callProjections(o, shape.d, rng, rounds, r) : [];
  // A caller's sampler comes checked (options.ts, checkedSampler); the library's own draws are in range.
  const samples: Int32Array[] = [];
  for (const [index, draw] of plan.draws.entries()) {
    const request = { index, batch: shape.B, heads: draw.heads, count: draw.count, high: draw.high };
    samples.push(o.sampler ? o.sampler(request) : await uniformDraws(rng, shape.B * draw.heads * draw.count, draw.high, o.signal));
  }
  return { projections, samples };
}

/**
 * Exact attention, as the one-step plan of the same executor. `output` must be o.output;
 * it is a parameter so that the result type follows it. `plan` is the scheduler's (built
 * here when not given).
 */
export function runExact<O extends Output = 'host'>(
  backend: Backend, shape: AttentionShape, o: ResolvedExactOptions, q: InputTensor, k: KeyValueInput, v: KeyValueInput,
  output: O = 'host' as O, trace?: OpTrace[], plan: Plan = buildPlan(planParams(shape, o, undefined)), scope: RunScope = {},
): Promise<ResultFor<O>> {
  const randomness = { projections: [], samples: [] };
  return execute(
    backend, shape, o, q, k, v, output, trace, (ctx) => authorsHeads(ctx, plan as AuthorsPlan, 'fixed', 1, randomness),
    scope, exactBatch(plan, 'fixed'),
  ) as Promise<ResultFor<O>>;
}

/**
 * HyperAttention; `output` as for runExact. `plan` is the scheduler's, built from the same
 * shape and options (built here when not given). A trace, when given, gets every op's time.
 */
export async function runHyper<O extends Output = 'host'>(
  backend: Backend, shape: AttentionShape, o: ResolvedHyperOptions, q: InputTensor, k: KeyValueInput, v: KeyValueInput,
  output: O = 'host' as O, trace?: OpTrace[], plan: Plan = buildPlan(planParams(shape, o, o)), scope: RunScope = {},
): Promise<ResultFor<O>> {
  const randomness = await drawRandomness(plan, shape, o);
  const heads = plan.kind === 'accurate'
    ? (ctx: ExecContext) => runAccurateHead(ctx, plan, o.causal, o.controlVariate, randomness)
    : (ctx: ExecContext) => authorsHeads(ctx, plan, kernelMode(o.mode), o.lshNumProjs, randomness);
  return execute(
    backend, shape, o, q, k, v, output, trace, heads, scope, exactBatch(plan, kernelMode(o.mode)), plan.kind === 'accurate',
  ) as Promise<ResultFor<O>>;
}

/**
 * What a verified call (verified.ts) asks of one run beyond the plan: which heads, where
 * their results go, and exact attention at check rows. Host output only.
 */
export interface RunScope {
  /** flat heads (b * H + h) to run, ascending (default: every head) */
  heads?: readonly number[];
  /** host arrays [B * H, nq, dv] and [B * H, nq] that the heads' results are written into (default: new ones) */
  into?: { out: Float32Array; lse: Float32Array };
  /** exact attention of each run head at its check rows, in the same pass over its inputs */
  checks?: CheckRows;
}

/**
 * Check rows of every head: head h's rows are rows[h * count .. (h + 1) * count) (query
 * positions), its queries there q[h * count * d ..] (gathered by the caller); the exact
 * results go to out [B * H, count, dv] and lse [B * H, count]. A causal row sees the keys
 * up to its own position.
 */
export interface CheckRows {
  count: number;
  rows: Int32Array;
  q: Float32Array;
  out: Float32Array;
  lse: Float32Array;
}

/** How the kernels hash and merge: the authors' way in 'reference' mode, corrected otherwise. */
export function kernelMode(mode: ResolvedHyperOptions['mode']): KernelMode {
  return mode === 'reference' ? 'reference' : 'fixed';
}

/**
 * A plan of exact attention alone, run for a batch of heads at once (Backend.exactHeads):
 * `units` ops per head, each one op for all heads of the batch. Heads lie side by side in
 * the buffers: q, out and lse [heads, nq, *], k and v [key-value heads, nk, *].
 */
interface BatchWork {
  units: number;
  run: (bufs: { q: BackendBuffer; k: RowViewOf; v: RowViewOf; out: RowViewOf; lse: RowViewOf }, heads: HeadBatch) => Promise<void>;
}
type RowViewOf = Destination['out'];

/** On WebGPU, a call with onProgress runs a plan of exact attention in about this many batches. */
const PROGRESS_BATCHES = 16;

async function execute(
  backend: Backend, shape: AttentionShape, o: ResolvedExactOptions, q: InputTensor, k: KeyValueInput, v: KeyValueInput,
  output: Output, trace: OpTrace[] | undefined, setUp: (ctx: ExecContext) => HeadWork, scope: RunScope,
  batch?: (ctx: BatchContext) => BatchWork, grouped = false,
): Promise<AttentionResult | GPUAttentionResult> {
  const { B, H, Hkv, nq, nk, d, dv } = shape;
  const scale = o.scale ?? 1 / Math.sqrt(d);
  const group = H / Hkv;
  // The heads this run computes, in order; results gather by their place in this list.
  const list = scope.heads ?? Array.from({ length: B * H }, (_, h) => h);
  const heads = list.length;
  const checks = scope.checks;
  const c = checks?.count ?? 0;

  const onDevice = output === 'gpu' || ![q, k, v].every((t) => isResident(t) || isHostTensor(t));
  if (onDevice && !(backend.copyFromDevice && backend.createDeviceBuffer && backend.exportToDevice && backend.finish)) {
    throw new HyperAttentionError('INVALID_OPTION', `GPU tensors and output 'gpu' need the WebGPU backend, not '${backend.name}'`);
  }
  if ((scope.heads || checks) && output !== 'host') throw new Error('a scoped run writes host results');
  // The caller's own out (the option, where index.ts leaves it: a float32 [B, H, nq, dv]).
  const given = scope.into?.out ?? (isTypedArray(o.out, 'Float32Array') ? o.out : undefined);
  const out = output === 'host' ? given ?? new Float32Array(B * H * nq * dv) : undefined;
  const lse = output === 'host' ? scope.into?.lse ?? new Float32Array(B * H * nq) : undefined;
  // A new out's pages are written once while the work runs (their faults off the copy).
  const stopTouching = out && !given ? touchPages(out) : undefined;
  /**
   * Runs one op. When tracing, waits until it has run (an asynchronous backend is synced)
   * and records how long it took: the ops then no longer overlap, so a traced call is slower.
   */
  const run = async (op: OpName, fn: () => void | Promise<void>): Promise<void> => {
    if (o.signal?.aborted) throw abortedError(o.signal);
    if (!trace) return fn();
    const device = placementOf(backend.name)[op];
    const start = performance.now();
    await fn();
    if (device === 'webgpu') await backend.sync?.();
    trace.push({ op, device, ms: performance.now() - start });
  };
  // A readback (or a wait for submitted work) is awaited only once the next heads are
  // issued, so that the CPU prepares (and, in the hybrid, hashes and sorts) them while the
  // GPU computes.
  let pending: Promise<void> | undefined;
  if (o.signal?.aborted) throw abortedError(o.signal);
  backend.begin?.(o.signal);
  try {
    /** Heads [index, index + count) of t ([*, rows, width]) into buf, from the host or on the device. */
    const load = (buf: BackendBuffer, t: InputTensor, index: number, rows: number, width: number, count = 1, at = 0) => {
      const n = rows * width;
      return run('upload', () => {
        if (!isHostTensor(t)) return backend.copyFromDevice!(buf, at, t.buffer, index * n * 4, count * n);
        // Read, checked and copied a slice at a time (slices.ts).
        const upload = (from: number, to: number) => backend.upload(buf, readRows(t, index * n + from, to - from), at + from);
        return inSlices(count * n, SLICE_ELEMENTS, upload, o.signal);
      });
    };
    /** `length` elements of buf from `offset` into `into` at `at`, a slice at a time (a backend without copy: on the host). */
    const download = async (buf: BackendBuffer, offset: number, length: number, into: Float32Array, at: number) => {
      const parts: Promise<void>[] = [];
      await inSlices(length, SLICE_ELEMENTS, (from, to) => parts.push(backend.download(buf, offset + from, to - from, into, at + from)), o.signal);
      await Promise.all(parts);
    };
    const f32 = (n: number) => backend.createBuffer('f32', Math.max(1, n));
    const i32 = (n: number) => backend.createBuffer('i32', Math.max(1, n));
    const outGpu = out ? undefined : backend.createDeviceBuffer!(heads * nq * dv);
    const lseGpu = out ? undefined : backend.createDeviceBuffer!(heads * nq);
    // Batches are runs of consecutive heads (a run of chosen heads, or one with check rows,
    // goes head by head), where the backend takes them (batchesHeads).
    const batches = backend.exactHeads && !scope.heads && !checks && (backend.batchesHeads?.(nq, inPlace(k) && inPlace(v)) ?? true);
    const batched = batch && batches ? batch({ backend, run, d, dv, scale }) : undefined;

    // Asynchronous backends (those with copy), and batched plans on any backend, gather
    // results in the backend: lse then out of up to `resultHeads` heads in one buffer, read
    // back (or exported) once it is full: one readback for a call whose results fit one
    // buffer. Heads run in groups of `groupHeads` (for a batched plan, one op per group); a
    // group is submitted on its own only when progress is asked for, or in the hybrid, whose
    // CPU ops overlap the GPU's.
    const gather = backend.copy !== undefined || batched !== undefined;
    const maxLength = backend.maxBufferLength ?? Infinity;
    const fit = (perHead: number) => Math.max(1, Math.floor(maxLength / Math.max(1, perHead)));
    const submitEach = o.onProgress !== undefined || backend.name === 'hybrid';
    // The query heads of a key-value head run together where the plan and backend can
    // (the accurate mode's LSH rounds and remainders, Backend.groupedHeads): a slot each in
    // the head buffers, as many as headSlots allows.
    const slots = grouped && backend.groupedHeads && !batched ? Math.min(heads, headSlots(group, nq + c, d, dv)) : 1;
    let groupHeads = !gather ? slots : batched
      ? Math.min(heads, fit(nq * d), fit(nk * Math.max(d, dv)), o.onProgress ? Math.ceil(heads / PROGRESS_BATCHES) : heads)
      : submitEach ? 1 : heads;
    // Out starts at a whole row, and 256 bytes (the largest minStorageBufferOffsetAlignment)
    // past the end of lse, so that the bindings of a group's out and lse never overlap.
    const rowAligned = (Math.max(1, dv) / gcd(Math.max(1, dv), 64)) * 64;
    // Check rows' results follow: their lse, then their out.
    const perHead = (nq + c) * (dv + 1);
    const resultMax = gather ? Math.min(heads, Math.max(1, Math.floor((maxLength - rowAligned) / perHead))) : 1;
    if (gather) groupHeads = Math.min(groupHeads, resultMax);
    const resultHeads = groupHeads * Math.floor(resultMax / groupHeads);
    const outStart = Math.ceil((resultHeads * nq) / rowAligned) * rowAligned;
    const checkLseStart = outStart + resultHeads * nq * dv;
    const checkOutStart = checkLseStart + resultHeads * c;
    const result = gather ? f32(checkOutStart + resultHeads * c * dv) : undefined;

    // Progress counts attention ops. The WebAssembly backend has run an op when it returns,
    // so it reports each one; an asynchronous backend reports a group of heads once the
    // GPU has run it (its readback, or the submitted work, settles).
    let head = 0;
    let unitsDone = 0;
    const eachOp = backend.name === 'cpu' && o.onProgress !== undefined && !batched;
    let units = 0;
    /** Awaits the previous group's settling, and reports `headsDone` when `settles` settles. */
    const settle = async (settles: Promise<unknown> | undefined, headsDone: number) => {
      const progress = { done: headsDone * units, total: heads * units };
      const report = () => (eachOp ? undefined : o.onProgress?.(progress));
      const previous = pending;
      pending = Promise.all([previous, settles]).then(report);
      pending.catch(() => {});
      await (trace ? pending : previous);
    };

    // Resident keys and values are read where they are; tensors are loaded per key-value head.
    const kOwn = inPlace(k) ? undefined : f32(nk * d);
    const vOwn = inPlace(v) ? undefined : f32(nk * dv);
    const slotRows = nq + c;
    const ctx = batched ? undefined : {
      backend, shape, scale, run, f32, i32, slots, slotRows,
      qBuf: f32(slots * slotRows * d), kBuf: kOwn ?? (k as ResidentRows).resident, vBuf: vOwn ?? (v as ResidentRows).resident, kRow: 0,
      kvHead: -1, keyCodes: isResident(k) ? k.codes : undefined, masses: isResident(k) ? k.masses : undefined,
      outBuf: f32(slots * slotRows * dv), lseBuf: f32(slots * slotRows),
      tick: () => {
        unitsDone++;
        if (eachOp) o.onProgress!({ done: head * units + unitsDone, total: heads * units });
      },
    } satisfies ExecContext;
    const work = ctx ? setUp(ctx) : undefined;
    units = batched?.units ?? work!.units;
    const kvOf = (h: number) => Math.floor(h / group);
    const kvMax = Math.max(...Array.from({ length: Math.ceil(heads / groupHeads) }, (_, g) =>
      kvOf(Math.min(heads, (g + 1) * groupHeads) - 1) - kvOf(g * groupHeads) + 1));
    const bufs = batched
      ? { q: f32(groupHeads * nq * d), k: inPlace(k) ? undefined : f32(kvMax * nk * d), v: inPlace(v) ? undefined : f32(kvMax * nk * dv) }
      : undefined;
    /** Key-value heads [kv0, kv0 + count) of t as rows of a buffer: loaded into own, or where they reside. */
    const kvRows = async (own: BackendBuffer | undefined, t: KeyValueInput, kv0: number, width: number, count: number) => {
      if (inPlace(t)) return { buf: t.resident, row: kv0 * t.stride };
      if (isResident(t)) {
        await run('upload', async () => {
          for (let i = 0; i < count; i++) {
            await backend.widen!({ src: { buf: t.resident, row: (kv0 + i) * t.stride }, dst: { buf: own!, row: i * nk }, rows: nk, width });
          }
        });
      } else {
        await load(own!, t, kv0, nk, width, count);
      }
      return { buf: own!, row: 0 };
    };

    let resultFrom = 0;
    for (let g0 = 0; g0 < heads; g0 += groupHeads) {
      const g1 = Math.min(heads, g0 + groupHeads);
      if (bufs && result) {
        const kv0 = kvOf(g0);
        const kvCount = kvOf(g1 - 1) - kv0 + 1;
        await load(bufs.q, q, g0, nq, d, g1 - g0);
        const kRows = await kvRows(bufs.k, k, kv0, d, kvCount);
        const vRows = await kvRows(bufs.v, v, kv0, dv, kvCount);
        await batched!.run({
          q: bufs.q, k: kRows, v: vRows,
          lse: { buf: result, row: (g0 - resultFrom) * nq }, out: { buf: result, row: outStart / dv + (g0 - resultFrom) * nq },
        }, { count: g1 - g0, group, phase: g0 % group, qRows: nq, kRows: inPlace(k) ? k.stride : nk });
      }
      for (let i = g0; ctx && i < g1;) {
        // Consecutive heads of the list that read the same key-value head, up to the slots.
        let j = i + 1;
        while (j < g1 && j - i < slots && kvOf(list[j]) === kvOf(list[i])) j++;
        head = i;
        unitsDone = 0;
        for (let s = i; s < j; s++) await load(ctx.qBuf, q, list[s], nq, d, 1, (s - i) * slotRows * d);
        const kv = kvOf(list[i]);
        const kvChanged = kv !== ctx.kvHead;
        if (kvChanged) {
          ctx.kRow = (await kvRows(kOwn, k, kv, d, 1)).row;
          await kvRows(vOwn, v, kv, dv, 1);
          ctx.kvHead = kv;
        }
        await work!.run(list.slice(i, j).map((h) => ({ b: Math.floor(h / H), h: h % H })), kvChanged);
        for (; i < j; i++) {
          const h = list[i];
          // The head's rows in the head buffers: its nq rows, then its check rows.
          const at = (i - head) * slotRows;
          if (checks) await checkHead(ctx, checks, h, o.causal, at);
          const slot = i - resultFrom;
          if (result) {
            backend.copy!(ctx.lseBuf, at, result, slot * nq, nq);
            backend.copy!(ctx.outBuf, at * dv, result, outStart + slot * nq * dv, nq * dv);
            if (checks) {
              backend.copy!(ctx.lseBuf, at + nq, result, checkLseStart + slot * c, c);
              backend.copy!(ctx.outBuf, (at + nq) * dv, result, checkOutStart + slot * c * dv, c * dv);
            }
          } else {
            // Read back in slices, and done before the next heads reuse the buffers.
            const downloaded = run('download', async () => {
              await download(ctx.outBuf, at * dv, nq * dv, out!, h * nq * dv);
              await download(ctx.lseBuf, at, nq, lse!, h * nq);
              if (!checks) return;
              await download(ctx.outBuf, (at + nq) * dv, c * dv, checks.out, h * c * dv);
              await download(ctx.lseBuf, at + nq, c, checks.lse, h * c);
            });
            await downloaded;
            await settle(downloaded, i + 1);
          }
        }
      }
      if (!result) continue;
      if (g1 - resultFrom === resultHeads || g1 === heads) {
        const count = g1 - resultFrom;
        const from = resultFrom;
        resultFrom = g1;
        if (out && lse) {
          const all = new Float32Array(checks ? checkOutStart + count * c * dv : outStart + count * nq * dv);
          await settle(run('download', () => backend.download(result, 0, all.length, all).then(() => {
            for (let i = from; i < g1; i++) {
              const h = list[i];
              const slot = i - from;
              lse.set(all.subarray(slot * nq, (slot + 1) * nq), h * nq);
              out.set(all.subarray(outStart + slot * nq * dv, outStart + (slot + 1) * nq * dv), h * nq * dv);
              if (!checks) continue;
              checks.lse.set(all.subarray(checkLseStart + slot * c, checkLseStart + (slot + 1) * c), h * c);
              checks.out.set(all.subarray(checkOutStart + slot * c * dv, checkOutStart + (slot + 1) * c * dv), h * c * dv);
            }
          })), g1);
          continue;
        }
        backend.exportToDevice!(result, 0, lseGpu!, from * nq * 4, count * nq);
        backend.exportToDevice!(result, outStart, outGpu!, from * nq * dv * 4, count * nq * dv);
      }
      // Nothing read back: the submitted work settling tells progress.
      if (submitEach && g1 < heads) await settle(backend.sync?.(), g1);
    }
    if (out && lse) {
      await pending;
      return { out: { data: out, shape: [B, H, nq, dv] }, lse: { data: lse, shape: [B, H, nq] } };
    }
    // Nothing was read back: this runs the work, and reports its errors.
    await pending;
    await backend.finish!();
    o.onProgress?.({ done: heads * units, total: heads * units });
    return {
      out: { buffer: outGpu!, shape: [B, H, nq, dv], dtype: 'float32' },
      lse: { buffer: lseGpu!, shape: [B, H, nq], dtype: 'float32' },
    };
  } finally {
    stopTouching?.();
    // A failed call may leave a readback in flight; its buffers go back only once it settles.
    await pending?.catch(() => {});
    backend.releaseAll();
  }
}

/**
 * Exact attention of head h at its check rows, into rows [at + nq, at + nq + count) of out
 * and lse (its queries uploaded behind the head's own, whose rows start at `at`). Causal,
 * each row sees the keys up to its position.
 */
async function checkHead(ctx: ExecContext, checks: CheckRows, h: number, causal: boolean, at: number): Promise<void> {
  const { backend, run, qBuf, kBuf, vBuf, kRow, outBuf, lseBuf, scale } = ctx;
  const { nq, nk, d, dv } = ctx.shape;
  const c = checks.count;
  const rows = at + nq;
  await run('upload', () => backend.upload(qBuf, checks.q.subarray(h * c * d, (h + 1) * c * d), rows * d));
  const task = {
    q: { buf: qBuf, row: rows }, k: { buf: kBuf, row: kRow }, v: { buf: vBuf, row: kRow }, nq: c, nk, d, dv, scale,
    dst: { out: { buf: outBuf, row: rows }, lse: { buf: lseBuf, row: rows }, write: 'write' as const },
  };
  if (!causal) {
    await run('exact', () => backend.exact({ ...task, causal: false, causalOffset: 0 }));
    return;
  }
  // Queries are the last nq key positions.
  const keys = Int32Array.from(checks.rows.subarray(h * c, (h + 1) * c), (p) => nk - nq + p + 1);
  await run('prefixes', () => backend.prefixes({ ...task, keys }));
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

/** What a batched plan's ops need of the call. */
interface BatchContext {
  backend: Backend;
  run: ExecContext['run'];
  d: number;
  dv: number;
  scale: number;
}

/**
 * The batched form of an authors' plan made only of exact attention (exact calls, and
 * hyperAttention below minSeqLen): its leaves, then its steps' sub-heads, each one
 * exactHeads op for the batch. Undefined for any other plan.
 */
function exactBatch(plan: Plan, mode: KernelMode): ((ctx: BatchContext) => BatchWork) | undefined {
  if (plan.kind !== 'authors' || plan.steps.some((s) => s.kind !== 'exact')) return undefined;
  const merge: WriteMode = mode === 'reference' ? 'merge-reference' : 'merge-fixed';
  const parts: { qStart: number; kStart: number; nq: number; nk: number; causal: boolean; write: WriteMode }[] = [
    ...plan.leaves.map((leaf) => ({
      qStart: leaf.start, kStart: leaf.kStart, nq: leaf.rows, nk: leaf.keys, causal: true, write: 'write' as const,
    })),
    ...plan.steps.flatMap((step) => step.subs.map((sub) => ({
      qStart: sub.qStart, kStart: sub.kStart, nq: sub.qReal, nk: step.nk, causal: false, write: step.merge ? merge : ('write' as const),
    }))),
  ].filter((part) => part.nq > 0);
  return ({ backend, run, d, dv, scale }) => ({
    units: parts.length,
    run: async (bufs, heads) => {
      for (const part of parts) {
        const at = (view: RowViewOf) => ({ buf: view.buf, row: view.row + part.qStart });
        await run('exact', () => backend.exactHeads!({
          q: { buf: bufs.q, row: part.qStart }, k: { buf: bufs.k.buf, row: bufs.k.row + part.kStart },
          v: { buf: bufs.v.buf, row: bufs.v.row + part.kStart },
          nq: part.nq, nk: part.nk, d, dv, scale, causal: part.causal, causalOffset: part.causal ? part.nk - part.nq : 0,
          dst: { out: at(bufs.out), lse: at(bufs.lse), write: part.write },
        }, heads));
      }
    },
  });
}

/** The authors' algorithm (and exact attention): diagonal leaves, then the steps in order. */
function authorsHeads(ctx: ExecContext, plan: AuthorsPlan, mode: KernelMode, r: number, randomness: Randomness): HeadWork {
  const { backend, run, f32, i32, qBuf, outBuf, lseBuf, scale, tick } = ctx;
  const { H, nq, nk, d, dv } = ctx.shape;
  // WebAssembly runs exact attention in runs of query rows of about EXACT_CHUNK_FLOPS, so
  // that progress reaches the caller during a long exact call; a GPU takes it whole. A run
  // is a multiple of 64 rows, the same for every thread count: the backend chooses its
  // kernels by a run's rows (up to 64 rows against many keys go in key parts), so runs that
  // followed the threads gave other bits on other thread counts. Against 32k keys or more
  // (d = 64) a run is 64 rows, whose key parts keep each job's keys in cache; runs sized
  // by the threads left 4 to 8 rows a job streaming every key from memory (exact attention
  // at 64k: 28 s, now 15 s on 2 threads).
  const chunkRows = (keys: number) => backend.name === 'cpu'
    ? 64 * Math.max(1, Math.floor(EXACT_CHUNK_FLOPS / (2 * keys * (d + dv)) / 64))
    : Infinity;
  const chunks = (rows: number, keys: number) => (rows > 0 ? Math.max(1, Math.ceil(rows / chunkRows(keys))) : 0);
  /** Exact attention of t.nq query rows, in chunks of rows; a causal task's rows see keys up to their own. */
  const exactRows = async (t: ExactTask) => {
    const step = chunkRows(t.nk);
    for (let r0 = 0; r0 < t.nq; r0 += step) {
      const rows = Math.min(step, t.nq - r0);
      const at = <V extends { row: number }>(view: V): V => ({ ...view, row: view.row + r0 });
      const nkChunk = t.causal ? Math.min(t.nk, r0 + rows + t.causalOffset) : t.nk;
      await run('exact', () => backend.exact({
        ...t, q: at(t.q), nq: rows, nk: nkChunk, causalOffset: t.causalOffset + r0,
        dst: { ...t.dst, out: at(t.dst.out), lse: at(t.dst.lse) },
      }));
      tick();
    }
  };
  const merge: WriteMode = mode === 'reference' ? 'merge-reference' : 'merge-fixed';
  const hashes = plan.steps.some((s) => s.kind === 'hyper');
  const tempRows = Math.max(0, ...plan.steps.filter((s) => s.merge && s.kind === 'hyper').map((s) => s.nq));
  const tmpOut = f32(tempRows * dv);
  const tmpLse = f32(tempRows);
  const qKeys = hashes ? i32(nq) : undefined;
  const kKeys = hashes ? i32(nk) : undefined;
  const qPerm = hashes ? i32(nq) : undefined;
  const kPerm = hashes ? i32(nk) : undefined;
  const proj = hashes ? f32(d * r) : undefined;
  let projUploaded = false;

  let units = 0;
  for (const leaf of plan.leaves) units += chunks(leaf.rows, leaf.keys);
  for (const step of plan.steps) {
    for (const sub of step.subs) {
      units += step.kind === 'exact' ? chunks(sub.qReal, step.nk) : 1 + (step.draw >= 0 ? 1 : 0) + (step.merge ? 1 : 0);
    }
  }

  const runHead = async (b: number, h: number, kvChanged: boolean) => {
    const { kBuf, vBuf, kRow } = ctx;
    if (proj && !projUploaded) {
      await run('upload', () => backend.upload(proj, randomness.projections[0]));
      projUploaded = true;
    }
    if (kvChanged && kKeys && proj) {
      const keys = { buf: kKeys, row: 0 };
      await run('hash', () => backend.hash({ x: { buf: kBuf, row: kRow }, rows: nk, d, proj, r, mode, keys }));
    }
    if (qKeys && proj) {
      const keys = { buf: qKeys, row: 0 };
      await run('hash', () => backend.hash({ x: { buf: qBuf, row: 0 }, rows: nq, d, proj, r, mode, keys }));
    }

    for (const leaf of plan.leaves) {
      await exactRows({
        q: { buf: qBuf, row: leaf.start }, k: { buf: kBuf, row: kRow + leaf.kStart }, v: { buf: vBuf, row: kRow + leaf.kStart },
        nq: leaf.rows, nk: leaf.keys, d, dv, scale, causal: true, causalOffset: leaf.keys - leaf.rows,
        dst: { out: { buf: outBuf, row: leaf.start }, lse: { buf: lseBuf, row: leaf.start }, write: 'write' },
      });
    }

    for (const step of plan.steps) {
      for (const [t, sub] of step.subs.entries()) {
        const toOut: Destination = {
          out: { buf: outBuf, row: sub.qStart }, lse: { buf: lseBuf, row: sub.qStart }, write: step.merge ? merge : 'write',
        };
        const qv = { buf: qBuf, row: sub.qStart };
        const kv = { buf: kBuf, row: kRow + sub.kStart };
        const vv = { buf: vBuf, row: kRow + sub.kStart };
        if (step.kind === 'exact') {
          await exactRows({ q: qv, k: kv, v: vv, nq: sub.qReal, nk: step.nk, d, dv, scale, causal: false, causalOffset: 0, dst: toOut });
          continue;
        }
        // Reference mode sorts the zero pad rows with the real ones (they take places
        // in the blocks); fixed mode leaves them out.
        const pads = mode === 'reference' ? sub.qPads : 0;
        const nqSorted = sub.qReal + pads;
        await run('sort', () => backend.sort({
          keys: { buf: qKeys!, row: sub.qStart }, count: sub.qReal, pads, numKeys: 1 << r, perm: { buf: qPerm!, row: 0 },
        }));
        await run('sort', () => backend.sort({
          keys: { buf: kKeys!, row: sub.kStart }, count: step.nk, pads: 0, numKeys: 1 << r, perm: { buf: kPerm!, row: 0 },
        }));
        const dst: Destination = step.merge
          ? { out: { buf: tmpOut, row: 0 }, lse: { buf: tmpLse, row: 0 }, write: 'write' }
          : toOut;
        const sorted = {
          q: qv, k: kv, v: vv, qPerm: { buf: qPerm!, row: 0 }, kPerm: { buf: kPerm!, row: 0 },
          nqSorted, nqReal: sub.qReal, d, dv, scale, qBlock: step.qBlock, kBlock: step.kBlock, nBlocks: step.nBlocks,
        };
        await run('block', () => backend.block({ ...sorted, nk: step.nk, phantomKeys: mode === 'reference', dst }));
        tick();
        if (step.draw >= 0) {
          const m = plan.draws[step.draw].count;
          const slice = (b * step.subs.length * H + h * step.subs.length + t) * m;
          await run('sampled', () => backend.sampled({
            ...sorted,
            nk: step.nk,
            samples: randomness.samples[step.draw].subarray(slice, slice + m),
            lseOffset: Math.log(step.nk / m), dst: { ...dst, write: merge },
          }));
          tick();
        }
        if (step.merge) {
          await run('merge', () => backend.merge({
            src: { out: { buf: tmpOut, row: 0 }, lse: { buf: tmpLse, row: 0 } }, dst: toOut, rows: sub.qReal, dv,
          }));
          tick();
        }
      }
    }
  };
  // One slot (ctx.slots is 1 for these plans): one head per run.
  return { units, run: ([{ b, h }], kvChanged) => runHead(b, h, kvChanged) };
}

/** About 40 ms of exact attention on one WebAssembly thread: the grain of its progress. */
const EXACT_CHUNK_FLOPS = 1e9;
