// Tests the package as npm would publish it: `npm pack` into a temporary folder, the
// tarball's contents (dist/, LICENSE, the README's images), then a consumer project that
// installs the tarball (no network: it has no dependencies) and imports it from Node as
// ESM and from CommonJS (import()), runs hyperAttention and exactAttention on WebAssembly,
// and type-checks a TypeScript consumer under moduleResolution node16 and bundler. Prints
// one line per check and ends with 'N passed, N failed'. Needs `npm run build` first (npm
// test does it): the pack skips the prepare build so the suite checks what was built.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { scaled } from './pace.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
let passed = 0;
let failed = 0;

function check(name, ok, detail = '') {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail ? `: ${detail}` : ''}`);
  if (ok) passed += 1;
  else failed += 1;
}

/** Runs a command to the end; stdout and stderr together, colour codes stripped. */
/** Runs a command: text is stdout and stderr together (for messages), stdout alone (for output to parse). */
function sh(cmd, args, cwd, timeout = scaled(60_000)) {
  const r = spawnSync(cmd, args, { cwd, encoding: 'utf8', timeout, env: { ...process.env, NO_COLOR: '1' } });
  const text = `${r.stdout ?? ''}${r.stderr ?? ''}${r.error ? r.error.message : ''}`.replace(/\x1b\[[0-9;]*m/g, '');
  return { ok: r.status === 0, text, stdout: r.stdout ?? '' };
}

const tail = (text, lines = 12) => `\n${text.trim().split('\n').slice(-lines).join('\n')}`;

/** Runs on the installed package: both entry points, shapes and finite values of each result. */
const NODE_SCRIPT = `
import { exactAttention, hyperAttention } from 'hyperattention';
const where = import.meta.resolve('hyperattention');
let s = 1;
const random = (shape) => ({ data: Float32Array.from({ length: shape.reduce((a, b) => a * b) }, () => ((s = (s * 16807) % 2147483647) / 2147483647) - 0.5), shape });
const [B, H, Hkv, n, d] = [1, 4, 2, 600, 32];
const q = random([B, H, n, d]), k = random([B, Hkv, n, d]), v = random([B, Hkv, n, d]);
const options = { causal: true, backend: 'cpu', blockSize: 64, sampleSize: 32, minSeqLen: 128, seed: 1 };
for (const [name, r] of [['hyper', await hyperAttention(q, k, v, options)], ['exact', await exactAttention(q, k, v, { causal: true, backend: 'cpu' })]]) {
  const finite = r.out.data.every(Number.isFinite) && r.lse.data.every(Number.isFinite);
  console.log(name, r.out.shape.join('x'), r.lse.shape.join('x'), finite ? 'finite' : 'NOT FINITE');
}
console.log('from', where);
`;

/** CommonJS loads the ESM-only package with import(), which every Node 20 can do. */
const CJS_SCRIPT = `
import('hyperattention').then(async ({ exactAttention }) => {
  const x = { data: new Float32Array(64 * 16).map((_, i) => Math.sin(i)), shape: [1, 1, 64, 16] };
  console.log('cjs', (await exactAttention(x, x, x, { backend: 'cpu' })).out.shape.join('x'));
});
`;

/** A TypeScript consumer of the published types, including issue 14's typed-options call. */
const TS_CONSUMER = `
import {
  exactAttention, hyperAttention, HyperAttentionError, type AttentionResult, type GPUAttentionResult, type HyperOptions,
  type DimsTensor, type Tensor, type WebGPUDeviceLike,
} from 'hyperattention';

