// uvu's closing totals, read from a run's output by the test runners (scripts/test.mjs,
// scripts/test-gpu.mjs).

/** { passed, failed } from uvu's 'Total: N' and 'Passed: N' (colour codes stripped), or undefined. */
export function uvuTotals(text) {
  const plain = text.replace(/\x1b\[[0-9;]*m/g, '');
  const total = /Total:\s+(\d+)/.exec(plain);
  const passed = /Passed:\s+(\d+)/.exec(plain);
  if (!total || !passed) return undefined;
  return { passed: Number(passed[1]), failed: Number(total[1]) - Number(passed[1]) };
}
