// The scheduler with a WebGPU adapter at hand (software ones here: SwiftShader, lavapipe):
// calibration measures the GPU and reports it as a fallback adapter, the GPU then gets no
// work the CPU does faster, backend 'auto' runs on what the plan says, a profiled call on
// the GPU measures its steps there, and where the runtime has localStorage (browsers,
// Deno) the profile is saved in it.
import { suite } from '../suite.ts';
import * as assert from 'uvu/assert';
import { calibrate, configureScheduler, explain, hyperAttention, type Profile } from '../../src/index.ts';
import { COST_CLASSES } from '../../src/ops.ts';
import { parseProfile } from '../../src/scheduler/profile.ts';
import { gaussian, random } from './harness.ts';

const test = suite('scheduler with an adapter');
const warnings: string[] = [];
configureScheduler({ onWarning: (m) => warnings.push(m) });
// Deno keeps localStorage across runs: start from none; the first test calibrates and saves.
(globalThis as { localStorage?: Storage }).localStorage?.removeItem('hyperattention.profile');

let profile: Profile;

test('the profile measures the adapter, sanely', async () => {
  profile = await calibrate();
  const adapter = profile.environment.adapter;
  assert.ok(adapter, 'an adapter in the environment');
  assert.ok(profile.devices.webgpu, 'WebGPU measured');
  for (const op of COST_CLASSES) {
    const c = profile.devices.webgpu![op];
    assert.ok(Number.isFinite(c.fixedMs) && c.fixedMs >= 0 && Number.isFinite(c.unitsPerMs) && c.unitsPerMs > 0, `${op}: ${JSON.stringify(c)}`);
  }
  console.log(`  scheduler: ${adapter!.description} (fallback ${adapter!.fallback}), calibrated in ${profile.calibrationMs} ms; ` +
    `attention ${(profile.devices.webgpu!.exact.unitsPerMs / 1e6).toFixed(2)} GFLOP/s on WebGPU, ` +
    `${(profile.devices.cpu.exact.unitsPerMs / 1e6).toFixed(1)} on WebAssembly`);
  // A page that is not cross-origin isolated (the Chromium suite's) runs on one thread, and says so.
  assert.equal(warnings.filter((w) => !/^running on one thread instead of \d+: the page is not cross-origin isolated/.test(w)), []);
});

test('where the runtime has localStorage, the profile is saved there', () => {
  const storage = (globalThis as { localStorage?: Storage }).localStorage;
  if (!storage) return;
  const saved = storage.getItem('hyperattention.profile');
  assert.ok(saved, 'saved');
  assert.equal(parseProfile(saved!, profile.environment).environment, profile.environment);
});

test('a software adapter gets no work the CPU does faster', async () => {
  if (!profile.environment.adapter!.fallback) return;
  for (const n of [1024, 8192, 65536]) {
    for (const causal of [false, true]) {
      const shape = [1, 4, n, 64];
      const plan = await explain({ q: shape, k: shape, v: shape }, { causal });
      assert.is(plan.backend, 'cpu', `n ${n} causal ${causal}: ${plan.reason}`);
    }
  }
});

test('backend auto runs the plan; a profiled call on WebGPU measures its steps there', async () => {
  const rng = random();
  const shape = [1, 2, 4096, 32];
  const [q, k, v] = [0, 1, 2].map(() => ({ data: gaussian(rng, 2 * 4096 * 32), shape }));
  const auto = await hyperAttention(q, k, v, { profile: true });
  const plan = await explain({ q: shape, k: shape, v: shape });
  assert.equal(auto.profile!.plan, plan);
  for (const s of auto.profile!.steps) {
    assert.ok(plan.steps.some((p) => p.op === s.op && p.device === s.device), `${s.op} on ${s.device}: a step of the plan`);
  }
  const gpu = await hyperAttention(q, k, v, { backend: 'webgpu', profile: true });
  assert.is(gpu.profile!.plan.backend, 'webgpu');
  for (const op of ['upload', 'hash', 'sort', 'block', 'sampled', 'download'] as const) {
    const step = gpu.profile!.steps.find((s) => s.op === op);
    assert.ok(step && step.device === 'webgpu' && step.measuredMs > 0 && step.predictedMs! > 0, `${op}: ${JSON.stringify(step)}`);
  }
  // Same hashes and kernels within float tolerance, whichever backend ran.
  let worst = 0;
  for (let i = 0; i < auto.out.data.length; i++) worst = Math.max(worst, Math.abs(auto.out.data[i] - gpu.out.data[i]));
  assert.ok(worst < 1e-4, `max |auto - webgpu| ${worst}`);
});
