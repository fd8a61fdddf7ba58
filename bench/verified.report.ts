// Renders bench/results/verified.json (verified.bench.ts): the chart of realized error and
// time against the tolerance per head kind (docs/bench-verified.svg), and the tables of
// docs/verified.md's results, printed as Markdown. Run: `tsx bench/verified.report.ts`.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { BENCH_DIR, RESULTS_DIR } from './harness.ts';
import { PALETTE, renderChart, type Panel } from './svg.ts';

interface Row {
  workload: string;
  n: number;
  causal: boolean;
  tolerance: string;
  realized: number;
  estimate: number | null;
  bound: number | null;
  plan: string;
  ms: number;
  exactMs: number;
}
const data = JSON.parse(readFileSync(join(RESULTS_DIR, 'verified.json'), 'utf8')) as {
  rows: Row[];
  estimate: Record<string, number>;
  tolerances: Record<string, number>[];
  machine: { cpu?: { model?: string } };
};

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
/** An exact result has no error: drawn at the floor of the log axis. */
const FLOOR = 1e-4;
/** Tolerance Infinity (no checks) sits at the right of the axis. */
const NO_CHECKS_X = 1;
const xOf = (t: string) => (t === 'Infinity' ? NO_CHECKS_X : Number(t));

const n = Math.min(...data.rows.map((r) => r.n));
const kinds = [...new Set(data.rows.map((r) => r.workload))];
const panels: Panel[] = [];
for (const causal of [false, true]) {
  for (const kind of kinds) {
    const mine = data.rows.filter((r) => r.workload === kind && r.n === n && r.causal === causal);
    const tolerances = [...new Set(mine.map((r) => r.tolerance))];
    const point = (f: (rs: Row[]) => number) =>
      tolerances.map((t) => [xOf(t), Math.max(FLOOR, f(mine.filter((r) => r.tolerance === t)))] as [number, number]);
    panels.push({
      title: `${kind}${causal ? ', causal' : ''}`,
      series: [
        { label: 'realized error (median over seeds)', color: PALETTE[0], points: point((rs) => median(rs.map((r) => r.realized))) },
        { label: 'realized error (worst seed)', color: PALETTE[0], dashed: true, points: point((rs) => Math.max(...rs.map((r) => r.realized))) },
        { label: 'time / exact attention (median)', color: PALETTE[1], points: point((rs) => median(rs.map((r) => r.ms / r.exactMs))) },
        { label: 'the tolerance', color: PALETTE[6], dashed: true, points: tolerances.filter((t) => t !== 'Infinity').map((t) => [Number(t), Number(t)]) },
      ],
    });
  }
}
const svg = renderChart({
  title: `Verified attention at n = ${n}, d = 64: error and time against the tolerance`,
  subtitle: `relative Frobenius error of out (exact results drawn at ${FLOOR}); the right end is tolerance Infinity (no checks)`,
  xLabel: 'tolerance',
  yLabel: 'error, or time / exact',
  panels,
  columns: Math.min(4, kinds.length),
  formatX: (x) => (x === NO_CHECKS_X ? '∞' : String(x)),
  formatY: (y) => (y >= 0.01 ? String(Number(y.toPrecision(2))) : y.toExponential(0)),
  xTicks: [0.02, 0.05, 0.1, 0.3, NO_CHECKS_X],
});
writeFileSync(join(BENCH_DIR, '..', 'docs', 'bench-verified.svg'), svg);

const fmt = (x: number) => (Number.isFinite(x) ? x.toFixed(x < 0.1 ? 3 : 2) : '—');
const lines = [
  `Machine: ${data.machine.cpu?.model ?? 'unknown'}.`,
  '',
  '| heads (tolerance ∞) | bound held | estimate within 2x (realized ≥ 0.01) | checks: extra time, median / max |',
  '| --- | --- | --- | --- |',
  `| ${data.estimate.heads} | ${fmt(data.estimate.boundCoverage)} | ${fmt(data.estimate.within2x)} of ${data.estimate.sizeable} | ${fmt(data.estimate.checkCostMedian)} / ${fmt(data.estimate.checkCostMax)} |`,
  '',
  '| tolerance | heads | realized ≤ tolerance | ended exact | their time / exact, median / max | first-plan heads: time / unchecked plan, median |',
  '| --- | --- | --- | --- | --- | --- |',
  ...data.tolerances.map((t) =>
    `| ${t.tolerance} | ${t.heads} | ${fmt(t.withinTolerance)} | ${t.endedExact} | ${fmt(t.exactEndedCostMedian)} / ${fmt(t.exactEndedCostMax)} | ${fmt(t.firstPassCostMedian)} |`),
  '',
  '| head | n | causal | plan alone: error | tolerance 0.1: plans, time / exact | tolerance 0.05: plans, time / exact |',
  '| --- | --- | --- | --- | --- | --- |',
];
for (const size of [...new Set(data.rows.map((r) => r.n))]) {
  for (const causal of [false, true]) {
    for (const kind of kinds) {
      const mine = data.rows.filter((r) => r.workload === kind && r.n === size && r.causal === causal);
      if (mine.length === 0) continue;
      const at = (t: string) => mine.filter((r) => r.tolerance === t);
      const plans = (rs: Row[]) => {
        const counts = new Map<string, number>();
        for (const r of rs) counts.set(r.plan, (counts.get(r.plan) ?? 0) + 1);
        return `${[...counts].map(([p, c]) => `${p} ${c}`).join(', ')}; ${fmt(median(rs.map((r) => r.ms / r.exactMs)))}`;
      };
      lines.push(`| ${kind} | ${size} | ${causal ? 'yes' : 'no'} | ${fmt(median(at('Infinity').map((r) => r.realized)))} | ${plans(at('0.1'))} | ${plans(at('0.05'))} |`);
    }
  }
}
console.log(lines.join('\n'));
