// The one error class the library throws, with a machine-readable code. Messages say what
// was expected and what was given.

export type ErrorCode =
  | 'INVALID_SHAPE'
  | 'INVALID_OPTION'
  | 'NON_FINITE_INPUT'
  /** finite inputs whose scores or value sums would overflow float32 */
  | 'INPUT_OVERFLOW'
  | 'UNSUPPORTED_HEAD_DIM'
  | 'INVALID_SAMPLER_OUTPUT'
  | 'UNSUPPORTED'
  | 'OUT_OF_MEMORY'
  | 'DEVICE_LOST'
  | 'GPU_ERROR'
  | 'INVALID_PROFILE'
  /** the call's `signal` was aborted: the call stopped and freed what it held */
  | 'ABORTED'
  /** a WebAssembly worker thread died or failed while it ran the call; the pool replaced it */
  | 'WORKER_FAILED'
  /** a key-value cache's append would go past its capacity (src/cache.ts) */
  | 'CACHE_FULL'
  /** a key-value cache was used after its release() */
  | 'CACHE_RELEASED'
  /** a key-value cache was truncated or released while a call or an append on it was pending */
  | 'CACHE_BUSY'
  /** a call's queries (or appended keys and values) disagree with the cache's batch, heads or head dims */
  | 'CACHE_MISMATCH';

export class HyperAttentionError extends Error {
  readonly code: ErrorCode;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'HyperAttentionError';
    this.code = code;
  }
}

/** The rejection of a call whose signal was aborted, with the signal's reason (on the calling thread and in the browser build's worker alike). */
export function abortedError(signal: AbortSignal | undefined): HyperAttentionError {
  const reason = signal?.reason instanceof Error ? `: ${signal.reason.message}` : '';
  return new HyperAttentionError('ABORTED', `the call was aborted through its signal${reason}`, { cause: signal?.reason });
}

/**
 * An engine's failure to allocate (RangeError "Array buffer allocation failed", WebAssembly's
 * "Out of memory: Cannot allocate Wasm memory", a memory that cannot grow) as OUT_OF_MEMORY;
 * any other error as it is. Every allocation of a call can meet it (its result, its copies,
 * a kernel instance), so calls map it where they settle.
 */
export function typedFailure(error: unknown): unknown {
  if (!(error instanceof RangeError) || !/allocation failed|out of memory|cannot allocate|could not allocate/i.test(error.message)) return error;
  return new HyperAttentionError('OUT_OF_MEMORY', `the runtime could not allocate the memory the call needs: ${error.message}`, { cause: error });
}

/** The work's failures as typedFailure makes them. */
export function typedFailures<T>(work: Promise<T>): Promise<T> {
  return work.catch((error: unknown) => Promise.reject(typedFailure(error)));
}
