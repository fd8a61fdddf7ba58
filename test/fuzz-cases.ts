// The fuzz suites' calls: a seeded generator of bad and odd calls over every input and
// option, the fixed cases, and the check of each outcome (a correct result, against the
// float64 reference where the call is exact, or a HyperAttentionError with a known code;
// anything else is a failure). test/fuzz.test.ts runs thousands on WebAssembly, and
// test/gpu/fuzz.suite.ts a share on WebGPU (useBackend).
import { lateAfter, scaled } from '../scripts/pace.mjs';
import { HyperAttentionError, exactAttention, hyperAttention, type ErrorCode } from '../src/index.ts';
import { Xoshiro128 } from '../src/random.ts';
import { referenceDecodeAll, referenceEncodeAll } from './float16-reference.ts';
import { referenceAttention } from './reference.ts';
import { randomTensor } from './util.ts';

/** A call still pending after this long on the reference machine (scaled: scripts/pace.mjs) counts as a hang. */
const LIMIT_MS = 10_000;

/** The backend the generated calls run on (where a case does not test the option itself). */
let backend: 'cpu' | 'webgpu' = 'cpu';
export function useBackend(name: 'cpu' | 'webgpu'): void {
  backend = name;
}

const CODES: ReadonlySet<string> = new Set<ErrorCode>([
  'INVALID_SHAPE', 'INVALID_OPTION', 'NON_FINITE_INPUT', 'INPUT_OVERFLOW', 'UNSUPPORTED_HEAD_DIM', 'INVALID_SAMPLER_OUTPUT',
  'UNSUPPORTED', 'OUT_OF_MEMORY', 'DEVICE_LOST', 'GPU_ERROR', 'INVALID_PROFILE', 'ABORTED',
]);


type Expect =
  /** must succeed; compared with the reference when `exact`, else finite and shaped */
  | 'result'
  /** must reject with a known code (one of `codes` when given) */
  | 'typed'
  /** either a correct result or a typed rejection */
  | 'either'
  /** must reject with exactly the caller's own error object */
  | 'passthrough';

interface Problem {
  B: number; H: number; Hkv: number; nq: number; nk: number; d: number; dv: number; causal: boolean;
}

export interface Case {
  label: string;
  fn: 'hyper' | 'exact';
  q: unknown;
  k: unknown;
  v: unknown;
  options: unknown;
  expect: Expect;
  codes?: ErrorCode[];
  /** the problem, for checking a result's shape (and values, when exact) */
  problem?: Problem;
  /** the result equals exact attention (exactAttention, or a plan that runs all exact) */
  exact?: boolean;
  /** what the caller's sampler or onProgress throws, for 'passthrough' */
  thrown?: unknown;
  /** done right after the call returns its promise, before the call reads its inputs */
  after?: () => void;
  /** the inputs' values for the reference, where q, k, v are no longer readable as they were */
  reference?: Record<'q' | 'k' | 'v', { data: Float32Array }>;
}

function pick<T>(rng: Xoshiro128, xs: readonly T[]): T {
  return xs[rng.nextBelow(xs.length)];
}

function int(rng: Xoshiro128, lo: number, hi: number): number {
  return lo + rng.nextBelow(hi - lo + 1);
}

function tensor(shape: number[], seed: number, std = 1) {
  return randomTensor(shape, seed, std);
}

/** A well-formed small problem: GQA, odd sizes, d from 1 up, sometimes causal (with as many or more keys than queries). */
function problem(rng: Xoshiro128): Problem {
  const Hkv = int(rng, 1, 2);
  const H = Hkv * int(rng, 1, 3);
  const causal = rng.nextBelow(3) === 0;
  const nq = pick(rng, [1, 2, 3, 7, 16, 17, 31, 64, 65, 96]);
  const nk = causal ? nq + pick(rng, [0, 0, 1, 2, 31, 100]) : pick(rng, [1, 2, 5, 16, 33, 64, 97, 128]);
  return { B: int(rng, 1, 2), H, Hkv, nq, nk, d: pick(rng, [1, 3, 8, 16, 33]), dv: pick(rng, [1, 4, 16, 24]), causal };
}

function tensors(p: Problem, seed: number) {
  return {
    q: tensor([p.B, p.H, p.nq, p.d], seed),
    k: tensor([p.B, p.Hkv, p.nk, p.d], seed + 1),
    v: tensor([p.B, p.Hkv, p.nk, p.dv], seed + 2),
  };
}

