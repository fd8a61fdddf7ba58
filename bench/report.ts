// Renders the bench results (bench/results/<suite>.json) into docs/results.md, between the
// markers <!-- bench:start --> and <!-- bench:end -->, and into SVG charts beside it in
// docs/ (the README shows one of them). `npm run bench:report` renders the full run's
// results; `-- --quick` renders the last quick run instead, to check the rendering: into
// bench/results/quick/ (results-bench.md and the SVGs), never over docs/, since its
// figures are not for publishing.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BENCH_DIR, RESULTS_DIR, formatMs, formatRate, type CaseResult, type SuiteResults } from './harness.ts';
import {
  HEADLINE_SIZES, HYPER_UNCHECKED, ORT_NODE_MHA, ORT_NODE_MHA_1T, ORT_WEB_DECOMPOSED, ORT_WEB_MHA, OURS_EXACT,
  accurateTargets, compareToReference, exactThroughputRatios, hyperVsOrtNode, ratioAtLargestN, sweepSummary, type SweepRow,
} from './summary.ts';
import { PALETTE, renderChart, type Panel, type Series } from './svg.ts';

const ROOT = join(BENCH_DIR, '..');
const RESULTS_DOC = join(ROOT, 'docs', 'results.md');
const START = '<!-- bench:start -->';
const END = '<!-- bench:end -->';
const QUICK = process.argv.includes('--quick');
const SOURCE = QUICK ? join(RESULTS_DIR, 'quick') : RESULTS_DIR;
/** Where the charts go: beside the section that links them. */
const DOCS = QUICK ? SOURCE : join(ROOT, 'docs');
/** A quick run's section, rendered alone (without the rest of docs/results.md). */
const QUICK_SECTION = join(SOURCE, 'results-bench.md');

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
    `${[`${m.cpu}, ${m.cores} cores, ${m.memoryGiB} GiB`, m.os, `Node ${m.node}`, peers, adapter].filter(Boolean).join('; ')}.`,
    `Run ${when}${m.gitCommit ? ` at ${m.gitCommit}` : ''}${results.some((r) => r.quick) ? ', **quick run: not for quoting**' : ''}; load average at the start of each suite: ${loads}.`,
  ].join(' ');
}

// --- headline ---

