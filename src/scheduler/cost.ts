// The cost model: what a call does (the algorithm's plan, counted as op calls and units of
// work per device) and how long that takes on a calibrated profile; and the choice among
// candidates: which backend split, and how much of the call runs exact. Pure functions of
// the shape, the options and the profile, so plans are deterministic for a given profile.
import { headSlots } from '../context.ts';
import { HyperAttentionError } from '../errors.ts';
import { COST_CLASS, placementOf, type CostClass, type Device, type OpName } from '../ops.ts';
import { buildPlan, causalPairs, type AccuratePlan, type AuthorsPlan, type Plan, type PlanParams } from '../plan.ts';
import { DEFAULTS } from '../options.ts';
import type { AttentionShape } from '../tensor.ts';
import { costsOf, environmentKey, UNITS, type Profile } from './profile.ts';

/** Which backend runs a call: all on one device, or the hybrid (hash and sort on the CPU). */
export type Split = 'cpu' | 'webgpu' | 'hybrid';
export const SPLITS: readonly Split[] = ['cpu', 'webgpu', 'hybrid'];

/** The algorithm's options that shape its work (the accurate mode's parts default to none). */
export type WorkParams = Omit<PlanParams, 'nq' | 'nk' | 'H' | 'minSeqLen' | AccurateParam> &
  Partial<Pick<PlanParams, AccurateParam>> & {
    /** the keys and values already sit in the backend's memory (a key-value cache): nothing of them is uploaded */
    residentKv?: boolean;
  };
type AccurateParam = 'sinkKeys' | 'heavyKeys' | 'probeQueries' | 'window' | 'lshRounds' | 'checked' | 'checkRows';

/** The ops of one cost class on one device, over a whole call. */
export interface Step {
  op: CostClass;
  device: Device;
  calls: number;
  units: number;
  /** what units counts */
  unit: string;
  predictedMs: number;
}

export interface Candidate {
  backend: Split;
  algorithm: 'exact' | 'hyper';
  /** the cutoff the plan runs with; null for exactAttention */
  minSeqLen: number | null;
  predictedMs: number;
  /** why the scheduler would not run it, when it would not */
  rejected?: string;
}

/** A call's plan: what runs where, and the predicted time of each step. */
export interface Explanation extends Candidate {
  shape: AttentionShape & { causal: boolean };
  placement: Record<OpName, Device>;
  steps: Step[];
  /** every candidate considered, fastest first; the chosen one among them */
  candidates: Candidate[];
  /** why this one, in words */
  reason: string;
  /** the environment the profile was measured on */
  environment: string;
  /**
   * WebAssembly threads the call's CPU work runs on: at most the cores the runtime reports
   * (a larger `threads` is capped, and `reason` says so)
   */
  threads: number;
  /**
   * exact check rows per head that measure each head's error against the tolerance (0: no
   * checks); priced among the steps. Heads that miss the tolerance then run a costlier
   * plan, which no prediction includes (the result's `verification` says which did)
   */
  checkRows: number;
}

/** The algorithm's plan of a call at a cutoff (throws where the causal recursion cannot take it). */
function planAt(shape: AttentionShape, p: WorkParams, minSeqLen: number): Plan {
  return buildPlan({
    sinkKeys: 0, heavyKeys: 0, probeQueries: 1, window: 0, lshRounds: 0, checked: false, checkRows: undefined,
    ...p, nq: shape.nq, nk: shape.nk, H: shape.H, minSeqLen,
  });
}

/** Adds `calls` calls of an op and their units of work, on the device the split places the op on unless said. */
type AddWork = (op: OpName, calls: number, units: number, device?: Device) => void;

