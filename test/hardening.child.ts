// One reproduction of test/hardening.test.ts in a fresh process (argv[2] names it): each
// could hang, crash or leak memory, so each runs alone, prints one line 'result {json}' and
// must then exit by itself (nothing here calls process.exit).
import { mkdtempSync, symlinkSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  configureScheduler, exactAttention, explain, HyperAttentionError, hyperAttention, type Sampler,
} from '../src/index.ts';
import { Xoshiro128 } from '../src/random.ts';
import { threadPool } from '../src/threads/pool.ts';
import { randomTensor } from './util.ts';

const name = process.argv[2];
const warnings: string[] = [];
configureScheduler({ onWarning: (m) => warnings.push(m), ...(name.startsWith('profile-') ? {} : { profilePath: null }) });

/** A call's outcome: the error's code (or its constructor's name when untyped), else 'ok'. */
async function outcome(call: () => Promise<unknown>): Promise<string> {
  try {
    await call();
    return 'ok';
  } catch (error) {
    return error instanceof HyperAttentionError ? error.code : `${(error as Error)?.name}: ${(error as Error)?.message}`;
  }
}

const rssMiB = () => Math.round(process.memoryUsage().rss / 2 ** 20);
const same = (a: Float32Array, b: Float32Array) => a.length === b.length && a.every((x, i) => Object.is(x, b[i]));
const tick = () => new Promise((resolve) => setTimeout(resolve, 0));

