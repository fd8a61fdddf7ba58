// WebAssembly threads (#11): results bit-identical for 1, 2 and 4 threads (exact, the
// accurate mode, the authors' modes; causal or not; GQA; Nq != Nk), 32 calls in flight
// equal to the same calls one at a time, cancellation through `signal` (before, during,
// after a call, on one thread and on several), a worker that dies or fails, Node and Deno
// processes that exit on their own after threaded calls, the new options' validation, and
// thread counts above the cores capped on the shared workers (counted, not timed).
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pace, scaled } from '../scripts/pace.mjs';
import { suite } from './suite.ts';
import * as assert from 'uvu/assert';
import {
  configureThreads, exactAttention, hyperAttention, HyperAttentionError, type AttentionResult, type HyperOptions, type Tensor,
} from '../src/index.ts';
import { reportedCores } from '../src/threads/config.ts';
import { threadPool, type ThreadPool } from '../src/threads/pool.ts';
import { rejects } from './rejects.ts';
import { randomTensor } from './util.ts';

const test = suite('threads');

const root = join(dirname(fileURLToPath(import.meta.url)), '..');

async function pool(): Promise<ThreadPool> {
  const p = await threadPool();
  if (typeof p === 'string') throw new Error(`no thread pool here: ${p}`);
  return p;
}

/** Counts the batches the pool runs while fn runs: proof that the work went to the workers. */
async function countBatches<T>(fn: () => Promise<T>): Promise<{ value: T; batches: number }> {
  const p = await pool();
  const run = p.run.bind(p);
  let batches = 0;
  p.run = (...args) => {
    batches++;
    return run(...args);
  };
  try {
    return { value: await fn(), batches };
  } finally {
    p.run = run;
  }
}

function sameBits(a: AttentionResult, b: AttentionResult, what: string): void {
  for (const [name, x, y] of [['out', a.out.data, b.out.data], ['lse', a.lse.data, b.lse.data]] as const) {
    assert.is(x.length, y.length);
    const bx = new Uint32Array(x.buffer, x.byteOffset, x.length);
    const by = new Uint32Array(y.buffer, y.byteOffset, y.length);
    let first = -1;
    for (let i = 0; i < bx.length && first < 0; i++) if (bx[i] !== by[i]) first = i;
    assert.is(first, -1, `${what}: ${name}[${first}] differs (${x[first]} vs ${y[first]})`);
  }
}

interface Case {
  name: string;
  B: number; H: number; Hkv: number; nq: number; nk: number; d: number;
  causal: boolean;
  call: (q: Tensor, k: Tensor, v: Tensor, o: HyperOptions) => Promise<AttentionResult>;
}

const exact: Case['call'] = (q, k, v, { seed: _seed, minSeqLen: _cut, ...o }) => exactAttention(q, k, v, o);
const accurate: Case['call'] = (q, k, v, o) => hyperAttention(q, k, v, o);
const fixed: Case['call'] = (q, k, v, o) => hyperAttention(q, k, v, { ...o, mode: 'fixed', minSeqLen: 512 });
const reference: Case['call'] = (q, k, v, o) => hyperAttention(q, k, v, { ...o, mode: 'reference', minSeqLen: 512 });

const CASES: Case[] = [
  { name: 'exact', B: 1, H: 2, Hkv: 1, nq: 2048, nk: 2048, d: 64, causal: false, call: exact },
  { name: 'exact causal, GQA', B: 1, H: 4, Hkv: 2, nq: 1536, nk: 1536, d: 64, causal: true, call: exact },
  { name: 'exact Nq != Nk, d 96', B: 2, H: 1, Hkv: 1, nq: 700, nk: 1900, d: 96, causal: false, call: exact },
  { name: 'accurate', B: 1, H: 2, Hkv: 2, nq: 4096, nk: 4096, d: 64, causal: false, call: accurate },
  { name: 'accurate causal, GQA', B: 1, H: 4, Hkv: 2, nq: 3000, nk: 3000, d: 64, causal: true, call: accurate },
  { name: 'accurate Nq != Nk', B: 1, H: 2, Hkv: 1, nq: 1000, nk: 3000, d: 64, causal: false, call: accurate },
  { name: 'fixed', B: 1, H: 2, Hkv: 1, nq: 2048, nk: 2048, d: 64, causal: false, call: fixed },
  { name: 'reference causal', B: 1, H: 2, Hkv: 2, nq: 2048, nk: 2048, d: 64, causal: true, call: reference },
];

for (const c of CASES) {
  test(`bit-identical for 1, 2 and 4 threads: ${c.name}`, async () => {
    const q = randomTensor([c.B, c.H, c.nq, c.d], 1);
    const k = randomTensor([c.B, c.Hkv, c.nk, c.d], 2);
    const v = randomTensor([c.B, c.Hkv, c.nk, c.d], 3);
    const o = { causal: c.causal, backend: 'cpu' as const, seed: 5 };
    const one = await c.call(q, k, v, { ...o, threads: 1 });
    for (const threads of [2, 4]) {
      const { value, batches } = await countBatches(() => c.call(q, k, v, { ...o, threads }));
      assert.ok(batches > 0, 'no batch went to the workers');
      sameBits(one, value, `${threads} threads`);
    }
  });
}

