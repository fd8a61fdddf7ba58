// Hardening, round two: the eleven defects an adversarial run found, each reproduced in a
// fresh process (test/hardening.child.ts; the allocation failures in
// test/hardening-oom.child.mjs, under a memory limit) that must print a correct result or a
// typed error and then exit by itself; and the minor ones, here. The children's time limit
// is generous (a loaded two-core machine is slow): it only catches a hang.
import { spawnSync } from 'node:child_process';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from './suite.ts';
import * as assert from 'uvu/assert';
import {
  configureScheduler, configureThreads, explain, formatPlan, getProfile, hyperAttention, HyperAttentionError, setProfile,
  type HyperOptions, type Profile,
} from '../src/index.ts';
import { rejects } from './rejects.ts';
import { randomTensor } from './util.ts';

const test = suite('hardening');

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
/** Far beyond any case's time on an idle machine (seconds): it catches a hang, not slowness. */
const HANG_MS = 300_000;

/** Runs one case in a fresh Node; its report, after checking that it exited by itself. */
function child(name: string, env: Record<string, string> = {}): Record<string, unknown> {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'test/hardening.child.ts', name], {
    cwd: root, encoding: 'utf8', timeout: HANG_MS, env: { ...process.env, ...env },
  });
  const line = (r.stdout ?? '').split('\n').find((l) => l.startsWith('result '));
  assert.ok(line, `${name}: no report (exit ${r.status}, signal ${r.signal})\n${r.stdout}\n${r.stderr}`);
  assert.is(r.signal, null, `${name}: did not exit by itself`);
  assert.is(r.status, 0, `${name}: exit ${r.status}\n${r.stderr}`);
  return JSON.parse(line!.slice('result '.length)) as Record<string, unknown>;
}

test('#1 threaded calls in flight together reuse their memory: RSS stays flat', () => {
  const { start, end } = child('overlap-rss') as { start: number; end: number };
  assert.ok(end <= start * 1.1, `RSS ${start} MiB once warm, ${end} MiB after`);
});

test('#2 inputs are read once: a shrunk resizable buffer, data and shape getters that change', () => {
  const r = child('stale');
  assert.ok(r.shrunk === 'correct' || r.shrunk === 'INVALID_SHAPE', `shrunk: ${r.shrunk}`);
  assert.is(r.dataGetter, 'correct');
  assert.is(r.shapeGetter, 'correct');
});

test('#3 a signal look-alike without removeEventListener is INVALID_OPTION, and the process lives on', () => {
  assert.equal(child('signal'), { first: 'INVALID_OPTION' });
});

test('#4 explain() rejects at once what a call rejects at once', () => {
  assert.equal(child('explain'), { causal: 'OUT_OF_MEMORY', fixed: 'OUT_OF_MEMORY' });
});

test('#5 a FIFO or a link to /dev/urandom as the profile: warned about, the call runs, the process exits', () => {
  assert.equal(child('profile-fifo'), { call: 'ok', warned: true });
  const urandom = child('profile-urandom');
  assert.is(urandom.call, 'ok');
  assert.is(urandom.warned, true);
  assert.ok((urandom.rss as number) < 1024, `RSS ${urandom.rss} MiB`);
});

test('#6 sampler output is copied when checked: a refilled array, or one changed later, changes nothing', () => {
  const r = child('sampler');
  assert.ok((r.draws as number) >= 2, `${r.draws} draws`);
  assert.is(r.refilled, 'correct');
  assert.is(r.mutated, 'correct');
});

test('#7 Proxy-wrapped typed arrays are typed errors', () => {
  assert.equal(child('proxy'), { input: 'INVALID_SHAPE', samplerOut: 'INVALID_SAMPLER_OUTPUT', draws: 1, projections: 'INVALID_OPTION' });
});

test('#8 allocations the runtime refuses are OUT_OF_MEMORY, and the next call works', () => {
  if (process.platform === 'win32') return;
  // The bundle with plain Node: tsx itself needs more memory than the small limit leaves.
  const run = (kib: number) => {
    const r = spawnSync('/bin/sh', ['-c', `ulimit -v ${kib} && exec "${process.execPath}" test/hardening-oom.child.mjs`], {
      cwd: root, encoding: 'utf8', timeout: HANG_MS,
    });
    const line = (r.stdout ?? '').split('\n').find((l) => l.startsWith('result '));
    assert.ok(line, `ulimit -v ${kib}: no report (exit ${r.status}, signal ${r.signal})\n${r.stdout}\n${r.stderr}`);
    assert.is(r.status, 0, r.stderr);
    return JSON.parse(line!.slice('result '.length)) as Record<string, string>;
  };
  // 2 GiB: not even a kernel instance fits (V8 reserves about 10 GiB of address space for one).
  assert.equal(run(2 * 2 ** 20), { tiny: 'OUT_OF_MEMORY', huge: 'OUT_OF_MEMORY', after: 'OUT_OF_MEMORY' });
  // 16 GiB: small calls fit, a result of 8 GiB does not.
  assert.equal(run(16 * 2 ** 20), { tiny: 'ok', huge: 'OUT_OF_MEMORY', after: 'ok' });
});