const cases: Record<string, () => Promise<Record<string, unknown>>> = {
  /** #1: threaded calls two and four in flight: RSS once the most in flight have run, and at the end. */
  async 'overlap-rss'() {
    // Few queries against many keys: arenas of about 40 MiB for little work each.
    const q = randomTensor([1, 1, 64, 64], 1);
    const [k, v] = [2, 3].map((s) => randomTensor([1, 1, 65536, 64], s));
    const calls = Number(process.env.CALLS ?? 40);
    const inFlight = (count: number, total: number) => {
      let started = 0;
      return Promise.all(Array.from({ length: count }, async () => {
        while (started++ < total) await exactAttention(q, k, v, { backend: 'cpu', threads: 2 });
      }));
    };
    await inFlight(4, 8);
    const start = rssMiB();
    for (let round = 0; round < 4; round++) await inFlight(round % 2 === 0 ? 2 : 4, calls / 4);
    return { start, end: rssMiB() };
  },

  /** #2: a resizable buffer shrunk, a data getter and a shape getter that change on later reads. */
  async stale() {
    const shape = [1, 1, 256, 32];
    const [q, k, v] = [1, 2, 3].map((s) => randomTensor(shape, s));
    const expected = (await hyperAttention(q, k, v, { backend: 'cpu', threads: 1 })).out.data;
    // A different call first, so that memory holds another result to go stale on.
    await hyperAttention(randomTensor(shape, 9), k, v, { backend: 'cpu', threads: 1 });
    // A resizable ArrayBuffer (ES2024; typed loosely for the project's ES2022 lib).
    const Resizable = ArrayBuffer as unknown as new (bytes: number, o: { maxByteLength: number }) => ArrayBuffer & { resize(n: number): void };
    const buffer = new Resizable(q.data.byteLength, { maxByteLength: q.data.byteLength });
    const resizable = new Float32Array(buffer);
    resizable.set(q.data);
    const pending = hyperAttention({ data: resizable, shape }, k, v, { backend: 'cpu', threads: 1 });
    buffer.resize(0);
    const shrunk = await pending.then((r) => (same(r.out.data, expected) ? 'correct' : 'wrong'), (e) => (e as HyperAttentionError).code ?? String(e));
    let reads = 0;
    const getter = { shape, get data() { return ++reads >= 5 ? new Float32Array(16) : q.data; } };
    const dataGetter = await hyperAttention(getter, k, v, { backend: 'cpu', threads: 1 })
      .then((r) => (same(r.out.data, expected) ? 'correct' : 'wrong'), (e) => (e as HyperAttentionError).code ?? String(e));
    let shapeReads = 0;
    const shapeGetter = { data: q.data, get shape() { return ++shapeReads >= 5 ? [1, 1, 128, 64] : shape; } };
    const shaped = await hyperAttention(shapeGetter, k, v, { backend: 'cpu', threads: 1 })
      .then((r) => (same(r.out.data, expected) ? 'correct' : 'wrong'), (e) => (e as HyperAttentionError).code ?? String(e));
    return { shrunk, dataGetter, shapeGetter: shaped };
  },

  /** #3: a signal look-alike without removeEventListener: rejected, and nothing else throws later. */
  async signal() {
    const shape = [1, 1, 64, 16];
    const [q, k, v] = [1, 2, 3].map((s) => randomTensor(shape, s));
    const signal = { aborted: false, addEventListener() {} } as unknown as AbortSignal;
    const first = await outcome(() => hyperAttention(q, k, v, { backend: 'cpu', signal }));
    await new Promise((resolve) => setTimeout(resolve, 100));
    return { first };
  },

  /** #4: explain() on shapes a call rejects at once. */
  async explain() {
    const n = 2 ** 40;
    const causal = await outcome(() => explain({ q: [1, 1, n, 64], k: [1, 1, n, 64], v: [1, 1, n, 64] }, { causal: true }));
    const m = 2 ** 30;
    const fixed = await outcome(() => explain({ q: [1, 1, m, 64], k: [1, 1, m, 64], v: [1, 1, m, 64] }, { mode: 'fixed', minSeqLen: 1 }));
    return { causal, fixed };
  },

  /** #5: a profile path that is a FIFO: the call resolves, and the process exits after it. */
  async 'profile-fifo'() {
    const fifo = join(mkdtempSync(join(tmpdir(), 'hyperattention-fifo-')), 'profile.json');
    execFileSync('mkfifo', [fifo]);
    configureScheduler({ profilePath: fifo });
    const shape = [1, 1, 64, 16];
    const [q, k, v] = [1, 2, 3].map((s) => randomTensor(shape, s));
    return { call: await outcome(() => hyperAttention(q, k, v)), warned: warnings.some((w) => w.includes(fifo)) };
  },

  /** #5: a profile path that links to /dev/urandom: no unbounded read. */
  async 'profile-urandom'() {
    const link = join(mkdtempSync(join(tmpdir(), 'hyperattention-urandom-')), 'profile.json');
    symlinkSync('/dev/urandom', link);
    configureScheduler({ profilePath: link });
    const shape = [1, 1, 64, 16];
    const [q, k, v] = [1, 2, 3].map((s) => randomTensor(shape, s));
    return { call: await outcome(() => hyperAttention(q, k, v)), rss: rssMiB(), warned: warnings.some((w) => w.includes(link)) };
  },

  /** Minor: an onWarning handler that throws (here on a profile path that is a folder) does not fail the call. */
  async 'throwing-handler'() {
    configureScheduler({ profilePath: mkdtempSync(join(tmpdir(), 'hyperattention-folder-')), onWarning: () => { throw new Error('the handler failed'); } });
    const shape = [1, 1, 64, 16];
    const [q, k, v] = [1, 2, 3].map((s) => randomTensor(shape, s));
    return { call: await outcome(() => hyperAttention(q, k, v)) };
  },

  /** #6: a sampler that refills one array, and one whose arrays change after it returned them. */
  async sampler() {
    const shape = [1, 2, 4096, 32];
    const [q, k, v] = [1, 2, 3].map((s) => randomTensor(shape, s));
    const draws = (seed: number) => {
      const rng = new Xoshiro128(seed);
      return (r: { batch: number; heads: number; count: number; high: number }) =>
        Int32Array.from({ length: r.batch * r.heads * r.count }, () => rng.nextBelow(r.high));
    };
    const o = { backend: 'cpu', causal: true, mode: 'fixed', minSeqLen: 256, threads: 1 } as const;
    const fresh = (await hyperAttention(q, k, v, { ...o, sampler: draws(1) })).out.data;
    const reused = new Int32Array(1 << 20);
    const refill = draws(1);
    const refilling: Sampler = (r) => {
      const s = refill(r);
      const view = reused.subarray(0, s.length);
      view.set(s);
      return view;
    };
    const refilled = (await hyperAttention(q, k, v, { ...o, sampler: refilling })).out.data;
    const given: Int32Array[] = [];
    const keep = draws(1);
    const mutating: Sampler = (r) => {
      const s = keep(r);
      given.push(s);
      return s;
    };
    // The first progress report comes after the draws and before the sampled ops.
    const onProgress = () => given.forEach((s) => s.fill(2 ** 30));
    const mutated = await hyperAttention(q, k, v, { ...o, sampler: mutating, onProgress })
      .then((r) => (same(r.out.data, fresh) ? 'correct' : 'wrong'), (e) => (e as HyperAttentionError).code ?? String(e));
    return { draws: given.length, refilled: same(refilled, fresh) ? 'correct' : 'wrong', mutated };
  },

  /** #7: Proxy-wrapped typed arrays as q, as a sampler's output. */
  async proxy() {
    const shape = [1, 1, 256, 16];
    const [q, k, v] = [1, 2, 3].map((s) => randomTensor(shape, s));
    const input = await outcome(() => hyperAttention({ data: new Proxy(q.data, {}), shape }, k, v, { backend: 'cpu' }));
    let draws = 0;
    const sampler: Sampler = (r) => {
      draws++;
      return new Proxy(new Int32Array(r.batch * r.heads * r.count), {});
    };
    const samplerOut = await outcome(() => hyperAttention(q, k, v, { backend: 'cpu', mode: 'fixed', causal: true, minSeqLen: 64, blockSize: 32, sampleSize: 16, sampler }));
    const projections = await outcome(() => hyperAttention(q, k, v, { backend: 'cpu', mode: 'fixed', minSeqLen: 64, projections: new Proxy(new Float32Array(16 * 7), {}) }));
    return { input, samplerOut, draws, projections };
  },

  /** #8: allocation failures (run under ulimit -v by the test): typed, and the next call works. */
  async 'out-of-memory'() {
    const small = [1, 1, 64, 16];
    const [q, k, v] = [1, 2, 3].map((s) => randomTensor(small, s));
    const tiny = await outcome(() => exactAttention(q, k, v, { backend: 'cpu', threads: 1 }));
    // Just under the largest result: nq * dv = 2^31 - 64 values of output, 8 GiB.
    const nq = 2 ** 25 - 1;
    const big = { data: new Float32Array(nq), shape: [1, 1, nq, 1] };
    const wide = { data: new Float32Array(64), shape: [1, 1, 1, 64] };
    const huge = await outcome(() => exactAttention(big, { data: new Float32Array(1), shape: [1, 1, 1, 1] }, wide, { backend: 'cpu', threads: 1 }));
    const after = await outcome(() => exactAttention(q, k, v, { backend: 'cpu', threads: 1 }));
    return { tiny, huge, after };
  },

  /** #9: v overwritten with 3e38 while the call runs. */
  async overflow() {
    const shape = [1, 8, 1024, 64];
    const [q, k, v] = [1, 2, 3].map((s) => randomTensor(shape, s));
    const call = hyperAttention(q, k, v, { backend: 'cpu', threads: 1 });
    await tick();
    v.data.fill(3e38, v.data.length / 2);
    const result = await call.then((r) => (r.out.data.every(Number.isFinite) ? 'finite' : 'non-finite'), (e) => (e as HyperAttentionError).code ?? String(e));
    return { result };
  },

  /** #10: a worker that dies while the pool waits for it to start is replaced; calls keep their threads. */
  async 'worker-death'() {
    const pool = await threadPool();
    if (typeof pool === 'string') return { skipped: pool };
    pool.grow(2);
    const starting = pool.ready(2);
    pool.killWorker(0);
    const ready = await outcome(() => starting);
    const shape = [1, 1, 512, 32];
    const [q, k, v] = [1, 2, 3].map((s) => randomTensor(shape, s));
    const call = await outcome(() => hyperAttention(q, k, v, { backend: 'cpu', threads: 2 }));
    const plan = await explain({ q: shape, k: shape, v: shape }, { backend: 'cpu', threads: 2 });
    return { ready, call, threads: plan.threads, warnings };
  },

  /** #11: threads far beyond the cores: as fast as the default, and no more workers than cores. */
  async 'many-threads'() {
    const shape = [1, 1, 256, 64];
    const [q, k, v] = [1, 2, 3].map((s) => randomTensor(shape, s));
    // A sample is 8 calls (about 10 ms): one call of about a millisecond is moved by any
    // timer or collection on a shared machine.
    const time = async (threads: number | undefined) => {
      const start = performance.now();
      for (let c = 0; c < 8; c++) await exactAttention(q, k, v, { backend: 'cpu', threads });
      return performance.now() - start;
    };
    await time(undefined);
    const rssBefore = rssMiB();
    const [many, standard]: number[][] = [[], []];
    // Side by side, alternating, medians: the ratio survives a loaded machine.
    for (let i = 0; i < 15; i++) {
      many.push(await time(256));
      standard.push(await time(undefined));
    }
    const median = (xs: number[]) => xs.sort((a, b) => a - b)[xs.length >> 1];
    const pool = await threadPool();
    const { availableParallelism } = await import('node:os');
    return {
      ratio: median(many) / median(standard), workers: typeof pool === 'string' ? 0 : pool.size, cores: availableParallelism(),
      rssGrowth: rssMiB() - rssBefore,
    };
  },
};

const run = cases[name];
if (!run) throw new Error(`unknown case ${name}`);
const report = await run();
console.log(`result ${JSON.stringify(report)}`);
