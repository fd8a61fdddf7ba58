// Time slices of the work a call does on the calling thread (the Node or Deno main thread,
// a page, or the worker that calls): host loops over whole tensors (input scans, layout
// copies, uploads, result checks) and, on one thread, the kernels' jobs run in pieces, and
// the event loop gets a turn once a slice has run SLICE_MS, so that timers, I/O, page
// events and an abort get through while a call runs. One clock for the thread: the calls
// in flight share it.
import { abortedError } from './errors.ts';

/** The longest run of a call's work on the calling thread between two turns of its event loop. */
export const SLICE_MS = 5;

/**
 * Elements a host loop handles between two looks at the clock: a scan or copy of 2^16
 * float32 values takes well under a millisecond.
 */
export const SLICE_ELEMENTS = 1 << 16;

let sliceStart = performance.now();

/** Whether the current slice has run its time: the work should then await turn(). */
export function sliceDue(): boolean {
  return performance.now() - sliceStart >= SLICE_MS;
}

/**
 * Gives the event loop a turn when the slice is due (a macrotask: timers and I/O run, not
 * only promise callbacks), then rejects with ABORTED if the signal has aborted.
 */
export async function turn(signal?: AbortSignal): Promise<void> {
  if (sliceDue()) {
    await nextTurn();
    sliceStart = performance.now();
  }
  if (signal?.aborted) throw abortedError(signal);
}

/**
 * fn over [0, total) in pieces [from, to) of `step`, with a turn of the event loop between
 * two pieces whenever the slice is due; rejects with ABORTED between pieces.
 */
export async function inSlices(
  total: number, step: number, fn: (from: number, to: number) => void, signal?: AbortSignal,
): Promise<void> {
  for (let from = 0; from < total; from += step) {
    if (sliceDue() || signal?.aborted) await turn(signal);
    fn(from, Math.min(total, from + step));
  }
}

/** float32 values in a 4 KiB page. */
const PAGE_FLOATS = 1024;
/** Pages touchPages writes in one turn: about 0.2 ms where a page fault costs 12 µs. */
const PAGES_PER_TURN = 16;

/**
 * Writes every page of a freshly allocated result once (each value kept), a few pages a
 * turn of the event loop, while the call waits for its workers or its GPU: the first write
 * to a page costs a page fault, about 12 µs a 4 KiB page on the 2-core VMs measured here
 * (12 ms for the 4 MB out of a 16k head), which would otherwise fall on the calling thread
 * as it copies the results in. Returns what stops it (the call's end).
 */
export function touchPages(data: Float32Array): () => void {
  let at = 0;
  let stopped = false;
  const step = () => {
    if (stopped) return;
    const end = Math.min(data.length, at + PAGES_PER_TURN * PAGE_FLOATS);
    for (; at < end; at += PAGE_FLOATS) data[at] = data[at];
    if (at < data.length) void nextTurn().then(step);
  };
  void nextTurn().then(step);
  return () => {
    stopped = true;
  };
}

/** Resolves on a later turn of the event loop, without the clamping of nested timers. */
function nextTurn(): Promise<void> {
  const immediate = (globalThis as { setImmediate?: (fn: () => void) => void }).setImmediate;
  if (immediate) return new Promise((resolve) => immediate(resolve));
  return new Promise((resolve) => {
    const channel = new MessageChannel();
    channel.port1.onmessage = () => {
      channel.port1.close();
      resolve();
    };
    channel.port2.postMessage(0);
  });
}
