// The scheduler: plans from fixed profiles (a fast GPU, a slow GPU, a software adapter,
// CPU only) are deterministic and sensible at small and large n; calibration on this
// machine is sane; profiles round-trip, and malformed or foreign ones are rejected with a
// clear error (and, when saved, recalibrated); backend 'auto' runs what the plan says.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { lateAfter, scaled } from '../scripts/pace.mjs';
import { suite } from './suite.ts';
import * as assert from 'uvu/assert';
import {
  HyperAttentionError, calibrate, configureScheduler, exactAttention, explain, formatPlan, getProfile, hyperAttention, setProfile,
  type DeviceCosts, type Environment, type Profile,
} from '../src/index.ts';
import { COST_CLASSES } from '../src/ops.ts';
import { ACCURATE_DEFAULTS } from '../src/options.ts';
import { choose, SPLITS, type ChooseParams } from '../src/scheduler/cost.ts';
import { forgetProfiles } from '../src/scheduler/index.ts';
import { parseProfile } from '../src/scheduler/profile.ts';
import type { AttentionShape } from '../src/tensor.ts';
import { maxAbsError, randomTensor } from './util.ts';

const test = suite('scheduler');

const warnings: string[] = [];
configureScheduler({ persist: false, onWarning: (m) => warnings.push(m) });

/** Costs from throughputs in units per ms (flops, bytes, rows...) and fixed ms per call. */
function costs(rate: Partial<Record<(typeof COST_CLASSES)[number], [number, number]>>, fallback: [number, number]): DeviceCosts {
  return Object.fromEntries(COST_CLASSES.map((op) => {
    const [unitsPerMs, fixedMs] = rate[op] ?? fallback;
    return [op, { unitsPerMs, fixedMs }];
  })) as DeviceCosts;
}

// About this machine's WebAssembly: 27 GFLOP/s attention, memcpy at 20 GB/s.
const CPU = costs({
  upload: [2e7, 0], download: [2e7, 0], hash: [1e7, 0.05], sort: [7e5, 0], exact: [2.8e7, 0.01], block: [2.7e7, 0],
  sampled: [2.6e7, 0.02], merge: [1.2e6, 0.02],
}, [1e7, 0]);
// A discrete GPU: TFLOP/s attention, 20 us per dispatch, a millisecond per readback.
const FAST = costs({
  upload: [1e7, 0.05], download: [5e6, 1], hash: [5e8, 0.02], sort: [2e7, 0.06], exact: [2e9, 0.02], block: [1e9, 0.02],
  sampled: [5e8, 0.02], merge: [5e7, 0.02],
}, [1e8, 0.02]);
// A phone-class GPU: 50 GFLOP/s, slow dispatches and readbacks.
const SLOW = costs({
  upload: [2e6, 0.2], download: [1e6, 3], hash: [2e7, 0.2], sort: [5e5, 0.3], exact: [5e7, 0.15], block: [3e7, 0.15],
  sampled: [2e7, 0.15], merge: [5e6, 0.15],
}, [1e7, 0.15]);
// SwiftShader: a software adapter, 0.3 GFLOP/s.
const SOFTWARE = costs({
  upload: [1e7, 0.05], download: [5e6, 0.5], hash: [1e6, 0.3], sort: [1e5, 0.5], exact: [3e5, 0.5], block: [3e5, 0.5],
  sampled: [3e5, 0.5], merge: [1e6, 0.3],
}, [1e6, 0.3]);

const ADAPTER = { vendor: 'v', architecture: 'a', device: 'd', description: 'test', fallback: false, maxBufferBytes: 2 ** 32, maxBindingBytes: 2 ** 31 };

function profile(webgpu: DeviceCosts | null, fallback = false, adapter = ADAPTER): Profile {
  return {
    format: 'hyperattention-profile',
    version: 2,
    environment: { runtime: 'test', wasm: 'simd', cpu: 'test cpu x2', threads: 2, wasmThreads: 2, adapter: webgpu ? { ...adapter, fallback } : null },
    created: '2026-11-22T00:00:00.000Z',
    calibrationMs: 1000,
    devices: { cpu: CPU, webgpu },
  };
}

const PROFILES = {
  'cpu only': profile(null),
  'fast gpu': profile(FAST),
  'slow gpu': profile(SLOW),
  software: profile(SOFTWARE, true),
};

