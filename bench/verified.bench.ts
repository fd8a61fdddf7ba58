// Verified attention, measured: for each head kind of workloads.ts, size, causal or not,
// and seed, HyperAttention at tolerance Infinity (the plan alone), 0.1 and 0.05 against
// exact attention in the same process: the realized relative error of each head's out
// (up to 16k keys against exactAttention of the same inputs, itself checked against
// float64 to 1e-5 by the tests; beyond, against float64 exact attention on REFERENCE_ROWS
// random rows, error.ts), the estimate and bound the call reported, the plan each head
// ended on, and the times side by side (exactAttention timed once per size and causality:
// its time does not depend on the data). The summary checks the targets of verified attention: realized error
// within the tolerance on >= 95% of heads, the estimate within 2x of the realized error
// on >= 90% of heads where that is >= 0.01, checks <= 10% of a call, heads that end exact
// <= 1.15x exact attention. Results: bench/results/verified.json; docs/verified.md shows them.
//
// Run: `node --experimental-wasm-relaxed-simd --import tsx bench/verified.bench.ts
// [--sizes=16384,65536] [--seeds=5,2] [--workloads=sink,columns,...]` (the full run takes
// about half an hour on two idle cores).
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { exactAttention, hyperAttention, type AttentionResult } from '../src/index.ts';
import { Xoshiro128 } from '../src/random.ts';
import { attentionErrors, referenceRows } from './error.ts';
import { RESULTS_DIR, describeMachine } from './harness.ts';
import { WORKLOADS, type WorkloadName } from './workloads.ts';

