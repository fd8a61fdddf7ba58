// The WebGPU backend's LSH ops and their kernels: sort keys of rows (hash.wgsl), the
// stable counting sort by key (three passes: sort-count, sort-scan, sort-scatter), and the
// accurate mode's buckets read off a sort (buckets.wgsl).
import { HyperAttentionError } from '../../errors.ts';
import type { BucketsTask, HashTask, SortTask } from '../../ops.ts';
import type { Bindings } from '../bindings.ts';
import { kernel } from '../kernels.ts';

export const HASH = kernel('hash', {
  libraries: ['lib-common'],
  params: { x_off: 'u32', rows: 'u32', d: 'u32', r: 'u32', fixed_mode: 'u32', keys_off: 'u32' },
});

export const SORT_COUNT = kernel('sort-count', {
  libraries: ['lib-common'],
  params: { keys_off: 'u32', count: 'u32', total: 'u32', chunks: 'u32' },
});

export const SORT_SCAN = kernel('sort-scan', { libraries: [], params: { length: 'u32' } });

export const SORT_SCATTER = kernel('sort-scatter', {
  libraries: ['lib-common'],
  params: { keys_off: 'u32', count: 'u32', total: 'u32', chunks: 'u32', perm_off: 'u32' },
});

export const BUCKETS = kernel('buckets', {
  libraries: ['lib-common'],
  params: {
    keys_off: 'u32', perm_off: 'u32', tags_off: 'u32', starts_off: 'u32', count: 'u32', num_keys: 'u32', cap: 'u32',
  },
});

export function hash(g: Bindings, t: HashTask): void {
  if (t.rows === 0) return;
  g.record(() => {
    const x = g.bind(t.x, t.d, t.rows);
    const proj = g.bind({ buf: t.proj, row: 0 }, 1, t.d * t.r);
    const keys = g.bindOutput(t.keys, 1, t.rows);
    const params = g.uniform(HASH, {
      x_off: x.el, rows: t.rows, d: t.d, r: t.r, fixed_mode: t.mode === 'fixed', keys_off: keys.el,
    });
    g.dispatch(g.rowKernel(HASH), [x.binding, proj.binding, keys.binding, params], g.rowGroups(t.rows));
  });
}

export function sort(g: Bindings, t: SortTask): void {
  const total = t.count + t.pads;
  if (total === 0) return;
  g.record(() => {
    const chunks = Math.ceil(total / g.sortWorkgroup);
    const countBytes = t.numKeys * chunks * 4;
    if (countBytes > g.maxBinding) {
      throw new HyperAttentionError(
        'UNSUPPORTED',
        `WebGPU: sorting ${total} rows by ${t.numKeys} keys needs a ${countBytes}-byte histogram; the device binds at most ${g.maxBinding} bytes`,
      );
    }
    const keys = g.bind(t.keys, 1, t.count);
    const perm = g.bindOutput(t.perm, 1, total);
    const counts = g.scratch.acquire(countBytes, GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST);
    const countsBinding: GPUBufferBinding = { buffer: counts, offset: 0, size: countBytes };
    g.commandEncoder().clearBuffer(counts, 0, countBytes);
    const rows = { keys_off: keys.el, count: t.count, total, chunks };
    g.dispatch(g.sortKernel(SORT_COUNT), [keys.binding, countsBinding, g.uniform(SORT_COUNT, rows)], chunks);
    g.dispatch(g.sortKernel(SORT_SCAN), [countsBinding, g.uniform(SORT_SCAN, { length: t.numKeys * chunks })], 1);
    g.dispatch(
      g.sortKernel(SORT_SCATTER),
      [keys.binding, countsBinding, perm.binding, g.uniform(SORT_SCATTER, { ...rows, perm_off: perm.el })],
      chunks,
    );
    g.scratch.release(counts);
  });
}

export function buckets(g: Bindings, t: BucketsTask): void {
  g.record(() => {
    const keys = g.bind(t.keys, 1, t.count);
    const perm = g.bind(t.perm, 1, t.count);
    const tags = g.bindOutput(t.tags, 1, t.count);
    const starts = g.bindOutput(t.starts, 1, t.numKeys + 1);
    const params = g.uniform(BUCKETS, {
      keys_off: keys.el, perm_off: perm.el, tags_off: tags.el, starts_off: starts.el, count: t.count, num_keys: t.numKeys,
      cap: t.cap,
    });
    g.dispatch(
      g.rowKernel(BUCKETS), [keys.binding, perm.binding, tags.binding, starts.binding, params],
      g.rowGroups(Math.max(t.count, t.numKeys + 1)),
    );
  });
}
