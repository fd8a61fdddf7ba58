// Runs the *.test.ts files under test/ in one process, as scripts/test.mjs does:
//   node --experimental-wasm-relaxed-simd --import tsx test/run.ts [PATTERN]
// (PATTERN, a regular expression, picks the files whose path under test/ it matches).
// Each file is imported whole, top-level awaits included, before its suites are queued
// (test/suite.ts), so that none of its tests can be registered too late; then uvu runs
// them all, grouped by file, and prints the totals scripts/test.mjs reads.
import { readdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { queueSuites } from './suite.ts';
import { exec } from 'uvu';

const here = dirname(fileURLToPath(import.meta.url));
const pattern = new RegExp(`(${process.argv[2] ?? ''}).*\\.test\\.ts$`, 'i');
const files = readdirSync(here, { recursive: true, encoding: 'utf8' })
  .filter((f) => pattern.test(f))
  .sort((a, b) => a.localeCompare(b));
const queue = (globalThis as { UVU_QUEUE?: unknown[][] }).UVU_QUEUE!;
const g = globalThis as { UVU_INDEX?: number };
for (const file of files) {
  g.UVU_INDEX = queue.push([file]) - 1;
  await import(pathToFileURL(join(here, file)).href);
  queueSuites();
}
await exec();
