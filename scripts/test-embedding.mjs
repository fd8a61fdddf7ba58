// Tests the embedding: the three bundles (self-contained, no Node built-ins where browsers
// and Deno load them), the package's entry points and types as Node, bundlers and Deno
// resolve them (npm: specifier and local path), the Deno example on navigator.gpu (Mesa
// lavapipe), and the demo page in headless Chromium (playwright-core, the system's
// /usr/bin/chromium), whose WebGPU and WebAssembly runs must match the Node build's result
// for the same seed. Prints one line per check and ends with 'N passed, N failed'. What
// cannot run here is skipped with the command that enables it; REQUIRE_GPU=1 fails instead.
// Needs `npm run build` first (npm test does it).
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { register } from 'tsx/esm/api';
import { check, counts, finish } from './checks.mjs';
import { runChild } from './child.mjs';
import { scaled } from './pace.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const requireGpu = process.env.REQUIRE_GPU === '1';
const ENABLE = 'apt-get install -y chromium mesa-vulkan-drivers';
const CHROMIUM = '/usr/bin/chromium';
const DENO = join(root, 'node_modules/.bin/deno');
const ARTIFACTS = join(root, 'test-artifacts/embedding');
/** The case the page runs on each backend: non-causal at minSeqLen, so HyperAttention approximates. */
const PAGE_CASE = { workload: 'mixture', n: 4096, causal: false, seed: 7 };
/**
 * Tolerances against the Node build (WebAssembly, same seed), as ||page - node||_F / ||node||_F.
 * WebAssembly in Chromium may run the relaxed-SIMD kernels (fused multiply-add) where Node 20
 * runs plain SIMD: rounding-level differences. WebGPU sums in another order; a query whose LSH
 * projection is within rounding of zero can land in the next bucket, so hyper gets more room.
 */
const TOLERANCE = { cpu: { exact: 1e-5, hyper: 1e-4 }, webgpu: { exact: 1e-4, hyper: 2e-2 } };
/** The Deno example's sizes: both below and at minSeqLen (4096). */
const DENO_SIZES = [1024, 4096];

const skipped = [];

/** Something this machine cannot run: skipped, or a failure when REQUIRE_GPU=1. */
function skip(what, why, enable = ENABLE) {
  const line = `${what}: ${requireGpu ? 'FAILED (REQUIRE_GPU=1)' : 'skipped'}, ${why}${enable ? `; to enable: ${enable}` : ''}`;
  console.log(line);
  skipped.push(line);
  if (requireGpu) counts.failed += 1;
}

/** A command's exit code and output, colour codes stripped (runChild: no time limit, killed only when silent for minutes). */
async function runProcess(cmd, args, { cwd = root, env = {} } = {}) {
  const { code, text } = await runChild(cmd, args, { cwd, env });
  return { code, text: text.replace(/\x1b\[[0-9;]*m/g, '') };
}

const tail = (text, lines = 12) => `\n${text.trim().split('\n').slice(-lines).join('\n')}`;

function relDiff(a, b) {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num += (a[i] - b[i]) ** 2;
    den += b[i] ** 2;
  }
  return a.length === b.length ? Math.sqrt(num / den) : Infinity;
}

// --- bundles ---

const BUNDLES = { node: 'dist/index.js', browser: 'dist/browser/index.js', deno: 'dist/deno/index.js' };