const arg = (name: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
const SIZES = (arg('sizes') ?? '16384,65536').split(',').map(Number);
// Seeds per size, in the order of the sizes (the last count serves the sizes after it).
const SEEDS = (arg('seeds') ?? '5').split(',').map(Number);
const KINDS = (arg('workloads') ?? 'sink,columns,local,wide-local,retrieval,partial-retrieval,gaussian').split(',') as WorkloadName[];
/** The plot's tolerances at the smaller sizes; beyond FULL_EXACT_MAX (exact attention takes ~20 s a head) the targets' two. */
const PLOT_TOLERANCES = [Infinity, 0.3, 0.1, 0.05, 0.02];
const TOLERANCES = [Infinity, 0.1, 0.05];
const D = 64;
/** Beyond this many keys the realized error comes from float64 rows, not a whole exact call. */
const FULL_EXACT_MAX = 16384;
const REFERENCE_ROWS = 512;

interface Row {
  workload: WorkloadName;
  n: number;
  causal: boolean;
  seed: number;
  tolerance: number;
  realized: number;
  estimate: number | null;
  bound: number | null;
  plan: string;
  tried: string[];
  ms: number;
  exactMs: number;
  /** the same call at tolerance 1e9: checks, no head moved up */
  checkedMs: number | null;
  /** the call at tolerance Infinity */
  planMs: number;
}

function relError(a: Float32Array, b: Float32Array): number {
  let e = 0;
  let x = 0;
  for (let i = 0; i < a.length; i++) {
    e += (a[i] - b[i]) ** 2;
    x += b[i] * b[i];
  }
  return Math.sqrt(e / x);
}

async function timed<T>(call: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const start = performance.now();
  const value = await call();
  return { value, ms: performance.now() - start };
}

const rows: Row[] = [];
// Warm-up: the first call instantiates the kernels and the threads.
{
  const { q, k, v } = WORKLOADS.sink.generate({ B: 1, H: 1, n: 8192, d: D, seed: 0 });
  await hyperAttention(q, k, v, { backend: 'cpu' });
  await exactAttention(q, k, v, { backend: 'cpu' });
}
for (const n of SIZES) {
  for (const causal of [false, true]) {
    let exactMs: number | undefined;
    for (const workload of KINDS) {
      for (let seed = 1; seed <= SEEDS[Math.min(SIZES.indexOf(n), SEEDS.length - 1)]; seed++) {
        const x = WORKLOADS[workload].generate({ B: 1, H: 1, n, d: D, seed: 1000 * seed + n, causal });
        const { q, k, v } = x;
        let realizedOf: (out: Float32Array) => number;
        if (n <= FULL_EXACT_MAX || exactMs === undefined) {
          const exact = await timed(() => exactAttention(q, k, v, { backend: 'cpu', causal }));
          exactMs ??= exact.ms;
          realizedOf = (out) => relError(out, exact.value.out.data);
        }
        if (n > FULL_EXACT_MAX) {
          const rng = new Xoshiro128(seed);
          const picked = Int32Array.from({ length: REFERENCE_ROWS }, () => rng.nextBelow(n)).sort();
          const ref = referenceRows(x, picked, causal);
          realizedOf = (out) => attentionErrors(ref, out, new Float32Array(n), v.data as Float32Array, D).relFrobenius;
        }
        const run = (tolerance: number) => timed(() => hyperAttention(q, k, v, { backend: 'cpu', causal, tolerance, seed }));
        const plain = await run(Infinity);
        const checked = await run(1e9);
        for (const tolerance of n <= FULL_EXACT_MAX ? PLOT_TOLERANCES : TOLERANCES) {
          const r: { value: AttentionResult; ms: number } = tolerance === Infinity ? plain : await run(tolerance);
          const head = r.value.verification?.heads[0];
          const row: Row = {
            workload, n, causal, seed, tolerance, realized: realizedOf!(r.value.out.data),
            estimate: head?.error ?? null, bound: head?.bound ?? null, plan: head?.plan ?? 'unchecked',
            tried: head?.tried.map((t) => t.plan) ?? [], ms: r.ms, exactMs: exactMs!,
            checkedMs: checked.ms, planMs: plain.ms,
          };
          // The plan alone is also what the first check measures.
          if (tolerance === Infinity) {
            const first = checked.value.verification!.heads[0];
            Object.assign(row, { estimate: first.error, bound: first.bound, plan: 'accurate' });
          }
          rows.push(row);
          console.log(
            `${workload.padEnd(18)} n ${String(n).padStart(6)} ${causal ? 'causal' : 'full  '} seed ${seed} tol ${String(tolerance).padEnd(8)}` +
            ` realized ${row.realized.toFixed(4)} est ${row.estimate?.toFixed(4)} bound ${row.bound?.toFixed(4)} plan ${row.tried.join('>') || row.plan}` +
            ` ${row.ms.toFixed(0)} ms (exact ${row.exactMs.toFixed(0)}, plan ${row.planMs.toFixed(0)}, checked ${row.checkedMs?.toFixed(0)})`,
          );
        }
      }
    }
  }
}

/** The targets, over every row of a tolerance. */
function summary(tolerance: number) {
  const mine = rows.filter((r) => r.tolerance === tolerance);
  const met = mine.filter((r) => r.realized <= tolerance).length;
  const exactEnd = mine.filter((r) => r.plan === 'exact');
  const firstPass = mine.filter((r) => r.tried.length === 1 && r.plan !== 'exact');
  const median = (xs: number[]) => (xs.length ? [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] : NaN);
  return {
    tolerance, heads: mine.length, withinTolerance: met / mine.length,
    endedExact: exactEnd.length,
    exactEndedCostMedian: median(exactEnd.map((r) => r.ms / r.exactMs)),
    exactEndedCostMax: Math.max(...exactEnd.map((r) => r.ms / r.exactMs)),
    firstPassCostMedian: median(firstPass.map((r) => r.ms / r.planMs)),
  };
}
const plainRows = rows.filter((r) => r.tolerance === Infinity);
const sizeable = plainRows.filter((r) => r.realized >= 0.01);
const within2x = sizeable.filter((r) => r.estimate! <= 2 * r.realized && r.estimate! >= r.realized / 2).length;
const covered = plainRows.filter((r) => r.realized <= r.bound!).length;
const checkCost = plainRows.filter((r) => r.n >= 16384).map((r) => r.checkedMs! / r.planMs - 1);
const result = {
  machine: await describeMachine(),
  params: { sizes: SIZES, seeds: SEEDS, workloads: KINDS, d: D, tolerances: PLOT_TOLERANCES.map(String) },
  estimate: {
    heads: plainRows.length, boundCoverage: covered / plainRows.length,
    within2x: within2x / Math.max(1, sizeable.length), sizeable: sizeable.length,
    checkCostMedian: [...checkCost].sort((a, b) => a - b)[Math.floor(checkCost.length / 2)],
    checkCostMax: Math.max(...checkCost),
  },
  tolerances: [0.1, 0.05].map(summary),
  rows: rows.map((r) => ({ ...r, tolerance: String(r.tolerance) })),
};
console.log(JSON.stringify({ estimate: result.estimate, tolerances: result.tolerances }, null, 2));
mkdirSync(RESULTS_DIR, { recursive: true });
writeFileSync(join(RESULTS_DIR, 'verified.json'), `${JSON.stringify(result, null, 1)}\n`);
