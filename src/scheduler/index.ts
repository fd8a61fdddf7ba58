// The scheduler: for each call with backend 'auto', which backend split runs it and how much
// of it runs exact, from the cost model (cost.ts) on a profile of the devices at hand
// (profile.ts). Profiles are measured on first use or by warmup() (calibrate.ts, about half
// a second on WebAssembly; software GPU adapters are not timed for 'auto'), cached per
// environment, and persisted so that a new process or page load does not measure again: a
// file named by the caller, else localStorage where the runtime has it (browsers, Deno),
// else a file per environment in the per-user cache folder (Node; Deno when permitted).
import { acquireCpu, gpuBackend, hybridBackend, serialize, threadsAvailable } from '../backends.ts';
import type { CpuBackend } from '../cpu/backend.ts';
import { describeValue } from '../describe.ts';
import { HyperAttentionError } from '../errors.ts';
import type { WebGPUBackend } from '../gpu/index.ts';
import { COST_CLASS, type Backend, type CostClass, type Device, type OpTrace } from '../ops.ts';
import { planParams, type Plan } from '../plan.ts';
import {
  resolveExactOptions, resolveHyperOptions, type ExactOptions, type HyperOptions, type ResolvedExactOptions,
  type ResolvedHyperOptions,
} from '../options.ts';
import { attentionShapeOf, type AttentionShape } from '../tensor.ts';
import { threadsFor } from '../threads/config.ts';
import { setWarningHandler, warn } from '../warnings.ts';
import { calibrateBackend } from './calibrate.ts';
import { choose, choosePlan, SPLITS, type ChooseParams, type Explanation, type Split } from './cost.ts';
import {
  environmentKey, parseProfile, PROFILE_FORMAT, PROFILE_VERSION, type DeviceCosts, type Environment, type Profile,
} from './profile.ts';

export interface SchedulerConfig {
  /**
   * Node and Deno: a JSON file the profile is read from and saved to (Deno needs read and
   * write permission for it); null: no file (memory, and localStorage where the runtime has
   * it). Default: localStorage where the runtime has it (browsers, Deno), else one file per
   * environment in the per-user cache folder: `$HYPERATTENTION_CACHE_DIR` if set, else
   * `$XDG_CACHE_HOME/hyperattention` or `~/.cache/hyperattention` (Linux and others),
   * `~/Library/Caches/hyperattention` (macOS), `%LOCALAPPDATA%\hyperattention` (Windows);
   * Deno uses it only with env, read and write permission already granted.
   */
  profilePath?: string | null;
  /** save calibrated profiles (default true) */
  persist?: boolean;
  /**
   * where the library reports what it works around: a saved profile it rejects, threads it
   * cannot have (default console.warn)
   */
  onWarning?: (message: string) => void;
}

const STORAGE_KEY = 'hyperattention.profile';

/** profilePath undefined: the default (see SchedulerConfig). */
const config: Omit<Required<SchedulerConfig>, 'profilePath' | 'onWarning'> & { profilePath: string | null | undefined } = {
  profilePath: undefined,
  persist: true,
};

/** Sets where profiles persist and how rejections are reported; unset fields stay as they are. */
export function configureScheduler(options: SchedulerConfig): void {
  const { profilePath, persist, onWarning } = options;
  const allowed = ['profilePath', 'persist', 'onWarning'];
  for (const key of Object.keys(options)) {
    if (!allowed.includes(key)) throw new HyperAttentionError('INVALID_OPTION', `unknown scheduler option '${key}'; expected one of: ${allowed.join(', ')}`);
  }
  if (profilePath !== undefined && profilePath !== null && (typeof profilePath !== 'string' || profilePath === '')) {
    throw new HyperAttentionError('INVALID_OPTION', `profilePath: expected a file path or null, got ${describeValue(profilePath)}`);
  }
  if (persist !== undefined && typeof persist !== 'boolean') throw new HyperAttentionError('INVALID_OPTION', `persist: expected a boolean, got ${describeValue(persist)}`);
  if (onWarning !== undefined && typeof onWarning !== 'function') throw new HyperAttentionError('INVALID_OPTION', `onWarning: expected a function, got ${describeValue(onWarning)}`);
  if (profilePath !== undefined) {
    config.profilePath = profilePath;
    unusable.clear();
  }
  if (persist !== undefined) config.persist = persist;
  if (onWarning !== undefined) setWarningHandler(onWarning);
}

