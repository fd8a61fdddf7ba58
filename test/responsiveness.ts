// What the stall test and bench measure of a call on the calling thread (docs/threads.md):
// the longest gap between turns of its event loop (a 1 ms interval timer's lateness), how
// long an abort takes to reject the call, and the CPU the process burns once it has. On a
// busy machine the operating system may leave the thread waiting for a core whatever it
// runs: where Linux tells a thread's own CPU time (/proc/thread-self/schedstat), the gap is
// also measured in the thread's CPU time, which counts only what it ran.
import { readFileSync } from 'node:fs';

/** The calling thread's CPU time in ms, or undefined where the system does not tell it. */
function threadCpuMs(): number | undefined {
  try {
    return Number(readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[0]) / 1e6;
  } catch {
    return undefined;
  }
}

export interface Gap {
  /** the longest gap between turns of the event loop, in ms */
  wallMs: number;
  /** the most CPU time the thread ran between two turns, in ms (undefined: not measurable here) */
  cpuMs: number | undefined;
}

/** Starts recording the longest gap between turns of the event loop; the function stops it and returns the gap. */
export function watchEventLoop(): () => Gap {
  let last = performance.now();
  let lastCpu = threadCpuMs();
  let wallMs = 0;
  let cpuMs = 0;
  const tick = () => {
    const now = performance.now();
    const cpu = threadCpuMs();
    wallMs = Math.max(wallMs, now - last);
    if (cpu !== undefined && lastCpu !== undefined) cpuMs = Math.max(cpuMs, cpu - lastCpu);
    last = now;
    lastCpu = cpu;
  };
  const timer = setInterval(tick, 1);
  return () => {
    clearInterval(timer);
    tick();
    return { wallMs, cpuMs: lastCpu === undefined ? undefined : cpuMs };
  };
}

export interface Stall {
  /** the call's time */
  ms: number;
  /** the longest gap between turns of the event loop while it ran, the call's own synchronous part included */
  stall: Gap;
}

/** Runs the call and records the longest stall of the event loop meanwhile. */
export async function measureStall(call: () => Promise<unknown>): Promise<Stall> {
  const stop = watchEventLoop();
  const start = performance.now();
  await call();
  return { ms: performance.now() - start, stall: stop() };
}

export interface Abort {
  /** whether the call settled before the abort was due (then nothing was aborted) */
  completed: boolean;
  /** the longest gap between turns of the event loop until the call settled */
  stall: Gap;
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
  const stall = stop();
  const cpu = process.cpuUsage();
  await new Promise((resolve) => setTimeout(resolve, settleMs));
  const used = process.cpuUsage(cpu);
  return {
    completed, stall, code, latencyMs: completed ? 0 : settled - start - afterMs, cpuAfterMs: (used.user + used.system) / 1000,
  };
}
