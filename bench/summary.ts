// The headline figures, derived from a suite's cases: printed by the suites when they
// finish and rendered by the report, so both say the same thing. Pure functions.
import type { CaseResult } from './harness.ts';

export const ORT_NODE_MHA = 'onnxruntime-node MultiHeadAttention';
export const ORT_NODE_MHA_1T = 'onnxruntime-node MultiHeadAttention, 1 thread';
export const ORT_WEB_MHA = 'onnxruntime-web MultiHeadAttention';
export const ORT_WEB_DECOMPOSED = 'onnxruntime-web MatMul-Softmax-MatMul';
export const OURS_EXACT = 'exact (ours, wasm, 1 thread)';

/** The sizes at which the headline hyper-vs-peer ratio is reported (issue targets). */
export const HEADLINE_SIZES = [16384, 65536];

const ok = (c: CaseResult) => c.status === 'ok' && c.time !== undefined;

/** e2e: onnxruntime-node's exact time over hyper's (cpu), non-causal, d = 64. */
export function hyperVsOrtNode(cases: readonly CaseResult[], n: number): number | null {
  const at = (method: string) =>
    cases.find((c) => ok(c) && c.method === method && c.backend !== 'webgpu' && c.params.n === n && c.params.d === 64 && c.params.causal === false);
  const hyper = at('hyper');
  const ort = at(ORT_NODE_MHA);
  return hyper && ort ? ort.time!.medianMs / hyper.time!.medianMs : null;
}

export interface ThroughputRatio {
  n: number;
  d: number;
  /** our exact GFLOP/s over the peer's */
  ratio: number;
  peer: string;
}

/** peers: our exact GFLOP/s over each peer method's, at every (n, d) where both ran. */
export function exactThroughputRatios(cases: readonly CaseResult[]): ThroughputRatio[] {
  const ratios: ThroughputRatio[] = [];
  for (const ours of cases.filter((c) => ok(c) && c.method === OURS_EXACT)) {
    for (const peer of cases.filter((c) => ok(c) && c.backend === 'peer' && c.params.n === ours.params.n && c.params.d === ours.params.d)) {
      ratios.push({ n: ours.params.n as number, d: ours.params.d as number, ratio: ours.metrics!.gflops / peer.metrics!.gflops, peer: peer.method });
    }
  }
  return ratios;
}

/**
 * The largest n (at d = 64) where our exact ran beside a peer of this package, and the
 * ratio against its fastest graph there (onnxruntime-web's fused kernel fails from 4096).
 */
export function ratioAtLargestN(ratios: ThroughputRatio[], peerPrefix: string, exclude: string[] = []): ThroughputRatio | null {
  const mine = ratios.filter((r) => r.d === 64 && r.peer.startsWith(peerPrefix) && !exclude.includes(r.peer));
  if (!mine.length) return null;
  const n = Math.max(...mine.map((r) => r.n));
  return mine.filter((r) => r.n === n).reduce((best, r) => (r.ratio < best.ratio ? r : best));
}

export interface ModeComparison {
  workload: string;
  /** geometric means over matching cases of fixed / reference */
  errorRatio: number;
  relToVRatio: number;
  lseRatio: number;
  timeRatio: number;
  cases: number;
}

const MATCH = ['workload', 'n', 'causal', 'blockSize', 'sampleSize'];

/** accuracy: fixed vs reference, per workload, over every (n, causal, setting) both ran. */
export function compareModes(cases: readonly CaseResult[]): ModeComparison[] {
  const byWorkload = new Map<string, number[][]>();
  for (const f of cases) {
    if (!ok(f) || f.params.mode !== 'fixed') continue;
    const r = cases.find((c) => ok(c) && c.params.mode === 'reference' && MATCH.every((k) => c.params[k] === f.params[k]));
    if (!r) continue;
    const logs = [
      Math.log(f.metrics!.relFrobenius / r.metrics!.relFrobenius),
      Math.log(f.metrics!.relToV / r.metrics!.relToV),
      Math.log(f.metrics!.maxLseError / r.metrics!.maxLseError),
      Math.log(f.time!.medianMs / r.time!.medianMs),
    ];
    const w = String(f.params.workload);
    byWorkload.set(w, [...(byWorkload.get(w) ?? []), logs]);
  }
  return [...byWorkload].map(([workload, rows]) => {
    const geo = (i: number) => Math.exp(rows.reduce((s, r) => s + r[i], 0) / rows.length);
    return { workload, errorRatio: geo(0), relToVRatio: geo(1), lseRatio: geo(2), timeRatio: geo(3), cases: rows.length };
  });
}
