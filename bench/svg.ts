// A small SVG line-chart renderer for the bench report: small multiples (one panel per
// case group) sharing log axes and one legend, so that curves are compared across panels
// at a glance; a series may also be points alone, each with a label (a scatter of
// settings). Pure string output; no dependencies.

export interface Series {
  label: string;
  color: string;
  dashed?: boolean;
  /** [x, y] with x, y > 0 (log axes); drawn in this order (sorted by x for a curve) */
  points: [number, number][];
  /** false: points without the line through them (default true) */
  line?: boolean;
  /** text beside each point (same order as points) */
  labels?: string[];
}

export interface Panel {
  title: string;
  series: Series[];
}

export interface ChartSpec {
  title: string;
  subtitle?: string;
  xLabel: string;
  yLabel: string;
  panels: Panel[];
  columns: number;
  formatX(x: number): string;
  formatY(y: number): string;
  /** x tick positions (log axis); the axis spans them and the data */
  xTicks: number[];
  /**
   * y tick positions, spanned like xTicks; without them the y axis runs over whole powers
   * of 10 around the data, ticked at each power (and at 3x when sparse)
   */
  yTicks?: number[];
}

const PANEL_W = 300;
const PANEL_H = 210;
const PAD = { left: 62, right: 14, top: 28, bottom: 40 };
const LEGEND_W = 250;
const FONT = 'font-family="system-ui, -apple-system, Segoe UI, Helvetica, Arial, sans-serif"';

/** Colours that stay distinct for colour-blind readers (Okabe-Ito). */
export const PALETTE = ['#0072B2', '#D55E00', '#009E73', '#CC79A7', '#E69F00', '#56B4E9', '#000000', '#F0E442'];

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function logRange(values: number[]): [number, number] {
  const lo = Math.min(...values);
  const hi = Math.max(...values);
  // Pad to whole powers of 10 so that ticks sit on the frame; keep at least one decade.
  const a = Math.floor(Math.log10(lo));
  let b = Math.ceil(Math.log10(hi));
  if (a === b) b = a + 1;
  return [a, b];
}

function yTicks([a, b]: [number, number]): number[] {
  const ticks: number[] = [];
  for (let e = a; e <= b; e++) {
    ticks.push(10 ** e);
    if (b - a <= 2 && e < b) ticks.push(3 * 10 ** e);
  }
  return ticks;
}

