// What every bench suite shares: command-line options (--quick), timing (medians of
// repeated runs after a warm-up), progress lines for long runs, memory guards with a clear
// skip message, the machine description, and the results file each suite writes
// (bench/results/<suite>.json; a --quick run writes bench/results/quick/ so that it never
// overwrites the figures docs/results.md is rendered from).
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { getWebGPU } from '../src/runtime/webgpu.ts';

export const BENCH_DIR = dirname(fileURLToPath(import.meta.url));
/** Where results go: bench/results, or HYPERATTENTION_BENCH_RESULTS (the device check's output folder). */
export const RESULTS_DIR = process.env.HYPERATTENTION_BENCH_RESULTS ?? join(BENCH_DIR, 'results');

export const QUICK = process.argv.includes('--quick');

// --- timing ---

export interface Timing {
  medianMs: number;
  minMs: number;
  maxMs: number;
  /** timed samples the median is taken over */
  runs: number;
  /** calls per sample (fast kernels are repeated so that a sample is long enough to time) */
  callsPerRun: number;
  /** false when the first call was so slow that it was kept as the only sample */
  warmup: boolean;
}

export interface MeasureOptions {
  /** stop taking samples once this much time has gone (after at least 3, when they fit) */
  budgetMs: number;
  maxRuns: number;
  /** repeat a fast call until a sample takes at least this long */
  minSampleMs: number;
}

const TIMING: MeasureOptions = QUICK
  ? { budgetMs: 400, maxRuns: 3, minSampleMs: 5 }
  : { budgetMs: 3000, maxRuns: 7, minSampleMs: 20 };

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** A first call longer than this is kept as the only sample (see measure). */
const SINGLE_RUN_MS = 5000;

/**
 * Times `call`. The first call warms up (JIT tiers, wasm memory growth, a peer's arena)
 * and is not counted, unless it alone took longer than SINGLE_RUN_MS: then it is kept as
 * the only sample. Cases run in ascending size, so the code is warm from the smaller ones,
 * one-off allocation is small next to several seconds of arithmetic, and a second
 * minute-long run of a quadratic case would buy nothing.
 */
export async function measure(call: () => Promise<unknown>, opt: MeasureOptions = TIMING): Promise<Timing> {
  let t = performance.now();
  await call();
  const first = performance.now() - t;
  if (first >= SINGLE_RUN_MS) {
    return { medianMs: first, minMs: first, maxMs: first, runs: 1, callsPerRun: 1, warmup: false };
  }
  let warm = first;
  if (first < opt.minSampleMs) {
    // A fast call's first run is mostly JIT: size the samples from a warm one.
    t = performance.now();
    await call();
    warm = performance.now() - t;
  }
  const calls = Math.max(1, Math.ceil(opt.minSampleMs / Math.max(warm, 1e-3)));
  const minRuns = warm * calls * 3 <= opt.budgetMs ? 3 : 1;
  const samples: number[] = [];
  const start = performance.now();
  while (samples.length < opt.maxRuns && (samples.length < minRuns || performance.now() - start < opt.budgetMs)) {
    t = performance.now();
    for (let i = 0; i < calls; i++) await call();
    samples.push((performance.now() - t) / calls);
  }
  return {
    medianMs: median(samples),
    minMs: Math.min(...samples),
    maxMs: Math.max(...samples),
    runs: samples.length,
    callsPerRun: calls,
    warmup: true,
  };
}

// --- work counts ---

/** Flops of exact attention: 2 (d + dv) per (query, key) pair; causal keeps n (n + 1) / 2 pairs. */
export function attentionFlops(nq: number, nk: number, d: number, dv: number, causal: boolean): number {
  const pairs = causal ? (nq * (nq + 1)) / 2 : nq * nk;
  return 2 * (d + dv) * pairs;
}

export const gflops = (flops: number, ms: number): number => flops / (ms * 1e6);

// --- memory ---

const WASM32_LIMIT = 4 * 2 ** 30;

/**
 * Null when `bytes` fits both this machine's free memory (with headroom for the runtime)
 * and, for a wasm32 heap, its 4 GiB address space; else the reason to print and record.
 */
export function memoryShortfall(bytes: number, wasm32: boolean): string | null {
  const gib = (b: number) => `${(b / 2 ** 30).toFixed(1)} GiB`;
  if (wasm32 && bytes > WASM32_LIMIT) return `needs about ${gib(bytes)}, over the 4 GiB of a wasm32 heap`;
  const free = os.freemem() * 0.9;
  if (bytes > free) return `needs about ${gib(bytes)}, more than the ${gib(free)} this machine can spare`;
  return null;
}

