// Calls never hold the calling thread (docs/threads.md): the longest gap between turns of
// its event loop while the scheduler calibrates and while a call runs, on the default
// threads and on one, with large inputs to transpose and scan on the host (layout 'bnhd')
// and long kernels; an abort rejects the call soon after it is due, and the workers stop
// that call's work. Bounds are
// generous (a loaded machine stretches every slice); a call that holds the thread for a
// whole pass over its inputs exceeds them.
import * as assert from 'uvu/assert';
import { calibrate, createKVCache, exactAttention, type Tensor } from '../src/index.ts';
import { measureAbort, measureStall, watchEventLoop, type Gap } from './responsiveness.ts';
import { suite } from './suite.ts';
import { touchPages } from '../src/slices.ts';

const test = suite('stall');

/** The most the event loop may wait for its turn during a call. */
const STALL_MS = 250;

/**
 * Whether a gap is within STALL_MS: the thread's own CPU time between two turns where the
 * system tells it (a loaded machine may leave the thread waiting for a core, which is no
 * work of the call's), else the wall time; and how to say it.
 */
function held(gap: Gap): { ok: boolean; text: string } {
  const ms = gap.cpuMs ?? gap.wallMs;
  const cpu = gap.cpuMs === undefined ? '' : ` (${gap.cpuMs.toFixed(0)} ms of it running)`;
  return { ok: ms <= STALL_MS, text: `the event loop waited ${gap.wallMs.toFixed(0)} ms${cpu}` };
}
/** The most a rejection may come after its abort was due. */
const ABORT_MS = 100;
/** The most CPU the process may burn in the 300 ms after an aborted call has rejected. */
const CPU_AFTER_MS = 60;

/** A tensor of the given shape with cheap, varied values (no random draws: 16 M of them would dominate the test). */
function filled(shape: number[], salt: number): Tensor {
  const data = new Float32Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < data.length; i++) data[i] = (((i * 2654435761 + salt) >>> 0) % 2001) / 1000 - 1;
  return { data, shape };
}

// [B, N, H, D] = 16 M values per tensor: transposed and scanned on the host, and 2048 short heads of little attention.
const wide = [32, 128, 64, 64];
const q = filled(wide, 1);
const k = filled(wide, 2);
const v = filled(wide, 3);
const bnhd = (threads: number | undefined, signal?: AbortSignal) => exactAttention(q, k, v, { layout: 'bnhd', threads, signal });

test('touchPages keeps every value, whether written before it starts or while it runs', async () => {
  const data = Float32Array.from({ length: 300_000 }, (_, i) => i * 0.5);
  const stop = touchPages(data);
  // Writes between its turns (as a result's copy would land): each must survive.
  for (let round = 0; round < 40; round++) {
    await new Promise((resolve) => setImmediate(resolve));
    for (let i = round; i < data.length; i += 997) data[i] = -i;
  }
  stop();
  for (let i = 0; i < data.length; i++) {
    const written = i % 997 < 40 ? -i : i * 0.5;
    if (data[i] !== written) assert.unreachable(`value ${i} is ${data[i]}, expected ${written}`);
  }
});

test('calibration keeps the event loop turning, and a call queued behind it rejects soon after its abort', async () => {
  const stop = watchEventLoop();
  const calibrating = calibrate();
  const small = [1, 1, 256, 64];
  const a = await measureAbort((signal) => exactAttention(filled(small, 7), filled(small, 8), filled(small, 9), { signal }), 50, 0);
  await calibrating;
  const stall = held(stop());
  assert.ok(stall.ok, `${stall.text} during calibration`);
  assert.is(a.code, 'ABORTED');
  assert.ok(a.latencyMs <= ABORT_MS, `rejected ${a.latencyMs.toFixed(0)} ms after the abort was due`);
});

test('large host inputs (layout bnhd): the event loop keeps its turns, on the default threads and on one', async () => {
  for (const threads of [undefined, 1]) {
    const { ms, stall } = await measureStall(() => bnhd(threads));
    const h = held(stall);
    assert.ok(h.ok, `threads ${threads ?? 'default'}: ${h.text} (call ${ms.toFixed(0)} ms)`);
  }
});

