// End to end: exact vs HyperAttention through the public API, by sequence length, causal
// and not, d = 64 and 128, per backend, beside onnxruntime-node's MultiHeadAttention on the
// same tensors in the same process (for the headline ratio: hyper on the CPU vs the
// fastest exact peer). One head, one batch entry: the cost per head is what scales with n.
// HyperAttention runs with its defaults (checks and escalations included) and with
// `tolerance: Infinity` (the plan alone, no checks: its fastest); inputs are gaussian, and
// at the headline size also the `llm` workload (a model's head, bench/workloads.ts).
// Run alone: `tsx bench/e2e.bench.ts [--quick]`.
import { suite } from 'uvu';
import { exactAttention, hyperAttention } from '../src/index.ts';
import { resolveHyperOptions } from '../src/options.ts';
import {
  Recorder, QUICK, attentionFlops, describeMachine, gflops, measure, memoryShortfall, type AdapterInfo, type CaseResult, type Params,
} from './harness.ts';
import { loadPeer, peerWorkingBytes, timePeer, type LoadedPeer } from './peers.ts';
import { HEADLINE_SIZES, HYPER_UNCHECKED, ORT_NODE_MHA, hyperVsOrtNode } from './summary.ts';
import { WORKLOADS, type WorkloadTensors } from './workloads.ts';

const SIZES = QUICK ? [1024, 4096, 16384, 65536] : [1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072];
const DIMS = QUICK ? [64] : [64, 128];
const GROUPS = DIMS.flatMap((d) => [false, true].map((causal) => ({ d, causal })));
/** The headline case on the `llm` workload: non-causal, d = 64, n = 16k. */
const LLM_N = 16384;

/**
 * Exact attention is quadratic: about a minute per run at n = 65536, d = 64 on one core.
 * It runs to 32768 everywhere, and to 65536 only for the headline case (non-causal,
 * d = 64); the quick run stops at 4096 except for the headline case at 16384.
 */
function exactRuns(n: number, d: number, causal: boolean): boolean {
  const headline = !causal && d === 64;
  if (QUICK) return n <= 4096 || (headline && n <= 16384);
  return n <= 32768 || (headline && n <= 65536);
}
const EXACT_CAP_NOTE = QUICK
  ? 'exact attention (ours and onnxruntime-node) runs to n = 4096, and to 16384 for non-causal d = 64 only'
  : 'exact attention (ours and onnxruntime-node) runs to n = 32768, and to 65536 for non-causal d = 64 only (about a minute per run there)';

/**
 * Software adapters run compute shaders ~20x slower than wasm: enough to check the path,
 * not to time at length. 4096 is the smallest n where hyper approximates (non-causal).
 */
const SOFTWARE_ADAPTER_MAX_N = QUICK ? 1024 : 4096;

interface State {
  recorder: Recorder;
  ortNode: LoadedPeer | null;
  /** n limit for the webgpu backend; 0 when there is none */
  webgpuMaxN: number;
  /** the inputs of the current size and workload, shared by every method */
  inputs: { key: string; x: WorkloadTensors } | null;
  /** our exact output on the current inputs, to check that the peer computes the same */
  exactOut: Float32Array | null;
}

const bench = suite<State>('e2e');

type Workload = 'gaussian' | 'llm';

/** The workload's inputs for this size (made once for all its methods). */
function inputsFor(state: State, n: number, d: number, workload: Workload): WorkloadTensors {
  const key = `${workload} ${n}x${d}`;
  if (state.inputs?.key !== key) state.inputs = { key, x: WORKLOADS[workload].generate({ B: 1, H: 1, n, d, seed: n + d }) };
  return state.inputs.x;
}

/** Host and heap bytes of one call: inputs, outputs, the backend's copies and sort buffers. */
const callBytes = (n: number, d: number) => 3 * 4 * n * 4 * d;

