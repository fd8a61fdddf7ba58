// Scheduler: does backend 'auto' pick the fastest plan, and are its predictions right? For
// each n (1k ... 64k, causal and not, B = H = 1, d = 64, default options) the suite asks
// explain() for every candidate (backend split x cutoff), runs each feasible one forced
// (a candidate the scheduler rejects, e.g. the GPU on a software adapter, still runs; one
// it finds infeasible has no prediction and is skipped with the reason), and runs the
// scheduler's own choice (hyperAttention with no backend, no minSeqLen) in turns with the
// chosen candidate forced. It records each
// candidate's predicted and measured time, the best measured candidate, choice / best
// (target <= 1.10), and whether every prediction is within [0.5, 2] of the measurement.
//
// It measures the adapter the process has, and labels its results with the profile's
// environment: bench/results/scheduler-<runtime>-<adapter>.json (quick: results/quick/).
//   Node, CPU only:   node --experimental-wasm-relaxed-simd --import tsx bench/scheduler.bench.ts [--quick]
//   Node, SwiftShader: VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json XDG_RUNTIME_DIR=/tmp/xdg \
//                     node --experimental-wasm-relaxed-simd --import tsx bench/scheduler.bench.ts [--quick]
//   Deno, lavapipe:   DENO_WEBGPU_BACKEND=vulkan XDG_RUNTIME_DIR=/tmp/xdg \
//                     npx deno run -A --unstable-webgpu bench/scheduler.bench.ts [--quick]
// (DENO_WEBGPU_BACKEND=vulkan as in scripts/test-gpu.mjs: without it wgpu may take OpenGL on
// llvmpipe; XDG_RUNTIME_DIR, any private directory, only quiets the Vulkan loader.)
// Through the runner: `npx tsx bench/run.ts scheduler [--quick]` (the default suites include it).
// Flags: --quick (n <= 8192, results/quick/), --cap-ms N (candidates predicted slower than
// N ms are not run; default 20000), --plan (print the candidates, what would run and the
// predicted duration of the run, and measure nothing).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { suite } from 'uvu';
import { gpuBackend, hybridBackend, serialize } from '../src/backends.ts';
import { runHyper } from '../src/hyper.ts';
import {
  configureScheduler, explain, getProfile, hyperAttention, type Candidate, type Explanation, type Profile, type Split,
} from '../src/index.ts';
import { resolveHyperOptions } from '../src/options.ts';
import { environmentKey } from '../src/scheduler/profile.ts';
import { attentionShape } from '../src/tensor.ts';
import {
  QUICK, RESULTS_DIR, Recorder, describeMachine, formatMs, type CaseResult, type Machine, type MeasureOptions, type Params,
  type Timing,
} from './harness.ts';
import { WORKLOADS, type WorkloadTensors } from './workloads.ts';

const argv = process.argv.slice(2);

function flagValue(name: string): string | undefined {
  const i = argv.findIndex((a) => a === name || a.startsWith(`${name}=`));
  if (i < 0) return undefined;
  return argv[i].includes('=') ? argv[i].slice(name.length + 1) : argv[i + 1];
}

const CAP_MS = (() => {
  const raw = flagValue('--cap-ms');
  if (raw === undefined) return 20_000;
  const cap = Number(raw);
  if (!(cap > 0)) throw new Error(`--cap-ms: expected a positive number of milliseconds, got ${raw}`);
  return cap;
})();
const PLAN_ONLY = argv.includes('--plan');

const SIZES = QUICK ? [1024, 2048, 4096, 8192] : [1024, 2048, 4096, 8192, 16384, 32768, 65536];
const D = 64;
const MASKS = [false, true];
/** choice / best at or under this meets the scheduler's target */
const CHOICE_TARGET = 1.1;
/** predicted / measured inside this range counts as a good prediction */
const RATIO_RANGE: [number, number] = [0.5, 2];

