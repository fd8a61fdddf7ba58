// The key-value cache (src/cache.ts): calls on it against the float64 reference over the
// concatenated keys and values, against the same calls on plain tensors, and its errors.
// Inputs are fresh random draws each run (the seed is in every message).
import { suite } from './suite.ts';
import { codeOf, concat, referenceCheck, withCache } from './cache-helpers.ts';
import * as assert from 'uvu/assert';
import { createKVCache, exactAttention, explain, hyperAttention, HyperAttentionError, type KVCache } from '../src/index.ts';
import { CpuBackend, createCpuBackend } from '../src/cpu/backend.ts';
import { supportedFlavours } from '../src/cpu/wasm.ts';
import { runExact } from '../src/hyper.ts';
import { resolveExactOptions } from '../src/options.ts';
import { attentionShape, type Tensor } from '../src/tensor.ts';
import { randomTensor } from './util.ts';
import { Xoshiro128 } from '../src/random.ts';

const test = suite('cache');

const SEED = (Math.random() * 2 ** 31) >>> 0;
let nextSeed = SEED;
const fresh = (shape: number[]) => randomTensor(shape, nextSeed++);

/** Exact attention's tolerance against float64 (as test/exact.test.ts). */
const TOL = 1e-5;

const checkAgainstReference = referenceCheck(SEED, TOL);

/** Appends t fresh tokens to the cache and to ks, vs (which concat as everything it holds), and gives fresh queries of H heads for them. */
async function appendChunk(cache: KVCache, ks: Tensor[], vs: Tensor[], H: number, t: number): Promise<Tensor> {
  const k = fresh([1, cache.kvHeads, t, cache.headDim]);
  const v = fresh([1, cache.kvHeads, t, cache.valueDim]);
  await cache.append(k, v);
  ks.push(k);
  vs.push(v);
  return fresh([1, H, t, cache.headDim]);
}

test('a decode loop appending one token at a time equals exact attention over the concatenated tensors (GQA, dv != d)', async () => {
  const [B, H, Hkv, d, dv] = [2, 6, 2, 32, 24];
  await withCache({ batch: B, kvHeads: Hkv, headDim: d, valueDim: dv, capacity: 40 }, async (cache) => {
    const ks = [fresh([B, Hkv, 20, d])];
    const vs = [fresh([B, Hkv, 20, dv])];
    await cache.append(ks[0], vs[0]);
    for (let step = 0; step < 8; step++) {
      const k = fresh([B, Hkv, 1, d]);
      const v = fresh([B, Hkv, 1, dv]);
      await cache.append(k, v);
      ks.push(k);
      vs.push(v);
      assert.is(cache.length, 21 + step);
      const q = fresh([B, H, 1, d]);
      const hyper = await hyperAttention(q, cache, { causal: true });
      checkAgainstReference(`hyper step ${step}`, hyper, q, concat(ks), concat(vs));
      const exact = await exactAttention(q, cache, { causal: true });
      checkAgainstReference(`exact step ${step}`, exact, q, concat(ks), concat(vs));
    }
  });
});

test('decoding against many keys (split across threads by keys, every head in one batch) equals the reference and the call on plain tensors', async () => {
  const [B, H, Hkv, nk, d] = [2, 8, 2, 5000, 64];
  await withCache({ batch: B, kvHeads: Hkv, headDim: d, capacity: nk }, async (cache) => {
    const k = fresh([B, Hkv, nk, d]);
    const v = fresh([B, Hkv, nk, d]);
    await cache.append(k, v);
    // Not causal (or one causal query), the query heads of a key-value head run as one head
    // of their rows; causal draft rows (the last positions) run head by head.
    for (const [nq, causal] of [[1, false], [3, false], [1, true], [3, true]] as const) {
      const q = fresh([B, H, nq, d]);
      const cached = await exactAttention(q, cache, { backend: 'cpu', causal });
      checkAgainstReference(`nq=${nq} causal=${causal}`, cached, q, k, v, causal);
      // One causal query sees every key: the cache runs it as not causal (its query heads
      // as one head's rows), the plain call as a causal row, so only the reference compares.
      if (causal && nq === 1) continue;
      const plain = await exactAttention(q, k, v, { backend: 'cpu', causal });
      // The same kernels on the same rows, bit for bit.
      assert.equal(cached.out.data, plain.out.data, `nq=${nq} causal=${causal} (seed ${SEED}): out differs from the plain call`);
      assert.equal(cached.lse.data, plain.lse.data, `nq=${nq} causal=${causal} (seed ${SEED}): lse differs from the plain call`);
    }
  });
});

