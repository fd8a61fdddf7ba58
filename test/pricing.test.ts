// The scheduler's pricing of the accurate plan (the default mode) against what a traced
// call runs, deterministically (no timings): the cost model's op calls per cost class and
// device are the backend calls the call makes, its transferred bytes and hash and sort
// work are theirs, and every op the trace records is priced. And the hybrid's heavy
// columns (chosen on the GPU) are priced and synced as GPU work.
import { suite } from './suite.ts';
import * as assert from 'uvu/assert';
import { createCpuBackend, type CpuBackend } from '../src/cpu/backend.ts';
import { headSlots } from '../src/context.ts';
import { runVerified } from '../src/verified.ts';
import {
  COST_CLASS, OP_NAMES, placementOf, type CostClass, type HashTask, type OpName, type OpTrace, type SortTask,
} from '../src/ops.ts';
import { resolveHyperOptions, type HyperOptions } from '../src/options.ts';
import { buildPlan, planParams, type AccuratePlan, type Plan } from '../src/plan.ts';
import { workOf, type Explanation, type Split } from '../src/scheduler/cost.ts';
import { callProfile } from '../src/scheduler/index.ts';
import { attentionShape, type AttentionShape, type Tensor } from '../src/tensor.ts';
import { randomTensor } from './util.ts';

const test = suite('pricing');

/** What a call made of a backend, per cost class: calls, and units where they are counted exactly. */
interface Spied {
  calls: Map<CostClass, number>;
  units: Map<CostClass, number>;
  /** ops in the order they were called, with 'sync' where the caller synced */
  order: string[];
}

/**
 * Counts the backend's op calls per cost class, and the units of the classes whose units
 * are a plain count (bytes moved, hash products, sorted rows) as the cost model counts them.
 */
function spy(backend: CpuBackend): Spied {
  const spied: Spied = { calls: new Map(), units: new Map(), order: [] };
  const add = (map: Map<CostClass, number>, cost: CostClass, n: number) => map.set(cost, (map.get(cost) ?? 0) + n);
  const units: Partial<Record<OpName, (t: never, ...rest: never[]) => number>> = {
    upload: (_buf: unknown, data: Float32Array | Int32Array) => data.byteLength,
    download: (_buf: unknown, _offset: number, length: number) => length * 4,
    hash: (t: HashTask) => t.rows * t.d * t.r,
    sort: (t: SortTask) => t.count + t.pads,
    buckets: (t: { count: number }) => t.count,
    heavy: (t: { nk: number }) => t.nk,
  };
  const methods = backend as unknown as Record<string, (...args: unknown[]) => unknown>;
  for (const op of OP_NAMES) {
    const original = methods[op].bind(backend);
    methods[op] = (...args: unknown[]) => {
      const cost = COST_CLASS[op];
      add(spied.calls, cost, 1);
      const count = units[op] as ((...a: unknown[]) => number) | undefined;
      if (count) add(spied.units, cost, count(...args));
      spied.order.push(op);
      return original(...args);
    };
  }
  return spied;
}

/** A call with the options, its plan (accurate, as the default mode plans it), and its inputs. */
function call(dims: { B: number; H: number; Hkv: number; n: number; d: number }, options: HyperOptions, seed: number) {
  const { B, H, Hkv, n, d } = dims;
  const q = randomTensor([B, H, n, d], seed);
  const k = randomTensor([B, Hkv, n, d], seed + 1);
  const v = randomTensor([B, Hkv, n, d], seed + 2);
  const o = resolveHyperOptions(options);
  const shape = attentionShape(q, k, v, o.causal);
  const params = planParams(shape, o, o);
  const plan = buildPlan(params);
  assert.is(plan.kind, 'accurate', 'the default mode plans the accurate mode');
  return { q, k, v, o, shape, params, plan: plan as AccuratePlan & Plan };
}

async function traced(backend: CpuBackend, c: ReturnType<typeof call>, q: Tensor = c.q): Promise<OpTrace[]> {
  const trace: OpTrace[] = [];
  await runVerified(backend, c.shape, c.o, q, c.k, c.v, trace, c.plan);
  return trace;
}

/** The cost model's steps of a call on a split, as plain records for comparison. */
function priced(shape: AttentionShape, c: ReturnType<typeof call>, split: Split) {
  return workOf(shape, c.params, c.plan, split);
}

// Shapes and options that take every part of the accurate plan, and its variants: no
// heavy columns (the sinks uploaded once), causal (windows behind the query, four rounds),
// grouped-query heads. The cutoff is 0 so that small calls plan the accurate mode. Every head
// is checked (exact attention at its check rows, one op a row when causal) and none moves
// up (tolerance 1e9), so the priced checks are the traced ones.
const CASES: { label: string; dims: { B: number; H: number; Hkv: number; n: number; d: number }; options: HyperOptions }[] = [
  { label: 'non-causal', dims: { B: 1, H: 2, Hkv: 2, n: 700, d: 32 }, options: { minSeqLen: 0, tolerance: 1e9 } },
  { label: 'causal, grouped heads, batch of 2', dims: { B: 2, H: 2, Hkv: 1, n: 600, d: 16 }, options: { minSeqLen: 0, causal: true, tolerance: 1e9 } },
  { label: 'no heavy columns', dims: { B: 1, H: 1, Hkv: 1, n: 500, d: 16 }, options: { minSeqLen: 0, heavyKeys: 0, tolerance: 1e9 } },
];