// --- machine ---

export interface AdapterInfo {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  isFallbackAdapter: boolean;
}

export interface Machine {
  cpu: string;
  cores: number;
  memoryGiB: number;
  os: string;
  node: string;
  v8: string;
  /** load average when the suite started: a busy machine makes noisy figures */
  loadAverage: number[];
  gitCommit: string | null;
  peers: Record<string, string | null>;
  adapter: AdapterInfo | null;
  /** why there is no adapter, when there is none */
  adapterNote?: string;
}

/** The WebGPU adapter this process would get, or why there is none. */
async function describeAdapter(): Promise<{ adapter: AdapterInfo | null; note?: string }> {
  try {
    const gpu = await getWebGPU();
    if (!gpu) return { adapter: null, note: 'no WebGPU in this runtime (the `webgpu` package did not load)' };
    const a = await gpu.requestAdapter({ powerPreference: 'high-performance' });
    if (!a) return { adapter: null, note: 'requestAdapter() found no adapter (no GPU, or no Vulkan driver Dawn accepts)' };
    const info = a.info;
    return {
      adapter: {
        vendor: info.vendor,
        architecture: info.architecture,
        device: info.device,
        description: info.description,
        // isFallbackAdapter moved from the adapter to its info; read whichever this runtime has.
        isFallbackAdapter: Boolean((info as { isFallbackAdapter?: boolean }).isFallbackAdapter ?? (a as { isFallbackAdapter?: boolean }).isFallbackAdapter),
      },
    };
  } catch (error) {
    return { adapter: null, note: `WebGPU failed: ${(error as Error).message}` };
  }
}

function gitCommit(): string | null {
  try {
    return execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: BENCH_DIR, stdio: ['ignore', 'pipe', 'ignore'] })
      .toString()
      .trim();
  } catch {
    return null; // not a git checkout, or no commit yet
  }
}

export async function describeMachine(peers: Record<string, string | null> = {}): Promise<Machine> {
  const cpus = os.cpus();
  const { adapter, note } = await describeAdapter();
  return {
    cpu: cpus[0]?.model.trim() ?? 'unknown',
    cores: cpus.length,
    memoryGiB: Math.round(os.totalmem() / 2 ** 30),
    os: `${os.type()} ${os.release()} ${os.arch()}`,
    node: process.version,
    v8: process.versions.v8,
    loadAverage: os.loadavg().map((x) => Math.round(x * 100) / 100),
    gitCommit: gitCommit(),
    peers,
    adapter,
    ...(note ? { adapterNote: note } : {}),
  };
}

// --- results and progress ---

export type Params = Record<string, string | number | boolean>;

export interface CaseResult {
  /** what ran, e.g. 'hyper' or 'onnxruntime-node MultiHeadAttention' */
  method: string;
  /** 'cpu' | 'webgpu' | 'peer' */
  backend: string;
  params: Params;
  status: 'ok' | 'skipped' | 'failed';
  reason?: string;
  time?: Timing;
  metrics?: Record<string, number>;
}

export interface SuiteResults {
  suite: string;
  quick: boolean;
  startedAt: string;
  durationS: number;
  machine: Machine;
  /** what the suite chose not to run and why; peers that are missing */
  notes: string[];
  cases: CaseResult[];
}

