// The global thread settings (configureThreads) and how a call's thread count is chosen:
// the call's `threads`, else the global setting, else the cores the runtime reports, at
// most DEFAULT_MAX_THREADS (beyond that, attention's memory traffic gains little per core
// and a page would starve everything else on the machine); never more than the cores (more
// threads than cores only wait for each other, each a worker with its own memory).
import { describeValue } from '../describe.ts';
import { HyperAttentionError } from '../errors.ts';
import { MAX_THREADS } from '../options.ts';
import { ownOptions } from '../owned.ts';

export interface ThreadConfig {
  /**
   * WebAssembly threads per call, 1 to 256, capped at the cores the runtime reports (default:
   * those cores, at most 16); null restores the default
   */
  threads?: number | null;
  /** browsers: run calls in the library's worker (default true), so that the page stays responsive */
  worker?: boolean;
}

export const DEFAULT_MAX_THREADS = 16;

const settings: { threads: number | undefined; worker: boolean } = { threads: undefined, worker: true };

/** Sets the thread count and worker use of calls that do not set their own; unset fields stay as they are. */
export function configureThreads(options: ThreadConfig): void {
  const { threads, worker } = ownOptions(options, ['threads', 'worker'], 'configureThreads', 'thread option') as ThreadConfig;
  if (threads !== undefined && threads !== null &&
    (typeof threads !== 'number' || !Number.isInteger(threads) || threads < 1 || threads > MAX_THREADS)) {
    throw new HyperAttentionError('INVALID_OPTION', `threads: expected an integer in [1, ${MAX_THREADS}] or null, got ${describeValue(threads)}`);
  }
  if (worker !== undefined && typeof worker !== 'boolean') {
    throw new HyperAttentionError('INVALID_OPTION', `worker: expected a boolean, got ${describeValue(worker)}`);
  }
  if (threads !== undefined) settings.threads = threads ?? undefined;
  if (worker !== undefined) settings.worker = worker;
}

/** The global setting for calls in browsers that do not choose: run in the library's worker. */
export function workerByDefault(): boolean {
  return settings.worker;
}

let cores: Promise<number> | undefined;

/** Logical cores the runtime reports (navigator.hardwareConcurrency, else Node's os module), 1 when it says nothing. */
export function reportedCores(): Promise<number> {
  cores ??= (async () => {
    const nav = (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator;
    if (nav?.hardwareConcurrency && nav.hardwareConcurrency > 0) return nav.hardwareConcurrency;
    const process = (globalThis as { process?: { versions?: { node?: string } } }).process;
    if (!process?.versions?.node) return 1;
    const os = (await import(/* @vite-ignore */ ['node', 'os'].join(':'))) as { availableParallelism?: () => number; cpus(): unknown[] };
    return os.availableParallelism?.() ?? os.cpus().length;
  })().catch(() => 1);
  return cores;
}

/** The threads a call asks for: its own `threads`, else the global setting; undefined for the default. */
export function askedThreads(requested: number | undefined): number | undefined {
  return requested ?? settings.threads;
}

/**
 * Threads for a call that asked for `requested` (undefined: the global setting, else the
 * default), at most the cores: `threads: 256` on two cores runs on two (results are the same
 * for every count), on the pool's two workers, instead of starting 256.
 */
export async function threadsFor(requested: number | undefined): Promise<number> {
  const cores = Math.max(1, await reportedCores());
  return Math.min(askedThreads(requested) ?? DEFAULT_MAX_THREADS, cores);
}
