// Attention workloads for the benchmarks (and for tests that want realistic inputs): pure,
// seeded, deterministic generators of q, k, v [B, H, n, d] whose attention has the shapes
// that matter for HyperAttention's accuracy. Each is built from logit components that live
// in disjoint slices of the head dimension, so the logit scale * q.k of a query and a key is
// exactly the sum of the components' logits, each with a strength given in nats:
//
//   noise     iid Gaussian: logits ~ N(0, strength^2); the mass is spread over every key.
//   clusters  a query and a key of the same cluster (C random unit centres, members placed
//             at random positions) have logit about `strength`, other pairs about
//             strength * N(0, 1 / width): retrieval-like, position-free; what LSH must find.
//   rotary    one shared content vector plus a little noise, rotated by its position as RoPE
//             does (pair p turns by pos * 10000^(-2p / width)): the logit is `strength` on
//             the diagonal and decays with |i - j|, with a long tail from the slow pairs.
//   sink      one dimension that only key 0 has: the first token gets logit about
//             `strength` * (1 + z / 4) from every query, and strength grows with log n, so
//             the sink's share of the mass stays about the same at every n.
//   columns   the same, for a few keys at random positions (separators, markers: the
//             "vertical lines" of MInference): each gets logit about log n + extra - log
//             count from every query that may see it.
//   retrieval each query looks one key up: query i points at the random unit direction of
//             a target key t(i) (t(i) <= i when causal), logit log n + extra on the target
//             and about N(0, 1) elsewhere: what DuoAttention's retrieval heads do, and
//             what LSH must find.
//   partial   retrieval as real heads do it: q and k come from different projections, so
//             a query matches its target key in only part of the space (3/4 of the
//             slice's dims) and is noise in the rest: cos(q, target) about 0.75, logit
//             log n + extra on the target. One r-bit LSH table then pairs them with
//             probability about 0.76^r.
//
// Values are iid N(0, 1) everywhere (the sink's value too: a sink that is missed then
// costs accuracy, which is the point of the test). The softmax scale is the default
// 1 / sqrt(d), which the generators assume when they size the components.
import { Xoshiro128 } from '../src/random.ts';
import type { Tensor } from '../src/tensor.ts';

export interface WorkloadSpec {
  B: number;
  H: number;
  n: number;
  d: number;
  seed: number;
  /** causal attention: retrieval targets precede their queries (default false) */
  causal?: boolean;
}

export interface WorkloadTensors {
  q: Tensor;
  k: Tensor;
  v: Tensor;
}

export type WorkloadName =
  | 'gaussian' | 'clustered' | 'local' | 'sink' | 'columns' | 'retrieval' | 'mixture' | 'llm' | 'partial-retrieval' | 'wide-local';

export interface Workload {
  name: WorkloadName;
  description: string;
  generate(spec: WorkloadSpec): WorkloadTensors;
}

/** One head's q and k rows [n, d] and the generator that fills them. */
interface HeadFill {
  q: Float32Array;
  k: Float32Array;
  n: number;
  d: number;
  rng: Xoshiro128;
  /** whether the workload is for causal attention (a retrieval target then precedes its query) */
  causal: boolean;
}

/** Pairs of (query, key) logit contributions written into dims [offset, offset + width). */
type Component = (head: HeadFill, offset: number, width: number) => void;

const SINK_SHARE_LOGIT = 1.5; // sink logit minus log n: about 60% of the mass on key 0 (over noise of strength 1)

function unitVector(rng: Xoshiro128, width: number): Float64Array {
  const u = new Float64Array(width);
  let norm = 0;
  for (let i = 0; i < width; i++) {
    u[i] = rng.nextGaussian();
    norm += u[i] * u[i];
  }
  norm = Math.sqrt(norm);
  for (let i = 0; i < width; i++) u[i] /= norm;
  return u;
}

function noise(strength: number): Component {
  return ({ q, k, n, d, rng }, offset, width) => {
    // scale * sum over `width` products of N(0, s^2) pairs has std scale * s^2 * sqrt(width).
    const s = Math.sqrt(strength * Math.sqrt(d) / Math.sqrt(width));
    for (let i = 0; i < n; i++) {
      for (let c = offset; c < offset + width; c++) {
        q[i * d + c] = s * rng.nextGaussian();
        k[i * d + c] = s * rng.nextGaussian();
      }
    }
  };
}

