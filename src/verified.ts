// Verified attention: every head's error measured on exact check rows, and a head whose
// error may exceed the call's tolerance moved up the ladder of plans (plan.ts, planLadder)
// until it meets it, ending in exact attention. The result says, per (batch, head), which
// plan ran, the estimated error and its bound (docs/verified.md).
import { HyperAttentionError } from './errors.ts';
import { isResident, runExact, runHyper, type CheckRows, type KeyValueInput, type RunScope } from './hyper.ts';
import type { AttentionResult } from './result.ts';
import type { Backend, OpTrace } from './ops.ts';
import type { ResolvedHyperOptions } from './options.ts';
import { buildPlan, planLadder, planParams, type Plan, type PlanName } from './plan.ts';
import { Xoshiro128 } from './random.ts';
import type { CheckedPlan, Verification } from './verification.ts';
import { isHostTensor, readRows, type AttentionShape, type InputTensor, type Tensor } from './tensor.ts';

/** Confidence of the error bound, and the normal quantile that gives it. */
const CONFIDENCE = 0.95;
const Z = 1.6449;

/**
 * A rung is tried for a head only while the head's estimated error is at most this many
 * times the tolerance: on the benchmark's heads the wide rung cut the error by 1.6-2.5x,
 * so a head further off would pay for it and then for exact attention too.
 */
const RUNG_REACH = 4;

/**
 * Check rows of one head, ascending: one uniformly drawn row in each of `count` equal strata
 * of [0, nq), so that every part of the sequence is checked (a causal head's error depends
 * on position). Rows in `avoid` (probe rows: heavy columns are chosen for them, so their
 * error is biased low) move to the next free row of the stratum, or the previous one.
 */
export function checkRowsOf(rng: Xoshiro128, nq: number, count: number, avoid: ReadonlySet<number>): Int32Array {
  const rows = new Int32Array(count);
  for (let t = 0; t < count; t++) {
    const lo = Math.floor((t * nq) / count);
    const hi = Math.floor(((t + 1) * nq) / count);
    let row = lo + rng.nextBelow(hi - lo);
    for (let step = 1; avoid.has(row) && step < hi - lo; step++) {
      const up = row + step < hi ? row + step : row - (hi - lo - step);
      if (!avoid.has(up)) row = up;
    }
    rows[t] = row;
  }
  return rows;
}

/**
 * The relative Frobenius error of a head's out, estimated from its check rows: the ratio of
 * the rows' squared errors to their squared exact norms, and an upper bound from the ratio
 * estimator's standard error (delta method) at CONFIDENCE, plus one more row as wrong as
 * the worst one seen. That last term is for heavy tails: a retrieval head whose LSH misses
 * a few queries' targets has a few rows with most of its error, which few check rows
 * catch, and the standard error of the rows that were caught says nothing about them (on
 * the benchmark, the delta method alone held retrieval heads on 93% of draws). Non-finite
 * output is an infinite error.
 */
export function headError(out: Float32Array, exact: Float32Array, rows: Int32Array, dv: number): { error: number; bound: number } {
  const c = rows.length;
  const e = new Float64Array(c);
  const x = new Float64Array(c);
  let sumE = 0;
  let sumX = 0;
  for (let t = 0; t < c; t++) {
    const at = rows[t] * dv;
    for (let j = 0; j < dv; j++) {
      const ref = exact[t * dv + j];
      const diff = out[at + j] - ref;
      e[t] += diff * diff;
      x[t] += ref * ref;
    }
    sumE += e[t];
    sumX += x[t];
  }
  if (!Number.isFinite(sumE)) return { error: Infinity, bound: Infinity };
  if (sumX === 0) return sumE === 0 ? { error: 0, bound: 0 } : { error: Infinity, bound: Infinity };
  const ratio = sumE / sumX;
  let spread = 0;
  let worst = 0;
  for (let t = 0; t < c; t++) {
    spread += (e[t] - ratio * x[t]) ** 2;
    worst = Math.max(worst, e[t]);
  }
  const se = c > 1 ? (Math.sqrt((spread * c) / (c - 1)) / sumX) : Infinity;
  return { error: Math.sqrt(ratio), bound: Math.sqrt(ratio + Z * se + worst / sumX) };
}

const EXACTLY: CheckedPlan = { plan: 'exact', error: 0, bound: 0 };

/** The verification of a call whose plan is exact attention alone: every head exact, unchecked. */
export function exactVerification(o: ResolvedHyperOptions, B: number, H: number): Verification {
  return {
    tolerance: o.tolerance, confidence: CONFIDENCE, checkRows: 0,
    heads: Array.from({ length: B * H }, (_, h) => ({ batch: Math.floor(h / H), head: h % H, ...EXACTLY, tried: [EXACTLY] })),
  };
}

/**
 * HyperAttention with verification: the plan on every head with exact attention at each
 * head's check rows in the same pass, then, for the heads whose bound exceeds the
 * tolerance, each higher rung of the ladder on those heads alone (checked on the same
 * rows, whose exact results are kept), then exact attention for the heads still above it.
 * Heads in `exactFirst` (flat b * H + h) skip the ladder and run exact attention at once:
 * a caller that has seen them fail it (a cache's previous call, cache.ts) saves their
 * plans' work.
 */