/**
 * How calls are timed (timeCall): a warm-up call, never counted, then medians. A call under
 * a second gets at least 3 timed samples, up to 7 while 3 s last (fast calls are where
 * choice / best is noisiest; a fast call is repeated to 20 ms a sample); a longer one gets 1
 * (2 or 3 while the budget lasts). Unlike harness.measure, a long first call is never kept
 * as the only sample: the predictions are of warm calls (pipelines compiled, buffers
 * pooled), so every timed call is warm. The quick run has a 1 s budget: 3 samples under
 * about 330 ms, 1 above.
 */
const TIMING: MeasureOptions = QUICK ? { budgetMs: 1000, maxRuns: 5, minSampleMs: 20 } : { budgetMs: 3000, maxRuns: 7, minSampleMs: 20 };

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/**
 * Times calls after a warm-up each (see TIMING); harness.measure's samples, always warmed
 * up. Several calls are timed in turns, one sample of each per round, so that a change in
 * the machine's load affects them alike (the auto call against its own plan run forced).
 */
async function timeCalls(calls: (() => Promise<unknown>)[], opt: MeasureOptions = TIMING): Promise<Timing[]> {
  const warm: number[] = [];
  for (const call of calls) {
    let t = performance.now();
    await call();
    let ms = performance.now() - t;
    if (ms < opt.minSampleMs) {
      // A fast call's first run is mostly JIT: size the samples from a warm one.
      t = performance.now();
      await call();
      ms = performance.now() - t;
    }
    warm.push(ms);
  }
  const repeats = warm.map((ms) => Math.max(1, Math.ceil(opt.minSampleMs / Math.max(ms, 1e-3))));
  const round = warm.reduce((sum, ms, i) => sum + ms * repeats[i], 0);
  const budget = opt.budgetMs * calls.length;
  const minRuns = round * 3 <= budget ? 3 : 1;
  const samples: number[][] = calls.map(() => []);
  const start = performance.now();
  for (let runs = 0; runs < opt.maxRuns && (runs < minRuns || performance.now() - start < budget); runs++) {
    for (const [i, call] of calls.entries()) {
      const t = performance.now();
      for (let j = 0; j < repeats[i]; j++) await call();
      samples[i].push((performance.now() - t) / repeats[i]);
    }
  }
  return samples.map((xs, i) => ({
    medianMs: median(xs), minMs: Math.min(...xs), maxMs: Math.max(...xs), runs: xs.length, callsPerRun: repeats[i], warmup: true,
  }));
}

const timeCall = async (call: () => Promise<unknown>): Promise<Timing> => (await timeCalls([call]))[0];

type CandidateStatus = 'ok' | 'not run' | 'infeasible' | 'failed';

interface CandidateRow {
  backend: Split;
  algorithm: 'exact' | 'hyper';
  minSeqLen: number | null;
  predictedMs: number | null;
  /** why the scheduler would not choose it (it still runs when it has a prediction) */
  rejected?: string;
  chosen: boolean;
  status: CandidateStatus;
  /** why it did not run */
  reason?: string;
  measuredMs?: number;
  time?: Timing;
  /** predicted / measured */
  ratio?: number;
}

interface SizeRow {
  n: number;
  d: number;
  causal: boolean;
  choice: { backend: Split; algorithm: 'exact' | 'hyper'; minSeqLen: number | null; predictedMs: number; reason: string };
  candidates: CandidateRow[];
  /** the auto call (hyperAttention without backend or minSeqLen) */
  choiceMeasuredMs: number | null;
  choiceTime?: Timing;
  best: { backend: Split; algorithm: 'exact' | 'hyper'; minSeqLen: number | null; measuredMs: number } | null;
  /** the auto call's time over the best measured candidate's */
  choiceOverBest: number | null;
  /**
   * the chosen candidate's forced time over the best's: whether the choice was right, without
   * the noise between two runs of the same plan (1 when the chosen candidate is the best)
   */
  chosenOverBest: number | null;
  /** the auto call's time over its own plan run forced: the scheduler's overhead, and noise */
  choiceOverForced: number | null;
  choiceMeetsTarget: boolean | null;
  /** every measured candidate's predicted / measured inside RATIO_RANGE */
  predictionsWithinRange: boolean | null;
  /** the worst predicted / measured (farthest from 1, on a log scale) */
  worstRatio: number | null;
}

