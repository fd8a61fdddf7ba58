// How a call uses the GPU: the submits and readbacks (mapAsync) a call makes, counted by
// the backend (one command buffer and one readback per call with host output, none with
// output 'gpu'); heads batched into one exact op, also split over several dispatches and
// readbacks when a small binding or buffer limit forces it; keys split beyond the binding
// limit; and the buffer pool trimmed after a large call. Results are compared with the
// WebAssembly backend's on the same inputs (1e-4 max abs error, as in cpu.suite.ts).
import { suite } from '../suite.ts';
import * as assert from 'uvu/assert';
import { createCpuBackend } from '../../src/cpu/backend.ts';
import { WebGPUBackend, createWebGPUBackend, type WebGPUBackendOptions } from '../../src/gpu/index.ts';
import { runExact, runHyper } from '../../src/hyper.ts';
import type { AttentionResult } from '../../src/result.ts';
import { HybridBackend } from '../../src/hybrid.ts';
import { runVerified } from '../../src/verified.ts';
import type { Backend, WriteMode } from '../../src/ops.ts';
import { resolveExactOptions, resolveHyperOptions, type Mode } from '../../src/options.ts';
import { attentionShape, type Tensor } from '../../src/tensor.ts';
import { LSE_TOL, OUT_TOL, expectSame, gaussian, guarded, random, readGuarded } from './harness.ts';

const device = (await createWebGPUBackend()).device;
const cpu = await createCpuBackend();
const backendWith = (options: WebGPUBackendOptions = {}) => new WebGPUBackend(device, options);

/** q [B, H, n, d], k and v [B, Hkv, n, d] */
function inputs(B: number, H: number, Hkv: number, n: number, d: number): [Tensor, Tensor, Tensor] {
  const rng = random();
  return [
    { data: gaussian(rng, B * H * n * d), shape: [B, H, n, d] },
    { data: gaussian(rng, B * Hkv * n * d), shape: [B, Hkv, n, d] },
    { data: gaussian(rng, B * Hkv * n * d), shape: [B, Hkv, n, d] },
  ];
}

type Call = (be: Backend, onProgress?: (p: { done: number; total: number }) => void) => Promise<AttentionResult>;

function exactCall(t: [Tensor, Tensor, Tensor], causal: boolean): Call {
  const shape = attentionShape(...t, causal);
  return (be, onProgress) => runExact(be, shape, resolveExactOptions({ causal, onProgress }), ...t);
}

function hyperCall(t: [Tensor, Tensor, Tensor], causal: boolean, mode: Mode = 'fixed'): Call {
  const shape = attentionShape(...t, causal);
  return (be, onProgress) => runHyper(
    be, shape, resolveHyperOptions({ causal, mode, blockSize: 64, sampleSize: 32, minSeqLen: 128, seed: 5, onProgress }), ...t,
  );
}

/** The call on `be` and on the CPU, compared; returns what the call cost `counted`. */
async function expectLikeCpu(label: string, call: Call, be: Backend, counted: WebGPUBackend = be as WebGPUBackend) {
  const want = await call(cpu);
  const before = { ...counted.counts };
  const progress: number[] = [];
  const got = await call(be, (p) => progress.push(p.done / p.total));
  expectSame(`${label} out`, got.out.data, want.out.data, OUT_TOL);
  expectSame(`${label} lse`, got.lse.data, want.lse.data, LSE_TOL);
  assert.ok(progress.length > 0 && progress.at(-1) === 1, `${label}: progress ends at total (${progress})`);
  assert.ok(progress.every((x, i) => i === 0 || x >= progress[i - 1]), `${label}: progress is monotonic (${progress})`);
  const plain = { ...counted.counts };
  await call(be);
  return {
    withProgress: { submits: plain.submits - before.submits, readbacks: plain.readbacks - before.readbacks },
    plain: { submits: counted.counts.submits - plain.submits, readbacks: counted.counts.readbacks - plain.readbacks },
    progressReports: progress.length,
  };
}

const Counts = suite('webgpu: submits and readbacks per call');

