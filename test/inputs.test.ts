// What the API takes as input besides { data, shape } in [B, H, N, D]: `dims` tensors
// (onnxruntime-web's ort.Tensor, transformers.js), layout 'bnhd', and the errors that
// explain a tensor it cannot take (tf.js, untagged 16-bit data, float16 GPU buffers,
// onnxruntime on a GPU, 'bnhd' on GPU buffers); float16 itself is test/float16.test.ts. Numbers are checked against the float64 reference on fresh random inputs, and
// 'bnhd' against the same call in 'bhnd', which must agree bit for bit.
import * as ort from 'onnxruntime-web';
import { suite } from './suite.ts';
import * as assert from 'uvu/assert';
import { exactAttention, explain, hyperAttention, type HyperOptions, type Tensor } from '../src/index.ts';
import { referenceAttention } from './reference.ts';
import { rejects } from './rejects.ts';
import { maxAbs, maxAbsError, randomTensor, relativeError } from './util.ts';

const test = suite('inputs');

// Exact attention against the float64 reference: the tolerance of test/exact.test.ts.
const REL_TOL = 1e-5;
/** Small enough for HyperAttention to approximate (not fall back to exact) at n = 512. */
// A window shorter than the sequences, so that hyper approximates.
const HYPER = { blockSize: 64, sampleSize: 32, minSeqLen: 128, window: 64, seed: 5, backend: 'cpu', tolerance: Infinity } satisfies HyperOptions;

/** [B, X, Y, D] -> [B, Y, X, D], written out here so the test does not lean on src/layout.ts. */
function transpose({ data, shape }: Tensor): Tensor {
  const [B, X, Y, D] = shape;
  const out = new Float32Array(data.length);
  for (let b = 0; b < B; b++) {
    for (let x = 0; x < X; x++) {
      for (let y = 0; y < Y; y++) {
        for (let i = 0; i < D; i++) out[((b * Y + y) * X + x) * D + i] = data[((b * X + x) * Y + y) * D + i];
      }
    }
  }
  return { data: out, shape: [B, Y, X, D] };
}

let seed = 100;
/** Fresh q, k, v in [B, H, N, D] with grouped-query heads. */
function problem(B: number, H: number, Hkv: number, n: number, d: number, dv = d) {
  return {
    q: randomTensor([B, H, n, d], seed++), k: randomTensor([B, Hkv, n, d], seed++), v: randomTensor([B, Hkv, n, dv], seed++),
    B, H, Hkv, n, d, dv,
  };
}

function againstReference(label: string, out: Float32Array, p: ReturnType<typeof problem>, causal: boolean) {
  const ref = referenceAttention({ q: p.q.data, k: p.k.data, v: p.v.data, B: p.B, H: p.H, Hkv: p.Hkv, nq: p.n, nk: p.n, d: p.d, dv: p.dv, causal });
  const rel = relativeError(out, ref.out);
  assert.ok(rel <= REL_TOL, `${label}: relative error ${rel} > ${REL_TOL}`);
  assert.ok(maxAbsError(out, ref.out) <= 1e-5 * maxAbs(p.v.data), `${label}: max abs error`);
}

test('dims tensors: onnxruntime-web ort.Tensor and { data, dims, type } give the { data, shape } result', async () => {
  const p = problem(1, 4, 2, 300, 32, 24);
  const asOrt = (t: Tensor) => new ort.Tensor('float32', t.data, t.shape);
  const exact = await exactAttention(asOrt(p.q), asOrt(p.k), asOrt(p.v), { causal: true });
  assert.equal(exact.out.shape, [1, 4, 300, 24]);
  againstReference('ort.Tensor exact', exact.out.data, p, true);

  const big = problem(1, 2, 1, 512, 16);
  const dims = (t: Tensor) => ({ data: t.data, dims: t.shape, type: 'float32' as const });
  const viaDims = await hyperAttention(dims(big.q), dims(big.k), dims(big.v), HYPER);
  const viaShape = await hyperAttention(big.q, big.k, big.v, HYPER);
  assert.equal(viaDims.out.data, viaShape.out.data);
  assert.equal(viaDims.lse.data, viaShape.lse.data);
});

for (const causal of [false, true]) {
  test(`layout 'bnhd' (causal=${causal}, grouped-query heads): exact matches 'bhnd' and the reference`, async () => {
    const p = problem(2, 4, 2, 200, 32, 16);
    const bhnd = await exactAttention(p.q, p.k, p.v, { causal });
    const bnhd = await exactAttention(transpose(p.q), transpose(p.k), transpose(p.v), { causal, layout: 'bnhd' });
    assert.equal(bnhd.out.shape, [2, 200, 4, 16]);
    assert.equal(bnhd.lse.shape, [2, 4, 200], 'lse stays [B, H, N]');
    assert.equal(transpose(bnhd.out).data, bhnd.out.data);
    assert.equal(bnhd.lse.data, bhnd.lse.data);
    againstReference('bnhd exact', transpose(bnhd.out).data, p, causal);
  });

  test(`layout 'bnhd' (causal=${causal}, grouped-query heads): hyper matches 'bhnd' bit for bit`, async () => {
    const p = problem(1, 4, 2, 512, 16);
    const o = { ...HYPER, causal };
    const bhnd = await hyperAttention(p.q, p.k, p.v, o);
    const bnhd = await hyperAttention(transpose(p.q), transpose(p.k), transpose(p.v), { ...o, layout: 'bnhd' });
    const exact = await exactAttention(p.q, p.k, p.v, { causal });
    // It did approximate: otherwise this would test exact attention twice.
    assert.ok(relativeError(bhnd.out.data, exact.out.data) > 1e-4, 'hyper fell back to exact');
    assert.equal(bnhd.out.shape, [1, 512, 4, 16]);
    assert.equal(transpose(bnhd.out).data, bhnd.out.data);
    assert.equal(bnhd.lse.data, bhnd.lse.data);
  });
}

