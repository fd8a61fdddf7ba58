// Peak WebAssembly memory of one HyperAttention call on the CPU backend, beyond the call's
// own inputs and outputs for one head (the Core issue's bound: under 64 MiB at n = 65536,
// d = 64, one head). The backend's linear memory only grows, so its size after the call is
// the call's high-water mark; each case uses a fresh backend.
// Run alone: `tsx bench/memory.bench.ts [--quick]`.
import { suite } from 'uvu';
import { createCpuBackend } from '../src/cpu/backend.ts';
import { runHyper } from '../src/hyper.ts';
import { resolveHyperOptions } from '../src/options.ts';
import { attentionShape } from '../src/tensor.ts';
import { Recorder, QUICK, describeMachine } from './harness.ts';
import { WORKLOADS } from './workloads.ts';

const SIZES = QUICK ? [16384] : [16384, 65536];
const D = 64;
const MiB = 2 ** 20;

interface State {
  recorder: Recorder;
}

const bench = suite<State>('memory');

bench.before(async (state) => {
  state.recorder = new Recorder('memory', SIZES.length * 2, await describeMachine());
  state.recorder.note('inputs and outputs of one head: q, k, v (n x d each), out (n x d) and lse (n), all f32');
});

bench('hyper, CPU backend, one head', async (state) => {
  for (const n of SIZES) {
    for (const causal of [false, true]) {
      await state.recorder.run({ method: 'hyper', backend: 'cpu', params: { n, d: D, causal } }, async () => {
        const { q, k, v } = WORKLOADS.mixture.generate({ B: 1, H: 1, n, d: D, seed: 1 });
        const backend = await createCpuBackend();
        const before = backend.memoryBytes;
        const o = resolveHyperOptions({ causal });
        await runHyper(backend, attentionShape(q, k, v, causal), o, q, k, v);
        const peak = backend.memoryBytes;
        const io = (4 * n * D + n) * 4;
        const beyond = peak - io;
        return {
          metrics: { peakBytes: peak, moduleBytesAtStart: before, inputOutputBytes: io, beyondBytes: beyond },
          summary: `peak ${(peak / MiB).toFixed(1)} MiB, inputs and outputs ${(io / MiB).toFixed(1)} MiB, beyond them ${(beyond / MiB).toFixed(1)} MiB`,
        };
      });
    }
  }
  state.recorder.assertNoFailures();
});

bench.after((state) => state.recorder.finish());

bench.run();
