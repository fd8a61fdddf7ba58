// The WebGPU backend's attention ops of the authors' algorithm and their kernels: exact
// attention (heads side by side), block-diagonal and sampled attention over LSH-sorted
// rows, and the lse merge of two partial attentions.
import { WRITE_CODES } from '../../codes.ts';
import { shift, type BlockTask, type ExactTask, type HeadBatch, type MergeTask, type SampledTask, type SortedRowsTask } from '../../ops.ts';
import type { Bindings } from '../bindings.ts';
import { kernel } from '../kernels.ts';

const ATTENTION = ['lib-common', 'lib-attention'] as const;

export const EXACT = kernel('exact', {
  libraries: ATTENTION,
  constants: { STATS: 0 },
  params: {
    q_off: 'u32', k_off: 'u32', v_off: 'u32', out_off: 'u32', lse_off: 'u32', nq: 'u32', nk: 'u32', causal: 'u32',
    causal_offset: 'i32', mode: 'u32', scale: 'f32', phase: 'u32', group: 'u32', q_stride: 'u32', kv_stride_k: 'u32',
    kv_stride_v: 'u32', out_stride: 'u32', lse_stride: 'u32',
  },
});

/** The fields of the kernels over sorted rows that bindSortedRows fills: the bindings' element offsets. */
const SORTED_ROWS = {
  q_off: 'u32', k_off: 'u32', v_off: 'u32', out_off: 'u32', lse_off: 'u32', qperm_off: 'u32', kperm_off: 'u32',
} as const;

export const BLOCK = kernel('block', {
  libraries: ATTENTION,
  constants: { STATS: 0 },
  params: {
    ...SORTED_ROWS, nq_sorted: 'u32', nq_real: 'u32', nk: 'u32', q_block: 'u32', k_block: 'u32', n_blocks: 'u32',
    wg_per_block: 'u32', phantom_keys: 'u32', mode: 'u32', scale: 'f32',
  },
});

export const SAMPLED = kernel('sampled', {
  libraries: ATTENTION,
  constants: { STATS: 0 },
  params: {
    ...SORTED_ROWS, nq_sorted: 'u32', nq_real: 'u32', m: 'u32', q_block: 'u32', k_block: 'u32', n_blocks: 'u32',
    mode: 'u32', scale: 'f32', lse_offset: 'f32',
  },
});

export const MERGE = kernel('merge', {
  libraries: ['lib-common'],
  params: {
    src_out_off: 'u32', src_lse_off: 'u32', dst_out_off: 'u32', dst_lse_off: 'u32', rows: 'u32', dv: 'u32', mode: 'u32',
  },
});

/**
 * Whole heads go side by side, as many per dispatch as their bindings' spans let
 * maxStorageBufferBindingSize (and the grid) take. A head too large for one binding goes
 * alone, in runs of query rows and of keys that fit, the key runs merged by log-add-exp.
 */
export function exactHeads(g: Bindings, t: ExactTask, heads: HeadBatch): void {
  if (t.nq === 0 || heads.count === 0) return;
  g.record(() => {
    const rowsPerBinding = Math.max(1, Math.floor((g.maxBinding - g.align) / (4 * Math.max(t.d, t.dv))));
    const qRun = Math.min(t.nq, rowsPerBinding);
    const kRun = Math.max(1, Math.min(t.nk, rowsPerBinding));
    const whole = qRun === t.nq && kRun >= t.nk;
    for (let h0 = 0; h0 < heads.count;) {
      const phase = (heads.phase + h0) % heads.group;
      let count = 1;
      if (whole) {
        const byQ = Math.floor((rowsPerBinding - t.nq) / Math.max(1, heads.qRows)) + 1;
        const byKv = (Math.floor((rowsPerBinding - t.nk) / Math.max(1, heads.kRows)) + 1) * heads.group - phase;
        count = Math.max(1, Math.min(heads.count - h0, byQ, byKv, g.maxGrid));
      }
      const kvRow = Math.floor((heads.phase + h0) / heads.group) * heads.kRows;
      const part: ExactTask = {
        ...t, q: shift(t.q, h0 * heads.qRows), k: shift(t.k, kvRow), v: shift(t.v, kvRow),
        dst: { ...t.dst, out: shift(t.dst.out, h0 * heads.qRows), lse: shift(t.dst.lse, h0 * heads.qRows) },
      };
      for (let q0 = 0; q0 < t.nq; q0 += qRun) exactRun(g, part, { ...heads, count, phase }, q0, Math.min(qRun, t.nq - q0), kRun);
      h0 += count;
    }
  });
}