type Method =
  | { method: 'hyper' | 'exact'; backend: 'cpu' | 'webgpu' }
  | { method: typeof HYPER_UNCHECKED; backend: 'cpu' }
  | { method: typeof ORT_NODE_MHA; backend: 'peer' };

/** What runs at this size: `webgpuMaxN` is 0 without a usable webgpu backend. */
function methodsFor(n: number, d: number, causal: boolean, webgpuMaxN: number, withPeer: boolean): Method[] {
  const backends: ('cpu' | 'webgpu')[] = n <= webgpuMaxN ? ['cpu', 'webgpu'] : ['cpu'];
  const list: Method[] = [];
  for (const backend of backends) {
    list.push({ method: 'hyper', backend });
    if (backend === 'cpu') list.push({ method: HYPER_UNCHECKED, backend });
    if (exactRuns(n, d, causal)) list.push({ method: 'exact', backend });
  }
  if (withPeer && exactRuns(n, d, causal)) list.push({ method: ORT_NODE_MHA, backend: 'peer' });
  return list;
}

async function runCase(state: State, m: Method, n: number, d: number, causal: boolean, workload: Workload = 'gaussian'): Promise<void> {
  const params: Params = { n, d, causal, workload };
  const unchecked = m.method === HYPER_UNCHECKED;
  // The defaults: the accurate mode's own, which depend on causal (options.ts resolves them).
  if (m.method === 'hyper' || unchecked) {
    const o = resolveHyperOptions({ causal, ...(unchecked ? { tolerance: Infinity } : {}) });
    Object.assign(params, { mode: o.mode, blockSize: o.blockSize, sampleSize: o.sampleSize, tolerance: o.tolerance });
  }
  const c: Omit<CaseResult, 'status'> = { method: m.method, backend: m.backend, params };
  const bytes = callBytes(n, d) + (m.backend === 'peer' ? peerWorkingBytes('mha', n, 1) : 0);
  const short = memoryShortfall(bytes, m.backend === 'cpu');
  if (short) return state.recorder.skip(c, short);
  const x = inputsFor(state, n, d, workload);
  const flops = attentionFlops(n, n, d, d, causal);
  const exactFigures = (ms: number) => ({ metrics: { gflops: gflops(flops, ms) }, summary: `${gflops(flops, ms).toFixed(1)} GFLOP/s` });
  if (m.backend === 'peer') {
    const peer = state.ortNode!;
    await state.recorder.run(c, async () => {
      const { time, maxAbsDiff } = await timePeer(peer, x, { graph: 'mha', causal, scale: 1 / Math.sqrt(d), threads: 0 }, state.exactOut);
      const figures = exactFigures(time.medianMs);
      if (maxAbsDiff === null) return { time, ...figures };
      return { time, metrics: { ...figures.metrics, maxAbsDiffVsExact: maxAbsDiff }, summary: `${figures.summary}, max |out - ours| ${maxAbsDiff.toExponential(1)}` };
    }, true);
    return;
  }
  await state.recorder.run(c, async () => {
    const backend = m.backend;
    if (m.method === 'hyper' || unchecked) {
      const time = await measure(() => hyperAttention(x.q, x.k, x.v, { causal, backend, ...(unchecked ? { tolerance: Infinity } : {}) }));
      // Its "GFLOP/s" is that of the exact computation it replaces: a speed-up in units.
      return { time, metrics: { exactEquivalentGflops: gflops(flops, time.medianMs) } };
    }
    const time = await measure(async () => {
      const { out } = await exactAttention(x.q, x.k, x.v, { causal, backend });
      if (backend === 'cpu') state.exactOut = out.data;
    });
    return { time, ...exactFigures(time.medianMs) };
  });
}

