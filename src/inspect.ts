// Looking inside HyperAttention: the sortLSH order it gives the queries and keys of a
// non-causal problem, computed with the library's own hashing and sorting kernels (the
// WebAssembly backend) and its own block plan, so that a caller can draw or study where the
// block-diagonal part puts the attention mass.
import { createCpuBackend } from './cpu/backend.ts';
import { HyperAttentionError, typedFailure } from './errors.ts';
import { callProjections, kernelMode } from './hyper.ts';
import { bucketBits, buildPlan, planParams, type AuthorsPlan } from './plan.ts';
import { resolveExactOptions, resolveHyperOptions, type ExactOptions, type HyperOptions } from './options.ts';
import { Xoshiro128 } from './random.ts';
import { attentionShape, isHostTensor, readRows, toInputTensor, type Tensor } from './tensor.ts';

/** The options of hyperAttention that decide the sortLSH order. */
export type LshOrderOptions = Pick<HyperOptions, 'blockSize' | 'lshNumProjs' | 'mode' | 'seed' | 'projections'>;

const LSH_ORDER_KEYS: (keyof LshOrderOptions)[] = ['blockSize', 'lshNumProjs', 'mode', 'seed', 'projections'];

export interface LshOrder {
  /** [B, H, Nq]: queryOrder[head][i] is the query row at sorted position i */
  queryOrder: { data: Int32Array; shape: [number, number, number] };
  /** [B, Hkv, Nk]: keyOrder[head][j] is the key row at sorted position j */
  keyOrder: { data: Int32Array; shape: [number, number, number] };
  /** sorted queries per diagonal block (the last block takes the remainder) */
  queryBlock: number;
  /** sorted keys per diagonal block, b (the last block may be shorter) */
  keyBlock: number;
  numBlocks: number;
}

/**
 * The sortLSH permutations hyperAttention uses for q [B, H, Nq, D] against k [B, Hkv, Nk, D]
 * in one non-causal step, with the same projections (drawn from `seed` or given), sort keys
 * and block sizes. Sorted query block i attends to sorted key block i. A causal call applies
 * the same hashing to the off-diagonal halves of its recursion, not to the whole matrix.
 */
export function lshOrder(q: Tensor, k: Tensor, options: LshOrderOptions = {}): Promise<LshOrder> {
  return orderOf(q, k, options).catch((error: unknown) => Promise.reject(typedFailure(error)));
}

async function orderOf(qGiven: Tensor, kGiven: Tensor, options: LshOrderOptions): Promise<LshOrder> {
  // The first call only checks the option names; the second resolves the values.
  resolveExactOptions(options as ExactOptions, LSH_ORDER_KEYS);
  const o = resolveHyperOptions(options);
  // Each tensor read once (toInputTensor): what is checked is what is hashed.
  const [q, k] = [toInputTensor('q', qGiven), toInputTensor('k', kGiven)];
  if (!isHostTensor(q) || !isHostTensor(k)) throw new HyperAttentionError('INVALID_SHAPE', 'lshOrder: q and k must be host tensors ({ data: Float32Array, shape })');
  const { B, H, Hkv, nq, nk, d } = attentionShape(q, k, k, false);
  // The accurate mode's default (0) is a bit count chosen from the number of keys.
  const r = bucketBits(nk, o.lshNumProjs);
  // The order of the authors' non-causal step (one LSH round: the accurate mode's first).
  const authors = { ...o, mode: kernelMode(o.mode), sampleSize: 0, lshNumProjs: r };
  const [step] = (buildPlan(planParams({ nq, nk, H, Hkv, B, d, dv: d }, { causal: false }, authors, 0)) as AuthorsPlan).steps;
  const [projections] = callProjections(o, d, new Xoshiro128(o.seed), 1, r);

  const queryOrder = new Int32Array(B * H * nq);
  const keyOrder = new Int32Array(B * Hkv * nk);
  // A backend of its own: its arena then never interleaves with an attention call.
  const backend = await createCpuBackend();
  const proj = backend.createBuffer('f32', d * r);
  backend.upload(proj, projections);
  const rows = backend.createBuffer('f32', Math.max(nq, nk) * d);
  const keys = backend.createBuffer('i32', Math.max(nq, nk));
  const perm = backend.createBuffer('i32', Math.max(nq, nk));
  const order = async (x: Tensor, n: number, into: Int32Array, head: number) => {
    backend.upload(rows, readRows(x, head * n * d, n * d));
    backend.hash({ x: { buf: rows, row: 0 }, rows: n, d, proj, r, mode: kernelMode(o.mode), keys: { buf: keys, row: 0 } });
    backend.sort({ keys: { buf: keys, row: 0 }, count: n, pads: 0, numKeys: 1 << r, perm: { buf: perm, row: 0 } });
    await backend.download(perm, 0, n, into, head * n);
  };
  try {
    for (let head = 0; head < B * H; head++) await order(q, nq, queryOrder, head);
    for (let head = 0; head < B * Hkv; head++) await order(k, nk, keyOrder, head);
  } finally {
    backend.releaseAll();
  }
  return {
    queryOrder: { data: queryOrder, shape: [B, H, nq] },
    keyOrder: { data: keyOrder, shape: [B, Hkv, nk] },
    queryBlock: step.qBlock,
    keyBlock: step.kBlock,
    numBlocks: step.nBlocks,
  };
}