/** Valid HyperAttention options, and whether they make the plan all exact. */
function hyperOptions(rng: Xoshiro128, p: Problem): { options: Record<string, unknown>; exact: boolean } {
  const o: Record<string, unknown> = { backend, causal: p.causal };
  if (rng.nextBelow(2)) o.blockSize = pick(rng, [1, 2, 3, 8, 16, 17, 64, 65536]);
  if (rng.nextBelow(2)) o.sampleSize = pick(rng, [0, 1, 5, 16, 256]);
  if (rng.nextBelow(2)) o.lshNumProjs = int(rng, 1, 16);
  if (rng.nextBelow(2)) o.mode = pick(rng, ['reference', 'fixed']);
  if (rng.nextBelow(2)) o.seed = pick(rng, [0, 1, 0xffffffff, rng.nextU32()]);
  if (rng.nextBelow(3) === 0) o.scale = pick(rng, [0.01, 0.3, 1, 2]);
  if (rng.nextBelow(2)) o.threads = pick(rng, [1, 2, 3]);
  if (rng.nextBelow(2)) o.tolerance = pick(rng, [0, 1e-6, 0.05, 0.1, 1, 1e9, Infinity]);
  if (rng.nextBelow(3) === 0) o.checkRows = pick(rng, [8, 9, 64, 4096]);
  o.minSeqLen = pick(rng, [0, 1, 2, 8, 16, 32, 64, 4096, Number.MAX_SAFE_INTEGER]);
  const m = o.minSeqLen as number;
  const exact = (p.causal ? p.nk <= m : p.nq < m) || o.tolerance === 0;
  return { options: o, exact };
}

const BAD_DIMS: unknown[] = [0, -1, 1.5, NaN, Infinity, -Infinity, 4n, '4', null, undefined, true, {}, [4], 2 ** 40, 2 ** 53 + 2];
const BAD_SHAPES: unknown[] = [
  null, undefined, 4, 'shape', {}, [], [1, 1, 4], [1, 1, 4, 8, 1], Int32Array.of(1, 1, 4, 8), new Float64Array(4),
  { length: 4, 0: 1, 1: 1, 2: 4, 3: 8 }, [[1], [1], [4], [8]], new Array(4),
];
const BAD_VALUES: unknown[] = [
  null, NaN, Infinity, -Infinity, -1, 0.5, 1.5, 2 ** 31, 2 ** 32 + 16, 2 ** 53, 1n, '1', '', true, {}, [], [1], () => 1,
  Symbol('x'), new Int32Array(1), 1e39, -0,
];

/** For each option, values of the wrong type or range (plus valid extremes, marked). */
const OPTION_VALUES: Record<string, { bad: unknown[]; ok?: unknown[] }> = {
  causal: { bad: [null, 0, 1, 'true', {}, 1n] },
  scale: { bad: [0, -1, NaN, Infinity, 1e39, 1e-50, '1', 1n, null, true], ok: [1e-30, 1e-3, 5] },
  backend: { bad: [null, 'tpu', 'CPU', 1, {}, true, 'gpu'] },
  device: { bad: [null, {}, 'gpu', 1, { queue: {} }] },
  output: { bad: [null, 'disk', 1, 'gpu', 'GPU'] },
  outputDtype: { bad: [null, 'float64', 'f16', 'half', 'FLOAT16', 16, {}, true], ok: ['float32', 'float16'] },
  // Arrays of the right kind but the wrong length are refused too (test/out.test.ts); these
  // are wrong for any call with float32 output.
  out: { bad: [null, 1, 'out', {}, [0, 1], new Float64Array(4), new Int32Array(4), new Uint16Array(4), 1n, new Float32Array(0)] },
  onProgress: { bad: [null, 1, 'f', {}, true] },
  profile: { bad: [null, 1, 'yes', {}], ok: [true, false] },
  blockSize: { bad: [0, -1, 1.5, NaN, Infinity, 2 ** 31, 2 ** 32 + 16, 65537, 1n, '16', null, [16]], ok: [1, 65536] },
  sampleSize: { bad: [-1, 1.5, NaN, 2 ** 28 + 1, 2 ** 31, 65537, 1n, '8', null], ok: [0, 65536] },
  lshNumProjs: { bad: [0, 17, -1, 1.5, NaN, 1n, '7', null, 2 ** 32 + 7], ok: [1, 16] },
  minSeqLen: { bad: [-1, 1.5, NaN, Infinity, 1n, '0', null, 2 ** 53], ok: [0, Number.MAX_SAFE_INTEGER] },
  mode: { bad: [null, 'exact', 'Reference', 1, {}, true] },
  seed: { bad: [-1, 1.5, NaN, 2 ** 32, 1n, '0', null], ok: [0, 0xffffffff] },
  projections: { bad: [null, [1, 2], new Float64Array(8), new Float32Array(3), 'p', {}, 1] },
  sampler: { bad: [null, 1, 'f', {}, new Int32Array(8)] },
  threads: { bad: [0, -1, 1.5, NaN, Infinity, 257, 2 ** 31, 2 ** 32 + 2, 1n, '2', null, true], ok: [1, 2, 3, 256] },
  signal: { bad: [null, {}, 'abort', 1, { aborted: 1 }, new AbortController()], ok: [new AbortController().signal] },
  worker: { bad: [null, 1, 'yes', {}], ok: [true, false] },
  tolerance: { bad: [-1, -Infinity, NaN, -1e-9, 1n, '0.1', null, [0.1], {}, true], ok: [0, 1e-300, 0.1, Infinity] },
  checkRows: { bad: [0, 7, 4097, -1, 1.5, NaN, Infinity, 2 ** 31, 1n, '64', null], ok: [8, 4096] },
};
const EXACT_KEYS = new Set(['causal', 'scale', 'backend', 'device', 'output', 'outputDtype', 'out', 'onProgress', 'profile', 'threads', 'signal', 'worker']);

