// One decoder layer's attention as a language-model runtime runs it: 32 query heads over 8
// key/value heads, d = 128, causal (the shape of Llama-3-8B and Mistral-7B). Full prefill
// and chunked prefill (chunks of 2048 appended to a KV cache, each chunk's queries attending
// to everything before them) at 16k, 32k and 64k tokens; decoding steps at 32k and 128k
// cached tokens, with the cache storing float32 and (hyper, exact) float16. Ours (hyper at
// its defaults and with `tolerance: Infinity`, exact) beside
// onnxruntime-node's MultiHeadAttention on the same tensors (it has no grouped-query mode,
// so K/V are repeated to 32 heads for it). Time, error against float64 exact attention,
// the longest stall of this thread's event loop during the call, and peak RSS.
// Run alone: `tsx bench/layer.bench.ts [--quick] [--prefill=65536] [--decode=] [--methods=hyper,exact,peer]`
// (a part: see PART).
import { suite } from 'uvu';
import { createKVCache, exactAttention, hyperAttention, warmup, type KVCache, type KVCacheDtype } from '../src/index.ts';
import { referenceAttention } from '../test/reference.ts';
import { watchEventLoop } from '../test/responsiveness.ts';
import { Xoshiro128 } from '../src/random.ts';
import { attentionErrors, evenRows, referenceRows, type AttentionErrors } from './error.ts';
import {
  Recorder, QUICK, attentionFlops, describeMachine, formatMs, measure, memoryShortfall, type CaseOutcome, type Params,
} from './harness.ts';
import { multiHeadAttentionModel } from './onnx.ts';
import { loadPeer, peerWorkingBytes, type LoadedPeer } from './peers.ts';
import { place, positions, WORKLOADS, type WorkloadTensors } from './workloads.ts';

const H = 32;
const HKV = 8;
const D = 128;
const GROUP = H / HKV;
const CHUNK = 2048;
/** `--NAME=a,b` from the command line (an empty list for `--NAME=`), or undefined. */
function listArg(name: string): string[] | undefined {
  const arg = process.argv.find((a) => a.startsWith(`--${name}=`));
  return arg === undefined ? undefined : arg.slice(name.length + 3).split(',').filter((x) => x !== '');
}
/**
 * A part of the suite: `--prefill=65536` and `--decode=` (none) choose the sizes, and
 * `--methods=hyper-unchecked,exact` the methods ('peer' for onnxruntime-node). Such a run
 * writes results/layer-part.json, leaving the whole suite's results as they are.
 */
const SIZES = { prefill: listArg('prefill')?.map(Number), decode: listArg('decode')?.map(Number) };
const METHODS = listArg('methods');
const PART = SIZES.prefill !== undefined || SIZES.decode !== undefined || METHODS !== undefined;
const PREFILL = SIZES.prefill ?? (QUICK ? [8192] : [16384, 32768, 65536]);
const DECODE = SIZES.decode ?? (QUICK ? [32768] : [32768, 131072]);
/** Whether the part runs this method's cases. */
const runs = (method: string): boolean => METHODS === undefined || METHODS.includes(method);
const DECODE_STEPS = QUICK ? 4 : 8;
/** float64 reference rows per prefill (spread over every head and position) */
const ERROR_ROWS = QUICK ? 128 : 256;
/**
 * Exact attention at 64k costs about a minute per head on two cores, so exact prefill (ours
 * and the peer's) runs on EXACT_HEADS query heads over one KV head and is scaled to 32:
 * every head costs the same in exact attention, so the scaled time is the layer's.
 */
const EXACT_HEADS = QUICK ? GROUP : 1;

/** 4 (nq, nk) pairs a causal call counts: bottom-right aligned, query i sees nk − nq + i + 1 keys. */
function causalFlops(nq: number, nk: number, heads: number): number {
  const pairs = nq * (nk - nq) + (nq * (nq + 1)) / 2;
  return attentionFlops(1, 1, D, D, false) * pairs * heads;
}

