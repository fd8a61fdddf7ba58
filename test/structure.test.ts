// The test files take their suites from test/suite.ts, which refuses a test registered
// after its suite was queued: a file that took suite or test from uvu itself could lose
// tests silently again (uvu drops what comes after run()). Only the runners import exec.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as assert from 'uvu/assert';
import { suite } from './suite.ts';

const test = suite('structure');
const here = dirname(fileURLToPath(import.meta.url));

test('no test file takes a suite from uvu directly, or runs one', () => {
  const files = readdirSync(here, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.ts') && f !== 'suite.ts');
  const offenders: string[] = [];
  for (const file of files) {
    const text = readFileSync(join(here, file), 'utf8');
    for (const m of text.matchAll(/import\s+([^;]*?)\s+from\s+['"]uvu['"]/g)) {
      if (m[1].replace(/\s/g, '') !== '{exec}') offenders.push(`${file}: takes ${m[1]} from uvu`);
    }
    for (const m of text.matchAll(/^\s*\w+\.run\(\);?$/gm)) offenders.push(`${file}: ${m[0].trim()}`);
  }
  assert.ok(files.length > 20, `found only ${files.length} files under test/`);
  assert.equal(offenders, []);
});
