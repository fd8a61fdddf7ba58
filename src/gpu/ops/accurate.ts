// The WebGPU backend's ops of the accurate mode and their kernels: the probe for heavy
// columns and their choice (probe.wgsl, heavy.wgsl), the exact parts (accurate.wgsl:
// columns, window, hash rounds, samples) and the remainder's estimate (remainder.wgsl).
import { KERNEL_CODES, WRITE_CODES } from '../../codes.ts';
import type {
  AccurateMask, AttentionInputs, ColumnsTask, HeavyTask, PartOutput, ProbeTask, RemainderTask, RoundTask,
  SamplesTask, WindowTask, WriteMode,
} from '../../ops.ts';
import type { Bindings, Span } from '../bindings.ts';
import { kernel } from '../kernels.ts';

/** Key rows per chunk of the remainder's prefix sums (CHUNK in remainder.wgsl). */
const REMAINDER_CHUNK = 64;

const ACCURATE_PARAMS = {
  q_off: 'u32', k_off: 'u32', v_off: 'u32', out_off: 'u32', lse_off: 'u32', cnt_off: 'u32', vsum_off: 'u32',
  part: 'u32', q_from: 'u32', q_to: 'u32', nq: 'u32', nk: 'u32', n_list: 'u32', list_at: 'u32',
  causal: 'u32', causal_offset: 'u32', use_flags: 'u32', flags_at: 'u32', win_mode: 'u32', win_lo: 'i32', win: 'u32', rounds: 'u32',
  qtags_at: 'u32', ktags_at: 'u32', qperm_at: 'u32', kperm_at: 'u32', qstarts_at: 'u32', kstarts_at: 'u32',
  num_keys: 'u32', cap: 'u32', mode: 'u32', stats_add: 'u32', scale: 'f32',
} as const;

/** The parts on tiles shared by a workgroup's rows (PART_LIST, PART_WINDOW). */
export const ACCURATE = kernel('accurate', {
  libraries: ['lib-common', 'lib-attention'], constants: { STATS: 1 }, params: ACCURATE_PARAMS,
});

/** PART_ROUND: the rows of a workgroup may lie in different buckets, so each has its own keys. */
export const ACCURATE_ROUND = kernel('accurate-round', {
  source: 'accurate', libraries: ['lib-common', 'lib-attention', 'lib-tiles-own'], constants: { STATS: 1 },
  params: ACCURATE_PARAMS,
});

export const PROBE = kernel('probe', {
  libraries: ['lib-common'],
  params: {
    q_off: 'u32', k_off: 'u32', rows_off: 'u32', mass_off: 'u32', count: 'u32', nk: 'u32', d: 'u32', causal: 'u32',
    causal_offset: 'u32', sinks: 'u32', win_lo: 'i32', win: 'u32', step: 'u32', scale: 'f32',
  },
});

export const HEAVY = kernel('heavy', {
  libraries: [],
  params: { mass_off: 'u32', cols_off: 'u32', flags_off: 'u32', nk: 'u32', sinks: 'u32', count: 'u32' },
});

export const REMAINDER = kernel('remainder', {
  libraries: ['lib-common'],
  params: {
    v_off: 'u32', out_off: 'u32', lse_off: 'u32', vsum_e_off: 'u32', s_out_off: 'u32', vsum_s_off: 'u32',
    cnt_e_at: 'u32', cnt_s_at: 'u32', s_lse_at: 'u32', sums_at: 'u32', nq: 'u32', nk: 'u32', dv: 'u32', causal: 'u32',
    causal_offset: 'u32', chunks: 'u32', step: 'u32', cv: 'f32',
  },
});

/**
 * What one dispatch of accurate.wgsl computes: query rows [qFrom, qTo) (sorted positions
 * for PART_ROUND) against a key list (PART_LIST), their windows, or their buckets.
 */
interface AccuratePart {
  part: number;
  qFrom: number;
  qTo: number;
  causal: boolean;
  /** causal: query row i sits at key position i + causalOffset */
  causalOffset: number;
  /** absent for the columns, which hide only causally */
  mask?: AccurateMask;
  list?: Span | Int32Array;
  round?: RoundTask;
  write: WriteMode;
  /** add the stats to the destination's rather than overwrite them */
  add: boolean;
}

export function columns(g: Bindings, t: ColumnsTask): void {
  accuratePart(g, t, t.dst, {
    part: KERNEL_CODES.PART_LIST, qFrom: 0, qTo: t.nq, causal: t.causal, causalOffset: t.causalOffset, list: { view: t.cols, width: 1, rows: t.count },
    write: 'write', add: false,
  });
}