const userError = new Error('the caller\'s own error');

/** Cases built from one draw of the generator; (seed, index) always gives the same case. */
export function makeCase(seed: number, index: number): Case {
  const rng = new Xoshiro128((seed * 0x9e3779b1 + index) >>> 0);
  const p = problem(rng);
  const { q, k, v } = tensors(p, index * 3 + 1);
  const fn = rng.nextBelow(3) === 0 ? 'exact' : 'hyper';
  const hyper = hyperOptions(rng, p);
  const options = fn === 'exact' ? { backend, causal: p.causal, ...(hyper.options.scale ? { scale: hyper.options.scale } : {}) } : hyper.options;
  const exact = fn === 'exact' || hyper.exact;
  const valid: Case = {
    label: `valid ${fn} ${JSON.stringify(p)} ${JSON.stringify(options)}`, fn, q, k, v, options, problem: p, exact,
    // Causal HyperAttention with a small minSeqLen may be refused (INVALID_OPTION) when the
    // recursion would leave sub-heads that are mostly padding.
    expect: fn === 'hyper' && p.causal && !exact ? 'either' : 'result', codes: ['INVALID_OPTION'],
  };
  const kind = rng.nextBelow(14);
  switch (kind) {
    case 0:
    case 1:
      return valid;
    case 2: { // one dimension of one tensor replaced by something that is not a positive integer
      const which = pick(rng, ['q', 'k', 'v'] as const);
      const t = valid[which] as { data: Float32Array; shape: unknown[] };
      const shape = [...t.shape];
      const bad = pick(rng, BAD_DIMS);
      shape[rng.nextBelow(4)] = bad;
      return { ...valid, label: `bad dim ${String(bad)} in ${which}.shape`, [which]: { data: t.data, shape }, expect: 'typed', codes: ['INVALID_SHAPE'] };
    }
    case 3: { // a whole shape, tensor or data of the wrong kind
      const which = pick(rng, ['q', 'k', 'v'] as const);
      const t = valid[which] as { data: Float32Array; shape: number[] };
      const variant = rng.nextBelow(4);
      if (variant === 0) {
        const shape = pick(rng, BAD_SHAPES);
        return { ...valid, label: `bad shape in ${which}`, [which]: { data: t.data, shape }, expect: 'typed', codes: ['INVALID_SHAPE'] };
      }
      if (variant === 1) {
        const bad = pick(rng, [null, undefined, 1, 'q', [], t.data, { shape: t.shape }, { data: t.data }, new Float32Array(4)]);
        return { ...valid, label: `bad tensor ${which}`, [which]: bad, expect: 'typed', codes: ['INVALID_SHAPE'] };
      }
      if (variant === 2) {
        const data = pick(rng, [
          null, Array.from(t.data), new Float64Array(t.data), new Float32Array(t.data.length + 1),
          t.data.subarray(1), new Int32Array(t.data.length), new DataView(t.data.buffer), 'data',
        ]);
        return { ...valid, label: `bad data in ${which}`, [which]: { data, shape: t.shape }, expect: 'typed', codes: ['INVALID_SHAPE'] };
      }
      const data = new Float32Array(t.data);
      structuredClone(data.buffer, { transfer: [data.buffer] });
      return { ...valid, label: `detached ${which}.data`, [which]: { data, shape: t.shape }, expect: 'typed', codes: ['INVALID_SHAPE'] };
    }
    case 4: { // tensors that disagree: batch, heads, lengths, head dims, causal nq > nk, d > 512
      const variant = rng.nextBelow(6);
      const qs = [p.B, p.H, p.nq, p.d];
      const ks = [p.B, p.Hkv, p.nk, p.d];
      const vs = [p.B, p.Hkv, p.nk, p.dv];
      let causal = p.causal;
      const labels = ['batch differs', 'heads not a multiple', 'q/k dims differ', 'k/v lengths differ', 'causal nq > nk', 'head dim > 512'];
      if (variant === 0) qs[0] = p.B + 1;
      if (variant === 1) { qs[1] = 3; ks[1] = 2; vs[1] = 2; }
      if (variant === 2) qs[3] = p.d + 1;
      if (variant === 3) vs[2] = p.nk + 1;
      if (variant === 4) { causal = true; qs[2] = p.nk + 1; }
      if (variant === 5) { const D = 513 + rng.nextBelow(100); qs[3] = D; ks[3] = D; vs[3] = pick(rng, [D, p.dv]); }
      const seed = index * 3 + 1;
      return {
        label: labels[variant], fn, q: tensor(qs, seed), k: tensor(ks, seed + 1), v: tensor(vs, seed + 2),
        options: { ...(options as object), causal }, expect: 'typed', codes: variant === 5 ? ['UNSUPPORTED_HEAD_DIM'] : ['INVALID_SHAPE'],
      };
    }
    case 5: { // non-finite or overflowing values
      const which = pick(rng, ['q', 'k', 'v'] as const);
      const t = valid[which] as { data: Float32Array; shape: number[] };
      const data = new Float32Array(t.data);
      const variant = rng.nextBelow(3);
      if (variant === 0) {
        data[rng.nextBelow(data.length)] = pick(rng, [NaN, Infinity, -Infinity]);
        return { ...valid, label: `non-finite in ${which}`, [which]: { data, shape: t.shape }, expect: 'typed', codes: ['NON_FINITE_INPUT'] };
      }
      if (variant === 1) {
        // q and k both scaled so that q·k overflows float32 (all NaN before the check existed)
        const big = (x: { data: Float32Array; shape: number[] }) => ({ data: x.data.map((e) => e * 1e20), shape: x.shape });
        // (a small scale with d 1 and one small key stays in range: then the result must be right)
        return {
          ...valid, label: 'q and k scaled by 1e20', q: big(valid.q as never), k: big(valid.k as never), expect: 'either',
          codes: ['INPUT_OVERFLOW', 'INVALID_OPTION'],
        };
      }
      data.fill(3e38);
      // v always overflows its row sums; q or k only when d * max|q| * max|k| * scale does
      // (with d 1 and one small key it does not, and the result must then be right).
      return {
        ...valid, label: `${which} filled with 3e38`, [which]: { data, shape: t.shape }, expect: which === 'v' ? 'typed' : 'either',
        codes: ['INPUT_OVERFLOW', 'INVALID_OPTION'],
      };
    }
    case 6:
    case 7: { // one option with a value of the wrong type or range (or a valid extreme)
      const key = pick(rng, Object.keys(OPTION_VALUES).filter((name) => fn === 'hyper' || EXACT_KEYS.has(name) || rng.nextBelow(4) === 0));
      const allowed = fn === 'hyper' || EXACT_KEYS.has(key);
      const { bad, ok = [] } = OPTION_VALUES[key];
      const useOk = allowed && ok.length > 0 && rng.nextBelow(4) === 0;
      const extra = BAD_VALUES.filter((x) => rng.nextBelow(8) === 0 && !(key === 'causal' && typeof x === 'boolean'));
      const value = useOk ? pick(rng, ok) : pick(rng, [...bad, ...extra]);
      const o = { ...(options as object), [key]: value };
      const verdict = allowed ? validity(key, value) : 'invalid';
      if (verdict === 'invalid') {
        return { ...valid, label: `bad option ${key}=${describe(value)}`, options: o, expect: 'typed', codes: ['INVALID_OPTION'] };
      }
      if (verdict === 'maybe') {
        return { ...valid, label: `odd option ${key}=${describe(value)}`, options: o, expect: 'either', codes: ['INVALID_OPTION', 'INVALID_SAMPLER_OUTPUT'] };
      }
      // A valid value: extremes, or a pick of the bad list that happens to be valid here.
      const hyperNow = { ...hyper.options, [key]: value };
      const m = hyperNow.minSeqLen as number;
      const exactNow = fn === 'exact' || (p.causal ? p.nk <= m : p.nq < m);
      return {
        ...valid, label: `ok option ${key}=${describe(value)}`, options: o, exact: exactNow,
        expect: fn === 'hyper' && p.causal && !exactNow ? 'either' : 'result', codes: ['INVALID_OPTION'],
      };
    }
    case 8: { // the options argument itself, or an unknown key
      const bad = pick(rng, [null, 1, 'cpu', true, 1n, { blocksize: 16 }, { backend: 'cpu', extra: 1 }, { Causal: true }]);
      return { ...valid, label: `options ${describe(bad)}`, options: bad, expect: 'typed', codes: ['INVALID_OPTION'] };
    }
    case 9: { // samplers that misbehave (the plan below always draws)
      const P: Problem = { B: p.B, H: p.H, Hkv: p.Hkv, nq: 64, nk: 64, d: p.d, dv: p.dv, causal: false };
      const t = tensors(P, index * 3 + 1);
      const o = { backend, minSeqLen: 0, blockSize: 16, sampleSize: 8 };
      const variant = rng.nextBelow(9);
      const samplers: [string, (r: { batch: number; heads: number; count: number; high: number }) => unknown][] = [
        ['a plain Array', (r) => Array.from({ length: r.batch * r.heads * r.count }, () => 0)],
        ['a Float32Array', (r) => new Float32Array(r.batch * r.heads * r.count)],
        ['null', () => null],
        ['a length one short', (r) => new Int32Array(r.batch * r.heads * r.count - 1)],
        ['a value -1', (r) => new Int32Array(r.batch * r.heads * r.count).fill(-1)],
        ['a value == high', (r) => new Int32Array(r.batch * r.heads * r.count).fill(r.high)],
        ['a detached Int32Array', (r) => {
          const s = new Int32Array(r.batch * r.heads * r.count);
          structuredClone(s.buffer, { transfer: [s.buffer] });
          return s;
        }],
        ['a BigInt64Array', (r) => new BigInt64Array(r.batch * r.heads * r.count)],
      ];
      if (variant === 8) {
        return { label: 'sampler throws its own error', fn: 'hyper', ...t, options: { ...o, sampler: () => { throw userError; } }, expect: 'passthrough', thrown: userError };
      }
      const [name, sampler] = samplers[variant];
      return { label: `sampler returns ${name}`, fn: 'hyper', ...t, options: { ...o, sampler }, expect: 'typed', codes: ['INVALID_SAMPLER_OUTPUT'] };
    }
    case 10: { // inputs changed after the call returned, before it ran: NaN written, or detached
      const which = pick(rng, ['q', 'k', 'v'] as const);
      const t = valid[which] as { data: Float32Array; shape: number[] };
      const data = new Float32Array(t.data);
      const detach = rng.nextBelow(2) === 0;
      const after = detach
        ? () => { structuredClone(data.buffer, { transfer: [data.buffer] }); }
        : () => { data.fill(NaN); };
      return {
        ...valid, label: `${which} ${detach ? 'detached' : 'filled with NaN'} after the call`, [which]: { data, shape: t.shape }, after,
        expect: 'typed', codes: detach ? ['INVALID_SHAPE'] : ['NON_FINITE_INPUT'],
        // A plan that refuses the options (causal, small minSeqLen) fails before reading.
        ...(valid.expect === 'either' ? { expect: 'typed', codes: [detach ? 'INVALID_SHAPE' : 'NON_FINITE_INPUT', 'INVALID_OPTION'] } : {}),
      };
    }
    case 11: { // float16: inputs as tagged bits, out as float16, and their errors
      const which = pick(rng, ['q', 'k', 'v'] as const);
      const t = valid[which] as { data: Float32Array; shape: number[] };
      const bits = referenceEncodeAll(t.data);
      const outputDtype = rng.nextBelow(2) === 0 ? { outputDtype: 'float16' } : {};
      switch (rng.nextBelow(5)) {
        case 0:
        case 1: { // one, two or all three inputs in float16, tagged one way or another, the reference on their values
          const chosen = (['q', 'k', 'v'] as const).filter((name) => name === which || rng.nextBelow(2) === 0);
          const half: Record<string, unknown> = {};
          const reference: Record<string, { data: Float32Array }> = {};
          for (const name of ['q', 'k', 'v'] as const) {
            const x = valid[name] as { data: Float32Array; shape: number[] };
            if (!chosen.includes(name)) {
              reference[name] = x;
              continue;
            }
            const b = referenceEncodeAll(x.data);
            half[name] = rng.nextBelow(2) === 0 ? { data: b, shape: x.shape, dtype: 'float16' } : { data: b, dims: x.shape, type: 'float16' };
            reference[name] = { data: referenceDecodeAll(b) };
          }
          return {
            ...valid, label: `float16 ${chosen.join(', ')} ${JSON.stringify(outputDtype)}`, ...half, options: { ...(options as object), ...outputDtype },
            reference: reference as Case['reference'],
          };
        }
        case 2: // a Uint16Array without the float16 tag
          return { ...valid, label: `untagged Uint16Array ${which}`, [which]: { data: bits, shape: t.shape }, expect: 'typed', codes: ['INVALID_SHAPE'] };
        case 3: { // Infinity or NaN in float16 bits
          bits[rng.nextBelow(bits.length)] = pick(rng, [0x7c00, 0xfc00, 0x7e00, 0xfe01, 0x7c01]);
          return {
            ...valid, label: `float16 non-finite in ${which}`, [which]: { data: bits, shape: t.shape, dtype: 'float16' }, expect: 'typed', codes: ['NON_FINITE_INPUT'],
          };
        }
        default: { // v beyond float16's range with outputDtype 'float16': exact attention's out is v's mean
          const v = valid.v as { data: Float32Array; shape: number[] };
          return {
            ...valid, label: "v at 1e6 with outputDtype 'float16'", v: { data: new Float32Array(v.data.length).fill(1e6), shape: v.shape },
            options: { ...(options as object), outputDtype: 'float16' }, expect: valid.exact ? 'typed' : 'either', codes: ['INPUT_OVERFLOW', 'INVALID_OPTION'],
          };
        }
      }
    }
    case 12: { // inputs and options that say one thing when checked and another later
      const which = pick(rng, ['q', 'k', 'v'] as const);
      const t = valid[which] as { data: Float32Array; shape: number[] };
      const same = { ...valid, reference: { q: valid.q, k: valid.k, v: valid.v } as Case['reference'] };
      switch (rng.nextBelow(8)) {
        case 0: { // a resizable buffer shrunk once the call returned: copied when the call was made
          const Resizable = ArrayBuffer as unknown as new (n: number, o: { maxByteLength: number }) => ArrayBuffer & { resize(n: number): void };
          const buffer = new Resizable(t.data.byteLength, { maxByteLength: t.data.byteLength });
          const data = new Float32Array(buffer);
          data.set(t.data);
          return { ...same, label: `${which} on a resizable buffer shrunk after the call`, [which]: { data, shape: t.shape }, after: () => buffer.resize(0) };
        }
        case 1: { // data and shape getters that change after their first read
          let reads = 0;
          const tricky = { get data() { return ++reads > 1 ? new Float32Array(16) : t.data; }, get shape() { return reads > 1 ? [1, 1, 4, 4] : t.shape; } };
          return { ...same, label: `${which} with getters that change`, [which]: tricky };
        }
        case 2: // a transparent Proxy of the tensor, and of its shape: read like the objects themselves
          return { ...same, label: `${which} and its shape behind Proxies`, [which]: new Proxy({ data: t.data, shape: new Proxy(t.shape, {}) }, {}) };
        case 3: // a Proxy of the typed array: its methods throw on it
          return { ...valid, label: `${which}.data a Proxy`, [which]: { data: new Proxy(t.data, {}), shape: t.shape }, expect: 'typed', codes: ['INVALID_SHAPE'] };
        case 4: { // v overwritten with magnitudes that overflow once the call returned
          const data = new Float32Array((valid.v as { data: Float32Array }).data);
          return {
            ...valid, label: 'v filled with 3e38 after the call', v: { data, shape: (valid.v as { shape: number[] }).shape }, after: () => data.fill(3e38),
            expect: 'typed', codes: ['INPUT_OVERFLOW', 'INVALID_OPTION'],
          };
        }
        default: { // options that are not plain objects of known keys
          const hidden = Object.defineProperty({ ...(options as object) }, 'Causal', { value: true, enumerable: false });
          const bad = pick(rng, [[], new Date(0), Object.create(options as object), hidden, new Map()]);
          return { ...valid, label: `options ${Object.prototype.toString.call(bad)}`, options: bad, expect: 'typed', codes: ['INVALID_OPTION'] };
        }
      }
    }
    case 13: { // look-alike signals; sampler arrays reused, changed later or wrapped; projections changed later
      const P: Problem = { B: p.B, H: p.H, Hkv: p.Hkv, nq: 64, nk: 64, d: p.d, dv: p.dv, causal: false };
      const t = tensors(P, index * 3 + 1);
      const o = { backend, minSeqLen: 0, blockSize: 16, sampleSize: 8 };
      const fine = { label: '', fn: 'hyper' as const, ...t, problem: P, expect: 'result' as const };
      const draws = (r: { batch: number; heads: number; count: number; high: number }) =>
        Int32Array.from({ length: r.batch * r.heads * r.count }, (_, i) => (i * 7919) % r.high);
      switch (rng.nextBelow(6)) {
        case 0: {
          const signal = pick(rng, [{ aborted: false, addEventListener() {} }, { aborted: false, removeEventListener() {} }]);
          return { ...fine, label: 'a signal look-alike missing a method', options: { ...o, signal }, expect: 'typed', codes: ['INVALID_OPTION'] };
        }
        case 1: {
          const signal = { aborted: false, reason: undefined, addEventListener() {}, removeEventListener() {} };
          return { ...fine, label: 'a signal look-alike with every method', options: { ...o, signal } };
        }
        case 2: { // one array refilled for every draw
          const reused = new Int32Array(1 << 16);
          const sampler = (r: { batch: number; heads: number; count: number; high: number }) => {
            const s = draws(r);
            reused.set(s);
            return reused.subarray(0, s.length);
          };
          return { ...fine, label: 'a sampler that refills one array', options: { ...o, sampler } };
        }
        case 3: { // arrays changed to out-of-range values right after they were returned
          const sampler = (r: { batch: number; heads: number; count: number; high: number }) => {
            const s = draws(r);
            queueMicrotask(() => s.fill(2 ** 30));
            return s;
          };
          return { ...fine, label: 'a sampler whose arrays change after it returned them', options: { ...o, sampler } };
        }
        case 4: {
          const sampler = (r: { batch: number; heads: number; count: number; high: number }) => new Proxy(draws(r), {});
          return { ...fine, label: 'a sampler that returns a Proxy', options: { ...o, sampler }, expect: 'typed', codes: ['INVALID_SAMPLER_OUTPUT'] };
        }
        default: { // projections filled with NaN after the call returned: copied when it was made
          const projections = Float32Array.from({ length: P.d * 7 }, (_, i) => Math.sin(i + 1));
          return { ...fine, label: 'projections changed after the call', options: { ...o, mode: 'fixed', projections }, after: () => projections.fill(NaN) };
        }
      }
    }
    default: { // onProgress that throws the caller's own error; or decoding shapes
      if (rng.nextBelow(2) === 0) {
        return {
          ...valid, label: 'onProgress throws its own error', options: { ...(options as object), onProgress: () => { throw userError; } },
          expect: 'passthrough', thrown: userError, codes: valid.expect === 'either' ? ['INVALID_OPTION'] : undefined,
        };
      }
      const nq = pick(rng, [1, 2, 16]);
      const nk = pick(rng, [100, 512, 1000, 3000]);
      const P: Problem = { B: 1, H: p.H, Hkv: p.Hkv, nq, nk, d: p.d, dv: p.dv, causal: false };
      const o = { backend, minSeqLen: 0, blockSize: pick(rng, [1, 4, 16, 64]) };
      return {
        label: `decoding nq=${nq} nk=${nk} ${JSON.stringify(o)}`, fn: 'hyper', ...tensors(P, index * 3 + 1), options: o, problem: P,
        expect: 'result',
      };
    }
  }
}

