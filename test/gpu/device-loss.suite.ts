// Device loss, as documented in src/gpu/backend.ts: destroying the device while a call is
// in flight rejects that call with DEVICE_LOST (a hang fails, after HANG_MS scaled to the machine),
// later ops on that backend throw DEVICE_LOST, and createWebGPUBackend() afterwards
// computes correctly on a new device. Runs last: it destroys the shared device.
import { lateAfter } from '../../scripts/pace.mjs';
import { suite } from '../suite.ts';
import * as assert from 'uvu/assert';
import { HyperAttentionError } from '../../src/errors.ts';
import { createWebGPUBackend, type WebGPUBackend } from '../../src/gpu/index.ts';
import { runExact } from '../../src/hyper.ts';
import { resolveExactOptions, type ExactOptions } from '../../src/options.ts';
import { requestWebGPUDevice } from '../../src/runtime/webgpu.ts';
import { attentionShape } from '../../src/tensor.ts';
import { referenceAttention } from '../reference.ts';
import { LSE_TOL, OUT_TOL, expectClose, gaussian, random } from './harness.ts';

/** On the reference machine; scaled to this one (scripts/pace.mjs). */
const HANG_MS = 20000;

/** The settled outcome of p, or 'hang' if it takes longer than HANG_MS (scaled). */
async function outcome(p: Promise<unknown>): Promise<unknown> {
  const hang = lateAfter(HANG_MS);
  try {
    return await Promise.race([p.then(() => 'resolved', (e: unknown) => e), hang.promise.then(() => 'hang')]);
  } finally {
    hang.cancel();
  }
}

function expectLost(result: unknown, label: string): void {
  assert.ok(
    result instanceof HyperAttentionError && result.code === 'DEVICE_LOST',
    `${label}: expected a DEVICE_LOST rejection, got ${result instanceof Error ? `${result.name} ${(result as HyperAttentionError).code ?? ''} ${result.message}` : String(result)}`,
  );
}

/** Exact causal attention, B 1, H 4, n 160, d 32, with options; returns the call and its check. */
function exactCall(be: WebGPUBackend, options: ExactOptions = {}) {
  const rng = random();
  const [B, H, n, d] = [1, 4, 160, 32];
  const [q, k, v] = [0, 1, 2].map(() => ({ data: gaussian(rng, B * H * n * d), shape: [B, H, n, d] }));
  const shape = attentionShape(q, k, v, true);
  const call = runExact(be, shape, resolveExactOptions({ causal: true, ...options }), q, k, v);
  const check = async () => {
    const got = await call;
    const want = referenceAttention({ q: q.data, k: k.data, v: v.data, B, H, Hkv: H, nq: n, nk: n, d, dv: d, causal: true });
    want.lse.forEach((x, i) => expectClose(`lse ${i}`, got.lse.data[i], x, LSE_TOL));
    want.out.forEach((x, i) => expectClose(`out ${i}`, got.out.data[i], x, OUT_TOL));
  };
  return { call, check };
}

const Loss = suite('webgpu device loss');

Loss('device destroyed between the heads of a call: DEVICE_LOST, later ops too, a new backend works', async () => {
  const device = await requestWebGPUDevice();
  const be = await createWebGPUBackend({ device });
  const { call } = exactCall(be, { onProgress: (p) => { if (p.done === 1) device.destroy(); } });
  expectLost(await outcome(call), 'the call');
  assert.ok(be.isLost, 'isLost');
  assert.throws(() => be.createBuffer('f32', 16), (e: unknown) => e instanceof HyperAttentionError && e.code === 'DEVICE_LOST');
  await exactCall(await createWebGPUBackend()).check();
});

Loss('device destroyed while a download is in flight: DEVICE_LOST, no hang', async () => {
  const device = await requestWebGPUDevice();
  const be = await createWebGPUBackend({ device });
  const { call } = exactCall(be);
  // runExact has recorded its first head and is waiting for the download.
  await Promise.resolve();
  device.destroy();
  expectLost(await outcome(call), 'the call');
});

Loss('a lost shared device is replaced by the next createWebGPUBackend()', async () => {
  const first = await createWebGPUBackend();
  first.device.destroy();
  await first.device.lost;
  const second = await createWebGPUBackend();
  assert.ok(second.device !== first.device, 'a new device');
  await exactCall(second).check();
});