/**
 * The llm workload (sink, heavy-column, local, retrieval and diffuse heads in published
 * proportions) for the 8 KV heads; each KV head's 4 query heads are its queries plus
 * independent noise of half their RMS, so that heads of a group look at the same keys with
 * different sharpness, as a group's heads do in trained models.
 */
function layerInputs(n: number, seed: number): WorkloadTensors {
  const x = WORKLOADS.llm.generate({ B: 1, H: HKV, n, d: D, seed, causal: true });
  const q = new Float32Array(H * n * D);
  const rng = new Xoshiro128(seed ^ 0x5eed);
  for (let g = 0; g < HKV; g++) {
    const src = x.q.data.subarray(g * n * D, (g + 1) * n * D);
    let sq = 0;
    for (let i = 0; i < src.length; i += 97) sq += src[i] * src[i];
    const sigma = 0.5 * Math.sqrt(sq / Math.ceil(src.length / 97));
    for (let m = 0; m < GROUP; m++) {
      const dst = q.subarray((g * GROUP + m) * n * D, (g * GROUP + m + 1) * n * D);
      for (let i = 0; i < dst.length; i++) dst[i] = src[i] + sigma * rng.nextGaussian();
    }
  }
  return { q: { data: q, shape: [1, H, n, D] }, k: x.k, v: x.v };
}

/** The first `heads` query heads and their KV head(s). */
function firstHeads(x: WorkloadTensors, heads: number): WorkloadTensors {
  const n = x.q.shape[2];
  const kvHeads = Math.ceil(heads / GROUP);
  return {
    q: { data: x.q.data.subarray(0, heads * n * D), shape: [1, heads, n, D] },
    k: { data: x.k.data.subarray(0, kvHeads * n * D), shape: [1, kvHeads, n, D] },
    v: { data: x.v.data.subarray(0, kvHeads * n * D), shape: [1, kvHeads, n, D] },
  };
}

type Slice = WorkloadTensors['q'];

/**
 * The longest stall of this thread's event loop while our calls (or the peer's) run
 * (watchEventLoop: its wall time, and where Linux tells it the most CPU time the thread ran
 * between two turns, which a wait for a core does not count), and the peak RSS: the timers
 * tick only while `during` has a call in flight, so the bench's own work between calls
 * (slicing inputs, float64 references) is not counted.
 */
class Watch {
  stallMs = 0;
  stallCpuMs: number | undefined;
  private peakRss = process.memoryUsage.rss();

  async during<T>(call: () => Promise<T>): Promise<T> {
    const stop = watchEventLoop();
    const sample = () => (this.peakRss = Math.max(this.peakRss, process.memoryUsage.rss()));
    const timer = setInterval(sample, 5);
    try {
      return await call();
    } finally {
      clearInterval(timer);
      sample();
      const gap = stop();
      this.stallMs = Math.max(this.stallMs, gap.wallMs);
      if (gap.cpuMs !== undefined) this.stallCpuMs = Math.max(this.stallCpuMs ?? 0, gap.cpuMs);
    }
  }

  get peakRssMB(): number {
    return Math.max(this.peakRss, process.memoryUsage.rss()) / 2 ** 20;
  }
}

function errorMetrics(e: AttentionErrors): Record<string, number> {
  return { relFrobenius: e.relFrobenius, relToV: e.relToV, maxLseError: e.maxLseError };
}

function summary(ms: number, scaled: number, e: AttentionErrors | null, w: Watch): string {
  const err = e ? `, error ${e.relFrobenius.toFixed(3)} (to V ${e.relToV.toFixed(3)}, lse ${e.maxLseError.toFixed(3)})` : '';
  const scale = scaled !== 1 ? ` (${formatMs(ms / scaled)} measured on 1/${scaled} of the heads)` : '';
  const ran = w.stallCpuMs === undefined ? '' : ` (thread ran ${w.stallCpuMs.toFixed(0)} ms at most between turns)`;
  return `${formatMs(ms)}${scale}${err}, stall ${w.stallMs.toFixed(0)} ms${ran}, peak RSS ${w.peakRssMB.toFixed(0)} MB`;
}

