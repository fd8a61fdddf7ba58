// The hybrid backend (src/hybrid.ts: hashing and sorting on WebAssembly, the rest on
// WebGPU) against the WebAssembly backend: its ops on guarded buffers, then whole
// HyperAttention and exact calls (src/hyper.ts) with grouped-query heads, so that buffers
// are reused from head to head. Every GPU-side buffer is poisoned (NaN; as i32 an index
// far out of range) when created, so a result or permutation that never reached the GPU
// shows. Spies on the two inner backends check where each op ran. Tolerances: 1e-4 max
// abs error in out and lse, as in cpu.suite.ts (both hash on the same WebAssembly kernel,
// so the LSH keys and permutations are identical, and random inputs are safe).
import { suite } from '../suite.ts';
import * as assert from 'uvu/assert';
import { createCpuBackend } from '../../src/cpu/backend.ts';
import { HyperAttentionError } from '../../src/errors.ts';
import { createWebGPUBackend } from '../../src/gpu/index.ts';
import { runExact, runHyper } from '../../src/hyper.ts';
import { HybridBackend } from '../../src/hybrid.ts';
import { OP_NAMES, type Backend, type BackendBuffer, type OpName } from '../../src/ops.ts';
import { resolveExactOptions, resolveHyperOptions, type Mode } from '../../src/options.ts';
import { attentionShape, type Tensor } from '../../src/tensor.ts';
import { LSE_TOL, OUT_TOL, expectSame, gaussian, guarded, random, readGuarded } from './harness.ts';

const cpu = await createCpuBackend();
const hybrid = new HybridBackend(await createCpuBackend(), await createWebGPUBackend());
const device = hybrid.gpu.device;

/** Calls of each op on each inner backend, as 'cpu.hash', 'webgpu.block', ... */
const calls = new Map<string, number>();
const count = (key: string) => calls.get(key) ?? 0;
const OPS: readonly OpName[] = OP_NAMES;

function spy(target: Backend, side: 'cpu' | 'webgpu'): void {
  const methods = target as unknown as Record<string, (...args: unknown[]) => unknown>;
  for (const op of [...OPS, ...(target.exactHeads ? ['exactHeads'] : [])]) {
    const original = methods[op].bind(target);
    methods[op] = (...args: unknown[]) => {
      calls.set(`${side}.${op}`, count(`${side}.${op}`) + 1);
      return original(...args);
    };
  }
}
spy(hybrid.cpu, 'cpu');
spy(hybrid.gpu, 'webgpu');

// Poison every GPU-side buffer at creation (the upload is queued ahead of the caller's).
const createGpuBuffer = hybrid.gpu.createBuffer.bind(hybrid.gpu);
hybrid.gpu.createBuffer = (kind: 'f32' | 'i32', length: number): BackendBuffer => {
  const buf = createGpuBuffer(kind, length);
  hybrid.gpu.upload(buf, new Float32Array(length).fill(NaN));
  return buf;
};

/** Every op ran where HybridBackend.placement says, or not at all (cpu.upload fills mirrors). */
function expectPlacement(): void {
  for (const op of OPS) {
    const where = HybridBackend.placement[op];
    const other = where === 'cpu' ? 'webgpu' : 'cpu';
    if (op !== 'upload') assert.is(count(`${other}.${op}`), 0, `${op} ran on ${other}, placement says ${where}`);
  }
}

async function expectThrows(fn: () => unknown, pattern: RegExp): Promise<void> {
  const error = await (async () => fn())().then(() => undefined, (e: unknown) => e);
  assert.ok(error instanceof Error && pattern.test(error.message), `expected an error matching ${pattern}, got ${String(error)}`);
}

const Ops = suite('hybrid ops');

Ops('placement table', () => {
  assert.equal({ ...HybridBackend.placement }, {
    upload: 'webgpu', download: 'webgpu', hash: 'cpu', sort: 'cpu',
    exact: 'webgpu', block: 'webgpu', sampled: 'webgpu', merge: 'webgpu',
    probe: 'webgpu', heavy: 'webgpu', columns: 'webgpu', window: 'webgpu', round: 'webgpu', buckets: 'cpu',
    samples: 'webgpu', remainder: 'webgpu', prefixes: 'webgpu',
  });
  assert.ok(Object.isFrozen(HybridBackend.placement));
  assert.is(hybrid.name, 'hybrid');
});