interface Plan {
  n: number;
  causal: boolean;
  explanation: Explanation;
}

interface State {
  recorder: Recorder | null;
  label: string;
  profile: Profile;
  plans: Plan[];
  rows: SizeRow[];
  inputs: { n: number; x: WorkloadTensors } | null;
}

// --- labels and the results file ---

function slug(text: string): string {
  return text.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 32) || 'unknown';
}

/**
 * e.g. 'node-cpu', 'node-swiftshader', 'deno-lavapipe', 'node-nvidia'; with '-wasm-simd' (or
 * '-wasm-scalar') when the relaxed-SIMD build is not the one in use (Node without
 * --experimental-wasm-relaxed-simd), so that the two never share a results file.
 */
function labelOf(profile: Profile): string {
  const env = profile.environment;
  const runtime = /^(node|deno) /.exec(env.runtime)?.[1] ?? 'browser';
  const wasm = env.wasm === 'relaxed' ? '' : `-wasm-${slug(env.wasm)}`;
  const a = env.adapter;
  if (!a) return `${runtime}-cpu${wasm}`;
  const words = `${a.vendor} ${a.architecture} ${a.device} ${a.description}`;
  if (/swiftshader/i.test(words)) return `${runtime}-swiftshader${wasm}`;
  if (/llvmpipe|lavapipe/i.test(words)) return `${runtime}-lavapipe${wasm}`;
  return `${runtime}-${slug(a.vendor || a.description || a.architecture)}${wasm}`;
}

const resultsDir = () => (QUICK ? join(RESULTS_DIR, 'quick') : RESULTS_DIR);
const resultsPath = (label: string) => join(QUICK ? 'bench/results/quick' : 'bench/results', `scheduler-${label}.json`);

interface Extra {
  label: string;
  capMs: number;
  timing: MeasureOptions;
  environment: Profile['environment'];
  environmentKey: string;
  /** wall time of the first getProfile() (the calibration, when there was no saved profile) */
  getProfileMs: number;
  calibrationMs: number;
  profile: Profile;
  /** predicted duration of this run, from the candidates' predictions */
  estimatedRunS: number;
  rows: SizeRow[];
  summary: ReturnType<typeof summarize>;
}

/**
 * The harness's recorder (progress lines, cases, failures) writing the suite's own file:
 * the usual fields plus the profile and the per-size analysis.
 */
class SchedulerRecorder extends Recorder {
  private readonly startedAt = new Date().toISOString();
  private readonly t0 = performance.now();
  private readonly notes: string[] = [];

  constructor(
    private readonly machine: Machine,
    total: number,
    private readonly extra: Omit<Extra, 'summary'>,
  ) {
    super(`scheduler-${extra.label}`, total, machine);
  }

  override note(message: string): void {
    this.notes.push(message);
    super.note(message);
  }

  override write(): void {
    const results = {
      suite: 'scheduler',
      quick: QUICK,
      startedAt: this.startedAt,
      durationS: Math.round((performance.now() - this.t0) / 100) / 10,
      machine: this.machine,
      notes: this.notes,
      ...this.extra,
      summary: summarize(this.extra.rows),
      cases: this.cases,
    };
    mkdirSync(resultsDir(), { recursive: true });
    writeFileSync(join(resultsDir(), `scheduler-${this.extra.label}.json`), JSON.stringify(results, null, 1) + '\n');
  }
}

// --- what runs ---

const shapes = (n: number) => ({ q: [1, 1, n, D], k: [1, 1, n, D], v: [1, 1, n, D] });
const candidateName = (c: { backend: string; algorithm: string; minSeqLen: number | null }) =>
  `${c.backend} ${c.algorithm} minSeqLen=${c.minSeqLen}`;
type Which = Pick<Candidate, 'backend' | 'minSeqLen'>;
const sameCandidate = (a: Which, b: Which) => a.backend === b.backend && a.minSeqLen === b.minSeqLen;