const shapeOf = (n: number, H = 1, d = 64): AttentionShape => ({ B: 1, H, Hkv: H, nq: n, nk: n, d, dv: d });
const params = (causal: boolean, p: Partial<ChooseParams> = {}): ChooseParams => ({
  causal, exact: false, blockSize: 256, sampleSize: 256, lshNumProjs: 7, mode: 'reference', splits: SPLITS, threads: 2, ...p,
});
const SIZES = [64, 1024, 4096, 16384, 65536];

test('the scheduler knows threads: CPU attention on 1 thread is predicted slower than on the 2 the profile measured, no faster beyond the cores', () => {
  const p = PROFILES['cpu only'];
  const at = (threads: number) => choose(shapeOf(16384, 2), params(false, { exact: true, splits: ['cpu'], threads }), p);
  const exact = (e: ReturnType<typeof at>) => e.steps.find((s) => s.op === 'exact')!.predictedMs;
  assert.ok(exact(at(1)) / exact(at(2)) > 1.9, 'one thread: half the throughput');
  assert.is(exact(at(8)), exact(at(2)), 'more threads than cores');
  assert.is(at(1).threads, 1);
  assert.match(at(2).reason, /cpu on 2 threads/);
});

test('plans are deterministic for a given profile, and pick the fastest allowed candidate', () => {
  for (const p of Object.values(PROFILES)) {
    for (const n of SIZES) {
      for (const causal of [false, true]) {
        const a = choose(shapeOf(n, 4), params(causal), p);
        assert.equal(choose(shapeOf(n, 4), params(causal), p), a);
        const allowed = a.candidates.filter((c) => !c.rejected);
        assert.ok(allowed.length > 0);
        assert.is(a.predictedMs, Math.min(...allowed.map((c) => c.predictedMs)));
        assert.ok(a.predictedMs > 0 && Number.isFinite(a.predictedMs));
        const total = a.steps.reduce((t, s) => t + s.predictedMs, 0);
        // The hybrid overlaps its two shares; the others add up their steps.
        if (a.backend === 'hybrid') assert.ok(a.predictedMs <= total + 1e-9);
        else assert.ok(Math.abs(a.predictedMs - total) < 1e-9 * total);
        // The scheduler only raises the cutoff: never below the authors' default.
        for (const c of a.candidates) assert.ok(c.minSeqLen! >= 4096, `cutoff ${c.minSeqLen}`);
      }
    }
  }
});

test('CPU only: WebAssembly everywhere; exact at small n, HyperAttention at large n', () => {
  const p = PROFILES['cpu only'];
  for (const n of SIZES) {
    for (const causal of [false, true]) {
      const plan = choose(shapeOf(n), params(causal), p);
      assert.is(plan.backend, 'cpu');
      assert.ok(plan.candidates.filter((c) => c.backend !== 'cpu').every((c) => c.rejected === 'no WebGPU adapter'));
    }
  }
  assert.is(choose(shapeOf(1024), params(false), p).algorithm, 'exact');
  assert.is(choose(shapeOf(65536), params(false), p).algorithm, 'hyper');
  assert.is(choose(shapeOf(65536), params(true), p).algorithm, 'hyper');
});

test('fast GPU: the CPU for tiny calls, the GPU (alone or with CPU hashing) for long ones', () => {
  const p = PROFILES['fast gpu'];
  assert.is(choose(shapeOf(64), params(false), p).backend, 'cpu');
  for (const causal of [false, true]) {
    const plan = choose(shapeOf(65536, 8), params(causal), p);
    assert.ok(plan.backend === 'webgpu' || plan.backend === 'hybrid', plan.reason);
    assert.is(plan.placement.block, 'webgpu');
  }
  // Where hashing and sorting are slow (on both devices here), exact attention at 8k on the
  // GPU beats them: exact.
  const slowSort = profile({ ...FAST, sort: { unitsPerMs: 1e5, fixedMs: 0.5 }, hash: { unitsPerMs: 1e6, fixedMs: 0.5 } });
  slowSort.devices.cpu = { ...CPU, hash: { unitsPerMs: 1e6, fixedMs: 0.5 } };
  const mid = choose(shapeOf(8192), params(false), slowSort);
  assert.is(mid.algorithm, 'exact', mid.reason);
  assert.is(mid.backend, 'webgpu', mid.reason);
  assert.match(mid.reason, /not predicted faster/);
  assert.is(choose(shapeOf(65536), params(false), slowSort).algorithm, 'hyper');
});