for (const mode of ['reference', 'fixed'] as const) {
  Ops(`hash and sort on the CPU, perm on the GPU, x re-uploaded (${mode})`, async () => {
    const rng = random();
    const [rows, d, r, pads] = [700, 64, 7, 30];
    const projData = gaussian(rng, d * r);
    const xs = [gaussian(rng, rows * d), gaussian(rng, rows * d)];
    const run = async (be: Backend) => {
      const proj = be.createBuffer('f32', d * r);
      be.upload(proj, projData);
      const x = guarded(be, rows, d, xs[0]);
      const keys = guarded(be, rows, 1, undefined, 'i32');
      const perms = [0, 1].map(() => guarded(be, rows + pads, 1, undefined, 'i32'));
      for (const [i, data] of xs.entries()) {
        // The second upload makes the mirror stale: the second hash must see it.
        if (i > 0) be.upload(x.buf, data, x.view.row * d);
        be.hash({ x: x.view, rows, d, proj, r, mode, keys: keys.view });
        be.sort({ keys: keys.view, count: rows, pads, numKeys: 1 << r, perm: perms[i].view });
      }
      const result = [];
      for (const perm of perms) result.push(Array.from(await readGuarded(be, perm, `${be.name} perm`)));
      be.releaseAll();
      return result;
    };
    const got = await run(hybrid);
    const want = await run(cpu);
    assert.equal(got, want);
    assert.not.equal(got[0], got[1], 'the two inputs sort differently');
    assert.is(count('cpu.hash'), 2);
    assert.is(count('cpu.sort'), 2);
    expectPlacement();
  });
}

Ops('an op needing a side that does not hold the data throws', async () => {
  const rng = random();
  const [rows, d, r] = [50, 16, 4];
  const proj = hybrid.createBuffer('f32', d * r);
  hybrid.upload(proj, gaussian(rng, d * r));
  const x = hybrid.createBuffer('f32', rows * d);
  hybrid.upload(x, gaussian(rng, rows * d));
  const keys = hybrid.createBuffer('i32', rows);
  hybrid.hash({ x: { buf: x, row: 0 }, rows, d, proj, r, mode: 'fixed', keys: { buf: keys, row: 0 } });
  // Keys live on the CPU only.
  await expectThrows(() => hybrid.download(keys, 0, rows, new Int32Array(rows)), /download.*CPU op wrote/);
  const out = hybrid.createBuffer('f32', rows * d);
  const lse = hybrid.createBuffer('f32', rows);
  hybrid.exact({
    q: { buf: x, row: 0 }, k: { buf: x, row: 0 }, v: { buf: x, row: 0 }, nq: rows, nk: rows, d, dv: d, scale: 0.25,
    causal: false, causalOffset: 0, dst: { out: { buf: out, row: 0 }, lse: { buf: lse, row: 0 }, write: 'write' },
  });
  // out is GPU-written: hashing it would need it on the CPU.
  await expectThrows(
    () => hybrid.hash({ x: { buf: out, row: 0 }, rows, d, proj, r, mode: 'fixed', keys: { buf: keys, row: 0 } }),
    /hash x.*GPU op wrote/,
  );
  // A whole upload makes it usable again on both sides.
  hybrid.upload(out, gaussian(rng, rows * d));
  hybrid.hash({ x: { buf: out, row: 0 }, rows, d, proj, r, mode: 'fixed', keys: { buf: keys, row: 0 } });
  await hybrid.sync();
  hybrid.releaseAll();
  await expectThrows(() => hybrid.upload(x, new Float32Array(1)), /after releaseAll/);
  await expectThrows(() => hybrid.upload(cpu.createBuffer('f32', 1), new Float32Array(1)), /not a buffer of this hybrid/);
});

Ops.before.each(() => calls.clear());
Ops.after.each(() => {
  hybrid.releaseAll();
  cpu.releaseAll();
});

const Calls = suite('hybrid vs cpu, whole calls');
const [B, H, Hkv, d, dv] = [1, 4, 2, 64, 48];

/** Queries, keys and values of n keys; nq queries (default n). */
function inputs(n: number, nq = n): [Tensor, Tensor, Tensor] {
  const rng = random();
  return [
    { data: gaussian(rng, B * H * nq * d), shape: [B, H, nq, d] },
    { data: gaussian(rng, B * Hkv * n * d), shape: [B, Hkv, n, d] },
    { data: gaussian(rng, B * Hkv * n * dv), shape: [B, Hkv, n, dv] },
  ];
}

