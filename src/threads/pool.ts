// The pool of WebAssembly worker threads (Node worker_threads; Web Workers in browsers and
// Deno), shared by every call. Each call in flight has its own arena: a shared memory with a
// kernel instance in every worker. An op is a batch of jobs that `threads` workers claim
// one at a time; the pool resolves it once every job has run. A worker that dies or fails
// rejects the batches it had (WORKER_FAILED), their arenas are never reused (a job of theirs
// may still be writing), and a fresh worker takes its place, also when it died before it
// ever ran. Idle Node workers are unref'd, so that they never keep a process alive. An idle
// worker's heap is seldom collected, so it would hold every dropped arena's memory for good:
// once the dropped arenas add up to RECYCLE_BYTES, each worker is replaced when next idle.
import { HyperAttentionError } from '../errors.ts';
import { WORKER_SOURCE } from './worker.generated.ts';

/** Worker deaths the pool replaces; past them it is broken (see ThreadPool.broken). */
const MAX_DEATHS = 64;
/** Workers in a row that die before they run: then the runtime cannot start them (a page's policy, say), and the pool is broken. */
const MAX_START_FAILURES = 3;
/** Memory of dropped arenas the workers may hold before they are replaced (see above). */
const RECYCLE_BYTES = 256 * 1024 * 1024;

// A batch's control words; see worker.ts.
const STOP = 2;
const FAILED = 3;

/** What the pool needs of a worker, whatever the runtime. */
interface WorkerLike {
  postMessage(message: unknown): void;
  terminate(): unknown;
  /** Node: let the process exit while this worker is idle, or not */
  ref?(): void;
  unref?(): void;
}

type Reply = { type: 'ready' } | { type: 'done'; id: number } | { type: 'error'; id: number; message: string };
type Spawn = (onReply: (reply: Reply) => void, onDeath: (why: string) => void) => WorkerLike;

interface Slot {
  worker: WorkerLike;
  /** batches sent to it and not settled */
  batches: Set<number>;
  dead: boolean;
  /** whether it has said it runs */
  running: boolean;
  /** settles once the worker runs (its first message), or rejects if it dies first */
  ready: Promise<void>;
  started: () => void;
  failed: (why: string) => void;
}

interface Pending {
  resolve: () => void;
  reject: (error: unknown) => void;
  control: Int32Array;
  arena: number;
  slots: Slot[];
  done: boolean;
  failure?: string;
}

interface Arena {
  flavour: string;
  bytes: Uint8Array<ArrayBuffer>;
  memory: WebAssembly.Memory;
}

/** One op's jobs: `count` calls of kernel `fn`, argc numbers each, from the arena's instance. */
export interface BatchSpec {
  fn: string;
  jobs: Float64Array;
  argc: number;
  /** argument positions that get participant * stride added (each thread's scratch) */
  offsets: number[];
  stride: number;
}

export class ThreadPool {
  private readonly slots: Slot[] = [];
  private readonly arenas = new Map<number, Arena>();
  private readonly poisoned = new Set<number>();
  private readonly pending = new Map<number, Pending>();
  private nextArena = 1;
  private nextBatch = 1;
  private deaths = 0;
  private startFailures = 0;
  private starts = 0;
  /** bytes of arenas dropped since the workers were last replaced */
  private dropped = 0;
  /** workers that may hold dropped arenas: replaced once idle */
  private readonly stale = new Set<Slot>();
  /** why the pool stopped replacing workers, once they died too often: calls then run on one thread */
  broken: string | undefined;

  constructor(private readonly spawn: Spawn) {}

  /** Workers running or starting now. */
  get size(): number {
    return this.slots.length;
  }

  /** Workers ever started, replacements included (what a worker per call would show). */
  get started(): number {
    return this.starts;
  }

  /** Starts workers until there are n. */
  grow(n: number): void {
    while (this.slots.length < n) this.slots.push(this.start());
  }

  /**
   * Starts workers until there are n and waits until they run. Rejects, and breaks the pool
   * (see broken), where a worker cannot start: a runtime, or a page's Content-Security-Policy,
   * that refuses it; calls then run on one thread.
   */
  async ready(n: number): Promise<void> {
    // A worker that dies before it runs is replaced (onDeath): wait for the replacement.
    for (;;) {
      if (this.broken) throw new Error(this.broken);
      try {
        this.grow(n);
      } catch (error) {
        this.broken ??= `a worker could not start: ${(error as Error)?.message ?? error}`;
        throw error;
      }
      const started = await Promise.allSettled(this.slots.slice(0, n).map((slot) => slot.ready));
      if (started.every((s) => s.status === 'fulfilled')) return;
    }
  }