/** Op calls and units of work of a plan on a split (totals over every head), per cost class and device. */
export function workOf(shape: AttentionShape, p: WorkParams, plan: Plan, split: Split): Omit<Step, 'predictedMs'>[] {
  const { B, H, Hkv, nq, nk, d, dv } = shape;
  const place = placementOf(split);
  const steps = new Map<string, Omit<Step, 'predictedMs'>>();
  const add: AddWork = (op, calls, units, device = place[op]) => {
    const cost = COST_CLASS[op];
    const key = `${cost} ${device}`;
    const s = steps.get(key) ?? { op: cost, device, calls: 0, units: 0, unit: UNITS[cost] };
    s.calls += calls;
    s.units += units;
    steps.set(key, s);
  };
  const heads = B * H;
  const kvHeads = B * Hkv;
  if (p.residentKv) add('upload', heads, heads * nq * d * 4);
  else add('upload', heads + 2 * kvHeads, (heads * nq * d + kvHeads * nk * (d + dv)) * 4);
  if (plan.kind === 'accurate') accurateWork(shape, plan, split, add, plan.checks);
  else authorsWork(shape, p, plan, split, add);
  // Check rows: exact attention over the keys each sees (one op for all of a head's rows;
  // causal, a job a row, and on WebGPU a dispatch a row), their queries uploaded, their
  // results read back (with the head's own on an asynchronous backend).
  if (plan.checks > 0) {
    const c = plan.checks;
    add('upload', heads, heads * c * d * 4);
    add('exact', heads * (p.causal && split !== 'cpu' ? c : 1), heads * c * (p.causal ? causalPairs(nq, nk) / nq : nk) * 2 * (d + dv));
    add('download', 2 * heads, heads * c * (dv + 1) * 4);
  }
  add('download', 2 * heads, heads * nq * (dv + 1) * 4);
  return [...steps.values()];
}

/**
 * The accurate mode's ops, each as runAccurateHead (accurate.ts) issues it; COST_CLASS
 * prices each as the op whose kernel has its shape.
 */
function accurateWork(shape: AttentionShape, plan: AccuratePlan, split: Split, add: AddWork, checks: number): void {
  const { B, H, Hkv, nq, nk, d, dv } = shape;
  const heads = B * H;
  const kvHeads = B * Hkv;
  // WebAssembly runs the query heads of a key-value head in slots of the executor, a round
  // (RoundTask.group) and the remainders (RemainderTask.group) in one op per slot group.
  const groups = split === 'cpu' ? kvHeads * Math.ceil(H / Hkv / headSlots(H / Hkv, nq + checks, d, dv)) : heads;
  const row = 2 * (d + dv);
  const columns = plan.sinkKeys + plan.heavyKeys;
  const R = plan.rounds;
  const numKeys = 1 << plan.r;
  // Once per call: the probe rows, each round's projections, and, without a probe, the
  // columns (the sinks, the same for every head) and their flags.
  if (plan.heavyKeys > 0) add('upload', 1, plan.probeRows.length * 4);
  if (R > 0) add('upload', R, R * d * plan.r * 4);
  if (plan.heavyKeys === 0) add('upload', plan.sinkKeys > 0 ? 2 : 1, (nk + plan.sinkKeys) * 4);
  if (plan.heavyKeys > 0) {
    add('probe', heads, heads * plan.probeRows.length * nk * 2 * (d + 1));
    add('heavy', heads, heads * nk);
  }
  add('columns', heads, heads * nq * columns * row);
  // A window of w keys is priced as w + 31 keys per row: a chunk of rows computes the key
  // tiles of the union of its rows' windows in part, and merges each row into the columns'.
  add('window', heads, heads * nq * (plan.window + 31) * row);
  if (R > 0) {
    // The keys' side of a round is made once per key-value head, for its query heads.
    add('hash', R * (heads + kvHeads), R * (heads * nq + kvHeads * nk) * d * plan.r);
    add('sort', R * (heads + kvHeads), R * (heads * nq + kvHeads * nk));
    add('buckets', R * (heads + kvHeads), R * (heads * nq + kvHeads * nk));
    if (split === 'hybrid') {
      // The CPU hashes its own copies of q and k, made once per head (k: once per key-value
      // head), and the sorted orders, tags and bucket starts go to the GPU as they are made.
      add('upload', heads + kvHeads, (heads * nq + kvHeads * nk) * d * 4, 'cpu');
      add('upload', 3 * R * (heads + kvHeads), R * (heads * (2 * nq + numKeys + 1) + kvHeads * (2 * nk + numKeys + 1)) * 4, 'webgpu');
    }
    // A bucket holds few keys, so each row's setup, merge and statistics weigh as much as
    // about 48 more keys would (measured: a round of ~20-key buckets costs what ~65 keys of
    // the block kernel do).
    const perBucket = Math.min(plan.cap, Math.ceil(shape.nk / numKeys));
    add('round', R * groups, R * heads * nq * (perBucket + 48) * row);
  }
  if (plan.segments.length > 0) {
    const m = plan.draws[0].count;
    add('samples', plan.segments.length * heads, heads * nq * m * row);
    add('remainder', groups, heads * nq * dv * 4);
  }
}