/** Profiles in use, per environment key. */
const profiles = new Map<string, Profile>();

interface Devices {
  cpu: CpuBackend;
  gpu: WebGPUBackend | undefined;
  env: Environment;
}

let sharedDevices: Promise<Devices> | undefined;

function runtimeName(): string {
  const g = globalThis as {
    Deno?: { version?: { deno?: string } };
    process?: { versions?: { node?: string } };
    navigator?: { userAgent?: string };
  };
  if (g.Deno?.version?.deno) return `deno ${g.Deno.version.deno}`;
  if (g.process?.versions?.node) return `node ${g.process.versions.node}`;
  return g.navigator?.userAgent ?? 'unknown runtime';
}

/**
 * A Node built-in (also in Deno, through its Node compatibility). The specifier is built at
 * run time, like the `webgpu` import, so that browser bundles leave it alone and never name it.
 */
function nodeBuiltin<T>(name: string): Promise<T> {
  const specifier = ['node', name].join(':');
  return import(/* @vite-ignore */ specifier) as Promise<T>;
}

let cpuModelOnce: Promise<{ name: string; count: number } | undefined> | undefined;

/** The CPU's model and count where the runtime has node:os (Node, Deno); browsers do not tell. */
function cpuModel(): Promise<{ name: string; count: number } | undefined> {
  cpuModelOnce ??= (async () => {
    const g = globalThis as { process?: { versions?: { node?: string } }; Deno?: unknown };
    if (!g.process?.versions?.node && !g.Deno) return undefined;
    try {
      const cpus = (await nodeBuiltin<{ cpus(): { model: string }[] }>('os')).cpus();
      return cpus.length > 0 ? { name: `${cpus[0].model.trim()} x${cpus.length}`, count: cpus.length } : undefined;
    } catch {
      return undefined;
    }
  })();
  return cpuModelOnce;
}

async function environmentOf(cpu: CpuBackend, gpu: WebGPUBackend | undefined): Promise<Environment> {
  const model = await cpuModel();
  const threads = (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator?.hardwareConcurrency ?? model?.count;
  let adapter: Environment['adapter'] = null;
  if (gpu) {
    const info: Partial<GPUAdapterInfo> & { isFallbackAdapter?: boolean } = (gpu.device as Partial<GPUDevice>).adapterInfo ?? {};
    const identity = {
      vendor: info.vendor ?? '', architecture: info.architecture ?? '', device: info.device ?? '', description: info.description ?? '',
    };
    // Not every runtime reports isFallbackAdapter; the software rasterisers name themselves.
    const named = /swiftshader|llvmpipe|lavapipe|softpipe|warp|basic render/i.test(Object.values(identity).join(' '));
    adapter = {
      ...identity,
      fallback: info.isFallbackAdapter === true || named,
      maxBufferBytes: gpu.device.limits.maxBufferSize,
      maxBindingBytes: gpu.device.limits.maxStorageBufferBindingSize,
    };
  }
  return {
    runtime: runtimeName(), wasm: cpu.flavour, cpu: model?.name ?? null, threads: typeof threads === 'number' ? threads : null,
    wasmThreads: cpu.threads, adapter,
  };
}

let calibrationCpu: Promise<CpuBackend> | undefined;

/** The WebAssembly backend calibration measures: on the default thread count (the pool's, where the runtime has threads). */
function measuredCpu(): Promise<CpuBackend> {
  calibrationCpu ??= (async () => acquireCpu(await threadsFor(undefined)))();
  return calibrationCpu;
}

/** The WebAssembly backend calibration measures, and the shared WebGPU one, when the runtime has an adapter. */
async function devicesAtHand(): Promise<Devices> {
  const known = await sharedDevices?.catch(() => undefined);
  if (known && !known.gpu?.isLost) return known;
  sharedDevices = (async () => {
    const cpu = await measuredCpu();
    const gpu = await gpuBackend().catch((error: unknown) => {
      if (error instanceof HyperAttentionError && error.code === 'UNSUPPORTED') return undefined;
      throw error;
    });
    return { cpu, gpu, env: await environmentOf(cpu, gpu) };
  })();
  return sharedDevices;
}

/** The part of node:fs/promises (Node, and Deno's Node compatibility) the profile file needs. */
interface FileSystem {
  readFile(path: string, encoding: 'utf8'): Promise<string>;
  writeFile(path: string, data: string): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  unlink(path: string): Promise<void>;
  mkdir(path: string): Promise<unknown>;
}

/**
 * mkdir -p, one level at a time. Node's own recursive mkdir never settles for a path
 * under /proc (it retries forever), which left the first call pending for good.
 */
async function makeFolder(fs: FileSystem, folder: string): Promise<void> {
  try {
    await fs.mkdir(folder);
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code === 'EEXIST') return;
    const parent = folderOf(folder);
    if (code !== 'ENOENT' || !parent || parent === folder) throw error;
    await makeFolder(fs, parent);
    await fs.mkdir(folder); // once: if the parent exists and this still fails, say so
  }
}