for (const causal of [false, true]) {
  Counts(`exact, causal ${causal}: one submit and one readback, heads batched`, async () => {
    const be = backendWith();
    const cost = await expectLikeCpu('exact', exactCall(inputs(2, 4, 2, 150, 32), causal), be);
    assert.equal(cost.plain, { submits: 1, readbacks: 1 });
    // With progress, the 8 heads go in batches, each submitted; still one readback.
    assert.is(cost.withProgress.readbacks, 1);
    assert.is(cost.progressReports, 8);
  });

  Counts(`hyperAttention, causal ${causal}: one submit and one readback, heads one by one`, async () => {
    const be = backendWith();
    const cost = await expectLikeCpu('hyper', hyperCall(inputs(1, 3, 1, 520, 32), causal), be);
    assert.equal(cost.plain, { submits: 1, readbacks: 1 });
    assert.is(cost.withProgress.readbacks, 1);
    assert.is(cost.progressReports, 3);
  });
}

for (const causal of [false, true]) {
  Counts(`accurate mode, causal ${causal}: one submit and one readback (heavy columns chosen on the GPU)`, async () => {
    const be = backendWith();
    const cost = await expectLikeCpu('accurate', hyperCall(inputs(1, 3, 1, 520, 32), causal, 'accurate'), be);
    assert.equal(cost.plain, { submits: 1, readbacks: 1 });
    assert.is(cost.withProgress.readbacks, 1);
  });
}

// Verified calls: the check rows' exact results come back with the plan's results, and
// each round of heads moved up costs one submit and one readback more. Diffuse heads at
// 520 keys miss 0.1 and move straight to exact attention (no wider plan fits there).
for (const tolerance of [1e9, 0.1]) {
  Counts(`verified accurate call, tolerance ${tolerance}: ${tolerance === 0.1 ? 'two readbacks' : 'one readback'}`, async () => {
    const t = inputs(1, 3, 1, 520, 32);
    const shape = attentionShape(...t, false);
    const o = resolveHyperOptions({ window: 16, sampleSize: 32, minSeqLen: 128, seed: 5, tolerance, checkRows: 32 });
    const want = await runVerified(cpu, shape, o, ...t, undefined);
    const be = backendWith();
    const before = { ...be.counts };
    const got = await runVerified(be, shape, o, ...t, undefined);
    const rounds = tolerance === 0.1 ? 2 : 1;
    assert.equal({ submits: be.counts.submits - before.submits, readbacks: be.counts.readbacks - before.readbacks }, { submits: rounds, readbacks: rounds });
    assert.equal(got.verification!.heads.map((h) => h.plan), want.verification!.heads.map((h) => h.plan));
    assert.equal(want.verification!.heads.map((h) => h.plan), Array(3).fill(tolerance === 0.1 ? 'exact' : 'accurate'));
    expectSame('verified out', got.out.data, want.out.data, OUT_TOL);
  });
}

Counts("hybrid: one readback per call, a submit per head", async () => {
  const hybrid = new HybridBackend(await createCpuBackend(), backendWith());
  const cost = await expectLikeCpu('hybrid hyper', hyperCall(inputs(1, 3, 1, 520, 32), true, 'reference'), hybrid, hybrid.gpu);
  assert.equal(cost.plain, { submits: 3, readbacks: 1 });
});

Counts("output 'gpu': one submit, no readback", async () => {
  const be = backendWith();
  const t = inputs(1, 2, 1, 300, 32);
  const shape = attentionShape(...t, true);
  const calls = [
    () => runExact(be, shape, resolveExactOptions({ causal: true, output: 'gpu', device }), ...t, 'gpu'),
    () => runHyper(be, shape, resolveHyperOptions({ causal: true, mode: 'fixed', minSeqLen: 128, output: 'gpu', device }), ...t, 'gpu'),
  ];
  for (const call of calls) {
    const before = { ...be.counts };
    const got = await call();
    got.out.buffer.destroy();
    got.lse.buffer.destroy();
    assert.equal({ submits: be.counts.submits - before.submits, readbacks: be.counts.readbacks - before.readbacks }, { submits: 1, readbacks: 0 });
  }
});