test('slow GPU: the CPU at small n; the GPU only where it is predicted faster', () => {
  const p = PROFILES['slow gpu'];
  assert.is(choose(shapeOf(1024), params(false), p).backend, 'cpu');
  for (const n of SIZES) {
    const plan = choose(shapeOf(n, 8), params(true), p);
    const cpu = plan.candidates.filter((c) => c.backend === 'cpu');
    assert.ok(plan.predictedMs <= Math.min(...cpu.map((c) => c.predictedMs)));
  }
});

test('software adapter: the GPU never gets work the CPU does faster', () => {
  const p = PROFILES.software;
  for (const n of SIZES) {
    for (const causal of [false, true]) {
      const plan = choose(shapeOf(n, 8), params(causal), p);
      assert.is(plan.backend, 'cpu');
      for (const c of plan.candidates.filter((x) => x.backend !== 'cpu')) assert.match(c.rejected ?? '', /software adapter/);
    }
  }
  // Forced by the caller (one split), the software adapter still runs.
  assert.is(choose(shapeOf(4096), params(false, { splits: ['webgpu'] }), p).backend, 'webgpu');
});

test('the caller\'s minSeqLen wins; exactAttention plans are exact', () => {
  for (const p of Object.values(PROFILES)) {
    const plan = choose(shapeOf(65536), params(true, { minSeqLen: 2048 }), p);
    assert.ok(plan.candidates.every((c) => c.minSeqLen === 2048));
    assert.match(plan.reason, /given by the caller/);
    const exact = choose(shapeOf(65536), params(false, { exact: true }), p);
    assert.is(exact.algorithm, 'exact');
    assert.ok(exact.steps.every((s) => s.op !== 'hash' && s.op !== 'sort'));
  }
});

test('a split the adapter cannot hold is rejected, with the reason', () => {
  const small = profile(FAST, false, { ...ADAPTER, maxBufferBytes: 1 << 20 });
  const plan = choose(shapeOf(65536), params(false), small);
  assert.is(plan.backend, 'cpu');
  assert.match(plan.candidates.find((c) => c.backend === 'webgpu')!.rejected!, /maxBufferSize/);
});

test('calibration on this machine is sane: positive, finite, plausible', async () => {
  const start = performance.now();
  const p = await calibrate();
  const ms = performance.now() - start;
  assert.ok(ms < 15000 || ms < scaled(15000), `calibration took ${ms} ms`);
  for (const costs of [p.devices.cpu, p.devices.webgpu].filter((c) => c !== null)) {
    for (const op of COST_CLASSES) {
      const c = costs[op];
      assert.ok(Number.isFinite(c.fixedMs) && c.fixedMs >= 0, `${op} fixedMs ${c.fixedMs}`);
      assert.ok(Number.isFinite(c.unitsPerMs) && c.unitsPerMs > 0, `${op} unitsPerMs ${c.unitsPerMs}`);
    }
  }
  // WebAssembly attention between 0.1 and 1000 GFLOP/s (units are flops per ms).
  for (const op of ['exact', 'block', 'sampled'] as const) {
    assert.ok(p.devices.cpu[op].unitsPerMs > 1e5 && p.devices.cpu[op].unitsPerMs < 1e9, `${op} ${p.devices.cpu[op].unitsPerMs}`);
  }
  assert.equal(parseProfile(JSON.parse(JSON.stringify(p)), p.environment), p);
});

test('a profile round-trips through JSON and setProfile', async () => {
  const here = await getProfile();
  const text = JSON.stringify(here);
  assert.equal(await setProfile(text), here);
  assert.equal(await setProfile(JSON.parse(text)), here);
  assert.equal(await getProfile(), here);
});

async function rejectsProfile(value: unknown, pattern: RegExp) {
  try {
    await setProfile(value);
  } catch (error) {
    assert.instance(error, HyperAttentionError);
    assert.is((error as HyperAttentionError).code, 'INVALID_PROFILE');
    assert.match((error as Error).message, pattern);
    return;
  }
  assert.unreachable(`expected INVALID_PROFILE matching ${pattern}`);
}

