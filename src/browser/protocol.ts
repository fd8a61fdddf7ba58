// The messages between a page (src/browser/proxy.ts) and the library's worker
// (src/browser/worker.ts), and how an error crosses between them: one module, so that the
// two sides cannot disagree on a name.
import { HyperAttentionError, type ErrorCode } from '../errors.ts';
import type { Progress } from '../options.ts';

/** Functions the worker runs for the page: the calls, and what reads or sets their profile. */
export type RemoteName = 'hyperAttention' | 'exactAttention' | 'explain' | 'warmup' | 'calibrate' | 'getProfile' | 'setProfile';

/** Settings made on the page that the worker's copy of the library must have too. */
export interface RemoteSettings {
  scheduler?: { persist?: boolean };
  threads?: { threads?: number | null };
}

export type ToWorker =
  /**
   * First message to a new worker: the page's `hyperattention.*` localStorage entries
   * (undefined: the page has no storage) and the settings made so far.
   */
  | { type: 'start'; storage: Record<string, string> | undefined; settings: RemoteSettings }
  | { type: 'configure'; settings: RemoteSettings }
  /** progress: whether to report onProgress (a function cannot cross) */
  | { type: 'call'; id: number; name: RemoteName; args: unknown[]; progress: boolean }
  | { type: 'abort'; id: number };

export type FromWorker =
  | { type: 'ready' }
  | { type: 'done'; id: number; value: unknown }
  | { type: 'failed'; id: number; error: SentError }
  | { type: 'progress'; id: number; progress: Progress }
  | { type: 'warning'; message: string }
  /** the worker's scheduler saved (value) or removed (null) a localStorage entry */
  | { type: 'stored'; key: string; value: string | null };

/** Keys of localStorage the worker sees (the scheduler's profile lives under one). */
export const STORAGE_PREFIX = 'hyperattention.';

/**
 * An error as it crosses: the library's by code and message (structured cloning would drop
 * the class and the code), anything else as itself (cloning keeps the built-in error types).
 */
export type SentError = { code: ErrorCode; message: string } | { error: unknown };

export function sendError(error: unknown): SentError {
  return error instanceof HyperAttentionError ? { code: error.code, message: error.message } : { error };
}

export function receiveError(sent: SentError): unknown {
  return 'code' in sent ? new HyperAttentionError(sent.code, sent.message) : sent.error;
}