Counts('results larger than a buffer: a readback per buffer of heads', async () => {
  const d = 16;
  for (const [call, n] of [[exactCall(inputs(1, 5, 5, 100, d), true), 100], [hyperCall(inputs(1, 5, 1, 300, d), true), 300]] as const) {
    // Room for the results of two heads (lse, then out from a 256-byte boundary).
    const be = backendWith({ maxBufferBytes: (2 * n * (d + 1) + 64) * 4 });
    const { plain } = await expectLikeCpu(`small buffers, n ${n}`, call, be);
    assert.is(plain.readbacks, 3);
  }
});

const Split = suite('webgpu: splitting ops over bindings');

for (const write of ['write', 'merge-reference', 'merge-fixed'] as WriteMode[]) {
  for (const causal of [false, true]) {
    Split(`exact, keys past the binding limit, ${write}, causal ${causal}`, async () => {
      const rng = random();
      const [nq, nk, d, dv] = [90, 230, 32, 24];
      const [q, k, v] = [gaussian(rng, nq * d), gaussian(rng, nk * d), gaussian(rng, nk * dv)];
      const [out1, lse1] = [gaussian(rng, nq * dv), gaussian(rng, nq, 3)];
      // 40 rows of 32 floats per binding (past one 256-byte alignment step).
      const small = backendWith({ maxBindingBytes: 40 * d * 4 + 256 });
      const results = [];
      for (const be of [small, cpu] as Backend[]) {
        const o = write === 'write' ? guarded(be, nq, dv) : guarded(be, nq, dv, out1);
        const l = write === 'write' ? guarded(be, nq, 1) : guarded(be, nq, 1, lse1);
        be.exact({
          q: guarded(be, nq, d, q).view, k: guarded(be, nk, d, k).view, v: guarded(be, nk, dv, v).view,
          nq, nk, d, dv, scale: 0.2, causal, causalOffset: nk - nq - 7, dst: { out: o.view, lse: l.view, write },
        });
        results.push([await readGuarded(be, o, `${be.name} out`), await readGuarded(be, l, `${be.name} lse`)]);
        be.releaseAll();
      }
      expectSame('out', results[0][0], results[1][0], OUT_TOL);
      expectSame('lse', results[0][1], results[1][1], LSE_TOL);
    });
  }
}

Split('whole calls: head batches cut by the binding limit, grouped-query heads', async () => {
  // Bindings of 3 heads' rows: 12 heads over 3 key-value heads go in several dispatches.
  const [n, d] = [64, 16];
  const be = backendWith({ maxBindingBytes: 3 * n * d * 4 + 256 });
  for (const causal of [false, true]) await expectLikeCpu(`causal ${causal}`, exactCall(inputs(2, 6, 3, n, d), causal), be);
  // A head larger than a binding: query and key runs.
  const tiny = backendWith({ maxBindingBytes: 40 * d * 4 + 256 });
  await expectLikeCpu('runs', exactCall(inputs(1, 2, 1, 150, d), true), tiny);
});

const Pool = suite('webgpu: buffer pool');

Pool('a large call leaves its buffers idle until the next call ends', async () => {
  const be = backendWith();
  await exactCall(inputs(1, 2, 1, 40, 16), false)(be);
  const small = be.idleBytes;
  await exactCall(inputs(1, 4, 4, 700, 64), false)(be);
  const large = be.idleBytes;
  assert.ok(large > 4 * small, `idle after the large call: ${large} bytes, after a small one: ${small}`);
  await exactCall(inputs(1, 2, 1, 40, 16), false)(be);
  assert.ok(be.idleBytes <= small + large / 8, `idle after a small call that followed: ${be.idleBytes} bytes`);
  // A run of like calls reuses the same buffers.
  const steady = be.idleBytes;
  await exactCall(inputs(1, 2, 1, 40, 16), false)(be);
  assert.is(be.idleBytes, steady);
});