test('appending a large chunk to a cache keeps the event loop turning', async () => {
  // 16 M values each of keys and values: a copy into the cache's fresh memory, one pass.
  const chunk = [1, 32, 4096, 128];
  const [ck, cv] = [filled(chunk, 10), filled(chunk, 11)];
  const cache = await createKVCache({ kvHeads: 32, headDim: 128, capacity: 4096 });
  try {
    const { ms, stall } = await measureStall(() => cache.append(ck, cv));
    const h = held(stall);
    assert.ok(h.ok, `${h.text} (append ${ms.toFixed(0)} ms)`);
    assert.is(cache.length, 4096);
  } finally {
    cache.release();
  }
});

/** float16 bits (a Uint16Array tagged dtype 'float16', as onnxruntime gives them) of cheap, varied values in ±[1, 2). */
function halves(shape: number[], salt: number) {
  const data = new Uint16Array(shape.reduce((a, b) => a * b, 1));
  for (let i = 0; i < data.length; i++) data[i] = 0x3c00 | ((((i * 2654435761 + salt) >>> 0) >>> 22) & 0x3ff) | ((i & 1) << 15);
  return { data, shape, dtype: 'float16' as const };
}

test('float16 inputs are decoded in time slices: a call with 32 M float16 queries, and an append of 16 M float16 keys and values, keep the event loop turning', async () => {
  // Decoded at once, q held the thread for about 0.4 s, and the append for as long.
  const q = halves([1, 8, 32768, 128], 1);
  const [k, v] = [halves([1, 8, 16, 128], 2), halves([1, 8, 16, 128], 3)];
  const call = await measureStall(() => exactAttention(q, k, v));
  const c = held(call.stall);
  assert.ok(c.ok, `call: ${c.text} (${call.ms.toFixed(0)} ms)`);
  const chunk = [1, 32, 4096, 128];
  const [ck, cv] = [halves(chunk, 4), halves(chunk, 5)];
  const cache = await createKVCache({ kvHeads: 32, headDim: 128, capacity: 4096 });
  try {
    const append = await measureStall(() => cache.append(ck, cv));
    const a = held(append.stall);
    assert.ok(a.ok, `append: ${a.text} (${append.ms.toFixed(0)} ms)`);
    assert.is(cache.length, 4096);
  } finally {
    cache.release();
  }
});

test('an abort while the inputs are read rejects with ABORTED soon after it is due', async () => {
  for (const threads of [undefined, 1]) {
    const a = await measureAbort((signal) => bnhd(threads, signal), 50);
    assert.is(a.code, 'ABORTED');
    assert.ok(a.latencyMs <= ABORT_MS, `threads ${threads ?? 'default'}: rejected ${a.latencyMs.toFixed(0)} ms after the abort was due`);
  }
});

test('an abort during long kernels rejects soon, and the workers stop the call', async () => {
  // One head of 32k keys, d = 128: a 64-row job of today's kernels is 10^9 flops.
  const long = [1, 1, 32768, 128];
  const [lq, lk, lv] = [filled(long, 4), filled(long, 5), filled(long, 6)];
  for (const threads of [undefined, 1]) {
    const a = await measureAbort((signal) => exactAttention(lq, lk, lv, { threads, signal }), 300);
    assert.is(a.code, 'ABORTED');
    const label = `threads ${threads ?? 'default'}`;
    assert.ok(a.latencyMs <= ABORT_MS, `${label}: rejected ${a.latencyMs.toFixed(0)} ms after the abort was due`);
    const h = held(a.stall);
    assert.ok(h.ok, `${label}: ${h.text}`);
    assert.ok(a.cpuAfterMs <= CPU_AFTER_MS, `${label}: ${a.cpuAfterMs.toFixed(0)} ms of CPU after the rejection`);
  }
});
