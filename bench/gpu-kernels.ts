// Throughput of each WebGPU op (GFLOP/s; rows/s for the sort, which has no flops) on
// whatever adapter the runtime finds, side by side with the WebAssembly backend on the
// same inputs in the same process, for each kernel variant the device allows (subgroup
// shuffles or workgroup-memory tiles; f32 or f16 storage). Each figure is the median of REPEATS timed runs after
// WARMUP untimed ones; a GPU run is timed from recording to the completion of a one-element
// readback, so it includes submission and synchronisation. Runs in Node
// (`VK_ICD_FILENAMES=/usr/lib/chromium/vk_swiftshader_icd.json npx tsx bench/gpu-kernels.ts`
// without a GPU) and, bundled, in Deno or a browser. Prints a markdown table and one JSON
// line. The device check (gpu-device.ts) runs the same cases through kernelCases().
import { createCpuBackend } from '../src/cpu/backend.ts';
import { WebGPUBackend, createWebGPUBackend } from '../src/gpu/index.ts';
import type { Backend, BackendBuffer, Destination } from '../src/ops.ts';
import { Xoshiro128 } from '../src/random.ts';

const WARMUP = 2;
const REPEATS = 5;

export interface Case {
  op: string;
  shape: string;
  /** flops of one run (0 for the sort) */
  flops: number;
  /** rows processed by one run, for the sort's rows/s */
  rows: number;
  /** records one run on a backend whose inputs `setup` created */
  setup: (be: Backend) => () => void;
}

const rng = new Xoshiro128(1);
function gaussian(n: number): Float32Array {
  return Float32Array.from({ length: n }, () => rng.nextGaussian());
}
function permutation(n: number): Int32Array {
  const p = Int32Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.nextBelow(i + 1);
    [p[i], p[j]] = [p[j], p[i]];
  }
  return p;
}
function filled(be: Backend, data: Float32Array | Int32Array): BackendBuffer {
  const buf = be.createBuffer(data instanceof Int32Array ? 'i32' : 'f32', data.length);
  be.upload(buf, data);
  return buf;
}
function destination(be: Backend, rows: number, dv: number): Destination {
  return {
    out: { buf: filled(be, gaussian(rows * dv)), row: 0 },
    lse: { buf: filled(be, gaussian(rows)), row: 0 },
    write: 'write',
  };
}

/** The cases at head dim d; `scale` shrinks every size (a dry run on a software adapter). */
export function kernelCases(d = 64, scale = 1): Case[] {
  const cases: Case[] = [];
  for (const [n, causal] of [[1024 * scale, false], [2048 * scale, true]] as const) {
    const q = gaussian(n * d);
    const k = gaussian(n * d);
    const v = gaussian(n * d);
    cases.push({
      op: 'exact', shape: `n ${n}, d ${d}${causal ? ', causal' : ''}`,
      flops: 4 * n * n * d * (causal ? 0.5 : 1), rows: n,
      setup: (be) => {
        const t = {
          q: { buf: filled(be, q), row: 0 }, k: { buf: filled(be, k), row: 0 }, v: { buf: filled(be, v), row: 0 },
          nq: n, nk: n, d, dv: d, scale: 0.125, causal, causalOffset: 0, dst: destination(be, n, d),
        };
        return () => be.exact(t);
      },
    });
  }
  {
    const [n, b, m] = [16384 * scale, 256, 256];
    const q = gaussian(n * d);
    const k = gaussian(n * d);
    const v = gaussian(n * d);
    const qPerm = permutation(n);
    const kPerm = permutation(n);
    const samples = Int32Array.from({ length: m }, () => rng.nextBelow(n));
    const sorted = (be: Backend) => ({
      q: { buf: filled(be, q), row: 0 }, k: { buf: filled(be, k), row: 0 }, v: { buf: filled(be, v), row: 0 },
      qPerm: { buf: filled(be, qPerm), row: 0 }, kPerm: { buf: filled(be, kPerm), row: 0 },
      nqSorted: n, nqReal: n, nk: n, d, dv: d, scale: 0.125, qBlock: b, kBlock: b, nBlocks: n / b, dst: destination(be, n, d),
    });
    cases.push({
      op: 'block', shape: `n ${n}, d ${d}, b ${b}`, flops: 4 * n * b * d, rows: n,
      setup: (be) => {
        const t = { ...sorted(be), phantomKeys: false };
        return () => be.block(t);
      },
    });
    cases.push({
      op: 'sampled', shape: `n ${n}, d ${d}, m ${m}`, flops: 4 * n * m * d, rows: n,
      setup: (be) => {
        const t = { ...sorted(be), samples, lseOffset: Math.log(n / m) };
        return () => be.sampled(t);
      },
    });
    const r = 7;
    const proj = gaussian(d * r);
    cases.push({
      op: 'hash', shape: `n ${n}, d ${d}, r ${r}`, flops: 2 * n * d * r, rows: n,
      setup: (be) => {
        const t = { x: { buf: filled(be, q), row: 0 }, rows: n, d, proj: filled(be, proj), r, mode: 'fixed' as const, keys: { buf: be.createBuffer('i32', n), row: 0 } };
        return () => be.hash(t);
      },
    });
    const keys = Int32Array.from({ length: n }, () => rng.nextBelow(1 << r));
    cases.push({
      op: 'sort', shape: `n ${n}, ${1 << r} keys`, flops: 0, rows: n,
      setup: (be) => {
        const t = { keys: { buf: filled(be, keys), row: 0 }, count: n, pads: 0, numKeys: 1 << r, perm: { buf: be.createBuffer('i32', n), row: 0 } };
        return () => be.sort(t);
      },
    });
    cases.push({
      op: 'merge', shape: `n ${n}, dv ${d}`, flops: 3 * n * d, rows: n,
      setup: (be) => {
        const src = destination(be, n, d);
        const t = { src: { out: src.out, lse: src.lse }, dst: { ...destination(be, n, d), write: 'merge-fixed' as const }, rows: n, dv: d };
        return () => be.merge(t);
      },
    });
  }
  return cases;
}