/** A call's out [1, heads, n, D] and lse [1, heads, n] (a peer gives no lse: empty). */
interface Output {
  out: Float32Array;
  lse: Float32Array;
}

type Method = 'hyper' | 'hyper-unchecked' | 'exact';
const OPTIONS: Record<Method, object> = { hyper: {}, 'hyper-unchecked': { tolerance: Infinity }, exact: {} };

/**
 * One causal call over the whole prompt, into the same out array each run (the out option,
 * as a runtime passes its layer's buffer).
 */
function fullPrefill(x: WorkloadTensors, m: Method, w: Watch) {
  const call = m === 'exact' ? exactAttention : hyperAttention;
  const into = new Float32Array(x.q.data.length);
  return async (): Promise<Output> => {
    const r = await w.during(() => call(x.q, x.k, x.v, { causal: true, ...OPTIONS[m], out: into }));
    return { out: r.out.data, lse: r.lse.data };
  };
}

/**
 * The prompt in chunks: append each chunk's K/V to a cache, then attend its queries to all
 * keys so far, each chunk's out into the same array (the out option).
 */
function chunkedPrefill(x: WorkloadTensors, m: Method, w: Watch) {
  const [, heads, n] = x.q.shape;
  const kvHeads = x.k.shape[1];
  const chunks: { from: number; rows: number; q: Slice; k: Slice; v: Slice }[] = [];
  for (let from = 0; from < n; from += CHUNK) {
    const to = Math.min(n, from + CHUNK);
    chunks.push({ from, rows: to - from, q: positions(x.q, from, to), k: positions(x.k, from, to), v: positions(x.v, from, to) });
  }
  return async (): Promise<Output> => {
    const out = new Float32Array(heads * n * D);
    const lse = new Float32Array(heads * n);
    const chunkOut = new Float32Array(heads * CHUNK * D);
    const cache = await createKVCache({ kvHeads, headDim: D, capacity: n });
    try {
      for (const c of chunks) {
        const into = chunkOut.subarray(0, heads * c.rows * D);
        const r = await w.during(async () => {
          await cache.append(c.k, c.v);
          return m === 'exact'
            ? exactAttention(c.q, cache, { causal: true, out: into })
            : hyperAttention(c.q, cache, { causal: true, ...OPTIONS[m], out: into });
        });
        place(out, n, r.out.data, c.from, c.rows, D);
        place(lse, n, r.lse.data, c.from, c.rows, 1);
      }
    } finally {
      cache.release();
    }
    return { out, lse };
  };
}

/** onnxruntime-node's MultiHeadAttention (causal) on these heads, K/V repeated per query head. */
async function peerPrefill(peer: LoadedPeer, x: WorkloadTensors) {
  const [, heads, n] = x.q.shape;
  const { ort } = peer;
  const session = await ort.InferenceSession.create(multiHeadAttentionModel(heads, 1 / Math.sqrt(D), true), { executionProviders: ['cpu'] });
  const tokenMajor = new Float32Array(n * heads * D);
  for (let h = 0; h < heads; h++) for (let i = 0; i < n; i++) tokenMajor.set(x.q.data.subarray((h * n + i) * D, (h * n + i + 1) * D), (i * heads + h) * D);
  const feeds = {
    query: new ort.Tensor('float32', tokenMajor, [1, n, heads * D]),
    key: new ort.Tensor('float32', repeatHeads(x.k.data, heads, n), [1, heads, n, D]),
    value: new ort.Tensor('float32', repeatHeads(x.v.data, heads, n), [1, heads, n, D]),
  };
  return {
    run: (w: Watch) => async (): Promise<Output> => ({ out: (await w.during(() => session.run(feeds))).out.data as Float32Array, lse: new Float32Array(0) }),
    release: () => session.release(),
  };
}

