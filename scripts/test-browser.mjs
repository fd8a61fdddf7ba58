// Tests the browser build's worker in headless Chromium (playwright-core, the system's
// /usr/bin/chromium), on the demo server with the cross-origin isolation headers and
// without them. In each: a 16k call runs in the library's worker and equals the same call
// on the page's thread (worker: false) bit for bit; the page's longest main-thread stall
// during the worker call, and during the first call (worker start, calibration), stays
// under STALL_BOUND_MS times the machine's pace (the figures are printed, and the
// page-thread call's freeze, only reported); the worker's profile lands in the page's localStorage; profiles, explain()
// and progress arrive; an abort rejects with ABORTED at once and the next call works;
// errors keep their code; threads the page cannot have are warned about once. Then pages
// without Worker, and whose CSP refuses the worker, run calls on their own thread and say
// so once. Prints one line per check and ends with 'N passed, N failed'. Needs
// `npm run build` first (npm test does it).
import { existsSync } from 'node:fs';
import { startDemoServer } from '../examples/browser/serve.mjs';
import { check, finish } from './checks.mjs';
import { pace, scaled } from './pace.mjs';

const CHROMIUM = '/usr/bin/chromium';
/** The call whose stall is measured: 16k queries and keys, d 64, one head. */
const CASE = { n: 16384, d: 64 };
/**
 * On the reference machine (scripts/pace.mjs), idle; the target is 50 ms. Both bounds are
 * multiplied by the pace measured at the start, since a busy machine stalls a page longer.
 */
const STALL_BOUND_MS = 200;
/** An abort must reject within this; the page rejects at once, the worker stops or is replaced later. */
const ABORT_BOUND_MS = 100;
const PACE = pace();
const stallBound = STALL_BOUND_MS * PACE;
const abortBound = ABORT_BOUND_MS * PACE;

/**
 * Runs in the page: everything the checks need, as plain data. Helpers live inside because
 * Playwright sends the function's source, not its closure.
 */