for (const [i, { label, dims, options }] of CASES.entries()) {
  test(`the accurate plan's priced calls and work are what a traced call runs (${label})`, async () => {
    const c = call(dims, options, 100 + 10 * i);
    const backend = await createCpuBackend();
    const spied = spy(backend);
    const trace = await traced(backend, c);
    const steps = priced(c.shape, c, 'cpu');
    assert.ok(steps.every((s) => s.device === 'cpu'), 'a CPU call prices everything on the CPU');
    assert.ok(trace.every((t) => t.device === 'cpu'), 'and traces everything there');
    // Every cost class the call used is priced, with its calls; nothing else is.
    const calls = Object.fromEntries(steps.map((s) => [s.op, s.calls]));
    assert.equal(calls, Object.fromEntries(spied.calls), 'calls per cost class');
    assert.equal(
      [...new Set(trace.map((t) => COST_CLASS[t.op]))].sort(), steps.map((s) => s.op).sort(), 'the trace covers the priced classes',
    );
    for (const [cost, units] of spied.units) {
      assert.is(steps.find((s) => s.op === cost)!.units, units, `${cost} units (${steps.find((s) => s.op === cost)!.unit})`);
    }
    for (const s of steps) assert.ok(s.units > 0, `${s.op}: some work`);
    // The parts of the plan each ran as often as it has them, once per head (rounds: per
    // round, and remainders: once per key-value head, whose query heads take them in one op).
    const heads = dims.B * dims.H;
    const ran = (op: OpName) => spied.order.filter((o) => o === op).length;
    assert.is(ran('columns'), heads);
    assert.is(ran('probe'), c.plan.heavyKeys > 0 ? heads : 0);
    assert.is(ran('heavy'), c.plan.heavyKeys > 0 ? heads : 0);
    assert.is(ran('window'), c.plan.window > 0 ? heads : 0);
    assert.is(ran('round'), c.plan.rounds * dims.B * dims.Hkv);
    assert.is(ran('samples'), c.plan.segments.length * heads);
    assert.is(ran('remainder'), c.plan.segments.length > 0 ? dims.B * dims.Hkv : 0);
  });
}

test('the hybrid places the heavy columns on the GPU and the bucket tags on the CPU, and prices them so', () => {
  const place = placementOf('hybrid');
  assert.is(place.heavy, 'webgpu');
  assert.is(place.buckets, 'cpu');
  assert.is(place.sort, 'cpu');
  const c = call(CASES[0].dims, CASES[0].options, 7);
  const heads = c.shape.B * c.shape.H;
  const sort = priced(c.shape, c, 'hybrid').filter((s) => s.op === 'sort');
  assert.equal(sort.map((s) => [s.device, s.calls]).sort(), [['cpu', 4 * c.plan.rounds * heads], ['webgpu', heads]]);
  for (const split of ['cpu', 'webgpu'] as const) {
    assert.ok(priced(c.shape, c, split).every((s) => s.device === split), `${split}: one device`);
  }
});

test('a traced hybrid call times the heavy columns as GPU work: synced, and priced on the GPU', async () => {
  // The CPU backend standing in for the hybrid: the executor places, syncs and traces by
  // the backend's name, and runs the same ops.
  const c = call(CASES[0].dims, CASES[0].options, 9);
  const backend = await createCpuBackend();
  const spied = spy(backend);
  Object.defineProperty(backend, 'name', { value: 'hybrid' });
  (backend as { sync?: () => Promise<void> }).sync = async () => {
    spied.order.push('sync');
  };
  const trace = await traced(backend, c);
  const heavy = trace.filter((t) => t.op === 'heavy');
  assert.is(heavy.length, c.shape.B * c.shape.H);
  assert.ok(heavy.every((t) => t.device === 'webgpu'), 'heavy traced on WebGPU');
  assert.ok(trace.filter((t) => t.op === 'sort' || t.op === 'buckets' || t.op === 'hash').every((t) => t.device === 'cpu'));
  // Each GPU op is synced before its time is taken; the CPU's are not.
  spied.order.forEach((op, i) => {
    if (op === 'sync') return;
    const synced = spied.order[i + 1] === 'sync';
    const gpu = placementOf('hybrid')[op as OpName] === 'webgpu';
    // (one run holds both downloads, and both uploads of the flags and columns)
    if (op !== 'upload' && op !== 'download') assert.is(synced, gpu, `${op} at ${i}: synced ${synced}`);
  });
  // Every traced step has a prediction of the hybrid's plan: heavy's is the GPU's sort step.
  const plan = { steps: priced(c.shape, c, 'hybrid').map((s) => ({ ...s, predictedMs: 1 })) } as unknown as Explanation;
  const profile = callProfile(plan, trace, 0);
  assert.ok(profile.steps.every((s) => s.predictedMs !== null), JSON.stringify(profile.steps.filter((s) => s.predictedMs === null)));
  assert.ok(profile.steps.some((s) => s.op === 'sort' && s.device === 'webgpu'), 'a GPU sort step (heavy)');
});


test("head slots: a key-value head's query heads run together where their buffers are small, one at a time for long prompts", () => {
  assert.is(headSlots(4, 2048, 128, 128), 4, 'a 2048-query chunk: the whole group');
  assert.is(headSlots(4, 16384, 128, 128), 3, '16k rows: as many as 128 MB of slots hold');
  assert.is(headSlots(4, 65536, 128, 128), 1, '64k rows: one at a time');
  assert.is(headSlots(1, 100, 16, 16), 1, 'no grouped heads');
});