export function window(g: Bindings, t: WindowTask): void {
  accuratePart(g, t, t.dst, {
    part: KERNEL_CODES.PART_WINDOW, qFrom: 0, qTo: t.nq, causal: t.mask.causal, causalOffset: t.mask.causalOffset, mask: t.mask,
    write: 'merge-fixed', add: true,
  });
}

export function round(g: Bindings, t: RoundTask): void {
  accuratePart(g, t, t.dst, {
    part: KERNEL_CODES.PART_ROUND, qFrom: 0, qTo: t.nq, causal: t.mask.causal, causalOffset: t.mask.causalOffset, mask: t.mask,
    round: t, write: 'merge-fixed', add: true,
  });
}

export function samples(g: Bindings, t: SamplesTask): void {
  accuratePart(g, t, t.dst, {
    part: KERNEL_CODES.PART_LIST, qFrom: t.qFrom, qTo: t.qTo, causal: t.mask.causal, causalOffset: t.mask.causalOffset,
    mask: t.mask, list: t.samples,
    write: 'write', add: false,
  });
}

/**
 * One dispatch of accurate.wgsl: PART_LIST and PART_WINDOW on shared tiles, PART_ROUND on
 * each invocation's own keys. Index data goes packed into one buffer (gather).
 */
function accuratePart(g: Bindings, t: AttentionInputs, dst: PartOutput, o: AccuratePart): void {
  if (o.qTo <= o.qFrom) return;
  g.record(() => {
    const { mask, round: hashRound } = o;
    const rounds = mask?.rounds ?? 0;
    const spans: (Span | Int32Array)[] = [];
    const place = (span: Span | Int32Array): number => spans.push(span) - 1;
    const flags = mask ? place({ view: mask.flags, width: 1, rows: t.nk }) : -1;
    const qTags = mask ? place({ view: mask.qTags, width: t.nq, rows: rounds }) : -1;
    const kTags = mask ? place({ view: mask.kTags, width: t.nk, rows: rounds }) : -1;
    const list = o.list ? place(o.list) : -1;
    const numKeys = hashRound?.numKeys ?? 0;
    const perms = hashRound ? [
      place({ view: hashRound.qPerm, width: 1, rows: t.nq }), place({ view: hashRound.kPerm, width: 1, rows: t.nk }),
      place({ view: hashRound.qStarts, width: 1, rows: numKeys + 1 }),
      place({ view: hashRound.kStarts, width: 1, rows: numKeys + 1 }),
    ] : [-1, -1, -1, -1];
    const idx = g.gather(spans);
    const at = (index: number): number => (index < 0 ? 0 : idx.at[index]);
    const q = g.bindInput(t.q, t.d, t.nq);
    const k = g.bindInput(t.k, t.d, t.nk);
    const v = g.bindInput(t.v, t.dv, t.nk);
    const out = g.bindOutput(dst.out, t.dv, t.nq);
    const lse = g.bindOutput(dst.lse, 1, t.nq);
    const cnt = g.bindOutput(dst.cnt, 1, t.nq);
    const vsum = g.bindOutput(dst.vsum, t.dv, t.nq);
    const win = mask?.window ?? 0;
    const winMode = win === 0
      ? KERNEL_CODES.WINDOW_IGNORE
      : o.part === KERNEL_CODES.PART_WINDOW ? KERNEL_CODES.WINDOW_HIDE_OUTSIDE : KERNEL_CODES.WINDOW_HIDE_INSIDE;
    const pipeline = g.attentionKernel(hashRound ? ACCURATE_ROUND : ACCURATE, t.d, t.dv);
    const params = g.uniform(ACCURATE, {
      q_off: q.el, k_off: k.el, v_off: v.el, out_off: out.el, lse_off: lse.el, cnt_off: cnt.el, vsum_off: vsum.el,
      part: o.part, q_from: o.qFrom, q_to: o.qTo, nq: t.nq, nk: t.nk,
      n_list: o.list instanceof Int32Array ? o.list.length : o.list?.rows ?? 0, list_at: at(list),
      causal: o.causal, causal_offset: o.causal ? o.causalOffset : 0, use_flags: mask !== undefined, flags_at: at(flags), win_mode: winMode, win_lo: mask?.winLo ?? 0,
      win, rounds, qtags_at: at(qTags), ktags_at: at(kTags), qperm_at: at(perms[0]), kperm_at: at(perms[1]),
      qstarts_at: at(perms[2]), kstarts_at: at(perms[3]), num_keys: numKeys, cap: hashRound?.cap ?? 0,
      mode: WRITE_CODES[o.write], stats_add: o.add, scale: t.scale,
    });
    g.dispatch(
      pipeline, [q, k, v, out, lse, cnt, vsum].map((b) => b.binding).concat(idx.binding, params), g.rowGroups(o.qTo - o.qFrom),
    );
  });
}

