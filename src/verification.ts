// What a verified call reports (verified.ts): per (batch, head), which plan gave its result,
// the error its check rows measured and a confidence bound on it.
import type { PlanName } from './plan.ts';

/** One level a head was checked at: the plan and what its check rows measured. */
export interface CheckedPlan {
  plan: PlanName;
  /** estimated relative Frobenius error of the head's out (0 for exact attention) */
  error: number;
  /** upper confidence bound of the error (see Verification.confidence) */
  bound: number;
}

/** What a verified call did for one (batch, head). */
export interface HeadVerification extends CheckedPlan {
  batch: number;
  head: number;
  /** every plan checked for this head, in order; the last one is the head's result */
  tried: CheckedPlan[];
  /**
   * true: the head ran exact attention without trying a plan, because it had missed the
   * tolerance with every plan on a recent call on the same cache (docs/cache.md)
   */
  predicted?: true;
}

/** What a verified call did: the tolerance, how it checked, and each head's plan and error. */
export interface Verification {
  tolerance: number;
  /** the one-sided confidence of each bound */
  confidence: number;
  /** exact check rows per head */
  checkRows: number;
  /** per (batch, head), batch-major */
  heads: HeadVerification[];
}