function formatDuration(ms: number): string {
  const s = Math.round(ms / 1000);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, '0')}`;
}

export function formatMs(ms: number): string {
  if (ms >= 1000) return `${(ms / 1000).toFixed(2)} s`;
  if (ms >= 10) return `${ms.toFixed(0)} ms`;
  if (ms >= 1) return `${ms.toFixed(2)} ms`;
  return `${(ms * 1000).toFixed(0)} µs`;
}

/** Rows per second, readable at any magnitude. */
export function formatRate(perS: number): string {
  if (perS >= 1e6) return `${(perS / 1e6).toFixed(1)} M`;
  if (perS >= 1e3) return `${(perS / 1e3).toFixed(1)} k`;
  return perS.toFixed(0);
}

function describeParams(p: Params): string {
  return Object.entries(p)
    .map(([k, v]) => (typeof v === 'boolean' ? (v ? k : `non-${k}`) : `${k}=${v}`))
    .join(' ');
}

/** Output of one case: the timing to record and any figures derived from the result. */
export interface CaseOutcome {
  time?: Timing;
  metrics?: Record<string, number>;
  /** printed after the time, e.g. '21.3 GFLOP/s' */
  summary?: string;
}

/**
 * Collects a suite's cases, prints one progress line per case (which case, how many are
 * left, elapsed time), and rewrites the results file after every case so that an
 * interrupted long run keeps what it measured.
 */
export class Recorder {
  private readonly results: SuiteResults;
  private readonly started = performance.now();
  private done = 0;
  private readonly failures: string[] = [];

  constructor(
    readonly suite: string,
    private readonly total: number,
    machine: Machine,
  ) {
    this.results = {
      suite,
      quick: QUICK,
      startedAt: new Date().toISOString(),
      durationS: 0,
      machine,
      notes: [],
      cases: [],
    };
    const load = machine.loadAverage[0];
    const busy = load > 0.5 ? ` (load average ${load}: timings will be noisy)` : '';
    console.log(`\n${suite}: ${total} cases, ${QUICK ? 'quick run' : 'full run'}${busy}`);
  }

  /** Something the reader of the results must know (a missing peer, a cap on n). */
  note(message: string): void {
    this.results.notes.push(message);
    console.log(`  note: ${message}`);
    this.write();
  }

  private line(c: Omit<CaseResult, 'status'>, text: string): void {
    this.done++;
    const label = `${this.suite} ${this.done}/${this.total}, ${this.total - this.done} left, ${formatDuration(performance.now() - this.started)}`;
    console.log(`  [${label}] ${c.method} ${c.backend} ${describeParams(c.params)}: ${text}`);
  }

  skip(c: Omit<CaseResult, 'status'>, reason: string): void {
    this.line(c, `skipped: ${reason}`);
    this.push({ ...c, status: 'skipped', reason });
  }

  /**
   * Runs one case. A failure is recorded, printed, and (unless `expectFailures`, for peers
   * whose limits we document rather than fix) reported by `assertNoFailures` at the end.
   * Running out of memory records a skip with the reason.
   */
  async run(c: Omit<CaseResult, 'status'>, body: () => Promise<CaseOutcome>, expectFailures = false): Promise<CaseOutcome | null> {
    try {
      const outcome = await body();
      const t = outcome.time;
      const runs = t && (t.runs === 1 ? '1 run' : `median of ${t.runs}${t.callsPerRun > 1 ? ` x ${t.callsPerRun} calls` : ''}`);
      const timing = t ? `${formatMs(t.medianMs)} (${runs})` : '';
      this.line(c, [timing, outcome.summary].filter(Boolean).join(', '));
      this.push({ ...c, status: 'ok', time: outcome.time, metrics: outcome.metrics });
      return outcome;
    } catch (error) {
      // Peers put paths and newlines in their messages: one line is enough to say what failed.
      const message = (error instanceof Error ? error.message : String(error)).replace(/\s+/g, ' ').trim();
      if (isOutOfMemory(error)) {
        this.skip(c, `out of memory: ${message}`);
        return null;
      }
      this.line(c, `FAILED: ${message}`);
      this.push({ ...c, status: 'failed', reason: message });
      if (!expectFailures) this.failures.push(`${c.method} ${c.backend} ${describeParams(c.params)}: ${message}`);
      return null;
    }
  }

  private push(c: CaseResult): void {
    this.results.cases.push(c);
    this.write();
  }

  get cases(): readonly CaseResult[] {
    return this.results.cases;
  }

  write(): void {
    this.results.durationS = Math.round((performance.now() - this.started) / 100) / 10;
    const dir = QUICK ? join(RESULTS_DIR, 'quick') : RESULTS_DIR;
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, `${this.suite}.json`), JSON.stringify(this.results, null, 1) + '\n');
  }

  /** Throws (failing the uvu test) when one of our own cases failed. */
  assertNoFailures(): void {
    if (this.failures.length) throw new Error(`${this.failures.length} case(s) failed:\n  ${this.failures.join('\n  ')}`);
  }

  finish(): void {
    this.write();
    const where = join(QUICK ? 'bench/results/quick' : 'bench/results', `${this.suite}.json`);
    console.log(`  ${this.suite}: ${this.done} cases in ${formatDuration(performance.now() - this.started)}, written to ${where}`);
  }
}

function isOutOfMemory(error: unknown): boolean {
  if ((error as { code?: string })?.code === 'OUT_OF_MEMORY') return true;
  return error instanceof RangeError && /memory|allocat|array buffer/i.test(error.message);
}