function checkBundles() {
  const missing = [...Object.values(BUNDLES), 'dist/types/index.d.ts', 'dist/deno/types/index.d.ts'].filter((f) => !existsSync(join(root, f)));
  check('bundles and types built', missing.length === 0, missing.length ? `missing ${missing.join(', ')} (run npm run build)` : Object.values(BUNDLES).join(', '));
  if (missing.length) return false;
  // esbuild names each module it bundles in a comment (unminified build): is the GPU backend in?
  const wired = readFileSync(join(root, BUNDLES.node), 'utf8').includes('// src/gpu/shaders.generated.ts');
  // Each shader's longest line, which has no quote or backslash for a bundler to re-escape.
  const shaders = (existsSync(join(root, 'shaders')) ? readdirSync(join(root, 'shaders')) : [])
    .filter((f) => f.endsWith('.wgsl'))
    .map((f) => {
      const lines = readFileSync(join(root, 'shaders', f), 'utf8').split('\n').map((l) => l.trim()).filter((l) => !/["'`\\]/.test(l));
      return { file: f, line: lines.reduce((a, b) => (b.length > a.length ? b : a), '') };
    });
  for (const [name, file] of Object.entries(BUNDLES)) {
    const code = readFileSync(join(root, file), 'utf8');
    // A self-contained bundle imports nothing by a literal specifier (the Node-only `webgpu`
    // package is loaded through a specifier built at run time).
    const imports = [...code.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|\brequire\s*\(\s*)["']([^"']+)["']/g)].map((m) => m[1]);
    const wasm = (code.match(/AGFzbQ/g) ?? []).length; // base64 of the wasm magic '\0asm'
    const absent = shaders.filter((sh) => !code.includes(sh.line)).map((sh) => sh.file);
    const problems = [];
    if (imports.length) problems.push(`imports ${[...new Set(imports)].join(', ')}`);
    if (/\bnode:/.test(code) && name !== 'node') problems.push("mentions 'node:'");
    if (wasm < 2) problems.push(`${wasm} embedded wasm modules`);
    if (wired && absent.length) problems.push(`shaders missing: ${absent.join(', ')}`);
    check(`${name} bundle is self-contained`, problems.length === 0,
      problems.join('; ') || `${(code.length / 1024).toFixed(0)} KiB, ${wasm} wasm modules, ${wired ? `${shaders.length} WGSL shaders` : 'WebGPU backend not wired yet'}, no imports`);
  }
  return true;
}

/** A folder where `hyperattention` resolves to this checkout, as it would from npm. */
function consumerDir() {
  const dir = mkdtempSync(join(tmpdir(), 'hyperattention-consumer-'));
  mkdirSync(join(dir, 'node_modules'));
  symlinkSync(root, join(dir, 'node_modules/hyperattention'), 'dir');
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ type: 'module', dependencies: { hyperattention: '*' } }));
  writeFileSync(join(dir, 'consumer.ts'), [
    "import { hyperAttention, lshOrder, HyperAttentionError, type AttentionResult, type Tensor } from 'hyperattention';",
    'const x: Tensor = { data: new Float32Array(64 * 16).fill(0.5), shape: [1, 1, 64, 16] };',
    "const result: Promise<AttentionResult> = hyperAttention(x, x, x, { causal: true, seed: 1, backend: 'auto' });",
    "// @ts-expect-error backend names are checked",
    "hyperAttention(x, x, x, { backend: 'gpu' }).catch(() => undefined);",
    'const blocks: Promise<number> = lshOrder(x, x, { blockSize: 16 }).then((o) => o.numBlocks);',
    'export const used = [result, blocks, HyperAttentionError];',
    '',
  ].join('\n'));
  return dir;
}

