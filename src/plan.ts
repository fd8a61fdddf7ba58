// The plan of a call: everything it will do, the same for every (batch, head), built once
// from the shape and options. The scheduler prices plans (scheduler/cost.ts) and the
// executor (hyper.ts) runs the chosen one as it is. Two kinds: the authors' algorithm
// ('reference' and 'fixed' modes: the causal recursion and its non-causal steps, with the
// random draws in the authors' order, docs/algorithm.md) and the accurate mode's parts.
import { HyperAttentionError } from './errors.ts';
import type { Mode, ResolvedHyperOptions } from './options.ts';
import type { AttentionShape } from './tensor.ts';

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

/** The authors' algorithm ('reference' and 'fixed' modes), or exact attention. */
export interface AuthorsPlan {
  kind: 'authors';
  /** exact causal attention on rows [start, start + rows) (diagonal leaves) */
  leaves: { start: number; rows: number }[];
  /** in execution order, which is also the draw order (deepest level first) */
  steps: Step[];
  draws: Draw[];
}

/**
 * The accurate mode (docs/algorithm.md, "The accurate mode"): for query row i, every key j it
 * may see (j <= i when causal) is counted by exactly one part. Exact parts, in order:
 * the columns (the first `sinkKeys` keys and the `heavyKeys` keys that the probe rows put
 * the most mass on), the window (`window` keys from i + winLo; not causal, kept inside
 * the keys), and for each of `rounds` LSH tables of r bits the first `cap` keys of the
 * query's bucket. The rest is estimated from sampled keys, drawn per segment of query rows.
 */
export interface AccuratePlan {
  kind: 'accurate';
  sinkKeys: number;
  heavyKeys: number;
  /** query rows that probe for heavy columns (the last ones when causal, else evenly spaced) */
  probeRows: number[];
  window: number;
  winLo: number;
  rounds: number;
  /** LSH projections (bits) per round: 2^r buckets */
  r: number;
  /** most keys a bucket counts exactly in one round */
  cap: number;
  /** the sampled remainder: query rows [qFrom, qTo) use draw `draw` */
  segments: { qFrom: number; qTo: number; draw: number }[];
  draws: Draw[];
}

/** Everything the call will do, the same for every (batch, head). */
export type Plan = AuthorsPlan | AccuratePlan;

export interface PlanParams {
  nq: number;
  nk: number;
  H: number;
  causal: boolean;
  exact: boolean;
  mode: Mode;
  blockSize: number;
  sampleSize: number;
  minSeqLen: number;
  lshNumProjs: number;
  /** the accurate mode's parts (ignored by the authors' modes) */
  sinkKeys: number;
  heavyKeys: number;
  probeQueries: number;
  window: number;
  lshRounds: number;
}

/**
 * Causal sampling. Query rows go in segments of `window` rows, and segment [qFrom, qTo)
 * draws its samples from keys [0, qFrom): every row of it sees all of them, and the keys
 * from qFrom up to the row are in its window (the first segment has no remainder). With a
 * window under MIN_WINDOW_SEGMENT, segments of SAMPLE_SEGMENT rows draw from [0, qTo)
 * instead, and a row uses the samples it may see.
 */
export const SAMPLE_SEGMENT = 1024;
const MIN_WINDOW_SEGMENT = 64;

/** Keys per LSH bucket that the accurate mode's default bit count aims at. */
export const BUCKET_KEYS = 16;

/**
 * LSH bits per round: the caller's lshNumProjs, or for 0 (the accurate mode's default)
 * enough that buckets hold about BUCKET_KEYS keys: a query then shares its bucket with
 * the keys most like it, whatever n is.
 */
export function bucketBits(nk: number, lshNumProjs: number): number {
  if (lshNumProjs > 0) return lshNumProjs;
  return Math.max(1, Math.min(16, Math.round(Math.log2(nk / BUCKET_KEYS))));
}

/** Whether a call of this size runs exact rather than approximated (the cutoff minSeqLen). */
function runsExact(p: PlanParams): boolean {
  return p.exact || (p.causal ? p.nk <= p.minSeqLen : p.nq < p.minSeqLen);
}

