// `npm run demo`: serves the demo page on localhost (a secure context, so WebGPU is
// allowed) with nothing but Node's http module. The page script (main.ts) is bundled by
// esbuild on each request, leaving 'hyperattention' to the page's import map, which points
// at the library's browser build in dist/browser/. Only the page, dist/ and the bench
// results are reachable. Every response carries the cross-origin isolation headers
// (COOP same-origin, COEP require-corp), which give the page shared memory and so
// WebAssembly threads; every resource the page loads is its own, so it needs no CORP
// header. Usage: node examples/browser/serve.mjs [--port N] [--no-isolation] (or PORT=N);
// --no-isolation leaves the headers out, to see the page as a site without them serves it.
import { createServer } from 'node:http';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, extname, join, normalize, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const here = dirname(fileURLToPath(import.meta.url));
const root = join(here, '..', '..');
const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
};
/** URL prefixes served straight from the repository. */
const STATIC = ['/dist/', '/bench/results/'];

async function bundlePage() {
  const result = await esbuild.build({
    entryPoints: [join(here, 'main.ts')],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    external: ['hyperattention'],
    sourcemap: 'inline',
    write: false,
    logLevel: 'silent',
  });
  return result.outputFiles[0].text;
}

/** The file a static URL names, or undefined when it lies outside the served folders. */
function staticFile(pathname) {
  if (!STATIC.some((prefix) => pathname.startsWith(prefix))) return undefined;
  const file = normalize(join(root, decodeURIComponent(pathname)));
  if (!file.startsWith(root + sep) || !existsSync(file) || !statSync(file).isFile()) return undefined;
  return file;
}

/** What a site must send for crossOriginIsolated (README, "Browser"). */
const ISOLATION = { 'cross-origin-opener-policy': 'same-origin', 'cross-origin-embedder-policy': 'require-corp' };

async function respond(req, res, isolated) {
  const { pathname } = new URL(req.url ?? '/', 'http://localhost');
  const send = (code, type, body) => {
    res.writeHead(code, { 'content-type': type, 'cache-control': 'no-store', ...(isolated ? ISOLATION : {}) });
    res.end(body);
  };
  if (pathname === '/' || pathname === '/index.html') return send(200, TYPES['.html'], readFileSync(join(here, 'index.html')));
  if (pathname === '/main.js') {
    try {
      return send(200, TYPES['.js'], await bundlePage());
    } catch (error) {
      return send(500, 'text/plain; charset=utf-8', `bundling examples/browser/main.ts failed:\n${error.message}`);
    }
  }
  const file = staticFile(pathname);
  if (file) return send(200, TYPES[extname(file)] ?? 'application/octet-stream', readFileSync(file));
  return send(404, 'text/plain; charset=utf-8', `not found: ${pathname}`);
}

/**
 * Starts the server; port 0 picks a free one; isolated false leaves out the cross-origin
 * isolation headers. Resolves with its URL and a way to stop it.
 */
export function startDemoServer({ port = 8080, host = '127.0.0.1', isolated = true } = {}) {
  const server = createServer((req, res) => {
    respond(req, res, isolated).catch((error) => {
      res.writeHead(500);
      res.end(String(error));
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      const address = server.address();
      resolve({
        url: `http://localhost:${address.port}/`,
        close: () => new Promise((done) => server.close(done)),
      });
    });
  });
}

if (process.argv[1] && normalize(process.argv[1]) === fileURLToPath(import.meta.url)) {
  if (!existsSync(join(root, 'dist/browser/index.js'))) {
    console.error('dist/browser/index.js is missing: run `npm run build` first (npm run demo does).');
    process.exit(1);
  }
  const flag = process.argv.indexOf('--port');
  const port = Number(flag > 0 ? process.argv[flag + 1] : (process.env.PORT ?? 8080));
  const isolated = !process.argv.includes('--no-isolation');
  const server = await startDemoServer({ port, isolated }).catch((error) => {
    // A busy default port should not stop a demo: take any free one instead.
    if (error.code === 'EADDRINUSE' && flag < 0 && !process.env.PORT) return startDemoServer({ port: 0, isolated });
    throw error;
  });
  console.log(`HyperAttention demo: ${server.url}  (${isolated ? 'cross-origin isolated' : 'not cross-origin isolated: one thread'}; Ctrl+C stops it)`);
}