  private start(): Slot {
    this.starts++;
    const slot = { batches: new Set(), dead: false, running: false } as Partial<Slot> as Slot;
    slot.ready = new Promise<void>((resolve, reject) => {
      slot.started = resolve;
      slot.failed = (why) => reject(new Error(why));
    });
    slot.ready.catch(() => {});
    // Held (ref'd) until it runs: a caller awaiting ready() keeps the process alive meanwhile.
    slot.worker = this.spawn((reply) => {
      if (reply.type === 'ready' && slot.batches.size === 0) slot.worker.unref?.();
      slot.running = true;
      this.startFailures = 0;
      slot.started();
      this.onReply(reply);
    }, (why) => this.onDeath(slot, why));
    for (const [id, arena] of this.arenas) slot.worker.postMessage({ type: 'arena', id, ...arena });
    return slot;
  }

  /** Makes `memory` an arena: every worker instantiates the kernels of `bytes` over it. */
  addArena(flavour: string, bytes: Uint8Array<ArrayBuffer>, memory: WebAssembly.Memory): number {
    const id = this.nextArena++;
    const arena = { flavour, bytes, memory };
    this.arenas.set(id, arena);
    for (const slot of this.slots) slot.worker.postMessage({ type: 'arena', id, ...arena });
    return id;
  }

  /** The workers let go of the arena's memory (and are replaced once enough of it adds up, see above). */
  dropArena(id: number): void {
    this.dropped += this.arenas.get(id)?.memory.buffer.byteLength ?? 0;
    this.arenas.delete(id);
    this.poisoned.delete(id);
    for (const slot of this.slots) slot.worker.postMessage({ type: 'drop', id });
    if (this.dropped < RECYCLE_BYTES) return;
    this.dropped = 0;
    for (const slot of this.slots) this.stale.add(slot);
    this.recycleIdle();
  }

  /** Replaces the stale workers that run nothing now; the others when their batches settle. */
  private recycleIdle(): void {
    for (const slot of this.stale) {
      if (slot.batches.size > 0 || !slot.running) continue;
      this.stale.delete(slot);
      const index = this.slots.indexOf(slot);
      slot.dead = true; // its exit is no death
      slot.worker.terminate();
      if (index >= 0) this.slots[index] = this.start();
    }
  }

  /** Whether a failed worker may have left a job of this arena running: then it must not be reused. */
  isPoisoned(arena: number): boolean {
    return this.poisoned.has(arena);
  }

  /**
   * Runs a batch on `threads` workers (the least busy, started as needed) over the arena.
   * `stop` set before or while it runs skips the jobs not yet started; the batch then
   * resolves once the running ones have finished.
   */
  run(arena: number, threads: number, spec: BatchSpec, stop?: { control?: Int32Array }): Promise<void> {
    const count = spec.jobs.length / spec.argc;
    if (count === 0) return Promise.resolve();
    this.grow(threads);
    const control = new Int32Array(new SharedArrayBuffer(16));
    if (stop) stop.control = control;
    const id = this.nextBatch++;
    const slots = [...this.slots].sort((a, b) => a.batches.size - b.batches.size).slice(0, threads);
    return new Promise<void>((resolve, reject) => {
      this.pending.set(id, { resolve, reject, control, arena, slots, done: false });
      for (const [part, slot] of slots.entries()) {
        if (slot.batches.size === 0) slot.worker.ref?.();
        slot.batches.add(id);
        slot.worker.postMessage({
          type: 'batch', id, arena, fn: spec.fn, jobs: spec.jobs, argc: spec.argc, count,
          offsets: spec.offsets, stride: spec.stride, part, control,
        });
      }
    });
  }

  private onReply(reply: Reply): void {
    if (reply.type === 'ready') return;
    const batch = this.pending.get(reply.id);
    if (!batch) return;
    if (reply.type === 'error') batch.failure = reply.message;
    else batch.done = true;
    // A failed job sets FAILED before it counts as done: wait for its message too.
    if (!batch.done || (Atomics.load(batch.control, FAILED) !== 0 && batch.failure === undefined)) return;
    this.settle(reply.id, batch, batch.failure === undefined
      ? undefined
      : new HyperAttentionError('WORKER_FAILED', `a WebAssembly worker failed while it ran the call: ${batch.failure}`));
  }

  private settle(id: number, batch: Pending, error: unknown): void {
    this.pending.delete(id);
    for (const slot of batch.slots) {
      slot.batches.delete(id);
      if (slot.batches.size === 0) slot.worker.unref?.();
    }
    if (this.stale.size > 0) this.recycleIdle();
    if (error) batch.reject(error);
    else batch.resolve();
  }

