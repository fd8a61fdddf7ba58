// Soak: 2,000 calls on the CPU backend (quick: 400), 1 to 8 in flight at a time, each on 1 to
// 4 threads, of mixed sizes, modes and causality, with the process's RSS sampled every 25
// calls. A library inside a long-lived server or page must not grow: the run fails unless RSS
// ends within 10% of where it was after the first 100 calls. Those begin as a server's day
// does, with its peak: 8 calls in flight of the largest size, in each mode, causal and not,
// on one thread, then on several (64 calls), so that the memories for the most calls in
// flight exist at their working size (a memory only grows; each serves one call at a time,
// and is kept for the next).
// Run alone: `tsx bench/soak.bench.ts [--quick]`.
import { suite } from 'uvu';
import { exactAttention, hyperAttention, type HyperOptions } from '../src/index.ts';
import { Xoshiro128 } from '../src/random.ts';
import type { Tensor } from '../src/tensor.ts';
import { QUICK, Recorder, describeMachine } from './harness.ts';
import { WORKLOADS } from './workloads.ts';

const CALLS = QUICK ? 400 : 2000;
const WARM_CALLS = 100;
const SAMPLE_EVERY = 25;
const SIZES = [256, 1024, 2048, 4096];
const D = 64;
const MiB = 2 ** 20;

interface State {
  recorder: Recorder;
}

const bench = suite<State>('soak');

bench.before(async (state) => {
  state.recorder = new Recorder('soak', 1, await describeMachine());
  state.recorder.note(`${CALLS} calls, 1 to 8 in flight, threads 1 to 4, n in ${SIZES.join(', ')}, d ${D}; RSS sampled every ${SAMPLE_EVERY} calls`);
});

bench('RSS over a long run of overlapping calls', async (state) => {
  const rng = new Xoshiro128(7);
  const inputs = new Map<number, { q: Tensor; k: Tensor; v: Tensor }>();
  for (const n of SIZES) inputs.set(n, WORKLOADS.mixture.generate({ B: 1, H: 2, n, d: D, seed: n }));
  const rss = () => process.memoryUsage().rss / MiB;
  const samples: { calls: number; rssMiB: number }[] = [];
  let done = 0;
  /** One call of a random size, mode, causality and thread count; its result checked finite. */
  const call = async (peak?: { threads: number; causal: boolean; mode: 'fixed' | 'accurate' }) => {
    const n = peak ? SIZES[SIZES.length - 1] : SIZES[rng.nextBelow(SIZES.length)];
    const { q, k, v } = inputs.get(n)!;
    const o: HyperOptions = { backend: 'cpu', causal: peak?.causal ?? rng.nextBelow(2) === 0, threads: peak?.threads ?? 1 + rng.nextBelow(4) };
    const mode = peak?.mode ?? (rng.nextBelow(3) === 0 ? 'fixed' : 'accurate');
    const r = !peak && n <= 1024 && rng.nextBelow(4) === 0
      ? await exactAttention(q, k, v, o)
      : await hyperAttention(q, k, v, { ...o, mode, minSeqLen: n <= 1024 ? 256 : undefined });
    if (!r.out.data.every(Number.isFinite)) throw new Error(`a non-finite result (n ${n}, ${JSON.stringify(o)})`);
    done++;
    if (done % SAMPLE_EVERY === 0) samples.push({ calls: done, rssMiB: Math.round(rss()) });
  };
  await state.recorder.run({ method: 'soak', backend: 'cpu', params: { calls: CALLS } }, async () => {
    const start = performance.now();
    let started = 0;
    for (const threads of [1, 4]) {
      for (const causal of [false, true]) {
        for (const mode of ['fixed', 'accurate'] as const) {
          await Promise.all(Array.from({ length: 8 }, () => call({ threads, causal, mode })));
          started += 8;
        }
      }
    }
    while (started < CALLS) {
      // A round of `inFlight` calls at a time, 4 rounds' worth of them.
      const inFlight = 1 + rng.nextBelow(8);
      const round = Math.min(CALLS - started, inFlight * 4);
      started += round;
      let left = round;
      await Promise.all(Array.from({ length: inFlight }, async () => {
        while (left-- > 0) await call();
      }));
    }
    const warm = samples.find((s) => s.calls >= WARM_CALLS)!.rssMiB;
    const end = samples[samples.length - 1].rssMiB;
    const peak = Math.max(...samples.map((s) => s.rssMiB));
    console.log(`  RSS (MiB) every ${SAMPLE_EVERY} calls: ${samples.map((s) => s.rssMiB).join(' ')}`);
    if (end > warm * 1.1) throw new Error(`RSS grew from ${warm} MiB after ${WARM_CALLS} calls to ${end} MiB after ${CALLS}`);
    const seconds = (performance.now() - start) / 1000;
    return {
      metrics: { calls: CALLS, rssAfterWarmMiB: warm, rssEndMiB: end, rssPeakMiB: peak, endOverWarm: end / warm, seconds },
      summary: `RSS ${warm} MiB after ${WARM_CALLS} calls, ${end} MiB after ${CALLS} (peak ${peak}), ${seconds.toFixed(0)} s`,
    };
  });
  state.recorder.assertNoFailures();
});

bench.after((state) => state.recorder.finish());

bench.run();