// minSeqLen 128: causal calls recurse to two levels of LSH steps (one and two sub-heads)
// before exact leaves, non-causal ones run one LSH step; every step samples.
const small = { blockSize: 64, sampleSize: 64, minSeqLen: 128, seed: 11 };
for (const causal of [false, true]) {
  for (const mode of ['reference', 'fixed'] as Mode[]) {
    for (const n of [1000, 999]) {
      Calls(`hyperAttention causal ${causal}, ${mode}, n ${n} (B ${B}, H ${H}, Hkv ${Hkv}, d ${d}, dv ${dv})`, async () => {
        const [q, k, v] = inputs(n);
        const o = resolveHyperOptions({ causal, mode, ...small });
        const shape = attentionShape(q, k, v, causal);
        const got = await runHyper(hybrid, shape, o, q, k, v);
        const want = await runHyper(cpu, shape, o, q, k, v);
        expectSame('out', got.out.data, want.out.data, OUT_TOL);
        expectSame('lse', got.lse.data, want.lse.data, LSE_TOL);
        // q is hashed once per head, k once per key/value head.
        assert.ok(count('cpu.hash') >= H + Hkv, `cpu.hash ran ${count('cpu.hash')} times`);
        assert.ok(count('cpu.sort') >= 2 * H, `cpu.sort ran ${count('cpu.sort')} times`);
        for (const op of ['block', 'sampled'] as const) assert.ok(count(`webgpu.${op}`) >= H, `webgpu.${op} ran`);
        if (causal) assert.ok(count('webgpu.merge') >= H && count('webgpu.exact') >= H, 'webgpu.merge and exact ran');
        expectPlacement();
      });
    }
  }
}

// A causal chunk: 300 queries, the last of 1000 keys.
Calls('hyperAttention causal chunk (300 queries of 1000 keys), fixed and accurate', async () => {
  const [q, k, v] = inputs(1000, 300);
  for (const mode of ['fixed', 'accurate'] as Mode[]) {
    const o = resolveHyperOptions({ causal: true, mode, ...small, tolerance: Infinity });
    const shape = attentionShape(q, k, v, true);
    const got = await runHyper(hybrid, shape, o, q, k, v);
    const want = await runHyper(cpu, shape, o, q, k, v);
    expectSame(`${mode} out`, got.out.data, want.out.data, OUT_TOL);
    expectSame(`${mode} lse`, got.lse.data, want.lse.data, LSE_TOL);
  }
  expectPlacement();
});

Calls('exactAttention, causal and not, and a causal chunk', async () => {
  for (const [causal, nq] of [[false, 301], [true, 301], [true, 120]] as const) {
    const [q, k, v] = inputs(301, nq);
    const o = resolveExactOptions({ causal });
    const shape = attentionShape(q, k, v, causal);
    const got = await runExact(hybrid, shape, o, q, k, v);
    const want = await runExact(cpu, shape, o, q, k, v);
    expectSame('out', got.out.data, want.out.data, OUT_TOL);
    expectSame('lse', got.lse.data, want.lse.data, LSE_TOL);
  }
  assert.is(count('cpu.hash') + count('cpu.sort'), 0, 'exact attention neither hashes nor sorts');
  // Each exact op runs every head at once.
  assert.ok(count('webgpu.exactHeads') >= 2);
  expectPlacement();
});

Calls('GPU tensor inputs are rejected (INVALID_OPTION)', async () => {
  const [q, k, v] = inputs(64);
  const buffer = device.createBuffer({
    size: q.data.byteLength, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
  });
  try {
    const gq = { buffer, shape: q.shape };
    const shape = attentionShape(gq, k, v, false);
    const error = await runExact(hybrid, shape, resolveExactOptions({}), gq, k, v).then(() => undefined, (e: unknown) => e);
    assert.ok(
      error instanceof HyperAttentionError && error.code === 'INVALID_OPTION' && /hybrid/.test(error.message),
      `expected INVALID_OPTION naming 'hybrid', got ${String(error)}`,
    );
    assert.is(count('webgpu.exact'), 0, 'nothing ran');
  } finally {
    buffer.destroy();
  }
});

Calls.before.each(() => calls.clear());
