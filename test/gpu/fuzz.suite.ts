// A share of the fuzz suite's calls (test/fuzz-cases.ts) on WebGPU: each ends in a correct
// result or a typed error, as on WebAssembly. Fewer calls than there, since a software
// adapter runs the kernels tens of times slower; a seed of its own, so the share is not a
// prefix of the WebAssembly run.
import { suite } from '../suite.ts';
import * as assert from 'uvu/assert';
import { makeCase, runCase, useBackend } from '../fuzz-cases.ts';

const SEED = 29;
const CALLS = 200;

const Fuzz = suite('webgpu fuzz');

Fuzz(`${CALLS} seeded calls (seed ${SEED}) on WebGPU end in a correct result or a typed error`, async () => {
  useBackend('webgpu');
  const counts = { correct: 0, typed: 0, failures: 0 };
  const failures: string[] = [];
  try {
    for (let i = 0; i < CALLS; i++) {
      const c = makeCase(SEED, i);
      const outcome = await runCase(c);
      if (outcome.kind === 'failure') {
        counts.failures++;
        failures.push(`  seed ${SEED} index ${i}: ${c.label}: ${outcome.why}`);
      } else counts[outcome.kind]++;
    }
  } finally {
    useBackend('cpu');
  }
  console.log(`webgpu fuzz: ${CALLS} calls: ${counts.correct} correct, ${counts.typed} typed rejections, ${counts.failures} failures`);
  if (failures.length > 0) console.log(failures.slice(0, 20).join('\n'));
  assert.is(counts.failures, 0, `${counts.failures} fuzz failures on WebGPU`);
});