/**
 * Whether `value` is valid for option `key` (some picks of the bad lists are valid), or
 * 'maybe': a function as sampler, a Float32Array as projections, right only by chance.
 */
function validity(key: string, value: unknown): 'valid' | 'invalid' | 'maybe' {
  const isInt = (lo: number, hi: number) => typeof value === 'number' && Number.isInteger(value) && value >= lo && value <= hi;
  const valid = (() => {
    switch (key) {
      case 'scale': return typeof value === 'number' && Math.fround(value) > 0 && Number.isFinite(Math.fround(value));
      case 'blockSize': return isInt(1, 65536);
      case 'sampleSize': return isInt(0, 65536);
      case 'lshNumProjs': return isInt(1, 16);
      case 'minSeqLen': return isInt(0, Number.MAX_SAFE_INTEGER);
      case 'seed': return isInt(0, 0xffffffff);
      case 'profile': return typeof value === 'boolean';
      case 'worker': return typeof value === 'boolean';
      case 'threads': return isInt(1, 256);
      case 'signal': return value instanceof AbortSignal;
      case 'onProgress': return typeof value === 'function';
      case 'tolerance': return typeof value === 'number' && value >= 0;
      case 'checkRows': return isInt(8, 4096);
      case 'outputDtype': return value === 'float32' || value === 'float16';
      default: return false;
    }
  })();
  if (valid) return 'valid';
  if ((key === 'sampler' && typeof value === 'function') || (key === 'projections' && value instanceof Float32Array)) return 'maybe';
  return 'invalid';
}