function clusters(count: number, strength: number): Component {
  return ({ q, k, n, d, rng }, offset, width) => {
    const centres = Array.from({ length: count }, () => unitVector(rng, width));
    const amp = Math.sqrt(strength * Math.sqrt(d));
    const jitter = 0.3 / Math.sqrt(width); // member = centre + noise of norm about 0.3
    for (const x of [q, k]) {
      for (let i = 0; i < n; i++) {
        const centre = centres[rng.nextBelow(count)];
        for (let c = 0; c < width; c++) x[i * d + offset + c] = amp * (centre[c] + jitter * rng.nextGaussian());
      }
    }
  };
}

function rotary(strength: number): Component {
  return ({ q, k, n, d, rng }, offset, width) => {
    const u = unitVector(rng, width);
    const amp = Math.sqrt(strength * Math.sqrt(d));
    const jitter = 0.2 / Math.sqrt(width);
    const pairs = width / 2;
    for (const x of [q, k]) {
      for (let i = 0; i < n; i++) {
        for (let p = 0; p < pairs; p++) {
          const angle = i * Math.pow(10000, (-2 * p) / width);
          const cos = Math.cos(angle);
          const sin = Math.sin(angle);
          const a = u[2 * p] + jitter * rng.nextGaussian();
          const b = u[2 * p + 1] + jitter * rng.nextGaussian();
          x[i * d + offset + 2 * p] = amp * (a * cos - b * sin);
          x[i * d + offset + 2 * p + 1] = amp * (a * sin + b * cos);
        }
      }
    }
  };
}

/** Width 1: only key 0 carries it. `extra` is the sink logit above log n. */
function sink(extra: number): Component {
  return ({ q, k, n, d, rng }, offset) => {
    const strength = Math.log(n) + extra;
    for (let i = 0; i < n; i++) {
      q[i * d + offset] = 1 + rng.nextGaussian() / 4;
      k[i * d + offset] = 0;
    }
    k[offset] = strength * Math.sqrt(d);
  };
}

/** Width 1: `count` keys at random positions (never key 0) carry it. */
function columns(count: number, extra: number): Component {
  return ({ q, k, n, d, rng }, offset) => {
    const strength = Math.log(n) + extra - Math.log(count);
    for (let i = 0; i < n; i++) {
      q[i * d + offset] = 1 + rng.nextGaussian() / 4;
      k[i * d + offset] = 0;
    }
    for (let c = 0; c < count; c++) k[(1 + rng.nextBelow(n - 1)) * d + offset] = strength * Math.sqrt(d);
  };
}

function retrieval(extra: number): Component {
  return ({ q, k, n, d, rng, causal }, offset, width) => {
    const amp = Math.sqrt(d);
    const strength = Math.log(n) + extra;
    for (let j = 0; j < n; j++) {
      const u = unitVector(rng, width);
      for (let c = 0; c < width; c++) k[j * d + offset + c] = amp * u[c];
    }
    for (let i = 0; i < n; i++) {
      const t = rng.nextBelow(causal ? i + 1 : n);
      for (let c = 0; c < width; c++) q[i * d + offset + c] = (strength * k[t * d + offset + c]) / amp;
    }
  };
}

/** Retrieval whose query matches its target key on the first `matched` share of the slice's dims only. */
function partialRetrieval(extra: number, matched: number): Component {
  return ({ q, k, n, d, rng, causal }, offset, width) => {
    const amp = Math.sqrt(d);
    const strength = Math.log(n) + extra;
    const m = Math.max(1, Math.round(matched * width));
    // The matched dims carry m / width of a unit key's norm: scaled up so that the target's logit is `strength`.
    const gain = (strength * width) / m;
    for (let j = 0; j < n; j++) {
      const u = unitVector(rng, width);
      for (let c = 0; c < width; c++) k[j * d + offset + c] = amp * u[c];
    }
    for (let i = 0; i < n; i++) {
      const t = rng.nextBelow(causal ? i + 1 : n);
      for (let c = 0; c < width; c++) {
        q[i * d + offset + c] = c < m
          ? (gain * k[t * d + offset + c]) / amp
          : (gain * rng.nextGaussian()) / Math.sqrt(width);
      }
    }
  };
}

