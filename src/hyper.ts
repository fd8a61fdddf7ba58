// The algorithm, written once over the backend operations of ops.ts: planning of the
// causal recursion and the non-causal steps (ALGORITHM.md), the random draws in their
// order, and the per-head execution. Backends never see recursion, sampling or modes.
import { HyperAttentionError } from './errors.ts';
import { placementOf, type Backend, type BackendBuffer, type Destination, type Mode, type OpName, type OpTrace, type WriteMode } from './ops.ts';
import type { Output, ResolvedExactOptions, ResolvedHyperOptions } from './options.ts';
import type { CallProfile } from './scheduler/index.ts';
import { Xoshiro128, gaussianProjections, uniformSampler, type Sampler } from './random.ts';
import { checkFinite, isHostTensor, type AttentionShape, type GPUTensor, type InputTensor, type Tensor } from './tensor.ts';

/**
 * One sub-head of a step: query rows [qStart, qStart + qReal) of the original head followed
 * by qPads zero rows (causal padding), against key rows [kStart, kStart + nk).
 */
export interface SubProblem {
  qStart: number;
  qReal: number;
  qPads: number;
  kStart: number;
}

/** A non-causal attention step over every sub-head of a recursion level. */
export interface Step {
  kind: 'exact' | 'hyper';
  subs: SubProblem[];
  /** query rows per sub-head, padding included (the same for every sub-head) */
  nq: number;
  nk: number;
  /** lower-left square of a causal level: merged into the rows' recursive result */
  merge: boolean;
  /** sorted queries per block, keys per block (b), number of blocks */
  qBlock: number;
  kBlock: number;
  nBlocks: number;
  /** index into Plan.draws, or -1 when the sampled residual is skipped */
  draw: number;
}

export interface Draw {
  /** sub-heads per batch entry: H times the sub-heads of one original head */
  heads: number;
  count: number;
  high: number;
}

/** Everything the call will do, the same for every (batch, head). */
export interface Plan {
  /** exact causal attention on rows [start, start + rows) (diagonal leaves) */
  leaves: { start: number; rows: number }[];
  /** in execution order, which is also the draw order (deepest level first) */
  steps: Step[];
  draws: Draw[];
}

export interface PlanParams {
  nq: number;
  nk: number;
  H: number;
  causal: boolean;
  exact: boolean;
  blockSize: number;
  sampleSize: number;
  minSeqLen: number;
}

export function buildPlan(p: PlanParams): Plan {
  const plan: Plan = { leaves: [], steps: [], draws: [] };
  const b = p.blockSize;
  const m = p.sampleSize;

  const nonCausal = (subs: SubProblem[], nq: number, nk: number, merge: boolean): Step => {
    if (p.exact || nq < p.minSeqLen) {
      return { kind: 'exact', subs, nq, nk, merge, qBlock: 0, kBlock: 0, nBlocks: 0, draw: -1 };
    }
    const nBlocks = Math.ceil(nk / b);
    const qBlock = Math.floor((Math.ceil(nq / b) * b) / nBlocks);
    let draw = -1;
    if (m > 0 && nq > qBlock && nk > b) {
      draw = plan.draws.length;
      plan.draws.push({ heads: p.H * subs.length, count: m, high: nk });
    }
    return { kind: 'hyper', subs, nq, nk, merge, qBlock, kBlock: b, nBlocks, draw };
  };

  if (!p.causal) {
    plan.steps.push(nonCausal([{ qStart: 0, qReal: p.nq, qPads: 0, kStart: 0 }], p.nq, p.nk, false));
    return plan;
  }

  // Causal recursion. A sub-head is a run of real rows followed by zero pad rows; pads
  // only ever sit at the end, so they are queries that nothing real attends to.
  const recurse = (subs: { start: number; real: number; pads: number }[]) => {
    const n = subs[0].real + subs[0].pads;
    if (p.exact || n <= p.minSeqLen) {
      for (const s of subs) if (s.real > 0) plan.leaves.push({ start: s.start, rows: s.real });
      return;
    }
    const n2 = n + (n % 2);
    const h = n2 / 2;
    for (const s of subs) {
      if (s.real < h) {
        throw new HyperAttentionError(
          'INVALID_OPTION',
          `minSeqLen ${p.minSeqLen} is too small for causal n = ${p.nq}: the recursion reaches sub-heads of ${n} rows of which only ${s.real} are real; use a larger minSeqLen`,
        );
      }
    }
    recurse(subs.flatMap((s) => [
      { start: s.start, real: h, pads: 0 },
      { start: s.start + h, real: s.real - h, pads: n2 - s.real },
    ]));
    const lowerLeft = subs.map((s) => ({ qStart: s.start + h, qReal: s.real - h, qPads: n2 - s.real, kStart: s.start }));
    plan.steps.push(nonCausal(lowerLeft, h, h, true));
  };
  recurse([{ start: 0, real: p.nq, pads: 0 }]);
  return plan;
}

