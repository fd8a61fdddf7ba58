// The page's side of the library's worker (src/browser/worker.ts): starts it from the
// embedded bundle, hands it calls and settles them from its answers, forwards progress,
// warnings and the profile's localStorage entry, and cancels. An aborted call is rejected at
// once; the worker is told to stop it, and a worker still busy with it after
// ABORT_GRACE_MS is replaced (terminating a worker frees all it held), the calls it had
// not finished sent to the new one. Where no worker can be started, calls run on the
// calling thread, said once through the warning hook.
import { abortedError, HyperAttentionError } from '../errors.ts';
import type { Progress } from '../options.ts';
import { warn } from '../warnings.ts';
import { receiveError, STORAGE_PREFIX, type FromWorker, type RemoteName, type RemoteSettings, type ToWorker } from './protocol.ts';
import { WORKER_SOURCE } from './worker.generated.ts';

/**
 * How long the worker may go on with an aborted call before it is replaced: the executor
 * checks the signal between ops (tens of milliseconds apart), and a replacement costs the
 * next call a new worker (its WebAssembly compiled again).
 */
const ABORT_GRACE_MS = 250;

interface Pending {
  name: RemoteName;
  args: unknown[];
  onProgress: ((p: Progress) => void) | undefined;
  /** the last progress passed on: a replaced worker reports again from the start */
  lastDone: number;
  /** the same call on the calling thread, for when the worker cannot take it */
  local: () => Promise<unknown>;
  resolve(value: unknown): void;
  reject(error: unknown): void;
  /** removes the listener on the call's signal */
  release(): void;
}

export interface WorkerCall {
  local: () => Promise<unknown>;
  onProgress?: (p: Progress) => void;
  signal?: AbortSignal;
}

let worker: Worker | undefined;
/** whether the current worker has started (its module loaded and ran) */
let ready = false;
/** set when a worker could not be started here: from then on calls run on the calling thread */
let unavailable = false;
let sourceUrl: string | undefined;
let nextId = 1;
const pending = new Map<number, Pending>();
/** Calls rejected on an abort that the worker may still be running, each with the timer that replaces it. */
const abandoned = new Map<number, ReturnType<typeof setTimeout>>();
/** Settings made so far, which every new worker gets. */
const settings: RemoteSettings = {};

/**
 * Whether calls can go to a worker: only from a page's main thread (a caller already in a
 * worker has nothing to move off), and where Worker, Blob and Blob URLs exist.
 */
export function workerAvailable(): boolean {
  if (unavailable || typeof document !== 'object') return false;
  if (typeof Worker !== 'function' || typeof Blob !== 'function' || typeof URL?.createObjectURL !== 'function') {
    giveUp('this browser has no Worker or Blob URLs');
    return false;
  }
  return true;
}

/** Runs a library function in the worker; settles as the call there does. */
export function runInWorker(name: RemoteName, args: unknown[], call: WorkerCall): Promise<unknown> {
  const { signal } = call;
  if (signal?.aborted) return Promise.reject(abortedError(signal));
  if (!start()) return call.local();
  const id = nextId++;
  return new Promise((resolve, reject) => {
    const onAbort = () => abandon(id, abortedError(signal));
    signal?.addEventListener('abort', onAbort, { once: true });
    const p: Pending = {
      name, args, onProgress: call.onProgress, lastDone: -1, local: call.local, resolve, reject,
      release: () => signal?.removeEventListener('abort', onAbort),
    };
    pending.set(id, p);
    if (!send(id, p)) {
      // Something in the arguments cannot be cloned: the library on this thread takes the
      // call and says what is wrong with it, as it would without a worker.
      settle(id);
      p.local().then(resolve, reject);
    }
  });
}

/** Settings for the worker's copy of the library: sent now, and to every worker started later. */
export function configureWorker(next: RemoteSettings): void {
  if (next.scheduler) settings.scheduler = { ...settings.scheduler, ...next.scheduler };
  if (next.threads) settings.threads = { ...settings.threads, ...next.threads };
  if (worker) post({ type: 'configure', settings: next });
}

