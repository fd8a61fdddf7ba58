// The calling thread during a call (docs/threads.md): for exact attention and
// HyperAttention over 8 heads, d = 64 and 128, causal or not, on the default threads and on
// one, the longest gap between turns of the event loop while the call runs (a 1 ms
// interval's lateness; on Linux also the CPU time the thread ran in that gap, which a
// loaded machine does not stretch), then the call aborted: how long after the abort was due it
// rejected, and the CPU the process burned in the 300 ms after (the workers finishing the
// jobs they had started). Each case is one call, aborted WINDOW_MS after it started (a
// call that ends sooner gives its whole stall, and no abort figures); calibration runs
// first, outside the cases. Results: bench/results/stall.json.
// Run alone: `node --experimental-wasm-relaxed-simd --import tsx bench/stall.bench.ts [--quick]`.
import { suite } from 'uvu';
import { exactAttention, hyperAttention, warmup } from '../src/index.ts';
import { threadsFor } from '../src/threads/config.ts';
import { measureAbort } from '../test/responsiveness.ts';
import { describeMachine, QUICK, Recorder } from './harness.ts';
import { WORKLOADS } from './workloads.ts';

const HEADS = 8;
const N = QUICK ? 8192 : 32768;
/** How long each call runs before it is aborted. */
const WINDOW_MS = QUICK ? 1000 : 4000;
const METHODS = ['exact', 'hyper'] as const;

interface State {
  recorder: Recorder;
  threads: number;
}

const bench = suite<State>('stall');

bench.before(async (state) => {
  state.threads = await threadsFor(undefined);
  state.recorder = new Recorder('stall', METHODS.length * 2 * 2 * 2, await describeMachine());
  state.recorder.note(`${HEADS} heads x ${N} tokens; each call aborted ${WINDOW_MS} ms after it started; default threads here: ${state.threads}`);
  await warmup();
});

bench('the event loop during a call, and aborts', async (state) => {
  for (const d of [64, 128]) {
    const x = WORKLOADS.llm.generate({ B: 1, H: HEADS, n: N, d, seed: d });
    for (const causal of [false, true]) {
      for (const method of METHODS) {
        for (const threads of [state.threads, 1]) {
          const params = { heads: HEADS, n: N, d, causal, threads };
          await state.recorder.run({ method, backend: 'cpu', params }, async () => {
            const call = (signal: AbortSignal) => (method === 'exact' ? exactAttention : hyperAttention)(
              x.q, x.k, x.v, { backend: 'cpu', causal, threads, signal },
            );
            const a = await measureAbort(call, WINDOW_MS);
            const metrics: Record<string, number> = { stallMs: a.stall.wallMs };
            if (a.stall.cpuMs !== undefined) metrics.stallCpuMs = a.stall.cpuMs;
            if (!a.completed) Object.assign(metrics, { abortLatencyMs: a.latencyMs, cpuAfterAbortMs: a.cpuAfterMs });
            const running = a.stall.cpuMs === undefined ? '' : ` (${a.stall.cpuMs.toFixed(1)} ms running)`;
            const abort = a.completed ? 'ended before the abort' : `abort rejected ${a.latencyMs.toFixed(1)} ms after it was due, ${a.cpuAfterMs.toFixed(0)} ms CPU after`;
            return { metrics, summary: `longest stall ${a.stall.wallMs.toFixed(1)} ms${running}, ${abort}` };
          });
        }
      }
    }
  }
});

bench.after((state) => {
  const ok = state.recorder.cases.filter((c) => c.metrics);
  const worst = (key: string) => Math.max(0, ...ok.map((c) => c.metrics![key] ?? 0));
  console.log(`  worst: stall ${worst('stallMs').toFixed(1)} ms (${worst('stallCpuMs').toFixed(1)} ms running), abort ${worst('abortLatencyMs').toFixed(1)} ms, CPU after abort ${worst('cpuAfterAbortMs').toFixed(0)} ms`);
  state.recorder.assertNoFailures();
  state.recorder.finish();
});

bench.run();