/** Why a candidate does not run, if it does not. */
function notRunReason(c: Candidate): { status: CandidateStatus; reason: string } | null {
  if (!Number.isFinite(c.predictedMs)) return { status: 'infeasible', reason: `infeasible: ${c.rejected ?? 'no prediction'}` };
  if (c.predictedMs > CAP_MS) return { status: 'not run', reason: `not run (predicted ${(c.predictedMs / 1000).toFixed(1)} s, over the ${CAP_MS / 1000} s cap)` };
  return null;
}

/** Time timeCall() takes for a call of `ms`, for the run's estimate. */
function estimateMeasureMs(ms: number): number {
  const warmups = ms < TIMING.minSampleMs ? 2 : 1;
  const sample = Math.max(ms, TIMING.minSampleMs);
  const minRuns = sample * 3 <= TIMING.budgetMs ? 3 : 1;
  const runs = Math.min(TIMING.maxRuns, Math.max(minRuns, Math.ceil(TIMING.budgetMs / sample)));
  return warmups * ms + runs * sample;
}

function estimateRunMs(plans: Plan[]): number {
  let total = 0;
  for (const { explanation: e } of plans) {
    for (const c of e.candidates) if (!notRunReason(c)) total += estimateMeasureMs(c.predictedMs);
    total += estimateMeasureMs(e.predictedMs); // the auto call
  }
  return total;
}

function inputsFor(state: State, n: number): WorkloadTensors {
  if (state.inputs?.n !== n) state.inputs = { n, x: WORKLOADS.gaussian.generate({ B: 1, H: 1, n, d: D, seed: n + D }) };
  return state.inputs.x;
}

/** The call that runs candidate `c` forced: its backend split and its cutoff. */
async function forcedCall(c: Candidate, x: WorkloadTensors, causal: boolean): Promise<() => Promise<unknown>> {
  const minSeqLen = c.minSeqLen ?? undefined;
  if (c.backend === 'cpu' || c.backend === 'webgpu') {
    const backend = c.backend;
    return () => hyperAttention(x.q, x.k, x.v, { causal, backend, minSeqLen });
  }
  // No public option forces the hybrid: its backend and the executor, in the call queue.
  const hybrid = await hybridBackend(await gpuBackend());
  return () =>
    serialize(() => runHyper(hybrid, attentionShape(x.q, x.k, x.v, causal), resolveHyperOptions({ causal, minSeqLen }), x.q, x.k, x.v));
}

/**
 * Warms every split that will run before anything is timed: the JIT tiers of the CPU path,
 * the GPU pipelines (calibration compiles most of them): a small non-causal hyper call and
 * a causal one with a merge.
 */
async function warmUp(state: State): Promise<string[]> {
  const splits = new Set<Split>(['cpu']);
  for (const { explanation } of state.plans) {
    for (const c of explanation.candidates) if (c.backend !== 'cpu' && !notRunReason(c)) splits.add(c.backend);
  }
  const failures: string[] = [];
  const x = WORKLOADS.gaussian.generate({ B: 1, H: 1, n: 1024, d: D, seed: 1 });
  for (const backend of splits) {
    for (const [causal, minSeqLen] of [[false, 0], [true, 512]] as const) {
      const c: Candidate = { backend, algorithm: 'hyper', minSeqLen, predictedMs: 0 };
      try {
        await (await forcedCall(c, x, causal))();
      } catch (error) {
        failures.push(`warm-up of ${backend} (${causal ? 'causal' : 'non-causal'}) failed: ${(error as Error).message}`);
      }
    }
  }
  return failures;
}

// --- analysis and printing ---

const logDistance = (ratio: number) => Math.abs(Math.log(ratio));