function start(): Worker | undefined {
  if (worker) return worker;
  let started: Worker;
  try {
    sourceUrl ??= URL.createObjectURL(new Blob([WORKER_SOURCE], { type: 'text/javascript' }));
    started = new Worker(sourceUrl, { type: 'module', name: 'hyperattention' });
  } catch (error) {
    giveUp(`could not start the library's worker (${String(error)})`);
    return undefined;
  }
  worker = started;
  ready = false;
  started.addEventListener('message', (event: MessageEvent<FromWorker>) => {
    if (started === worker) receive(event.data);
  });
  started.addEventListener('error', (event) => {
    // A Content-Security-Policy whose worker-src leaves out blob: fails it without a message.
    if (started === worker) failed(event.message || "no reason given, as when a Content-Security-Policy's worker-src leaves out blob:");
  });
  post({ type: 'start', storage: storageEntries(), settings });
  return started;
}

function post(message: ToWorker): void {
  worker!.postMessage(message);
}

/** Hands a call to the worker: the arguments are copied (the caller's arrays stay usable). */
function send(id: number, p: Pending): boolean {
  try {
    post({ type: 'call', id, name: p.name, args: p.args, progress: p.onProgress !== undefined });
    return true;
  } catch {
    return false;
  }
}

function settle(id: number): Pending | undefined {
  const p = pending.get(id);
  p?.release();
  pending.delete(id);
  return p;
}

function receive(message: FromWorker): void {
  switch (message.type) {
    case 'ready':
      ready = true;
      break;
    case 'done':
    case 'failed': {
      clearTimeout(abandoned.get(message.id));
      abandoned.delete(message.id);
      const p = settle(message.id);
      if (message.type === 'done') p?.resolve(message.value);
      else p?.reject(receiveError(message.error));
      break;
    }
    case 'progress': {
      const p = pending.get(message.id);
      if (!p?.onProgress || message.progress.done <= p.lastDone) break;
      p.lastDone = message.progress.done;
      try {
        p.onProgress(message.progress);
      } catch (error) {
        abandon(message.id, error); // as on the calling thread: the callback's error ends the call
      }
      break;
    }
    case 'warning':
      warn(message.message);
      break;
    case 'stored':
      try {
        if (message.value === null) localStorage.removeItem(message.key);
        else localStorage.setItem(message.key, message.value);
      } catch (error) {
        warn(`could not save ${message.key} in localStorage: ${String(error)}`);
      }
      break;
  }
}

/** Rejects a call now and stops it in the worker, replacing the worker if it does not stop in time. */
function abandon(id: number, error: unknown): void {
  const p = settle(id);
  if (!p) return;
  p.reject(error);
  post({ type: 'abort', id });
  const check = () => {
    // A worker still loading has not begun the call: it reads the abort before it could.
    if (!ready) abandoned.set(id, setTimeout(check, ABORT_GRACE_MS));
    else replace();
  };
  abandoned.set(id, setTimeout(check, ABORT_GRACE_MS));
}

/** Terminates the worker and sends the calls it had not finished to a new one. */
function replace(): void {
  stop();
  if (pending.size === 0 || !start()) return;
  for (const [id, p] of pending) send(id, p);
}

function stop(): void {
  for (const timer of abandoned.values()) clearTimeout(timer);
  abandoned.clear();
  worker?.terminate();
  worker = undefined;
}

/** The worker died: before it started, no worker can run here; after, its calls fail and the next call starts a new one. */
function failed(why: string): void {
  if (!ready) {
    giveUp(`the library's worker failed to start (${why})`);
    return;
  }
  stop();
  const calls = [...pending.keys()].map((id) => settle(id)!);
  for (const p of calls) p.reject(new HyperAttentionError('WORKER_FAILED', `the library's worker failed while it ran the call: ${why}`));
}

/** No worker here: says so once, and runs the calls handed to one on the calling thread. */
function giveUp(why: string): void {
  unavailable = true;
  stop();
  warn(`${why}, so calls run on the calling thread, which each holds until it is done`);
  const calls = [...pending.keys()].map((id) => settle(id)!);
  for (const p of calls) p.local().then(p.resolve, p.reject);
}

/** The page's `hyperattention.*` localStorage entries; undefined where it has no storage. */
function storageEntries(): Record<string, string> | undefined {
  try {
    const storage = globalThis.localStorage;
    if (!storage) return undefined;
    const entries: Record<string, string> = {};
    for (let i = 0; i < storage.length; i++) {
      const key = storage.key(i);
      if (key?.startsWith(STORAGE_PREFIX)) entries[key] = storage.getItem(key) ?? '';
    }
    return entries;
  } catch {
    return undefined; // a page that forbids storage throws on access
  }
}