test('32 calls in flight equal the same calls one at a time', async () => {
  const calls = Array.from({ length: 32 }, (_, i) => {
    const n = 512 + 128 * (i % 5);
    const q = randomTensor([1, 2, n, 64], 100 + i);
    const k = randomTensor([1, 1, n, 64], 200 + i);
    const v = randomTensor([1, 1, n, 64], 300 + i);
    const o: HyperOptions = { causal: i % 2 === 1, backend: 'cpu', threads: 1 + (i % 3), minSeqLen: 256 };
    return () => (i % 4 === 0 ? exact(q, k, v, o) : hyperAttention(q, k, v, o));
  });
  const together = await Promise.all(calls.map((call) => call()));
  for (const [i, call] of calls.entries()) sameBits(together[i], await call(), `call ${i}`);
});

/** A call of about a second on one thread. */
function longCall(signal: AbortSignal, threads: number, onProgress?: () => void): Promise<AttentionResult> {
  const q = randomTensor([1, 1, 12288, 64], 7);
  return exactAttention(q, q, q, { backend: 'cpu', threads, signal, onProgress });
}

/**
 * The most an abort may take to reject a running call on the reference machine: one job of
 * ~20 ms per thread, and the messages, with room; times this machine's pace.
 */
const ABORT_BOUND_MS = 400;

for (const threads of [1, 2]) {
  test(`abort during a call on ${threads} thread(s) rejects with ABORTED within ${ABORT_BOUND_MS} ms times the pace, and the next call works`, async () => {
    const controller = new AbortController();
    let abortedAt = 0;
    let started = false;
    const call = longCall(controller.signal, threads, () => {
      if (started) return;
      started = true;
      setTimeout(() => {
        abortedAt = performance.now();
        controller.abort();
      }, 30);
    });
    try {
      await call;
      assert.unreachable('the call was not aborted');
    } catch (error) {
      assert.instance(error, HyperAttentionError, String(error));
      assert.is((error as HyperAttentionError).code, 'ABORTED');
      const took = performance.now() - abortedAt;
      assert.ok(abortedAt > 0 && took < ABORT_BOUND_MS * pace(), `rejected ${took.toFixed(0)} ms after the abort (pace ${pace().toFixed(1)})`);
    }
    const q = randomTensor([1, 1, 1024, 64], 8);
    sameBits(await exactAttention(q, q, q, { backend: 'cpu', threads }), await exactAttention(q, q, q, { backend: 'cpu', threads: 1 }), 'after an abort');
  });
}

test('a signal aborted before the call rejects it before any work; an abort after it changes nothing', async () => {
  const q = randomTensor([1, 1, 256, 64], 9);
  const controller = new AbortController();
  controller.abort();
  await rejects('ABORTED', /aborted/, (o) => hyperAttention(q, q, q, { ...o, signal: controller.signal, backend: 'cpu' }));
  const later = new AbortController();
  const result = await hyperAttention(q, q, q, { signal: later.signal, backend: 'cpu', threads: 2 });
  later.abort();
  sameBits(result, await hyperAttention(q, q, q, { backend: 'cpu', threads: 1 }), 'aborted after completion');
});

test('a worker killed during a call rejects it with WORKER_FAILED; the pool replaces it and the next call works', async () => {
  const p = await pool();
  const run = p.run.bind(p);
  let batches = 0;
  // Killed right after the third batch was posted to it: it dies with that batch in hand.
  p.run = (...args) => {
    const running = run(...args);
    if (++batches === 3) p.killWorker(0);
    return running;
  };
  try {
    await longCall(new AbortController().signal, 2);
    assert.unreachable('the call survived its worker');
  } catch (error) {
    assert.instance(error, HyperAttentionError, String(error));
    assert.is((error as HyperAttentionError).code, 'WORKER_FAILED', (error as Error).message);
  } finally {
    p.run = run;
  }
  const q = randomTensor([1, 1, 2048, 64], 10);
  sameBits(await hyperAttention(q, q, q, { backend: 'cpu', threads: 2 }), await hyperAttention(q, q, q, { backend: 'cpu', threads: 1 }), 'after a worker died');
});

test('a kernel that fails in a worker rejects its batch with WORKER_FAILED and its message', async () => {
  const p = await pool();
  const spec = { fn: 'noSuchKernel', jobs: new Float64Array(4), argc: 2, offsets: [], stride: 0 };
  try {
    await p.run(1 << 30, 2, spec);
    assert.unreachable('the batch resolved');
  } catch (error) {
    assert.is((error as HyperAttentionError).code, 'WORKER_FAILED');
    assert.match((error as Error).message, /noSuchKernel/);
  }
});