function authorsWork(shape: AttentionShape, p: WorkParams, plan: AuthorsPlan, split: Split, add: AddWork): void {
  const { B, H, Hkv, nq, nk, d, dv } = shape;
  const heads = B * H;
  const kvHeads = B * Hkv;
  const r = p.lshNumProjs;
  if (plan.steps.some((s) => s.kind === 'hyper')) {
    add('upload', 1, d * r * 4);
    add('hash', heads + kvHeads, (heads * nq + kvHeads * nk) * d * r);
    // The hybrid also copies q and k into WebAssembly memory, for hashing.
    if (split === 'hybrid') add('upload', heads + kvHeads, (heads * nq + kvHeads * nk) * d * 4, 'cpu');
  }
  for (const leaf of plan.leaves) add('exact', heads, heads * causalPairs(leaf.rows, leaf.keys) * 2 * (d + dv));
  for (const step of plan.steps) {
    for (const sub of step.subs) {
      if (step.kind === 'exact') {
        add('exact', heads, heads * 2 * sub.qReal * step.nk * (d + dv));
        continue;
      }
      const sorted = sub.qReal + (p.mode === 'reference' ? sub.qPads : 0);
      add('sort', 2 * heads, heads * (sorted + step.nk));
      // The hybrid's sorted orders go to the GPU after each sort.
      if (split === 'hybrid') add('upload', 2 * heads, heads * (sorted + step.nk) * 4, 'webgpu');
      add('block', heads, heads * 2 * sorted * step.kBlock * (d + dv));
      if (step.draw >= 0) add('sampled', heads, heads * 2 * sorted * p.sampleSize * (d + dv));
      if (step.merge) add('merge', heads, heads * sub.qReal * dv);
    }
  }
}

/**
 * Predicted times of the steps, and of the call. Readbacks after the first overlap the next
 * head's work (the executor awaits head h's only once head h + 1 is issued), so their fixed
 * cost counts once. In the hybrid the CPU's share (hashing, sorting) runs while the GPU
 * computes the previous head: the call takes the longer of the two shares plus one head of
 * the shorter.
 */
export function predict(
  work: Omit<Step, 'predictedMs'>[], profile: Profile, split: Split, heads: number, threads = profile.environment.wasmThreads,
): { steps: Step[]; ms: number } {
  const speed = threadSpeed(profile);
  const steps = work.map((w) => {
    const cost = costsOf(profile, w.device)[w.op];
    const fixedCalls = w.op === 'download' && split !== 'cpu' ? Math.min(w.calls, 1) : w.calls;
    // The hybrid's CPU backend (hashing, sorting) runs on one thread.
    const perThread = w.device === 'cpu' && THREADED_OPS.includes(w.op) ? (split === 'hybrid' ? speed(1) : speed(threads)) : 1;
    return { ...w, predictedMs: fixedCalls * cost.fixedMs + w.units / cost.unitsPerMs / perThread };
  });
  const share = (device: Device) => steps.filter((s) => s.device === device).reduce((t, s) => t + s.predictedMs, 0);
  const cpu = share('cpu');
  const gpu = share('webgpu');
  const ms = split === 'hybrid' ? Math.max(cpu, gpu) + Math.min(cpu, gpu) / heads : cpu + gpu;
  return { steps, ms };
}

/** The ops whose jobs the WebAssembly backend splits over its threads. */
const THREADED_OPS: readonly CostClass[] = ['hash', 'exact', 'block', 'sampled'];

/**
 * Throughput on `t` threads relative to the profile's (measured on wasmThreads): linear in
 * the threads that get a core of their own, so a call asking for more threads than cores
 * gains nothing over the cores.
 */