function folderOf(path: string): string {
  return path.slice(0, Math.max(path.lastIndexOf('/'), path.lastIndexOf('\\')));
}

function fileSystem(): Promise<FileSystem> {
  return nodeBuiltin<FileSystem>('fs/promises');
}

function storage(): Storage | undefined {
  try {
    return (globalThis as { localStorage?: Storage }).localStorage;
  } catch {
    return undefined; // a browser that forbids storage throws on access
  }
}

interface DenoLike {
  env?: { get(name: string): string | undefined };
  build?: { os?: string };
  permissions?: { querySync?(descriptor: { name: string; variable?: string; path?: string }): { state: string } };
}

/** Where the runtime's per-user caches go, from its environment; undefined where it has none. */
export function cacheFolder(platform: string, env: (name: string) => string | undefined, home: () => string | undefined): string | undefined {
  const own = env('HYPERATTENTION_CACHE_DIR');
  if (own) return own;
  if (platform === 'win32' || platform === 'windows') {
    const local = env('LOCALAPPDATA') || (env('USERPROFILE') && `${env('USERPROFILE')}\\AppData\\Local`);
    return local ? `${local}\\hyperattention` : undefined;
  }
  if (platform === 'darwin') {
    const h = home();
    return h ? `${h}/Library/Caches/hyperattention` : undefined;
  }
  const xdg = env('XDG_CACHE_HOME');
  if (xdg?.startsWith('/')) return `${xdg}/hyperattention`; // the XDG spec ignores relative ones
  const h = home();
  return h ? `${h}/.cache/hyperattention` : undefined;
}

let defaultFolderOnce: Promise<string | undefined> | undefined;

/**
 * The default cache folder in Node; in Deno only where env, read and write are already
 * granted (asking would prompt, or fail, on a call that never asked for a file).
 */
function defaultFolder(): Promise<string | undefined> {
  defaultFolderOnce ??= (async () => {
    const g = globalThis as { Deno?: DenoLike; process?: { versions?: { node?: string }; platform?: string; env?: Record<string, string | undefined> } };
    try {
      if (g.Deno) {
        const deno = g.Deno;
        const granted = (d: { name: string; variable?: string; path?: string }) => {
          try {
            return deno.permissions?.querySync?.(d).state === 'granted';
          } catch {
            return false;
          }
        };
        const env = (name: string) => (granted({ name: 'env', variable: name }) ? deno.env?.get(name) : undefined);
        const os = deno.build?.os ?? '';
        const folder = cacheFolder(os, env, () => env(os === 'windows' ? 'USERPROFILE' : 'HOME'));
        return folder && granted({ name: 'read', path: folder }) && granted({ name: 'write', path: folder }) ? folder : undefined;
      }
      if (!g.process?.versions?.node) return undefined;
      const env = g.process.env ?? {};
      const home = env.HOME || (await nodeBuiltin<{ homedir(): string }>('os')).homedir();
      return cacheFolder(g.process.platform ?? '', (name) => env[name], () => home || undefined);
    } catch {
      return undefined;
    }
  })();
  return defaultFolderOnce;
}

/** FNV-1a, 32 bits: a short, stable file name per environment. */
function hashOf(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return (h >>> 0).toString(16).padStart(8, '0');
}

/**
 * Where this environment's profile is kept: a file (the caller's, or the default one, which
 * is per environment so that, say, Node with and without a GPU driver do not overwrite each
 * other), localStorage, or nowhere.
 */