function analyse(row: SizeRow): void {
  const measured = row.candidates.filter((c) => c.status === 'ok' && c.measuredMs !== undefined);
  const best = measured.reduce<CandidateRow | null>((a, c) => (a === null || c.measuredMs! < a.measuredMs! ? c : a), null);
  row.best = best && { backend: best.backend, algorithm: best.algorithm, minSeqLen: best.minSeqLen, measuredMs: best.measuredMs! };
  row.choiceOverBest = best && row.choiceMeasuredMs !== null ? row.choiceMeasuredMs / best.measuredMs! : null;
  row.choiceMeetsTarget = row.choiceOverBest === null ? null : row.choiceOverBest <= CHOICE_TARGET;
  const chosen = row.candidates.find((c) => c.chosen && c.status === 'ok');
  row.chosenOverBest = best && chosen ? chosen.measuredMs! / best.measuredMs! : null;
  row.choiceOverForced = chosen && row.choiceMeasuredMs !== null ? row.choiceMeasuredMs / chosen.measuredMs! : null;
  const ratios = measured.map((c) => c.ratio!).filter((r) => Number.isFinite(r));
  row.predictionsWithinRange = ratios.length ? ratios.every((r) => r >= RATIO_RANGE[0] && r <= RATIO_RANGE[1]) : null;
  row.worstRatio = ratios.length ? ratios.reduce((a, r) => (logDistance(r) > logDistance(a) ? r : a)) : null;
}

function summarize(rows: SizeRow[]) {
  const judged = rows.filter((r) => r.choiceMeetsTarget !== null);
  const predicted = rows.filter((r) => r.predictionsWithinRange !== null);
  return {
    cases: rows.length,
    choiceTarget: CHOICE_TARGET,
    choiceMeetsTarget: judged.filter((r) => r.choiceMeetsTarget).length,
    choiceJudged: judged.length,
    /** the chosen candidate (forced) within the target of the best */
    chosenMeetsTarget: rows.filter((r) => r.chosenOverBest !== null && r.chosenOverBest <= CHOICE_TARGET).length,
    chosenJudged: rows.filter((r) => r.chosenOverBest !== null).length,
    ratioRange: RATIO_RANGE,
    predictionsWithinRange: predicted.filter((r) => r.predictionsWithinRange).length,
    predictionsJudged: predicted.length,
  };
}

const mask = (causal: boolean) => (causal ? 'causal' : 'non-causal');
const ms = (x: number | null | undefined) => (x === null || x === undefined ? '—' : Number.isFinite(x) ? formatMs(x) : '∞');
const ratioText = (r: number | null | undefined) => (r === null || r === undefined ? '—' : `${r.toFixed(2)}${r < RATIO_RANGE[0] || r > RATIO_RANGE[1] ? ' ✗' : ''}`);

function printTables(state: State): void {
  const lines: string[] = [];
  lines.push(`\n### scheduler: ${state.label} (${environmentKey(state.profile.environment)})\n`);
  lines.push('| n | mask | candidate | predicted | measured | predicted / measured | |');
  lines.push('| ---: | --- | --- | ---: | ---: | ---: | --- |');
  for (const r of state.rows) {
    for (const c of r.candidates) {
      const marks = [c.chosen ? 'choice' : '', r.best && sameCandidate(r.best, c) ? 'best' : ''].filter(Boolean);
      const status = c.status === 'ok' ? '' : c.reason!;
      const rejected = c.rejected && c.status !== 'infeasible' ? `rejected: ${c.rejected}` : '';
      const note = [marks.join(', '), status, rejected].filter(Boolean).join('; ');
      lines.push(`| ${r.n} | ${mask(r.causal)} | ${candidateName(c)} | ${ms(c.predictedMs ?? Infinity)} | ${ms(c.measuredMs)} | ${ratioText(c.ratio)} | ${note} |`);
    }
  }
  lines.push('');
  lines.push(
    `| n | mask | choice | choice measured | best measured | choice / best (≤ ${CHOICE_TARGET.toFixed(2)}) | chosen forced / best | choice / chosen forced | predictions in [${RATIO_RANGE.join(', ')}] (worst) |`,
  );
  lines.push('| ---: | --- | --- | ---: | --- | ---: | ---: | ---: | --- |');
  for (const r of state.rows) {
    const best = r.best ? `${candidateName(r.best)}: ${ms(r.best.measuredMs)}` : '—';
    const cob = r.choiceOverBest === null ? '—' : `${r.choiceOverBest.toFixed(2)} ${r.choiceMeetsTarget ? '✓' : '✗'}`;
    const within = r.predictionsWithinRange === null ? '—' : `${r.predictionsWithinRange ? 'yes' : 'no'} (${r.worstRatio!.toFixed(2)})`;
    const fixed = (x: number | null) => (x === null ? '—' : x.toFixed(2));
    lines.push(
      `| ${r.n} | ${mask(r.causal)} | ${candidateName(r.choice)} | ${ms(r.choiceMeasuredMs)} | ${best} | ${cob} | ${fixed(r.chosenOverBest)} | ${fixed(r.choiceOverForced)} | ${within} |`,
    );
  }
  const s = summarize(state.rows);
  lines.push('');
  lines.push(
    `summary (${state.label}): choice / best ≤ ${CHOICE_TARGET.toFixed(2)} at ${s.choiceMeetsTarget} of ${s.choiceJudged} (n, mask) cases ` +
      `(chosen candidate forced / best ≤ ${CHOICE_TARGET.toFixed(2)} at ${s.chosenMeetsTarget} of ${s.chosenJudged}); ` +
      `every measured prediction within [${RATIO_RANGE.join(', ')}]× at ${s.predictionsWithinRange} of ${s.predictionsJudged}`,
  );
  console.log(lines.join('\n'));
}