/** Fills each head from its list of [component, width] slices (widths sum to d). */
function composed(spec: WorkloadSpec, layout: (head: number, d: number) => [Component, number][]): WorkloadTensors {
  const { B, H, n, d, seed } = spec;
  const rng = new Xoshiro128(seed);
  const q = new Float32Array(B * H * n * d);
  const k = new Float32Array(B * H * n * d);
  for (let bh = 0; bh < B * H; bh++) {
    const head: HeadFill = {
      q: q.subarray(bh * n * d, (bh + 1) * n * d), k: k.subarray(bh * n * d, (bh + 1) * n * d), n, d, rng,
      causal: spec.causal ?? false,
    };
    let offset = 0;
    for (const [component, width] of layout(bh % H, d)) {
      component(head, offset, width);
      offset += width;
    }
    if (offset !== d) throw new Error(`workload layout covers ${offset} of ${d} dims`);
  }
  const v = new Float32Array(B * H * n * d);
  for (let i = 0; i < v.length; i++) v[i] = rng.nextGaussian();
  const shape = [B, H, n, d];
  return { q: { data: q, shape }, k: { data: k, shape }, v: { data: v, shape } };
}

/** Even split point near `fraction` of d (rotary slices need an even width). */
function evenPart(d: number, fraction: number): number {
  return 2 * Math.round((d * fraction) / 2);
}

/**
 * Mixture heads, cycling over four profiles seen in real LLM layers: sink plus local
 * window, a local head, a retrieval head with a weak sink, and a diffuse head. Every
 * head has all four components (dims: sink 1, noise 1, clusters, rotary); the profile
 * sets their strengths.
 */
const MIXTURE_PROFILES: { sink: number; clusters: number; rotary: number }[] = [
  { sink: 1, clusters: 2, rotary: 6 },
  { sink: -3, clusters: 0.5, rotary: 10 },
  { sink: -1, clusters: 8, rotary: 2 },
  { sink: -6, clusters: 1, rotary: 1 },
];

/**
 * The head kinds of long-context models, in proportions from published per-head analyses:
 * DuoAttention (Xiao et al., 2024, arXiv 2410.10819) finds 47% of Llama-2-7B-32K's heads
 * need full attention (retrieval) and the rest are served by sink tokens plus a local
 * window ("streaming heads"), 81-95% retrieval heads in Llama-3-8B and Mistral-7B;
 * MInference (Jiang et al., 2024, arXiv 2407.02490) fits every head of Llama-3-8B with
 * heavy key columns (the first tokens among them) plus diagonals; StreamingLLM (Xiao et
 * al., 2023, arXiv 2309.17453) shows the first tokens take most of many heads' mass. Of
 * 8 heads: 3 streaming (strong sink, local), 4 retrieval (with a weak sink, heavy columns
 * and a local diagonal), 1 diffuse: 50% retrieval, between the two models' figures.
 */
const LLM_PROFILES: { sink: number; columns: number; rotary: number; retrieval: number; noise: number }[] = [
  { sink: 2, columns: -4, rotary: 8, retrieval: -6, noise: 0.5 },
  { sink: 1, columns: -2, rotary: 10, retrieval: -6, noise: 0.5 },
  { sink: 3, columns: -4, rotary: 6, retrieval: -6, noise: 0.5 },
  { sink: -1, columns: 0, rotary: 4, retrieval: 2, noise: 0.5 },
  { sink: -2, columns: -1, rotary: 2, retrieval: 3, noise: 0.5 },
  { sink: 0, columns: -1, rotary: 3, retrieval: 1, noise: 0.5 },
  { sink: -1, columns: 1, rotary: 1, retrieval: 2, noise: 0.5 },
  { sink: -6, columns: -6, rotary: 1, retrieval: -6, noise: 1 },
];