test('#9 v overwritten with 3e38 while the call runs is INPUT_OVERFLOW, never a non-finite result', () => {
  assert.equal(child('overflow'), { result: 'INPUT_OVERFLOW' });
});

test('#10 a worker that dies while starting is replaced: calls keep their threads', () => {
  const r = child('worker-death');
  assert.is(r.ready, 'ok');
  assert.is(r.call, 'ok');
  assert.is(r.threads, Math.min(2, availableParallelism()));
  assert.equal(r.warnings, []);
});

test('#11 threads beyond the cores run on the cores: as fast as the default, no more workers, no memory', () => {
  const r = child('many-threads') as { ratio: number; workers: number; cores: number; rssGrowth: number };
  // Samples of 8 calls of about a millisecond, alternating, medians; 256 workers made it 100x.
  assert.ok(r.ratio <= 2, `threads 256 took ${r.ratio.toFixed(2)}x the default's time`);
  assert.ok(r.workers <= r.cores, `${r.workers} workers on ${r.cores} cores`);
  assert.ok(r.rssGrowth < 200, `RSS grew ${r.rssGrowth} MiB`);
});

const t = randomTensor([1, 1, 32, 8], 1);

test('options are plain objects of known keys: arrays, Dates, inherited and hidden keys are INVALID_OPTION', async () => {
  const hidden = Object.defineProperty({}, 'casual', { value: true, enumerable: false });
  for (const options of [[], new Date(), Object.create({ causal: true }), hidden]) {
    await rejects('INVALID_OPTION', /options|unknown option/, (p) => hyperAttention(t, t, t, Object.assign(options, p) as HyperOptions));
  }
  const inherited = Object.create({ causal: 'yes' }) as HyperOptions;
  await rejects('INVALID_OPTION', /plain object/, () => hyperAttention(t, t, t, inherited));
  for (const bad of [null, [], new Date()]) {
    assert.throws(() => configureScheduler(bad as never), (e: unknown) => (e as HyperAttentionError).code === 'INVALID_OPTION');
    assert.throws(() => configureThreads(bad as never), (e: unknown) => (e as HyperAttentionError).code === 'INVALID_OPTION');
  }
});

test('formatPlan of something that is not a plan is INVALID_OPTION', async () => {
  for (const bad of [{}, null, 1, { shape: {} }]) {
    assert.throws(() => formatPlan(bad as never), (e: unknown) => (e as HyperAttentionError).code === 'INVALID_OPTION');
  }
  const plan = await explain({ q: t.shape, k: t.shape, v: t.shape });
  assert.throws(() => formatPlan(plan, {} as never), (e: unknown) => (e as HyperAttentionError).code === 'INVALID_OPTION');
  assert.ok(formatPlan(plan).includes('plan:'));
});

test('an onWarning handler that throws never fails the work: the warning goes to console.warn', () => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'test/hardening.child.ts', 'throwing-handler'], { cwd: root, encoding: 'utf8', timeout: HANG_MS });
  assert.ok((r.stdout ?? '').includes('result {"call":"ok"}'), `${r.stdout}\n${r.stderr}`);
  assert.ok((r.stderr ?? '').includes('the onWarning handler threw: Error: the handler failed'), r.stderr);
});

test('a profile with absurd but well-formed numbers is INVALID_PROFILE, and not kept', async () => {
  const here = await getProfile();
  const copy = () => JSON.parse(JSON.stringify(here)) as Profile;
  const slowBlocks = copy();
  slowBlocks.devices.cpu.block.unitsPerMs = here.devices.cpu.exact.unitsPerMs / 1e4;
  const minute = copy();
  minute.devices.cpu.sort.fixedMs = 60_000;
  for (const bad of [slowBlocks, minute]) await rejects('INVALID_PROFILE', /not a measurement|apart/, () => setProfile(bad));
  assert.equal(await getProfile(), here);
});

test('a GPUDevice look-alike without the methods the library calls is INVALID_OPTION', async () => {
  const device = { queue: {}, lost: new Promise(() => {}) };
  await rejects('INVALID_OPTION', /device: expected a GPUDevice/, (p) => hyperAttention(t, t, t, { ...p, device } as never));
});

