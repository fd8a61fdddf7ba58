// The headline figures, derived from a suite's cases: printed by the suites when they
// finish and rendered by the report, so both say the same thing. Pure functions.
import type { CaseResult } from './harness.ts';

export const ORT_NODE_MHA = 'onnxruntime-node MultiHeadAttention';
export const ORT_NODE_MHA_1T = 'onnxruntime-node MultiHeadAttention, 1 thread';
export const ORT_WEB_MHA = 'onnxruntime-web MultiHeadAttention';
export const ORT_WEB_DECOMPOSED = 'onnxruntime-web MatMul-Softmax-MatMul';
export const OURS_EXACT = 'exact (ours, wasm, 1 thread)';
/** HyperAttention with `tolerance: Infinity`: its plan alone, no checks or escalations. */
export const HYPER_UNCHECKED = 'hyper, tolerance Infinity';

/** The sizes at which the headline hyper-vs-peer ratio is reported (issue targets). */
export const HEADLINE_SIZES = [16384, 65536];

const ok = (c: CaseResult) => c.status === 'ok' && c.time !== undefined;

/**
 * e2e: onnxruntime-node's exact time over hyper's (cpu; `method`: 'hyper' or
 * HYPER_UNCHECKED), non-causal, d = 64, on the workload's inputs (results from before the
 * workload was recorded are gaussian).
 */
export function hyperVsOrtNode(cases: readonly CaseResult[], n: number, method = 'hyper', workload = 'gaussian'): number | null {
  const at = (name: string) =>
    cases.find((c) => ok(c) && c.method === name && c.backend !== 'webgpu' && c.params.n === n && c.params.d === 64 && c.params.causal === false &&
      (c.params.workload ?? 'gaussian') === workload);
  const hyper = at(method);
  const ort = at(ORT_NODE_MHA);
  return hyper && ort ? ort.time!.medianMs / hyper.time!.medianMs : null;
}

export interface ThroughputRatio {
  n: number;
  d: number;
  /** our exact GFLOP/s over the peer's */
  ratio: number;
  peer: string;
}

/** peers: our exact GFLOP/s over each peer method's, at every (n, d) where both ran. */
export function exactThroughputRatios(cases: readonly CaseResult[]): ThroughputRatio[] {
  const ratios: ThroughputRatio[] = [];
  for (const ours of cases.filter((c) => ok(c) && c.method === OURS_EXACT)) {
    for (const peer of cases.filter((c) => ok(c) && c.backend === 'peer' && c.params.n === ours.params.n && c.params.d === ours.params.d)) {
      ratios.push({ n: ours.params.n as number, d: ours.params.d as number, ratio: ours.metrics!.gflops / peer.metrics!.gflops, peer: peer.method });
    }
  }
  return ratios;
}

/**
 * The largest n (at d = 64) where our exact ran beside a peer of this package, and the
 * ratio against its fastest graph there (onnxruntime-web's fused kernel fails from 4096).
 */
export function ratioAtLargestN(ratios: ThroughputRatio[], peerPrefix: string, exclude: string[] = []): ThroughputRatio | null {
  const mine = ratios.filter((r) => r.d === 64 && r.peer.startsWith(peerPrefix) && !exclude.includes(r.peer));
  if (!mine.length) return null;
  const n = Math.max(...mine.map((r) => r.n));
  return mine.filter((r) => r.n === n).reduce((best, r) => (r.ratio < best.ratio ? r : best));
}

// --- accuracy ---

/** Heads per workload in the accuracy suites: the mixtures have one head per profile. */
const WORKLOAD_HEADS: Record<string, number> = { mixture: 4, llm: 8 };
export const headsOf = (workload: string): number => WORKLOAD_HEADS[workload] ?? 1;

/** The progress line of a case that measured errors. */
export function errorSummary(e: { relFrobenius: number; relToV: number; maxLseError: number }): string {
  return `rel. Frobenius ${e.relFrobenius.toExponential(2)}, rel. to V ${e.relToV.toExponential(2)}, max lse error ${e.maxLseError.toExponential(2)}`;
}

/** exp(mean(log x)): the average of ratios, which treats 2x and 0.5x alike. */
export function geometricMean(xs: readonly number[]): number {
  // An error of exactly 0 (a case computed exactly) would send the log to -inf.
  return Math.exp(xs.reduce((s, x) => s + Math.log(Math.max(x, 1e-12)), 0) / xs.length);
}

export interface ModeComparison {
  workload: string;
  /** the mode compared against 'reference' */
  mode: string;
  /** geometric means over the (n, causal) cases both ran of mode / reference */
  errorRatio: number;
  relToVRatio: number;
  lseRatio: number;
  timeRatio: number;
  cases: number;
}

