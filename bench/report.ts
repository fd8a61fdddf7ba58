// Renders the bench results (bench/results/<suite>.json) into the README, between the
// markers <!-- bench:start --> and <!-- bench:end -->, and into SVG charts in docs/.
// `npm run bench:report` renders the full run's results; `-- --quick` renders the last
// quick run instead (to check the rendering; its figures are not for publishing).
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BENCH_DIR, RESULTS_DIR, formatMs, formatRate, type CaseResult, type SuiteResults } from './harness.ts';
import {
  HEADLINE_SIZES, ORT_NODE_MHA, ORT_NODE_MHA_1T, ORT_WEB_DECOMPOSED, ORT_WEB_MHA, OURS_EXACT,
  compareModes, exactThroughputRatios, hyperVsOrtNode, ratioAtLargestN,
} from './summary.ts';
import { PALETTE, renderChart, type Panel, type Series } from './svg.ts';

const ROOT = join(BENCH_DIR, '..');
const README = join(ROOT, 'README.md');
const DOCS = join(ROOT, 'docs');
const START = '<!-- bench:start -->';
const END = '<!-- bench:end -->';
const QUICK = process.argv.includes('--quick');
const SOURCE = QUICK ? join(RESULTS_DIR, 'quick') : RESULTS_DIR;

function fail(message: string): never {
  console.error(`bench:report: ${message}`);
  process.exit(1);
}

function load(suite: string): SuiteResults | null {
  const file = join(SOURCE, `${suite}.json`);
  if (!existsSync(file)) return null;
  return JSON.parse(readFileSync(file, 'utf8')) as SuiteResults;
}

// --- formatting ---

const nLabel = (n: number) => (n >= 1024 ? `${n / 1024}k` : String(n));
const ratio = (x: number) => `${x >= 10 ? x.toFixed(0) : x.toPrecision(2)}x`;
/** Mode ratios sit near 1: they need the third digit. */
const closeRatio = (x: number) => `${x.toFixed(3)}x`;
const sci = (x: number) => (x === 0 ? '0' : x >= 0.01 && x < 100 ? x.toPrecision(2) : x.toExponential(1));
const ok = (c: CaseResult | undefined): c is CaseResult & { time: NonNullable<CaseResult['time']> } => c?.status === 'ok' && c.time !== undefined;

function cellTime(c: CaseResult | undefined): string {
  if (!c) return '—';
  if (c.status === 'skipped') return 'skipped';
  if (c.status === 'failed') return 'failed';
  return formatMs(c.time!.medianMs);
}

