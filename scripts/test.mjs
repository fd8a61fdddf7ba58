// Runs the test suites (uvu, TypeScript through tsx), then the WebGPU suites when their
// runner exists, the embedding, browser-worker and npm-pack checks, and ends with one line
// 'N passed, N failed' over everything.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { uvuTotals } from './uvu-totals.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
// The suites' scheduler profiles go to a fresh folder, never the user's cache: each run
// starts from no saved profile, and leaves nothing in ~/.cache (every child inherits this).
process.env.HYPERATTENTION_CACHE_DIR ??= mkdtempSync(join(tmpdir(), 'hyperattention-cache-'));
let passed = 0;
let failed = 0;

function run(label, cmd, args, parse) {
  console.log(`\n== ${label}`);
  const r = spawnSync(cmd, args, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], env: process.env });
  process.stdout.write(r.stdout ?? '');
  const counts = parse(r.stdout ?? '');
  if (!counts) {
    console.log(`${label}: no test totals found (exit ${r.status})`);
    failed += 1;
    return;
  }
  passed += counts.passed;
  failed += counts.failed;
  if (r.status !== 0 && counts.failed === 0) failed += 1; // a crash after the totals still fails
}

function parseCountLine(out) {
  const m = /^(\d+) passed, (\d+) failed/m.exec(out.split('\n').reverse().join('\n'));
  return m ? { passed: Number(m[1]), failed: Number(m[2]) } : undefined;
}

// `node scripts/test.mjs NAME` runs only the *.test.ts suites whose path matches NAME.
const only = process.argv[2];
run('unit and parity suites (Node, WebAssembly)', process.execPath,
  // Relaxed SIMD is behind a flag in Node 20; enabling it lets the suites cover that build.
  ['--experimental-wasm-relaxed-simd', '--import', 'tsx', join(root, 'node_modules/uvu/bin.js'), 'test', `(${only ?? ''}).*\\.test\\.ts$`],
  uvuTotals);
const gpu = join(root, 'scripts/test-gpu.mjs');
if (!only && existsSync(gpu)) run('WebGPU suites', process.execPath, [gpu], parseCountLine);
if (!only) run('embedding: bundles, Deno example, demo page', process.execPath, [join(root, 'scripts/test-embedding.mjs')], parseCountLine);
if (!only) run('browser: the worker, with and without cross-origin isolation', process.execPath, [join(root, 'scripts/test-browser.mjs')], parseCountLine);
if (!only) run('npm pack: the tarball, installed and used by a consumer', process.execPath, [join(root, 'scripts/test-pack.mjs')], parseCountLine);

console.log(`\n${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
