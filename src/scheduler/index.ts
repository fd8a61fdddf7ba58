// The scheduler: for each call with backend 'auto', which backend split runs it and how much
// of it runs exact, from the cost model (cost.ts) on a profile of the devices at hand
// (profile.ts). Profiles are measured on first use (calibrate.ts, a second or two), cached
// per environment, and persisted where the runtime allows it without extra permissions:
// a file named by the caller in Node and Deno, localStorage in browsers (and Deno).
import { cpuBackend, gpuBackend, hybridBackend, serialize } from '../backends.ts';
import type { CpuBackend } from '../cpu/backend.ts';
import { describeValue } from '../describe.ts';
import { HyperAttentionError } from '../errors.ts';
import type { WebGPUBackend } from '../gpu/index.ts';
import type { Backend, Device, OpName, OpTrace } from '../ops.ts';
import type { Plan } from '../plan.ts';
import {
  resolveExactOptions, resolveHyperOptions, type ExactOptions, type HyperOptions, type ResolvedExactOptions,
  type ResolvedHyperOptions,
} from '../options.ts';
import { attentionShapeOf, type AttentionShape } from '../tensor.ts';
import { calibrateBackend } from './calibrate.ts';
import { choose, choosePlan, SPLITS, type Explanation, type Split } from './cost.ts';
import {
  environmentKey, parseProfile, PROFILE_FORMAT, PROFILE_VERSION, type DeviceCosts, type Environment, type Profile,
} from './profile.ts';

export interface SchedulerConfig {
  /**
   * Node and Deno: a JSON file the profile is read from and saved to (Deno needs read and
   * write permission for it). Default: none; browsers (and Deno) use localStorage instead.
   */
  profilePath?: string | null;
  /** save calibrated profiles (default true) */
  persist?: boolean;
  /** where the scheduler reports a saved profile it rejects (default console.warn) */
  onWarning?: (message: string) => void;
}

const STORAGE_KEY = 'hyperattention.profile';

const config: Required<SchedulerConfig> = {
  profilePath: null,
  persist: true,
  onWarning: (message) => console.warn(`hyperattention: ${message}`),
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
  if (profilePath !== undefined) config.profilePath = profilePath;
  if (persist !== undefined) config.persist = persist;
  if (onWarning !== undefined) config.onWarning = onWarning;
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
    runtime: runtimeName(), wasm: cpu.flavour, cpu: model?.name ?? null, threads: typeof threads === 'number' ? threads : null, adapter,
  };
}

