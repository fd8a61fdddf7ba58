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
  /**
   * exact causal attention of query rows [start, start + rows) against key rows [kStart,
   * kStart + keys), bottom-right aligned (keys >= rows: row r sees keys up to kStart + keys
   * - rows + r): the diagonal leaves, or the whole call when it runs exact
   */
  leaves: { start: number; rows: number; kStart: number; keys: number }[];
  /** in execution order, which is also the draw order (deepest level first) */
  steps: Step[];
  draws: Draw[];
}

/**
 * The accurate mode (docs/algorithm.md, "The accurate mode"): for query row i, every key j it
 * may see (j <= i + nk - nq, its key position, when causal) is counted by exactly one part.
 * Exact parts, in order: the columns (the first `sinkKeys` keys and the `heavyKeys` keys
 * that the probe rows put the most mass on), the window (`window` keys from i + winLo, at
 * least one: the query's own position; not causal, kept inside the keys), and for each of `rounds` LSH tables of r bits the first
 * `cap` keys of the query's bucket. The rest is estimated from sampled keys, drawn per
 * segment of query rows.
 */
export interface AccuratePlan {
  kind: 'accurate';
  sinkKeys: number;
  heavyKeys: number;
  /** query rows that probe for heavy columns (causal: the last ones, which see the most keys; else evenly spaced) */
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

/**
 * Everything the call will do, the same for every (batch, head) at first: `checks` exact
 * check rows per head measure each head's error (0: none), and a head that misses the
 * tolerance moves up the ladder (planLadder; verified.ts).
 */
export type Plan = (AuthorsPlan | AccuratePlan) & { checks: number };

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
  /** whether heads are checked against a tolerance (verified.ts) */
  checked: boolean;
  /** the caller's check rows per head; undefined: about CHECK_SHARE of the plan's work */
  checkRows: number | undefined;
}

/**
 * Causal sampling, in key positions (row i at position i + nk - nq). Query rows go in
 * segments of `window` positions [s, s + window), and a segment draws its samples from keys
 * [0, s): every row of it sees all of them, and the keys from s up to the row are in its
 * window (the segment at s = 0 has no remainder). With a window under MIN_WINDOW_SEGMENT,
 * segments of SAMPLE_SEGMENT positions draw from the keys up to their last row's position
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

/**
 * Query-key pairs of causal attention of nq queries against nk keys, bottom-right aligned
 * (query i at key position nk - nq + i sees the keys up to it): nq·(nk − nq) + nq(nq + 1)/2.
 */
export function causalPairs(nq: number, nk: number): number {
  return nq * (nk - nq) + (nq * (nq + 1)) / 2;
}

/** Whether a call of this size runs exact rather than approximated (the cutoff minSeqLen). */
function runsExact(p: PlanParams): boolean {
  return p.exact || (p.causal ? p.nk <= p.minSeqLen : p.nq < p.minSeqLen);
}

export function buildPlan(p: PlanParams): Plan {
  const plan = p.mode === 'accurate' && !runsExact(p) ? accuratePlan(p) : authorsPlan(p);
  const approximate = plan.kind === 'accurate' || plan.steps.some((s) => s.kind === 'hyper');
  return { ...plan, checks: p.checked && approximate ? checkRowCount(plan, p) : 0 };
}

/**
 * Check rows cost exact attention over every key a row sees; by default they take about this
 * share of the work of the call's plan, within [MIN_AUTO_CHECKS, MAX_AUTO_CHECKS] rows per head.
 */
const CHECK_SHARE = 0.08;
const MIN_AUTO_CHECKS = 32;
const MAX_AUTO_CHECKS = 256;

function checkRowCount(plan: AuthorsPlan | AccuratePlan, p: PlanParams): number {
  const { nq, nk, causal } = p;
  if (p.checkRows !== undefined) return Math.min(p.checkRows, nq);
  const perRow = causal ? causalPairs(nq, nk) / nq : nk;
  const rows = Math.round((CHECK_SHARE * keysPerRow(plan, nq, nk, causal) * nq) / perRow);
  return Math.min(nq, Math.max(MIN_AUTO_CHECKS, Math.min(MAX_AUTO_CHECKS, rows)));
}

