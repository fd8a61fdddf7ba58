// Type-level checks of the public API: `npm run typecheck` compiles this file and nothing
// runs it. A call's result type follows its options' type: a typed HyperOptions variable
// gives AttentionResult (issue 14: it used to fall through to the union), only
// output: 'gpu' gives GPUAttentionResult, outputDtype: 'float16' Float16AttentionResult,
// and a wide Output the union.
import type * as ort from 'onnxruntime-web';
import {
  exactAttention, hyperAttention, type AttentionResult, type DimsTensor, type ExactOptions, type GPUAttentionResult,
  type Float16AttentionResult, type Float16Data, type HyperOptions, type Output, type Tensor, type WebGPUDeviceLike,
} from '../src/index.ts';

/** true exactly when A and B are the same type (not merely assignable). */
type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false;
function same<A, B>(_proof: Equal<A, B>): void {}

declare const q: Tensor;
declare const device: WebGPUDeviceLike;
declare const output: Output;
declare const ortTensor: ort.TypedTensor<'float32'>;

export async function resultTypes(): Promise<void> {
  const opts: HyperOptions = { causal: true, seed: 1 };
  const r: AttentionResult = await hyperAttention(q, q, q, opts);
  const exactOpts: ExactOptions = { causal: true };
  const e: AttentionResult = await exactAttention(q, q, q, exactOpts);
  same<typeof r | typeof e, AttentionResult>(true);

  same<typeof r.out.data, Float32Array>(true);

  const plain = await hyperAttention(q, q, q);
  same<typeof plain, AttentionResult>(true);
  const literal = await exactAttention(q, q, q, { causal: true, layout: 'bnhd' });
  same<typeof literal, AttentionResult>(true);

  const gpu = await hyperAttention(q, q, q, { device, output: 'gpu' });
  same<typeof gpu, GPUAttentionResult>(true);
  const gpuOpts = { device, output: 'gpu' } as const satisfies ExactOptions;
  const gpuExact = await exactAttention(q, q, q, gpuOpts);
  same<typeof gpuExact, GPUAttentionResult>(true);

  const either = await hyperAttention(q, q, q, { device, output });
  same<typeof either, AttentionResult | GPUAttentionResult>(true);
  const wideOpts: HyperOptions & { output: Output } = { device, output };
  const eitherExact = await exactAttention(q, q, q, wideOpts);
  same<typeof eitherExact, AttentionResult | GPUAttentionResult>(true);

  const half = await hyperAttention(q, q, q, { outputDtype: 'float16' });
  same<typeof half, Float16AttentionResult>(true);
  same<typeof half.out.data, Float16Data>(true);
  same<typeof half.lse.data, Float32Array>(true);
  const halfExact = await exactAttention(q, q, q, { outputDtype: 'float16', causal: true });
  same<typeof halfExact, Float16AttentionResult>(true);
  const float32 = await exactAttention(q, q, q, { outputDtype: 'float32' });
  same<typeof float32, AttentionResult>(true);

  // @ts-expect-error a GPU result is not a host result
  const wrong: AttentionResult = await hyperAttention(q, q, q, { device, output: 'gpu' });
  void wrong;
}

export async function inputTypes(): Promise<void> {
  // onnxruntime-web's float32 tensor and { data, dims } pass as they are.
  same<typeof ortTensor extends DimsTensor ? true : false, true>(true);
  const r = await hyperAttention(ortTensor, ortTensor, ortTensor, { layout: 'bnhd' });
  same<typeof r, AttentionResult>(true);
  await exactAttention({ data: q.data, dims: [1, 1, 4, 4] }, q, q);
  // float16: bits in a Uint16Array tagged as onnxruntime tags them, or with dtype.
  same<ort.TypedTensor<'float16'> extends DimsTensor ? true : false, true>(true);
  await exactAttention({ data: new Uint16Array(16), dims: [1, 1, 4, 4], type: 'float16' }, { data: new Uint16Array(16), shape: [1, 1, 4, 4], dtype: 'float16' }, q);

  // @ts-expect-error unknown option names are still rejected (no generic widening of the options)
  await hyperAttention(q, q, q, { causall: true });
  // @ts-expect-error layouts are checked
  await hyperAttention(q, q, q, { layout: 'nhd' });
  // @ts-expect-error exactAttention has no HyperAttention options
  await exactAttention(q, q, q, { blockSize: 64 });
}