/** [kvHeads, n, D] → [heads, n, D], each KV head repeated for its group's query heads. */
function repeatHeads(kv: Float32Array, heads: number, n: number): Float32Array {
  const out = new Float32Array(heads * n * D);
  for (let h = 0; h < heads; h++) out.set(kv.subarray(Math.floor(h / GROUP) * n * D, (Math.floor(h / GROUP) + 1) * n * D), h * n * D);
  return out;
}

interface State {
  recorder: Recorder;
  ort: LoadedPeer | null;
}

const bench = suite<State>('layer');

bench.before(async (state) => {
  const peer = await loadPeer('onnxruntime-node');
  state.ort = 'missing' in peer ? null : peer;
  const machine = await describeMachine({ 'onnxruntime-node': state.ort?.version ?? null });
  // The scheduler measures the machine once per process: not inside a timed call.
  await warmup();
  const total = PREFILL.length * 8 + DECODE.length * 7;
  state.recorder = new Recorder(PART ? 'layer-part' : 'layer', total, machine);
  if ('missing' in peer) state.recorder.note(peer.missing);
  state.recorder.note(`exact prefill (ours and onnxruntime-node's) runs on ${EXACT_HEADS} of the ${H} query heads and is scaled to ${H}`);
});

/**
 * One decoding step's call, given what the step prepared outside the timed region: its
 * query, and for calls on tensors all keys and values so far (a runtime without our cache
 * holds them as its own tensors).
 */
type DecodeCall = (w: Watch, q: Slice, kv: { k: Slice; v: Slice } | null, cache: KVCache | null) => Promise<Output>;

bench('decode', async (state) => {
  const rec = state.recorder;
  for (const n of DECODE) {
    const x = layerInputs(n + DECODE_STEPS, n);
    const flops = causalFlops(1, n, H);
    /**
     * DECODE_STEPS tokens after an n-token prompt: append the token's K/V, attend its query;
     * the first step warms up. A cache stores `dtype` (errors are against the float32 inputs).
     */
    const decodeCase = async (
      m: string, call: DecodeCall, mode: 'cache' | 'tensors' | 'fixed', dtype: KVCacheDtype = 'float32',
    ): Promise<CaseOutcome> => {
      const bytes = 2 * HKV * n * D * (dtype === 'float16' ? 2 : 4);
      const cache = mode === 'cache' ? await createKVCache({ kvHeads: HKV, headDim: D, capacity: n + DECODE_STEPS, dtype }) : null;
      const watch = new Watch();
      try {
        await cache?.append(positions(x.k, 0, n), positions(x.v, 0, n));
        const times: number[] = [];
        let e: AttentionErrors | null = null;
        for (let t = 0; t < DECODE_STEPS; t++) {
          const at = n + t;
          const q = positions(x.q, at, at + 1);
          const keys = mode === 'fixed' ? n : at + 1;
          const kv = mode === 'cache' ? null : { k: positions(x.k, 0, keys), v: positions(x.v, 0, keys) };
          const t0 = performance.now();
          await cache?.append(positions(x.k, at, at + 1), positions(x.v, at, at + 1));
          const out = await call(watch, q, kv, cache);
          times.push(performance.now() - t0);
          if (t === DECODE_STEPS - 1 && mode !== 'fixed') e = decodeErrors(x, at, q.data, out);
        }
        const warm = times.slice(1).sort((a, b) => a - b);
        const ms = warm[warm.length >> 1];
        return {
          time: { medianMs: ms, minMs: warm[0], maxMs: warm[warm.length - 1], runs: warm.length, callsPerRun: 1, warmup: true },
          metrics: { gflops: flops / (ms * 1e6), kvGBps: bytes / (ms * 1e6), stallMs: watch.stallMs, ...(watch.stallCpuMs === undefined ? {} : { stallCpuMs: watch.stallCpuMs }), peakRssMB: watch.peakRssMB, ...(e ? errorMetrics(e) : {}) },
          summary: `${m}: ${summary(ms, 1, e, watch)} per token, K/V read at ${(bytes / (ms * 1e6)).toFixed(1)} GB/s`,
        };
      } finally {
        cache?.release();
      }
    };
    const cached = [
      ...(['hyper', 'hyper-unchecked', 'exact'] as const).map((m) => [m, 'float32'] as const),
      ...(['hyper', 'exact'] as const).map((m) => [m, 'float16'] as const),
    ].filter(([m]) => runs(m));
    for (const [m, dtype] of cached) {
      const attend = m === 'exact' ? exactAttention : hyperAttention;
      await rec.run({ method: m, backend: 'cpu', params: { n, decode: dtype === 'float32' ? 'KV cache' : 'KV cache float16' } }, () =>
        decodeCase(`${m}${dtype === 'float32' ? '' : ' (float16 cache)'}`, async (w, q, _, cache) => {
          const r = await w.during(() => attend(q, cache!, { causal: true, ...OPTIONS[m] }));
          return { out: r.out.data, lse: r.lse.data };
        }, 'cache', dtype));
    }
    if (runs('exact')) {
      await rec.run({ method: 'exact', backend: 'cpu', params: { n, decode: 'tensors each call' } }, () =>
        decodeCase('exact on tensors', async (w, q, kv) => {
          const r = await w.during(() => exactAttention(q, kv!.k, kv!.v, { causal: true }));
          return { out: r.out.data, lse: r.lse.data };
        }, 'tensors'));
    }
    if (runs('peer')) {
      const peerCase = { method: 'onnxruntime-node MultiHeadAttention', backend: 'peer', params: { n, decode: 'K/V repeated to 32 heads' } as Params };
      if (!state.ort) rec.skip(peerCase, 'onnxruntime-node is missing');
      else await rec.run(peerCase, () => peerDecode(state.ort!, x, n, decodeCase), true);
    }
  }
  rec.assertNoFailures();
});

