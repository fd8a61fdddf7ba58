// How slow this machine is right now, so that the test runners and suites scale their time
// limits instead of failing on a slow or busy machine: a limit is written as the time it
// may take on an idle, ordinary one (this project's 2-core development machine) and
// waits `pace()` times that. Plain JavaScript for any runtime (the runners in Node, the
// suites in Node, Deno and browser pages); scripts/pace.d.mts gives TypeScript its types.

// A fixed mix of float and integer work whose result is used, so no JIT can skip it.
const LOOP = 4_000_000;
// Its median time on the reference machine, idle.
const REFERENCE_MS = 14;

function loop() {
  let x = 1;
  let h = 7;
  for (let i = 0; i < LOOP; i++) {
    x = x * 1.000000119 + 1e-7;
    h = Math.imul(h ^ i, 0x9e3779b1) >>> 0;
  }
  return x + h;
}

/** Runnable threads per core over the last minute, where the runtime says (Node, Deno). */
function contention() {
  const g = globalThis;
  try {
    if (g.Deno?.loadavg) return g.Deno.loadavg()[0] / (g.navigator?.hardwareConcurrency || 1);
    const os = g.process?.getBuiltinModule?.('node:os');
    if (os) return os.loadavg()[0] / os.availableParallelism();
  } catch {
    // A runtime without permission to read the load (Deno without --allow-sys): the loop alone.
  }
  return 0;
}

/**
 * Measures now: at least 1, the slowdown against the reference machine, from the loop's
 * median time (a slower CPU) or the load per core (a busy one: a short loop still gets
 * whole time slices, a long suite only its share), whichever is larger.
 */
export function measurePace() {
  const times = [];
  let sink = 0;
  for (let r = 0; r < 5; r++) {
    const start = performance.now();
    sink += loop();
    times.push(performance.now() - start);
  }
  times.sort((a, b) => a - b);
  if (!(sink > 0)) throw new Error('pace: the loop went wrong');
  return Math.max(1, times[2] / REFERENCE_MS, contention());
}

let measured;
/** measurePace(), measured once per process. */
export function pace() {
  measured ??= measurePace();
  return measured;
}

/** `ms` on the reference machine, scaled to this one now: for limits that cannot wait and see (spawnSync). */
export function scaled(ms) {
  return Math.round(ms * measurePace());
}

/**
 * Calls `late(waited)` once `ms` reference-machine milliseconds have passed since the start or
 * the last `reset()`: when the timer ends the pace is measured again, and a machine that
 * got slower meanwhile is given the difference. So a slow machine gets longer, and a wait
 * that never ends is still caught. `stop()` ends the watch.
 */
export function patience(ms, late) {
  let since = performance.now();
  let timer;
  const arm = (wait) => {
    timer = setTimeout(check, wait);
  };
  const check = () => {
    const waited = performance.now() - since;
    const limit = ms * measurePace();
    if (waited >= limit) late(waited);
    else arm(limit - waited);
  };
  arm(ms * pace());
  return {
    reset() {
      since = performance.now();
    },
    stop() {
      clearTimeout(timer);
    },
  };
}

/** Resolves with 'late' after `ms` reference-machine milliseconds (patience()); cancel() ends it unresolved. */
export function lateAfter(ms) {
  let watch;
  const promise = new Promise((resolve) => {
    watch = patience(ms, () => resolve('late'));
  });
  return { promise, cancel: () => watch.stop() };
}