interface Randomness {
  projections: Float32Array;
  samples: Int32Array[];
}

/** The LSH projections of a call: the caller's (checked), else the generator's first draw. */
export function callProjections(o: ResolvedHyperOptions, d: number, rng: Xoshiro128): Float32Array {
  const r = o.lshNumProjs;
  if (!o.projections) return gaussianProjections(rng, d, r);
  if (o.projections.length !== d * r) {
    throw new HyperAttentionError(
      'INVALID_OPTION',
      `projections: expected ${d * r} values ([D = ${d}, lshNumProjs = ${r}]), got ${o.projections.length}`,
    );
  }
  checkFinite('projections', o.projections);
  return o.projections;
}

function drawRandomness(plan: Plan, shape: AttentionShape, o: ResolvedHyperOptions): Randomness {
  const rng = new Xoshiro128(o.seed);
  const projections = callProjections(o, shape.d, rng);
  const sampler: Sampler = o.sampler ?? uniformSampler(rng);
  const samples = plan.draws.map((draw, index) => {
    const request = { index, batch: shape.B, heads: draw.heads, count: draw.count, high: draw.high };
    const s = sampler(request);
    const expected = shape.B * draw.heads * draw.count;
    if (!(s instanceof Int32Array) || s.length !== expected) {
      throw new HyperAttentionError(
        'INVALID_SAMPLER_OUTPUT',
        `sampler: draw ${index} ([${shape.B}, ${draw.heads}, ${draw.count}] over [0, ${draw.high})) must return an Int32Array of ${expected} values, got ${s instanceof Int32Array ? `length ${s.length}` : String(s)}`,
      );
    }
    for (let i = 0; i < s.length; i++) {
      if (s[i] < 0 || s[i] >= draw.high) {
        throw new HyperAttentionError(
          'INVALID_SAMPLER_OUTPUT',
          `sampler: draw ${index} value ${i} is ${s[i]}, outside [0, ${draw.high})`,
        );
      }
    }
    return s;
  });
  return { projections, samples };
}

export interface AttentionResult {
  out: Tensor;
  lse: Tensor;
  /** with option profile: true, the plan and each step's measured time */
  profile?: CallProfile;
}

/** The result of a call with output 'gpu': new buffers on the call's device, the caller's to destroy. */
export interface GPUAttentionResult {
  out: GPUTensor & { dtype: 'float32' };
  lse: GPUTensor & { dtype: 'float32' };
  /** with option profile: true, the plan and each step's measured time */
  profile?: CallProfile;
}

/** The result type of a call whose `output` is O (a union gives the union). */
export type ResultFor<O extends Output | undefined> = O extends 'gpu' ? GPUAttentionResult : AttentionResult;

/**
 * Exact attention, as the one-step plan of the same executor. `output` must be o.output;
 * it is a parameter so that the result type follows it.
 */
export function runExact<O extends Output = 'host'>(
  backend: Backend, shape: AttentionShape, o: ResolvedExactOptions, q: InputTensor, k: InputTensor, v: InputTensor,
  output: O = 'host' as O, trace?: OpTrace[],
): Promise<ResultFor<O>> {
  const plan = buildPlan({
    nq: shape.nq, nk: shape.nk, H: shape.H, causal: o.causal, exact: true, blockSize: 1, sampleSize: 0, minSeqLen: 0,
  });
  const randomness = { projections: new Float32Array(0), samples: [] };
  return execute(backend, shape, plan, o, 'fixed', 1, randomness, q, k, v, output, trace) as Promise<ResultFor<O>>;
}

