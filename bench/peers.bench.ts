// Exact-attention throughput against the peers, on the same tensors in the same process:
// our WebAssembly kernel (one thread) vs onnxruntime-node's MultiHeadAttention (its default
// threads, and one thread) and onnxruntime-web's wasm backend (one thread) with its fused
// MultiHeadAttention and with a MatMul-Softmax-MatMul graph. Non-causal, one head; every
// peer output is checked against ours (max |difference|). A peer method that fails at some
// n is recorded with its error and not tried at larger n.
// Run alone: `tsx bench/peers.bench.ts [--quick]`.
import { suite } from 'uvu';
import { exactAttention } from '../src/index.ts';
import { Recorder, QUICK, attentionFlops, describeMachine, gflops, measure, memoryShortfall, type CaseResult } from './harness.ts';
import { loadPeer, peerWorkingBytes, timePeer, type LoadedPeer, type PeerGraph, type PeerName } from './peers.ts';
import { ORT_NODE_MHA, ORT_NODE_MHA_1T, ORT_WEB_DECOMPOSED, ORT_WEB_MHA, OURS_EXACT, exactThroughputRatios } from './summary.ts';
import { WORKLOADS } from './workloads.ts';

const SIZES = QUICK ? [1024, 2048, 4096, 8192] : [1024, 2048, 4096, 8192, 16384];
const DIMS = QUICK ? [64] : [64, 128];

interface PeerMethod {
  method: string;
  peer: PeerName;
  graph: PeerGraph;
  threads: number;
  /** whether its memory is a wasm32 heap (4 GiB at most) */
  wasm32: boolean;
}

const PEER_METHODS: PeerMethod[] = [
  { method: ORT_NODE_MHA, peer: 'onnxruntime-node', graph: 'mha', threads: 0, wasm32: false },
  { method: ORT_NODE_MHA_1T, peer: 'onnxruntime-node', graph: 'mha', threads: 1, wasm32: false },
  { method: ORT_WEB_MHA, peer: 'onnxruntime-web', graph: 'mha', threads: 0, wasm32: true },
  { method: ORT_WEB_DECOMPOSED, peer: 'onnxruntime-web', graph: 'decomposed', threads: 0, wasm32: true },
];

interface State {
  recorder: Recorder;
  peers: Partial<Record<PeerName, LoadedPeer>>;
  /** method -> the failure that stops it being tried at larger n */
  stopped: Map<string, string>;
}

const bench = suite<State>('peers');

bench.before(async (state) => {
  const loaded = await Promise.all((['onnxruntime-node', 'onnxruntime-web'] as const).map(loadPeer));
  state.peers = {};
  const versions: Record<string, string | null> = {};
  const missing: string[] = [];
  for (const [i, name] of (['onnxruntime-node', 'onnxruntime-web'] as const).entries()) {
    const p = loaded[i];
    if ('missing' in p) {
      missing.push(p.missing);
      versions[name] = null;
    } else {
      state.peers[name] = p;
      versions[name] = p.version;
    }
  }
  const methods = 1 + PEER_METHODS.filter((m) => state.peers[m.peer]).length;
  state.recorder = new Recorder('peers', SIZES.length * DIMS.length * methods, await describeMachine(versions));
  for (const m of missing) state.recorder.note(m);
  state.recorder.note('threads: ours and onnxruntime-web use one; onnxruntime-node uses its default (all cores) and, as a second method, one');
  state.stopped = new Map();
});

for (const d of DIMS) {
  bench(`exact attention d=${d}`, async (state) => {
    const { recorder } = state;
    for (const n of SIZES) {
      const x = WORKLOADS.gaussian.generate({ B: 1, H: 1, n, d, seed: n + d });
      const flops = attentionFlops(n, n, d, d, false);
      const params = { n, d, causal: false };
      const figures = (ms: number) => ({ metrics: { gflops: gflops(flops, ms) }, summary: `${gflops(flops, ms).toFixed(1)} GFLOP/s` });

      let ours: Float32Array | null = null;
      await recorder.run({ method: OURS_EXACT, backend: 'cpu', params }, async () => {
        const time = await measure(async () => {
          ours = (await exactAttention(x.q, x.k, x.v, { backend: 'cpu', threads: 1 })).out.data;
        });
        return { time, ...figures(time.medianMs) };
      });

      for (const m of PEER_METHODS) {
        const peer = state.peers[m.peer];
        if (!peer) continue;
        const c: Omit<CaseResult, 'status'> = { method: m.method, backend: 'peer', params };
        const stop = state.stopped.get(`${m.method} d=${d}`);
        if (stop) {
          recorder.skip(c, stop);
          continue;
        }
        const short = memoryShortfall(4 * 4 * n * d + peerWorkingBytes(m.graph, n, 1), m.wasm32);
        if (short) {
          recorder.skip(c, short);
          continue;
        }
        const outcome = await recorder.run(c, async () => {
          const { time, maxAbsDiff } = await timePeer(peer, x, { graph: m.graph, causal: false, scale: 1 / Math.sqrt(d), threads: m.threads }, ours);
          const f = figures(time.medianMs);
          if (maxAbsDiff === null) return { time, ...f };
          return { time, metrics: { ...f.metrics, maxAbsDiffVsOurs: maxAbsDiff }, summary: `${f.summary}, max |out - ours| ${maxAbsDiff.toExponential(1)}` };
        }, true);
        if (!outcome) state.stopped.set(`${m.method} d=${d}`, `not tried: it failed at n = ${n}`);
      }
    }
    recorder.assertNoFailures();
  });
}

bench.after((state) => {
  const ratios = exactThroughputRatios(state.recorder.cases);
  for (const d of DIMS) {
    for (const n of SIZES) {
      const here = ratios.filter((r) => r.n === n && r.d === d).map((r) => `${r.ratio.toFixed(2)}x ${r.peer}`);
      if (here.length) console.log(`  ours / peer GFLOP/s, n=${n} d=${d}: ${here.join('; ')}`);
    }
  }
  state.recorder.finish();
});

bench.run();