async function checkNodeAndBundlers(dir) {
  const script = "const url = import.meta.resolve('hyperattention'); const { hyperAttention } = await import('hyperattention');" +
    " const x = { data: new Float32Array(256 * 16).map((_, i) => Math.sin(i)), shape: [1, 1, 256, 16] };" +
    " const r = await hyperAttention(x, x, x, { seed: 1 }); console.log(url, r.out.shape.join('x'));";
  const node = await runProcess(process.execPath, ['--input-type=module', '-e', script], { cwd: dir });
  check("Node imports 'hyperattention' (node condition)", node.code === 0 && /\/dist\/index\.js 1x1x256x16/.test(node.text), node.text.trim());

  const resolved = {};
  for (const platform of ['browser', 'neutral']) {
    const result = await esbuild.build({
      stdin: { contents: "export * from 'hyperattention';", resolveDir: dir },
      bundle: true, write: false, format: 'esm', platform, metafile: true, logLevel: 'silent',
      ...(platform === 'neutral' ? { conditions: ['deno'], mainFields: ['module', 'main'] } : {}),
    });
    resolved[platform] = Object.keys(result.metafile.inputs).find((f) => f.includes('dist/')) ?? '?';
  }
  check('bundlers pick dist/browser/ (browser condition) and dist/deno/ (deno condition)',
    resolved.browser.endsWith('dist/browser/index.js') && resolved.neutral.endsWith('dist/deno/index.js'),
    `browser -> ${resolved.browser}, deno -> ${resolved.neutral}`);

  const tsc = join(root, 'node_modules/.bin/tsc');
  const common = ['--noEmit', '--strict', '--target', 'es2022', '--lib', 'es2022,dom', '--types', 'node', '--typeRoots', join(root, 'node_modules/@types'), 'consumer.ts'];
  const nodenext = await runProcess(tsc, ['--module', 'nodenext', '--moduleResolution', 'nodenext', ...common], { cwd: dir });
  const bundler = await runProcess(tsc, ['--module', 'esnext', '--moduleResolution', 'bundler', '--customConditions', 'browser', ...common], { cwd: dir });
  check('types resolve for Node (nodenext) and browser bundlers (bundler, browser condition)',
    nodenext.code === 0 && bundler.code === 0, `${nodenext.text.trim()}${bundler.text.trim()}`.slice(0, 2000));
}

// --- Deno ---

async function checkDeno(dir) {
  if (!existsSync(DENO)) {
    skip('Deno checks', 'no deno binary in node_modules/.bin', 'npm install');
    return;
  }
  const xdg = mkdtempSync(join(tmpdir(), 'deno-xdg-'));
  // DENO_DIR inside the consumer keeps a throwaway cache; the runtime dir quiets Deno's WebGPU.
  const env = { XDG_RUNTIME_DIR: xdg, DENO_NO_UPDATE_CHECK: '1', NO_COLOR: '1', DENO_DIR: join(dir, '.deno') };
  try {
    writeFileSync(join(dir, 'deno.json'), JSON.stringify({ nodeModulesDir: 'manual' }));
    for (const [label, specifier] of [['local path', join(root, 'dist/deno/index.js')], ['npm: specifier', 'npm:hyperattention']]) {
      const file = join(dir, `deno-${label.replace(/\W+/g, '-')}.ts`);
      writeFileSync(file, readFileSync(join(dir, 'consumer.ts'), 'utf8').replace("'hyperattention'", JSON.stringify(specifier)) +
        'console.log((await lshOrder({ data: new Float32Array(64 * 16).map(Math.sin), shape: [1, 1, 64, 16] }, x, { blockSize: 16 })).numBlocks, (await result).out.shape.join("x"));\n');
      const r = await runProcess(DENO, ['run', '--check', '--config', join(dir, 'deno.json'), file], { cwd: dir, env });
      const ok = r.code === 0 && /^4 1x1x64x16$/m.test(r.text);
      check(`Deno imports and type-checks the ${label} entry`, ok, ok ? '' : tail(r.text, 6));
    }

    const adapterProbe = await runProcess(DENO, ['eval', 'const a = await navigator.gpu?.requestAdapter(); console.log(a ? `adapter: ${a.info.description}` : "no adapter")'], { env });
    const adapter = /^adapter: (.*)$/m.exec(adapterProbe.text)?.[1];
    const typecheck = await runProcess(DENO, ['check', '--config', 'examples/deno/deno.json', 'examples/deno/main.ts'], { env });
    check('Deno example type-checks', typecheck.code === 0, typecheck.code === 0 ? '' : tail(typecheck.text, 6));
    const started = Date.now();
    const r = await runProcess(DENO, ['run', '--unstable-webgpu', '--config', 'examples/deno/deno.json', 'examples/deno/main.ts', '--sizes', DENO_SIZES.join(',')], { env });
    const seconds = ((Date.now() - started) / 1000).toFixed(1);
    console.log(r.text.trim().split('\n').map((l) => `    | ${l}`).join('\n'));
    const rows = r.text.split('\n').map((l) => l.trim().split(/\s+/)).filter((c) => c.length === 7 && /^\d+$/.test(c[0]));
    const expected = DENO_SIZES.flatMap((n) => [`${n} no`, `${n} yes`]);
    const sane = rows.every((c) => c.slice(2, 4).every((s) => Number(s) > 0) && Number.isFinite(Number(c[5])));
    check('Deno example prints the npm start table', r.code === 0 && rows.map((c) => `${c[0]} ${c[1]}`).join() === expected.join() && sane,
      `${rows.length} rows in ${seconds} s${r.code === 0 ? '' : tail(r.text)}`);
    // Exact by design below minSeqLen; at it, hyper's error must be what Node's build gives.
    const exactRows = rows.filter((c) => Number(c[0]) < 4096 || c[1] === 'yes');
    check('Deno example: exact-by-design rows have error <= 1e-4', exactRows.length > 0 && exactRows.every((c) => Number(c[5]) <= 1e-4),
      exactRows.map((c) => `${c[0]} ${c[1]}: ${c[5]}`).join(', '));
    const approx = rows.find((c) => c[0] === '4096' && c[1] === 'no');
    if (approx) {
      const node = await nodeCase({ workload: 'mixture', n: 4096, causal: false, seed: 4096, librarySeed: 0 });
      check("Deno example's rel. error at n = 4096 matches Node's (within 0.01)", Math.abs(Number(approx[5]) - node.relError) <= 0.01,
        `Deno ${approx[5]}, Node ${node.relError.toFixed(4)}`);
    }
    // The last backend line: the example falls back to WebAssembly when WebGPU fails.
    const backendLine = [...r.text.matchAll(/^backend: (.*)$/gm)].at(-1)?.[1] ?? '';
    if (!adapter) skip('Deno example on WebGPU', 'Deno found no WebGPU adapter (Mesa lavapipe is in mesa-vulkan-drivers)');
    else if (!backendLine.startsWith('WebGPU')) skip('Deno example on WebGPU', `the library has no WebGPU backend yet (adapter ${adapter}; ran on ${backendLine})`, '');
    else check('Deno example ran on navigator.gpu', true, backendLine);
  } finally {
    rmSync(xdg, { recursive: true, force: true });
  }
}

