// No first-call stall (#14): the profile is kept in the per-user cache folder by default, so
// a second process does not calibrate again; the folder follows the platform's convention
// and HYPERATTENTION_CACHE_DIR; profilePath null turns the file off; a cache that cannot be
// read or written costs one warning, never the call; warmup() does the first call's work
// ahead of it; a software adapter is not timed for 'auto'. Each case runs in a fresh process
// (test/warmup.child.ts), as a new page load or process start would.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { scaled } from '../scripts/pace.mjs';
import { suite } from './suite.ts';
import * as assert from 'uvu/assert';
import type { DeviceCosts, Profile } from '../src/index.ts';
import { COST_CLASSES } from '../src/ops.ts';
import { cacheFolder } from '../src/scheduler/persistence.ts';
import { parseProfile } from '../src/scheduler/profile.ts';

const test = suite('warmup');

// uvu imports every suite before it runs any, so this also keeps the other suites in this
// process (when run without scripts/test.mjs, which sets it too) out of the user's cache.
process.env.HYPERATTENTION_CACHE_DIR ??= mkdtempSync(join(tmpdir(), 'hyperattention-cache-'));

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';

interface ChildReport {
  created: string;
  sameProfile: boolean;
  adapter: Profile['environment']['adapter'];
  gpuMeasured: boolean;
  warnings: string[];
  autoBackend?: string;
  webgpuPlan?: string;
  gpuMeasuredAfter?: boolean;
}

/** Runs test/warmup.child.ts in a fresh Node with a throwaway HOME and the given environment. */
function child(mode: string, env: Record<string, string | undefined>): ChildReport {
  const base: Record<string, string | undefined> = { ...process.env, HOME: mkdtempSync(join(tmpdir(), 'hyperattention-home-')) };
  for (const name of ['HYPERATTENTION_CACHE_DIR', 'XDG_CACHE_HOME', 'VK_ICD_FILENAMES']) delete base[name];
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'test/warmup.child.ts', mode], {
    cwd: root, encoding: 'utf8', timeout: scaled(120_000), env: { ...base, ...env },
  });
  const line = (r.stdout ?? '').split('\n').find((l) => l.startsWith('result '));
  assert.ok(line, `the child (${mode}) reported nothing: exit ${r.status}\n${r.stdout}\n${r.stderr}`);
  return JSON.parse(line!.slice('result '.length)) as ChildReport;
}

const profilesIn = (folder: string) => (existsSync(folder) ? readdirSync(folder).filter((f) => /^profile-[0-9a-f]{8}\.json$/.test(f)) : []);
const temp = () => mkdtempSync(join(tmpdir(), 'hyperattention-cache-'));

test('the cache folder follows each platform\'s convention; HYPERATTENTION_CACHE_DIR wins', () => {
  const folder = (platform: string, vars: Record<string, string>, home?: string) => cacheFolder(platform, (n) => vars[n], () => home);
  assert.is(folder('linux', {}, '/home/a'), '/home/a/.cache/hyperattention');
  assert.is(folder('linux', { XDG_CACHE_HOME: '/xdg' }, '/home/a'), '/xdg/hyperattention');
  assert.is(folder('linux', { XDG_CACHE_HOME: 'relative' }, '/home/a'), '/home/a/.cache/hyperattention', 'a relative XDG_CACHE_HOME is ignored');
  assert.is(folder('darwin', { XDG_CACHE_HOME: '/xdg' }, '/Users/a'), '/Users/a/Library/Caches/hyperattention');
  assert.is(folder('win32', { LOCALAPPDATA: 'C:\\Users\\a\\AppData\\Local' }), 'C:\\Users\\a\\AppData\\Local\\hyperattention');
  assert.is(folder('windows', { USERPROFILE: 'C:\\Users\\a' }), 'C:\\Users\\a\\AppData\\Local\\hyperattention', 'Deno says windows');
  assert.is(folder('linux', { HYPERATTENTION_CACHE_DIR: '/tmp/x', XDG_CACHE_HOME: '/xdg' }, '/home/a'), '/tmp/x');
  assert.is(folder('linux', {}), undefined, 'no home: no file');
});