test('few rows against many keys (the key parts and the few-rows kernel), odd head dims, every build: equal to the reference', async () => {
  // Parts of 2048, 2048 and 405 keys: the last part's last tile holds an odd number of keys
  // (21: ten pairs, then one key alone).
  const nk = 4501;
  for (const [d, dv] of [[33, 7], [64, 64], [128, 96]]) {
    const k = fresh([1, 1, nk, d]);
    const v = fresh([1, 1, nk, dv]);
    for (const nq of [1, 2, 5, 16, 17, 64]) {
      const q = fresh([1, 1, nq, d]);
      for (const flavour of supportedFlavours()) {
        const backend = await createCpuBackend(flavour);
        const r = await runExact(backend, attentionShape(q, k, v, false), resolveExactOptions({}), q, k, v);
        checkAgainstReference(`d=${d} dv=${dv} nq=${nq} ${flavour}`, r, q, k, v);
      }
      checkAgainstReference(`d=${d} dv=${dv} nq=${nq} threads`, await exactAttention(q, k, v, { backend: 'cpu', threads: 2 }), q, k, v);
    }
  }
});

test('a causal prefill through the cache equals the call on plain tensors, bit for bit (exact, fixed, accurate)', async () => {
  const [H, Hkv, n, d] = [4, 2, 700, 32];
  await withCache({ kvHeads: Hkv, headDim: d, capacity: 1024 }, async (cache) => {
    const q = fresh([1, H, n, d]);
    const k = fresh([1, Hkv, n, d]);
    const v = fresh([1, Hkv, n, d]);
    await cache.append(k, v);
    const exact = await exactAttention(q, cache, { causal: true, backend: 'cpu' });
    checkAgainstReference('exact', exact, q, k, v, true);
    assert.equal(exact.out.data, (await exactAttention(q, k, v, { causal: true, backend: 'cpu' })).out.data);
    for (const mode of ['fixed', 'accurate'] as const) {
      const options = { causal: true, backend: 'cpu', mode, minSeqLen: 128, blockSize: 64, sampleSize: 64, seed: 7, tolerance: Infinity } as const;
      const cached = await hyperAttention(q, cache, options);
      const plain = await hyperAttention(q, k, v, options);
      assert.equal(cached.out.data, plain.out.data, `${mode} (seed ${SEED}): out differs from the plain call`);
      assert.equal(cached.lse.data, plain.lse.data, `${mode} (seed ${SEED}): lse differs from the plain call`);
    }
  });
});

test('chunked prefill: each chunk of queries against the tokens held so far (not causal) equals the reference', async () => {
  const [H, Hkv, d] = [4, 1, 16];
  await withCache({ kvHeads: Hkv, headDim: d, capacity: 300 }, async (cache) => {
    const ks: Tensor[] = [];
    const vs: Tensor[] = [];
    for (const t of [100, 37, 150]) {
      const q = await appendChunk(cache, ks, vs, H, t);
      checkAgainstReference(`chunk of ${t}`, await hyperAttention(q, cache), q, concat(ks), concat(vs));
    }
    assert.is(cache.length, 287);
  });
});

