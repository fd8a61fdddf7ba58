// Chunked causal prefill through a key-value cache (src/cache.ts) against the whole prompt in
// one call, per workload: HyperAttention's plan alone (`tolerance: Infinity`), the prompt's
// keys and values appended CHUNK tokens at a time and each chunk's queries (the cache's last
// positions) attended against every token held, beside one call over the whole prompt on
// plain tensors; the error of each against float64 attention on rows spread over every head
// (relative Frobenius, relative to the values' RMS, largest lse error), and the time of each.
// A chunk's call on a cache chooses its heavy columns from the masses its earlier calls'
// probes found (src/keyindex.ts); the whole call probes once. Nothing is asserted.
// Run: `tsx bench/chunks.ts [--quick]` (docs/cache.md, "The heavy columns' masses").
import { attentionErrors, evenRows, referenceRows } from './error.ts';
import { place, positions, WORKLOADS, type WorkloadName } from './workloads.ts';
import { createKVCache, hyperAttention } from '../src/index.ts';

const QUICK = process.argv.includes('--quick');
const N = QUICK ? 8192 : 16384;
const [H, d] = [8, 64];
const CHUNK = 2048;
/** Rows of the float64 reference, spread over every head. */
const ROWS = 256;
const NAMES: WorkloadName[] = ['llm', 'mixture', 'columns', 'sink', 'retrieval', 'partial-retrieval', 'clustered', 'wide-local'];
const options = { causal: true, backend: 'cpu', tolerance: Infinity } as const;

const rows = evenRows(H * N, ROWS);
const format = (e: ReturnType<typeof attentionErrors>) => `${e.relFrobenius.toFixed(4)} (to V ${e.relToV.toFixed(4)}, lse ${e.maxLseError.toFixed(3)})`;
console.log(`causal prefill, ${H} heads, n = ${N}, d = ${d}, chunks of ${CHUNK} through a cache vs one call; tolerance Infinity; errors on ${ROWS} rows`);
console.log('workload | whole: error | chunks: error | whole s | chunks s');
for (const name of NAMES) {
  const x = WORKLOADS[name].generate({ B: 1, H, n: N, d, seed: 3, causal: true });
  const ref = referenceRows(x, rows, true);
  let start = performance.now();
  const whole = await hyperAttention(x.q, x.k, x.v, options);
  const wholeS = (performance.now() - start) / 1000;
  const cache = await createKVCache({ kvHeads: H, headDim: d, capacity: N, backend: 'cpu' });
  const out = new Float32Array(H * N * d);
  const lse = new Float32Array(H * N);
  start = performance.now();
  try {
    for (let c = 0; c < N; c += CHUNK) {
      await cache.append(positions(x.k, c, c + CHUNK), positions(x.v, c, c + CHUNK));
      const r = await hyperAttention(positions(x.q, c, c + CHUNK), cache, options);
      place(out, N, r.out.data as Float32Array, c, CHUNK, d);
      place(lse, N, r.lse.data as Float32Array, c, CHUNK, 1);
    }
  } finally {
    cache.release();
  }
  const chunksS = (performance.now() - start) / 1000;
  const w = attentionErrors(ref, whole.out.data as Float32Array, whole.lse.data as Float32Array, x.v.data, d);
  const k = attentionErrors(ref, out, lse, x.v.data, d);
  console.log(`${name} | ${format(w)} | ${format(k)} | ${wholeS.toFixed(2)} | ${chunksS.toFixed(2)}`);
}
process.exit(0);