test('a software adapter may be left unmeasured in a profile; a hardware one may not', () => {
  const costs = Object.fromEntries(COST_CLASSES.map((op) => [op, { fixedMs: 0.01, unitsPerMs: 1e6 }])) as DeviceCosts;
  const adapter = { vendor: 'v', architecture: 'a', device: 'd', description: 'x', fallback: true, maxBufferBytes: 2 ** 30, maxBindingBytes: 2 ** 27 };
  const profile = (fallback: boolean | null, webgpu: DeviceCosts | null) => ({
    format: 'hyperattention-profile', version: 2, created: '2026-11-30T00:00:00.000Z', calibrationMs: 600,
    environment: { runtime: 'test', wasm: 'simd', cpu: null, threads: 2, wasmThreads: 2, adapter: fallback === null ? null : { ...adapter, fallback } },
    devices: { cpu: costs, webgpu },
  });
  assert.is(parseProfile(profile(true, null)).devices.webgpu, null);
  assert.ok(parseProfile(profile(true, costs)).devices.webgpu);
  assert.throws(() => parseProfile(profile(false, null)), /devices\.webgpu: must be present/);
  assert.throws(() => parseProfile(profile(null, costs)), /devices\.webgpu: must be present/);
});

let cacheFile = '';

test('by default the profile is kept in the cache folder: a second process reads it and does not calibrate', () => {
  const folder = join(temp(), 'nested', 'hyperattention');
  const first = child('default', { HYPERATTENTION_CACHE_DIR: folder });
  assert.equal(first.warnings, []);
  assert.ok(first.sameProfile, 'the call used the profile warmup() got');
  const files = profilesIn(folder);
  assert.is(files.length, 1, `one profile file in ${folder}: ${files}`);
  cacheFile = files[0];
  assert.is(parseProfile(readFileSync(join(folder, cacheFile), 'utf8')).created, first.created);
  assert.equal(readdirSync(folder), files, 'no temporary file left behind');
  const second = child('default', { HYPERATTENTION_CACHE_DIR: folder });
  assert.equal(second.warnings, []);
  assert.is(second.created, first.created, 'the saved profile, not a new calibration');
});

test('without HYPERATTENTION_CACHE_DIR: $XDG_CACHE_HOME/hyperattention, else ~/.cache/hyperattention (Linux)', () => {
  if (process.platform !== 'linux') return;
  const xdg = temp();
  assert.equal(child('default', { XDG_CACHE_HOME: xdg }).warnings, []);
  assert.is(profilesIn(join(xdg, 'hyperattention')).length, 1);
  const home = temp();
  assert.equal(child('default', { HOME: home }).warnings, []);
  assert.is(profilesIn(join(home, '.cache', 'hyperattention')).length, 1);
});

test('profilePath null: no file; a named profilePath still wins over the cache folder', () => {
  const folder = temp();
  assert.equal(child('no-file', { HYPERATTENTION_CACHE_DIR: folder }).warnings, []);
  assert.equal(readdirSync(folder), []);
  const named = join(temp(), 'mine.json');
  assert.equal(child(`path=${named}`, { HYPERATTENTION_CACHE_DIR: folder }).warnings, []);
  assert.ok(existsSync(named));
  assert.equal(readdirSync(folder), []);
});

test('a cache that cannot be written or read costs one warning and the profile stays in memory', () => {
  const unwritable = child('default', { HYPERATTENTION_CACHE_DIR: '/proc/hyperattention-nope' });
  assert.is(unwritable.warnings.length, 1, unwritable.warnings.join('\n'));
  assert.match(unwritable.warnings[0], /could not save the profile to \/proc\/hyperattention-nope\/profile-[0-9a-f]{8}\.json: .*kept in memory only/);
  assert.ok(unwritable.sameProfile, 'the call ran on the profile in memory');
  // A folder where the file should be: reading fails, and saving is not tried again.
  assert.ok(cacheFile, 'the default-cache test ran first');
  const folder = temp();
  mkdirSync(join(folder, cacheFile));
  const unreadable = child('default', { HYPERATTENTION_CACHE_DIR: folder });
  assert.is(unreadable.warnings.length, 1, unreadable.warnings.join('\n'));
  assert.match(unreadable.warnings[0], /could not read the profile at .*profile-[0-9a-f]{8}\.json: .*kept in memory only/);
});

test('a software adapter is not timed for backend auto; an explicit webgpu plan times it then', () => {
  if (!existsSync(SWIFTSHADER_ICD)) return;
  const r = child('software', { HYPERATTENTION_CACHE_DIR: temp(), VK_ICD_FILENAMES: SWIFTSHADER_ICD });
  if (!r.adapter) return; // Dawn found no adapter here after all
  assert.ok(r.adapter.fallback, `a software adapter: ${r.adapter.description}`);
  assert.not.ok(r.gpuMeasured, 'warmup() did not time the software adapter');
  assert.equal(r.warnings, []);
  assert.is(r.autoBackend, 'cpu');
  assert.is(r.webgpuPlan, 'webgpu');
  assert.ok(r.gpuMeasuredAfter, 'the explicit webgpu plan measured it');
});