function threadSpeed(profile: Profile): (t: number) => number {
  const cores = profile.environment.threads ?? profile.environment.wasmThreads;
  const measured = Math.min(profile.environment.wasmThreads, cores);
  return (t) => Math.min(t, cores) / measured;
}

/** Why the split cannot run this shape on the profile's adapter, if it cannot. */
/** sortBits: the LSH bits the plan sorts by on the device (0: it sorts nothing). */
function infeasible(shape: AttentionShape, split: Split, profile: Profile, sortBits: number): string | undefined {
  if (split === 'cpu') return undefined;
  const adapter = profile.environment.adapter;
  if (!adapter) return 'no WebGPU adapter';
  const largest = Math.max(shape.nq, shape.nk) * Math.max(shape.d, shape.dv) * 4;
  if (largest > adapter.maxBufferBytes) return `a ${largest}-byte buffer exceeds the adapter's maxBufferSize`;
  if (split === 'webgpu' && sortBits > 0) {
    const histogram = (1 << sortBits) * Math.ceil(Math.max(shape.nq, shape.nk) / 256) * 4;
    if (histogram > adapter.maxBindingBytes) return `the GPU sort's ${histogram}-byte histogram exceeds the adapter's binding limit`;
  }
  return undefined;
}

/**
 * On a software adapter the GPU gets no op that the CPU does faster: a split is rejected
 * when any of its GPU compute steps is predicted slower than the same work on WebAssembly
 * (transfers are left out: they exist only to feed the GPU). The reason names the step
 * with the largest gap.
 */
function slowerThanCpu(steps: Step[], profile: Profile): string | undefined {
  if (!profile.environment.adapter?.fallback) return undefined;
  const cpu = costsOf(profile, 'cpu');
  let worst: { op: CostClass; onCpu: number; onGpu: number } | undefined;
  for (const s of steps) {
    if (s.device !== 'webgpu' || s.op === 'upload' || s.op === 'download') continue;
    const onCpu = s.calls * cpu[s.op].fixedMs + s.units / cpu[s.op].unitsPerMs;
    if (s.predictedMs > onCpu && (!worst || s.predictedMs - onCpu > worst.onGpu - worst.onCpu)) {
      worst = { op: s.op, onCpu, onGpu: s.predictedMs };
    }
  }
  return worst && `software adapter: WebAssembly runs ${worst.op} faster (${worst.onCpu.toFixed(1)} ms vs ${worst.onGpu.toFixed(1)} ms)`;
}

/**
 * Cutoffs (minSeqLen) worth considering: the caller's when given; else the authors' default
 * and its doublings up to all-exact. The scheduler only ever raises the cutoff, which makes
 * more of the call exact: it trades speed, never accuracy, against the default.
 */
function cutoffs(shape: AttentionShape, causal: boolean, given: number | undefined): number[] {
  if (given !== undefined) return [given];
  const list: number[] = [];
  for (let c = DEFAULTS.minSeqLen; ; c *= 2) {
    list.push(c);
    if (causal ? c >= shape.nk : c > shape.nq) return list;
  }
}

export interface ChooseParams extends WorkParams {
  /** the caller's minSeqLen, which wins over the scheduler's choice */
  minSeqLen?: number;
  /** WebAssembly threads the call runs on */
  threads: number;
  /** the threads the caller asked for, where more than the cores (then `threads` is the cores) */
  threadsAsked?: number;
  /** backends the caller allows, in order of preference on a tie */
  splits: readonly Split[];
}

/** The fastest feasible candidate, with every candidate and the predicted steps of the choice. */
export function choose(shape: AttentionShape, p: ChooseParams, profile: Profile): Explanation {
  return choosePlan(shape, p, profile).explanation;
}