/** Up to which n the webgpu backend runs (0: not at all), and why when not everywhere. */
async function webgpuLimit(adapter: AdapterInfo | null, adapterNote: string | undefined): Promise<{ maxN: number; note?: string }> {
  if (!adapter) return { maxN: 0, note: `webgpu backend skipped: ${adapterNote}` };
  const tiny = WORKLOADS.gaussian.generate({ B: 1, H: 1, n: 64, d: 64, seed: 1 });
  try {
    await exactAttention(tiny.q, tiny.k, tiny.v, { backend: 'webgpu' });
  } catch (error) {
    return { maxN: 0, note: `webgpu backend skipped: ${(error as Error).message}` };
  }
  if (adapter.isFallbackAdapter) {
    return {
      maxN: SOFTWARE_ADAPTER_MAX_N,
      note: `webgpu runs on a software adapter here (${adapter.description || adapter.vendor}): its cases stop at n = ${SOFTWARE_ADAPTER_MAX_N}; they check the path, they do not time a GPU`,
    };
  }
  return { maxN: Infinity };
}

bench.before(async (state) => {
  const ortNode = await loadPeer('onnxruntime-node');
  const machine = await describeMachine({ 'onnxruntime-node': 'missing' in ortNode ? null : ortNode.version });
  const webgpu = await webgpuLimit(machine.adapter, machine.adapterNote);
  state.ortNode = 'missing' in ortNode ? null : ortNode;
  state.webgpuMaxN = webgpu.maxN;
  state.inputs = null;
  state.exactOut = null;
  const total = GROUPS.reduce(
    (sum, g) => sum + SIZES.reduce((s, n) => s + methodsFor(n, g.d, g.causal, webgpu.maxN, state.ortNode !== null).length, 0),
    0,
  ) + llmMethods(state.ortNode !== null).length;
  state.recorder = new Recorder('e2e', total, machine);
  if ('missing' in ortNode) state.recorder.note(ortNode.missing);
  if (webgpu.note) state.recorder.note(webgpu.note);
  state.recorder.note(EXACT_CAP_NOTE);
});

for (const { d, causal } of GROUPS) {
  bench(`${causal ? 'causal' : 'non-causal'} d=${d}`, async (state) => {
    for (const n of SIZES) {
      state.exactOut = null; // set by this size's exact case, read by its peer case
      for (const m of methodsFor(n, d, causal, state.webgpuMaxN, state.ortNode !== null)) await runCase(state, m, n, d, causal);
    }
    state.recorder.assertNoFailures();
  });
}

/** The headline case on the llm workload: HyperAttention's defaults and its plan alone, beside the peer. */
function llmMethods(withPeer: boolean): Method[] {
  const list: Method[] = [{ method: 'hyper', backend: 'cpu' }, { method: HYPER_UNCHECKED, backend: 'cpu' }];
  if (withPeer) list.push({ method: ORT_NODE_MHA, backend: 'peer' });
  return list;
}

bench(`llm workload, non-causal d=64, n=${LLM_N}`, async (state) => {
  state.exactOut = null;
  for (const m of llmMethods(state.ortNode !== null)) await runCase(state, m, LLM_N, 64, false, 'llm');
  state.recorder.assertNoFailures();
});

bench.after((state) => {
  for (const n of HEADLINE_SIZES) {
    for (const method of ['hyper', HYPER_UNCHECKED]) {
      const ratio = hyperVsOrtNode(state.recorder.cases, n, method);
      if (ratio !== null) console.log(`  ${method} (cpu) vs onnxruntime-node exact, non-causal d=64, n=${n}: ${ratio.toFixed(1)}x faster`);
    }
  }
  for (const method of ['hyper', HYPER_UNCHECKED]) {
    const ratio = hyperVsOrtNode(state.recorder.cases, LLM_N, method, 'llm');
    if (ratio !== null) console.log(`  ${method} (cpu) vs onnxruntime-node exact, llm workload, non-causal d=64, n=${LLM_N}: ${ratio.toFixed(1)}x faster`);
  }
  state.recorder.finish();
});

bench.run();