/** HyperAttention; `output` as for runExact. A trace, when given, gets every op's time. */
export function runHyper<O extends Output = 'host'>(
  backend: Backend, shape: AttentionShape, o: ResolvedHyperOptions, q: InputTensor, k: InputTensor, v: InputTensor,
  output: O = 'host' as O, trace?: OpTrace[],
): Promise<ResultFor<O>> {
  const plan = buildPlan({
    nq: shape.nq, nk: shape.nk, H: shape.H, causal: o.causal, exact: false,
    blockSize: o.blockSize, sampleSize: o.sampleSize, minSeqLen: o.minSeqLen,
  });
  const randomness = drawRandomness(plan, shape, o);
  return execute(backend, shape, plan, o, o.mode, o.lshNumProjs, randomness, q, k, v, output, trace) as Promise<ResultFor<O>>;
}

async function execute(
  backend: Backend, shape: AttentionShape, plan: Plan, o: ResolvedExactOptions, mode: Mode, r: number,
  randomness: Randomness, q: InputTensor, k: InputTensor, v: InputTensor, output: Output, trace?: OpTrace[],
): Promise<AttentionResult | GPUAttentionResult> {
  const { B, H, Hkv, nq, nk, d, dv } = shape;
  const scale = o.scale ?? 1 / Math.sqrt(d);
  const group = H / Hkv;
  const merge: WriteMode = mode === 'reference' ? 'merge-reference' : 'merge-fixed';
  const hashes = plan.steps.some((s) => s.kind === 'hyper');
  const tempRows = Math.max(0, ...plan.steps.filter((s) => s.merge && s.kind === 'hyper').map((s) => s.nq));

  const onDevice = output === 'gpu' || ![q, k, v].every(isHostTensor);
  if (onDevice && !(backend.copyFromDevice && backend.createDeviceBuffer && backend.exportToDevice && backend.finish)) {
    throw new HyperAttentionError('INVALID_OPTION', `GPU tensors and output 'gpu' need the WebGPU backend, not '${backend.name}'`);
  }
  const out = output === 'host' ? new Float32Array(B * H * nq * dv) : undefined;
  const lse = output === 'host' ? new Float32Array(B * H * nq) : undefined;
  /**
   * Runs one op. When tracing, waits until it has run (an asynchronous backend is synced)
   * and records how long it took: the ops then no longer overlap, so a traced call is slower.
   */
  const run = async (op: OpName, fn: () => void | Promise<void>): Promise<void> => {
    if (!trace) return fn();
    const device = placementOf(backend.name)[op];
    const start = performance.now();
    await fn();
    if (device === 'webgpu') await backend.sync?.();
    trace.push({ op, device, ms: performance.now() - start });
  };
  // The readback of head h is awaited only once head h + 1 is issued, so that the CPU
  // prepares (and, in the hybrid, hashes and sorts) the next head while the GPU computes.
  let pending: Promise<void> | undefined;
  try {
    /** Head `index` of t ([*, rows, width]) into buf, from the host or on the device. */
    const load = (buf: BackendBuffer, t: InputTensor, index: number, rows: number, width: number) => {
      const n = rows * width;
      return run('upload', () => {
        if (isHostTensor(t)) backend.upload(buf, t.data.subarray(index * n, (index + 1) * n));
        else backend.copyFromDevice!(buf, 0, t.buffer, index * n * 4, n);
      });
    };
    const f32 = (n: number) => backend.createBuffer('f32', Math.max(1, n));
    const i32 = (n: number) => backend.createBuffer('i32', Math.max(1, n));
    const qBuf = f32(nq * d);
    const kBuf = f32(nk * d);
    const vBuf = f32(nk * dv);
    const outBuf = f32(nq * dv);
    const lseBuf = f32(nq);
    const tmpOut = f32(tempRows * dv);
    const tmpLse = f32(tempRows);
    const outGpu = out ? undefined : backend.createDeviceBuffer!(B * H * nq * dv);
    const lseGpu = out ? undefined : backend.createDeviceBuffer!(B * H * nq);
    let qKeys: BackendBuffer | undefined;
    let kKeys: BackendBuffer | undefined;
    let qPerm: BackendBuffer | undefined;
    let kPerm: BackendBuffer | undefined;
    let proj: BackendBuffer | undefined;
    if (hashes) {
      qKeys = i32(nq);
      kKeys = i32(nk);
      qPerm = i32(nq);
      kPerm = i32(nk);
      proj = f32(d * r);
      const projections = proj;
      await run('upload', () => backend.upload(projections, randomness.projections));
    }

    let loadedKv = -1;
    for (let b = 0; b < B; b++) {
      for (let h = 0; h < H; h++) {
        const head = b * H + h;
        const kvHead = b * Hkv + Math.floor(h / group);
        await load(qBuf, q, head, nq, d);
        if (kvHead !== loadedKv) {
          await load(kBuf, k, kvHead, nk, d);
          await load(vBuf, v, kvHead, nk, dv);
          if (kKeys && proj) {
            const keys = { buf: kKeys, row: 0 };
            await run('hash', () => backend.hash({ x: { buf: kBuf, row: 0 }, rows: nk, d, proj: proj!, r, mode, keys }));
          }
          loadedKv = kvHead;
        }
        if (qKeys && proj) {
          const keys = { buf: qKeys, row: 0 };
          await run('hash', () => backend.hash({ x: { buf: qBuf, row: 0 }, rows: nq, d, proj: proj!, r, mode, keys }));
        }

        for (const leaf of plan.leaves) {
          await run('exact', () => backend.exact({
            q: { buf: qBuf, row: leaf.start }, k: { buf: kBuf, row: leaf.start }, v: { buf: vBuf, row: leaf.start },
            nq: leaf.rows, nk: leaf.rows, d, dv, scale, causal: true, causalOffset: 0,
            dst: { out: { buf: outBuf, row: leaf.start }, lse: { buf: lseBuf, row: leaf.start }, write: 'write' },
          }));
        }

        for (const step of plan.steps) {
          for (const [t, sub] of step.subs.entries()) {
            const toOut: Destination = {
              out: { buf: outBuf, row: sub.qStart }, lse: { buf: lseBuf, row: sub.qStart }, write: step.merge ? merge : 'write',
            };
            const qv = { buf: qBuf, row: sub.qStart };
            const kv = { buf: kBuf, row: sub.kStart };
            const vv = { buf: vBuf, row: sub.kStart };
            if (step.kind === 'exact') {
              await run('exact', () => backend.exact({
                q: qv, k: kv, v: vv, nq: sub.qReal, nk: step.nk, d, dv, scale, causal: false, causalOffset: 0, dst: toOut,
              }));
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
            if (step.draw >= 0) {
              const m = plan.draws[step.draw].count;
              const slice = (b * step.subs.length * H + h * step.subs.length + t) * m;
              await run('sampled', () => backend.sampled({
                ...sorted,
                nk: step.nk,
                samples: randomness.samples[step.draw].subarray(slice, slice + m),
                lseOffset: Math.log(step.nk / m), dst: { ...dst, write: merge },
              }));
            }
            if (step.merge) {
              await run('merge', () => backend.merge({
                src: { out: { buf: tmpOut, row: 0 }, lse: { buf: tmpLse, row: 0 } }, dst: toOut, rows: sub.qReal, dv,
              }));
            }
          }
        }

        const progress = { done: head + 1, total: B * H };
        if (out && lse) {
          const readback = run('download', () => Promise.all([
            backend.download(outBuf, 0, nq * dv, out, head * nq * dv),
            backend.download(lseBuf, 0, nq, lse, head * nq),
          ]).then(() => {}));
          const previous = pending;
          pending = Promise.all([previous, readback]).then(() => o.onProgress?.(progress));
          pending.catch(() => {});
          await (trace ? pending : previous);
        } else {
          backend.exportToDevice!(outBuf, 0, outGpu!, head * nq * dv * 4, nq * dv);
          backend.exportToDevice!(lseBuf, 0, lseGpu!, head * nq * 4, nq);
          o.onProgress?.(progress);
        }
      }
    }
    if (out && lse) {
      await pending;
      return { out: { data: out, shape: [B, H, nq, dv] }, lse: { data: lse, shape: [B, H, nq] } };
    }
    // Nothing was read back: this runs the work, and reports its errors.
    await backend.finish!();
    return {
      out: { buffer: outGpu!, shape: [B, H, nq, dv], dtype: 'float32' },
      lse: { buffer: lseGpu!, shape: [B, H, nq], dtype: 'float32' },
    };
  } finally {
    // A failed call may leave a readback in flight; its buffers go back only once it settles.
    await pending?.catch(() => {});
    backend.releaseAll();
  }
}
