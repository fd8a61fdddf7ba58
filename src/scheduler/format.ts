// A plan (explain()) or a profiled call (profile: true) as a few lines of text, for logs
// and for people deciding whether to trust the scheduler on their device.
import { describeValue } from '../describe.ts';
import { HyperAttentionError } from '../errors.ts';
import type { CallProfile } from '../result.ts';
import type { Candidate, Explanation } from './cost.ts';

function amount(units: number): string {
  const [div, suffix] = units >= 1e9 ? [1e9, 'G'] : units >= 1e6 ? [1e6, 'M'] : units >= 1e3 ? [1e3, 'k'] : [1, ''];
  return `${(units / div).toFixed(div === 1 ? 0 : 1)}${suffix}`;
}

function ms(x: number | null): string {
  if (x === null) return '—';
  if (!Number.isFinite(x)) return '∞';
  return x >= 100 ? `${x.toFixed(0)} ms` : `${x.toFixed(2)} ms`;
}

/** Columns padded to their widest cell; those listed in `right` aligned right. */
function table(rows: string[][], right: number[]): string[] {
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  return rows.map((r) => `  ${r.map((cell, c) => (right.includes(c) ? cell.padStart(widths[c]) : cell.padEnd(widths[c]))).join('  ')}`.trimEnd());
}

const label = (c: Candidate) => `${c.backend} ${c.algorithm}${c.minSeqLen === null ? '' : ` minSeqLen ${c.minSeqLen}`}`;

/**
 * The plan's steps and candidates; with a profiled call, each step's measured time beside its
 * prediction. Rejects (INVALID_OPTION) anything but explain()'s answer and a call's profile.
 */
export function formatPlan(plan: Explanation, measured?: CallProfile): string {
  const isObject = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null;
  if (!isObject(plan) || !isObject(plan.shape) || !Array.isArray(plan.steps) || !Array.isArray(plan.candidates)) {
    throw new HyperAttentionError('INVALID_OPTION', `formatPlan: expected what explain() resolves with (or a profiled call's profile.plan), got ${describeValue(plan)}`);
  }
  if (measured !== undefined && (!isObject(measured) || !Array.isArray(measured.steps))) {
    throw new HyperAttentionError('INVALID_OPTION', `formatPlan: measured: expected a profiled call's profile, got ${describeValue(measured)}`);
  }
  const s = plan.shape;
  const lines = [
    `[${s.B}, ${s.H}, ${s.nq}, ${s.d}] x [${s.B}, ${s.Hkv}, ${s.nk}, ${s.d}]${s.causal ? ' causal' : ''} on ${plan.environment}`,
    `plan: ${label(plan)}, predicted ${ms(plan.predictedMs)}${measured ? `, measured ${ms(measured.measuredMs)} (synced per op)` : ''}`,
    `  why: ${plan.reason}`,
  ];
  if (plan.checkRows > 0) lines.push(`  checks: ${plan.checkRows} exact rows per head measure its error; a head over the tolerance runs a costlier plan`);
  const head = ['op', 'device', 'calls', 'work', 'predicted', ...(measured ? ['measured'] : [])];
  lines.push(...table([head, ...plan.steps.map((step) => {
    const got = measured?.steps.find((m) => m.op === step.op && m.device === step.device);
    return [
      step.op, step.device, String(step.calls), `${amount(step.units)} ${step.unit}`, ms(step.predictedMs),
      ...(measured ? [ms(got?.measuredMs ?? null)] : []),
    ];
  })], [2, 3, 4, 5]));
  lines.push('candidates:');
  lines.push(...table(plan.candidates.map((c) => [
    label(c), ms(c.predictedMs), label(c) === label(plan) ? '<- chosen' : c.rejected ? `rejected: ${c.rejected}` : '',
  ]), [1]));
  return lines.join('\n');
}
