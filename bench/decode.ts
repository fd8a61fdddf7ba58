// Decoding against a key-value cache (src/cache.ts) on WebAssembly: the time per token of a
// decode step (append the token's keys and values, then exactAttention(q, cache)), on a
// cache of float32 and one of float16 (the same keys and values rounded), against the same
// call on plain tensors (which copies every key and value in again), next to the attention
// arithmetic alone at the exact kernel's GFLOP/s, and the rate the cached call reads keys
// and values at. Rounds of STEPS tokens per variant, run in turn after a warm-up round so
// that a machine's changing load weighs on all of them alike; medians; nothing is asserted.
// Run: `tsx bench/decode.ts [--quick]` (docs/cache.md).
import { createKVCache, exactAttention } from '../src/index.ts';
import { threadsFor } from '../src/threads/config.ts';
import { randomTensor } from '../test/util.ts';

const QUICK = process.argv.includes('--quick');
const [H, Hkv, d] = [32, 8, 128];
const NK = QUICK ? 8192 : 32768;
const RUNS = QUICK ? 5 : 9;
/** Decode steps per round of a cache variant (the tensor call, 15x slower, runs once a round). */
const STEPS = 8;
const CHUNK = 4096;

/** Median time of each call, over RUNS rounds of every call in turn after a warm-up round. */
async function medians(calls: (() => Promise<unknown>)[]): Promise<number[]> {
  for (const call of calls) await call();
  const times: number[][] = calls.map(() => []);
  for (let i = 0; i < RUNS; i++) {
    for (const [c, call] of calls.entries()) {
      const start = performance.now();
      await call();
      times[c].push(performance.now() - start);
    }
  }
  return times.map((t) => t.sort((a, b) => a - b)[Math.floor(RUNS / 2)]);
}

const threads = await threadsFor(undefined);
// Room for the tokens the rounds append: (RUNS + 1) rounds of STEPS.
const capacity = NK + (RUNS + 1) * STEPS;
const cache = await createKVCache({ kvHeads: Hkv, headDim: d, capacity });
const half = await createKVCache({ kvHeads: Hkv, headDim: d, capacity, dtype: 'float16' });
const K = new Float32Array(Hkv * NK * d);
const V = new Float32Array(Hkv * NK * d);
for (let t0 = 0; t0 < NK; t0 += CHUNK) {
  const k = randomTensor([1, Hkv, CHUNK, d], 2 * t0 + 1);
  const v = randomTensor([1, Hkv, CHUNK, d], 2 * t0 + 2);
  await cache.append(k, v);
  await half.append(k, v);
  for (let g = 0; g < Hkv; g++) {
    K.set(k.data.subarray(g * CHUNK * d, (g + 1) * CHUNK * d), (g * NK + t0) * d);
    V.set(v.data.subarray(g * CHUNK * d, (g + 1) * CHUNK * d), (g * NK + t0) * d);
  }
}
const q = randomTensor([1, H, 1, d], 7);
const options = { backend: 'cpu', causal: true } as const;
// The exact kernel's rate where it is bound by arithmetic: many rows against one head's keys.
const n = QUICK ? 1024 : 2048;
const square = [randomTensor([1, 1, n, d], 11), randomTensor([1, 1, n, d], 12), randomTensor([1, 1, n, d], 13)] as const;
// One decode step: the new token's keys and values in, then the call (its query heads
// attend to every token held, the new one included).
const token = [randomTensor([1, Hkv, 1, d], 5), randomTensor([1, Hkv, 1, d], 6)] as const;
const steps = (on: typeof cache) => async () => {
  for (let s = 0; s < STEPS; s++) {
    await on.append(...token);
    await exactAttention(q, on, options);
  }
};
const [cachedRound, halfRound, plain, squareMs] = await medians([
  steps(cache),
  steps(half),
  () => exactAttention(q, { data: K, shape: [1, Hkv, NK, d] }, { data: V, shape: [1, Hkv, NK, d] }, options),
  () => exactAttention(...square, { backend: 'cpu' }),
]);
const [cached, cachedHalf] = [cachedRound / STEPS, halfRound / STEPS];
const gflops = (4 * n * n * d) / squareMs / 1e6;
const flops = 4 * H * NK * d;
const arithmeticMs = flops / gflops / 1e6;
const kvBytes = 2 * Hkv * NK * d * 4;

console.log(`decode: H = ${H} over kvHeads = ${Hkv}, d = ${d}, ${NK} cached tokens, ${threads} WebAssembly thread(s)`);
console.log(`  with the cache:     ${cached.toFixed(2)} ms per token (append and call; about ${NK} tokens held)`);
console.log(`  with tensors:       ${plain.toFixed(2)} ms per token (${(plain / cached).toFixed(2)}x the cache's)`);
console.log(`  exact kernel:       ${gflops.toFixed(1)} GFLOP/s (n = ${n}, d = ${d}, ${squareMs.toFixed(1)} ms)`);
console.log(`  arithmetic alone:   ${arithmeticMs.toFixed(2)} ms (4·nq·nk·d = ${(flops / 1e9).toFixed(3)} GFLOP at that rate); the cache takes ${(cached / arithmeticMs).toFixed(2)}x`);
console.log(`  K/V read:           ${(kvBytes / 1e6).toFixed(1)} MB per token, ${(kvBytes / cached / 1e6).toFixed(2)} GB/s`);
console.log(`  float16 cache:      ${cachedHalf.toFixed(2)} ms per token (${(cached / cachedHalf).toFixed(2)}x faster than float32), ${(kvBytes / 2 / 1e6).toFixed(1)} MB read at ${(kvBytes / 2 / cachedHalf / 1e6).toFixed(2)} GB/s`);
cache.release();
half.release();