function accuratePlan(p: PlanParams): AccuratePlan {
  const { nq, nk, causal } = p;
  const sinkKeys = Math.min(p.sinkKeys, nk);
  const heavyKeys = Math.min(p.heavyKeys, nk - sinkKeys);
  const probes = heavyKeys > 0 ? Math.min(p.probeQueries, nq) : 0;
  const probeRows = Array.from({ length: probes }, (_, t) =>
    causal ? nq - probes + t : Math.floor(((t + 0.5) * nq) / probes));
  // At least the query's own position: without it a row whose other parts count no key (no
  // sinks, no heavy column it sees, an empty bucket, no sample it sees) would have no softmax.
  const window = Math.min(Math.max(p.window, 1), nk);
  // Query i sits at key position i + (nk - nq) (queries are the last nq positions, as in a
  // key-value cache or a causal chunk). Causal: the window ends at the query; otherwise
  // it is centred on it.
  const offset = nk - nq;
  const winLo = causal ? offset + 1 - window : offset - Math.floor(window / 2);
  const segments: AccuratePlan['segments'] = [];
  const draws: Draw[] = [];
  if (p.sampleSize > 0) {
    const behind = causal && window >= MIN_WINDOW_SEGMENT;
    const length = !causal ? nq : behind ? window : SAMPLE_SEGMENT;
    // Causal segments are runs [s, s + length) of key positions, s a multiple of length: the
    // rows of a chunk draw from the keys that the same rows of a call with as many queries
    // as keys draw from.
    const base = causal ? offset : 0;
    for (let s = base - (base % length); s < base + nq; s += length) {
      const qFrom = Math.max(s, base) - base;
      const qTo = Math.min(s + length, base + nq) - base;
      const high = !causal ? nk : behind ? s : base + qTo;
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
  if (p.exact || p.nk <= p.minSeqLen) {
    plan.leaves.push({ start: 0, rows: p.nq, kStart: 0, keys: p.nk });
    return plan;
  }

  // Fewer queries than keys: the queries are the last nq of the nk rows of the recursion a
  // call with as many queries as keys makes, and take the same steps while they all lie in
  // the lower half of a level: that level's lower-left square becomes a non-causal step of
  // every query against the level's first half of keys, and the recursion goes on in the
  // lower half (real rows of a level first, then pads, as below).
  const offset = p.nk - p.nq;
  let start = 0;
  let real = p.nk;
  let pads = 0;
  for (let n = real; n > p.minSeqLen; n = real + pads) {
    const h = (n + (n % 2)) / 2;
    if (offset < start + h) break;
    plan.steps.push(nonCausal([{ qStart: 0, qReal: p.nq, qPads: 0, kStart: start }], p.nq, h, true));
    pads = n + (n % 2) - real;
    real -= h;
    start += h;
  }
  if (real + pads <= p.minSeqLen) {
    plan.leaves.push({ start: 0, rows: p.nq, kStart: start, keys: real });
    return plan;
  }

  // Causal recursion, over the square of the queries and the last nq keys (the queries sit
  // at key positions offset + i). A sub-head is a run of real rows followed by zero pad
  // rows; pads only ever sit at the end, so they are queries that nothing real attends to.
  const recurse = (subs: { start: number; real: number; pads: number }[]) => {
    const n = subs[0].real + subs[0].pads;
    if (n <= p.minSeqLen) {
      for (const s of subs) {
        if (s.real > 0) plan.leaves.push({ start: s.start, rows: s.real, kStart: offset + s.start, keys: s.real });
      }
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
    const lowerLeft = subs.map((s) => ({ qStart: s.start + h, qReal: s.real - h, qPads: n2 - s.real, kStart: offset + s.start }));
    plan.steps.push(nonCausal(lowerLeft, h, h, true));
  };
  recurse([{ start: 0, real: p.nq, pads: 0 }]);
  // Queries in both halves of a level: the recursion over their own square, and every query
  // against the level's keys before it in one non-causal step.
  if (offset > start) {
    plan.steps.push(nonCausal([{ qStart: 0, qReal: p.nq, qPads: 0, kStart: start }], p.nq, offset - start, true));
  }
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
      sinkKeys: 0, heavyKeys: 0, probeQueries: 1, window: 0, lshRounds: 0, checked: false, checkRows: undefined,
    };
  }
  return {
    ...base, exact: hyper.tolerance === 0, mode: hyper.mode, checked: hyper.tolerance !== Infinity, checkRows: hyper.checkRows, blockSize: hyper.blockSize, sampleSize: hyper.sampleSize,
    lshNumProjs: hyper.lshNumProjs, sinkKeys: hyper.sinkKeys, heavyKeys: hyper.heavyKeys,
    probeQueries: hyper.probeQueries, window: hyper.window, lshRounds: hyper.lshRounds,
  };
}

/**
 * The plans a head climbs when its measured error misses the call's tolerance (verified.ts),
 * after the call's own plan and before exact attention. Each is checked on the same rows.
 */
export type PlanName = 'accurate' | 'accurate-wide' | 'reference' | 'fixed' | 'exact';

export interface Rung {
  name: PlanName;
  params: PlanParams;
}

/**
 * A rung above exact costs at most this share of exact attention's keys per row: a head
 * that climbs past it to exact then pays at most about 1 + LADDER_SHARE of exact.
 */
const LADDER_SHARE = 0.15;

/**
 * LSH tables of the wide rung: a query finds a key at angle θ in one r-bit table with
 * probability (1 - θ/π)^r, in one of L tables with 1 - (1 - (1 - θ/π)^r)^L. A retrieval
 * head whose query matches its key in only part of the space (cos ≈ 0.7, p ≈ 0.76) needs
 * many tables of few bits: 8 tables of buckets about 64 keys deep (2 bits fewer than the
 * default) find it about 60% of the time at 16k keys, against 6% for one table of buckets
 * of 16 (16 tables: 85%, but the mask over earlier tables made them cost a third of exact
 * attention).
 */
const WIDE_ROUNDS = 8;
const WIDE_BUCKET_BITS_LESS = 2;

/**
 * The rungs of a call's plan: its own, then, in the accurate mode, the wide rung (a wider
 * window for wide local heads, more heavy columns, many LSH tables of bigger buckets for
 * retrieval heads, twice the samples for a less flat remainder) where it costs at most
 * LADDER_SHARE of exact attention. Exact attention is the last rung, implied.
 */
export function planLadder(p: PlanParams): Rung[] {
  const own: Rung = { name: p.mode, params: p };
  if (p.mode !== 'accurate' || runsExact(p)) return [own];
  const r = Math.max(1, bucketBits(p.nk, p.lshNumProjs) - WIDE_BUCKET_BITS_LESS);
  const wide: PlanParams = {
    ...p,
    window: Math.min(p.nk, p.causal ? 2 * p.window : 4 * Math.max(p.window, 64)),
    heavyKeys: 4 * p.heavyKeys,
    probeQueries: 2 * p.probeQueries,
    sampleSize: 2 * p.sampleSize,
    lshRounds: Math.max(WIDE_ROUNDS, p.lshRounds),
    lshNumProjs: r,
    // Buckets vary in depth: a cap of twice the mean keeps most of them whole.
    blockSize: Math.max(p.blockSize, 2 * Math.ceil(p.nk / (1 << r))),
  };
  const exactKeys = p.causal ? causalPairs(p.nq, p.nk) / p.nq : p.nk;
  const fits = keysPerRow(accuratePlan(wide), p.nq, p.nk, p.causal) <= LADDER_SHARE * exactKeys;
  return fits ? [own, { name: 'accurate-wide', params: wide }] : [own];
}

/**
 * About how many keys a plan attends to per query row, averaged over the rows (causal rows
 * see fewer keys the earlier they are): what its attention costs next to exact attention's
 * nk (causal causalPairs(nq, nk) / nq) keys per row.
 */
function keysPerRow(plan: AuthorsPlan | AccuratePlan, nq: number, nk: number, causal: boolean): number {
  const visible = causal ? causalPairs(nq, nk) / nq : nk;
  if (plan.kind === 'authors') {
    const exactRows = plan.leaves.reduce((sum, leaf) => sum + causalPairs(leaf.rows, leaf.keys), 0) +
      plan.steps.reduce((sum, s) => sum + (s.kind === 'exact' ? s.subs.reduce((a, sub) => a + sub.qReal, 0) * s.nk : 0), 0);
    const hyperRows = plan.steps.reduce((sum, s) =>
      sum + (s.kind === 'hyper' ? s.subs.reduce((a, sub) => a + sub.qReal, 0) * (s.kBlock + (s.draw >= 0 ? plan.draws[s.draw].count : 0)) : 0), 0);
    return Math.min(visible, (exactRows + hyperRows) / nq);
  }
  const bucket = Math.min(plan.cap, Math.ceil(nk / (1 << plan.r)));
  const samples = plan.draws.length > 0 ? plan.draws[0].count : 0;
  // A causal window of w keys covers min(w, p + 1) keys of the row at key position p.
  const window = causal ? Math.min(plan.window, visible) : plan.window;
  return Math.min(nk, plan.sinkKeys + plan.heavyKeys + window + plan.rounds * bucket + samples);
}
