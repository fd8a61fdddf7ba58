// Runs the WebGPU suites (test/gpu/main.ts) in Node (Dawn, through tsx), Deno
// (navigator.gpu) and headless Chromium (playwright-core, the system's /usr/bin/chromium),
// prints per runtime what passed and failed, and ends with 'N passed, N failed' over
// individual test cases. A runtime without an adapter is skipped with the command that
// enables it; with REQUIRE_GPU=1 a skip counts as a failure. No runtime has a time limit:
// one is stopped when it prints nothing for minutes (scripts/child.mjs), however slow the
// machine.
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { SILENT_MS, runChild } from './child.mjs';
import { patience, scaled } from './pace.mjs';
import { uvuTotals } from './uvu-totals.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const requireGpu = process.env.REQUIRE_GPU === '1';
const ENABLE = 'apt-get install -y chromium mesa-vulkan-drivers';
const SWIFTSHADER_ICD = '/usr/lib/chromium/vk_swiftshader_icd.json';
const CHROMIUM = '/usr/bin/chromium';
const DONE = 'gpu suites: done';
const NO_ADAPTER = 'gpu suites: no adapter';
// Scheduler profiles go to a fresh folder (see scripts/test.mjs), not the user's cache.
process.env.HYPERATTENTION_CACHE_DIR ??= mkdtempSync(join(tmpdir(), 'hyperattention-cache-'));

function checkShadersBuilt() {
  const generated = join(root, 'src/gpu/shaders.generated.ts');
  const newest = Math.max(...readdirSync(join(root, 'shaders')).map((f) => statSync(join(root, 'shaders', f)).mtimeMs));
  if (!existsSync(generated) || statSync(generated).mtimeMs < newest) {
    console.log('src/gpu/shaders.generated.ts is missing or older than shaders/*.wgsl: run `npm run build` first');
    console.log('0 passed, 1 failed');
    process.exit(1);
  }
}

async function bundle() {
  const outfile = join(root, 'test-artifacts/gpu/main.js');
  await esbuild.build({
    entryPoints: [join(root, 'test/gpu/main.ts')],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    outfile,
    // package.json says sideEffects: false, which would drop test/gpu/defer.ts.
    ignoreAnnotations: true,
    logLevel: 'error',
  });
  return outfile;
}

// Vulkan loaders and Deno want a runtime dir (XDG); a throwaway one keeps them quiet.
const runtimeDir = mkdtempSync(join(tmpdir(), 'gpu-xdg-'));
process.on('exit', () => rmSync(runtimeDir, { recursive: true, force: true }));

async function runNode() {
  const env = { XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? runtimeDir };
  if (!process.env.VK_ICD_FILENAMES && existsSync(SWIFTSHADER_ICD)) env.VK_ICD_FILENAMES = SWIFTSHADER_ICD;
  return runChild(process.execPath, ['--import', 'tsx', 'test/gpu/main.ts'], { cwd: root, env, echo: true });
}

async function runDeno(script) {
  const deno = join(root, 'node_modules/.bin/deno');
  if (!existsSync(deno)) return { text: `${NO_ADAPTER} (no deno binary in node_modules)\n`, code: 0 };
  const env = { XDG_RUNTIME_DIR: process.env.XDG_RUNTIME_DIR ?? runtimeDir, DENO_NO_UPDATE_CHECK: '1', NO_COLOR: '1' };
  // Without a Vulkan driver, Deno's wgpu falls back to OpenGL on llvmpipe, where these
  // kernels crawl (minutes of silence per test); on Linux only Vulkan counts as an adapter here.
  if (process.platform === 'linux' && !process.env.DENO_WEBGPU_BACKEND) env.DENO_WEBGPU_BACKEND = 'vulkan';
  return runChild(deno, ['run', '--unstable-webgpu', '-A', script], { cwd: root, env, echo: true });
}

// The reference fixtures, for the page's parity suite (test/gpu/fixtures.suite.ts), as
// stored (the page gunzips them): index.json lists the cases; <case>/<file> is a file of
// one, never outside the folder.
const FIXTURE_DIR = process.env.HYPERATTENTION_FIXTURES ?? join(root, 'test', 'fixtures');

