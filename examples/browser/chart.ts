// The demo page's speed chart: time per call against n, log-log, for exact attention and
// HyperAttention from the end-to-end benchmark (bench/results/e2e.json, written by
// `npm run bench`), with the runs made on the page drawn over it. Plain SVG markup.
import type { CaseResult, SuiteResults } from '../../bench/harness.ts';

/** One exact-vs-hyper run made on this page. */
export interface PageRun {
  workload: string;
  n: number;
  causal: boolean;
  backend: string;
  seed: number;
  exactMs: number;
  hyperMs: number;
  /** ||hyper - exact||_F / ||exact||_F of the output */
  relError: number;
  /** RMS row error over RMS row norm of v */
  relToV: number;
  /** relError of the authors' algorithm (mode 'reference') on the same input */
  authorsError: number;
}

/** The head dim of the page's runs; the chart shows the bench cases of the same. */
export const PAGE_HEAD_DIM = 64;

export interface BenchFile {
  results: SuiteResults;
  /** where it was read from, for the caption */
  path: string;
}

/** Full results first; a --quick run's when that is all there is. */
const BENCH_PATHS = ['bench/results/e2e.json', 'bench/results/quick/e2e.json'];

export async function loadBenchResults(): Promise<BenchFile | undefined> {
  for (const path of BENCH_PATHS) {
    const response = await fetch(`/${path}`).catch(() => undefined);
    if (response?.ok) return { results: (await response.json()) as SuiteResults, path };
  }
  return undefined;
}

const COLOURS: Record<string, string> = {
  'exact cpu': '#7a7a85',
  'hyper cpu': '#e8590c',
  'exact webgpu': '#4263eb',
  'hyper webgpu': '#ae3ec9',
  peer: '#b8b8c0',
};
const BACKEND_NAMES: Record<string, string> = { auto: 'auto', cpu: 'WebAssembly', webgpu: 'WebGPU' };
const colourOf = (method: string, backend: string) =>
  COLOURS[backend === 'peer' ? 'peer' : `${method} ${backend === 'auto' ? 'cpu' : backend}`] ?? '#555';

