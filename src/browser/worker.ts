// The library's worker in browsers: runs the calls a page hands it (src/browser/proxy.ts)
// on its own copy of the library, so that a long call never holds the page's main thread.
// scripts/build.mjs bundles this file into one self-contained module and embeds its text in
// worker.generated.ts, which the page starts from a Blob URL.
import * as library from '../index.ts';
import type { Progress } from '../options.ts';
import { sendError, type FromWorker, type RemoteName, type RemoteSettings, type ToWorker } from './protocol.ts';

/** The worker's global scope, typed structurally (the project's lib is DOM, not WebWorker). */
const scope = globalThis as unknown as {
  postMessage(message: FromWorker, options?: StructuredSerializeOptions): void;
  addEventListener(type: 'message', listener: (event: MessageEvent<ToWorker>) => void): void;
  localStorage?: unknown;
};

const remote: Record<RemoteName, (...args: unknown[]) => Promise<unknown>> = {
  hyperAttention: library.hyperAttention as (...args: unknown[]) => Promise<unknown>,
  exactAttention: library.exactAttention as (...args: unknown[]) => Promise<unknown>,
  explain: library.explain as (...args: unknown[]) => Promise<unknown>,
  warmup: library.warmup,
  calibrate: library.calibrate,
  getProfile: library.getProfile,
  setProfile: library.setProfile,
};

/** Aborts of calls still running here, by call id. */
const running = new Map<number, AbortController>();

/**
 * Workers have no localStorage, where the scheduler keeps its profile in browsers: this
 * stands in for it, seeded from the page's entries and writing through to the page, so
 * that a profile measured here is not measured again on the next page load.
 */
function installStorage(entries: Record<string, string>): void {
  const items = new Map(Object.entries(entries));
  const write = (key: string, value: string | null) => {
    if (value === null) items.delete(key);
    else items.set(key, value);
    scope.postMessage({ type: 'stored', key, value });
  };
  scope.localStorage = {
    getItem: (key: string) => items.get(key) ?? null,
    setItem: (key: string, value: string) => write(key, String(value)),
    removeItem: (key: string) => write(key, null),
  };
}

function configure(settings: RemoteSettings): void {
  if (settings.scheduler) library.configureScheduler(settings.scheduler);
  if (settings.threads) library.configureThreads(settings.threads);
}

/** Results go back by transfer where they own their buffer; anything else is copied. */
function transferables(value: unknown): Transferable[] {
  const found: Transferable[] = [];
  if (typeof value !== 'object' || value === null) return found;
  for (const part of [(value as { out?: unknown }).out, (value as { lse?: unknown }).lse]) {
    const data = (part as { data?: unknown } | undefined)?.data;
    // (out is a Float32Array, or with outputDtype 'float16' a Uint16Array or Float16Array)
    if (ArrayBuffer.isView(data) && data.buffer instanceof ArrayBuffer && data.byteLength === data.buffer.byteLength) found.push(data.buffer);
  }
  return found;
}

async function run(id: number, name: RemoteName, args: unknown[], progress: boolean): Promise<void> {
  const call = name === 'hyperAttention' || name === 'exactAttention';
  const controller = new AbortController();
  running.set(id, controller);
  try {
    if (call) {
      const onProgress = progress ? (p: Progress) => scope.postMessage({ type: 'progress', id, progress: p }) : undefined;
      args = [args[0], args[1], args[2], { ...(args[3] as object), onProgress, signal: controller.signal }];
    }
    const value = await remote[name](...args);
    scope.postMessage({ type: 'done', id, value }, { transfer: transferables(value) });
  } catch (error) {
    try {
      scope.postMessage({ type: 'failed', id, error: sendError(error) });
    } catch {
      scope.postMessage({ type: 'failed', id, error: { error: new Error(String(error)) } }); // it could not be cloned
    }
  } finally {
    running.delete(id);
  }
}

scope.addEventListener('message', (event) => {
  const message = event.data;
  switch (message.type) {
    case 'start':
      // Warnings (the scheduler's, the threads') reach the page's handler.
      library.configureScheduler({ onWarning: (text) => scope.postMessage({ type: 'warning', message: text }) });
      if (message.storage && scope.localStorage === undefined) installStorage(message.storage);
      configure(message.settings);
      break;
    case 'configure':
      configure(message.settings);
      break;
    case 'call':
      void run(message.id, message.name, message.args, message.progress);
      break;
    case 'abort':
      running.get(message.id)?.abort();
      break;
  }
});
scope.postMessage({ type: 'ready' });