function fixtureResponse(path) {
  if (path === 'index.json') {
    const names = existsSync(FIXTURE_DIR)
      ? readdirSync(FIXTURE_DIR).filter((f) => existsSync(join(FIXTURE_DIR, f, 'case.json'))).sort()
      : [];
    return { contentType: 'application/json', body: JSON.stringify(names) };
  }
  const file = resolve(FIXTURE_DIR, decodeURIComponent(path));
  if (!file.startsWith(resolve(FIXTURE_DIR) + sep) || !existsSync(file) || !statSync(file).isFile()) {
    return { status: 404, body: 'not found' };
  }
  return { contentType: 'application/octet-stream', body: readFileSync(file) };
}

async function runChromium(script) {
  if (!existsSync(CHROMIUM)) return { text: `${NO_ADAPTER} (no ${CHROMIUM})\n`, code: 0 };
  const { chromium } = await import('playwright-core');
  const profile = mkdtempSync(join(tmpdir(), 'gpu-chromium-'));
  let text = '';
  const print = (s) => {
    text += `${s}\n`;
    process.stdout.write(`${s}\n`);
  };
  let context;
  let watch;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      timeout: scaled(180_000),
      args: [
        '--no-sandbox', '--enable-unsafe-webgpu', '--disable-gpu-sandbox',
        '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run',
      ],
    });
    const page = context.pages()[0] ?? (await context.newPage());
    // Served by interception, never by a network: localhost is a secure context (WebGPU).
    const origin = 'http://localhost:9';
    await page.route(`${origin}/**`, (route) => {
      const url = new URL(route.request().url());
      if (url.pathname === '/main.js') {
        return route.fulfill({ contentType: 'text/javascript', body: readFileSync(script, 'utf8') });
      }
      if (url.pathname.startsWith('/fixtures/')) return route.fulfill(fixtureResponse(url.pathname.slice('/fixtures/'.length)));
      return route.fulfill({ contentType: 'text/html', body: '<!doctype html><script type="module" src="/main.js"></script>' });
    });
    const finished = new Promise((resolve) => {
      // As for the other runtimes: stopped only after minutes without a line from the page.
      watch = patience(SILENT_MS, (waited) => {
        print(`stopped: no output for ${(waited / 1000).toFixed(0)} s`);
        resolve(1);
      });
      page.on('console', (msg) => {
        watch.reset();
        const line = msg.text().replace(/\x1b\[[0-9;]*m/g, '').trimEnd();
        // uvu prints one console line per passing test in browsers; keep the rest.
        if (line.trim() === '•' || line.trim() === '') return;
        print(line);
        if (line.startsWith(DONE) || line.startsWith(NO_ADAPTER)) resolve(0);
      });
      page.on('pageerror', (error) => {
        print(`page error: ${error.message}`);
        resolve(1);
      });
    });
    await page.goto(`${origin}/index.html`, { timeout: scaled(30_000) });
    const code = await finished;
    return { text, code };
  } catch (error) {
    print(`chromium: ${error.message}`);
    return { text, code: 1 };
  } finally {
    watch?.stop();
    await context?.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  }
}

checkShadersBuilt();
mkdirSync(join(root, 'test-artifacts/gpu'), { recursive: true });
const script = await bundle();
const runtimes = [
  ['node', 'Node (webgpu package: Dawn, Vulkan)', runNode],
  ['deno', 'Deno (navigator.gpu)', () => runDeno(script)],
  ['chromium', 'headless Chromium (navigator.gpu)', () => runChromium(script)],
];
const summary = [];
let passed = 0;
let failed = 0;
for (const [name, label, run] of runtimes) {
  console.log(`\n== WebGPU suites in ${label}`);
  const started = Date.now();
  const { text, code } = await run();
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  const skip = text.split('\n').find((l) => l.startsWith(NO_ADAPTER));
  if (skip) {
    summary.push(`${name}: skipped, ${skip.slice('gpu suites: '.length)}; to enable: ${ENABLE}`);
    if (requireGpu) failed += 1;
    continue;
  }
  const counts = uvuTotals(text);
  if (!counts) {
    summary.push(`${name}: no test totals (exit ${code}, ${seconds} s)`);
    failed += 1;
    continue;
  }
  // A crash or a missing completion marker after the totals still fails the runtime.
  const broken = code !== 0 && counts.failed === 0 ? 1 : 0;
  passed += counts.passed;
  failed += counts.failed + broken;
  summary.push(`${name}: ${counts.passed} passed, ${counts.failed + broken} failed (${seconds} s)`);
}
console.log(`\n${summary.join('\n')}`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
