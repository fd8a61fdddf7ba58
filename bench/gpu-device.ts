// The device check, run by bench/gpu-device.sh on a machine with a GPU (bundled, under a
// carried Node): the adapter, which must be a hardware one (HYPERATTENTION_ALLOW_FALLBACK=1
// accepts a software one, for a dry run); WebGPU and hybrid against WebAssembly on the
// reference fixtures (test/fixtures) and on fresh inputs; then the kernel, end-to-end and scheduler
// benchmarks on webgpu and hybrid. Writes gpu-correctness.json, gpu-kernels.json,
// gpu-e2e.json and gpu-scheduler.json (bench/harness.ts's format; machine.adapter names
// the adapter) to HYPERATTENTION_BENCH_RESULTS. HYPERATTENTION_DEVICE_SIZES=small shrinks
// every size, for the dry run. Exits 1 when a check failed, 3 without a usable adapter.
import { createCpuBackend } from '../src/cpu/backend.ts';
import { createWebGPUBackend, type WebGPUBackend } from '../src/gpu/index.ts';
import { runExact, runHyper } from '../src/hyper.ts';
import type { AttentionResult } from '../src/result.ts';
import { HybridBackend } from '../src/hybrid.ts';
import { configureScheduler, hyperAttention } from '../src/index.ts';
import type { Backend } from '../src/ops.ts';
import { resolveExactOptions, resolveHyperOptions, type Mode } from '../src/options.ts';
import { Xoshiro128 } from '../src/random.ts';
import { attentionShape, type Tensor } from '../src/tensor.ts';
import { fixtureNames, loadFixture } from '../test/fixtures.ts';
import { hashKeys, row } from '../test/gpu/harness.ts';
import { kernelBackends, kernelCases, measureCase } from './gpu-kernels.ts';
import { Recorder, attentionFlops, describeMachine, gflops, measure, type MeasureOptions } from './harness.ts';

const SMALL = process.env.HYPERATTENTION_DEVICE_SIZES === 'small';
const TOL = 1e-4;
/** Timing of the end-to-end and scheduler cases: a few samples, inside the call's minutes. */
const TIMING: MeasureOptions = SMALL ? { budgetMs: 300, maxRuns: 3, minSampleMs: 5 } : { budgetMs: 1500, maxRuns: 5, minSampleMs: 20 };

const machine = await describeMachine();
const adapter = machine.adapter;
console.log(`adapter: ${adapter ? JSON.stringify(adapter) : machine.adapterNote}`);
if (!adapter || (adapter.isFallbackAdapter && process.env.HYPERATTENTION_ALLOW_FALLBACK !== '1')) {
  console.log(adapter ? 'a software (fallback) adapter: no GPU figures from it (HYPERATTENTION_ALLOW_FALLBACK=1 for a dry run)' : 'no adapter');
  process.exit(3);
}
// Calibrate afresh on this machine, and leave no profile behind.
configureScheduler({ persist: false });

const cpu = await createCpuBackend();
const gpu = await createWebGPUBackend();
const hybrid = new HybridBackend(await createCpuBackend(), gpu);
const rng = new Xoshiro128(20240611);
let failed = false;

function gaussian(n: number): Float32Array {
  return Float32Array.from({ length: n }, () => rng.nextGaussian());
}

/** One call on a backend object (the hybrid is no public backend choice), hyper at its defaults. */
function callOn(be: Backend, method: 'exact' | 'hyper', t: [Tensor, Tensor, Tensor], causal: boolean): Promise<AttentionResult> {
  const shape = attentionShape(...t, causal);
  return method === 'exact'
    ? runExact(be, shape, resolveExactOptions({ causal }), ...t)
    : runHyper(be, shape, resolveHyperOptions({ causal }), ...t);
}

function tensors(B: number, H: number, Hkv: number, n: number, d: number): [Tensor, Tensor, Tensor] {
  return [
    { data: gaussian(B * H * n * d), shape: [B, H, n, d] },
    { data: gaussian(B * Hkv * n * d), shape: [B, Hkv, n, d] },
    { data: gaussian(B * Hkv * n * d), shape: [B, Hkv, n, d] },
  ];
}

/** Rows of got farther than TOL from want (out or lse), and the largest differences. */
function compare(got: AttentionResult, want: { out: Float32Array; lse: Float32Array }, dv: number, skip = new Set<number>()) {
  let rowsOff = 0;
  let maxOut = 0;
  let maxLse = 0;
  for (let i = 0; i < want.lse.length; i++) {
    let rowOut = 0;
    for (let c = 0; c < dv; c++) rowOut = Math.max(rowOut, Math.abs(got.out.data[i * dv + c] - want.out[i * dv + c]));
    const lse = Math.abs(got.lse.data[i] - want.lse[i]);
    if (skip.has(i)) continue;
    // NaN compares false: a NaN row counts as off.
    if (!(rowOut <= TOL && (lse <= TOL || got.lse.data[i] === want.lse[i]))) rowsOff++;
    maxOut = Math.max(maxOut, rowOut);
    maxLse = Number.isFinite(lse) ? Math.max(maxLse, lse) : maxLse;
  }
  return { rowsOff, maxOut, maxLse, rows: want.lse.length };
}