function describe(x: unknown): string {
  try {
    return typeof x === 'bigint' ? `${x}n` : typeof x === 'symbol' ? 'symbol' : typeof x === 'function' ? 'function' : JSON.stringify(x) ?? String(x);
  } catch {
    return Object.prototype.toString.call(x);
  }
}

/** Fixed cases of the issue (#13): its decoding shapes (defect 1), and a result too large. */
export function fixedCases(): Case[] {
  const make = (nq: number, nk: number, d: number, o: Record<string, unknown>): Case => {
    const P: Problem = { B: 1, H: 1, Hkv: 1, nq, nk, d, dv: d, causal: false };
    return {
      label: `decoding nq=${nq} nk=${nk} ${JSON.stringify(o)}`, fn: 'hyper', ...tensors(P, nq * 7 + nk), options: { backend, ...o },
      problem: P, expect: 'result',
    };
  };
  // A result of 2^33 values: too large for a Float32Array (a RangeError before #13).
  const tall = { data: new Float32Array(64 * 2 ** 18), shape: [1, 64, 2 ** 18, 1] };
  const wide = tensor([1, 1, 16, 512], 5);
  const tooBig: Case = {
    label: 'out of 2^33 values', fn: 'hyper', q: tall, k: tensor([1, 1, 16, 1], 6), v: wide, options: { backend },
    expect: 'typed', codes: ['OUT_OF_MEMORY'],
  };
  return [make(1, 70000, 16, { minSeqLen: 0 }), make(16, 512, 16, { minSeqLen: 0, blockSize: 16 }), tooBig];
}

