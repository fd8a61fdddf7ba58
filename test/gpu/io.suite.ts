// Device-resident I/O through the public API (src/index.ts) on the shared device: GPUBuffer
// inputs (written with queue.writeBuffer from the same data) and output 'gpu' give what
// Float32Array inputs and outputs give on the same backend (within 1e-6; the kernels are
// the same, so in practice bit-identical), host and GPU inputs mix, and misuse rejects
// with the documented codes before anything runs.
import { suite } from '../suite.ts';
import * as assert from 'uvu/assert';
import { createWebGPUBackend } from '../../src/gpu/index.ts';
import {
  HyperAttentionError, exactAttention, hyperAttention, type AttentionResult, type ErrorCode, type GPUAttentionResult,
  type GPUTensor, type InputTensor, type Tensor,
} from '../../src/index.ts';
import { expectClose, gaussian, random, readBuffer } from './harness.ts';

const device = (await createWebGPUBackend()).device;
const SAME = 1e-6;

/** A GPU tensor holding t's data, as another library's buffer would. */
function onDevice(t: Tensor, usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST): GPUTensor {
  const buffer = device.createBuffer({ size: t.data.byteLength, usage });
  device.queue.writeBuffer(buffer, 0, t.data as Float32Array<ArrayBuffer>);
  return { buffer, shape: t.shape };
}

async function readBack(t: GPUTensor): Promise<Float32Array> {
  return readBuffer(device, t.buffer as GPUBuffer);
}

/** Reads back a GPU result (destroying its buffers, which are the caller's) and compares with a host one. */
async function expectSameResult(label: string, got: GPUAttentionResult, want: AttentionResult): Promise<void> {
  assert.equal(got.out.shape, want.out.shape, `${label}: out shape`);
  assert.equal(got.lse.shape, want.lse.shape, `${label}: lse shape`);
  assert.is(got.out.dtype, 'float32');
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
  assert.is(got.out.buffer.usage & usage, usage, `${label}: out usage`);
  expectSame(`${label} out`, await readBack(got.out), want.out.data);
  expectSame(`${label} lse`, await readBack(got.lse), want.lse.data);
  got.out.buffer.destroy();
  got.lse.buffer.destroy();
}

function expectSame(label: string, got: Float32Array, want: Float32Array): void {
  assert.ok(got.length >= want.length, `${label}: ${got.length} elements, expected ${want.length}`);
  for (let i = 0; i < want.length; i++) expectClose(`${label}[${i}]`, got[i], want[i], SAME);
}

async function expectRejects(p: Promise<unknown>, code: ErrorCode, pattern: RegExp): Promise<void> {
  const error = await p.then(() => undefined, (e: unknown) => e);
  assert.ok(
    error instanceof HyperAttentionError && error.code === code && pattern.test(error.message),
    `expected ${code} matching ${pattern}, got ${error instanceof Error ? `${(error as HyperAttentionError).code} ${error.message}` : String(error)}`,
  );
}

/** q [2, 2, n, 32], k and v [2, 1, n, 32] (grouped-query). */
function inputs(n: number): [Tensor, Tensor, Tensor] {
  const rng = random();
  const [B, H, Hkv, d] = [2, 2, 1, 32];
  return [
    { data: gaussian(rng, B * H * n * d), shape: [B, H, n, d] },
    { data: gaussian(rng, B * Hkv * n * d), shape: [B, Hkv, n, d] },
    { data: gaussian(rng, B * Hkv * n * d), shape: [B, Hkv, n, d] },
  ];
}

const small = { blockSize: 64, sampleSize: 32, minSeqLen: 128, seed: 3, device };
const IO = suite('device-resident I/O (public API)');