const counted = (be: Backend): WebGPUBackend => (be instanceof HybridBackend ? be.gpu : (be as WebGPUBackend));
const backends: [string, Backend][] = [['webgpu', gpu], ['hybrid', hybrid]];

// --- correctness: fixtures (reference mode, the authors' draws) and fresh inputs ---
{
  const names = fixtureNames();
  const shapes = SMALL
    ? [{ B: 1, H: 2, Hkv: 1, n: 600, d: 32 }]
    : [{ B: 2, H: 4, Hkv: 2, n: 1500, d: 64 }, { B: 1, H: 8, Hkv: 8, n: 4096, d: 128 }];
  const methods: ('exact' | Mode)[] = ['exact', 'reference', 'fixed', 'accurate'];
  const recorder = new Recorder('gpu-correctness', names.length * backends.length + shapes.length * 2 * methods.length * backends.length, machine);
  if (names.length === 0) recorder.note('no fixtures found (HYPERATTENTION_FIXTURES): only fresh inputs checked');
  for (const name of names) {
    const f = await loadFixture(name);
    const [B, H, N, D] = f.shape;
    // Rows with a projection within rounding of zero may hash otherwise (test/gpu/fixtures.suite.ts).
    const ambiguous = new Set<number>();
    for (let i = 0; i < B * H * N; i++) {
      if ([f.q, f.k].some((x) => hashKeys(row(x, i, D), f.proj, D, f.lshNumProjs, 'reference').length > 1)) ambiguous.add(i);
    }
    const o = resolveHyperOptions({
      causal: f.causal, blockSize: f.blockSize, sampleSize: f.sampleSize, lshNumProjs: f.lshNumProjs, minSeqLen: f.minSeqLen,
      mode: 'reference', projections: f.proj, ...(f.scale === null ? {} : { scale: f.scale }),
      sampler: ({ index, batch }) => {
        const draw = f.draws[index];
        return f.samples.slice(draw.offset, draw.offset + batch * draw.shape[1] * draw.shape[2]);
      },
    });
    const [q, k, v] = [f.q, f.k, f.v].map((data) => ({ data, shape: f.shape }));
    for (const [label, be] of backends) {
      await recorder.run({ method: `fixture ${name}`, backend: label, params: { B, H, N, D, causal: f.causal } }, async () => {
        const got = await runHyper(be, attentionShape(q, k, v, f.causal), o, q, k, v);
        const c = compare(got, { out: f.out, lse: f.lse }, D, ambiguous);
        if (c.rowsOff > 0) throw new Error(`${c.rowsOff} rows off the authors' output by more than ${TOL} (off a hash boundary)`);
        return { metrics: c, summary: `max |out err| ${c.maxOut.toExponential(2)}` };
      });
    }
  }
  for (const { B, H, Hkv, n, d } of shapes) {
    for (const causal of [false, true]) {
      const t = tensors(B, H, Hkv, n, d);
      const shape = attentionShape(...t, causal);
      for (const method of methods) {
        const call = (be: Backend) => method === 'exact'
          ? runExact(be, shape, resolveExactOptions({ causal }), ...t)
          : runHyper(be, shape, resolveHyperOptions({ causal, mode: method, seed: 7, minSeqLen: 256 }), ...t);
        const want = await call(cpu);
        for (const [label, be] of backends) {
          await recorder.run({ method, backend: label, params: { B, H, Hkv, n, d, causal } }, async () => {
            const before = { ...counted(be).counts };
            const got = await call(be);
            const c = compare(got, { out: want.out.data, lse: want.lse.data }, d);
            const metrics = {
              ...c, submits: counted(be).counts.submits - before.submits, readbacks: counted(be).counts.readbacks - before.readbacks,
            };
            // A row whose projection sits on a sign boundary may hash otherwise on the GPU:
            // hyper modes on webgpu allow a few such rows, exact attention none.
            const allowed = method === 'exact' || label === 'hybrid' ? 0 : Math.ceil(c.rows / 100);
            if (c.rowsOff > allowed) throw new Error(`${c.rowsOff} of ${c.rows} rows off the CPU's by more than ${TOL}`);
            return { metrics, summary: `${c.rowsOff} rows off, ${metrics.submits} submits, ${metrics.readbacks} readbacks` };
          });
        }
      }
    }
  }
  recorder.finish();
  failed ||= recorder.cases.some((c) => c.status === 'failed');
}