const escapeXml = (s: string) => s.replace(/[<>&"]/g, (c) => `&#${c.charCodeAt(0)};`);

function label(n: number): string {
  return n >= 1024 ? `${n / 1024}k` : String(n);
}

function msLabel(ms: number): string {
  return ms >= 1000 ? `${ms / 1000} s` : `${ms} ms`;
}

interface Series {
  name: string;
  colour: string;
  dashed: boolean;
  points: [number, number][];
}

/** SVG markup of the chart for the causal or non-causal cases. */
export function speedChartSvg(bench: BenchFile | undefined, runs: PageRun[], causal: boolean): string {
  const series = new Map<string, Series>();
  for (const c of bench?.results.cases ?? []) {
    if (c.status !== 'ok' || !c.time || c.params.causal !== causal || typeof c.params.n !== 'number') continue;
    if (c.params.d !== undefined && c.params.d !== PAGE_HEAD_DIM) continue;
    // Peers are named by package, e.g. 'onnxruntime-node MultiHeadAttention' -> 'onnxruntime-node'.
    const name = c.backend === 'peer' ? c.method.split(' ')[0] : `${c.method} (${BACKEND_NAMES[c.backend] ?? c.backend})`;
    const s = series.get(name) ?? { name, colour: colourOf(c.method, c.backend), dashed: c.backend === 'peer', points: [] };
    s.points.push([c.params.n, c.time.medianMs]);
    series.set(name, s);
  }
  const mine = runs.filter((r) => r.causal === causal);
  const all = [...[...series.values()].flatMap((s) => s.points), ...mine.flatMap((r): [number, number][] => [[r.n, r.exactMs], [r.n, r.hyperMs]])];
  if (all.length === 0) return '';

  const W = 760;
  const H = 300;
  const m = { left: 58, right: 240, top: 14, bottom: 40 };
  const nMin = Math.min(...all.map((p) => p[0])) / 1.25;
  const nMax = Math.max(...all.map((p) => p[0])) * 1.25;
  const tMin = 10 ** Math.floor(Math.log10(Math.min(...all.map((p) => p[1]))));
  const tMax = 10 ** Math.ceil(Math.log10(Math.max(...all.map((p) => p[1]))));
  const x = (n: number) => m.left + ((Math.log(n) - Math.log(nMin)) / (Math.log(nMax) - Math.log(nMin))) * (W - m.left - m.right);
  const y = (t: number) => H - m.bottom - ((Math.log(t) - Math.log(tMin)) / (Math.log(tMax) - Math.log(tMin))) * (H - m.top - m.bottom);

  const parts: string[] = [];
  for (let n = 2 ** Math.ceil(Math.log2(nMin)); n <= nMax; n *= 2) {
    parts.push(`<line x1="${x(n)}" x2="${x(n)}" y1="${m.top}" y2="${H - m.bottom}" class="grid"/>`);
    parts.push(`<text x="${x(n)}" y="${H - m.bottom + 16}" text-anchor="middle">${label(n)}</text>`);
  }
  for (let t = tMin; t <= tMax; t *= 10) {
    parts.push(`<line x1="${m.left}" x2="${W - m.right}" y1="${y(t)}" y2="${y(t)}" class="grid"/>`);
    parts.push(`<text x="${m.left - 6}" y="${y(t) + 4}" text-anchor="end">${msLabel(t)}</text>`);
  }
  parts.push(`<text x="${(m.left + W - m.right) / 2}" y="${H - 6}" text-anchor="middle">sequence length n</text>`);

  let row = 0;
  const legend = (colour: string, text: string, mark: string) => {
    const ly = m.top + 8 + row++ * 20;
    parts.push(`${mark.replaceAll('CX', String(W - m.right + 24)).replaceAll('CY', String(ly))}`);
    parts.push(`<text x="${W - m.right + 40}" y="${ly + 4}" fill="${colour}">${escapeXml(text)}</text>`);
  };
  for (const s of series.values()) {
    s.points.sort((a, b) => a[0] - b[0]);
    const d = s.points.map(([n, t], i) => `${i ? 'L' : 'M'}${x(n).toFixed(1)},${y(t).toFixed(1)}`).join('');
    const dash = s.dashed ? ' stroke-dasharray="5 4"' : '';
    parts.push(`<path d="${d}" fill="none" stroke="${s.colour}" stroke-width="2"${dash}/>`);
    for (const [n, t] of s.points) parts.push(`<circle cx="${x(n)}" cy="${y(t)}" r="3" fill="${s.colour}"/>`);
    legend(s.colour, s.name, `<line x1="${W - m.right + 14}" x2="${W - m.right + 34}" y1="CY" y2="CY" stroke="${s.colour}" stroke-width="2"${dash}/>`);
  }
  const marked = new Set<string>();
  for (const r of mine) {
    for (const [method, ms] of [['exact', r.exactMs], ['hyper', r.hyperMs]] as const) {
      const colour = colourOf(method, r.backend);
      const name = `${method} (${BACKEND_NAMES[r.backend] ?? r.backend}), this page`;
      parts.push(`<rect x="${x(r.n) - 5}" y="${y(ms) - 5}" width="10" height="10" fill="${colour}" class="mine"><title>${escapeXml(name)}, n = ${r.n}: ${ms.toFixed(1)} ms</title></rect>`);
      if (!marked.has(name)) legend(colour, name, `<rect x="CX" y="CY" width="10" height="10" transform="translate(-5 -5)" fill="${colour}" class="mine"/>`);
      marked.add(name);
    }
  }
  return `<svg viewBox="0 0 ${W} ${H}" role="img" aria-label="time per call against sequence length">${parts.join('')}</svg>`;
}

/** One line about where the bench figures come from. */
export function benchCaption(bench: BenchFile | undefined): string {
  if (!bench) return 'No benchmark results yet: `npm run bench` writes bench/results/e2e.json. Runs you make here are plotted meanwhile.';
  const { machine, quick, startedAt } = bench.results;
  const cases: CaseResult[] = bench.results.cases;
  const kinds = new Set(cases.map((c) => c.backend));
  return `Lines: ${bench.path}${quick ? ' (a --quick run)' : ''}, ${startedAt.slice(0, 10)}, ${machine.cpu}, ${machine.cores} cores, Node ${machine.node}` +
    `${kinds.has('webgpu') ? '' : ', no WebGPU adapter'}. Median time per call, one head, d = ${PAGE_HEAD_DIM}.`;
}