test('chunked causal prefill: each chunk appended, then its queries (the last positions) against every token held', async () => {
  const [H, Hkv, d] = [4, 2, 16];
  await withCache({ kvHeads: Hkv, headDim: d, capacity: 400 }, async (cache) => {
    const ks: Tensor[] = [];
    const vs: Tensor[] = [];
    for (const t of [90, 1, 130, 64]) {
      const q = await appendChunk(cache, ks, vs, H, t);
      const K = concat(ks);
      const V = concat(vs);
      checkAgainstReference(`exact chunk of ${t}`, await exactAttention(q, cache, { causal: true }), q, K, V, true);
      const hyper = await hyperAttention(q, cache, { causal: true, backend: 'cpu' });
      checkAgainstReference(`hyper chunk of ${t}`, hyper, q, K, V, true);
      assert.equal(hyper.out.data, (await hyperAttention(q, K, V, { causal: true, backend: 'cpu' })).out.data);
    }
  });
});

test("the keys' LSH codes kept with the cache: a chunk hashes only the tokens appended since, and every call equals the one on plain tensors bit for bit", async () => {
  const [B, H, Hkv, d] = [2, 4, 2, 16];
  const rounds = 3;
  // No heavy columns: the masses kept with the cache change a later causal call's columns (the next test).
  const options = {
    backend: 'cpu', mode: 'accurate', minSeqLen: 64, blockSize: 16, sampleSize: 32, lshRounds: rounds, heavyKeys: 0, tolerance: Infinity,
  } as const;
  // Rows each hash op gets: the queries' of every round and head, then the keys'.
  const hashed: number[] = [];
  const hash = CpuBackend.prototype.hash;
  CpuBackend.prototype.hash = function (t) {
    hashed.push(t.rows);
    return hash.call(this, t);
  };
  const chunk = (t: number) => [fresh([B, Hkv, t, d]), fresh([B, Hkv, t, d])];
  try {
    await withCache({ batch: B, kvHeads: Hkv, headDim: d, capacity: 600 }, async (cache) => {
      const ks: Tensor[] = [];
      const vs: Tensor[] = [];
      const call = async (label: string, nq: number, o: Record<string, unknown>, keysHashed: number) => {
        const q = fresh([B, H, nq, d]);
        const K = concat(ks);
        const V = concat(vs);
        hashed.length = 0;
        const cached = await hyperAttention(q, cache, { ...options, ...o });
        const keyRows = hashed.reduce((s, n) => s + n, 0) - B * H * rounds * nq;
        assert.is(keyRows, B * Hkv * rounds * keysHashed, `${label} (seed ${SEED}): key rows hashed`);
        const plain = await hyperAttention(q, K, V, { ...options, ...o });
        assert.equal(cached.out.data, plain.out.data, `${label} (seed ${SEED}): out differs from the plain call`);
        assert.equal(cached.lse.data, plain.lse.data, `${label} (seed ${SEED}): lse differs from the plain call`);
      };
      const append = async (t: number) => {
        const [k, v] = chunk(t);
        await cache.append(k, v);
        ks.push(k);
        vs.push(v);
      };
      await append(200);
      await call('first chunk', 200, { causal: true }, 200);
      await call('the same tokens again', 200, { causal: true }, 0);
      await append(130);
      await call('second chunk', 130, { causal: true }, 130);
      await call('not causal', 64, {}, 0);
      await call('another seed: other projections', 130, { causal: true, seed: 5 }, 330);
      await call('the first seed again', 130, { causal: true }, 0);
      // Tokens past n are dropped, and others appended in their place: their codes are new.
      cache.truncate(250);
      ks.splice(0, ks.length, firstTokens(concat(ks), 250));
      vs.splice(0, vs.length, firstTokens(concat(vs), 250));
      await append(100);
      await call('after truncate', 100, { causal: true }, 100);
      await append(140);
      await call('more bits (more tokens)', 140, { causal: true }, 490);
    });
  } finally {
    CpuBackend.prototype.hash = hash;
  }
});