// --- kernels: each op alone, per kernel variant, beside wasm ---
{
  const scale = SMALL ? 1 / 16 : 1;
  const cases = [64, 128].flatMap((d) => kernelCases(d, scale));
  const variants = kernelBackends(gpu, cpu);
  const recorder = new Recorder('gpu-kernels', cases.length * variants.length, machine);
  for (const c of cases) {
    let wasmSeconds = 0;
    for (const [label, be] of variants) {
      await recorder.run({ method: c.op, backend: label, params: { shape: c.shape } }, async () => {
        const seconds = await measureCase(be, c);
        if (be === cpu) wasmSeconds = seconds;
        const metrics = {
          seconds, ...(c.flops > 0 ? { gflops: c.flops / seconds / 1e9 } : { rowsPerS: c.rows / seconds }), speedVsWasm: wasmSeconds / seconds,
        };
        return { metrics, summary: `${(seconds * 1e3).toFixed(2)} ms, ${metrics.speedVsWasm.toFixed(2)}x wasm` };
      });
    }
  }
  recorder.finish();
}

// --- end to end: exactAttention and hyperAttention through the public API ---
{
  const sizes = SMALL ? [256, 1024] : [4096, 16384, 65536];
  const heads = SMALL ? 2 : 8;
  const cpuMaxN = SMALL ? 1024 : 4096;
  const groups = [64, 128].flatMap((d) => [false, true].map((causal) => ({ d, causal })));
  const recorder = new Recorder('gpu-e2e', sizes.length * groups.length * 2 * 3, machine);
  recorder.note(`B 1, H ${heads}; WebAssembly (one thread) only to n = ${cpuMaxN}; hyper in the default (accurate) mode`);
  for (const { d, causal } of groups) {
    for (const n of sizes) {
      const t = tensors(1, heads, heads, n, d);
      for (const method of ['exact', 'hyper'] as const) {
        const flops = heads * attentionFlops(n, n, d, d, causal);
        for (const [backend, be] of [['cpu', cpu], ...backends] as [string, Backend][]) {
          const c = { method, backend, params: { n, d, H: heads, causal } };
          if (backend === 'cpu' && n > cpuMaxN) {
            recorder.skip(c, `WebAssembly runs to n = ${cpuMaxN} here`);
            continue;
          }
          await recorder.run(c, async () => {
            const time = await measure(() => callOn(be, method, t, causal), TIMING);
            const rate = gflops(flops, time.medianMs);
            return { time, metrics: { exactEquivalentGflops: rate }, summary: `${rate.toFixed(1)} GFLOP/s exact-equivalent` };
          });
        }
      }
    }
  }
  recorder.finish();
}

// --- scheduler: what backend 'auto' picks, against each backend forced ---
{
  const sizes = SMALL ? [256, 1024] : [2048, 16384, 65536];
  const recorder = new Recorder('gpu-scheduler', sizes.length * 2 * 4, machine);
  for (const causal of [false, true]) {
    for (const n of sizes) {
      const t = tensors(1, 4, 4, n, 64);
      const times: Record<string, number> = {};
      for (const [backend, be] of [...backends, ['cpu', cpu], ['auto', undefined]] as [string, Backend | undefined][]) {
        const c = { method: 'hyper', backend, params: { n, d: 64, H: 4, causal } };
        if (backend === 'cpu' && n > 16384) {
          recorder.skip(c, 'WebAssembly runs to n = 16384 here');
          continue;
        }
        await recorder.run(c, async () => {
          // 'auto' takes no device: the scheduler acquires the shared one (the same adapter).
          const auto = () => hyperAttention(...t, { causal, backend: 'auto' });
          const time = await measure(be ? () => callOn(be, 'hyper', t, causal) : auto, TIMING);
          times[backend] = time.medianMs;
          if (be) return { time };
          const { profile } = await hyperAttention(...t, { causal, backend: 'auto', profile: true });
          const best = Math.min(...Object.entries(times).filter(([b]) => b !== 'auto').map(([, ms]) => ms));
          return {
            time, metrics: { autoOverBest: time.medianMs / best },
            summary: `picked ${JSON.stringify(profile?.plan.backend)} (${profile?.plan.algorithm}), ${(time.medianMs / best).toFixed(2)}x the best forced`,
          };
        });
      }
    }
  }
  recorder.finish();
}

console.log(failed ? 'device check: FAILED (see gpu-correctness.json)' : 'device check: correctness passed');
process.exit(failed ? 1 : 0);