export const WORKLOADS: Record<WorkloadName, Workload> = {
  gaussian: {
    name: 'gaussian',
    description: 'iid N(0, 1) q, k, v: logits ~ N(0, 1), mass spread over all keys (a diffuse head)',
    generate: (spec) => composed(spec, (_, d) => [[noise(1), d]]),
  },
  clustered: {
    name: 'clustered',
    description: '64 random clusters at random positions, logit 8 within a cluster: retrieval-like',
    generate: (spec) => composed(spec, (_, d) => [[clusters(64, 8), d]]),
  },
  local: {
    name: 'local',
    description: 'RoPE-rotated shared content, logit 10 on the diagonal: mass near the diagonal',
    generate: (spec) => composed(spec, (_, d) => [[rotary(10), d]]),
  },
  sink: {
    name: 'sink',
    description: 'key 0 gets logit log n + 1.5 from every query over N(0, 1) noise: about 60% of the mass on the first token',
    generate: (spec) => composed(spec, (_, d) => [[sink(SINK_SHARE_LOGIT), 1], [noise(1), d - 1]]),
  },
  columns: {
    name: 'columns',
    description: '8 keys at random positions share logit log n + 1 from every query over N(0, 1) noise: heavy columns, about 60% of the mass',
    generate: (spec) => composed(spec, (_, d) => [[columns(8, SINK_SHARE_LOGIT), 1], [noise(1), d - 1]]),
  },
  retrieval: {
    name: 'retrieval',
    description: 'each query looks up one random key (logit log n + 2, before the query when causal) over N(0, 1) logits',
    generate: (spec) => composed(spec, (_, d) => [[retrieval(2), d]]),
  },
  'partial-retrieval': {
    name: 'partial-retrieval',
    description: 'each query is a noisy copy of one key: the match in 3/4 of the dims, noise in the rest (cos about 0.75), logit log n + 2 on the target',
    // Retrieval heads (Wu et al., 2024, arXiv 2404.15574) copy one earlier token; their
    // queries and keys come from different projections, so the match lies in a subspace.
    generate: (spec) => composed(spec, (_, d) => [[partialRetrieval(2, 0.75), d]]),
  },
  'wide-local': {
    name: 'wide-local',
    description: 'RoPE-rotated shared content, logit 3 on the diagonal: a local head whose mass spreads over hundreds of keys, with a long tail',
    // Local heads with windows of hundreds to thousands of tokens: MInference's
    // "vertical-slash" heads keep up to 6096 diagonals in Llama-3-8B (arXiv 2407.02490).
    generate: (spec) => composed(spec, (_, d) => [[rotary(3), d]]),
  },
  mixture: {
    name: 'mixture',
    description: 'heads cycle over sink + local, local, retrieval + weak sink, diffuse (sums of the components above)',
    generate: (spec) =>
      composed(spec, (h, d) => {
        const p = MIXTURE_PROFILES[h % MIXTURE_PROFILES.length];
        const rotaryWidth = evenPart(d, 0.5);
        return [
          [sink(p.sink), 1],
          [noise(0.5), 1],
          [clusters(64, p.clusters), d - 2 - rotaryWidth],
          [rotary(p.rotary), rotaryWidth],
        ];
      }),
  },
  llm: {
    name: 'llm',
    description: 'LLM-like heads in published proportions: 3 streaming (sink + local), 4 retrieval (with weak sink, heavy columns, local), 1 diffuse of 8',
    generate: (spec) =>
      composed(spec, (h, d) => {
        const p = LLM_PROFILES[h % LLM_PROFILES.length];
        const rotaryWidth = evenPart(d, 0.25);
        return [
          [sink(p.sink), 1],
          [columns(8, p.columns), 1],
          [noise(p.noise), 2],
          [rotary(p.rotary), rotaryWidth],
          [retrieval(p.retrieval), d - 4 - rotaryWidth],
        ];
      }),
  },
};

export const WORKLOAD_NAMES = Object.keys(WORKLOADS) as WorkloadName[];

/** Positions [from, to) of every head of a [1, heads, n, D] tensor, as [1, heads, to − from, D] (a prompt's chunk). */
export function positions(t: Tensor, from: number, to: number): Tensor {
  const [, heads, n, D] = t.shape;
  const data = new Float32Array(heads * (to - from) * D);
  for (let h = 0; h < heads; h++) data.set(t.data.subarray((h * n + from) * D, (h * n + to) * D), h * (to - from) * D);
  return { data, shape: [1, heads, to - from, D] };
}

/** Writes positions [from, from + rows) of every head (rows of `width` values) into a [1, heads, n, width] output. */
export function place(dst: Float32Array, n: number, src: Float32Array, from: number, rows: number, width: number): void {
  for (let h = 0; h < src.length / (rows * width); h++) dst.set(src.subarray(h * rows * width, (h + 1) * rows * width), (h * n + from) * width);
}
