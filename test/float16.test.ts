// float16 inputs and outputDtype 'float16': every bit pattern decoded exactly (against the
// independent decoder of float16-reference.ts), rounding to nearest even against its
// independent encoder, attention on float16 inputs bit for bit the same call on their float32
// values (exact and HyperAttention; { data, shape, dtype }, { data, dims, type } and
// onnxruntime's own float16 tensor; layout 'bnhd'), and the typed errors: an untagged
// Uint16Array, dtype tags that disagree with the data, NaN and Infinity in float16, an
// outputDtype out of range or on GPU output, a result beyond float16's range.
import * as ort from 'onnxruntime-web';
import { suite } from './suite.ts';
import * as assert from 'uvu/assert';
import {
  exactAttention, explain, hyperAttention, HyperAttentionError, type AttentionResult, type Float16AttentionResult, type HyperOptions,
  type Tensor,
} from '../src/index.ts';
import { decodeFloat16, encodeFloat16 } from '../src/float16.ts';
import { Xoshiro128 } from '../src/random.ts';
import { referenceDecode, referenceDecodeAll, referenceEncode, referenceEncodeAll } from './float16-reference.ts';
import { referenceAttention } from './reference.ts';
import { rejects } from './rejects.ts';
import { maxAbsError, randomTensor } from './util.ts';

const test = suite('float16');

const bitsOf = (x: Float32Array) => new Uint32Array(x.buffer, x.byteOffset, x.length);
const isSpecial = (h: number) => (h & 0x7c00) === 0x7c00;

test('every finite float16 pattern decodes exactly (±0 and subnormals included)', () => {
  const patterns = Uint16Array.from({ length: 65536 }, (_, h) => h).filter((h) => !isSpecial(h));
  assert.is(patterns.length, 65536 - 2048);
  const got = decodeFloat16('q', patterns);
  const want = referenceDecodeAll(patterns);
  const [g, w] = [bitsOf(got), bitsOf(want)];
  for (let i = 0; i < patterns.length; i++) {
    if (g[i] !== w[i]) assert.unreachable(`0x${patterns[i].toString(16)}: ${got[i]}, expected ${want[i]}`);
  }
  assert.ok(Object.is(got[patterns.indexOf(0x8000)], -0));
  assert.is(got[patterns.indexOf(0x0001)], 2 ** -24);
  assert.is(got[patterns.indexOf(0x03ff)], 1023 * 2 ** -24);
  assert.is(got[patterns.indexOf(0x7bff)], 65504);
  assert.is(got[patterns.indexOf(0x3c00)], 1);
});

test('every Infinity and NaN pattern is NON_FINITE_INPUT naming the element, its value and float16', () => {
  for (let h = 0x7c00; h < 0x10000; h = h === 0x7fff ? 0xfc00 : h + 1) {
    const data = new Uint16Array([0x3c00, h, 0]);
    try {
      decodeFloat16('k', data);
      assert.unreachable(`0x${h.toString(16)} decoded`);
    } catch (error) {
      assert.instance(error, HyperAttentionError);
      const e = error as HyperAttentionError;
      assert.is(e.code, 'NON_FINITE_INPUT');
      const value = String(referenceDecode(h));
      assert.ok(e.message.startsWith(`k: element 1 is ${value} (float16 bits 0x${h.toString(16)})`), e.message);
    }
  }
});

test('float32 to float16 rounds to nearest, ties to even, like the reference encoder', () => {
  const values: number[] = [0, -0, 1, -1, 2 ** -24, 2 ** -25, 2 ** -25 * 1.0000001, 3 * 2 ** -25, 2 ** -14, 65504, 65519.996, -65519.996, 1e-45, -1e-40];
  // Every float16 value (a round trip), every midpoint between neighbours (ties), and the
  // float32 values just either side of each midpoint.
  for (let h = 0; h < 0x7c00; h++) {
    const a = referenceDecode(h);
    values.push(a, -a);
    if (h < 0x7bff) {
      const mid = Math.fround((a + referenceDecode(h + 1)) / 2);
      const below = new Float32Array([mid]);
      bitsOf(below)[0]--;
      const above = new Float32Array([mid]);
      bitsOf(above)[0]++;
      values.push(mid, below[0], above[0], -mid);
    }
  }
  // Random float32 patterns below the overflow threshold, float32 subnormals included.
  const rng = new Xoshiro128(16);
  const random = new Float32Array(1);
  while (values.length < 600_000) {
    bitsOf(random)[0] = rng.nextU32();
    if (Math.abs(random[0]) < 65520) values.push(random[0]);
  }
  const input = Float32Array.from(values);
  const got = encodeFloat16('out', '', input);
  const want = referenceEncodeAll(input);
  for (let i = 0; i < input.length; i++) {
    if (got[i] !== want[i]) assert.unreachable(`${input[i]}: 0x${got[i].toString(16)}, expected 0x${want[i].toString(16)}`);
  }
});