export function probe(g: Bindings, t: ProbeTask): void {
  if (t.nk === 0) return;
  g.record(() => {
    const q = g.bind(t.q, t.d, t.nq);
    const k = g.bind(t.k, t.d, t.nk);
    const rows = g.bind(t.rows, 1, t.count);
    const mass = g.bindOutput(t.mass, 1, t.nk);
    const lseBytes = Math.max(4, t.count * 4);
    const lse: GPUBufferBinding = {
      buffer: g.scratch.acquire(lseBytes, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST), offset: 0, size: lseBytes,
    };
    // Step 0: each probe row's lse (a workgroup per row); step 1: the mass of each key.
    for (const [step, workgroups] of [Math.max(1, t.count), g.rowGroups(t.nk)].entries()) {
      const params = g.uniform(PROBE, {
        q_off: q.el, k_off: k.el, rows_off: rows.el, mass_off: mass.el, count: t.count, nk: t.nk, d: t.d, causal: t.causal,
        causal_offset: t.causal ? t.causalOffset : 0, sinks: t.sinks, win_lo: t.winLo, win: t.window, step, scale: t.scale,
      });
      g.dispatch(g.rowKernel(PROBE), [q.binding, k.binding, rows.binding, lse, mass.binding, params], workgroups);
    }
    g.scratch.release(lse.buffer);
  });
}

export function heavy(g: Bindings, t: HeavyTask): void {
  g.record(() => {
    const mass = g.bind(t.mass, 1, t.nk);
    const cols = g.bindOutput(t.cols, 1, Math.max(1, t.sinks + t.count));
    const flags = g.bindOutput(t.flags, 1, t.nk);
    const params = g.uniform(HEAVY, {
      mass_off: mass.el, cols_off: cols.el, flags_off: flags.el, nk: t.nk, sinks: t.sinks, count: t.count,
    });
    g.dispatch(g.rowKernel(HEAVY), [mass.binding, cols.binding, flags.binding, params], 1);
  });
}

export function remainder(g: Bindings, t: RemainderTask): void {
  if (t.nq === 0 || t.dv === 0) return;
  g.record(() => {
    const chunks = Math.ceil(t.nk / REMAINDER_CHUNK);
    // The per-row scalars, then the chunk sums of V (written by the kernel).
    const aux = g.gather([
      { view: t.exact.cnt, width: 1, rows: t.nq }, { view: t.samples.cnt, width: 1, rows: t.nq },
      { view: t.samples.lse, width: 1, rows: t.nq },
    ], (chunks + 1) * t.dv);
    const v = g.bind(t.v, t.dv, t.nk);
    const out = g.bindOutput(t.exact.out, t.dv, t.nq);
    const lse = g.bindOutput(t.exact.lse, 1, t.nq);
    const vsumE = g.bind(t.exact.vsum, t.dv, t.nq);
    const sOut = g.bind(t.samples.out, t.dv, t.nq);
    const vsumS = g.bind(t.samples.vsum, t.dv, t.nq);
    const bindings = [v, out, lse, vsumE, sOut, vsumS].map((b) => b.binding).concat(aux.binding);
    // Step 0: chunk sums; step 1: their prefix over chunks; step 2: the rows.
    for (const [step, invocations] of [chunks * t.dv, t.dv, t.nq].entries()) {
      const params = g.uniform(REMAINDER, {
        v_off: v.el, out_off: out.el, lse_off: lse.el, vsum_e_off: vsumE.el, s_out_off: sOut.el, vsum_s_off: vsumS.el,
        cnt_e_at: aux.at[0], cnt_s_at: aux.at[1], s_lse_at: aux.at[2], sums_at: aux.at[3], nq: t.nq, nk: t.nk, dv: t.dv,
        causal: t.causal, causal_offset: t.causal ? t.causalOffset : 0, chunks, step, cv: t.controlVariate,
      });
      g.dispatch(g.rowKernel(REMAINDER), [...bindings, params], g.rowGroups(Math.max(1, invocations)));
    }
  });
}