export type Outcome = { kind: 'correct' | 'typed' | 'failure'; why?: string };

function finite(a: Float32Array): boolean {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return false;
  return true;
}

/** out's values: a Float32Array, or with outputDtype 'float16' float16 (bits in a Uint16Array, or a Float16Array) decoded. */
function outValues(c: Case, out: { data?: unknown; dtype?: unknown } | undefined): Float32Array | string {
  const half = (c.options as { outputDtype?: unknown } | undefined)?.outputDtype === 'float16';
  const data = out?.data;
  if (!half) return data instanceof Float32Array ? data : 'out is not a Float32Array';
  const Float16 = (globalThis as { Float16Array?: new () => ArrayBufferView }).Float16Array;
  if (out?.dtype !== 'float16' || !(Float16 ? data instanceof Float16 : data instanceof Uint16Array)) return "out of outputDtype 'float16' is not float16";
  const view = data as Uint16Array;
  return referenceDecodeAll(new Uint16Array(view.buffer, view.byteOffset, view.length));
}

function checkResult(c: Case, r: unknown): string | undefined {
  const result = r as { out?: { data?: unknown; shape?: unknown; dtype?: unknown }; lse?: { data?: unknown; shape?: unknown } };
  const out = outValues(c, result?.out);
  if (typeof out === 'string') return out;
  if (!(result?.lse?.data instanceof Float32Array)) return 'lse is not a Float32Array';
  const lse = result.lse.data;
  const p = c.problem;
  if (!p) return undefined;
  const outShape = [p.B, p.H, p.nq, p.dv];
  if (JSON.stringify(result.out?.shape) !== JSON.stringify(outShape) || out.length !== p.B * p.H * p.nq * p.dv) return `out shape ${JSON.stringify(result.out?.shape)}, expected ${JSON.stringify(outShape)}`;
  if (lse.length !== p.B * p.H * p.nq) return `lse length ${lse.length}`;
  if (!finite(out) || !finite(lse)) return 'non-finite values in the result';
  if (!c.exact) return undefined;
  const { q, k, v } = c.reference ?? (c as unknown as Record<'q' | 'k' | 'v', { data: Float32Array }>);
  const scale = (c.options as { scale?: number }).scale;
  const ref = referenceAttention({ ...p, causalOffset: p.nk - p.nq, q: q.data, k: k.data, v: v.data, scale });
  const maxAbs = (a: Float32Array) => a.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
  // float32 against float64: a dot product's rounding is relative to its terms' size, which
  // inputs near float32's range (3e38) make far larger than the score itself.
  const terms = (scale ?? 1 / Math.sqrt(p.d)) * p.d * maxAbs(q.data) * maxAbs(k.data);
  const vmax = Math.max(1, maxAbs(v.data));
  let outErr = 0;
  let lseErr = 0;
  for (let i = 0; i < out.length; i++) outErr = Math.max(outErr, Math.abs(out[i] - ref.out[i]) / vmax);
  // A dot product of d terms rounds by up to about d · eps · (the sum of its terms' sizes).
  for (let i = 0; i < lse.length; i++) lseErr = Math.max(lseErr, Math.abs(lse[i] - ref.lse[i]) / (Math.max(1, Math.abs(ref.lse[i])) + 1e4 * p.d * terms * 2 ** -24));
  // Inputs N(0, 1), scores up to a few hundred: these bounds are loose enough for rounding
  // (a float16 out's included: at most 2^-11 of |out| <= max|v|) and far below any real
  // defect (a wrong key or row moves the result by O(1)).
  if (!(outErr <= 1e-3) || !(lseErr <= 1e-4)) return `differs from the reference: max |out err| / max|v| ${outErr}, max relative lse err ${lseErr}`;
  return undefined;
}

