// The numeric codes the kernels share with the host: how a result reaches its rows (write
// modes), which part accurate.wgsl computes, and how the accurate mask treats a query's
// window. This table is their one source: src/gpu/kernels.ts writes it into every WGSL
// kernel as constants, and the AssemblyScript kernels' own copies are held to it by
// test/interfaces.test.ts (which needs no GPU).
import type { WriteMode } from './ops.ts';

export const KERNEL_CODES = {
  /** overwrite out and lse */
  WRITE_OVERWRITE: 0,
  /** lse-merge as part 2, the authors' saturating formula */
  WRITE_MERGE_REFERENCE: 1,
  /** lse-merge as part 2, exact log-add-exp */
  WRITE_MERGE_FIXED: 2,
  /** accurate.wgsl: rows against a key list shared by the workgroup (columns, samples) */
  PART_LIST: 0,
  /** accurate.wgsl: rows against their windows */
  PART_WINDOW: 1,
  /** accurate.wgsl: sorted queries against their bucket's keys (a hash round) */
  PART_ROUND: 2,
  /** the accurate mask: the window hides nothing */
  WINDOW_IGNORE: 0,
  /** the accurate mask: keys inside the window are hidden (counted by the window part) */
  WINDOW_HIDE_INSIDE: 1,
  /** the accurate mask: keys outside the window are hidden (the window part itself) */
  WINDOW_HIDE_OUTSIDE: 2,
} as const;

export type KernelCode = keyof typeof KERNEL_CODES;

/** The kernels' code of each write mode. */
export const WRITE_CODES: Readonly<Record<WriteMode, number>> = {
  write: KERNEL_CODES.WRITE_OVERWRITE,
  'merge-reference': KERNEL_CODES.WRITE_MERGE_REFERENCE,
  'merge-fixed': KERNEL_CODES.WRITE_MERGE_FIXED,
};