export async function runVerified(
  backend: Backend, shape: AttentionShape, o: ResolvedHyperOptions, q: InputTensor, k: KeyValueInput, v: KeyValueInput,
  trace: OpTrace[] | undefined, plan: Plan = buildPlan(planParams(shape, o, o)), exactFirst: ReadonlySet<number> = new Set(),
): Promise<AttentionResult> {
  const { B, H, nq, d, dv } = shape;
  const heads = B * H;
  // Checks gather q's rows on the host (a call with output 'gpu' never gets here: index.ts).
  const onHost = isHostTensor(q) && [k, v].every((t) => isResident(t) || isHostTensor(t));
  if (!onHost && o.toleranceGiven && o.tolerance !== Infinity) {
    throw new HyperAttentionError('UNSUPPORTED', `tolerance ${o.tolerance}: checks need host tensors and results; leave tolerance out or pass Infinity`);
  }
  const exactPlan = plan.kind === 'authors' && plan.steps.every((s) => s.kind === 'exact');
  const c = plan.checks;
  const report = (checkRows: number, at: (h: number) => CheckedPlan[]): Verification => ({
    tolerance: o.tolerance, confidence: CONFIDENCE, checkRows,
    heads: Array.from({ length: heads }, (_, h) => {
      const tried = at(h);
      return { batch: Math.floor(h / H), head: h % H, ...tried[tried.length - 1], tried };
    }),
  });
  if (!onHost || o.tolerance === Infinity) return runHyper(backend, shape, o, q, k, v, 'host', trace, plan);
  if (exactPlan) return { ...(await runHyper(backend, shape, o, q, k, v, 'host', trace, plan)), verification: exactVerification(o, B, H) };

  const ladder = planLadder(planParams(shape, o, o));
  const plans = ladder.map((rung, i) => (i === 0 ? plan : buildPlan(rung.params)));
  const avoid = new Set(plans.flatMap((p) => (p.kind === 'accurate' ? p.probeRows : [])));
  // Check rows come from their own generator: the plan's draws stay what the seed gives.
  const rng = new Xoshiro128((o.seed ^ 0x5bd1e995) >>> 0);
  const rows = new Int32Array(heads * c);
  const qRows = new Float32Array(heads * c * d);
  for (let h = 0; h < heads; h++) {
    const mine = checkRowsOf(rng, nq, c, avoid);
    rows.set(mine, h * c);
    // Read as the work reads inputs: a q changed since the call was made is a typed error.
    for (let t = 0; t < c; t++) qRows.set(readRows(q as Tensor, (h * nq + mine[t]) * d, d), (h * c + t) * d);
  }
  const checks: CheckRows = { count: c, rows, q: qRows, out: new Float32Array(heads * c * dv), lse: new Float32Array(heads * c) };

  // Progress runs over every pass: a pass that moves heads up adds its work to the total.
  let base = 0;
  const passOptions = (): ResolvedHyperOptions => {
    if (!o.onProgress) return o;
    const from = base;
    return {
      ...o,
      onProgress: (p) => {
        o.onProgress!({ done: from + p.done, total: from + p.total });
        base = from + p.total;
      },
    };
  };

  const tried: CheckedPlan[][] = Array.from({ length: heads }, () => []);
  const planned = Array.from({ length: heads }, (_, h) => h).filter((h) => !exactFirst.has(h));
  const result = planned.length > 0
    ? await runHyper(backend, shape, passOptions(), q, k, v, 'host', trace, plan, { checks, heads: exactFirst.size > 0 ? planned : undefined })
    : await runExact(backend, shape, passOptions(), q, k, v, 'host', trace);
  const into = { out: result.out.data, lse: result.lse.data };
  const measure = (h: number, name: PlanName): boolean => {
    const m = headError(
      into.out.subarray(h * nq * dv, (h + 1) * nq * dv), checks.out.subarray(h * c * dv, (h + 1) * c * dv),
      rows.subarray(h * c, (h + 1) * c), dv,
    );
    tried[h].push({ plan: name, ...m });
    return m.bound > o.tolerance;
  };
  let failing = planned.filter((h) => measure(h, ladder[0].name));
  for (let level = 1; level < ladder.length && failing.length > 0; level++) {
    const climbing = failing.filter((h) => tried[h][tried[h].length - 1].error <= RUNG_REACH * o.tolerance);
    if (climbing.length === 0) break;
    // The caller's projections and sampler are for the call's own plan; a higher rung draws its own.
    const rungO = { ...passOptions(), projections: undefined, sampler: undefined, seed: (o.seed + level * 0x9e3779b9) >>> 0 };
    const scope: RunScope = { heads: climbing, into };
    await runHyper(backend, shape, rungO, q, k, v, 'host', trace, plans[level], scope);
    const missed = new Set(climbing.filter((h) => measure(h, ladder[level].name)));
    failing = failing.filter((h) => !climbing.includes(h) || missed.has(h));
  }
  // The heads still above the tolerance and those that skipped the ladder, unless the
  // first pass was exact attention for every head.
  const exactHeads = [...failing, ...exactFirst].sort((a, b) => a - b);
  if (planned.length > 0 && exactHeads.length > 0) {
    await runExact(backend, shape, passOptions(), q, k, v, 'host', trace, undefined, { heads: exactHeads, into });
  }
  for (const h of exactHeads) tried[h].push(EXACTLY);
  const verification = report(c, (h) => tried[h]);
  for (const h of exactFirst) verification.heads[h].predicted = true;
  return { ...result, verification };
}
