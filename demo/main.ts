// The main job (`npm start`): exact attention vs HyperAttention through the built package
// (imported by its name, as a user would), each on the backend the scheduler picks
// (WebAssembly SIMD on every core, on a machine without a GPU), for n = 1k ... 64k, causal
// and not, d = 64, on the LLM-like `mixture` workload of bench/workloads.ts. Prints time,
// speedup and the relative error of HyperAttention's output against exact attention, in
// the default mode ('accurate', verified: tolerance 0.1) and in the authors' ('reference'),
// with the plan the head ended on and the error its check rows measured.
import { exactAttention, explain, getProfile, hyperAttention } from 'hyperattention';
import { WORKLOADS } from '../bench/workloads.ts';
import { relativeError } from '../test/util.ts';

const SIZES = [1024, 4096, 16384, 65536];
const D = 64;
const quick = process.argv.includes('--quick');
const sizes = quick ? SIZES.slice(0, 3) : SIZES;

/** A plan's backend, with its WebAssembly threads. */
const where = (plan: { backend: string; threads: number }) => (plan.backend === 'cpu' ? `cpu x${plan.threads}` : plan.backend);
const seconds = (ms: number) => (ms / 1000).toFixed(ms < 10_000 ? 3 : 1);
let gflops = 20; // refined after each exact run, for the time estimates

console.log(`HyperAttention vs exact attention, d = ${D}, workload 'mixture'`);
console.log(`(${WORKLOADS.mixture.description})`);
// Calibration happens on first use; done here, it stays out of the timings.
const profile = await getProfile();
const adapter = profile.environment.adapter;
console.log(`scheduler profile: ${profile.calibrationMs} ms to calibrate; WebGPU: ${adapter ? `${adapter.description}${adapter.fallback ? ' (software)' : ''}` : 'none'}`);
console.log("defaults: mode 'accurate', minSeqLen 4096; the authors' column: mode 'reference' (blockSize 256, sampleSize 256, lshNumProjs 7)\n");
const rows: string[][] = [];
const cases = sizes.flatMap((n) => [false, true].map((causal) => ({ n, causal })));
const started = performance.now();
for (const [i, { n, causal }] of cases.entries()) {
  const { q, k, v } = WORKLOADS.mixture.generate({ B: 1, H: 1, n, d: D, seed: n });
  const shapes = { q: q.shape, k: k.shape, v: v.shape };
  const plans = await Promise.all([explain(shapes, { causal }, 'exact'), explain(shapes, { causal })]);
  const flops = (4 * n * n * D) / (causal ? 2 : 1);
  process.stdout.write(
    `[${i + 1}/${cases.length}] n = ${n}, ${causal ? 'causal' : 'non-causal'}: exact (about ${seconds(flops / gflops / 1e6)} s)... `,
  );
  let t = performance.now();
  const exact = await exactAttention(q, k, v, { causal });
  const exactMs = performance.now() - t;
  gflops = flops / exactMs / 1e6;
  process.stdout.write(`${seconds(exactMs)} s; hyper... `);
  t = performance.now();
  const hyper = await hyperAttention(q, k, v, { causal });
  const hyperMs = performance.now() - t;
  const err = relativeError(hyper.out.data, exact.out.data);
  const checked = hyper.verification?.heads[0];
  process.stdout.write(`${seconds(hyperMs)} s; unchecked... `);
  t = performance.now();
  const plain = await hyperAttention(q, k, v, { causal, tolerance: Infinity });
  const plainMs = performance.now() - t;
  const plainErr = relativeError(plain.out.data, exact.out.data);
  process.stdout.write(`${seconds(plainMs)} s; authors' mode... `);
  const authors = await hyperAttention(q, k, v, { causal, mode: 'reference' });
  const authorsErr = relativeError(authors.out.data, exact.out.data);
  console.log(`done (elapsed ${seconds(performance.now() - started)} s)`);
  rows.push([
    String(n), causal ? 'yes' : 'no', seconds(exactMs), seconds(hyperMs), `${(exactMs / hyperMs).toFixed(1)}x`,
    err.toFixed(4), checked ? `${checked.error.toFixed(3)} (${checked.bound.toFixed(3)})` : '-', checked?.tried.map((p) => p.plan).join('>') ?? '-',
    `${(exactMs / plainMs).toFixed(1)}x`, plainErr.toFixed(4), authorsErr.toFixed(4), gflops.toFixed(1), where(plans[0]), `${where(plans[1])} ${plans[1].algorithm}`,
  ]);
}

const header = [
  'n', 'causal', 'exact s', 'hyper s', 'speedup', 'rel. error', 'checked (bound)', 'plans', 'unchecked: speedup', 'error',
  "authors' error", 'exact GFLOP/s', 'exact on', 'hyper on',
];
const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
const line = (cells: string[]) => cells.map((s, c) => s.padStart(widths[c])).join('  ');
console.log(`\n${line(header)}\n${rows.map(line).join('\n')}`);
console.log("\nrel. error = ||hyper - exact||_F / ||exact||_F of the output, in the default mode ('accurate'); authors' error: the same in");
console.log("mode 'reference' (the authors' algorithm). Below minSeqLen (4096) hyper is exact by design.");
console.log('checked (bound): the error the call measured on its check rows, and its 95% bound; plans: the plans the head tried, the');
console.log("last one its result (a head whose bound exceeds the tolerance, 0.1, moves up: 'accurate-wide', then 'exact').");
console.log('unchecked: the same call with tolerance Infinity (the plan alone, no checks): its speedup and error.');
console.log("exact on / hyper on: the scheduler's plan (explain()) for each call: backend (x WebAssembly threads), and whether it runs HyperAttention.");