for (const [causal, n] of [[true, 600], [false, 700]] as const) {
  IO(`hyperAttention causal ${causal}, n ${n}: GPU inputs, host and GPU outputs`, async () => {
    const host = inputs(n);
    const gpu = host.map((t) => onDevice(t));
    // GPU inputs or outputs run the plan unchecked: the host call to compare with is too.
    const options = { ...small, causal, tolerance: Infinity };
    const want = await hyperAttention(...host, options);
    const got = await hyperAttention(...(gpu as [GPUTensor, GPUTensor, GPUTensor]), options);
    expectSame('out', got.out.data, want.out.data);
    expectSame('lse', got.lse.data, want.lse.data);
    await expectSameResult('output gpu', await hyperAttention(gpu[0], gpu[1], gpu[2], { ...options, output: 'gpu' }), want);
    for (const t of gpu) t.buffer.destroy();
  });
}

IO('hyperAttention mixing host and GPU inputs, host inputs and GPU output', async () => {
  const host = inputs(600);
  const k = onDevice(host[1]);
  const options = { ...small, causal: true, mode: 'reference' as const };
  const want = await hyperAttention(...host, options);
  const mixed = await hyperAttention(host[0], k, host[2], options);
  expectSame('out', mixed.out.data, want.out.data);
  expectSame('lse', mixed.lse.data, want.lse.data);
  await expectSameResult('host in, gpu out', await hyperAttention(...host, { ...options, output: 'gpu' }), want);
  k.buffer.destroy();
});

IO('exactAttention: GPU inputs, host and GPU outputs', async () => {
  const host = inputs(200);
  const gpu = host.map((t) => onDevice(t)) as [GPUTensor, GPUTensor, GPUTensor];
  const want = await exactAttention(...host, { causal: true, device });
  const got = await exactAttention(...gpu, { causal: true, device });
  expectSame('out', got.out.data, want.out.data);
  expectSame('lse', got.lse.data, want.lse.data);
  await expectSameResult('output gpu', await exactAttention(...gpu, { causal: true, device, output: 'gpu' }), want);
  for (const t of gpu) t.buffer.destroy();
});

IO('misuse rejects before anything runs', async () => {
  const host = inputs(64);
  const q = onDevice(host[0]);
  const [, k, v] = host;
  await expectRejects(hyperAttention(q, k, v, { backend: 'cpu' }), 'INVALID_OPTION', /q \(a GPU tensor\) needs backend 'webgpu'/);
  await expectRejects(exactAttention(q, k, v), 'INVALID_OPTION', /'device' option/);
  await expectRejects(exactAttention(...host, { backend: 'cpu', output: 'gpu' }), 'INVALID_OPTION', /output 'gpu' needs backend 'webgpu'/);
  await expectRejects(exactAttention(...host, { output: 'gpu' }), 'INVALID_OPTION', /'device' option/);
  const short: InputTensor = { buffer: q.buffer, shape: [2, 2, 65, 32] };
  await expectRejects(exactAttention(short, k, v, { device }), 'INVALID_SHAPE', /needs 33280 bytes, the buffer has 32768/);
  const half = { ...q, dtype: 'float16' } as unknown as GPUTensor;
  await expectRejects(exactAttention(half, k, v, { device }), 'UNSUPPORTED', /float16 GPU tensors are not supported/);
  const noCopy = onDevice(host[0], GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST);
  await expectRejects(exactAttention(noCopy, k, v, { device }), 'INVALID_OPTION', /COPY_SRC/);
  await expectRejects(exactAttention(...host, { device, output: 'cpu' as 'host' }), 'INVALID_OPTION', /output: expected/);
  q.buffer.destroy();
  noCopy.buffer.destroy();
});

IO('a destroyed input buffer rejects with GPU_ERROR, and the next call works', async () => {
  const host = inputs(64);
  const q = onDevice(host[0]);
  q.buffer.destroy();
  await expectRejects(exactAttention(q, host[1], host[2], { device, output: 'gpu' }), 'GPU_ERROR', /./);
  const want = await exactAttention(...host, { device });
  const again = onDevice(host[0]);
  await expectSameResult('after the error', await exactAttention(again, host[1], host[2], { device, output: 'gpu' }), want);
  again.buffer.destroy();
});