/** The WebAssembly backend and the shared WebGPU one, when the runtime has an adapter. */
async function devicesAtHand(): Promise<Devices> {
  const known = await sharedDevices?.catch(() => undefined);
  if (known && !known.gpu?.isLost) return known;
  sharedDevices = (async () => {
    const cpu = await cpuBackend();
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
    const parent = folder.slice(0, Math.max(folder.lastIndexOf('/'), folder.lastIndexOf('\\')));
    if (code !== 'ENOENT' || !parent || parent === folder) throw error;
    await makeFolder(fs, parent);
    await fs.mkdir(folder); // once: if the parent exists and this still fails, say so
  }
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

/** The saved profile's text and where it was, if there is one. */
async function readSaved(): Promise<{ text: string; where: string } | undefined> {
  if (config.profilePath) {
    try {
      return { text: await (await fileSystem()).readFile(config.profilePath, 'utf8'), where: config.profilePath };
    } catch (error) {
      if ((error as { code?: string }).code === 'ENOENT') return undefined;
      config.onWarning(`could not read the profile at ${config.profilePath}: ${String(error)}`);
      return undefined;
    }
  }
  const text = storage()?.getItem(STORAGE_KEY);
  return text ? { text, where: `localStorage['${STORAGE_KEY}']` } : undefined;
}

async function save(profile: Profile): Promise<void> {
  if (!config.persist) return;
  const text = JSON.stringify(profile, null, 2);
  try {
    if (config.profilePath) {
      const fs = await fileSystem();
      const folder = config.profilePath.slice(0, Math.max(config.profilePath.lastIndexOf('/'), config.profilePath.lastIndexOf('\\')));
      if (folder) await makeFolder(fs, folder);
      await fs.writeFile(config.profilePath, `${text}\n`);
    }
    else storage()?.setItem(STORAGE_KEY, text);
  } catch (error) {
    config.onWarning(`could not save the profile${config.profilePath ? ` to ${config.profilePath}` : ''}: ${String(error)}`);
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
    config.onWarning(`WebGPU calibration failed, planning for WebAssembly alone: ${(error as Error).message}`);
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
  const saved = await readSaved();
  if (saved) {
    try {
      const profile = parseProfile(saved.text, devices.env);
      profiles.set(key, profile);
      return profile;
    } catch (error) {
      config.onWarning(`rejected the saved profile in ${saved.where} and recalibrating: ${(error as Error).message}`);
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
 * Uses a profile saved earlier (the JSON value or its text). Rejects with INVALID_PROFILE,
 * saying why, when it is malformed or was measured on another environment.
 */
export function setProfile(value: unknown): Promise<Profile> {
  return serialize(async () => {
    const devices = await devicesAtHand();
    const profile = parseProfile(value, devices.env);
    profiles.set(environmentKey(devices.env), profile);
    await save(profile);
    return profile;
  });
}

/** The backend of a call, and the plan it runs when the scheduler chose it (or was asked). */
export interface Scheduled {
  backend: Backend;
  /** the cutoff to run with, when the scheduler chose it */
  minSeqLen: number | undefined;
  plan: Explanation | undefined;
  /** the algorithm's plan the scheduler priced, for the executor to run as is */
  work: Plan | undefined;
}

/** Everything a plan depends on beyond the shape. */
function chooseParams(o: ResolvedExactOptions, hyper: ResolvedHyperOptions | undefined, splits: readonly Split[]) {
  return {
    causal: o.causal,
    exact: hyper === undefined,
    blockSize: hyper?.blockSize ?? 1,
    sampleSize: hyper?.sampleSize ?? 0,
    lshNumProjs: hyper?.lshNumProjs ?? 1,
    mode: hyper?.mode ?? 'fixed',
    sinkKeys: hyper?.sinkKeys ?? 0,
    heavyKeys: hyper?.heavyKeys ?? 0,
    probeQueries: hyper?.probeQueries ?? 1,
    window: hyper?.window ?? 0,
    lshRounds: hyper?.lshRounds ?? 0,
    minSeqLen: hyper?.minSeqLenGiven ? hyper.minSeqLen : undefined,
    splits,
  };
}

async function backendOf(split: Split, devices: Devices): Promise<Backend> {
  if (split === 'cpu') return devices.cpu;
  return split === 'webgpu' ? devices.gpu! : hybridBackend(devices.gpu!);
}

/**
 * Runs inside the call queue. With backend 'auto' the scheduler chooses; with an explicit
 * backend it only explains (for profile: true) what that backend will do.
 */
export async function schedule(
  shape: AttentionShape, o: ResolvedExactOptions, hyper: ResolvedHyperOptions | undefined, explainToo: boolean,
): Promise<Scheduled> {
  if (o.backend === 'auto') {
    const devices = await devicesAtHand();
    const profile = await profileOf(devices);
    // A software adapter left unmeasured is no candidate (see measure).
    const splits = devices.gpu && profile.devices.webgpu ? SPLITS : (['cpu'] as const);
    const { explanation: plan, plan: work } = choosePlan(shape, chooseParams(o, hyper, splits), profile);
    return { backend: await backendOf(plan.backend, devices), minSeqLen: plan.minSeqLen ?? undefined, plan, work };
  }
  const cpu = await cpuBackend();
  const gpu = o.backend === 'webgpu' ? await gpuBackend(o.device) : undefined;
  const backend = gpu ?? cpu;
  if (!explainToo) return { backend, minSeqLen: undefined, plan: undefined, work: undefined };
  const devices = { cpu, gpu, env: await environmentOf(cpu, gpu) };
  const profile = await profileWithGpu(devices);
  // The explicit backend's cutoff is the caller's or the default, as without a profile.
  const params = { ...chooseParams(o, hyper, [gpu ? 'webgpu' : 'cpu']), minSeqLen: hyper?.minSeqLen };
  const chosen = choosePlan(shape, params, profile);
  return { backend, minSeqLen: undefined, plan: chosen.explanation, work: chosen.plan };
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
  steps: { op: OpName; device: Device; calls: number; measuredMs: number; predictedMs: number | null }[];
  /** the traced call, from the start of its first op to the end of its last */
  measuredMs: number;
}

/** Sums a traced call's ops per (op, device), next to the plan's predictions. */
export function callProfile(plan: Explanation, trace: OpTrace[], measuredMs: number): CallProfile {
  const steps = new Map<string, CallProfile['steps'][number]>();
  for (const t of trace) {
    const key = `${t.op} ${t.device}`;
    const predicted = plan.steps.find((s) => s.op === t.op && s.device === t.device);
    const step = steps.get(key) ?? { op: t.op, device: t.device, calls: 0, measuredMs: 0, predictedMs: predicted?.predictedMs ?? null };
    step.calls += 1;
    step.measuredMs += t.ms;
    steps.set(key, step);
  }
  return { plan, steps: [...steps.values()], measuredMs };
}