test('heavy-column masses kept with the cache: a later causal chunk probes its share of rows and chooses from the summed masses; truncate forgets them', async () => {
  const [H, Hkv, d] = [4, 2, 16];
  const options = { backend: 'cpu', mode: 'accurate', causal: true, minSeqLen: 64, heavyKeys: 8, sinkKeys: 4, window: 32, tolerance: Infinity } as const;
  const probes = 32; // probeQueries' default
  // Per probe op of a call (the heads in the order the executor runs them): its row count and
  // the masses it found, recomputed in float64 from its own rows and keys; per heavy op, the
  // masses it chose from.
  const counts: number[] = [];
  const found: Float64Array[] = [];
  const chosenFrom: Float32Array[] = [];
  const { probe, heavy } = CpuBackend.prototype;
  CpuBackend.prototype.probe = function (t) {
    counts.push(t.count);
    const rows = this.view(t.rows.buf, t.rows.row, t.count);
    const q = this.view(t.q.buf, t.q.row * t.d, t.nq * t.d);
    const k = this.view(t.k.buf, t.k.row * t.d, t.nk * t.d);
    const mass = new Float64Array(t.nk);
    for (const i of rows) {
      // The row's softmax over the keys it sees; mass on those past the sinks and outside its window.
      const visible = i + t.causalOffset + 1;
      const takes = (j: number) => j >= t.sinks && !(j >= i + t.winLo && j < i + t.winLo + t.window);
      const s = Array.from({ length: visible }, (_, j) => {
        let dot = 0;
        for (let c = 0; c < t.d; c++) dot += q[i * t.d + c] * k[j * t.d + c];
        return dot * t.scale;
      });
      const top = Math.max(...s);
      const sum = s.reduce((a, x) => a + Math.exp(x - top), 0);
      s.forEach((x, j) => (mass[j] += takes(j) ? Math.exp(x - top) / sum : 0));
    }
    found.push(mass);
    return probe.call(this, t);
  };
  CpuBackend.prototype.heavy = function (t) {
    chosenFrom.push((this.view(t.mass.buf, t.mass.row, t.nk) as Float32Array).slice());
    return heavy.call(this, t);
  };
  try {
    const q = (n: number) => fresh([1, H, n, d]);
    const chunks = [300, 200, 100];
    const tokens = chunks.map((t) => [fresh([1, Hkv, t, d]), fresh([1, Hkv, t, d])]);
    const queries = chunks.map(q);
    // Two caches given the same calls give the same bits; the first one's calls are checked.
    const outs: Float32Array[][] = [[], []];
    for (const [c, out] of outs.entries()) {
      await withCache({ kvHeads: Hkv, headDim: d, capacity: 700 }, async (cache) => {
        const sums = Array.from({ length: H }, () => new Float64Array(0));
        let held = 0;
        const call = async (label: string, queries: Tensor, rows: number) => {
          counts.length = found.length = chosenFrom.length = 0;
          out.push((await hyperAttention(queries, cache, options)).out.data);
          if (c > 0) return;
          assert.equal(counts, Array(H).fill(rows), `${label} (seed ${SEED}): probe rows per head`);
          for (let h = 0; h < H; h++) {
            const sum = new Float64Array(cache.length);
            sum.set(sums[h].subarray(0, Math.min(sums[h].length, cache.length)));
            found[h].forEach((x, j) => (sum[j] += x));
            sums[h] = sum;
            const err = chosenFrom[h].reduce((e, x, j) => Math.max(e, Math.abs(x - sum[j])), 0);
            assert.ok(err <= 1e-5 * Math.max(1, ...sum), `${label} (seed ${SEED}): head ${h}'s summed masses off by ${err}`);
          }
        };
        for (const [i, [k, v]] of tokens.entries()) {
          await cache.append(k, v);
          held += chunks[i];
          // The first call probes all its rows; later ones their share, 32 × nq / nk.
          await call(`chunk ${i}`, queries[i], i === 0 ? probes : Math.ceil((probes * chunks[i]) / held));
        }
        cache.truncate(450);
        for (let h = 0; h < H; h++) sums[h] = new Float64Array(0);
        await call('after truncate', queries[2], probes);
        await call('the same call again', queries[2], Math.ceil((probes * 100) / 450));
      });
    }
    outs[0].forEach((out, i) => assert.equal(outs[1][i], out, `call ${i} (seed ${SEED}): two caches given the same calls differ`));
  } finally {
    Object.assign(CpuBackend.prototype, { probe, heavy });
  }
});