/** The reference-mode case of the same workload, n and causal as `c`. */
function referenceOf(cases: readonly CaseResult[], c: CaseResult): CaseResult | undefined {
  return cases.find((r) => ok(r) && r.params.mode === 'reference' && ['workload', 'n', 'causal'].every((k) => r.params[k] === c.params[k]));
}

/** accuracy: each mode other than 'reference' against it, per workload, over every (n, causal) both ran. */
export function compareToReference(cases: readonly CaseResult[]): ModeComparison[] {
  const groups = new Map<string, { workload: string; mode: string; rows: number[][] }>();
  for (const c of cases) {
    if (!ok(c) || c.params.mode === 'reference') continue;
    const r = referenceOf(cases, c);
    if (!r) continue;
    const key = `${c.params.workload}/${c.params.mode}`;
    const g = groups.get(key) ?? { workload: String(c.params.workload), mode: String(c.params.mode), rows: [] };
    g.rows.push([
      c.metrics!.relFrobenius / r.metrics!.relFrobenius,
      c.metrics!.relToV / r.metrics!.relToV,
      c.metrics!.maxLseError / r.metrics!.maxLseError,
      c.time!.medianMs / r.time!.medianMs,
    ]);
    groups.set(key, g);
  }
  return [...groups.values()].map(({ workload, mode, rows }) => {
    const geo = (i: number) => geometricMean(rows.map((row) => row[i]));
    return { workload, mode, errorRatio: geo(0), relToVRatio: geo(1), lseRatio: geo(2), timeRatio: geo(3), cases: rows.length };
  });
}

export interface TargetRow {
  target: string;
  goal: string;
  measured: string;
  /** null: not measured */
  met: boolean | null;
}

const kLabel = (n: number) => (n >= 1024 ? `${n / 1024}k` : String(n));
const caseLabel = (c: CaseResult) => `${c.params.workload} n = ${kLabel(c.params.n as number)} ${c.params.causal ? 'causal' : 'non-causal'}`;
const NOT_MEASURED = (what: string): Pick<TargetRow, 'measured' | 'met'> => ({ measured: `not measured (${what})`, met: null });

/** The sizes at which the accurate mode's targets are checked (the quick run has only 16k). */
const TARGET_SIZES = [16384, 65536];
/** Accurate error over reference error that each mixed workload must reach (issue targets). */
const ERROR_RATIO_GOALS: [string, number][] = [['local', 0.5], ['llm', 0.5], ['mixture', 0.5], ['retrieval', 0.8], ['gaussian', 1.0]];
/** The accurate mode may cost this much more than the reference mode. */
const TIME_RATIO_GOAL = 1.6;
/** e2e: hyper (default mode) at least this much faster than our exact at n = 65536, non-causal. */
const SPEEDUP_GOAL = 50;

/**
 * The targets for the accurate mode, from the accuracy suite's cases (and the e2e
 * suite's for the speed-up over exact, when given): one row each, with what was measured.
 */