/**
 * onnxruntime-node decoding: each step's query against the prompt's n keys, repeated to 32
 * heads once (a runtime would keep them so); one query sees all keys, so it runs non-causal.
 */
async function peerDecode(
  peer: LoadedPeer, x: WorkloadTensors, n: number,
  decodeCase: (m: string, call: DecodeCall, mode: 'cache' | 'tensors' | 'fixed') => Promise<CaseOutcome>,
): Promise<CaseOutcome> {
  const { ort } = peer;
  const session = await ort.InferenceSession.create(multiHeadAttentionModel(H, 1 / Math.sqrt(D), false, 'L'), { executionProviders: ['cpu'] });
  const key = new ort.Tensor('float32', repeatHeads(positions(x.k, 0, n).data, H, n), [1, H, n, D]);
  const value = new ort.Tensor('float32', repeatHeads(positions(x.v, 0, n).data, H, n), [1, H, n, D]);
  try {
    return await decodeCase('onnxruntime-node', async (w, q) => {
      const r = await w.during(() => session.run({ query: new ort.Tensor('float32', q.data, [1, 1, H * D]), key, value }));
      return { out: r.out.data as Float32Array, lse: new Float32Array(0) };
    }, 'fixed');
  } finally {
    await session.release();
  }
}

bench('prefill', async (state) => {
  const rec = state.recorder;
  for (const n of PREFILL) {
    const x = layerInputs(n, n);
    const rows = evenRows(H * n, ERROR_ROWS);
    const ref = referenceRows(x, rows, true);
    const flops = causalFlops(n, n, H);
    const time = async (m: string, call: (w: Watch) => () => Promise<Output>, scaled: number, errors: boolean): Promise<CaseOutcome> => {
      let r: Output = { out: new Float32Array(0), lse: new Float32Array(0) };
      const watch = new Watch();
      const once = call(watch);
      const t = await measure(async () => { r = await once(); });
      const ms = t.medianMs * scaled;
      const e = errors ? attentionErrors(ref, r.out, r.lse, x.v.data, D) : null;
      return {
        time: { ...t, medianMs: ms, minMs: t.minMs * scaled, maxMs: t.maxMs * scaled },
        metrics: { gflops: flops / (ms * 1e6), stallMs: watch.stallMs, ...(watch.stallCpuMs === undefined ? {} : { stallCpuMs: watch.stallCpuMs }), peakRssMB: watch.peakRssMB, ...(e ? errorMetrics(e) : {}) },
        summary: `${m}: ${summary(ms, scaled, e, watch)}`,
      };
    };
    for (const m of (['hyper', 'hyper-unchecked'] as const).filter(runs)) {
      await rec.run({ method: m, backend: 'cpu', params: { n, prefill: 'full' } }, () => time(m, (w) => fullPrefill(x, m, w), 1, true));
      await rec.run({ method: m, backend: 'cpu', params: { n, prefill: `chunks of ${CHUNK}` } }, () => time(m, (w) => chunkedPrefill(x, m, w), 1, true));
    }
    const few = firstHeads(x, EXACT_HEADS);
    if (runs('exact')) {
      await rec.run({ method: 'exact', backend: 'cpu', params: { n, prefill: 'full' } }, () => time('exact', (w) => fullPrefill(few, 'exact', w), H / EXACT_HEADS, false));
      await rec.run({ method: 'exact', backend: 'cpu', params: { n, prefill: `chunks of ${CHUNK}` } }, () => time('exact', (w) => chunkedPrefill(few, 'exact', w), H / EXACT_HEADS, false));
    }
    if (runs('peer')) await peerPrefillCases(state, n, few, time);
  }
  rec.assertNoFailures();
});

