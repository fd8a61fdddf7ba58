// The sweep that chooses the accurate mode's defaults (ACCURATE_DEFAULTS, src/options.ts):
// accuracy against time of the accurate mode when one setting at a time moves away from
// the defaults, with the reference mode (the authors') as the yardstick, timed side by
// side in this process (calls alternate: reference, setting, reference, setting...) so
// that a busy machine slows both alike. Per setting it reports the geometric mean over
// workloads of error / reference error and time / reference time (summary.ts,
// sweepSummary); the results hold every workload's errors.
// Run alone: `tsx bench/sweep.bench.ts [--quick]`.
import { suite } from 'uvu';
import { hyperAttention, type AttentionResult, type HyperOptions } from '../src/index.ts';
import { ACCURATE_DEFAULTS } from '../src/options.ts';
import { bucketBits } from '../src/plan.ts';
import { attentionErrors, evenRows, referenceRows, type AttentionErrors, type ReferenceRows } from './error.ts';
import { Recorder, QUICK, describeMachine, type Params, type Timing } from './harness.ts';
import { errorSummary, headsOf, sweepSummary } from './summary.ts';
import { WORKLOADS, type WorkloadName, type WorkloadTensors } from './workloads.ts';

const N = QUICK ? 8192 : 16384;
const D = 64;
const SEED = 1;
const REFERENCE_ROWS = QUICK ? 128 : 256;
const WORKLOAD_LIST: WorkloadName[] = ['sink', 'columns', 'local', 'retrieval', 'llm', 'gaussian'];
/** Reference/setting pairs per setting: up to MAX_PAIRS while within PAIR_BUDGET_MS (at least one). */
const MAX_PAIRS = QUICK ? 1 : 3;
const PAIR_BUDGET_MS = 4000;

interface Setting {
  /** the option that differs from the defaults ('defaults' for none, 'mode' for the authors' fixed mode) */
  parameter: string;
  value: number | string;
  /** the parameter's default value (where the report's curves through the defaults pass) */
  defaultValue: number | string;
  options: HyperOptions;
}

/**
 * One parameter at a time around ACCURATE_DEFAULTS; the default value itself is the
 * 'defaults' setting. Causal calls have their own window, sample and round defaults, so
 * their grids sit around those.
 */
function settings(n: number, causal: boolean): Setting[] {
  const auto = bucketBits(n, 0); // what lshNumProjs 0 (the default) resolves to at this n
  const defaults: Record<string, number> = { ...ACCURATE_DEFAULTS, lshNumProjs: auto };
  if (causal) {
    defaults.window = ACCURATE_DEFAULTS.causalWindow;
    defaults.sampleSize = ACCURATE_DEFAULTS.causalSampleSize;
    defaults.lshRounds = ACCURATE_DEFAULTS.causalLshRounds;
  }
  const grid: [keyof HyperOptions, number[]][] = [
    ['sinkKeys', [0, 64]],
    ['heavyKeys', [0, 64, 128]],
    ['window', causal ? [512, 1024, 4096] : [32, 128, 256]],
    ['lshRounds', causal ? [0, 2, 6] : [0, 2, 4]],
    ['blockSize', [32, 128]],
    ['sampleSize', causal ? [256, 512, 2048] : [128, 256, 1024]],
    ['lshNumProjs', [auto - 1, auto + 1]],
    ['probeQueries', [16, 64]],
  ];
  const list: Setting[] = [
    { parameter: 'defaults', value: 'accurate', defaultValue: 'accurate', options: { mode: 'accurate' } },
    { parameter: 'mode', value: 'fixed', defaultValue: 'accurate', options: { mode: 'fixed' } },
  ];
  for (const [parameter, values] of grid) {
    for (const value of values.filter((v) => v !== defaults[parameter])) {
      list.push({ parameter, value, defaultValue: defaults[parameter], options: { mode: 'accurate', [parameter]: value } });
    }
  }
  return list;
}

interface State {
  recorder: Recorder;
}

const bench = suite<State>('sweep');

bench.before(async (state) => {
  const total = WORKLOAD_LIST.length * (settings(N, false).length + settings(N, true).length + 2);
  state.recorder = new Recorder('sweep', total, await describeMachine());
  state.recorder.note(`n = ${N}, d = ${D}; errors on ${REFERENCE_ROWS} evenly spaced query rows against float64 exact attention; each setting moves one option of the accurate mode's defaults (${JSON.stringify(ACCURATE_DEFAULTS)}; lshNumProjs 0 is ${bucketBits(N, 0)} at this n; causal calls use causalWindow, causalSampleSize and causalLshRounds)`);
  state.recorder.note(`times: reference and setting calls alternate, up to ${MAX_PAIRS} pair${MAX_PAIRS > 1 ? 's' : ''} per setting; ratios are the setting's median over the reference's median of the same pairs`);
  for (const name of WORKLOAD_LIST) state.recorder.note(`workload ${name} (${headsOf(name)} head${headsOf(name) > 1 ? 's' : ''}): ${WORKLOADS[name].description}`);
});

