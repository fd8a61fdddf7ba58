// A fresh process for test/warmup.test.ts: configures the scheduler as argv[2] says,
// calls warmup(), runs one small call with backend 'auto', and prints one JSON line (the
// profile it ended with, the warnings, whether warmup's profile was kept) for the test.
import { configureScheduler, explain, getProfile, hyperAttention, warmup } from '../src/index.ts';
import { randomTensor } from './util.ts';

const mode = process.argv[2] ?? 'default';
const warnings: string[] = [];
configureScheduler({ onWarning: (m) => warnings.push(m) });
if (mode === 'no-file') configureScheduler({ profilePath: null });
if (mode.startsWith('path=')) configureScheduler({ profilePath: mode.slice('path='.length) });

const warm = await warmup();
const shape = [1, 1, 1024, 64];
const [q, k, v] = [1, 2, 3].map((s) => randomTensor(shape, s));
await hyperAttention(q, k, v);
const after = await getProfile();
const report: Record<string, unknown> = {
  created: warm.created,
  sameProfile: after === warm,
  adapter: warm.environment.adapter,
  gpuMeasured: warm.devices.webgpu !== null,
  warnings,
};
if (mode === 'software') {
  // 'auto' plans for WebAssembly alone; an explicit backend 'webgpu' still gets a priced plan.
  report.autoBackend = (await explain({ q: shape, k: shape, v: shape })).backend;
  report.webgpuPlan = (await explain({ q: shape, k: shape, v: shape }, { backend: 'webgpu' })).backend;
  report.gpuMeasuredAfter = (await getProfile()).devices.webgpu !== null;
}
console.log(`result ${JSON.stringify(report)}`);
process.exit(0); // Dawn's instance would keep the process alive