export function buildPlan(p: PlanParams): Plan {
  if (p.mode === 'accurate' && !runsExact(p)) return accuratePlan(p);
  return authorsPlan(p);
}

function accuratePlan(p: PlanParams): AccuratePlan {
  const { nq, nk, causal } = p;
  const sinkKeys = Math.min(p.sinkKeys, nk);
  const heavyKeys = Math.min(p.heavyKeys, nk - sinkKeys);
  const probes = heavyKeys > 0 ? Math.min(p.probeQueries, nq) : 0;
  const probeRows = Array.from({ length: probes }, (_, t) =>
    causal ? nq - probes + t : Math.floor(((t + 0.5) * nq) / probes));
  const window = Math.min(p.window, nk);
  // Causal: the window ends at the query. Otherwise query i sits at key position
  // i + (nk - nq) (queries are the last nq positions, as in a key-value cache), with the
  // window centred on it.
  const winLo = causal ? 1 - window : nk - nq - Math.floor(window / 2);
  const segments: AccuratePlan['segments'] = [];
  const draws: Draw[] = [];
  if (p.sampleSize > 0) {
    const behind = causal && window >= MIN_WINDOW_SEGMENT;
    const length = !causal ? nq : behind ? window : SAMPLE_SEGMENT;
    for (let qFrom = 0; qFrom < nq; qFrom += length) {
      const qTo = Math.min(nq, qFrom + length);
      const high = !causal ? nk : behind ? qFrom : qTo;
      if (high === 0) continue;
      segments.push({ qFrom, qTo, draw: draws.length });
      draws.push({ heads: p.H, count: p.sampleSize, high });
    }
  }
  return {
    kind: 'accurate', sinkKeys, heavyKeys, probeRows, window, winLo, rounds: p.lshRounds, r: bucketBits(nk, p.lshNumProjs),
    cap: p.blockSize, segments, draws,
  };
}

function authorsPlan(p: PlanParams): AuthorsPlan {
  const plan: AuthorsPlan = { kind: 'authors', leaves: [], steps: [], draws: [] };
  const b = p.blockSize;
  const m = p.sampleSize;

  const nonCausal = (subs: SubProblem[], nq: number, nk: number, merge: boolean): Step => {
    if (p.exact || nq < p.minSeqLen) {
      return { kind: 'exact', subs, nq, nk, merge, qBlock: 0, kBlock: 0, nBlocks: 0, draw: -1 };
    }
    const nBlocks = Math.ceil(nk / b);
    const qBlock = Math.floor((Math.ceil(nq / b) * b) / nBlocks);
    // Fewer padded queries than key blocks (a few queries against a long key cache, as in
    // decoding) leaves no query for most blocks: exact attention is the right plan there.
    if (qBlock < 1) return { kind: 'exact', subs, nq, nk, merge, qBlock: 0, kBlock: 0, nBlocks: 0, draw: -1 };
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


/**
 * The plan's parameters for a call: exactAttention's (hyper undefined) or
 * hyperAttention's options, with the cutoff minSeqLen (the scheduler may raise it).
 */
export function planParams(
  shape: AttentionShape, o: { causal: boolean }, hyper: ResolvedHyperOptions | undefined, minSeqLen = hyper?.minSeqLen ?? 0,
): PlanParams {
  const base = { nq: shape.nq, nk: shape.nk, H: shape.H, causal: o.causal, minSeqLen };
  if (!hyper) {
    return {
      ...base, exact: true, mode: 'fixed', blockSize: 1, sampleSize: 0, lshNumProjs: 1,
      sinkKeys: 0, heavyKeys: 0, probeQueries: 1, window: 0, lshRounds: 0,
    };
  }
  return {
    ...base, exact: false, mode: hyper.mode, blockSize: hyper.blockSize, sampleSize: hyper.sampleSize,
    lshNumProjs: hyper.lshNumProjs, sinkKeys: hyper.sinkKeys, heavyKeys: hyper.heavyKeys,
    probeQueries: hyper.probeQueries, window: hyper.window, lshRounds: hyper.lshRounds,
  };
}