test('random appends, truncates and options: every accurate call on the cache equals the call on plain tensors, bit for bit', async () => {
  const rng = new Xoshiro128(SEED);
  const pick = <T>(xs: readonly T[]): T => xs[rng.nextBelow(xs.length)];
  for (let trial = 0; trial < 4; trial++) {
    const [B, Hkv, d] = [pick([1, 2]), pick([1, 2, 3]), pick([1, 5, 16])];
    const H = Hkv * pick([1, 2, 4]);
    const label = (what: string) => `trial ${trial}, B ${B}, H ${H}, Hkv ${Hkv}, d ${d}: ${what} (seed ${SEED})`;
    await withCache({ batch: B, kvHeads: Hkv, headDim: d, capacity: 700 }, async (cache) => {
      let held: Tensor[] = [];
      let heldV: Tensor[] = [];
      for (let step = 0; step < 6; step++) {
        if (cache.length > 100 && rng.nextBelow(3) === 0) {
          const n = rng.nextBelow(cache.length);
          cache.truncate(n);
          held = n > 0 ? [firstTokens(concat(held), n)] : [];
          heldV = n > 0 ? [firstTokens(concat(heldV), n)] : [];
        }
        const t = Math.min(cache.capacity - cache.length, pick([1, 7, 64, 150]));
        if (t === 0) break;
        const k = fresh([B, Hkv, t, d]);
        const v = fresh([B, Hkv, t, d]);
        await cache.append(k, v);
        held.push(k);
        heldV.push(v);
        const causal = rng.nextBelow(2) === 0;
        const nq = causal ? Math.min(cache.length, pick([1, t, 90])) : pick([1, 40, 130]);
        const q = fresh([B, H, nq, d]);
        // Causal: no heavy columns, whose masses the cache keeps from call to call (tested apart).
        const options = {
          backend: 'cpu', mode: 'accurate', minSeqLen: 0, tolerance: Infinity, causal, blockSize: pick([4, 16, 64]), heavyKeys: causal ? 0 : pick([0, 8]),
          sampleSize: pick([0, 16]), lshRounds: pick([0, 1, 3]), seed: pick([0, 1]),
          // Bits chosen from the tokens held (about 16 keys a bucket), or given.
          ...(rng.nextBelow(2) === 0 ? {} : { lshNumProjs: pick([2, 9]) }),
        } as const;
        const cached = await hyperAttention(q, cache, options);
        const plain = await hyperAttention(q, concat(held), concat(heldV), options);
        assert.equal(cached.out.data, plain.out.data, label(`out, ${JSON.stringify(options)} at ${cache.length}`));
        assert.equal(cached.lse.data, plain.lse.data, label(`lse, ${JSON.stringify(options)} at ${cache.length}`));
      }
    });
  }
});

/** The first n tokens of a [B, H, t, D] tensor. */
function firstTokens(t: Tensor, n: number): Tensor {
  const [B, H, , D] = t.shape;
  const all = t.shape[2];
  const data = new Float32Array(B * H * n * D);
  for (let g = 0; g < B * H; g++) data.set(t.data.subarray(g * all * D, (g * all + n) * D), g * n * D);
  return { data, shape: [B, H, n, D] };
}

