// The demo page (examples/browser/index.html): exact attention vs HyperAttention on a
// backend the visitor picks, the sortLSH heatmaps, and the speed chart. It imports the
// library's browser build as 'hyperattention' (an import map points at dist/browser/) and
// the benchmark workloads, so the page computes exactly what `npm start` does.
// Calls run in the library's worker unless 'on the page's thread' is ticked (worker:
// false); each run reports how long its calls froze the page, which shows the difference.
// URL parameters preset the form (n, causal, backend, workload, seed, worker=0; run=1
// starts a run), and window.hyperattentionDemo holds the runs and last outputs for the
// embedding test.
import { DEFAULTS, exactAttention, hyperAttention, lshOrder, type BackendChoice } from 'hyperattention';
import { WORKLOADS, type WorkloadName } from '../../bench/workloads.ts';
import { attentionErrors, evenRows } from '../../bench/error.ts';
import { benchCaption, loadBenchResults, PAGE_HEAD_DIM, speedChartSvg, type BenchFile, type PageRun } from './chart.ts';
import { attentionMatrix, drawHeatmap, LEGEND_GRADIENT, massShares } from './heatmap.ts';

const D = PAGE_HEAD_DIM;
const BACKEND_LABELS: Record<BackendChoice, string> = { auto: 'auto', webgpu: 'WebGPU', cpu: 'WebAssembly' };

/** What the embedding test reads back. */
interface DemoHandle {
  runs: PageRun[];
  /** outputs of the last successful run: exact and HyperAttention out [1, 1, n, D] */
  outputs?: { exact: Float32Array; hyper: Float32Array };
  /** the last run's error message, if it failed */
  error?: string;
  busy: boolean;
  heatmap?: { n: number; blockSize: number; before: number; after: number };
}

const demo: DemoHandle = { runs: [], busy: false };
(globalThis as { hyperattentionDemo?: DemoHandle }).hyperattentionDemo = demo;

function element<T extends HTMLElement>(id: string): T {
  const el = document.getElementById(id);
  if (!el) throw new Error(`demo page: no #${id}`);
  return el as T;
}

const form = element<HTMLFormElement>('run-form');
const status = element<HTMLParagraphElement>('run-status');
const table = element<HTMLTableSectionElement>('runs');
const chart = element<HTMLDivElement>('chart');
const chartCaption = element<HTMLParagraphElement>('chart-caption');
const field = (name: string) => element<HTMLInputElement | HTMLSelectElement>(name);

/** Lets the browser paint a status line before the main thread is busy computing. */
const paint = () => new Promise((resolve) => setTimeout(resolve, 30));
const seconds = (ms: number) => (ms / 1000).toFixed(ms < 10_000 ? 3 : 1);

function setStatus(text: string, kind: 'info' | 'error' = 'info'): void {
  status.textContent = text;
  status.className = kind;
}

async function describeWebGPU(): Promise<string> {
  const gpu = (navigator as Navigator & { gpu?: GPU }).gpu;
  if (!gpu) return 'WebGPU: not available in this browser; WebGPU runs will fail and auto uses WebAssembly.';
  const adapter = await gpu.requestAdapter().catch(() => null);
  if (!adapter) return 'WebGPU: the browser has the API but found no adapter; auto uses WebAssembly.';
  const info = adapter.info;
  const name = [info.vendor, info.architecture, info.description].filter(Boolean).join(' ') || 'unnamed adapter';
  // isFallbackAdapter moved from the adapter to its info; read whichever this browser has.
  const fallback = (info as { isFallbackAdapter?: boolean }).isFallbackAdapter ?? (adapter as { isFallbackAdapter?: boolean }).isFallbackAdapter;
  return `WebGPU: ${name}${fallback ? ' (a software adapter: expect it to be slower than WebAssembly)' : ''}.`;
}

function describeThreads(): string {
  const where = 'Calls run in the library\'s worker (unless "on the page\'s thread" is ticked), so this page stays responsive';
  return crossOriginIsolated
    ? `${where}; the page is cross-origin isolated, so they may use WebAssembly threads.`
    : `${where}; the page is not cross-origin isolated (no COOP/COEP headers), so they run on one thread.`;
}

const warmed = new Set<string>();

