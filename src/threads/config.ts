// The global thread settings (configureThreads) and how a call's thread count is chosen:
// the call's `threads`, else the global setting, else the cores the runtime reports, at
// most DEFAULT_MAX_THREADS (beyond that, attention's memory traffic gains little per core
// and a page would starve everything else on the machine).
import { describeValue } from '../describe.ts';
import { HyperAttentionError } from '../errors.ts';
import { MAX_THREADS } from '../options.ts';

export interface ThreadConfig {
  /** WebAssembly threads per call, 1 to 256 (default: the cores the runtime reports, at most 16); null restores the default */
  threads?: number | null;
  /** browsers: run calls in the library's worker (default true), so that the page stays responsive */
  worker?: boolean;
}

export const DEFAULT_MAX_THREADS = 16;

const settings: { threads: number | undefined; worker: boolean } = { threads: undefined, worker: true };

/** Sets the thread count and worker use of calls that do not set their own; unset fields stay as they are. */
export function configureThreads(options: ThreadConfig): void {
  if (typeof options !== 'object' || options === null) {
    throw new HyperAttentionError('INVALID_OPTION', `configureThreads: expected an object, got ${describeValue(options)}`);
  }
  const allowed = ['threads', 'worker'];
  for (const key of Object.keys(options)) {
    if (!allowed.includes(key)) {
      throw new HyperAttentionError('INVALID_OPTION', `unknown thread option '${key}'; expected one of: ${allowed.join(', ')}`);
    }
  }
  const { threads, worker } = options;
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
    const os = (await import(/* @vite-ignore */ ['node', 'os'].join(':'))) as { availableParallelism?(): number; cpus(): unknown[] };
    return os.availableParallelism?.() ?? os.cpus().length;
  })().catch(() => 1);
  return cores;
}

/** Threads for a call that asked for `requested` (undefined: the global setting, else the default). */
export async function threadsFor(requested: number | undefined): Promise<number> {
  return requested ?? settings.threads ?? Math.min(DEFAULT_MAX_THREADS, Math.max(1, await reportedCores()));
}