test('a head that missed the tolerance with every plan runs exact attention at once on the next calls, then tries again, waiting twice as long after each miss', async () => {
  const [H, Hkv, t, d] = [4, 2, 256, 32];
  const strict = { causal: true, backend: 'cpu', mode: 'accurate', minSeqLen: 128, blockSize: 64, sampleSize: 64, tolerance: 1e-9 } as const;
  await withCache({ kvHeads: Hkv, headDim: d, capacity: 14 * t }, async (cache) => {
    const ks: Tensor[] = [];
    const vs: Tensor[] = [];
    /** A chunk's call at this tolerance, and its heads; at the strict one, its result is exact attention's (float64 reference). */
    const chunk = async (tolerance: number = strict.tolerance) => {
      const q = await appendChunk(cache, ks, vs, H, t);
      const r = await hyperAttention(q, cache, { ...strict, tolerance });
      if (tolerance === strict.tolerance) checkAgainstReference(`chunk ${ks.length}`, r, q, concat(ks), concat(vs), true);
      return r.verification!.heads;
    };
    // No plan comes within 1e-9 of exact attention (float32 rounding alone is more): every head misses.
    for (const head of await chunk()) {
      assert.not.ok(head.predicted);
      assert.is(head.plan, 'exact');
      assert.ok(head.tried.length > 1);
    }
    // Three calls at once to exact attention, a try that misses again, then six.
    for (const wait of [3, 6]) {
      for (let call = 0; call < wait; call++) {
        for (const head of await chunk()) assert.equal({ predicted: head.predicted, tried: head.tried.length }, { predicted: true, tried: 1 }, `call ${call} of ${wait}`);
      }
      for (const head of await chunk()) assert.equal({ predicted: head.predicted, plan: head.plan }, { predicted: undefined, plan: 'exact' }, 'tried again');
    }
    // Another tolerance: what the heads missed before says nothing about it.
    for (let call = 0; call < 2; call++) {
      for (const head of await chunk(10)) assert.equal({ predicted: head.predicted, plan: head.plan }, { predicted: undefined, plan: 'accurate' });
    }
  });
});

test("calls on a cache take layout 'bnhd', profile and an abort signal as other calls do", async () => {
  const [H, Hkv, n, d] = [4, 2, 50, 16];
  await withCache({ kvHeads: Hkv, headDim: d, capacity: n }, async (cache) => {
    const k = fresh([1, Hkv, n, d]);
    const v = fresh([1, Hkv, n, d]);
    await cache.append(k, v);
    const q = fresh([1, H, 3, d]);
    const bhnd = await exactAttention(q, cache);
    // The same queries as [B, N, H, D]: out comes back as [B, N, H, Dv].
    const qT = new Float32Array(q.data.length);
    const outT = new Float32Array(bhnd.out.data.length);
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < 3; i++) {
        qT.set(q.data.subarray((h * 3 + i) * d, (h * 3 + i + 1) * d), (i * H + h) * d);
        outT.set(bhnd.out.data.subarray((h * 3 + i) * d, (h * 3 + i + 1) * d), (i * H + h) * d);
      }
    }
    const bnhd = await exactAttention({ data: qT, shape: [1, 3, H, d] }, cache, { layout: 'bnhd' });
    assert.equal(bnhd.out.shape, [1, 3, H, d]);
    assert.equal(bnhd.out.data, outT);
    const profiled = await hyperAttention(q, cache, { profile: true });
    assert.ok(profiled.profile!.steps.some((s) => s.op === 'exact'));
    assert.not.ok(profiled.profile!.plan.steps.some((s) => s.op === 'upload' && s.units > H * 3 * d * 4));
    const controller = new AbortController();
    controller.abort();
    assert.is(await codeOf(() => exactAttention(q, cache, { signal: controller.signal })), 'ABORTED');
    // Aborted while it runs: once its promise settles, the cache takes appends again.
    const running = new AbortController();
    const call = exactAttention(fresh([1, H, 40, d]), cache, { signal: running.signal });
    running.abort();
    const settled = await call.then(() => 'done', (error: HyperAttentionError) => error.code);
    assert.ok(settled === 'ABORTED' || settled === 'done', settled);
    cache.truncate(n); // not CACHE_BUSY
    checkAgainstReference('after aborted calls', await exactAttention(q, cache), q, k, v);
  });
});