function printPlan(state: State, estimateMs: number): void {
  const lines = [`\n### scheduler plan: ${state.label} (${environmentKey(state.profile.environment)}), cap ${CAP_MS / 1000} s\n`];
  lines.push('| n | mask | candidate | predicted | runs? | |');
  lines.push('| ---: | --- | --- | ---: | --- | --- |');
  for (const { n, causal, explanation: e } of state.plans) {
    for (const c of e.candidates) {
      const why = notRunReason(c);
      const chosen = sameCandidate(c, e) ? 'choice' : '';
      lines.push(`| ${n} | ${mask(causal)} | ${candidateName(c)} | ${ms(c.predictedMs)} | ${why ? why.reason : 'yes'} | ${[chosen, c.rejected ? `rejected: ${c.rejected}` : ''].filter(Boolean).join('; ')} |`);
    }
  }
  lines.push(`\npredicted duration of the ${QUICK ? 'quick' : 'full'} run: about ${(estimateMs / 60000).toFixed(1)} min (timed calls only, from the predictions)`);
  console.log(lines.join('\n'));
}

// --- the suite ---

const bench = suite<State>('scheduler');

bench.before(async (state) => {
  configureScheduler({ persist: false });
  const started = new Date().toISOString();
  const t = performance.now();
  state.profile = await getProfile();
  const getProfileMs = performance.now() - t;
  state.label = labelOf(state.profile);
  state.rows = [];
  state.inputs = null;
  state.plans = [];
  for (const causal of MASKS) {
    for (const n of SIZES) state.plans.push({ n, causal, explanation: await explain(shapes(n), { causal }) });
  }
  const estimateMs = estimateRunMs(state.plans);
  if (PLAN_ONLY) {
    state.recorder = null;
    printPlan(state, estimateMs);
    return;
  }
  const machine = await describeMachine();
  const total = state.plans.reduce((s, p) => s + p.explanation.candidates.length + 1, 0);
  state.recorder = new SchedulerRecorder(machine, total, {
    label: state.label,
    capMs: CAP_MS,
    timing: TIMING,
    environment: state.profile.environment,
    environmentKey: environmentKey(state.profile.environment),
    getProfileMs: Math.round(getProfileMs),
    calibrationMs: state.profile.calibrationMs,
    profile: state.profile,
    estimatedRunS: Math.round(estimateMs / 1000),
    rows: state.rows,
  });
  const r = state.recorder;
  r.note(`environment ${state.label}: ${environmentKey(state.profile.environment)}`);
  if (state.profile.created < started) {
    r.note(`the profile was saved earlier (${state.profile.created}), not calibrated by this run: calibrationMs is that calibration's`);
  } else {
    r.note(`calibration (getProfile) took ${Math.round(getProfileMs)} ms (the profile says ${state.profile.calibrationMs} ms)`);
  }
  if (!state.profile.environment.adapter) r.note(`no WebGPU adapter: ${machine.adapterNote ?? 'none in this process'}; only the cpu split runs`);
  r.note(`candidates predicted over ${CAP_MS / 1000} s are not run (--cap-ms); infeasible ones (no prediction) are skipped with the reason`);
  r.note(`predicted duration of this run: about ${(estimateMs / 60000).toFixed(1)} min`);
  for (const failure of await warmUp(state)) r.note(failure);
});