/** First calls compile WebAssembly or GPU pipelines (in the worker and on the page apart); a small hyper and exact call take that cost off the timings. */
async function warmUp(backend: BackendChoice, worker: boolean): Promise<void> {
  if (warmed.has(`${backend} ${worker}`)) return;
  const { q, k, v } = WORKLOADS.gaussian.generate({ B: 1, H: 1, n: 256, d: D, seed: 1 });
  await exactAttention(q, k, v, { backend, worker });
  await hyperAttention(q, k, v, { backend, worker, minSeqLen: 0, blockSize: 64, sampleSize: 64 });
  warmed.add(`${backend} ${worker}`);
}

/**
 * Runs a call, timing it and watching the page's event loop meanwhile: the longest gap
 * between two turns of the loop is how long the call froze the page.
 */
async function watched<T>(call: () => Promise<T>): Promise<{ value: T; ms: number; frozen: number }> {
  const start = performance.now();
  let last = start;
  let frozen = 0;
  let on = true;
  const tick = () => {
    const now = performance.now();
    frozen = Math.max(frozen, now - last);
    last = now;
    if (on) setTimeout(tick, 0);
  };
  setTimeout(tick, 0);
  try {
    const value = await call();
    return { value, ms: performance.now() - start, frozen: Math.max(frozen, performance.now() - last) };
  } finally {
    on = false;
  }
}

function addRow(r: PageRun): void {
  const tr = document.createElement('tr');
  const flops = (4 * r.n * r.n * D) / (r.causal ? 2 : 1);
  const cells = [
    r.workload, String(r.n), r.causal ? 'yes' : 'no', BACKEND_LABELS[r.backend as BackendChoice] ?? r.backend,
    seconds(r.exactMs), seconds(r.hyperMs), `${(r.exactMs / r.hyperMs).toFixed(1)}×`, r.relError.toFixed(4), r.relToV.toFixed(4), r.authorsError.toFixed(4),
    (flops / r.exactMs / 1e6).toFixed(1),
  ];
  for (const text of cells) {
    const td = document.createElement('td');
    td.textContent = text;
    tr.append(td);
  }
  table.prepend(tr);
}

let bench: BenchFile | undefined;

function drawChart(): void {
  const causal = (field('causal') as HTMLInputElement).checked;
  const svg = speedChartSvg(bench, demo.runs, causal);
  chart.innerHTML = svg || '<p class="note">Nothing to plot yet.</p>';
  element('chart-title').textContent = `Time per call against n, ${causal ? 'causal' : 'non-causal'}`;
}

async function run(): Promise<void> {
  if (demo.busy) return;
  demo.busy = true;
  demo.error = undefined;
  const button = element<HTMLButtonElement>('run-button');
  button.disabled = true;
  const workload = field('workload').value as WorkloadName;
  const n = Number(field('n').value);
  const causal = (field('causal') as HTMLInputElement).checked;
  const backend = field('backend').value as BackendChoice;
  const seed = Number(field('seed').value) >>> 0;
  const worker = !(field('page-thread') as HTMLInputElement).checked;
  try {
    setStatus(`Preparing the ${BACKEND_LABELS[backend]} backend…`);
    await paint();
    await warmUp(backend, worker);
    const { q, k, v } = WORKLOADS[workload].generate({ B: 1, H: 1, n, d: D, seed, causal });
    const flops = (4 * n * n * D) / (causal ? 2 : 1);
    setStatus(`Exact attention, n = ${n}: ${(flops / 1e9).toFixed(1)} GFLOP…`);
    await paint();
    const { value: exact, ms: exactMs, frozen: exactFrozen } = await watched(() => exactAttention(q, k, v, { causal, backend, worker }));
    setStatus(`HyperAttention, n = ${n}…`);
    await paint();
    const { value: hyper, ms: hyperMs, frozen: hyperFrozen } = await watched(() => hyperAttention(q, k, v, { causal, backend, seed, worker }));
    // Errors against the exact output of this run, measured as the accuracy benchmark measures them.
    const reference = { rows: evenRows(n, n), out: Float64Array.from(exact.out.data), lse: Float64Array.from(exact.lse.data) };
    const errors = attentionErrors(reference, hyper.out.data, hyper.lse.data, v.data, D);
    setStatus(`The authors' algorithm (mode 'reference'), n = ${n}, for its error…`);
    await paint();
    const authors = await hyperAttention(q, k, v, { causal, backend, seed, worker, mode: 'reference' });
    const authorsError = attentionErrors(reference, authors.out.data, authors.lse.data, v.data, D).relFrobenius;
    const r: PageRun = {
      workload, n, causal, backend, seed, exactMs, hyperMs, relError: errors.relFrobenius, relToV: errors.relToV, authorsError,
    };
    demo.runs.push(r);
    demo.outputs = { exact: exact.out.data, hyper: hyper.out.data };
    addRow(r);
    drawChart();
    const exactOnly = causal ? n <= DEFAULTS.minSeqLen : n < DEFAULTS.minSeqLen;
    const frozen = Math.max(exactFrozen, hyperFrozen);
    setStatus(
      `Done: HyperAttention took ${seconds(hyperMs)} s against ${seconds(exactMs)} s for exact attention. ` +
        `They froze the page for at most ${frozen.toFixed(0)} ms (${worker ? 'in the library\'s worker' : 'on the page\'s thread'}).` +
        (exactOnly ? ` At this n HyperAttention computes exact attention by design (minSeqLen ${DEFAULTS.minSeqLen}): pick a larger n to see it approximate.` : ''),
    );
  } catch (error) {
    demo.error = error instanceof Error ? `${error.name}${'code' in error ? ` ${String(error.code)}` : ''}: ${error.message}` : String(error);
    setStatus(`The run failed: ${demo.error}`, 'error');
  } finally {
    demo.busy = false;
    button.disabled = false;
  }
}