async function scenario({ n, d }) {
  const lib = await import('/dist/browser/index.js');
  const warnings = [];
  lib.configureScheduler({ onWarning: (message) => warnings.push(message) });
  const random = (seed) => () => {
    seed = (seed + 0x6d2b79f5) | 0; // mulberry32
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const tensor = (seed, rows = n) => {
    const r = random(seed);
    return { data: Float32Array.from({ length: rows * d }, () => 2 * r() - 1), shape: [1, 1, rows, d] };
  };
  const same = (a, b) => a.out.data.length === b.out.data.length &&
    new Uint32Array(a.out.data.buffer).every((x, i) => x === new Uint32Array(b.out.data.buffer)[i]) &&
    new Uint32Array(a.lse.data.buffer).every((x, i) => x === new Uint32Array(b.lse.data.buffer)[i]);
  /** The longest gap between turns of the page's event loop (setTimeout 0) and the longest 'longtask', while `work` runs. */
  const stalls = async (work) => {
    const start = performance.now();
    let last = start;
    let longest = 0;
    let longestTask = 0;
    let on = true;
    const observer = new PerformanceObserver((list) => {
      // Entries of tasks that began before (making the inputs, say) arrive too.
      for (const entry of list.getEntries()) if (entry.startTime >= start) longestTask = Math.max(longestTask, entry.duration);
    });
    observer.observe({ type: 'longtask' });
    const tick = () => {
      const now = performance.now();
      longest = Math.max(longest, now - last);
      last = now;
      if (on) setTimeout(tick, 0);
    };
    setTimeout(tick, 0);
    const value = await work();
    const ms = performance.now() - start;
    on = false;
    longest = Math.max(longest, performance.now() - last);
    await new Promise((resolve) => setTimeout(resolve, 50)); // longtask entries arrive late
    observer.disconnect();
    return { value, ms, longest, longestTask };
  };
  const failure = (promise) => promise.then(() => undefined, (e) => ({ code: e.code, message: e.message, typed: e instanceof lib.HyperAttentionError }));

  const report = { isolated: globalThis.crossOriginIsolated };
  const small = tensor(11, 512);
  const options = { backend: 'cpu', seed: 5, threads: 2 };
  // The first call starts the worker, compiles the WebAssembly and, with backend 'auto',
  // calibrates: the page's first call used to freeze it for all of that.
  const first = await stalls(() => lib.hyperAttention(small, small, small, { ...options, backend: 'auto' }));
  report.first = { ms: first.ms, longest: first.longest };
  // Workers have no localStorage: the profile the worker measured is saved in the page's.
  report.savedProfile = localStorage.getItem('hyperattention.profile') !== null;
  const profiled = await lib.hyperAttention(small, small, small, { ...options, profile: true });
  const explained = await lib.explain({ q: small.shape, k: small.shape, v: small.shape }, options);
  report.profile = { steps: profiled.profile?.steps.length ?? 0, measuredMs: profiled.profile?.measuredMs, explained: explained.steps.length };
  await lib.hyperAttention(small, small, small, { ...options, worker: false });

  const [q, k, v] = [tensor(1), tensor(2), tensor(3)];
  const progress = [];
  const inWorker = await stalls(() => lib.hyperAttention(q, k, v, { ...options, onProgress: (p) => progress.push(p) }));
  const onPage = await stalls(() => lib.hyperAttention(q, k, v, { ...options, worker: false }));
  report.worker = { ms: inWorker.ms, longest: inWorker.longest, longestTask: inWorker.longestTask };
  report.page = { ms: onPage.ms, longest: onPage.longest, longestTask: onPage.longestTask };
  report.same = same(inWorker.value, onPage.value);
  report.inputsIntact = q.data.length === n * d && k.data.length === n * d;
  report.progress = { count: progress.length, last: progress.at(-1), increasing: progress.every((p, i) => i === 0 || p.done > progress[i - 1].done) };

  const controller = new AbortController();
  const long = failure(lib.exactAttention(q, k, v, { backend: 'cpu', signal: controller.signal }));
  await new Promise((resolve) => setTimeout(resolve, 300));
  const abortedAt = performance.now();
  controller.abort();
  report.abort = { ...(await long), ms: performance.now() - abortedAt };
  const after = await lib.hyperAttention(small, small, small, options);
  report.afterAbort = same(after, await lib.hyperAttention(small, small, small, { ...options, worker: false }));
  // The out option through the worker: its result copied into the page's array.
  const outArray = new Float32Array(small.data.length).fill(NaN);
  const intoOut = await lib.hyperAttention(small, small, small, { ...options, out: outArray });
  report.outOption = intoOut.out.data === outArray && same(intoOut, after);
  report.outError = await failure(lib.hyperAttention(small, small, small, { ...options, out: new Float32Array(3) }));

  const nan = tensor(12, 512);
  nan.data[77] = NaN;
  report.errors = {
    shape: await failure(lib.hyperAttention(q, small, v, options)),
    nonFinite: await failure(lib.exactAttention(nan, small, small, { backend: 'cpu' })),
    option: await failure(lib.hyperAttention(q, k, v, { blockSize: -1 })),
  };
  report.warnings = warnings;
  return report;
}

/** Runs in a page that cannot start the worker: two calls, and the warnings they gave. */
async function withoutWorker() {
  const lib = await import('/dist/browser/index.js');
  const warnings = [];
  lib.configureScheduler({ onWarning: (message) => warnings.push(message) });
  const x = { data: Float32Array.from({ length: 256 * 16 }, (_, i) => Math.sin(i)), shape: [1, 1, 256, 16] };
  const a = await lib.hyperAttention(x, x, x, { backend: 'cpu', threads: 1 });
  const b = await lib.exactAttention(x, x, x, { backend: 'cpu', threads: 1 });
  return { shapes: [a.out.shape, b.out.shape].map((s) => s.join('x')), warnings };
}

const fmt = (ms) => `${ms.toFixed(0)} ms`;

async function checkMode(browser, isolated) {
  const label = isolated ? 'isolated' : 'not isolated';
  const server = await startDemoServer({ port: 0, isolated });
  const context = await browser.newContext();
  context.setDefaultTimeout(scaled(30_000));
  try {
    const page = await context.newPage();
    const errors = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(server.url);
    // The demo draws its heatmaps on load, on the page's thread: the measurements start after.
    await page.waitForFunction(() => globalThis.hyperattentionDemo?.heatmap, undefined, { timeout: scaled(60_000) });
    const r = await page.evaluate(scenario, CASE);
    const workers = page.workers().map((w) => w.url());
    check(`${label}: crossOriginIsolated is ${isolated}`, r.isolated === isolated, String(r.isolated));
    check(`${label}: the call runs in the library's worker`, workers.some((url) => url.startsWith('blob:')), workers.join(', ') || 'no worker');
    check(`${label}: the worker's result equals the page thread's bit for bit (same seed)`, r.same);
    check(`${label}: the caller's input arrays stay usable (copied, not transferred)`, r.inputsIntact);
    check(`${label}: longest main-thread stall during a ${CASE.n / 1024}k call in the worker < ${fmt(stallBound)} (${STALL_BOUND_MS} ms × pace ${PACE.toFixed(1)}; target 50 ms)`,
      r.worker.longest < stallBound,
      `${fmt(r.worker.longest)} (longest task ${fmt(r.worker.longestTask)}), call ${fmt(r.worker.ms)}; on the page's thread (worker: false) the page froze ${fmt(r.page.longest)}, call ${fmt(r.page.ms)}`);
    check(`${label}: longest main-thread stall during the first call (worker start, calibration) < ${fmt(stallBound)}`,
      r.first.longest < stallBound, `${fmt(r.first.longest)}, call ${fmt(r.first.ms)}`);
    check(`${label}: the worker's profile is saved in the page's localStorage`, r.savedProfile);
    check(`${label}: profile: true and explain() answer from the worker`, r.profile.steps > 0 && r.profile.measuredMs > 0 && r.profile.explained > 0,
      `${r.profile.steps} profiled steps in ${r.profile.measuredMs?.toFixed(1)} ms; explain: ${r.profile.explained} steps`);
    const p = r.progress;
    check(`${label}: onProgress reaches the page, increasing, ending at total`,
      p.count > 0 && p.increasing && p.last?.done === p.last?.total, `${p.count} reports, last ${JSON.stringify(p.last)}`);
    check(`${label}: abort rejects with ABORTED within ${fmt(abortBound)} (${ABORT_BOUND_MS} ms × pace), and the next call works`,
      r.abort.code === 'ABORTED' && r.abort.typed && r.abort.ms < abortBound && r.afterAbort,
      `${r.abort.code} after ${fmt(r.abort.ms)}; next call ${r.afterAbort ? 'equal to the page thread\'s' : 'wrong'}`);
    const e = r.errors;
    check(`${label}: the out option's array holds the worker's result, bit for bit; a wrong length is INVALID_OPTION`,
      r.outOption && r.outError?.code === 'INVALID_OPTION' && r.outError.typed, JSON.stringify({ same: r.outOption, error: r.outError }));
    check(`${label}: errors arrive as HyperAttentionError with their code`,
      e.shape?.code === 'INVALID_SHAPE' && e.nonFinite?.code === 'NON_FINITE_INPUT' && e.option?.code === 'INVALID_OPTION' &&
        [e.shape, e.nonFinite, e.option].every((x) => x.typed),
      `${e.shape?.code}, ${e.nonFinite?.code}, ${e.option?.code}`);
    const threadWarnings = r.warnings.filter((w) => /cross-origin isolated/.test(w));
    check(`${label}: ${isolated ? 'no warning' : 'one warning'} about threads`, threadWarnings.length === (isolated ? 0 : 1) &&
      r.warnings.length === threadWarnings.length, r.warnings.join(' | ') || 'none');
    check(`${label}: no page errors`, errors.length === 0, errors.join('; '));
    return r;
  } finally {
    await context.close();
    await server.close();
  }
}

/** A page that cannot start the worker (`prepare` sees to it) runs calls on its own thread, and says so once. */
async function checkWithoutWorker(browser, label, prepare, reason) {
  const server = await startDemoServer({ port: 0 });
  const context = await browser.newContext();
  context.setDefaultTimeout(scaled(30_000));
  try {
    const page = await context.newPage();
    await prepare(page);
    await page.goto(server.url);
    await page.waitForFunction(() => globalThis.hyperattentionDemo?.heatmap, undefined, { timeout: scaled(60_000) });
    const r = await page.evaluate(withoutWorker);
    check(`${label}: calls run on the page's thread, said once`, r.shapes.join() === '1x1x256x16,1x1x256x16' &&
      r.warnings.length === 1 && reason.test(r.warnings[0]), `${r.shapes.join(', ')}; ${r.warnings.join(' | ')}`);
  } finally {
    await context.close();
    await server.close();
  }
}

const started = Date.now();
if (!existsSync(CHROMIUM)) {
  console.log(`browser worker checks: skipped, no ${CHROMIUM}; to enable: apt-get install -y chromium`);
} else if (!existsSync(new URL('../dist/browser/index.js', import.meta.url))) {
  check('browser build', false, 'dist/browser/index.js is missing: run npm run build');
} else {
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, timeout: scaled(180_000), args: ['--no-sandbox'] });
  try {
    for (const isolated of [true, false]) {
      try {
        await checkMode(browser, isolated);
      } catch (error) {
        check(`${isolated ? 'isolated' : 'not isolated'}: the page ran its checks`, false, error.message);
      }
    }
    const blocked = {
      'no Worker': [(page) => page.addInitScript(() => delete globalThis.Worker), /no Worker/],
      // The worker's Blob URL refused: the call is already in flight when the worker fails.
      "CSP worker-src 'self'": [(page) => page.route('**/', async (route) => {
        const response = await route.fetch();
        await route.fulfill({ response, headers: { ...response.headers(), 'content-security-policy': "worker-src 'self'" } });
      }), /failed to start/],
    };
    for (const [label, [prepare, reason]] of Object.entries(blocked)) {
      try {
        await checkWithoutWorker(browser, label, prepare, reason);
      } catch (error) {
        check(`${label}: the page ran its checks`, false, error.message);
      }
    }
  } finally {
    await browser.close();
  }
}
console.log(`(${((Date.now() - started) / 1000).toFixed(1)} s)`);
finish();