/** choose(), and the algorithm's plan of the choice: the executor runs it as it is. */
export function choosePlan(shape: AttentionShape, p: ChooseParams, profile: Profile): { explanation: Explanation; plan: Plan } {
  const heads = shape.B * shape.H;
  const options = p.exact ? [null] : cutoffs(shape, p.causal, p.minSeqLen);
  const candidates: (Candidate & { steps: Step[]; plan: Plan })[] = [];
  const seen = new Set<string>();
  for (const minSeqLen of options) {
    let plan: Plan;
    try {
      plan = planAt(shape, p, minSeqLen ?? 0);
    } catch (error) {
      if (error instanceof HyperAttentionError && p.minSeqLen === undefined) continue; // a cutoff the recursion cannot take
      throw error;
    }
    // Cutoffs that give the same plan (say 8192 and 16384 for 4096 non-causal queries) are one candidate.
    const signature = JSON.stringify(plan);
    if (seen.has(signature)) continue;
    seen.add(signature);
    const hashes = plan.kind === 'accurate' || plan.steps.some((s) => s.kind === 'hyper');
    // The bits the plan sorts by (the accurate mode's own, or none without an LSH round).
    const sortBits = plan.kind === 'accurate' ? (plan.rounds > 0 ? plan.r : 0) : hashes ? p.lshNumProjs : 0;
    for (const split of p.splits) {
      const algorithm = hashes ? 'hyper' : 'exact';
      const base = { backend: split, algorithm, minSeqLen } as const;
      const cannot = infeasible(shape, split, profile, sortBits);
      if (cannot) {
        candidates.push({ ...base, predictedMs: Infinity, rejected: cannot, steps: [], plan });
        continue;
      }
      // Without hashing, the hybrid is the GPU split.
      if (split === 'hybrid' && !hashes) continue;
      const { steps, ms } = predict(workOf(shape, p, plan, split), profile, split, heads, p.threads);
      const slower = p.splits.length > 1 ? slowerThanCpu(steps, profile) : undefined;
      candidates.push({ ...base, predictedMs: ms, steps, plan, ...(slower ? { rejected: slower } : {}) });
    }
  }
  const allowed = candidates.filter((c) => !c.rejected);
  // The caller's one backend runs even where the scheduler would reject it.
  const pool = allowed.length > 0 ? allowed : candidates.filter((c) => c.steps.length > 0);
  if (pool.length === 0) {
    throw new HyperAttentionError('UNSUPPORTED', `no backend can run this call: ${candidates.map((c) => `${c.backend}: ${c.rejected}`).join('; ')}`);
  }
  const best = pool.reduce((a, b) => (b.predictedMs < a.predictedMs ? b : a));
  const sorted = [...candidates].sort((a, b) => a.predictedMs - b.predictedMs);
  const explanation: Explanation = {
    backend: best.backend,
    algorithm: best.algorithm,
    minSeqLen: best.minSeqLen,
    predictedMs: best.predictedMs,
    shape: { ...shape, causal: p.causal },
    placement: placementOf(best.backend),
    steps: best.steps,
    candidates: sorted.map(({ steps: _, plan: __, ...c }) => c),
    reason: reasonFor(best, p, candidates),
    environment: environmentKey(profile.environment),
    threads: p.threads,
    checkRows: best.plan.checks,
  };
  return { explanation, plan: best.plan };
}

function reasonFor(best: Candidate, p: ChooseParams, candidates: Candidate[]): string {
  const count = candidates.length;
  const how = count === 1 ? 'the only candidate' : `the fastest of ${count} candidates`;
  let cutoff: string;
  if (p.exact) cutoff = 'exactAttention';
  else if (p.minSeqLen !== undefined) cutoff = `minSeqLen ${p.minSeqLen} given by the caller`;
  else if (!candidates.some((c) => c.algorithm === 'hyper')) cutoff = `at most minSeqLen ${DEFAULTS.minSeqLen} rows: exact`;
  else if (best.algorithm === 'exact') cutoff = 'HyperAttention is not predicted faster here, so the call runs exact';
  else cutoff = best.minSeqLen === DEFAULTS.minSeqLen ? 'default minSeqLen' : `minSeqLen raised to ${best.minSeqLen}`;
  const capped = p.threadsAsked === undefined ? '' : ` (threads ${p.threadsAsked} asked, capped at the ${p.threads} core${p.threads === 1 ? '' : 's'})`;
  return `${best.backend}${best.backend === 'cpu' ? ` on ${p.threads} thread${p.threads === 1 ? '' : 's'}${capped}` : ''}: ${how} (${cutoff})`;
}
