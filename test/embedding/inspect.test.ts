// lshOrder (src/inspect.ts) against hyperAttention itself: with the sampled residual off,
// HyperAttention is exactly block-diagonal attention in the sortLSH order, so the order
// lshOrder reports must reproduce its output (float64 softmax over each row's block).
import { suite } from '../suite.ts';
import * as assert from 'uvu/assert';
import { HyperAttentionError, hyperAttention, lshOrder, type Mode } from '../../src/index.ts';
import { referenceAttention } from '../reference.ts';
import { maxAbsError, randomTensor } from '../util.ts';

const test = suite('inspect');

const n = 512;
const d = 32;
const blockSize = 64;

for (const mode of ['reference', 'fixed'] as Mode[]) {
  test(`lshOrder gives the blocks hyperAttention computes (${mode} mode, grouped-query heads)`, async () => {
    const q = randomTensor([1, 2, n, d], 1);
    const k = randomTensor([1, 1, n, d], 2);
    const v = randomTensor([1, 1, n, d], 3);
    const options = { blockSize, mode, seed: 5 };
    const order = await lshOrder(q, k, options);
    const hyper = await hyperAttention(q, k, v, { ...options, sampleSize: 0, minSeqLen: 0 });
    assert.is(order.numBlocks, n / blockSize);
    assert.is(order.keyBlock, blockSize);
    assert.equal(order.queryOrder.shape, [1, 2, n]);
    assert.equal(order.keyOrder.shape, [1, 1, n]);

    const expected = new Float32Array(2 * n * d);
    const ko = order.keyOrder.data;
    for (let h = 0; h < 2; h++) {
      for (let i = 0; i < n; i++) {
        const row = order.queryOrder.data[h * n + i];
        const blk = Math.min(Math.floor(i / order.queryBlock), order.numBlocks - 1);
        const keys = Array.from(ko.subarray(blk * blockSize, (blk + 1) * blockSize));
        const gather = (x: Float32Array) => Float32Array.from(keys.flatMap((j) => Array.from(x.subarray(j * d, (j + 1) * d))));
        const one = referenceAttention({
          q: q.data.subarray((h * n + row) * d, (h * n + row + 1) * d), k: gather(k.data), v: gather(v.data),
          B: 1, H: 1, Hkv: 1, nq: 1, nk: keys.length, d, dv: d,
        });
        expected.set(one.out, (h * n + row) * d);
      }
    }
    const err = maxAbsError(hyper.out.data, expected);
    assert.ok(err < 1e-5, `max abs error ${err}`);
  });
}

test('lshOrder: the same seed gives the same order; options it does not use are rejected', async () => {
  const q = randomTensor([1, 1, 256, 16], 4);
  const a = await lshOrder(q, q, { seed: 9 });
  const b = await lshOrder(q, q, { seed: 9 });
  assert.equal(Array.from(a.queryOrder.data), Array.from(b.queryOrder.data));
  assert.equal(Array.from(a.keyOrder.data), Array.from(b.keyOrder.data));
  const sorted = Array.from(a.queryOrder.data).sort((x, y) => x - y);
  assert.equal(sorted, Array.from({ length: 256 }, (_, i) => i));
  try {
    await lshOrder(q, q, { causal: true } as never);
    assert.unreachable('accepted causal');
  } catch (error) {
    assert.instance(error, HyperAttentionError);
    assert.is((error as HyperAttentionError).code, 'INVALID_OPTION');
  }
  try {
    await lshOrder(q, q, { projections: new Float32Array(3) });
    assert.unreachable('accepted short projections');
  } catch (error) {
    assert.is((error as HyperAttentionError).code, 'INVALID_OPTION');
  }
});