async function whereSaved(env: Environment): Promise<{ file: string } | { storage: Storage } | undefined> {
  if (config.profilePath) return unusable.has(config.profilePath) ? undefined : { file: config.profilePath };
  const local = storage();
  if (local) return { storage: local };
  if (config.profilePath === null) return undefined;
  const folder = await defaultFolder();
  if (!folder) return undefined;
  const file = `${folder}${folder.includes('\\') && !folder.includes('/') ? '\\' : '/'}profile-${hashOf(environmentKey(env))}.json`;
  return unusable.has(file) ? undefined : { file };
}

/** Files that failed to read or write: warned about once, then left alone (memory only). */
const unusable = new Set<string>();

/** A file operation may not hold a call up longer than this (a dead network mount, say). */
const FILE_TIMEOUT_MS = 5000;

function within<T>(work: Promise<T>, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer after ${FILE_TIMEOUT_MS} ms`)), FILE_TIMEOUT_MS);
    (timer as { unref?: () => void }).unref?.();
  });
  return Promise.race([work, late]).finally(() => clearTimeout(timer));
}

function giveUpOn(file: string, message: string): void {
  if (unusable.has(file)) return;
  unusable.add(file);
  warn(`${message}; the profile is kept in memory only`);
}

/** The saved profile's text and where it was, if there is one. */
async function readSaved(env: Environment): Promise<{ text: string; where: string } | undefined> {
  const where = await whereSaved(env);
  if (!where) return undefined;
  if ('file' in where) {
    try {
      return { text: await within((await fileSystem()).readFile(where.file, 'utf8'), 'reading'), where: where.file };
    } catch (error) {
      if ((error as { code?: string }).code !== 'ENOENT') giveUpOn(where.file, `could not read the profile at ${where.file}: ${String(error)}`);
      return undefined;
    }
  }
  const text = where.storage.getItem(STORAGE_KEY);
  return text ? { text, where: `localStorage['${STORAGE_KEY}']` } : undefined;
}

/**
 * Saves through a temporary file and a rename, so that another process starting now reads
 * the old profile or the new one, never half of one.
 */
async function writeFile(file: string, text: string): Promise<void> {
  const fs = await fileSystem();
  const folder = folderOf(file);
  if (folder) await makeFolder(fs, folder);
  const temporary = `${file}.${hashOf(`${Math.random()} ${performance.now()}`)}.tmp`;
  await fs.writeFile(temporary, text);
  try {
    await fs.rename(temporary, file);
  } catch (error) {
    await fs.unlink(temporary).catch(() => undefined);
    throw error;
  }
}

async function save(profile: Profile): Promise<void> {
  if (!config.persist) return;
  const text = JSON.stringify(profile, null, 2);
  const where = await whereSaved(profile.environment);
  if (!where) return;
  if ('file' in where) {
    try {
      await within(writeFile(where.file, `${text}\n`), 'writing');
    } catch (error) {
      giveUpOn(where.file, `could not save the profile to ${where.file}: ${String(error)}`);
    }
    return;
  }
  try {
    where.storage.setItem(STORAGE_KEY, text);
  } catch (error) {
    warn(`could not save the profile in localStorage: ${String(error)}`);
  }
}

/**
 * Calibrates the devices: WebAssembly, and the GPU unless it is a software adapter and
 * `software` is false. A software adapter (SwiftShader, lavapipe, WARP: it says so, or its
 * name does) runs compute 15-100x slower than WebAssembly, so 'auto' would never give it
 * work: timing it (5-11 s) only delayed the first call. A GPU that fails its calibration
 * (an error, a lost device) is left out from then on, with a warning: calls then plan for
 * WebAssembly alone.
 */
async function measure(devices: Devices, software: boolean): Promise<Profile> {
  const start = performance.now();
  const cpu = await calibrateBackend(devices.cpu);
  const webgpu = software || !devices.env.adapter?.fallback ? await measureGpu(devices) : null;
  return keep({
    format: PROFILE_FORMAT,
    version: PROFILE_VERSION,
    environment: devices.env,
    created: new Date().toISOString(),
    calibrationMs: Math.round(performance.now() - start),
    devices: { cpu, webgpu },
  });
}

async function measureGpu(devices: Devices): Promise<DeviceCosts | null> {
  if (!devices.gpu) return null;
  try {
    return await calibrateBackend(devices.gpu);
  } catch (error) {
    warn(`WebGPU calibration failed, planning for WebAssembly alone: ${(error as Error).message}`);
    devices.gpu = undefined;
    devices.env = { ...devices.env, adapter: null };
    return null;
  }
}

async function keep(profile: Profile): Promise<Profile> {
  profiles.set(environmentKey(profile.environment), profile);
  await save(profile);
  return profile;
}

/** The profile of the devices: cached, else saved (if valid), else measured now. */
async function profileOf(devices: Devices): Promise<Profile> {
  const key = environmentKey(devices.env);
  const cached = profiles.get(key);
  if (cached) return cached;
  const saved = await readSaved(devices.env);
  if (saved) {
    try {
      const profile = parseProfile(saved.text, devices.env);
      profiles.set(key, profile);
      return profile;
    } catch (error) {
      warn(`rejected the saved profile in ${saved.where} and recalibrating: ${(error as Error).message}`);
    }
  }
  return measure(devices, false);
}

/**
 * The profile with the GPU measured too: a call that names backend 'webgpu' on a software
 * adapter and asks for its plan gets it priced (the adapter is timed then, once).
 */
async function profileWithGpu(devices: Devices): Promise<Profile> {
  const profile = await profileOf(devices);
  if (profile.devices.webgpu || !devices.gpu) return profile;
  const start = performance.now();
  const webgpu = await measureGpu(devices);
  if (!webgpu) return profileOf(devices); // it failed: the environment is now the one without it
  return keep({ ...profile, calibrationMs: profile.calibrationMs + Math.round(performance.now() - start), devices: { ...profile.devices, webgpu } });
}

/** Forgets every cached profile, so that the next call reads the saved one again (tests). */
export function forgetProfiles(): void {
  profiles.clear();
}

/**
 * Measures the devices at hand now (WebAssembly, and any GPU adapter, software ones
 * included: a second or two, more on a software adapter), and uses and saves the new profile.
 */
export function calibrate(): Promise<Profile> {
  return serialize(async () => measure(await devicesAtHand(), true));
}

/** The profile the scheduler uses here: cached, saved, or calibrated on first use. */
export function getProfile(): Promise<Profile> {
  return serialize(async () => profileOf(await devicesAtHand()));
}

/**
 * Does now what the first call with backend 'auto' would otherwise do before it runs:
 * loads the WebAssembly module, finds the GPU adapter, and reads the saved profile or, where
 * there is none, calibrates (about half a second on WebAssembly; software adapters are not
 * timed). Call it at page load or process start; resolves with the profile when done.
 */
export function warmup(): Promise<Profile> {
  return getProfile();
}

/**
 * Uses a profile saved earlier (the JSON value or its text). Rejects with INVALID_PROFILE,
 * saying why, when it is malformed or was measured on another environment.
 */
export function setProfile(value: unknown): Promise<Profile> {
  return serialize(async () => {
    const devices = await devicesAtHand();
    return keep(parseProfile(value, devices.env));
  });
}

/** The backend of a call, and the plan it runs when the scheduler chose it (or was asked). */
export interface Scheduled {
  /** WebGPU or the hybrid; undefined: WebAssembly, on a backend of the call's own (backends.ts, acquireCpu) */
  backend: Backend | undefined;
  /** the cutoff to run with, when the scheduler chose it */
  minSeqLen: number | undefined;
  plan: Explanation | undefined;
  /** the algorithm's plan the scheduler priced, for the executor to run as is */
  work: Plan | undefined;
}

/** Everything a plan depends on beyond the shape. */
function chooseParams(
  shape: AttentionShape, o: ResolvedExactOptions, hyper: ResolvedHyperOptions | undefined, splits: readonly Split[], threads: number,
): ChooseParams {
  // The plan's own parameters; the cutoff is the caller's only when given (else the scheduler's).
  return { ...planParams(shape, o, hyper), minSeqLen: hyper?.minSeqLenGiven ? hyper.minSeqLen : undefined, splits, threads };
}

async function backendOf(split: Split, devices: Devices): Promise<Backend | undefined> {
  if (split === 'cpu') return undefined;
  return split === 'webgpu' ? devices.gpu! : hybridBackend(devices.gpu!);
}

/**
 * Runs inside the call queue. With backend 'auto' the scheduler chooses; with an explicit
 * backend it only explains (for profile: true) what that backend will do.
 */
export async function schedule(
  shape: AttentionShape, o: ResolvedExactOptions, hyper: ResolvedHyperOptions | undefined, explainToo: boolean,
): Promise<Scheduled> {
  // The threads the call's WebAssembly work will run on.
  const threads = (await threadsAvailable()) ? await threadsFor(o.threads) : 1;
  if (o.backend === 'auto') {
    const devices = await devicesAtHand();
    const profile = await profileOf(devices);
    // A software adapter left unmeasured is no candidate (see measure).
    const splits = devices.gpu && profile.devices.webgpu ? SPLITS : (['cpu'] as const);
    const { explanation: plan, plan: work } = choosePlan(shape, chooseParams(shape, o, hyper, splits, threads), profile);
    return { backend: await backendOf(plan.backend, devices), minSeqLen: plan.minSeqLen ?? undefined, plan, work };
  }
  const gpu = o.backend === 'webgpu' ? await gpuBackend(o.device) : undefined;
  if (!explainToo) return { backend: gpu, minSeqLen: undefined, plan: undefined, work: undefined };
  // The profile's WebAssembly costs are the calibration backend's (its thread count is part of the environment).
  const cpu = await measuredCpu();
  const devices = { cpu, gpu, env: await environmentOf(cpu, gpu) };
  const profile = await profileWithGpu(devices);
  // The explicit backend's cutoff is the caller's or the default, as without a profile.
  const params = { ...chooseParams(shape, o, hyper, [gpu ? 'webgpu' : 'cpu'], threads), minSeqLen: hyper?.minSeqLen };
  const chosen = choosePlan(shape, params, profile);
  return { backend: gpu, minSeqLen: undefined, plan: chosen.explanation, work: chosen.plan };
}

/** The shapes of a call: q [B, H, Nq, D], k [B, Hkv, Nk, D], v [B, Hkv, Nk, Dv]. */
export interface CallShapes {
  q: readonly number[];
  k: readonly number[];
  v: readonly number[];
}

/**
 * What hyperAttention (or, with kind 'exact', exactAttention) would do with these shapes
 * and options: the backend split, exact or HyperAttention, the cutoff, the predicted time
 * of each step, and every candidate considered. Calibrates first if there is no profile.
 */
export function explain(
  shapes: CallShapes, options: HyperOptions | ExactOptions = {}, kind: 'hyper' | 'exact' = 'hyper',
): Promise<Explanation> {
  try {
    if (kind !== 'hyper' && kind !== 'exact') throw new HyperAttentionError('INVALID_OPTION', `kind: expected 'hyper' or 'exact', got ${describeValue(kind)}`);
    const hyper = kind === 'hyper' ? resolveHyperOptions(options) : undefined;
    const o = hyper ?? resolveExactOptions(options);
    if (typeof shapes !== 'object' || shapes === null) throw new HyperAttentionError('INVALID_SHAPE', `shapes: expected { q, k, v } shape arrays, got ${describeValue(shapes)}`);
    const shape = attentionShapeOf(shapes.q, shapes.k, shapes.v, o.causal);
    return serialize(async () => (await schedule(shape, o, hyper, true)).plan!);
  } catch (error) {
    return Promise.reject(error);
  }
}

/** What a call with profile: true reports: its plan, and each step's measured time. */
export interface CallProfile {
  plan: Explanation;
  steps: { op: CostClass; device: Device; calls: number; measuredMs: number; predictedMs: number | null }[];
  /** the traced call, from the start of its first op to the end of its last */
  measuredMs: number;
}

/** Sums a traced call's ops per (cost class, device), next to the plan's predictions. */
export function callProfile(plan: Explanation, trace: OpTrace[], measuredMs: number): CallProfile {
  const steps = new Map<string, CallProfile['steps'][number]>();
  for (const t of trace) {
    const op = COST_CLASS[t.op];
    const key = `${op} ${t.device}`;
    const predicted = plan.steps.find((s) => s.op === op && s.device === t.device);
    const step = steps.get(key) ?? { op, device: t.device, calls: 0, measuredMs: 0, predictedMs: predicted?.predictedMs ?? null };
    step.calls += 1;
    step.measuredMs += t.ms;
    steps.set(key, step);
  }
  return { plan, steps: [...steps.values()], measuredMs };
}
