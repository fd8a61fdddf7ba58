// The demo page's picture of sortLSH: the attention matrix of one small head drawn as a
// heatmap in its original order and in the order lshOrder() gives, with the diagonal blocks
// that HyperAttention computes exactly outlined, and the share of the attention mass that
// falls inside them.
import type { LshOrder, Tensor } from 'hyperattention';

/** Colour stops (magma-like, dark = little mass) from t = 0 to t = 1. */
const STOPS: [number, number, number][] = [
  [0, 0, 4], [28, 16, 68], [79, 18, 123], [129, 37, 129], [181, 54, 122], [229, 80, 100], [251, 135, 97], [254, 194, 135], [252, 253, 191],
];
/** The colour scale spans mass per cell from uniform / SPAN to uniform * SPAN, log-spaced. */
const SPAN = 100;
const OUTLINE = '#3fd7ff';

export interface MassShares {
  /** share of the attention mass inside the diagonal blocks, rows and keys in their original order */
  before: number;
  /** the same after sorting both by their LSH buckets */
  after: number;
  /** share of the matrix the diagonal blocks cover */
  area: number;
}

function colour(t: number): [number, number, number] {
  const x = Math.min(Math.max(t, 0), 1) * (STOPS.length - 1);
  const i = Math.min(Math.floor(x), STOPS.length - 2);
  const f = x - i;
  const [a, b] = [STOPS[i], STOPS[i + 1]];
  return [a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f, a[2] + (b[2] - a[2]) * f];
}

/** CSS gradient of the same scale, for the legend. */
export const LEGEND_GRADIENT = `linear-gradient(to right, ${STOPS.map((s) => `rgb(${s.join(',')})`).join(', ')})`;

/** softmax(scale * q k^T) of head 0 as an n x n row-major matrix (each row sums to 1). */
export function attentionMatrix(q: Tensor, k: Tensor): Float32Array {
  const [, , n, d] = q.shape;
  const scale = 1 / Math.sqrt(d);
  const p = new Float32Array(n * n);
  const s = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let max = -Infinity;
    for (let j = 0; j < n; j++) {
      let dot = 0;
      for (let c = 0; c < d; c++) dot += q.data[i * d + c] * k.data[j * d + c];
      s[j] = dot * scale;
      if (s[j] > max) max = s[j];
    }
    let sum = 0;
    for (let j = 0; j < n; j++) sum += (s[j] = Math.exp(s[j] - max));
    for (let j = 0; j < n; j++) p[i * n + j] = s[j] / sum;
  }
  return p;
}

/** The key range [start, end) of sorted query i's diagonal block, as HyperAttention computes it. */
function blockOf(i: number, n: number, order: LshOrder): [number, number] {
  const blk = Math.min(Math.floor(i / order.queryBlock), order.numBlocks - 1);
  return [blk * order.keyBlock, Math.min((blk + 1) * order.keyBlock, n)];
}

/** Mass inside the diagonal blocks, original order and sorted order, for head 0. */
export function massShares(p: Float32Array, n: number, order: LshOrder): MassShares {
  const qo = order.queryOrder.data;
  const ko = order.keyOrder.data;
  let before = 0;
  let after = 0;
  let area = 0;
  for (let i = 0; i < n; i++) {
    const [start, end] = blockOf(i, n, order);
    area += end - start;
    for (let j = start; j < end; j++) {
      before += p[i * n + j];
      after += p[qo[i] * n + ko[j]];
    }
  }
  return { before: before / n, after: after / n, area: area / (n * n) };
}

/**
 * Draws p (n x n) into the canvas, rows and columns read through the given orders (the
 * identity when absent), with the diagonal blocks outlined. A pixel shows the mean mass of
 * the cells it covers, relative to uniform attention (1 / n).
 */
export function drawHeatmap(canvas: HTMLCanvasElement, p: Float32Array, n: number, order: LshOrder, sorted: boolean): void {
  const size = canvas.width;
  const ctx = canvas.getContext('2d');
  if (!ctx) return;
  const rows = sorted ? order.queryOrder.data : undefined;
  const cols = sorted ? order.keyOrder.data : undefined;
  const image = ctx.createImageData(size, size);
  const cell = n / size;
  for (let py = 0; py < size; py++) {
    for (let px = 0; px < size; px++) {
      let sum = 0;
      let count = 0;
      for (let i = Math.floor(py * cell); i < Math.max(Math.floor((py + 1) * cell), Math.floor(py * cell) + 1); i++) {
        const row = (rows ? rows[i] : i) * n;
        for (let j = Math.floor(px * cell); j < Math.max(Math.floor((px + 1) * cell), Math.floor(px * cell) + 1); j++) {
          sum += p[row + (cols ? cols[j] : j)];
          count++;
        }
      }
      const relative = (sum / count) * n;
      const [r, g, b] = colour((Math.log10(Math.max(relative, 1e-12)) / Math.log10(SPAN) + 1) / 2);
      const o = (py * size + px) * 4;
      image.data[o] = r;
      image.data[o + 1] = g;
      image.data[o + 2] = b;
      image.data[o + 3] = 255;
    }
  }
  ctx.putImageData(image, 0, 0);
  ctx.strokeStyle = OUTLINE;
  ctx.lineWidth = 1.5;
  const px = size / n;
  for (let blk = 0; blk < order.numBlocks; blk++) {
    const top = blk * order.queryBlock;
    const bottom = blk === order.numBlocks - 1 ? n : (blk + 1) * order.queryBlock;
    const [left, right] = blockOf(top, n, order);
    ctx.strokeRect(left * px + 0.75, top * px + 0.75, (right - left) * px - 1.5, (bottom - top) * px - 1.5);
  }
}