/** onnxruntime-node's prefill at n tokens on the exact heads, scaled to the layer (it has no chunked form). */
async function peerPrefillCases(
  state: State, n: number, few: WorkloadTensors,
  time: (m: string, call: (w: Watch) => () => Promise<Output>, scaled: number, errors: boolean) => Promise<CaseOutcome>,
): Promise<void> {
  const rec = state.recorder;
  const peerCase = { method: 'onnxruntime-node MultiHeadAttention', backend: 'peer', params: { n, prefill: 'full' } as Params };
  const short = memoryShortfall(peerWorkingBytes('mha', n, EXACT_HEADS), false);
  if (!state.ort) rec.skip(peerCase, 'onnxruntime-node is missing');
  else if (short) rec.skip(peerCase, short);
  else {
    const peer = await peerPrefill(state.ort, few);
    try {
      await rec.run(peerCase, () => time('onnxruntime-node', peer.run, H / EXACT_HEADS, false), true);
    } finally {
      await peer.release();
    }
  }
  rec.skip({ method: 'onnxruntime-node MultiHeadAttention', backend: 'peer', params: { n, prefill: `chunks of ${CHUNK}` } },
    'its MultiHeadAttention has no bottom-right causal mask for fewer queries than keys');
}

/** Error of one decoding step's outputs [H, D] against float64 attention over keys [0, keys). */
function decodeErrors(x: WorkloadTensors, at: number, q: Float32Array, r: Output): AttentionErrors | null {
  if (r.lse.length === 0) return null;
  const keys = at + 1;
  const k = positions(x.k, 0, keys).data;
  const v = positions(x.v, 0, keys).data;
  const ref = referenceAttention({ q, k, v, B: 1, H, Hkv: HKV, nq: 1, nk: keys, d: D, dv: D });
  return attentionErrors({ rows: Int32Array.from({ length: H }, (_, i) => i), out: ref.out, lse: ref.lse }, r.out, r.lse, v, D);
}

bench.after((state) => state.recorder.finish());

bench.run();