test('truncate drops the tokens after n: later appends take their place', async () => {
  const [H, Hkv, d] = [2, 2, 16];
  await withCache({ kvHeads: Hkv, headDim: d, capacity: 16 }, async (cache) => {
    const k = fresh([1, Hkv, 10, d]);
    const v = fresh([1, Hkv, 10, d]);
    await cache.append(k, v);
    cache.truncate(6);
    assert.is(cache.length, 6);
    const k2 = fresh([1, Hkv, 2, d]);
    const v2 = fresh([1, Hkv, 2, d]);
    await cache.append(k2, v2);
    const head = (t: Tensor) => concat([{ data: t.data, shape: t.shape }]);
    const first6 = (t: Tensor) => {
      const out = new Float32Array(Hkv * 6 * d);
      for (let g = 0; g < Hkv; g++) out.set(t.data.subarray(g * 10 * d, (g * 10 + 6) * d), g * 6 * d);
      return { data: out, shape: [1, Hkv, 6, d] };
    };
    const q = fresh([1, H, 1, d]);
    checkAgainstReference('after truncate', await exactAttention(q, cache), q, concat([first6(k), head(k2)]), concat([first6(v), head(v2)]));
    assert.is(await codeOf(() => cache.truncate(9)), 'INVALID_OPTION');
    cache.truncate(-0);
    assert.ok(Object.is(cache.length, 0), 'truncate(-0) leaves 0 tokens, not -0');
    assert.is(await codeOf(() => cache.truncate(-1)), 'INVALID_OPTION');
  });
});

