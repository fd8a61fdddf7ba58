// The Deno example: exact attention vs HyperAttention on navigator.gpu (WebAssembly when
// Deno finds no adapter), printing the same table as `npm start` for a few sizes that run
// in well under a minute even on a software adapter. 'hyperattention' comes from
// deno.json's import map (the local build, dist/deno/); in your own project map it to
// npm:hyperattention. Run from the repository root after `npm run build`:
//   deno run --unstable-webgpu --config examples/deno/deno.json examples/deno/main.ts [--sizes 1024,4096] [--cpu]
import { exactAttention, hyperAttention, HyperAttentionError, type BackendChoice } from 'hyperattention';
import { WORKLOADS } from '../../bench/workloads.ts';
import { relativeError } from '../../test/util.ts';

const D = 64;
const WORKLOAD = WORKLOADS.mixture;

function argument(name: string): string | undefined {
  const i = Deno.args.indexOf(name);
  return i >= 0 ? Deno.args[i + 1] : undefined;
}

const sizes = (argument('--sizes') ?? '1024,4096,8192').split(',').map(Number);
if (sizes.some((n) => !Number.isInteger(n) || n < 2)) {
  console.error(`--sizes: expected comma-separated integers >= 2, got ${argument('--sizes')}`);
  Deno.exit(2);
}

async function pickBackend(): Promise<{ backend: BackendChoice; description: string }> {
  if (Deno.args.includes('--cpu')) return { backend: 'cpu', description: 'WebAssembly SIMD (--cpu)' };
  const adapter = await navigator.gpu?.requestAdapter();
  if (!adapter) return { backend: 'cpu', description: 'WebAssembly SIMD (Deno found no WebGPU adapter)' };
  const { description, vendor, isFallbackAdapter } = adapter.info as GPUAdapterInfo & { isFallbackAdapter?: boolean };
  return {
    backend: 'webgpu',
    description: `WebGPU on ${description || vendor || 'an unnamed adapter'}${isFallbackAdapter ? ' (software adapter)' : ''}`,
  };
}

let { backend, description } = await pickBackend();
const seconds = (ms: number) => (ms / 1000).toFixed(ms < 10_000 ? 3 : 1);

/** Runs both on the chosen backend; falls back to WebAssembly once if this build has no WebGPU backend. */
async function timed(call: (b: BackendChoice) => Promise<{ out: { data: Float32Array } }>) {
  try {
    const t = performance.now();
    const result = await call(backend);
    return { result, ms: performance.now() - t };
  } catch (error) {
    if (!(error instanceof HyperAttentionError && error.code === 'UNSUPPORTED') || backend === 'cpu') throw error;
    console.log(`(WebGPU: ${error.message}; using WebAssembly SIMD instead)`);
    backend = 'cpu';
    description = 'WebAssembly SIMD (no WebGPU backend)';
    return timed(call);
  }
}

console.log(`HyperAttention vs exact attention in Deno ${Deno.version.deno}, d = ${D}, workload '${WORKLOAD.name}'`);
console.log(`backend: ${description}`);
console.log("defaults: mode 'accurate' (window 64, 16 sink keys, 32 heavy columns, LSH buckets of about 16 keys, 512 samples;");
console.log('causal: window 2048, 4 LSH rounds, 1024 samples), minSeqLen 4096\n');

const rows: string[][] = [];
for (const n of sizes) {
  for (const causal of [false, true]) {
    const { q, k, v } = WORKLOAD.generate({ B: 1, H: 1, n, d: D, seed: n });
    const flops = (4 * n * n * D) / (causal ? 2 : 1);
    // The first call on a backend compiles its kernels; a warm-up keeps that out of the table.
    if (rows.length === 0) {
      await timed((b) => exactAttention(q, k, v, { causal, backend: b }));
      await timed((b) => hyperAttention(q, k, v, { causal, backend: b }));
    }
    const exact = await timed((b) => exactAttention(q, k, v, { causal, backend: b }));
    const hyper = await timed((b) => hyperAttention(q, k, v, { causal, backend: b }));
    rows.push([
      String(n), causal ? 'yes' : 'no', seconds(exact.ms), seconds(hyper.ms), `${(exact.ms / hyper.ms).toFixed(1)}x`,
      relativeError(hyper.result.out.data, exact.result.out.data).toFixed(4), (flops / exact.ms / 1e6).toFixed(1),
    ]);
    console.log(`n = ${n}, ${causal ? 'causal' : 'non-causal'}: exact ${seconds(exact.ms)} s, hyper ${seconds(hyper.ms)} s`);
  }
}

const header = ['n', 'causal', 'exact s', 'hyper s', 'speedup', 'rel. error', 'exact GFLOP/s'];
const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
const line = (cells: string[]) => cells.map((s, c) => s.padStart(widths[c])).join('  ');
console.log(`\n${line(header)}\n${rows.map(line).join('\n')}`);
console.log(`\nbackend: ${description}`);
console.log('rel. error = ||hyper - exact||_F / ||exact||_F of the output. Below minSeqLen (4096) hyper is exact by design.');