declare const device: WebGPUDeviceLike;
const x: Tensor = { data: new Float32Array(64 * 16).fill(0.5), shape: [1, 1, 64, 16] };
const dims: DimsTensor = { data: x.data, dims: x.shape, type: 'float32' };
const opts: HyperOptions = { causal: true, seed: 1, layout: 'bhnd' };
export async function use(): Promise<number> {
  const r: AttentionResult = await hyperAttention(x, x, dims, opts);
  const e: AttentionResult = await exactAttention(dims, x, x, { layout: 'bnhd' });
  const g: GPUAttentionResult = await hyperAttention(x, x, x, { device, output: 'gpu' });
  // @ts-expect-error backend names are checked
  await hyperAttention(x, x, x, { backend: 'gpu' });
  return r.out.data.length + e.lse.data.length + g.out.shape.length + (HyperAttentionError.name ? 0 : 1);
}
`;

function tsconfig(module, moduleResolution) {
  return JSON.stringify({
    compilerOptions: {
      strict: true, noEmit: true, target: 'ES2022', lib: ['ES2022', 'DOM'], types: [], module, moduleResolution,
      // The package's own declarations are checked too: a broken .d.ts must fail here.
      skipLibCheck: false,
    },
    files: ['consumer.ts'],
  });
}

const started = Date.now();
const work = mkdtempSync(join(tmpdir(), 'hyperattention-pack-'));
try {
  const built = ['dist/index.js', 'dist/types/index.d.ts'].every((f) => existsSync(join(root, f)));
  check('dist/ built', built, built ? '' : 'missing dist/index.js or dist/types/index.d.ts (run npm run build)');
  if (!built) throw new Error('nothing to pack');

  const pack = sh(npm, ['pack', '--ignore-scripts', '--json', '--pack-destination', work], root);
  // npm's warnings (the project's .npmrc) go to stderr: the JSON is stdout's.
  const [info] = pack.ok ? JSON.parse(pack.stdout.slice(pack.stdout.indexOf('['))) : [];
  check('npm pack', Boolean(info), info ? `${info.filename}, ${info.entryCount} files, ${(info.size / 1024).toFixed(0)} KiB` : tail(pack.text));
  if (!info) throw new Error('no tarball');

  const files = info.files.map((f) => f.path);
  const images = [...readFileSync(join(root, 'README.md'), 'utf8').matchAll(/!\[[^\]]*\]\(([^)\s]+)\)/g)].map((m) => m[1]);
  const wanted = ['LICENSE', 'README.md', 'package.json', 'dist/index.js', 'dist/browser/index.js', 'dist/deno/index.js', 'dist/types/index.d.ts', ...images];
  const missing = wanted.filter((f) => !files.includes(f));
  check('tarball has LICENSE, the three builds, types and every README image', missing.length === 0 && images.length > 0,
    missing.length ? `missing ${missing.join(', ')}` : `${images.length} images: ${images.join(', ')}`);
  const license = readFileSync(join(root, 'LICENSE'), 'utf8');
  check('LICENSE is the Apache License 2.0 text', /Apache License\s+Version 2\.0, January 2004/.test(license) && /END OF TERMS AND CONDITIONS/.test(license));
  const stray = files.filter((f) => !/^(dist\/|docs\/[^/]+\.svg$|LICENSE$|README\.md$|package\.json$)/.test(f));
  check('tarball has nothing else (no sources, tests or benchmarks)', stray.length === 0, stray.join(', '));

  const consumer = join(work, 'consumer');
  mkdirSync(consumer);
  writeFileSync(join(consumer, 'package.json'), JSON.stringify({ name: 'consumer', private: true, type: 'module' }));
  const install = sh(npm, ['install', '--offline', '--no-audit', '--no-fund', '--ignore-scripts', join(work, info.filename)], consumer);
  const installed = install.ok && existsSync(join(consumer, 'node_modules/hyperattention/dist/index.js'));
  check('consumer installs the tarball (offline: no dependencies)', installed, installed ? '' : tail(install.text));
  if (!installed) throw new Error('not installed');

  writeFileSync(join(consumer, 'main.mjs'), NODE_SCRIPT);
  const node = sh(process.execPath, ['main.mjs'], consumer);
  const fromTarball = node.text.includes(join('node_modules', 'hyperattention', 'dist', 'index.js'));
  check('Node ESM: hyperAttention and exactAttention on WebAssembly from the installed package',
    node.ok && fromTarball && /^hyper 1x4x600x32 1x4x600 finite$/m.test(node.text) && /^exact 1x4x600x32 1x4x600 finite$/m.test(node.text),
    node.ok ? node.text.trim().replace(/\n/g, '; ') : tail(node.text));
  writeFileSync(join(consumer, 'main.cjs'), CJS_SCRIPT);
  const cjs = sh(process.execPath, ['main.cjs'], consumer);
  check('CommonJS: import() loads the ESM-only package', cjs.ok && /^cjs 1x1x64x16$/m.test(cjs.text), cjs.ok ? '' : tail(cjs.text));

  writeFileSync(join(consumer, 'consumer.ts'), TS_CONSUMER);
  const tsc = join(root, 'node_modules/typescript/bin/tsc');
  for (const [module, resolution] of [['node16', 'node16'], ['esnext', 'bundler']]) {
    writeFileSync(join(consumer, `tsconfig.${resolution}.json`), tsconfig(module, resolution));
    const r = sh(process.execPath, [tsc, '-p', `tsconfig.${resolution}.json`], consumer);
    check(`types: tsc --noEmit, moduleResolution ${resolution} (the package's .d.ts checked too)`, r.ok, r.ok ? '' : tail(r.text, 20));
  }
} catch (error) {
  if (!/^(nothing to pack|no tarball|not installed)$/.test(error.message)) check('npm pack suite', false, error.stack);
} finally {
  rmSync(work, { recursive: true, force: true });
}
console.log(`(${((Date.now() - started) / 1000).toFixed(1)} s)`);
console.log(`${passed} passed, ${failed} failed`);
process.exit(failed === 0 ? 0 : 1);
