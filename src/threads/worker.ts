// The code of each WebAssembly worker thread (the pool in pool.ts starts it from text, see
// scripts/build.mjs, then calls serve with its port). A worker holds one kernel instance per
// arena (a shared memory, one per call in flight) and runs batches: the jobs of one op,
// claimed one at a time through an atomic counter, so that fast threads take more. It
// never allocates in the shared memory: its scratch is the region the main thread set
// aside for its participant index. Self-contained: no imports.

/** A batch's control words (Int32Array over a SharedArrayBuffer). */
const CLAIMED = 0;
const DONE = 1;
/** set by the caller (abort) or by a failing job: the remaining jobs are skipped */
const STOP = 2;
/** set before DONE counts a failed job, so that the caller knows to wait for the message */
const FAILED = 3;

interface Batch {
  type: 'batch';
  id: number;
  arena: number;
  fn: string;
  /** count jobs of argc arguments each */
  jobs: Float64Array;
  argc: number;
  count: number;
  /** argument positions that get part * stride added: this participant's scratch */
  offsets: number[];
  stride: number;
  part: number;
  control: Int32Array;
}

type Message =
  | { type: 'arena'; id: number; flavour: string; bytes: Uint8Array<ArrayBuffer>; memory: WebAssembly.Memory }
  | { type: 'drop'; id: number }
  | Batch;

interface Port {
  postMessage(message: unknown): void;
  on?(event: 'message', listener: (message: Message) => void): void;
  onmessage?: ((event: { data: Message }) => void) | null;
}

type Kernel = (...args: number[]) => void;

export function serve(port: Port): void {
  const modules = new Map<string, WebAssembly.Module>();
  const arenas = new Map<number, Record<string, Kernel>>();
  /** arenas whose kernels did not instantiate here, and why: their batches fail with it */
  const broken = new Map<number, string>();

  const imports = (memory: WebAssembly.Memory) => ({
    env: {
      memory,
      abort(_message: number, _file: number, line: number, column: number) {
        throw new Error(`hyperattention wasm kernel aborted at ${line}:${column}`);
      },
    },
  });

  const run = (b: Batch) => {
    const kernels = arenas.get(b.arena);
    const kernel = kernels?.[b.fn];
    // The caller may have grown the shared memory since this thread last ran on it: growing
    // by nothing here makes this thread's instance take the new size before it reads there.
    (kernels?.memory as unknown as WebAssembly.Memory | undefined)?.grow(0);
    const args: number[] = new Array(b.argc);
    for (;;) {
      const j = Atomics.add(b.control, CLAIMED, 1);
      if (j >= b.count) return;
      if (Atomics.load(b.control, STOP) === 0) {
        try {
          if (!kernel) throw new Error(broken.get(b.arena) ?? `no kernel ${b.fn} for arena ${b.arena}`);
          for (let a = 0; a < b.argc; a++) args[a] = b.jobs[j * b.argc + a];
          for (const a of b.offsets) args[a] += b.part * b.stride;
          kernel(...args);
        } catch (error) {
          Atomics.store(b.control, STOP, 1);
          Atomics.store(b.control, FAILED, 1);
          port.postMessage({ type: 'error', id: b.id, message: (error as Error)?.message ?? String(error) });
        }
      }
      if (Atomics.add(b.control, DONE, 1) + 1 === b.count) port.postMessage({ type: 'done', id: b.id });
    }
  };

  const handle = (message: Message) => {
    if (message.type === 'arena') {
      try {
        let module = modules.get(message.flavour);
        if (!module) {
          module = new WebAssembly.Module(message.bytes);
          modules.set(message.flavour, module);
        }
        const instance = new WebAssembly.Instance(module, imports(message.memory));
        arenas.set(message.id, instance.exports as unknown as Record<string, Kernel>);
      } catch (error) {
        // Not a reason to die (a fresh worker would fail the same way): the arena's batches fail instead.
        broken.set(message.id, `the ${message.flavour} kernels did not instantiate in a worker: ${(error as Error)?.message ?? error}`);
      }
    } else if (message.type === 'drop') {
      arenas.delete(message.id);
      broken.delete(message.id);
    } else {
      run(message);
    }
  };

  if (port.on) port.on('message', handle);
  else port.onmessage = (event) => handle(event.data);
  port.postMessage({ type: 'ready' });
}
