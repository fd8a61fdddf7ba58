// Accuracy and cost side by side: HyperAttention (CPU backend) on each workload of
// workloads.ts, both modes, a few (blockSize, sampleSize) settings, causal and not, against
// float64 exact attention on evenly spaced query rows (error.ts). Each case reports the
// relative Frobenius error of out, the error relative to the values' norm, the max lse
// error, and the time of the call: this is what decides the default mode.
// Run alone: `tsx bench/accuracy.bench.ts [--quick]`.
import { suite } from 'uvu';
import { DEFAULTS, hyperAttention, type AttentionResult, type Mode } from '../src/index.ts';
import { attentionErrors, evenRows, referenceRows, type ReferenceRows } from './error.ts';
import { Recorder, QUICK, describeMachine, measure, type MeasureOptions } from './harness.ts';
import { compareModes } from './summary.ts';
import { WORKLOADS, WORKLOAD_NAMES, type WorkloadName, type WorkloadTensors } from './workloads.ts';

// HyperAttention only approximates from n = minSeqLen non-causal and above it causal (below,
// it is exact attention), so the sizes start there.
const SIZES = QUICK ? [8192, 16384] : [4096, 8192, 16384, 32768];
const CAUSAL_SIZES = SIZES.filter((n) => n > DEFAULTS.minSeqLen);
const CASES = SIZES.map((n) => ({ n, causal: [false, ...(CAUSAL_SIZES.includes(n) ? [true] : [])] }));
const SETTINGS = QUICK ? [{ blockSize: 256, sampleSize: 256 }] : [128, 256, 512].map((s) => ({ blockSize: s, sampleSize: s }));
const MODES: Mode[] = ['reference', 'fixed'];
const D = 64;
/** The mixture has one head per profile; the single-phenomenon workloads need one. */
const HEADS: Record<WorkloadName, number> = { gaussian: 1, clustered: 1, local: 1, sink: 1, mixture: 4 };
const REFERENCE_ROWS = QUICK ? 128 : 512;
const SEED = 1;
/** Many cases, each cheap: fewer samples than the speed suites take. */
const ACCURACY_TIMING: MeasureOptions = QUICK ? { budgetMs: 300, maxRuns: 3, minSampleMs: 0 } : { budgetMs: 800, maxRuns: 5, minSampleMs: 0 };

interface State {
  recorder: Recorder;
}

const bench = suite<State>('accuracy');

bench.before(async (state) => {
  const total = WORKLOAD_NAMES.length * (SIZES.length + CAUSAL_SIZES.length) * MODES.length * SETTINGS.length;
  state.recorder = new Recorder('accuracy', total, await describeMachine());
  state.recorder.note(`errors are measured on ${REFERENCE_ROWS} evenly spaced query rows against float64 exact attention; d = ${D}; times are per call (the mixture has ${HEADS.mixture} heads, the others 1); causal cases start above n = ${DEFAULTS.minSeqLen}, where causal attention stops being exact`);
  for (const name of WORKLOAD_NAMES) state.recorder.note(`workload ${name}: ${WORKLOADS[name].description}`);
});

async function runWorkload(state: State, name: WorkloadName, n: number, x: WorkloadTensors, causal: boolean, ref: ReferenceRows): Promise<void> {
  for (const mode of MODES) {
    for (const setting of SETTINGS) {
      const params = { workload: name, n, d: D, heads: HEADS[name], causal, mode, ...setting };
      await state.recorder.run({ method: 'hyper', backend: 'cpu', params }, async () => {
        const last: { result?: AttentionResult } = {};
        const time = await measure(async () => {
          last.result = await hyperAttention(x.q, x.k, x.v, { causal, mode, backend: 'cpu', ...setting });
        }, ACCURACY_TIMING);
        const { out, lse } = last.result!; // every call gives the same output: the seed fixes the draws
        const e = attentionErrors(ref, out.data, lse.data, x.v.data, D);
        return {
          time,
          metrics: { ...e },
          summary: `rel. Frobenius ${e.relFrobenius.toExponential(2)}, rel. to V ${e.relToV.toExponential(2)}, max lse error ${e.maxLseError.toExponential(2)}`,
        };
      });
    }
  }
}

for (const name of WORKLOAD_NAMES) {
  bench(name, async (state) => {
    for (const { n, causal: variants } of CASES) {
      const x = WORKLOADS[name].generate({ B: 1, H: HEADS[name], n, d: D, seed: SEED });
      const rows = evenRows(HEADS[name] * n, REFERENCE_ROWS);
      for (const causal of variants) await runWorkload(state, name, n, x, causal, referenceRows(x, rows, causal));
    }
    state.recorder.assertNoFailures();
  });
}

bench.after((state) => {
  for (const m of compareModes(state.recorder.cases)) {
    console.log(
      `  ${m.workload}: fixed / reference: error ${m.errorRatio.toFixed(3)}x, max lse error ${m.lseRatio.toFixed(3)}x, time ${m.timeRatio.toFixed(3)}x (geometric mean over ${m.cases} cases)`,
    );
  }
  state.recorder.finish();
});

bench.run();