test('a Node process exits on its own after threaded calls', () => {
  const script = `
    import { hyperAttention } from './src/index.ts';
    const data = new Float32Array(2048 * 64).map((_, i) => Math.sin(i));
    const t = { data, shape: [1, 1, 2048, 64] };
    await hyperAttention(t, t, t, { backend: 'cpu', threads: 2 });
    console.log('done');`;
  // 20 s on the reference machine, scaled to this one (scripts/pace.mjs); killed at 1.5 times that.
  const limit = scaled(20_000);
  const start = performance.now();
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: root, encoding: 'utf8', timeout: 1.5 * limit });
  assert.is(r.status, 0, r.stderr);
  assert.match(r.stdout, /done/);
  assert.ok(performance.now() - start < limit, 'the process lingered');
});

test('Deno: threaded calls give the one-thread result bit for bit, and the process exits on its own', () => {
  const deno = join(root, 'node_modules/.bin/deno');
  const script = `
    import { hyperAttention } from '${join(root, 'src/index.ts')}';
    const data = new Float32Array(4096 * 64).map((_, i) => Math.sin(i * 0.37));
    const t = { data, shape: [1, 1, 4096, 64] };
    const one = await hyperAttention(t, t, t, { backend: 'cpu', threads: 1 });
    const two = await hyperAttention(t, t, t, { backend: 'cpu', threads: 2 });
    const same = one.out.data.every((x, i) => Object.is(x, two.out.data[i])) && one.lse.data.every((x, i) => Object.is(x, two.lse.data[i]));
    console.log(same ? 'same' : 'different');`;
  // No permission flags: the workers need none.
  const r = spawnSync(deno, ['eval', '--ext=ts', script], { cwd: root, encoding: 'utf8', timeout: scaled(60_000) });
  assert.is(r.status, 0, `${r.stderr}${r.error ?? ''}`);
  assert.match(r.stdout, /^same$/m);
  assert.not.match(r.stderr, /one thread/, 'Deno ran without threads');
});

test('threads, signal and worker: bad values rejected with INVALID_OPTION', async () => {
  const q = randomTensor([1, 1, 64, 16], 11);
  for (const threads of [0, -1, 1.5, NaN, Infinity, 257, 2 ** 31, '2', 2n, null, true]) {
    await rejects('INVALID_OPTION', /threads/, (o) => hyperAttention(q, q, q, { ...o, threads } as unknown as HyperOptions));
  }
  for (const signal of [{}, 'abort', 1, { aborted: 'no' }]) {
    await rejects('INVALID_OPTION', /signal/, (o) => exactAttention(q, q, q, { ...o, signal } as unknown as HyperOptions));
  }
  await rejects('INVALID_OPTION', /worker/, (o) => exactAttention(q, q, q, { ...o, worker: 'yes' } as unknown as HyperOptions));
  for (const bad of [{ threads: 0 }, { threads: 3.5 }, { threads: '4' }, { worker: 1 }, { cores: 2 }, null, 'x']) {
    assert.throws(() => configureThreads(bad as never), (e: unknown) => (e as HyperAttentionError).code === 'INVALID_OPTION');
  }
});

test('threads above the cores: capped at the cores on the shared workers, none started per distinct count; the plan says so', async () => {
  const cores = await reportedCores();
  const p = await pool();
  const q = randomTensor([1, 2, 256, 64], 13);
  const base = await exactAttention(q, q, q, { backend: 'cpu' });
  const started = p.started;
  const capped = await exactAttention(q, q, q, { backend: 'cpu', threads: 256, profile: true });
  sameBits(capped, base, 'threads 256');
  assert.ok(p.size <= cores, `${p.size} workers on ${cores} cores`);
  assert.is(capped.profile!.plan.threads, Math.min(256, cores));
  if (cores < 256) assert.match(capped.profile!.plan.reason, new RegExp(`on ${cores} threads? \\(threads 256 asked, capped at the ${cores} cores?\\)`));
  // Every count, on calls of both kinds, runs on the workers already there.
  for (const threads of [3, 5, 17, 64, 255, 256]) {
    sameBits(await exactAttention(q, q, q, { backend: 'cpu', threads }), base, `threads ${threads}`);
    await hyperAttention(q, q, q, { backend: 'cpu', threads, minSeqLen: 64 });
  }
  try {
    configureThreads({ threads: 256 });
    const configured = await exactAttention(q, q, q, { backend: 'cpu', profile: true });
    if (cores < 256) assert.match(configured.profile!.plan.reason, /threads 256 asked, capped/);
  } finally {
    configureThreads({ threads: null });
  }
  assert.is(p.started, started, 'workers started after the first call');
  assert.ok(p.size <= cores);
  // The default asks for nothing: no cap to report.
  const plain = await exactAttention(q, q, q, { backend: 'cpu', profile: true });
  assert.not.match(plain.profile!.plan.reason, /capped/);
});

test('configureThreads sets the default thread count of calls that do not choose', async () => {
  const q = randomTensor([1, 1, 2048, 64], 12);
  try {
    configureThreads({ threads: 1 });
    const single = await countBatches(() => hyperAttention(q, q, q, { backend: 'cpu' }));
    assert.is(single.batches, 0);
    configureThreads({ threads: 3 });
    const three = await countBatches(() => hyperAttention(q, q, q, { backend: 'cpu' }));
    assert.ok(three.batches > 0);
    sameBits(single.value, three.value, 'configured threads');
  } finally {
    configureThreads({ threads: null });
  }
});