for (const causal of MASKS) {
  bench(mask(causal), async (state) => {
    if (!state.recorder) return; // --plan
    const r = state.recorder;
    for (const n of SIZES) {
      const e = state.plans.find((p) => p.n === n && p.causal === causal)!.explanation;
      const x = inputsFor(state, n);
      const row: SizeRow = {
        n, d: D, causal,
        choice: { backend: e.backend, algorithm: e.algorithm, minSeqLen: e.minSeqLen, predictedMs: e.predictedMs, reason: e.reason },
        candidates: [], choiceMeasuredMs: null, best: null, choiceOverBest: null, chosenOverBest: null, choiceOverForced: null,
        choiceMeetsTarget: null,
        predictionsWithinRange: null, worstRatio: null,
      };
      state.rows.push(row);
      // The auto call is timed in turns with its own plan run forced, so that the two see
      // the same conditions (the machine's load, a software adapter's threads).
      const auto = () => hyperAttention(x.q, x.k, x.v, { causal });
      let choiceTime: Timing | undefined;
      let choiceDone = false;
      const recordChoice = async (paired: boolean) => {
        choiceDone = true;
        const kase: Omit<CaseResult, 'status'> = { method: 'choice', backend: 'auto', params: { n, d: D, causal, chose: candidateName(e) } };
        const outcome = await r.run(kase, async () => {
          const time = paired && choiceTime ? choiceTime : await timeCall(auto);
          const ratio = e.predictedMs / time.medianMs;
          return { time, metrics: { predictedMs: e.predictedMs, ratio }, summary: `predicted ${formatMs(e.predictedMs)}${paired ? ', timed in turns with its plan forced' : ''}` };
        });
        if (outcome?.time) Object.assign(row, { choiceMeasuredMs: outcome.time.medianMs, choiceTime: outcome.time });
      };
      for (const c of e.candidates) {
        const entry: CandidateRow = {
          backend: c.backend, algorithm: c.algorithm, minSeqLen: c.minSeqLen,
          predictedMs: Number.isFinite(c.predictedMs) ? c.predictedMs : null,
          ...(c.rejected ? { rejected: c.rejected } : {}),
          chosen: sameCandidate(c, e), status: 'ok',
        };
        row.candidates.push(entry);
        const params: Params = { n, d: D, causal, algorithm: c.algorithm, minSeqLen: c.minSeqLen ?? 'none' };
        const kase: Omit<CaseResult, 'status'> = { method: 'candidate', backend: c.backend, params };
        const skip = notRunReason(c);
        if (skip) {
          Object.assign(entry, skip);
          r.skip(kase, skip.reason);
          continue;
        }
        const outcome = await r.run(kase, async () => {
          const forced = await forcedCall(c, x, causal);
          let time: Timing;
          if (entry.chosen) [time, choiceTime] = await timeCalls([forced, auto]);
          else time = await timeCall(forced);
          const ratio = c.predictedMs / time.medianMs;
          return { time, metrics: { predictedMs: c.predictedMs, ratio }, summary: `predicted ${formatMs(c.predictedMs)}, predicted / measured ${ratio.toFixed(2)}` };
        });
        if (outcome?.time) Object.assign(entry, { measuredMs: outcome.time.medianMs, time: outcome.time, ratio: outcome.metrics!.ratio });
        else Object.assign(entry, { status: 'failed', reason: r.cases.at(-1)?.reason ?? 'failed' });
        if (entry.chosen) await recordChoice(choiceTime !== undefined);
      }
      if (!choiceDone) await recordChoice(false);
      analyse(row);
      r.write();
    }
    r.assertNoFailures();
  });
}

bench.after((state) => {
  if (!state.recorder) return;
  // The rows in the order of the tables: by n, then non-causal before causal.
  state.rows.sort((a, b) => a.n - b.n || Number(a.causal) - Number(b.causal));
  printTables(state);
  state.recorder.finish();
  console.log(`  results in ${resultsPath(state.label)}`);
});

bench.run();
