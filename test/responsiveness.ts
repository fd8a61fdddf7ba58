// What the stall test and bench measure of a call on the calling thread (docs/threads.md):
// the longest gap between turns of its event loop (a 1 ms interval timer's lateness), how
// long an abort takes to reject the call, and the CPU the process burns once it has.

/** Starts recording the longest gap between turns of the event loop; the function stops it and returns the gap in ms. */
export function watchEventLoop(): () => number {
  let last = performance.now();
  let longest = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    longest = Math.max(longest, now - last);
    last = now;
  }, 1);
  return () => {
    clearInterval(timer);
    return Math.max(longest, performance.now() - last);
  };
}

export interface Stall {
  /** the call's time */
  ms: number;
  /** the longest gap between turns of the event loop while it ran, the call's own synchronous part included */
  stallMs: number;
}

/** Runs the call and records the longest stall of the event loop meanwhile. */
export async function measureStall(call: () => Promise<unknown>): Promise<Stall> {
  const stop = watchEventLoop();
  const start = performance.now();
  await call();
  return { ms: performance.now() - start, stallMs: stop() };
}

export interface Abort {
  /** whether the call settled before the abort was due (then nothing was aborted) */
  completed: boolean;
  /** the longest gap between turns of the event loop until the call settled */
  stallMs: number;
  /** from when the abort was due (afterMs after the call started) to the rejection: the timer's lateness included */
  latencyMs: number;
  /** the rejection's error code */
  code: string | undefined;
  /** CPU time of the process (the workers, the calling thread idle) in the settleMs after the rejection */
  cpuAfterMs: number;
}

/**
 * Starts call(signal), aborts it from a timer afterMs later, and measures how late the
 * rejection comes, then the CPU the process burns for settleMs (on an otherwise idle
 * thread: what the workers still do for the aborted call).
 */
export async function measureAbort(
  call: (signal: AbortSignal) => Promise<unknown>, afterMs: number, settleMs = 300,
): Promise<Abort> {
  const controller = new AbortController();
  const stop = watchEventLoop();
  const start = performance.now();
  const timer = setTimeout(() => controller.abort(), afterMs);
  let code: string | undefined;
  let completed = false;
  try {
    await call(controller.signal);
    completed = true;
  } catch (error) {
    code = (error as { code?: string }).code;
    if (!code) throw error;
  }
  const settled = performance.now();
  clearTimeout(timer);
  const stallMs = stop();
  const cpu = process.cpuUsage();
  await new Promise((resolve) => setTimeout(resolve, settleMs));
  const used = process.cpuUsage(cpu);
  return {
    completed, stallMs, code, latencyMs: completed ? 0 : settled - start - afterMs, cpuAfterMs: (used.user + used.system) / 1000,
  };
}