/** Query rows [q0, q0 + rows) of the batch's heads, against the keys in runs of kRun. */
function exactRun(g: Bindings, t: ExactTask, heads: HeadBatch, q0: number, rows: number, kRun: number): void {
  const pipeline = g.attentionKernel(EXACT, t.d, t.dv);
  const span = (n: number, stride: number, count: number) => (count - 1) * stride + n;
  const kvCount = Math.floor((heads.phase + heads.count - 1) / heads.group) + 1;
  const q = g.bindInput(shift(t.q, q0), t.d, span(rows, heads.qRows, heads.count));
  const runs = Math.max(1, Math.ceil(t.nk / kRun));
  // The authors' saturating merge is of whole parts: the key runs' part is formed apart first.
  const apart = runs > 1 && t.dst.write === 'merge-reference';
  const dst = apart
    ? { out: { buf: g.createBuffer('f32', rows * t.dv), row: 0 }, lse: { buf: g.createBuffer('f32', rows), row: 0 }, write: 'write' as const }
    : { ...t.dst, out: shift(t.dst.out, q0), lse: shift(t.dst.lse, q0) };
  const out = g.bindOutput(dst.out, t.dv, span(rows, heads.qRows, heads.count));
  const lse = g.bindOutput(dst.lse, 1, span(rows, heads.qRows, heads.count));
  for (let k0 = 0; k0 === 0 || k0 < t.nk; k0 += kRun) {
    const offset = t.causalOffset + q0 - k0;
    // Keys no row of the run sees add nothing to a merge (the first run always writes).
    if (k0 > 0 && t.causal && rows - 1 + offset < 0) break;
    const nk = Math.min(kRun, t.nk - k0);
    const k = g.bindInput(shift(t.k, k0), t.d, span(nk, heads.kRows, kvCount));
    const v = g.bindInput(shift(t.v, k0), t.dv, span(nk, heads.kRows, kvCount));
    const params = g.uniform(EXACT, {
      q_off: q.el, k_off: k.el, v_off: v.el, out_off: out.el, lse_off: lse.el, nq: rows, nk,
      causal: t.causal, causal_offset: offset, mode: WRITE_CODES[k0 === 0 ? dst.write : 'merge-fixed'], scale: t.scale,
      phase: heads.phase, group: heads.group, q_stride: heads.qRows * t.d, kv_stride_k: heads.kRows * t.d,
      kv_stride_v: heads.kRows * t.dv, out_stride: heads.qRows * t.dv, lse_stride: heads.qRows,
    });
    g.dispatch(pipeline, [q.binding, k.binding, v.binding, out.binding, lse.binding, params], g.rowGroups(rows), heads.count);
  }
  if (apart) merge(g, { src: dst, dst: { ...t.dst, out: shift(t.dst.out, q0), lse: shift(t.dst.lse, q0) }, rows, dv: t.dv });
}

/**
 * The seven bindings every op over sorted rows reads (q, k, v, out, lse, qPerm, kPerm, in
 * the kernels' binding order) and their element offsets, the first Params fields.
 */
function bindSortedRows(g: Bindings, t: SortedRowsTask): { bindings: GPUBufferBinding[]; offsets: Record<keyof typeof SORTED_ROWS, number> } {
  const q = g.bindInput(t.q, t.d, t.nqReal);
  const k = g.bindInput(t.k, t.d, t.nk);
  const v = g.bindInput(t.v, t.dv, t.nk);
  const out = g.bindOutput(t.dst.out, t.dv, t.nqReal);
  const lse = g.bindOutput(t.dst.lse, 1, t.nqReal);
  const qPerm = g.bind(t.qPerm, 1, t.nqSorted);
  const kPerm = g.bind(t.kPerm, 1, t.nk);
  return {
    bindings: [q, k, v, out, lse, qPerm, kPerm].map((b) => b.binding),
    offsets: {
      q_off: q.el, k_off: k.el, v_off: v.el, out_off: out.el, lse_off: lse.el, qperm_off: qPerm.el, kperm_off: kPerm.el,
    },
  };
}

export function block(g: Bindings, t: BlockTask): void {
  if (t.nqSorted === 0 || t.nqReal === 0 || t.nBlocks === 0) return;
  g.record(() => {
    const { bindings, offsets } = bindSortedRows(g, t);
    // The last block also takes every sorted row past nBlocks * qBlock.
    const maxRows = Math.max(t.qBlock, t.nqSorted - (t.nBlocks - 1) * t.qBlock);
    const wgPerBlock = Math.ceil(maxRows / g.rowWorkgroup);
    const params = g.uniform(BLOCK, {
      ...offsets, nq_sorted: t.nqSorted, nq_real: t.nqReal, nk: t.nk, q_block: t.qBlock, k_block: t.kBlock,
      n_blocks: t.nBlocks, wg_per_block: wgPerBlock, phantom_keys: t.phantomKeys, mode: WRITE_CODES[t.dst.write], scale: t.scale,
    });
    g.dispatch(g.attentionKernel(BLOCK, t.d, t.dv), [...bindings, params], t.nBlocks * wgPerBlock);
  });
}

export function sampled(g: Bindings, t: SampledTask): void {
  if (t.nqSorted === 0 || t.nqReal === 0) return;
  g.record(() => {
    const { bindings, offsets } = bindSortedRows(g, t);
    const samples = g.hostData(t.samples);
    const params = g.uniform(SAMPLED, {
      ...offsets, nq_sorted: t.nqSorted, nq_real: t.nqReal, m: t.samples.length, q_block: t.qBlock, k_block: t.kBlock,
      n_blocks: t.nBlocks, mode: WRITE_CODES[t.dst.write], scale: t.scale, lse_offset: t.lseOffset,
    });
    g.dispatch(g.attentionKernel(SAMPLED, t.d, t.dv), [...bindings, samples, params], g.rowGroups(t.nqSorted));
  });
}

export function merge(g: Bindings, t: MergeTask): void {
  if (t.rows === 0) return;
  g.record(() => {
    const srcOut = g.bind(t.src.out, t.dv, t.rows);
    const srcLse = g.bind(t.src.lse, 1, t.rows);
    const dstOut = g.bindOutput(t.dst.out, t.dv, t.rows);
    const dstLse = g.bindOutput(t.dst.lse, 1, t.rows);
    const params = g.uniform(MERGE, {
      src_out_off: srcOut.el, src_lse_off: srcLse.el, dst_out_off: dstOut.el, dst_lse_off: dstLse.el, rows: t.rows, dv: t.dv,
      mode: WRITE_CODES[t.dst.write],
    });
    g.dispatch(g.rowKernel(MERGE), [srcOut.binding, srcLse.binding, dstOut.binding, dstLse.binding, params], g.rowGroups(t.rows));
  });
}