export async function runCase(c: Case): Promise<Outcome> {
  const call = c.fn === 'hyper' ? hyperAttention : exactAttention;
  let promise: Promise<unknown>;
  try {
    promise = (call as (q: unknown, k: unknown, v: unknown, o: unknown) => Promise<unknown>)(c.q, c.k, c.v, c.options);
  } catch (error) {
    return { kind: 'failure', why: `synchronous throw: ${String(error)}` };
  }
  if (!(promise instanceof Promise)) return { kind: 'failure', why: 'did not return a Promise' };
  c.after?.();
  const hang = lateAfter(LIMIT_MS);
  const start = performance.now();
  let settled: { ok: true; value: unknown } | { ok: false; error: unknown } | 'late';
  try {
    settled = await Promise.race([promise.then((value) => ({ ok: true as const, value }), (error: unknown) => ({ ok: false as const, error })), hang.promise]);
  } finally {
    hang.cancel();
  }
  // A kernel that spins blocks the event loop, so the timer cannot win: time it instead
  // (the pace measured only for a call that took longer than the idle limit).
  const took = performance.now() - start;
  if (settled === 'late' || (took > LIMIT_MS && took > scaled(LIMIT_MS))) {
    return { kind: 'failure', why: `no answer within ${LIMIT_MS} ms times this machine's pace (${took.toFixed(0)} ms)` };
  }
  if (!settled.ok) {
    const error = settled.error;
    if (c.expect === 'passthrough' && error === c.thrown) return { kind: 'correct' };
    if (c.expect === 'passthrough' && !(error instanceof HyperAttentionError && c.codes?.includes(error.code))) {
      return { kind: 'failure', why: `expected the caller's own error to pass through, got ${String(error)}` };
    }
    if (!(error instanceof HyperAttentionError)) return { kind: 'failure', why: `untyped ${(error as Error)?.constructor?.name}: ${String((error as Error)?.message ?? error)}` };
    if (!CODES.has(error.code)) return { kind: 'failure', why: `unknown code ${error.code}` };
    if (c.expect === 'result') return { kind: 'failure', why: `rejected a valid call: ${error.code}: ${error.message}` };
    if (c.codes && !c.codes.includes(error.code)) return { kind: 'failure', why: `expected ${c.codes.join(' or ')}, got ${error.code}: ${error.message}` };
    // A message says what was given in a few words: never a dumped array nor a bare object.
    if (error.message.length > 2000) return { kind: 'failure', why: `a message of ${error.message.length} characters` };
    if (error.message.includes('[object ')) return { kind: 'failure', why: `a message that prints an object: ${error.message}` };
    return { kind: 'typed' };
  }
  if (c.expect === 'typed' || c.expect === 'passthrough') return { kind: 'failure', why: 'accepted a bad call' };
  const wrong = checkResult(c, settled.value);

  return wrong ? { kind: 'failure', why: wrong } : { kind: 'correct' };
}

