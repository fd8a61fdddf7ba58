// Fuzz suite: thousands of seeded bad and odd calls over every input and option, on the
// WebAssembly backend. Each call must end one of two ways: a correct result (checked
// against the float64 reference where the call is exact, else finite and of the right
// shape), or a HyperAttentionError with a known code. Anything else (an untyped error, a
// synchronous throw, a wrong or non-finite result, a bad input accepted, a call past the
// time limit) is a failure, printed with the seed and index that replay it. Then threaded
// calls overlap with RSS checked. Replay a failure:
//   FUZZ_SEED=13 FUZZ_ONLY=417 node scripts/test.mjs fuzz
import { suite } from './suite.ts';
import * as assert from 'uvu/assert';
import { hyperAttention, type HyperOptions } from '../src/index.ts';
import { Xoshiro128 } from '../src/random.ts';
import { fixedCases, makeCase, runCase, type Case } from './fuzz-cases.ts';
import { randomTensor } from './util.ts';

const test = suite('fuzz');

const SEED = Number(process.env.FUZZ_SEED ?? 13);
const CALLS = Number(process.env.FUZZ_CALLS ?? 5000);
const ONLY = process.env.FUZZ_ONLY === undefined ? undefined : Number(process.env.FUZZ_ONLY);

test(`fuzz: ${CALLS} seeded calls (seed ${SEED}) end in a correct result or a typed error`, async () => {
  const cases: [number, Case][] = [];
  const fixed = fixedCases();
  for (let i = 0; i < CALLS + fixed.length; i++) {
    if (ONLY !== undefined && i !== ONLY) continue;
    cases.push([i, i < CALLS ? makeCase(SEED, i) : fixed[i - CALLS]]);
  }
  const counts = { calls: 0, correct: 0, typed: 0, failures: 0 };
  const failures: string[] = [];
  const start = performance.now();
  for (const [i, c] of cases) {
    const outcome = await runCase(c);
    counts.calls++;
    if (outcome.kind === 'failure') {
      counts.failures++;
      failures.push(`  seed ${SEED} index ${i}: ${c.label}: ${outcome.why}`);
    } else counts[outcome.kind]++;
  }
  const seconds = ((performance.now() - start) / 1000).toFixed(1);
  console.log(`fuzz: ${counts.calls} calls in ${seconds} s: ${counts.correct} correct, ${counts.typed} typed rejections, ${counts.failures} failures`);
  if (failures.length > 0) console.log(`failures (replay: FUZZ_SEED=${SEED} FUZZ_ONLY=index node scripts/test.mjs fuzz):\n${failures.slice(0, 40).join('\n')}`);
  assert.is(counts.failures, 0, `${counts.failures} fuzz failures`);
  assert.ok(ONLY !== undefined || counts.calls >= 2000, 'at least 2000 calls');
});

test('fuzz: threaded calls of mixed sizes, up to four in flight: RSS ends within 10% of where it was once warm', async () => {
  const rng = new Xoshiro128(SEED);
  const sizes = [256, 700, 1024, 2048].map((n, i) => ({ n, t: randomTensor([1, 2, n, 64], 40 + i) }));
  const rss = () => process.memoryUsage().rss / 2 ** 20;
  const inFlight = (calls: number, peak = false) => {
    let left = calls;
    return Promise.all(Array.from({ length: 4 }, async (_, slot) => {
      while (left-- > 0) {
        const { t } = peak ? sizes[sizes.length - 1] : sizes[rng.nextBelow(sizes.length)];
        const causal = peak ? slot % 2 === 0 : rng.nextBelow(2) === 0;
        const o: HyperOptions = { backend: 'cpu', threads: peak ? 1 + (slot >> 1) * 2 : 1 + rng.nextBelow(3), causal, minSeqLen: 256 };
        const r = await hyperAttention(t, t, t, o);
        assert.ok(r.out.data.every(Number.isFinite));
      }
    }));
  };
  // Warm: first the peak (the largest size in every slot, one and three threads, causal and
  // not), so that the kept arenas reach their working size; then calls as below (RSS levels
  // off within about 150 such calls, then stays within 1%).
  await inFlight(16, true);
  await inFlight(96);
  const start = rss();
  await inFlight(96);
  const end = rss();
  assert.ok(end <= start * 1.1, `RSS ${start.toFixed(0)} MiB once warm, ${end.toFixed(0)} MiB after 96 more calls`);
});