/** harness's measure() times one call again and again; here two calls alternate, so the samples are taken here. */
const timingOf = (samples: number[]): Timing => {
  const sorted = [...samples].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return {
    medianMs: sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2,
    minMs: sorted[0],
    maxMs: sorted[sorted.length - 1],
    runs: sorted.length,
    callsPerRun: 1,
    warmup: true,
  };
};

async function timed(call: () => Promise<AttentionResult>): Promise<[number, AttentionResult]> {
  const t = performance.now();
  const result = await call();
  return [performance.now() - t, result];
}

/** One (workload, causal): the reference once for its errors, then every setting beside it. */
async function sweepWorkload(state: State, name: WorkloadName, causal: boolean): Promise<void> {
  const heads = headsOf(name);
  const x: WorkloadTensors = WORKLOADS[name].generate({ B: 1, H: heads, n: N, d: D, seed: SEED, causal });
  const ref: ReferenceRows = referenceRows(x, evenRows(heads * N, REFERENCE_ROWS), causal);
  const errorsOf = (r: AttentionResult): AttentionErrors => attentionErrors(ref, r.out.data, r.lse.data, x.v.data, D);
  const call = (options: HyperOptions) => () => hyperAttention(x.q, x.k, x.v, { ...options, causal, backend: 'cpu' });
  const reference = call({ mode: 'reference' });
  // The warm-up call gives the reference's errors (the seed fixes every draw); the accurate
  // mode's path is warmed too, so that the first setting is not timed cold.
  const refErrors = errorsOf((await timed(reference))[1]);
  await call({ mode: 'accurate' })();
  const refSamples: number[] = [];
  const base: Params = { workload: name, n: N, d: D, heads, causal };

  for (const s of settings(N, causal)) {
    const params: Params = { ...base, mode: s.options.mode!, parameter: s.parameter, value: s.value, default: s.defaultValue };
    await state.recorder.run({ method: 'hyper', backend: 'cpu', params }, async () => {
      const mine: number[] = [];
      const theirs: number[] = [];
      let last: AttentionResult | undefined;
      const start = performance.now();
      while (mine.length < MAX_PAIRS && (mine.length === 0 || performance.now() - start < PAIR_BUDGET_MS)) {
        theirs.push((await timed(reference))[0]);
        const [ms, result] = await timed(call(s.options));
        mine.push(ms);
        last = result;
      }
      refSamples.push(...theirs);
      const e = errorsOf(last!);
      const time = timingOf(mine);
      const referenceMs = timingOf(theirs).medianMs;
      return {
        time,
        metrics: { ...e, referenceMs, errorRatio: e.relFrobenius / refErrors.relFrobenius, timeRatio: time.medianMs / referenceMs },
        summary: `${errorSummary(e)}; vs reference: error ${(e.relFrobenius / refErrors.relFrobenius).toFixed(3)}x, time ${(time.medianMs / referenceMs).toFixed(3)}x`,
      };
    });
  }
  // The yardstick's own case: its errors, and its time over every pair of this workload.
  await state.recorder.run({ method: 'hyper', backend: 'cpu', params: { ...base, mode: 'reference', parameter: 'mode', value: 'reference', default: 'accurate' } }, async () => ({
    time: timingOf(refSamples),
    metrics: { ...refErrors },
    summary: errorSummary(refErrors),
  }));
}

for (const name of WORKLOAD_LIST) {
  bench(name, async (state) => {
    for (const causal of [false, true]) await sweepWorkload(state, name, causal);
    state.recorder.assertNoFailures();
  });
}

bench.after((state) => {
  console.log('  setting: error / reference error, time / reference time (geometric means over workloads; non-causal, causal)');
  for (const r of sweepSummary(state.recorder.cases)) {
    const one = (x: number | undefined) => (x === undefined ? '-' : `${x.toFixed(3)}x`);
    const pair = (all: number, by: Record<string, number>) => `${one(all)} (${one(by.false)}, ${one(by.true)})`;
    console.log(`  ${r.parameter} = ${r.value}: error ${pair(r.errorRatio, r.errorRatioByCausal)}, time ${pair(r.timeRatio, r.timeRatioByCausal)} over ${r.cases} cases`);
  }
  state.recorder.finish();
});

bench.run();