export function accurateTargets(accuracy: readonly CaseResult[], e2e: readonly CaseResult[] | null): TargetRow[] {
  const rows: TargetRow[] = [];
  const accurate = accuracy.filter((c) => ok(c) && c.params.mode === 'accurate');
  const atTargetSizes = accurate.filter((c) => TARGET_SIZES.includes(c.params.n as number));
  const sizesSeen = (cs: CaseResult[]) => [...new Set(cs.map((c) => kLabel(c.params.n as number)))].join(', ');

  // (a) heavy keys the accurate mode computes exactly: small absolute errors.
  for (const workload of ['sink', 'columns']) {
    const cs = atTargetSizes.filter((c) => c.params.workload === workload);
    for (const [metric, label, goal] of [['relFrobenius', 'rel. Frobenius', 0.1], ['maxLseError', 'max lse error', 0.5]] as const) {
      const target = `accurate ${label}, ${workload}, n = 16k and 64k, causal and not`;
      if (!cs.length) {
        rows.push({ target, goal: `<= ${goal}`, ...NOT_MEASURED('no case at these sizes') });
        continue;
      }
      const worst = cs.reduce((w, c) => (c.metrics![metric] > w.metrics![metric] ? c : w));
      const value = worst.metrics![metric];
      rows.push({
        target, goal: `<= ${goal}`, met: value <= goal,
        measured: `${value.toPrecision(2)} (worst of ${cs.length}: ${caseLabel(worst)}; sizes run: ${sizesSeen(cs)})`,
      });
    }
  }

  // (b) mixed workloads: against the reference mode's error, on average over n and causal.
  const comparisons = compareToReference(accuracy).filter((m) => m.mode === 'accurate');
  for (const [workload, goal] of ERROR_RATIO_GOALS) {
    const target = `accurate / reference rel. Frobenius, ${workload}`;
    const m = comparisons.find((x) => x.workload === workload);
    if (!m) {
      rows.push({ target, goal: `<= ${goal}x`, ...NOT_MEASURED('no accurate and reference pair') });
      continue;
    }
    rows.push({ target, goal: `<= ${goal}x`, met: m.errorRatio <= goal, measured: `${m.errorRatio.toPrecision(2)}x (geometric mean of ${m.cases} cases)` });
  }

  // (c) cost: the worst case, not the average, must stay within the budget.
  const timeTarget = `accurate / reference time per call, each workload, n = 16k and 64k, causal and not`;
  const timed = atTargetSizes.flatMap((c) => {
    const r = referenceOf(accuracy, c);
    return r ? [{ c, ratio: c.time!.medianMs / r.time!.medianMs }] : [];
  });
  if (!timed.length) rows.push({ target: timeTarget, goal: `<= ${TIME_RATIO_GOAL}x`, ...NOT_MEASURED('no case at these sizes') });
  else {
    const worst = timed.reduce((w, t) => (t.ratio > w.ratio ? t : w));
    rows.push({
      target: timeTarget, goal: `<= ${TIME_RATIO_GOAL}x`, met: worst.ratio <= TIME_RATIO_GOAL,
      measured: `${worst.ratio.toPrecision(3)}x (worst of ${timed.length}: ${caseLabel(worst.c)}; geometric mean ${geometricMean(timed.map((t) => t.ratio)).toPrecision(3)}x; sizes run: ${sizesSeen(timed.map((t) => t.c))})`,
    });
  }

  // (d) e2e: the default mode against exact attention, where exact still runs (64k non-causal).
  if (e2e) {
    const n = 65536;
    const target = `hyper (default mode, cpu) vs exact (cpu), non-causal, d = 64, n = ${kLabel(n)}`;
    const at = (method: string) =>
      e2e.find((c) => ok(c) && c.method === method && c.backend === 'cpu' && c.params.n === n && c.params.d === 64 && c.params.causal === false);
    const hyper = at('hyper');
    const exact = at('exact');
    const goal = `>= ${SPEEDUP_GOAL}x faster`;
    if (!hyper || !exact) rows.push({ target, goal, ...NOT_MEASURED('the e2e run has no hyper and exact pair there') });
    else if (hyper.params.mode !== undefined && hyper.params.mode !== 'accurate') {
      rows.push({ target, goal, ...NOT_MEASURED(`the e2e results are of mode '${hyper.params.mode}'`) });
    } else {
      const speedup = exact.time!.medianMs / hyper.time!.medianMs;
      rows.push({ target, goal, met: speedup >= SPEEDUP_GOAL, measured: `${speedup.toFixed(0)}x faster` });
    }
  }
  return rows;
}

export interface SweepRow {
  /** the option moved from the accurate mode's defaults ('defaults': none; 'mode': the fixed mode) */
  parameter: string;
  value: string | number;
  /** geometric means over workloads and causal of the setting's / the reference's */
  errorRatio: number;
  timeRatio: number;
  /** the same per causal ('false', 'true') */
  errorRatioByCausal: Record<string, number>;
  timeRatioByCausal: Record<string, number>;
  cases: number;
}

/** sweep: each setting's error and time against the reference mode, in the order they ran. */
export function sweepSummary(cases: readonly CaseResult[]): SweepRow[] {
  const groups = new Map<string, CaseResult[]>();
  for (const c of cases) {
    if (!ok(c) || c.metrics?.errorRatio === undefined) continue; // the reference's own cases have no ratio
    const key = `${c.params.parameter}=${c.params.value}`;
    groups.set(key, [...(groups.get(key) ?? []), c]);
  }
  // Each parameter's rows together (causal-only values run last), in order of value.
  const order = [...new Set([...groups.values()].map((cs) => String(cs[0].params.parameter)))];
  const rank = (cs: CaseResult[]) => order.indexOf(String(cs[0].params.parameter));
  const sorted = [...groups.values()].sort((a, b) => rank(a) - rank(b) || Number(a[0].params.value) - Number(b[0].params.value) || 0);
  return sorted.map((cs) => {
    const byCausal = (metric: string) =>
      Object.fromEntries(
        [false, true]
          .map((causal) => [String(causal), cs.filter((c) => c.params.causal === causal).map((c) => c.metrics![metric])] as const)
          .filter(([, xs]) => xs.length)
          .map(([k, xs]) => [k, geometricMean(xs)]),
      );
    return {
      parameter: String(cs[0].params.parameter),
      value: cs[0].params.value as string | number,
      errorRatio: geometricMean(cs.map((c) => c.metrics!.errorRatio)),
      timeRatio: geometricMean(cs.map((c) => c.metrics!.timeRatio)),
      errorRatioByCausal: byCausal('errorRatio'),
      timeRatioByCausal: byCausal('timeRatio'),
      cases: cs.length,
    };
  });
}