function headline(e2e: SuiteResults | null, peers: SuiteResults | null, accuracy: SuiteResults | null): string {
  const rows: string[][] = [];
  const targets: Record<number, number> = { 16384: 10, 65536: 40 };
  const vsOrt = (label: string, goal: number, r: number | null) => rows.push([
    label, `>= ${goal}x faster`, r === null ? 'not measured' : `${ratio(r)} faster`, r === null ? '—' : r >= goal ? 'yes' : 'no',
  ]);
  for (const n of HEADLINE_SIZES) {
    vsOrt(`hyper (cpu) vs onnxruntime-node exact, non-causal, d = 64, n = ${nLabel(n)}`, targets[n], e2e ? hyperVsOrtNode(e2e.cases, n) : null);
  }
  // The fastest plan (no checks) on gaussian inputs, and the defaults on a model's head.
  const [n16] = HEADLINE_SIZES;
  vsOrt(
    `hyper with tolerance: Infinity (cpu) vs onnxruntime-node exact, non-causal, d = 64, n = ${nLabel(n16)}`, targets[n16],
    e2e ? hyperVsOrtNode(e2e.cases, n16, HYPER_UNCHECKED) : null,
  );
  vsOrt(
    `hyper (defaults, cpu) vs onnxruntime-node exact, llm workload, non-causal, d = 64, n = ${nLabel(n16)}`, 5,
    e2e ? hyperVsOrtNode(e2e.cases, n16, 'hyper', 'llm') : null,
  );
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
  if (accuracy || e2e) {
    const gaussian = e2e?.cases.filter((c) => (c.params.workload ?? 'gaussian') === 'gaussian') ?? null;
    for (const t of accurateTargets(accuracy?.cases ?? [], gaussian)) {
      rows.push([t.target, t.goal, t.measured, t.met === null ? '—' : t.met ? 'yes' : 'no']);
    }
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
  { method: HYPER_UNCHECKED, backend: 'cpu', label: 'hyper, tolerance Infinity (cpu)', color: PALETTE[3] },
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

const MODES = ['accurate', 'fixed', 'reference'] as const;

function accuracySection(accuracy: SuiteResults): string {
  const cases = accuracy.cases.filter((c) => c.method === 'hyper');
  const workloads = [...new Set(cases.map((c) => String(c.params.workload)))];
  const comparisons = compareToReference(accuracy.cases);
  const vs = (workload: string, mode: string) => comparisons.find((m) => m.workload === workload && m.mode === mode);
  const summary = table(
    ['workload', 'accurate / reference: rel. Frobenius', 'rel. to V', 'max lse error', 'time', 'fixed / reference: rel. Frobenius', 'time', 'cases'],
    workloads.map((workload) => {
      const a = vs(workload, 'accurate');
      const f = vs(workload, 'fixed');
      return [
        workload,
        ...(a ? [ratio(a.errorRatio), ratio(a.relToVRatio), ratio(a.lseRatio), ratio(a.timeRatio)] : ['—', '—', '—', '—']),
        ...(f ? [ratio(f.errorRatio), ratio(f.timeRatio)] : ['—', '—']),
        String(a?.cases ?? f?.cases ?? 0),
      ];
    }),
  );
  const n = Math.max(...cases.map((c) => c.params.n as number));
  const rows: string[][] = [];
  for (const workload of workloads) {
    for (const causal of [false, true]) {
      for (const mode of MODES) {
        const c = find(cases, 'hyper', null, { workload, n, causal, mode });
        if (!c) continue;
        const figures = ok(c) ? [sci(c.metrics!.relFrobenius), sci(c.metrics!.relToV), sci(c.metrics!.maxLseError), formatMs(c.time.medianMs)] : [cellTime(c), '', '', ''];
        rows.push([workload, causal ? 'causal' : 'non-causal', mode, ...figures]);
      }
    }
  }
  const detail = table(['workload', 'case', 'mode', 'rel. Frobenius', 'rel. to V', 'max lse error', 'time per call'], rows);
  return `Each mode against the reference mode (the authors'), geometric means over n and causal:\n\n${summary}\n\nAt n = ${nLabel(n)} (all sizes in \`bench/results/accuracy.json\`):\n\n${detail}`;
}

const byCausal = (r: Record<string, number>, causal: boolean) => (r[String(causal)] === undefined ? '—' : closeRatio(r[String(causal)]));

function sweepSection(sweep: SuiteResults, rows: SweepRow[]): string {
  const settings = table(
    ['parameter', 'value', 'error / reference', 'non-causal', 'causal', 'time / reference', 'non-causal', 'causal'],
    rows.map((r) => [
      r.parameter, String(r.value),
      closeRatio(r.errorRatio), byCausal(r.errorRatioByCausal, false), byCausal(r.errorRatioByCausal, true),
      closeRatio(r.timeRatio), byCausal(r.timeRatioByCausal, false), byCausal(r.timeRatioByCausal, true),
    ]),
  );
  // The defaults by workload: where the geometric means above come from.
  const defaults = sweep.cases.filter((c) => ok(c) && c.params.parameter === 'defaults');
  const reference = (c: CaseResult) => find(sweep.cases, 'hyper', null, { workload: c.params.workload, causal: c.params.causal, mode: 'reference' });
  const perWorkload = table(
    ['workload', 'case', 'accurate rel. Frobenius', 'reference rel. Frobenius', 'error / reference', 'time / reference'],
    defaults.map((c) => [
      String(c.params.workload), c.params.causal ? 'causal' : 'non-causal', sci(c.metrics!.relFrobenius),
      ok(reference(c)) ? sci(reference(c)!.metrics!.relFrobenius) : '—', closeRatio(c.metrics!.errorRatio), closeRatio(c.metrics!.timeRatio),
    ]),
  );
  return `Geometric means over the workloads (non-causal and causal together, then apart); each row moves one option from the defaults:\n\n${settings}\n\nThe defaults by workload:\n\n${perWorkload}`;
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

const MODE_STYLE: Record<(typeof MODES)[number], { color: string; dashed: boolean }> = {
  accurate: { color: PALETTE[0], dashed: false },
  fixed: { color: PALETTE[1], dashed: false },
  reference: { color: PALETTE[2], dashed: true },
};

function accuracyChart(accuracy: SuiteResults, metric: 'relFrobenius' | 'relToV', title: string): string {
  const cases = accuracy.cases.filter((c) => ok(c) && c.method === 'hyper');
  const workloads = [...new Set(cases.map((c) => String(c.params.workload)))];
  const panels: Panel[] = workloads.flatMap((workload) =>
    [false, true].map((causal) => ({
      title: `${workload}, ${causal ? 'causal' : 'non-causal'}`,
      series: MODES.map((mode) => ({
        label: `${mode} mode`,
        ...MODE_STYLE[mode],
        points: cases
          .filter((c) => c.params.workload === workload && c.params.causal === causal && c.params.mode === mode)
          .map((c) => [c.params.n as number, c.metrics![metric]] as [number, number])
          .sort((p, q) => p[0] - q[0]),
      })),
    })),
  );
  return renderChart({
    title,
    subtitle: 'HyperAttention (cpu) against float64 exact attention, each mode at its defaults; accurate is the default mode',
    xLabel: 'sequence length n',
    yLabel: metric === 'relFrobenius' ? '||out - exact||_F / ||exact||_F' : 'RMS row error / RMS |v|',
    panels,
    columns: 4,
    formatX: nLabel,
    formatY: (y) => (y < 1e-3 ? y.toExponential(0) : String(+y.toPrecision(1))),
    xTicks: sizes(cases),
  });
}

/** Powers of 2 that span the values with a margin (no point on the frame): ticks for an axis of ratios. */
function ratioTicks(values: number[]): number[] {
  const lo = Math.floor(Math.log2(Math.min(...values)) - 0.25);
  const hi = Math.ceil(Math.log2(Math.max(...values)) + 0.25);
  return Array.from({ length: Math.max(1, hi - lo) + 1 }, (_, i) => 2 ** (lo + i));
}

/**
 * sweep: error against time, both relative to the reference mode, one point per setting:
 * each parameter's values joined through the defaults (in order of value), and the modes.
 */
function accuracyTimeChart(sweep: SuiteResults): string {
  const params = [...new Set(sweep.cases.map((c) => String(c.params.parameter)))].filter((p) => p !== 'defaults' && p !== 'mode');
  const colours = [...PALETTE.filter((c) => c !== '#000000'), PALETTE[0]];
  const panels: Panel[] = [false, true].map((causal) => {
    const rows = sweepSummary(sweep.cases.filter((c) => c.params.causal === causal));
    const point = (r: SweepRow | undefined): [number, number] | null => (r ? [r.timeRatio, r.errorRatio] : null);
    const defaults = rows.find((r) => r.parameter === 'defaults');
    const series: Series[] = params.map((parameter, i) => {
      const mine = rows.filter((r) => r.parameter === parameter);
      // Where the parameter's default sits among its values: the curve passes through the defaults there.
      const dflt = sweep.cases.find((c) => c.params.parameter === parameter && c.params.causal === causal)?.params.default as number | undefined;
      const all = [...mine.map((r) => ({ value: r.value as number, at: point(r)! })), ...(defaults && dflt !== undefined ? [{ value: dflt, at: point(defaults)! }] : [])]
        .sort((a, b) => a.value - b.value);
      return {
        label: parameter, color: colours[i % colours.length], dashed: i >= colours.length - 1,
        points: all.map((p) => p.at), labels: all.map((p) => (p.value === dflt ? '' : String(p.value))),
      };
    });
    const modes: [string, [number, number] | null][] = [
      ['reference', [1, 1]],
      ['fixed', point(rows.find((r) => r.parameter === 'mode' && r.value === 'fixed'))],
      ['accurate (defaults)', point(defaults)],
    ];
    for (const [label, at] of modes) {
      series.push({ label: 'modes at their defaults', color: PALETTE[6], line: false, points: at ? [at] : [], labels: [label] });
    }
    return { title: causal ? 'causal' : 'non-causal', series };
  });
  const points = panels.flatMap((p) => p.series.flatMap((s) => s.points));
  const n = sweep.cases[0]?.params.n as number;
  return renderChart({
    title: `Accuracy against time of the accurate mode's settings (n = ${nLabel(n)}, log-log)`,
    subtitle: 'geometric means over the workloads, relative to the reference mode timed alongside; each curve moves one option through the defaults',
    xLabel: 'time / reference mode',
    yLabel: 'rel. Frobenius error / reference',
    panels,
    columns: 2,
    formatX: (x) => `${x}x`,
    formatY: (y) => `${+y.toPrecision(3)}x`,
    xTicks: ratioTicks(points.map((q) => q[0])),
    yTicks: ratioTicks(points.map((q) => q[1])),
  });
}

// --- main ---

/** docs/results.md and where its bench section is (checked before anything is written). */
function docMarkers(): { doc: string; start: number; end: number } {
  if (!existsSync(RESULTS_DOC)) fail(`${RESULTS_DOC} does not exist; it must contain the markers ${START} and ${END}`);
  const doc = readFileSync(RESULTS_DOC, 'utf8');
  const start = doc.indexOf(START);
  const end = doc.indexOf(END);
  if (start < 0 || end < start) fail(`docs/results.md must contain ${START} followed by ${END}; the bench section is rendered between them`);
  return { doc, start, end };
}
const target = QUICK ? null : docMarkers();

const kernels = load('kernels');
const e2e = load('e2e');
// The e2e suite's gaussian cases: its tables and chart by n (the llm workload runs at one size, for the headline).
const e2eGaussian = e2e && { ...e2e, cases: e2e.cases.filter((c) => (c.params.workload ?? 'gaussian') === 'gaussian') };
const peers = load('peers');
const accuracy = load('accuracy');
const sweep = load('sweep');
const present = [kernels, e2e, peers, accuracy, sweep].filter((r): r is SuiteResults => r !== null);
if (!present.length) fail(`no results in ${SOURCE}; run \`npm run bench${QUICK ? ' -- --quick' : ''}\` first`);

mkdirSync(DOCS, { recursive: true });
const charts: [string, string, string][] = [];
if (e2eGaussian) charts.push(['bench-time.svg', 'time vs n', timeChart(e2eGaussian)]);
if (peers) charts.push(['bench-peers.svg', 'exact attention GFLOP/s vs the peers', peersChart(peers)]);
if (accuracy) {
  charts.push(['bench-error-frobenius.svg', 'relative Frobenius error vs n', accuracyChart(accuracy, 'relFrobenius', 'Relative Frobenius error of out vs sequence length')]);
  charts.push(['bench-error-v.svg', 'error relative to the values vs n', accuracyChart(accuracy, 'relToV', 'Error relative to the values (RMS row error / RMS |v|) vs sequence length')]);
}
if (sweep) charts.push(['bench-accuracy-time.svg', "accuracy against time of the accurate mode's settings", accuracyTimeChart(sweep)]);
for (const [file, , svg] of charts) writeFileSync(join(DOCS, file), svg);

const notes = (r: SuiteResults) => (r.notes.length ? r.notes.map((n) => `- ${n}`).join('\n') + '\n\n' : '');
const sections: string[] = [
  `_Rendered by \`npm run bench:report\` from \`bench/results/\`; regenerate with \`npm run bench\` (an hour or two on 2 cores, most of it the accuracy and sweep suites; \`-- --quick\` for a short check). Medians after warm-up; ratios are measured side by side in one process._`,
  machineLine(present),
  headline(e2e, peers, accuracy),
  ...charts.map(([file, alt]) => `![${alt}](${file})`),
];
if (e2eGaussian) sections.push(`<details><summary>End to end: time per call by n (one head)</summary>\n\n${notes(e2eGaussian)}${e2eSection(e2eGaussian)}\n\n</details>`);
if (peers) sections.push(`<details><summary>Exact attention vs the peers (GFLOP/s)</summary>\n\n${notes(peers)}${peersSection(peers)}\n\n</details>`);
if (accuracy) sections.push(`<details><summary>Accuracy and cost by workload and mode</summary>\n\n${notes(accuracy)}${accuracySection(accuracy)}\n\n</details>`);
if (sweep) sections.push(`<details><summary>The sweep that chose the accurate mode's defaults</summary>\n\n${notes(sweep)}${sweepSection(sweep, sweepSummary(sweep.cases))}\n\n</details>`);
if (kernels) sections.push(`<details><summary>Kernels (one backend op at a time)</summary>\n\n${notes(kernels)}${kernelsSection(kernels)}\n\n</details>`);
const missing = ['kernels', 'e2e', 'peers', 'accuracy', 'sweep'].filter((s) => !load(s));
if (missing.length) sections.push(`_Not run yet: ${missing.join(', ')}._`);

if (target) {
  const { doc, start, end } = target;
  writeFileSync(RESULTS_DOC, `${doc.slice(0, start + START.length)}\n${sections.join('\n\n')}\n${doc.slice(end)}`);
  console.log(`bench:report: docs/results.md (between the bench markers) and ${charts.map(([f]) => `docs/${f}`).join(', ')} rendered from ${SOURCE}`);
} else {
  writeFileSync(QUICK_SECTION, `${sections.join('\n\n')}\n`);
  console.log(`bench:report: the quick run's section in ${QUICK_SECTION} and its charts beside it (docs/ is left alone)`);
}
