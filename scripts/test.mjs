// Runs the test suites (uvu, TypeScript through tsx, test/run.ts), then the type check
// (tsc, test/types.check.ts among the files), the WebGPU suites when their runner exists,
// the embedding, browser-worker and npm-pack checks, and ends with one line
// 'N passed, N failed' over everything. Each runs as a child with no time limit, killed
// only when silent for minutes (scripts/child.mjs).
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runChild } from './child.mjs';
import { uvuTotals } from './uvu-totals.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
// The suites' scheduler profiles go to a fresh folder, never the user's cache: each run
// starts from no saved profile, and leaves nothing in ~/.cache (every child inherits this).
process.env.HYPERATTENTION_CACHE_DIR ??= mkdtempSync(join(tmpdir(), 'hyperattention-cache-'));
let passed = 0;
let failed = 0;

async function run(label, cmd, args, parse) {
  console.log(`\n== ${label}`);
  const r = await runChild(cmd, args, { cwd: root, echo: true });
  const counts = parse(r.text);
  if (!counts) {
    console.log(`${label}: no test totals found (exit ${r.code})`);
    failed += 1;
    return;
  }
  passed += counts.passed;
  failed += counts.failed;
  if (r.code !== 0 && counts.failed === 0) failed += 1; // a crash after the totals still fails
}

/** tsc's verdict as one check: it prints nothing when the types hold. */
function typeCheck(text) {
  return { passed: text.trim() === '' ? 1 : 0, failed: text.trim() === '' ? 0 : 1 };
}

function parseCountLine(out) {
  const m = /^(\d+) passed, (\d+) failed/m.exec(out.split('\n').reverse().join('\n'));
  return m ? { passed: Number(m[1]), failed: Number(m[2]) } : undefined;
}

// `node scripts/test.mjs NAME` runs only the *.test.ts suites whose path matches NAME.
const only = process.argv[2];
await run('unit and parity suites (Node, WebAssembly)', process.execPath,
  // Relaxed SIMD is behind a flag in Node 20; enabling it lets the suites cover that build.
  ['--experimental-wasm-relaxed-simd', '--import', 'tsx', join(root, 'test/run.ts'), ...(only ? [only] : [])],
  uvuTotals);
if (!only) await run('types: tsc --noEmit over src, test (test/types.check.ts), bench, demo', process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', 'tsconfig.json', '--noEmit'], typeCheck);
const gpu = join(root, 'scripts/test-gpu.mjs');
if (!only && existsSync(gpu)) await run('WebGPU suites', process.execPath, [gpu], parseCountLine);
if (!only) await run('embedding: bundles, Deno example, demo page', process.execPath, [join(root, 'scripts/test-embedding.mjs')], parseCountLine);
if (!only) await run('browser: the worker, with and without cross-origin isolation', process.execPath, [join(root, 'scripts/test-browser.mjs')], parseCountLine);
if (!only) await run('npm pack: the tarball, installed and used by a consumer', process.execPath, [join(root, 'scripts/test-pack.mjs')], parseCountLine);

console.log(`\n${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