function table(header: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(' | ')} |`;
  return [line(header), line(header.map(() => '---')), ...rows.map(line)].join('\n');
}

function find(cases: readonly CaseResult[], method: string, backend: string | null, params: Record<string, unknown>): CaseResult | undefined {
  return cases.find((c) => c.method === method && (backend === null || c.backend === backend) && Object.entries(params).every(([k, v]) => c.params[k] === v));
}

const sizes = (cases: readonly CaseResult[]) => [...new Set(cases.map((c) => c.params.n as number))].sort((a, b) => a - b);

// --- machine ---

function machineLine(results: SuiteResults[]): string {
  const m = results[0].machine;
  const peers = Object.entries(Object.assign({}, ...results.map((r) => r.machine.peers)) as Record<string, string | null>)
    .map(([name, v]) => `${name} ${v ?? 'missing'}`)
    .join(', ');
  const adapter = m.adapter
    ? `WebGPU adapter: ${[m.adapter.vendor, m.adapter.architecture, m.adapter.description].filter(Boolean).join(' ')}${m.adapter.isFallbackAdapter ? ' (software)' : ''}`
    : 'no WebGPU adapter';
  const loads = results.map((r) => `${r.suite} ${r.machine.loadAverage[0]}`).join(', ');
  const when = results.map((r) => r.startedAt.slice(0, 10)).sort().at(-1);
  return [
    `${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB; ${m.os}; Node ${m.node}; ${peers}; ${adapter}.`,
    `Run ${when}${m.gitCommit ? ` at ${m.gitCommit}` : ''}${results.some((r) => r.quick) ? ', **quick run: not for quoting**' : ''}; load average at the start of each suite: ${loads}.`,
  ].join(' ');
}

// --- headline ---

function headline(e2e: SuiteResults | null, peers: SuiteResults | null, accuracy: SuiteResults | null): string {
  const rows: string[][] = [];
  const targets: Record<number, number> = { 16384: 10, 65536: 40 };
  for (const n of HEADLINE_SIZES) {
    const r = e2e ? hyperVsOrtNode(e2e.cases, n) : null;
    rows.push([
      `hyper (cpu) vs onnxruntime-node exact, non-causal, d = 64, n = ${nLabel(n)}`,
      `>= ${targets[n]}x faster`,
      r === null ? 'not measured' : `${ratio(r)} faster`,
      r === null ? '—' : r >= targets[n] ? 'yes' : 'no',
    ]);
  }
  const ratios = peers ? exactThroughputRatios(peers.cases) : [];
  const vsNode = ratioAtLargestN(ratios, 'onnxruntime-node', [ORT_NODE_MHA_1T]);
  const vsWeb = ratioAtLargestN(ratios, 'onnxruntime-web');
  for (const [label, target, r] of [
    ['our wasm exact attention vs onnxruntime-node, GFLOP/s', 0.5, vsNode],
    ['our wasm exact attention vs onnxruntime-web (wasm), GFLOP/s', 1.5, vsWeb],
  ] as const) {
    rows.push([
      label,
      `>= ${target}x`,
      r ? `${ratio(r.ratio)} (n = ${nLabel(r.n)}, d = ${r.d}, vs ${r.peer.replace(/^onnxruntime-(node|web) /, '')})` : 'not measured',
      r ? (r.ratio >= target ? 'yes' : 'no') : '—',
    ]);
  }
  const modes = accuracy ? compareModes(accuracy.cases) : [];
  if (modes.length) {
    const geo = (xs: number[]) => Math.exp(xs.reduce((s, x) => s + Math.log(x), 0) / xs.length);
    const err = geo(modes.map((m) => m.errorRatio));
    const time = geo(modes.map((m) => m.timeRatio));
    rows.push([
      'fixed vs reference mode (error, time; geometric mean over workloads)',
      'decides the default mode',
      `error ${closeRatio(err)}, time ${closeRatio(time)}`,
      Math.abs(Math.log(err)) < 0.02 ? 'no difference beyond 2%' : err < 1 ? 'fixed is more accurate' : 'reference is more accurate',
    ]);
  }
  return table(['target (from the issue)', 'goal', 'measured', 'met'], rows);
}

// --- sections ---

const E2E_METHODS: { method: string; backend: string; label: string; color: string; dashed?: boolean }[] = [
  { method: 'hyper', backend: 'cpu', label: 'hyper (cpu)', color: PALETTE[0] },
  { method: 'exact', backend: 'cpu', label: 'exact (cpu)', color: PALETTE[1] },
  { method: ORT_NODE_MHA, backend: 'peer', label: 'onnxruntime-node exact', color: PALETTE[2] },
  { method: 'hyper', backend: 'webgpu', label: 'hyper (webgpu)', color: PALETTE[0], dashed: true },
  { method: 'exact', backend: 'webgpu', label: 'exact (webgpu)', color: PALETTE[1], dashed: true },
];

const groupsOf = (cases: readonly CaseResult[]) => {
  const dims = [...new Set(cases.map((c) => c.params.d as number))].sort((a, b) => a - b);
  return [false, true].flatMap((causal) => dims.map((d) => ({ causal, d })));
};
const groupTitle = (g: { causal: boolean; d: number }) => `${g.causal ? 'causal' : 'non-causal'}, d = ${g.d}`;

function e2eSection(e2e: SuiteResults): string {
  const rows: string[][] = [];
  const backends = new Set(e2e.cases.map((c) => c.backend));
  const methods = E2E_METHODS.filter((m) => backends.has(m.backend));
  for (const g of groupsOf(e2e.cases)) {
    for (const n of sizes(e2e.cases)) {
      const at = (m: (typeof methods)[number]) => find(e2e.cases, m.method, m.backend, { n, ...g });
      const hyper = at(methods[0]);
      const exact = at(methods[1]);
      const ort = find(e2e.cases, ORT_NODE_MHA, 'peer', { n, ...g });
      const speed = (other: CaseResult | undefined) => (ok(hyper) && ok(other) ? ratio(other.time.medianMs / hyper.time.medianMs) : '—');
      rows.push([groupTitle(g), nLabel(n), ...methods.map((m) => cellTime(at(m))), speed(exact), speed(ort)]);
    }
  }
  return table(['case', 'n', ...methods.map((m) => m.label), 'hyper vs exact (cpu)', 'hyper vs onnxruntime-node'], rows);
}

const PEER_COLUMNS = [OURS_EXACT, ORT_NODE_MHA, ORT_NODE_MHA_1T, ORT_WEB_MHA, ORT_WEB_DECOMPOSED];

function peersSection(peers: SuiteResults): string {
  const rows: string[][] = [];
  const dims = [...new Set(peers.cases.map((c) => c.params.d as number))].sort((a, b) => a - b);
  for (const d of dims) {
    for (const n of sizes(peers.cases)) {
      rows.push([String(d), nLabel(n), ...PEER_COLUMNS.map((method) => {
        const c = find(peers.cases, method, null, { n, d });
        return ok(c) ? `${c.metrics!.gflops.toFixed(1)}` : cellTime(c);
      })]);
    }
  }
  return table(['d', 'n', ...PEER_COLUMNS.map((m) => `${m} GFLOP/s`)], rows);
}

function kernelsSection(kernels: SuiteResults): string {
  const rows = kernels.cases.map((c) => {
    const { d, ...rest } = c.params;
    const shape = Object.entries(rest).map(([k, v]) => (typeof v === 'boolean' ? (v ? k : `non-${k}`) : `${k} ${v}`)).join(', ');
    return [
      c.method, c.backend, String(d), shape, cellTime(c),
      ok(c) ? formatRate(c.metrics!.rowsPerS) : '—',
      ok(c) && c.metrics!.gflops !== undefined ? c.metrics!.gflops.toFixed(1) : '—',
    ];
  });
  return table(['op', 'backend', 'd', 'shape', 'time per op', 'rows/s', 'GFLOP/s'], rows);
}

function accuracySection(accuracy: SuiteResults): string {
  const cases = accuracy.cases.filter((c) => c.method === 'hyper');
  const n = Math.max(...cases.map((c) => c.params.n as number));
  const settings = [...new Set(cases.map((c) => `${c.params.blockSize}/${c.params.sampleSize}`))];
  const workloads = [...new Set(cases.map((c) => String(c.params.workload)))];
  const rows: string[][] = [];
  for (const workload of workloads) {
    for (const causal of [false, true]) {
      for (const s of settings) {
        const [blockSize, sampleSize] = s.split('/').map(Number);
        const cell = (mode: string) => {
          const c = find(cases, 'hyper', null, { workload, n, causal, mode, blockSize, sampleSize });
          if (!ok(c)) return [cellTime(c), '', '', ''];
          const heads = c.params.heads as number;
          return [sci(c.metrics!.relFrobenius), sci(c.metrics!.relToV), sci(c.metrics!.maxLseError), formatMs(c.time.medianMs / heads)];
        };
        rows.push([workload, causal ? 'causal' : 'non-causal', `${blockSize} / ${sampleSize}`, ...cell('reference'), ...cell('fixed')]);
      }
    }
  }
  const modes = compareModes(accuracy.cases);
  const summary = table(
    ['workload', 'fixed / reference: rel. Frobenius', 'rel. to V', 'max lse error', 'time', 'cases'],
    modes.map((m) => [m.workload, closeRatio(m.errorRatio), closeRatio(m.relToVRatio), closeRatio(m.lseRatio), closeRatio(m.timeRatio), String(m.cases)]),
  );
  const detail = table(
    ['workload', 'case', 'b / m', 'ref: rel. Frob.', 'ref: rel. to V', 'ref: max lse err', 'ref: time/head', 'fixed: rel. Frob.', 'fixed: rel. to V', 'fixed: max lse err', 'fixed: time/head'],
    rows,
  );
  return `${summary}\n\nAt n = ${nLabel(n)} (all sizes in \`bench/results/accuracy.json\`):\n\n${detail}`;
}

// --- charts ---

const X_TICKS = [1024, 4096, 16384, 65536, 131072];
const timeY = (ms: number) => formatMs(ms).replace('.00', '');

function timeChart(e2e: SuiteResults): string {
  const panels: Panel[] = groupsOf(e2e.cases).map((g) => ({
    title: groupTitle(g),
    series: E2E_METHODS.map((m): Series => ({
      label: m.label,
      color: m.color,
      dashed: m.dashed,
      points: e2e.cases
        .filter((c) => ok(c) && c.method === m.method && c.backend === m.backend && c.params.causal === g.causal && c.params.d === g.d)
        .map((c) => [c.params.n as number, c.time!.medianMs] as [number, number])
        .sort((a, b) => a[0] - b[0]),
    })),
  }));
  return renderChart({
    title: 'Attention time vs sequence length (one head, log-log)',
    subtitle: 'median wall time of one call; exact attention is quadratic, hyper near-linear (exact below n = 4096)',
    xLabel: 'sequence length n',
    yLabel: 'time per call',
    panels,
    columns: 2,
    formatX: nLabel,
    formatY: timeY,
    xTicks: X_TICKS.filter((t) => t <= Math.max(...e2e.cases.map((c) => c.params.n as number)) * 1.01),
  });
}

function peersChart(peers: SuiteResults): string {
  const dims = [...new Set(peers.cases.map((c) => c.params.d as number))].sort((a, b) => a - b);
  const labels: Record<string, [string, string, boolean]> = {
    [OURS_EXACT]: ['ours (wasm, 1 thread)', PALETTE[0], false],
    [ORT_NODE_MHA]: ['onnxruntime-node MHA (all cores)', PALETTE[2], false],
    [ORT_NODE_MHA_1T]: ['onnxruntime-node MHA (1 thread)', PALETTE[2], true],
    [ORT_WEB_MHA]: ['onnxruntime-web MHA (wasm)', PALETTE[3], false],
    [ORT_WEB_DECOMPOSED]: ['onnxruntime-web MatMul-Softmax-MatMul', PALETTE[4], false],
  };
  const panels: Panel[] = dims.map((d) => ({
    title: `exact attention, non-causal, d = ${d}`,
    series: PEER_COLUMNS.map((method) => ({
      label: labels[method][0],
      color: labels[method][1],
      dashed: labels[method][2],
      points: peers.cases
        .filter((c) => ok(c) && c.method === method && c.params.d === d)
        .map((c) => [c.params.n as number, c.metrics!.gflops] as [number, number])
        .sort((a, b) => a[0] - b[0]),
    })),
  }));
  return renderChart({
    title: 'Exact attention throughput vs the peers (same inputs, same process)',
    subtitle: 'GFLOP/s = 4 n^2 d / time; onnxruntime-web MultiHeadAttention fails from n = 4096',
    xLabel: 'sequence length n',
    yLabel: 'GFLOP/s',
    panels,
    columns: dims.length,
    formatX: nLabel,
    formatY: (y) => String(y),
    xTicks: sizes(peers.cases),
  });
}

function accuracyChart(accuracy: SuiteResults, metric: 'relFrobenius' | 'relToV', title: string): string {
  const cases = accuracy.cases.filter((c) => ok(c) && c.method === 'hyper');
  const workloads = [...new Set(cases.map((c) => String(c.params.workload)))];
  const settings = [...new Set(cases.map((c) => c.params.blockSize as number))].sort((a, b) => a - b);
  const panels: Panel[] = workloads.flatMap((workload) =>
    [false, true].map((causal) => ({
      title: `${workload}, ${causal ? 'causal' : 'non-causal'}`,
      series: settings.flatMap((b, i) =>
        (['fixed', 'reference'] as const).map((mode) => ({
          label: `b = m = ${b}, ${mode}`,
          color: PALETTE[i],
          dashed: mode === 'reference',
          points: cases
            .filter((c) => c.params.workload === workload && c.params.causal === causal && c.params.mode === mode && c.params.blockSize === b)
            .map((c) => [c.params.n as number, c.metrics![metric]] as [number, number])
            .sort((p, q) => p[0] - q[0]),
        })),
      ),
    })),
  );
  return renderChart({
    title,
    subtitle: 'HyperAttention (cpu) against float64 exact attention; solid: fixed mode, dashed: reference mode',
    xLabel: 'sequence length n',
    yLabel: metric === 'relFrobenius' ? '||out - exact||_F / ||exact||_F' : 'RMS row error / RMS |v|',
    panels,
    columns: 2,
    formatX: nLabel,
    formatY: (y) => (y < 1e-3 ? y.toExponential(0) : String(+y.toPrecision(1))),
    xTicks: sizes(cases),
  });
}

// --- main ---

if (!existsSync(README)) fail(`README.md does not exist yet at ${README}; it must contain the markers ${START} and ${END}`);
const readme = readFileSync(README, 'utf8');
const start = readme.indexOf(START);
const end = readme.indexOf(END);
if (start < 0 || end < start) fail(`README.md must contain ${START} followed by ${END}; the bench section is rendered between them`);

const kernels = load('kernels');
const e2e = load('e2e');
const peers = load('peers');
const accuracy = load('accuracy');
const present = [kernels, e2e, peers, accuracy].filter((r): r is SuiteResults => r !== null);
if (!present.length) fail(`no results in ${SOURCE}; run \`npm run bench${QUICK ? ' -- --quick' : ''}\` first`);

mkdirSync(DOCS, { recursive: true });
const charts: [string, string, string][] = [];
if (e2e) charts.push(['bench-time.svg', 'time vs n', timeChart(e2e)]);
if (peers) charts.push(['bench-peers.svg', 'exact attention GFLOP/s vs the peers', peersChart(peers)]);
if (accuracy) {
  charts.push(['bench-error-frobenius.svg', 'relative Frobenius error vs n', accuracyChart(accuracy, 'relFrobenius', 'Relative Frobenius error of out vs sequence length')]);
  charts.push(['bench-error-v.svg', 'error relative to the values vs n', accuracyChart(accuracy, 'relToV', 'Error relative to the values (RMS row error / RMS |v|) vs sequence length')]);
}
for (const [file, , svg] of charts) writeFileSync(join(DOCS, file), svg);

const notes = (r: SuiteResults) => (r.notes.length ? r.notes.map((n) => `- ${n}`).join('\n') + '\n\n' : '');
const sections: string[] = [
  `_Rendered by \`npm run bench:report\` from \`bench/results/\`; regenerate with \`npm run bench\` (15-20 minutes on 2 cores; \`-- --quick\` for a one-minute check). Medians after warm-up; ratios are measured side by side in one process._`,
  machineLine(present),
  headline(e2e, peers, accuracy),
  ...charts.map(([file, alt]) => `![${alt}](docs/${file})`),
];
if (e2e) sections.push(`<details><summary>End to end: time per call by n (one head)</summary>\n\n${notes(e2e)}${e2eSection(e2e)}\n\n</details>`);
if (peers) sections.push(`<details><summary>Exact attention vs the peers (GFLOP/s)</summary>\n\n${notes(peers)}${peersSection(peers)}\n\n</details>`);
if (accuracy) sections.push(`<details><summary>Accuracy and cost by workload and mode</summary>\n\n${notes(accuracy)}${accuracySection(accuracy)}\n\n</details>`);
if (kernels) sections.push(`<details><summary>Kernels (one backend op at a time)</summary>\n\n${notes(kernels)}${kernelsSection(kernels)}\n\n</details>`);
const missing = ['kernels', 'e2e', 'peers', 'accuracy'].filter((s) => !load(s));
if (missing.length) sections.push(`_Not run yet: ${missing.join(', ')}._`);

writeFileSync(README, `${readme.slice(0, start + START.length)}\n${sections.join('\n\n')}\n${readme.slice(end)}`);
console.log(`bench:report: README.md (between the bench markers) and ${charts.map(([f]) => `docs/${f}`).join(', ')} rendered from ${SOURCE}`);