/** Median seconds of one run of c on be, synchronised by a one-element readback. */
export async function measureCase(be: Backend, c: Case): Promise<number> {
  const run = c.setup(be);
  const sync = be.createBuffer('f32', 1);
  const one = new Float32Array(1);
  const times: number[] = [];
  for (let i = 0; i < WARMUP + REPEATS; i++) {
    const t0 = performance.now();
    run();
    await be.download(sync, 0, 1, one);
    if (i >= WARMUP) times.push((performance.now() - t0) / 1000);
  }
  be.releaseAll();
  times.sort((a, b) => a - b);
  return times[Math.floor(times.length / 2)];
}

export function rate(c: Case, seconds: number): string {
  return c.flops > 0 ? `${(c.flops / seconds / 1e9).toFixed(2)} GFLOP/s` : `${(c.rows / seconds / 1e6).toFixed(1)} Mrows/s`;
}

/** The backends to compare: wasm, then each WebGPU kernel variant the device allows. */
export function kernelBackends(gpu: WebGPUBackend, cpu: Backend & { flavour: string }): [string, Backend][] {
  const gpuLabel = (be: WebGPUBackend) => `webgpu ${be.subgroups ? 'subgroups' : 'workgroup tiles'}, ${be.storage}`;
  const backends: [string, Backend][] = [[`wasm ${cpu.flavour}`, cpu], [gpuLabel(gpu), gpu]];
  if (gpu.subgroups) {
    const tiles = new WebGPUBackend(gpu.device, { subgroups: false });
    backends.push([gpuLabel(tiles), tiles]);
  }
  if (gpu.device.features.has('shader-f16')) {
    const half = new WebGPUBackend(gpu.device, { storage: 'f16' });
    backends.push([gpuLabel(half), half]);
  }
  return backends;
}

// Run as a script (not when gpu-device.ts imports it).
const script = (globalThis as { process?: { argv: string[] } }).process?.argv[1] ?? 'gpu-kernels';
if (/gpu-kernels(\.[jt]s)?$/.test(script)) {
  const gpu = await createWebGPUBackend();
  const cpu = await createCpuBackend();
  const info = (gpu.device as Partial<GPUDevice>).adapterInfo;
  const adapter = info ? `${info.vendor} ${info.architecture} ${info.description}`.trim() : 'unknown adapter';
  const backends = kernelBackends(gpu, cpu);
  console.log(`WebGPU adapter: ${adapter}${info?.isFallbackAdapter ? ' (software fallback adapter)' : ''}\n`);
  console.log('| op | shape | backend | ms | rate | speed vs wasm |');
  console.log('| --- | --- | --- | --- | --- | --- |');
  const results = [];
  for (const c of kernelCases()) {
    let wasmSeconds = 0;
    for (const [label, be] of backends) {
      const seconds = await measureCase(be, c);
      if (be === cpu) wasmSeconds = seconds;
      console.log(`| ${c.op} | ${c.shape} | ${label} | ${(seconds * 1e3).toFixed(1)} | ${rate(c, seconds)} | ${(wasmSeconds / seconds).toFixed(3)} |`);
      results.push({ op: c.op, shape: c.shape, backend: label, flops: c.flops, rows: c.rows, seconds });
    }
  }
  console.log(`\n${JSON.stringify({ adapter, fallback: info?.isFallbackAdapter ?? null, results })}`);
  const proc = (globalThis as { process?: { exit(code?: number): never } }).process;
  proc?.exit(0);
}