test('every cache error is typed: CACHE_FULL, CACHE_MISMATCH, CACHE_BUSY, CACHE_RELEASED, INVALID_OPTION', async () => {
  const d = 8;
  const cache = await createKVCache({ batch: 1, kvHeads: 2, headDim: d, capacity: 4 });
  assert.is(await codeOf(() => exactAttention(fresh([1, 2, 1, d]), cache)), 'INVALID_SHAPE'); // empty
  await cache.append(fresh([1, 2, 3, d]), fresh([1, 2, 3, d]));
  assert.is(await codeOf(() => cache.append(fresh([1, 2, 2, d]), fresh([1, 2, 2, d]))), 'CACHE_FULL');
  assert.is(cache.length, 3);
  assert.is(await codeOf(() => cache.append(fresh([1, 3, 1, d]), fresh([1, 3, 1, d]))), 'CACHE_MISMATCH');
  assert.is(await codeOf(() => cache.append(fresh([1, 2, 1, d + 1]), fresh([1, 2, 1, d]))), 'CACHE_MISMATCH');
  assert.is(await codeOf(() => cache.append(fresh([1, 2, 1, d]), fresh([1, 2, 2, d]))), 'CACHE_MISMATCH');
  assert.is(await codeOf(() => exactAttention(fresh([1, 2, 1, d + 1]), cache)), 'CACHE_MISMATCH');
  assert.is(await codeOf(() => exactAttention(fresh([2, 2, 1, d]), cache)), 'CACHE_MISMATCH');
  assert.is(await codeOf(() => hyperAttention(fresh([1, 3, 1, d]), cache)), 'CACHE_MISMATCH');
  assert.is(await codeOf(() => exactAttention(fresh([1, 2, 4, d]), cache, { causal: true })), 'INVALID_SHAPE'); // nq > tokens
  const nan = fresh([1, 2, 1, d]);
  nan.data[3] = NaN;
  assert.is(await codeOf(() => cache.append(nan, fresh([1, 2, 1, d]))), 'NON_FINITE_INPUT');
  assert.is(cache.length, 3);
  // A call reads the cache from its start until it settles; an append made meanwhile waits
  // its turn, and a call made after the append sees its token.
  const q = fresh([1, 4, 1, d]);
  const call = exactAttention(q, cache);
  const appended = cache.append(fresh([1, 2, 1, d]), fresh([1, 2, 1, d]));
  const after = exactAttention(q, cache);
  assert.is(await codeOf(() => cache.truncate(1)), 'CACHE_BUSY');
  assert.is(await codeOf(() => cache.release()), 'CACHE_BUSY');
  assert.is(cache.length, 3);
  const before = await call;
  await appended;
  assert.is(cache.length, 4);
  assert.not.equal((await after).out.data, before.out.data);
  assert.is(await codeOf(() => cache.append(fresh([1, 2, 1, d]), fresh([1, 2, 1, d]))), 'CACHE_FULL');
  // A failed append leaves the cache as it was, and the operations queued behind it run.
  const bad = fresh([1, 2, 1, d]);
  bad.data[5] = Infinity;
  cache.truncate(3);
  const failing = cache.append(fresh([1, 2, 1, d]), bad);
  const behind = exactAttention(q, cache);
  assert.is(await codeOf(() => failing), 'NON_FINITE_INPUT');
  assert.equal((await behind).out.data, before.out.data);
  assert.is(cache.length, 3);
  cache.release();
  assert.ok(cache.released);
  cache.release(); // twice: nothing
  assert.is(await codeOf(() => cache.append(fresh([1, 2, 1, d]), fresh([1, 2, 1, d]))), 'CACHE_RELEASED');
  assert.is(await codeOf(() => exactAttention(fresh([1, 2, 1, d]), cache)), 'CACHE_RELEASED');
  assert.is(await codeOf(() => cache.truncate(0)), 'CACHE_RELEASED');
  for (const bad of [
    {}, { kvHeads: 2, headDim: d }, { kvHeads: 0, headDim: d, capacity: 4 }, { kvHeads: 2, headDim: 1024, capacity: 4 },
    { kvHeads: 2, headDim: d, capacity: 4, dtype: 'f16' }, { kvHeads: 2, headDim: d, capacity: 4, colour: 1 },
    { kvHeads: 64, headDim: 512, capacity: 2 ** 20 },
  ]) {
    assert.is(await codeOf(() => createKVCache(bad as never)), 'INVALID_OPTION', JSON.stringify(bad));
  }
  assert.is(await codeOf(() => createKVCache({ kvHeads: 2, headDim: d, capacity: 4, device: {} as never })), 'INVALID_OPTION');
});

test('release frees the memory: caches of 384 MB each, made and released in turn, all fit', async () => {
  for (let i = 0; i < 12; i++) {
    const cache = await createKVCache({ kvHeads: 8, headDim: 128, capacity: 48 * 1024 });
    await cache.append(fresh([1, 8, 1, 128]), fresh([1, 8, 1, 128]));
    cache.release();
  }
});

test('explain prices a call on a cache without uploading its keys and values', async () => {
  const [H, Hkv, n, d] = [8, 2, 4096, 64];
  await withCache({ kvHeads: Hkv, headDim: d, capacity: n }, async (cache) => {
    await cache.append(fresh([1, Hkv, n, d]), fresh([1, Hkv, n, d]));
    const shapes = { q: [1, H, 1, d], k: [1, Hkv, n, d], v: [1, Hkv, n, d] };
    const plain = await explain(shapes, { backend: 'cpu' }, 'exact');
    const cached = await explain({ q: shapes.q, cache }, { backend: 'cpu' }, 'exact');
    const upload = (e: typeof plain) => e.steps.find((s) => s.op === 'upload')!;
    assert.is(upload(plain).units, (H * d + 2 * Hkv * n * d) * 4);
    assert.is(upload(cached).units, H * d * 4);
    assert.ok(cached.predictedMs < plain.predictedMs, `${cached.predictedMs} < ${plain.predictedMs}`);
  });
});
