// WebAssembly threads (#11), side by side in one process: exact attention at n = 16k and
// HyperAttention (accurate mode) at n = 64k, non-causal, d = 64, on the default thread
// count against `threads: 1`; HyperAttention on the default threads against
// onnxruntime-node's exact MultiHeadAttention (its default threads) on the same tensors;
// and the single-core kernel's GFLOP/s on each WebAssembly build this engine runs
// (relaxed SIMD needs `node --experimental-wasm-relaxed-simd` on Node 20).
// Run alone: `node --experimental-wasm-relaxed-simd --import tsx bench/threads.bench.ts [--quick]`.
import { suite } from 'uvu';
import { createCpuBackend } from '../src/cpu/backend.ts';
import { supportedFlavours } from '../src/cpu/wasm.ts';
import { runExact } from '../src/hyper.ts';
import { exactAttention, hyperAttention } from '../src/index.ts';
import { resolveExactOptions } from '../src/options.ts';
import { attentionShape } from '../src/tensor.ts';
import { threadsFor } from '../src/threads/config.ts';
import { Recorder, QUICK, attentionFlops, describeMachine, gflops, measure, memoryShortfall, type CaseResult } from './harness.ts';
import { loadPeer, peerWorkingBytes, timePeer, type LoadedPeer } from './peers.ts';
import { ORT_NODE_MHA } from './summary.ts';
import { WORKLOADS } from './workloads.ts';

const D = 64;
const EXACT_N = QUICK ? 4096 : 16384;
const HYPER_N = QUICK ? 16384 : 65536;
const PEER_SIZES = QUICK ? [4096, 16384] : [16384, 65536];
const CORE_SIZES = QUICK ? [2048] : [4096];

interface State {
  recorder: Recorder;
  peer: LoadedPeer | undefined;
  threads: number;
  /** method -> median ms, for the ratios printed at the end */
  medians: Map<string, number>;
}

const bench = suite<State>('threads');

bench.before(async (state) => {
  const peer = await loadPeer('onnxruntime-node');
  state.peer = 'missing' in peer ? undefined : peer;
  state.threads = await threadsFor(undefined);
  state.medians = new Map();
  const cases = 4 + PEER_SIZES.length * 2 + CORE_SIZES.length * supportedFlavours().length * 2;
  state.recorder = new Recorder('threads', cases, await describeMachine({ 'onnxruntime-node': state.peer?.version ?? null }));
  if (!state.peer) state.recorder.note((peer as { missing: string }).missing);
  state.recorder.note(`default threads here: ${state.threads}; flavours this engine runs: ${supportedFlavours().join(', ')}`);
});

const key = (method: string, n: number, threads: number | string) => `${method} n=${n} t=${threads}`;

async function timed(state: State, c: Omit<CaseResult, 'status'>, label: string, call: () => Promise<unknown>, flops?: number) {
  await state.recorder.run(c, async () => {
    const time = await measure(call);
    state.medians.set(label, time.medianMs);
    if (flops === undefined) return { time };
    const g = gflops(flops, time.medianMs);
    return { time, metrics: { gflops: g }, summary: `${g.toFixed(1)} GFLOP/s` };
  });
}

bench('default threads against one thread', async (state) => {
  const exact = WORKLOADS.gaussian.generate({ B: 1, H: 1, n: EXACT_N, d: D, seed: 1 });
  const hyper = WORKLOADS.llm.generate({ B: 1, H: 1, n: HYPER_N, d: D, seed: 2 });
  const flops = attentionFlops(EXACT_N, EXACT_N, D, D, false);
  // Alternating the thread counts keeps a drift in machine load from favouring either.
  for (const threads of [1, state.threads]) {
    const params = { n: EXACT_N, d: D, causal: false, threads };
    await timed(state, { method: 'exact', backend: 'cpu', params }, key('exact', EXACT_N, threads),
      () => exactAttention(exact.q, exact.k, exact.v, { backend: 'cpu', threads }), flops);
  }
  for (const threads of [1, state.threads]) {
    const params = { n: HYPER_N, d: D, causal: false, threads };
    await timed(state, { method: 'hyper', backend: 'cpu', params }, key('hyper', HYPER_N, threads),
      () => hyperAttention(hyper.q, hyper.k, hyper.v, { backend: 'cpu', threads }));
  }
});

bench('HyperAttention on the default threads against onnxruntime-node exact', async (state) => {
  for (const n of PEER_SIZES) {
    const x = WORKLOADS.llm.generate({ B: 1, H: 1, n, d: D, seed: 3 });
    const params = { n, d: D, causal: false };
    await timed(state, { method: 'hyper', backend: 'cpu', params: { ...params, threads: state.threads } }, key('hyper', n, 'default'),
      () => hyperAttention(x.q, x.k, x.v, { backend: 'cpu' }));
    const c = { method: ORT_NODE_MHA, backend: 'peer', params };
    if (!state.peer) {
      state.recorder.skip(c, 'onnxruntime-node is not installed');
      continue;
    }
    const short = memoryShortfall(4 * 4 * n * D + peerWorkingBytes('mha', n, 1), false);
    if (short) {
      state.recorder.skip(c, short);
      continue;
    }
    const peer = state.peer;
    await state.recorder.run(c, async () => {
      const { time } = await timePeer(peer, x, { graph: 'mha', causal: false, scale: 1 / Math.sqrt(D), threads: 0 }, null);
      state.medians.set(key(ORT_NODE_MHA, n, 'default'), time.medianMs);
      const g = gflops(attentionFlops(n, n, D, D, false), time.medianMs);
      return { time, metrics: { gflops: g }, summary: `${g.toFixed(1)} GFLOP/s` };
    }, true);
  }
});

bench('one core: exact attention GFLOP/s per WebAssembly build', async (state) => {
  for (const n of CORE_SIZES) {
    for (const d of [64, 128]) {
      const x = WORKLOADS.gaussian.generate({ B: 1, H: 1, n, d, seed: 4 });
      const o = resolveExactOptions({});
      const shape = attentionShape(x.q, x.k, x.v, false, undefined);
      for (const flavour of supportedFlavours()) {
        const backend = await createCpuBackend(flavour);
        await timed(state, { method: `exact (${flavour} build)`, backend: 'cpu', params: { n, d, threads: 1 } }, key(flavour, n, d),
          () => runExact(backend, shape, o, x.q, x.k, x.v), attentionFlops(n, n, d, d, false));
      }
    }
  }
});

bench.after((state) => {
  const m = state.medians;
  const ratio = (a: string, b: string) => {
    const x = m.get(a);
    const y = m.get(b);
    return x && y ? `${(y / x).toFixed(2)}x` : 'n/a';
  };
  const t = state.threads;
  console.log(`  exact n=${EXACT_N}: ${t} threads vs 1: ${ratio(key('exact', EXACT_N, t), key('exact', EXACT_N, 1))} faster`);
  console.log(`  hyper n=${HYPER_N}: ${t} threads vs 1: ${ratio(key('hyper', HYPER_N, t), key('hyper', HYPER_N, 1))} faster`);
  for (const n of PEER_SIZES) {
    console.log(`  hyper (default threads) vs onnxruntime-node exact, n=${n}: ${ratio(key('hyper', n, 'default'), key(ORT_NODE_MHA, n, 'default'))} faster`);
  }
  state.recorder.finish();
});

bench.run();