export function renderChart(spec: ChartSpec): string {
  const legend = uniqueLegend(spec.panels);
  const rows = Math.ceil(spec.panels.length / spec.columns);
  // Wide enough for the panels and for the header text (about 7 px per character at 12 px).
  const width = Math.max(
    spec.columns * (PANEL_W + PAD.left + PAD.right) + 10,
    Math.max(spec.title.length * 9, (spec.subtitle?.length ?? 0) * 7) + 24,
  );
  const perRow = Math.max(1, Math.floor((width - 12) / LEGEND_W));
  const legendTop = spec.subtitle ? 52 : 36;
  const headerH = legendTop + Math.ceil(legend.length / perRow) * 20 + 6;
  const height = headerH + rows * (PANEL_H + PAD.top + PAD.bottom) + 8;

  const all = spec.panels.flatMap((p) => p.series.flatMap((s) => s.points));
  const xs = all.map((p) => p[0]).concat(spec.xTicks);
  let [x0, x1] = [Math.log10(Math.min(...xs)), Math.log10(Math.max(...xs))];
  if (x1 - x0 < 0.1) [x0, x1] = [x0 - 0.5, x1 + 0.5]; // one size only: centre it
  const ys = all.map((p) => p[1]).concat(spec.yTicks ?? []);
  const yr: [number, number] = spec.yTicks
    ? [Math.log10(Math.min(...ys)), Math.log10(Math.max(...ys))]
    : all.length ? logRange(ys) : [0, 1];
  const sx = (x: number) => ((Math.log10(x) - x0) / (x1 - x0)) * PANEL_W;
  const sy = (y: number) => PANEL_H - ((Math.log10(y) - yr[0]) / (yr[1] - yr[0])) * PANEL_H;

  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" ${FONT}>`);
  out.push(`<rect width="${width}" height="${height}" fill="#ffffff"/>`);
  out.push(`<text x="12" y="24" font-size="16" font-weight="600" fill="#111">${esc(spec.title)}</text>`);
  if (spec.subtitle) out.push(`<text x="12" y="44" font-size="12" fill="#555">${esc(spec.subtitle)}</text>`);

  legend.forEach((s, i) => {
    const lx = 12 + (i % perRow) * LEGEND_W;
    const ly = legendTop + Math.floor(i / perRow) * 20 + 10;
    if (s.line !== false) {
      out.push(`<line x1="${lx}" y1="${ly}" x2="${lx + 26}" y2="${ly}" stroke="${s.color}" stroke-width="2.5"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`);
    }
    out.push(`<circle cx="${lx + 13}" cy="${ly}" r="3" fill="${s.color}"/>`);
    out.push(`<text x="${lx + 32}" y="${ly + 4}" font-size="12" fill="#222">${esc(s.label)}</text>`);
  });

  spec.panels.forEach((panel, i) => {
    const ox = 5 + (i % spec.columns) * (PANEL_W + PAD.left + PAD.right) + PAD.left;
    const oy = headerH + Math.floor(i / spec.columns) * (PANEL_H + PAD.top + PAD.bottom) + PAD.top;
    out.push(`<g transform="translate(${ox},${oy})">`);
    out.push(`<text x="${PANEL_W / 2}" y="-10" font-size="13" font-weight="600" text-anchor="middle" fill="#111">${esc(panel.title)}</text>`);
    for (const t of spec.yTicks ?? yTicks(yr)) {
      const y = sy(t).toFixed(1);
      out.push(`<line x1="0" y1="${y}" x2="${PANEL_W}" y2="${y}" stroke="#e4e4e4"/>`);
      out.push(`<text x="-6" y="${(+y + 4).toFixed(1)}" font-size="11" text-anchor="end" fill="#444">${esc(spec.formatY(t))}</text>`);
    }
    for (const t of spec.xTicks) {
      const x = sx(t).toFixed(1);
      out.push(`<line x1="${x}" y1="0" x2="${x}" y2="${PANEL_H}" stroke="#efefef"/>`);
      out.push(`<text x="${x}" y="${PANEL_H + 16}" font-size="11" text-anchor="middle" fill="#444">${esc(spec.formatX(t))}</text>`);
    }
    out.push(`<rect x="0" y="0" width="${PANEL_W}" height="${PANEL_H}" fill="none" stroke="#999"/>`);
    out.push(`<text x="${PANEL_W / 2}" y="${PANEL_H + 34}" font-size="12" text-anchor="middle" fill="#333">${esc(spec.xLabel)}</text>`);
    out.push(`<text transform="translate(-48,${PANEL_H / 2}) rotate(-90)" font-size="12" text-anchor="middle" fill="#333">${esc(spec.yLabel)}</text>`);
    if (!panel.series.some((s) => s.points.length)) {
      out.push(`<text x="${PANEL_W / 2}" y="${PANEL_H / 2}" font-size="12" text-anchor="middle" fill="#888">no data</text>`);
    }
    for (const s of panel.series) {
      if (!s.points.length) continue;
      if (s.line !== false) {
        const path = s.points.map(([x, y], j) => `${j ? 'L' : 'M'}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(' ');
        out.push(`<path d="${path}" fill="none" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`);
      }
      s.points.forEach(([x, y], j) => {
        const [cx, cy] = [sx(x).toFixed(1), sy(y).toFixed(1)];
        out.push(`<circle cx="${cx}" cy="${cy}" r="${s.line === false ? 4 : 3}" fill="${s.color}"/>`);
        const label = s.labels?.[j];
        if (label) out.push(`<text x="${(+cx + 5).toFixed(1)}" y="${(+cy - 5).toFixed(1)}" font-size="10" fill="${s.color}">${esc(label)}</text>`);
      });
    }
    out.push('</g>');
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

function uniqueLegend(panels: Panel[]): Series[] {
  const seen = new Map<string, Series>();
  for (const p of panels) for (const s of p.series) if (s.points.length && !seen.has(s.label)) seen.set(s.label, s);
  return [...seen.values()];
}