test('malformed and foreign profiles are rejected, saying why', async () => {
  const here = await getProfile();
  const copy = () => JSON.parse(JSON.stringify(here)) as Profile & Record<string, unknown>;
  await rejectsProfile('{"format": ', /not JSON/);
  await rejectsProfile(42, /profile: expected an object/);
  await rejectsProfile({ ...copy(), format: 'something' }, /format: expected 'hyperattention-profile'/);
  await rejectsProfile({ ...copy(), version: 0 }, /version: this library reads version 2/);
  const negative = copy();
  negative.devices.cpu.exact.unitsPerMs = -1;
  await rejectsProfile(negative, /devices\.cpu\.exact\.unitsPerMs: expected a finite positive number, got -1/);
  const nan = JSON.parse(JSON.stringify({ ...copy(), devices: { ...here.devices, cpu: { ...here.devices.cpu, sort: { fixedMs: NaN, unitsPerMs: 1 } } } }));
  await rejectsProfile(nan, /devices\.cpu\.sort\.fixedMs: expected a finite non-negative number, got null/);
  const missing = copy();
  delete (missing.devices.cpu as Partial<DeviceCosts>).merge;
  await rejectsProfile(missing, /devices\.cpu\.merge: expected an object/);
  const foreign = copy();
  foreign.environment = { ...foreign.environment, runtime: 'deno 0.0.1' } as Environment;
  await rejectsProfile(foreign, /measured on another environment \(deno 0\.0\.1/);
  // Nothing rejected was taken.
  assert.equal(await getProfile(), here);
});

test('a saved profile is used; a corrupt or foreign one is rejected and recalibrated', async () => {
  const path = join(mkdtempSync(join(tmpdir(), 'hyperattention-')), 'cache', 'profile.json');
  configureScheduler({ profilePath: path, persist: true });
  try {
    const measured = await calibrate();
    assert.equal(parseProfile(readFileSync(path, 'utf8')), measured);
    forgetProfiles();
    assert.equal(await getProfile(), measured, 'the saved profile is read back');

    for (const [bad, why] of [
      ['{ not json', /not JSON/],
      [JSON.stringify({ ...measured, environment: { ...measured.environment, wasm: 'other' } }), /another environment/],
    ] as const) {
      writeFileSync(path, bad);
      forgetProfiles();
      warnings.length = 0;
      const fresh = await getProfile();
      assert.is(warnings.length, 1);
      assert.match(warnings[0], /rejected the saved profile in .*profile\.json and recalibrating/);
      assert.match(warnings[0], why);
      assert.ok(fresh.created >= measured.created);
      assert.equal(parseProfile(readFileSync(path, 'utf8'), measured.environment), fresh, 'the new profile replaced it');
    }
  } finally {
    configureScheduler({ profilePath: null, persist: false });
  }
});

test('a profile path that cannot be created warns and keeps the profile in memory (#13)', async () => {
  // Node's recursive mkdir never settled under /proc: the first call stayed pending.
  configureScheduler({ profilePath: '/proc/hyperattention-nope/profile.json', persist: true });
  const late = lateAfter(20_000);
  try {
    warnings.length = 0;
    const measured = await Promise.race([calibrate(), late.promise.then(() => assert.unreachable('calibrate() still pending after 20 s times the pace'))]);
    assert.ok(measured);
    assert.is(warnings.length, 1);
    assert.match(warnings[0], /could not save the profile to \/proc\/hyperattention-nope\/profile\.json/);
  } finally {
    late.cancel();
    configureScheduler({ profilePath: null, persist: false });
  }
});

test('backend auto runs the plan: exact when HyperAttention is not predicted faster, unless minSeqLen is given', async () => {
  const here = await getProfile();
  const n = 4096;
  const shape = [1, 1, n, 64];
  const [q, k, v] = [1, 2, 3].map((s) => randomTensor(shape, s));
  try {
    // A profile whose hashing is hopelessly slow (5 s an op, slow but within what a profile may say): exact is faster at any n.
    const slowHash = JSON.parse(JSON.stringify(here)) as Profile;
    slowHash.devices.cpu.hash = { fixedMs: 5000, unitsPerMs: 1 };
    if (slowHash.devices.webgpu) slowHash.devices.webgpu.hash = { fixedMs: 5000, unitsPerMs: 1 };
    await setProfile(slowHash);
    const plan = await explain({ q: shape, k: shape, v: shape });
    assert.is(plan.algorithm, 'exact');
    const exact = await exactAttention(q, k, v);
    const auto = await hyperAttention(q, k, v, { profile: true });
    assert.is(auto.profile!.plan.algorithm, 'exact');
    assert.ok(maxAbsError(auto.out.data, exact.out.data) < 1e-6);
    const given = await hyperAttention(q, k, v, { minSeqLen: 4096, tolerance: Infinity, profile: true });
    assert.is(given.profile!.plan.algorithm, 'hyper');
    assert.ok(given.profile!.steps.some((s) => s.op === 'hash'));
    assert.ok(maxAbsError(given.out.data, exact.out.data) > 1e-3, 'HyperAttention ran');
  } finally {
    await setProfile(here);
  }
});

test('profile: true reports the plan and each step, measured', async () => {
  const shape = [1, 2, 8192, 64];
  const [q, k, v] = [1, 2, 3].map((s) => randomTensor(shape, s));
  const plain = await hyperAttention(q, k, v);
  const r = await hyperAttention(q, k, v, { profile: true });
  assert.equal(r.out.data, plain.out.data, 'profiling changes nothing computed');
  const p = r.profile!;
  assert.equal(p.plan, await explain({ q: shape, k: shape, v: shape }));
  for (const op of ['upload', 'hash', 'sort', 'block', 'sampled', 'download'] as const) {
    const step = p.steps.find((s) => s.op === op);
    assert.ok(step, `no ${op} step`);
    assert.ok(step!.measuredMs >= 0 && step!.calls > 0);
    assert.ok(step!.predictedMs !== null && step!.predictedMs > 0);
  }
  const sum = p.steps.reduce((t, s) => t + s.measuredMs, 0);
  assert.ok(sum <= p.measuredMs + 1e-6 && p.measuredMs > 0);
  const hashes = 2 * 2 * ACCURATE_DEFAULTS.lshRounds;
  assert.is(p.steps.find((s) => s.op === 'hash')!.calls, hashes, 'q and k of both heads, every LSH round');
  assert.not.ok('profile' in plain);
  const text = formatPlan(p.plan, p);
  assert.match(text, /^\[1, 2, 8192, 64\] x \[1, 2, 8192, 64\] on node /);
  assert.match(text, new RegExp(`plan: ${p.plan.backend} hyper minSeqLen 4096, predicted [0-9.]+ ms, measured [0-9.]+ ms`));
  assert.match(text, new RegExp(`\n  hash +cpu +${hashes} +`));
  assert.match(text, /candidates:\n  .*<- chosen/);
  // Explicit backends report too; exactAttention has no hashing.
  const cpu = await exactAttention(q, k, v, { backend: 'cpu', profile: true });
  assert.is(cpu.profile!.plan.backend, 'cpu');
  assert.ok(cpu.profile!.steps.every((s) => s.op !== 'hash' && s.device === 'cpu'));
});

test('explain rejects bad shapes and options', async () => {
  const bad = async (call: Promise<unknown>, code: string, pattern: RegExp) => {
    try {
      await call;
    } catch (error) {
      assert.is((error as HyperAttentionError).code, code);
      assert.match((error as Error).message, pattern);
      return;
    }
    assert.unreachable();
  };
  await bad(explain({ q: [1, 1, 8, 4], k: [1, 1, 8], v: [1, 1, 8, 4] }), 'INVALID_SHAPE', /k\.shape: expected 4 dimensions/);
  await bad(explain({ q: [1, 1, 10, 4], k: [1, 1, 9, 4], v: [1, 1, 9, 4] }, { causal: true }), 'INVALID_SHAPE', /at least as many keys as queries/);
  await bad(explain({ q: [1, 1, 8, 4], k: [1, 1, 8, 4], v: [1, 1, 8, 4] }, { blockSize: 0 }), 'INVALID_OPTION', /blockSize/);
  await bad(explain({ q: [1, 1, 8, 4], k: [1, 1, 8, 4], v: [1, 1, 8, 4] }, {}, 'fast' as 'exact'), 'INVALID_OPTION', /kind/);
  assert.throws(() => configureScheduler({ profilePath: 3 as unknown as string }), /profilePath/);
  assert.throws(() => configureScheduler({ colour: 'red' } as never), /unknown scheduler option 'colour'/);
});