test("layout 'bhnd' given is the default", async () => {
  const p = problem(1, 2, 2, 64, 16);
  const given = await exactAttention(p.q, p.k, p.v, { layout: 'bhnd' });
  const left = await exactAttention(p.q, p.k, p.v);
  assert.equal(given.out.data, left.out.data);
});

const q = randomTensor([1, 2, 64, 16], 1);
const k = randomTensor([1, 2, 64, 16], 2);
const v = randomTensor([1, 2, 64, 16], 3);
const call = (qq: unknown, kk: unknown, vv: unknown, o: object = {}) => (p: { onProgress: () => void }) =>
  hyperAttention(qq as Tensor, kk as Tensor, vv as Tensor, { ...o, ...p } as HyperOptions);
/** Enough of a GPUDevice and a GPUBuffer to pass the option checks (nothing runs on them). */
const none = () => {};
const device = {
  queue: { submit: none, writeBuffer: none, onSubmittedWorkDone: none }, lost: new Promise(() => {}), limits: {},
  createBuffer: none, createBindGroup: none, createCommandEncoder: none, createComputePipeline: none, createShaderModule: none,
  pushErrorScope: none, popErrorScope: none,
};
const gpuTensor = { buffer: { size: 64 * 32 * 4, usage: 0x4 | 0x8 | 0x80, destroy() {} }, shape: [1, 2, 64, 16] };

test('errors: tensors of other libraries and other dtypes', async () => {
  const tfLike = { shape: [1, 2, 64, 16], dtype: 'float32', data: async () => q.data, dataSync: () => q.data };
  await rejects('INVALID_SHAPE', /tf\.js.*pass \{ data: await q\.data\(\), shape: q\.shape \}/, call(tfLike, k, v));
  await rejects('INVALID_SHAPE', /v\.dtype: only 'float32' and 'float16'.*"float64"/, call(q, k, { ...v, dtype: 'float64' }));
  await rejects('INVALID_SHAPE', /k\.data: a Uint16Array is taken only as float16 bits.*dtype: 'float16'/, call(q, { data: new Uint16Array(k.data.length), shape: k.shape }, v));
  await rejects('UNSUPPORTED', /k\.dtype: float16 GPU tensors are not supported/, call(q, { ...gpuTensor, dtype: 'float16' }, v, { device }));
  const onGpu = { dims: q.shape, type: 'float32', location: 'gpu-buffer', get data() { throw new Error('not on the CPU'); } };
  await rejects('INVALID_SHAPE', /onnxruntime tensor on 'gpu-buffer'.*getData\(\)/, call(onGpu, k, v));
  await rejects('INVALID_SHAPE', /q\.dims: expected 4 dimensions/, call({ data: q.data, dims: [2, 64, 16] }, k, v));
  await rejects('INVALID_SHAPE', /q: dims \[1, 2, 64, 8\] needs 1024 elements, data has 2048/, call({ data: q.data, dims: [1, 2, 64, 8] }, k, v));
  await rejects('INVALID_SHAPE', /q\.data: expected a Float32Array \(or float16: .*\), got a Float64Array of length 2048/, call({ data: Float64Array.from(q.data), dims: q.shape }, k, v));
});

test('errors: layout', async () => {
  await rejects('INVALID_OPTION', /layout: expected 'bhnd' \(\[B, H, N, D\]\) or 'bnhd'.*got "BNHD"/, call(q, k, v, { layout: 'BNHD' }));
  await rejects('INVALID_OPTION', /layout: .*got 3/, (p) => exactAttention(q, k, v, { layout: 3 as never, ...p }));
  await rejects('INVALID_OPTION', /layout 'bnhd' is not supported for GPU tensors yet \(k is a GPUBuffer\)/,
    call(q, gpuTensor, v, { layout: 'bnhd', device }));
  await rejects('INVALID_OPTION', /layout 'bnhd' is not supported with output 'gpu' yet/, call(q, k, v, { layout: 'bnhd', device, output: 'gpu' }));
  // Shapes are checked after the transpose; the message says so.
  await rejects('INVALID_SHAPE', /k and v sequence lengths differ.*transposed from layout 'bnhd'/,
    call(transpose(q), transpose(k), randomTensor([1, 63, 2, 16], 4), { layout: 'bnhd' }));
  await rejects('INVALID_SHAPE', /k and v sequence lengths differ.*transposed from layout 'bnhd'/,
    () => explain({ q: [1, 64, 2, 16], k: [1, 64, 2, 16], v: [1, 63, 2, 16] }, { layout: 'bnhd' }));
  await rejects('INVALID_OPTION', /layout: expected/, () => explain({ q: [1, 64, 2, 16], k: [1, 64, 2, 16], v: [1, 64, 2, 16] }, { layout: 'x' as never }));
});

test('a BigInt layout or tensor type is described, not serialised', async () => {
  const t = randomTensor([1, 1, 8, 8], 1);
  await rejects('INVALID_OPTION', /layout: .*got the bigint 5n/, (p) => hyperAttention(t, t, t, { layout: 5n as never, ...p }));
  await rejects('INVALID_SHAPE', /q\.type: .*got the bigint 5n/, (p) => hyperAttention({ data: t.data, dims: t.shape, type: 5n } as never, t, t, p));
});