test('float32 values that round past 65504 are INPUT_OVERFLOW, never Infinity', () => {
  for (const x of [65520, -65520, 70000, 3e38]) {
    try {
      encodeFloat16('out', "use outputDtype 'float32'", new Float32Array([1, x]));
      assert.unreachable(`${x} encoded`);
    } catch (error) {
      assert.is((error as HyperAttentionError).code, 'INPUT_OVERFLOW');
      assert.match((error as Error).message, /out: element 1 is .*beyond float16's range \(largest 65504, .*\); use outputDtype 'float32'/);
    }
  }
});

/** q, k, v as float16 bits, and the float32 tensors of the same values. */
function halfProblem(shape: { B: number; H: number; Hkv: number; nq: number; nk: number; d: number; dv: number }, seed: number) {
  const { B, H, Hkv, nq, nk, d, dv } = shape;
  const make = (dims: number[], s: number) => {
    const bits = referenceEncodeAll(randomTensor(dims, s).data);
    return { bits, float32: { data: referenceDecodeAll(bits), shape: dims } as Tensor };
  };
  return { q: make([B, H, nq, d], seed), k: make([B, Hkv, nk, d], seed + 1), v: make([B, Hkv, nk, dv], seed + 2) };
}

function assertSameBits(a: AttentionResult, b: AttentionResult, what: string): void {
  for (const key of ['out', 'lse'] as const) {
    const [x, y] = [bitsOf(a[key].data), bitsOf(b[key].data)];
    assert.is(x.length, y.length, what);
    const first = x.findIndex((bits, i) => bits !== y[i]);
    assert.is(first, -1, `${what}: ${key}[${first}] differs`);
  }
}

const SHAPE = { B: 2, H: 4, Hkv: 2, nq: 600, nk: 600, d: 32, dv: 24 };
/** Small enough for HyperAttention to approximate (not fall back to exact) at 600 rows. */
const HYPER: HyperOptions = { backend: 'cpu', minSeqLen: 128, blockSize: 64, sampleSize: 32, window: 64, seed: 3, tolerance: Infinity };

test('attention on float16 inputs equals the same call on their float32 values, bit for bit (exact and hyper)', async () => {
  const p = halfProblem(SHAPE, 40);
  const tagged = (t: { bits: Uint16Array; float32: Tensor }) => ({ data: t.bits, shape: t.float32.shape, dtype: 'float16' as const });
  const dims = (t: { bits: Uint16Array; float32: Tensor }) => ({ data: t.bits, dims: t.float32.shape, type: 'float16' as const });
  const onnx = (t: { bits: Uint16Array; float32: Tensor }) => new ort.Tensor('float16', t.bits, t.float32.shape);
  for (const causal of [false, true]) {
    const exact32 = await exactAttention(p.q.float32, p.k.float32, p.v.float32, { backend: 'cpu', causal });
    const hyper32 = await hyperAttention(p.q.float32, p.k.float32, p.v.float32, { ...HYPER, causal });
    // The plan approximates: a result that differs from exact attention.
    assert.ok(maxAbsError(hyper32.out.data, exact32.out.data) > 1e-4);
    // Exact attention in float32 against the float64 reference on the decoded values.
    const ref = referenceAttention({ ...SHAPE, causal, q: p.q.float32.data, k: p.k.float32.data, v: p.v.float32.data });
    assert.ok(maxAbsError(exact32.out.data, ref.out) < 1e-5);
    for (const [name, wrap] of [['dtype', tagged], ['dims and type', dims], ['ort.Tensor', onnx]] as const) {
      const [q, k, v] = [wrap(p.q), wrap(p.k), wrap(p.v)];
      assertSameBits(await exactAttention(q, k, v, { backend: 'cpu', causal }), exact32, `exact, ${name}, causal ${causal}`);
      assertSameBits(await hyperAttention(q, k, v, { ...HYPER, causal }), hyper32, `hyper, ${name}, causal ${causal}`);
    }
    // Mixed: float16 keys and values with a float32 query.
    assertSameBits(await exactAttention(p.q.float32, tagged(p.k), tagged(p.v), { backend: 'cpu', causal }), exact32, `exact, mixed, causal ${causal}`);
  }
});

test("layout 'bnhd' with float16 inputs: the same result as the float32 call", async () => {
  const [B, N, H, D] = [1, 300, 2, 16];
  const [q, k, v] = [7, 8, 9].map((seed) => referenceEncodeAll(randomTensor([B, N, H, D], seed).data));
  const half = (data: Uint16Array) => ({ data, shape: [B, N, H, D], dtype: 'float16' as const });
  const float32 = (data: Uint16Array) => ({ data: referenceDecodeAll(data), shape: [B, N, H, D] });
  const options = { backend: 'cpu', layout: 'bnhd' } as const;
  assertSameBits(await exactAttention(half(q), half(k), half(v), options), await exactAttention(float32(q), float32(k), float32(v), options), 'bnhd');
});

test("outputDtype 'float16': out rounded to nearest even as the reference encoder rounds the float32 result; lse stays float32", async () => {
  const p = halfProblem(SHAPE, 60);
  const Float16 = (globalThis as { Float16Array?: new (n: number) => object }).Float16Array;
  for (const [name, call] of [
    ['exact', (o: { outputDtype?: 'float16' }) => exactAttention(p.q.float32, p.k.float32, p.v.float32, { backend: 'cpu', ...o })],
    ['hyper', (o: { outputDtype?: 'float16' }) => hyperAttention(p.q.float32, p.k.float32, p.v.float32, { ...HYPER, ...o })],
  ] as const) {
    const full = await call({}) as AttentionResult;
    const half = await call({ outputDtype: 'float16' }) as unknown as Float16AttentionResult;
    assert.is(half.out.dtype, 'float16');
    assert.equal(half.out.shape, full.out.shape);
    // A Float16Array where the runtime has one, else the bits in a Uint16Array.
    assert.ok(Float16 ? half.out.data instanceof Float16 : half.out.data instanceof Uint16Array, name);
    const got = new Uint16Array(half.out.data.buffer, half.out.data.byteOffset, half.out.data.length);
    assert.equal(Array.from(got), Array.from(referenceEncodeAll(full.out.data)), `${name}: out`);
    assert.instance(half.lse.data, Float32Array);
    assert.equal(Array.from(bitsOf(half.lse.data)), Array.from(bitsOf(full.lse.data)), `${name}: lse`);
  }
  // In layout 'bnhd' and with profile: the same conversion, after the transpose.
  const bnhd = await exactAttention(p.q.float32, p.k.float32, p.v.float32, { backend: 'cpu', layout: 'bnhd', profile: true });
  const bnhdHalf = await exactAttention(p.q.float32, p.k.float32, p.v.float32, { backend: 'cpu', layout: 'bnhd', profile: true, outputDtype: 'float16' });
  assert.ok(bnhdHalf.profile);
  const got = bnhdHalf.out.data;
  assert.equal(Array.from(new Uint16Array(got.buffer, got.byteOffset, got.length)), Array.from(referenceEncodeAll(bnhd.out.data)));
  // An explicit 'float32' is the default.
  const explicit = await exactAttention(p.q.float32, p.k.float32, p.v.float32, { backend: 'cpu', outputDtype: 'float32' });
  assert.instance(explicit.out.data, Float32Array);
});

test('errors: untagged Uint16Array, tags that disagree with the data, float16 NaN and Infinity', async () => {
  const p = halfProblem({ B: 1, H: 1, Hkv: 1, nq: 16, nk: 16, d: 8, dv: 8 }, 80);
  const shape = p.q.float32.shape;
  const tagged = (bits: Uint16Array) => ({ data: bits, shape, dtype: 'float16' as const });
  const [q, k, v] = [tagged(p.q.bits), tagged(p.k.bits), tagged(p.v.bits)];
  await rejects('INVALID_SHAPE', /q\.data: a Uint16Array is taken only as float16 bits.*dtype: 'float16'/,
    (o) => exactAttention({ data: p.q.bits, shape } as never, k, v, o));
  await rejects('INVALID_SHAPE', /v\.data: a Uint16Array is taken only as float16 bits/,
    (o) => hyperAttention(q, k, { data: p.v.bits, dims: shape, type: 'float32' } as never, o));
  await rejects('INVALID_SHAPE', /k: the tensor says 'float16', so data must be a Float16Array or a Uint16Array.*Float32Array/,
    (o) => exactAttention(q, { data: p.k.float32.data, shape, dtype: 'float16' } as never, v, o));
  await rejects('INVALID_SHAPE', /q: type "float16" and dtype "float32" disagree/,
    (o) => exactAttention({ data: p.q.bits, dims: shape, type: 'float16', dtype: 'float32' } as never, k, v, o));
  await rejects('INVALID_SHAPE', /q\.dtype: only 'float32' and 'float16' tensors are supported, got "bfloat16"/,
    (o) => exactAttention({ data: p.q.bits, shape, dtype: 'bfloat16' } as never, k, v, o));
  await rejects('INVALID_SHAPE', /q: shape \[1, 1, 16, 8\] needs 128 elements, data has 127/,
    (o) => exactAttention(tagged(p.q.bits.subarray(1)), k, v, o));
  const Float16 = (globalThis as { Float16Array?: new (values: ArrayLike<number>) => { length: number } }).Float16Array;
  if (Float16) {
    const f16 = new Float16(p.q.float32.data);
    await rejects('INVALID_SHAPE', /q: data is a Float16Array but the tensor says 'float32'/,
      (o) => exactAttention({ data: f16, shape, dtype: 'float32' } as never, k, v, o));
    const ok = await exactAttention({ data: f16, shape } as never, k, v, { backend: 'cpu' });
    assertSameBits(ok, await exactAttention(p.q.float32, k, v, { backend: 'cpu' }), 'Float16Array');
  }
  for (const [name, bits, text] of [['q', 0x7c00, 'Infinity'], ['k', 0xfc00, '-Infinity'], ['v', 0x7e00, 'NaN'], ['v', 0xfd01, 'NaN']] as const) {
    const data = { q: p.q.bits, k: p.k.bits, v: p.v.bits }[name].slice();
    data[5] = bits;
    const tensors = { q, k, v, [name]: tagged(data) };
    await rejects('NON_FINITE_INPUT', new RegExp(`^${name}: element 5 is ${text} \\(float16 bits 0x${bits.toString(16)}\\); inputs must be finite`),
      (o) => hyperAttention(tensors.q, tensors.k, tensors.v, o));
  }
});

test('errors: outputDtype values, on output gpu, and results beyond float16', async () => {
  const q = randomTensor([1, 1, 16, 8], 1);
  for (const bad of ['float64', 'f16', 'half', 'Float16', null, 16, true, {}]) {
    await rejects('INVALID_OPTION', /outputDtype: expected 'float32' or 'float16'|outputDtype: got null/,
      (o) => exactAttention(q, q, q, { ...o, outputDtype: bad as never }));
  }
  await assertRejects(explain({ q: q.shape, k: q.shape, v: q.shape }, { outputDtype: 'float64' as never }), 'INVALID_OPTION');
  const none = () => {};
  const device = {
    queue: { submit: none, writeBuffer: none, onSubmittedWorkDone: none }, lost: new Promise(() => {}), limits: {},
    createBuffer: none, createBindGroup: none, createCommandEncoder: none, createComputePipeline: none, createShaderModule: none,
    pushErrorScope: none, popErrorScope: none,
  };
  await rejects('UNSUPPORTED', /outputDtype 'float16': results on the device are float32 buffers/,
    (o) => exactAttention(q, q, q, { ...o, device, output: 'gpu', outputDtype: 'float16' } as never));
  // out is a weighted mean of v: v at 1e5 gives out beyond float16's largest value.
  const big = { data: new Float32Array(q.data.length).fill(1e5), shape: q.shape };
  await assertRejects(exactAttention(q, q, big, { backend: 'cpu', outputDtype: 'float16' }), 'INPUT_OVERFLOW', /out: element 0 is (99999\.9\d*|100000(\.0\d*)?), beyond float16's range/);
});

async function assertRejects(call: Promise<unknown>, code: string, pattern?: RegExp): Promise<void> {
  try {
    await call;
  } catch (error) {
    assert.is((error as HyperAttentionError).code, code, (error as Error).message);
    if (pattern) assert.match((error as Error).message, pattern);
    return;
  }
  assert.unreachable(`expected ${code}`);
}