  private onDeath(slot: Slot, why: string): void {
    if (slot.dead) return;
    slot.dead = true;
    slot.failed(why);
    slot.worker.terminate();
    this.stale.delete(slot);
    const index = this.slots.indexOf(slot);
    if (!slot.running && ++this.startFailures >= MAX_START_FAILURES) this.broken ??= `a worker could not start: ${why}`;
    // Workers that keep dying (a runtime that cannot start them) are not replaced forever.
    if (this.broken || ++this.deaths > MAX_DEATHS) {
      this.broken ??= `workers died ${this.deaths} times (last: ${why})`;
      if (index >= 0) this.slots.splice(index, 1);
    } else if (index >= 0) {
      this.slots[index] = this.start();
    }
    for (const id of slot.batches) {
      const batch = this.pending.get(id);
      if (!batch) continue;
      Atomics.store(batch.control, STOP, 1);
      this.poisoned.add(batch.arena);
      batch.slots = batch.slots.filter((s) => s !== slot);
      this.settle(id, batch, new HyperAttentionError('WORKER_FAILED', `a WebAssembly worker stopped while it ran the call (${why}); it was replaced`));
    }
  }

  /** Test hook: ends worker `index` as a crash would. */
  killWorker(index: number): void {
    const slot = this.slots[index];
    if (slot) {
      slot.worker.terminate();
      this.onDeath(slot, 'terminated');
    }
  }
}

/** Stops the jobs of a batch not yet started (see ThreadPool.run). */
export function stopBatch(stop: { control?: Int32Array }): void {
  if (stop.control) Atomics.store(stop.control, STOP, 1);
}

/** The part of Node's worker_threads Worker the pool uses. */
type NodeWorkerClass = new (code: string, options: { eval: true; execArgv: string[] }) => WorkerLike & {
  on(event: 'message', listener: (reply: Reply) => void): void;
  on(event: 'error', listener: (error: Error) => void): void;
  on(event: 'exit', listener: (code: number) => void): void;
};

/**
 * The runtime's way to start a worker from WORKER_SOURCE, or why there is none: Node's
 * worker_threads (eval; Node and Deno), else Web Workers from a Blob URL (browsers).
 */
async function spawner(): Promise<Spawn | string> {
  const node = (globalThis as { process?: { versions?: { node?: string } } }).process?.versions?.node;
  // Deno has worker_threads too, and only there can a worker be unref'd.
  if (node) {
    const { Worker } = (await import(/* @vite-ignore */ ['node', 'worker_threads'].join(':'))) as { Worker: NodeWorkerClass };
    const code = `${WORKER_SOURCE}\nhyperattentionWorker.serve(require(['node', 'worker_threads'].join(':')).parentPort);\n`;
    return (onReply, onDeath) => {
      // execArgv: []: not the parent's flags (--input-type=module would make this an ES module).
      const worker = new Worker(code, { eval: true, execArgv: [] });
      worker.on('message', onReply);
      worker.on('error', (error) => onDeath(error.message));
      worker.on('exit', (code) => onDeath(`exit code ${code}`));
      return worker;
    };
  }
  if (typeof Worker === 'undefined' || typeof Blob === 'undefined' || typeof URL?.createObjectURL !== 'function') {
    return 'this runtime has no Worker';
  }
  const url = URL.createObjectURL(new Blob([`${WORKER_SOURCE}\nhyperattentionWorker.serve(self);\n`], { type: 'text/javascript' }));
  return (onReply, onDeath) => {
    const worker = new Worker(url, { type: 'module', name: 'hyperattention-kernels' });
    worker.onmessage = (event: MessageEvent<Reply>) => onReply(event.data);
    worker.onerror = (event: ErrorEvent) => {
      event.preventDefault();
      onDeath(event.message || 'error');
    };
    return worker;
  };
}

/**
 * Why this runtime cannot run WebAssembly threads, or undefined when it can: shared memory
 * needs SharedArrayBuffer and, in browsers, a cross-origin-isolated page.
 */
export function threadsUnavailable(): string | undefined {
  const isolated = (globalThis as { crossOriginIsolated?: boolean }).crossOriginIsolated;
  if (isolated === false) {
    return 'the page is not cross-origin isolated (it needs the headers Cross-Origin-Opener-Policy: same-origin and Cross-Origin-Embedder-Policy: require-corp)';
  }
  if (typeof SharedArrayBuffer === 'undefined') return 'SharedArrayBuffer is not available';
  return undefined;
}

let pool: Promise<ThreadPool | string> | undefined;

/** The process's pool, or why there is none. */
export function threadPool(): Promise<ThreadPool | string> {
  pool ??= (async () => {
    const why = threadsUnavailable();
    if (why) return why;
    const spawn = await spawner();
    return typeof spawn === 'string' ? spawn : new ThreadPool(spawn);
  })().catch((error: unknown) => `workers could not start: ${(error as Error).message}`);
  return pool;
}
