// The tally of a test script run as its own process (test-embedding.mjs, test-browser.mjs):
// one line per check ('ok' or 'FAIL', its name, what was seen) and the closing
// 'N passed, N failed' line that scripts/test.mjs adds up.
export const counts = { passed: 0, failed: 0 };

export function check(name, ok, detail = '') {
  console.log(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail ? `: ${detail}` : ''}`);
  if (ok) counts.passed += 1;
  else counts.failed += 1;
}

/** Prints the closing line and exits, with status 1 when a check failed. */
export function finish() {
  console.log(`${counts.passed} passed, ${counts.failed} failed`);
  process.exit(counts.failed === 0 ? 0 : 1);
}