// --- Node reference for the same case ---

let workloads;

/** exact and hyper out of the Node build (WebAssembly) for a case, and hyper's relative error. */
async function nodeCase({ workload, n, causal, seed, librarySeed = seed }) {
  if (!workloads) {
    register();
    workloads = await import('../bench/workloads.ts');
  }
  const { exactAttention, hyperAttention } = await import('../dist/index.js');
  const { q, k, v } = workloads.WORKLOADS[workload].generate({ B: 1, H: 1, n, d: 64, seed });
  const exact = (await exactAttention(q, k, v, { causal, backend: 'cpu' })).out.data;
  const hyper = (await hyperAttention(q, k, v, { causal, backend: 'cpu', seed: librarySeed })).out.data;
  return { exact, hyper, relError: relDiff(hyper, exact) };
}

// --- the demo page in Chromium ---

async function checkPage() {
  if (!existsSync(CHROMIUM)) {
    skip('demo page in Chromium', `no ${CHROMIUM}`);
    return;
  }
  const { chromium } = await import('playwright-core');
  const { startDemoServer } = await import('../examples/browser/serve.mjs');
  const server = await startDemoServer({ port: 0 });
  const profile = mkdtempSync(join(tmpdir(), 'demo-chromium-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1200, height: 900 },
      timeout: scaled(180_000),
      args: ['--no-sandbox', '--enable-unsafe-webgpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
    });
    // Playwright's limits (30 s for a navigation, say), scaled to this machine.
    context.setDefaultTimeout(scaled(30_000));
    const page = context.pages()[0] ?? (await context.newPage());
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));

    const traversal = await fetch(new URL('/dist/%2e%2e/package.json', server.url));
    check('demo server serves only the page, dist/ and bench results', traversal.status === 404, `/dist/%2e%2e/package.json -> ${traversal.status}`);

    const node = await nodeCase(PAGE_CASE);
    // The URL presets the form and starts the first run; the second goes through the form.
    const query = new URLSearchParams({
      workload: PAGE_CASE.workload, n: String(PAGE_CASE.n), causal: PAGE_CASE.causal ? '1' : '0', seed: String(PAGE_CASE.seed), backend: 'cpu', run: '1',
    });
    await page.goto(`${server.url}?${query}`);
    for (const [index, backend] of ['cpu', 'webgpu'].entries()) {
      const label = backend === 'cpu' ? 'WebAssembly' : 'WebGPU';
      if (index > 0) {
        await page.selectOption('#backend', backend);
        await page.click('#run-button');
      }
      await page.waitForFunction((runs) => {
        const d = globalThis.hyperattentionDemo;
        return d?.heatmap && !d.busy && (d.runs.length > runs || d.error);
      }, index, { timeout: scaled(120_000) });
      const state = await page.evaluate(() => {
        const d = globalThis.hyperattentionDemo;
        return {
          error: d.error, run: d.runs.at(-1), heatmap: d.heatmap,
          exact: d.outputs ? Array.from(d.outputs.exact) : [], hyper: d.outputs ? Array.from(d.outputs.hyper) : [],
          adapter: document.getElementById('webgpu-info')?.textContent ?? '',
        };
      });
      if (backend === 'cpu') {
        const h = state.heatmap;
        check('heatmap: sortLSH raises the diagonal blocks\' share of the mass', h && h.after > h.before + 0.1,
          h ? `n ${h.n}, b ${h.blockSize}: ${(100 * h.before).toFixed(1)}% -> ${(100 * h.after).toFixed(1)}%` : 'not drawn');
      }
      if (state.error) {
        if (backend === 'webgpu' && /UNSUPPORTED/.test(state.error)) {
          const why = /no adapter|not available in this browser|no navigator\.gpu/i.test(state.error + state.adapter)
            ? `Chromium has no WebGPU adapter (${state.adapter})` : `the library has no WebGPU backend yet (${state.error})`;
          skip(`demo page on ${label}`, why, why.startsWith('Chromium') ? ENABLE : '');
        } else {
          check(`demo page runs on ${label}`, false, state.error);
        }
        continue;
      }
      const tol = TOLERANCE[backend];
      const exactDiff = relDiff(state.exact, node.exact);
      const hyperDiff = relDiff(state.hyper, node.hyper);
      const timing = `exact ${state.run.exactMs.toFixed(0)} ms, hyper ${state.run.hyperMs.toFixed(0)} ms`;
      check(`demo page on ${label}: exact matches Node (<= ${tol.exact})`, exactDiff <= tol.exact, `${exactDiff.toExponential(2)}; ${timing}`);
      check(`demo page on ${label}: hyper matches Node for seed ${PAGE_CASE.seed} (<= ${tol.hyper})`, hyperDiff <= tol.hyper,
        `${hyperDiff.toExponential(2)}; rel. error page ${state.run.relError.toFixed(4)}, Node ${node.relError.toFixed(4)}`);
    }
    // The screenshot shows both runs (or the WebGPU error), the heatmaps and the chart.
    mkdirSync(ARTIFACTS, { recursive: true });
    const shot = join(ARTIFACTS, 'demo.png');
    await page.screenshot({ path: shot, fullPage: true });
    check('screenshot saved', statSync(shot).size > 10_000, shot.slice(root.length + 1));
    check('no page errors', errors.length === 0, errors.join('; '));
  } catch (error) {
    check('demo page in Chromium', false, error.message);
  } finally {
    await context?.close().catch(() => {});
    await server.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

const started = Date.now();
if (checkBundles()) {
  const dir = consumerDir();
  try {
    console.log('\n== entry points: Node, bundlers, types');
    await checkNodeAndBundlers(dir);
    console.log('\n== Deno: entry points and examples/deno');
    await checkDeno(dir);
    console.log('\n== demo page in headless Chromium');
    await checkPage();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
if (skipped.length) console.log(`\n${skipped.join('\n')}`);
console.log(`(${((Date.now() - started) / 1000).toFixed(1)} s)`);
finish();
