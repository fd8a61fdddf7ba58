// Entry of the WebGPU suites in every runtime (Node via tsx, Deno and Chromium via an
// esbuild bundle; scripts/test-gpu.mjs drives all three). Prints one marker line that
// the driver reads: 'gpu suites: no adapter ...' (skipped) or 'gpu suites: done'.
import { queueSuites } from '../suite.ts';
import { exec } from 'uvu';
import { getWebGPU } from '../../src/gpu/index.ts';

const gpu = await getWebGPU();
const adapter = await gpu?.requestAdapter();
if (!adapter) {
  console.log(`gpu suites: no adapter (${gpu ? 'requestAdapter() returned null' : 'no WebGPU in this runtime'})`);
} else {
  const info = adapter.info;
  console.log(`gpu suites: adapter ${info.vendor} ${info.architecture} ${info.description} (fallback: ${String(info.isFallbackAdapter ?? '?')}), features: ${[...adapter.features].filter((f) => f === 'shader-f16' || f === 'subgroups').join(' ') || 'none used'}`);
  // Order matters: device-loss destroys the shared device the other suites use.
  await import('./ops.suite.ts');
  await import('./cpu.suite.ts');
  await import('./fixtures.suite.ts');
  await import('./io.suite.ts');
  await import('./batch.suite.ts');
  await import('./hybrid.suite.ts');
  await import('./accurate.suite.ts');
  await import('./scheduler.suite.ts');
  await import('./fuzz.suite.ts');
  await import('./cache.suite.ts');
  await import('./device-loss.suite.ts');
  queueSuites();
  await exec();
  console.log('gpu suites: done');
}
const proc = (globalThis as { process?: { exit(code?: number): never; exitCode?: number } }).process;
// Dawn keeps Node's event loop alive; Deno's process shim exits the same way.
proc?.exit(proc.exitCode ?? 0);