async function drawHeatmaps(): Promise<void> {
  const workload = field('heat-workload').value as WorkloadName;
  const n = Number(field('heat-n').value);
  const blockSize = Number(field('heat-block').value);
  const seed = Number(field('seed').value) >>> 0;
  const caption = element<HTMLParagraphElement>('heat-caption');
  caption.textContent = `Computing the ${n} × ${n} attention matrix…`;
  await paint();
  const { q, k } = WORKLOADS[workload].generate({ B: 1, H: 1, n, d: D, seed });
  const order = await lshOrder(q, k, { blockSize, seed });
  const p = attentionMatrix(q, k);
  drawHeatmap(element<HTMLCanvasElement>('heat-before'), p, n, order, false);
  drawHeatmap(element<HTMLCanvasElement>('heat-after'), p, n, order, true);
  const shares = massShares(p, n, order);
  const pct = (x: number) => `${(100 * x).toFixed(1)}%`;
  demo.heatmap = { n, blockSize, before: shares.before, after: shares.after };
  caption.textContent =
    `The ${order.numBlocks} outlined diagonal blocks cover ${pct(shares.area)} of the matrix. In the original order they hold ` +
    `${pct(shares.before)} of the attention mass; after sortLSH they hold ${pct(shares.after)}. The authors' algorithm ` +
    `computes these blocks exactly and estimates the rest from ${DEFAULTS.sampleSize} sampled keys per row.`;
}

function applyUrlParameters(): boolean {
  const params = new URLSearchParams(location.search);
  for (const name of ['n', 'backend', 'workload', 'seed']) {
    const value = params.get(name);
    if (value !== null) field(name).value = value;
  }
  if (params.has('causal')) (field('causal') as HTMLInputElement).checked = params.get('causal') === '1';
  if (params.has('worker')) (field('page-thread') as HTMLInputElement).checked = params.get('worker') === '0';
  return params.get('run') === '1';
}

async function main(): Promise<void> {
  element('legend-bar').style.background = LEGEND_GRADIENT;
  const autoRun = applyUrlParameters();
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    void run();
  });
  field('causal').addEventListener('change', drawChart);
  // The seed draws the heatmap's inputs and projections too.
  for (const id of ['heat-form', 'seed']) element(id).addEventListener('change', () => void drawHeatmaps());
  element('thread-info').textContent = describeThreads();
  element('webgpu-info').textContent = await describeWebGPU();
  bench = await loadBenchResults();
  chartCaption.textContent = benchCaption(bench);
  drawChart();
  await drawHeatmaps();
  if (autoRun) await run();
}

void main();
