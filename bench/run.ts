// Runs the bench suites in one process, as uvu does for test files: all of them, or those
// named. `npm run bench [-- --quick] [-- kernels e2e peers stall accuracy sweep ...]`.
// Each suite is also runnable alone: `tsx bench/<suite>.bench.ts [--quick]`.
import { argv, exit } from 'node:process';

/** uvu's own hooks for a runner that imports suite files itself (what its CLI does). */
const hooks = globalThis as unknown as { UVU_DEFER?: number; UVU_QUEUE: unknown[][]; UVU_INDEX?: number };

const SUITES = ['kernels', 'e2e', 'peers', 'threads', 'stall', 'layer', 'accuracy', 'sweep', 'memory', 'scheduler', 'soak'];

const named = argv.slice(2).filter((a) => !a.startsWith('--'));
const unknown = named.filter((s) => !SUITES.includes(s));
if (unknown.length) {
  console.error(`unknown suite(s): ${unknown.join(', ')}; the suites are: ${SUITES.join(', ')}`);
  exit(2);
}
const selected = named.length ? SUITES.filter((s) => named.includes(s)) : SUITES;

// Defer uvu's autorun until every selected suite is queued, so they run in this order.
hooks.UVU_DEFER = 1;
const uvu = await import('uvu');
for (const [index, name] of selected.entries()) {
  hooks.UVU_QUEUE.push([`bench/${name}.bench.ts`]);
  hooks.UVU_INDEX = index;
  await import(`./${name}.bench.ts`);
}
await uvu.exec();
const quick = argv.includes('--quick');
console.log(`results in bench/results/${quick ? 'quick/' : ''}; render them with \`npm run bench:report${quick ? ' -- --quick' : ''}\``);
