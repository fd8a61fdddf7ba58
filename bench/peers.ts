// The peers we compare with, run in this process on the same tensors as ours:
// onnxruntime-node (native, CPU) and onnxruntime-web (its WebAssembly backend, in Node).
// Loading a missing peer yields a message, not an exception, so a suite can say which
// cases it skips and why. Session creation and layout changes happen outside the timed
// call: what is timed is session.run on ready tensors, as for our own calls.
import type * as OrtNode from 'onnxruntime-node';
import type { WorkloadTensors } from './workloads.ts';
import { maxAbsDiff } from './error.ts';
import { measure, type Timing } from './harness.ts';
import { decomposedAttentionModel, multiHeadAttentionModel } from './onnx.ts';

/** Both packages expose onnxruntime-common's API; the node package's types stand for both. */
type Ort = typeof OrtNode;

export type PeerName = 'onnxruntime-node' | 'onnxruntime-web';

export interface LoadedPeer {
  name: PeerName;
  ort: Ort;
  version: string;
}

/** The peer, or a message saying why it is missing and that its cases are skipped. */
export async function loadPeer(name: PeerName): Promise<LoadedPeer | { missing: string }> {
  try {
    const ort = (name === 'onnxruntime-node' ? await import('onnxruntime-node') : await import('onnxruntime-web')) as Ort;
    if (name === 'onnxruntime-web') {
      // One thread, as our WebAssembly kernels use; it is also its default on 2 cores.
      ort.env.wasm.numThreads = 1;
    }
    const versions = ort.env.versions;
    return { name, ort, version: versions.node ?? versions.web ?? versions.common };
  } catch (error) {
    return {
      missing: `${name} is missing or failed to load (${(error as Error).message.split('\n')[0]}); its cases are skipped (npm install --save-dev ${name})`,
    };
  }
}

/** 'mha': com.microsoft MultiHeadAttention; 'decomposed': MatMul-Softmax-MatMul. */
export type PeerGraph = 'mha' | 'decomposed';

export interface PeerSetup {
  graph: PeerGraph;
  causal: boolean;
  scale: number;
  /** onnxruntime-node intra-op threads; 0 = its default (all cores) */
  threads: number;
}

interface PeerCall {
  /** One timed inference; resolves to the raw output. */
  run(): Promise<Float32Array>;
  /** The output of `run` in our layout [B, H, n, dv]. */
  toHeads(raw: Float32Array): Float32Array;
  release(): Promise<void>;
}

/** [B, H, n, w] <-> [B, n, H * w]: MultiHeadAttention's query and output are token-major. */
function swapHeadsAndTokens(x: Float32Array, B: number, a: number, b: number, w: number): Float32Array {
  if (a === 1 || b === 1) return x;
  const out = new Float32Array(x.length);
  for (let bi = 0; bi < B; bi++) {
    for (let i = 0; i < a; i++) {
      for (let j = 0; j < b; j++) {
        const from = ((bi * a + i) * b + j) * w;
        out.set(x.subarray(from, from + w), ((bi * b + j) * a + i) * w);
      }
    }
  }
  return out;
}

/**
 * Bytes a peer needs beyond its inputs and output. The fused MultiHeadAttention kernels
 * materialise a head's n x n attention probabilities on the CPU (onnxruntime-node's peak
 * RSS, measured: 2.3 GB at n = 16384, 8.8 GB at 32768, 18 GB at 65536); the decomposed
 * graph holds up to three n x n tensors.
 */
export function peerWorkingBytes(graph: PeerGraph, n: number, heads: number): number {
  return (graph === 'mha' ? 1 : 3) * 4 * n * n * heads;
}

/** A ready session on these tensors. Throws what the peer throws (e.g. on unsupported n). */
async function preparePeer(peer: LoadedPeer, x: WorkloadTensors, setup: PeerSetup): Promise<PeerCall> {
  const [B, H, n, d] = x.q.shape;
  const dv = x.v.shape[3];
  if (setup.graph === 'decomposed' && setup.causal) throw new Error('the decomposed peer graph is non-causal only');
  if (x.k.shape[1] !== H) throw new Error('peers take as many key/value heads as query heads');
  const { ort } = peer;
  const bytes = setup.graph === 'mha' ? multiHeadAttentionModel(H, setup.scale, setup.causal) : decomposedAttentionModel(setup.scale);
  const session = await ort.InferenceSession.create(bytes, {
    executionProviders: [peer.name === 'onnxruntime-node' ? 'cpu' : 'wasm'],
    ...(setup.threads > 0 ? { intraOpNumThreads: setup.threads } : {}),
  });
  const tensor = (data: Float32Array, dims: number[]) => new ort.Tensor('float32', data, dims);
  const feeds =
    setup.graph === 'mha'
      ? {
          query: tensor(swapHeadsAndTokens(x.q.data, B, H, n, d), [B, n, H * d]),
          key: tensor(x.k.data, [B, H, n, d]),
          value: tensor(x.v.data, [B, H, n, dv]),
        }
      : { query: tensor(x.q.data, [B, H, n, d]), key: tensor(x.k.data, [B, H, n, d]), value: tensor(x.v.data, [B, H, n, dv]) };
  return {
    async run() {
      const result = await session.run(feeds);
      return result.out.data as Float32Array;
    },
    toHeads: (raw) => (setup.graph === 'mha' ? swapHeadsAndTokens(raw, B, n, H, dv) : raw),
    release: () => session.release(),
  };
}

/**
 * Times one peer inference on these tensors (after a warm-up, like ours) and, given our
 * output on the same inputs, says how far the peer's is from it.
 */
export async function timePeer(
  peer: LoadedPeer, x: WorkloadTensors, setup: PeerSetup, ours: Float32Array | null,
): Promise<{ time: Timing; maxAbsDiff: number | null }> {
  const call = await preparePeer(peer, x, setup);
  try {
    let out: Float32Array = new Float32Array(0);
    const time = await measure(async () => {
      out = await call.run();
    });
    return { time, maxAbsDiff: ours ? maxAbsDiff(call.toHeads(out), ours) : null };
  } finally {
    await call.release();
  }
}
