// The scheduler: for each call with backend 'auto', which backend split runs it and how much
// of it runs exact, from the cost model (cost.ts) on a profile of the devices at hand
// (profile.ts, environment.ts). Profiles are measured on first use or by warmup()
// (calibrate.ts, about half a second on WebAssembly; software GPU adapters are not timed for
// 'auto'), cached per environment, and persisted (persistence.ts) so that a new process or
// page load does not measure again.
import { gpuBackend, hybridBackend, serialize, threadsAvailable } from '../backends.ts';
import type { CpuBackend } from '../cpu/backend.ts';
import type { WebGPUBackend } from '../gpu/index.ts';
import { describeValue } from '../describe.ts';
import { HyperAttentionError } from '../errors.ts';
import { COST_CLASS, type Backend, type OpTrace } from '../ops.ts';
import { planParams, type Plan } from '../plan.ts';
import {
  resolveExactOptions, resolveHyperOptions, type ExactOptions, type HyperOptions, type ResolvedExactOptions,
  type ResolvedHyperOptions,
} from '../options.ts';
import type { CallProfile } from '../result.ts';
import { attentionShapeOf, checkOutputSize, type AttentionShape } from '../tensor.ts';
import { askedThreads, threadsFor } from '../threads/config.ts';
import { warn } from '../warnings.ts';
import { calibrateBackend } from './calibrate.ts';
import { choosePlan, SPLITS, type ChooseParams, type Explanation, type Split } from './cost.ts';
import { devicesAtHand, environmentOf, measuredCpu, type Devices } from './environment.ts';
import { readSaved, save } from './persistence.ts';
import { environmentKey, parseProfile, PROFILE_FORMAT, PROFILE_VERSION, type DeviceCosts, type Profile } from './profile.ts';

/** Profiles in use, per environment key. */
const profiles = new Map<string, Profile>();

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
  shape: AttentionShape, o: ResolvedExactOptions, hyper: ResolvedHyperOptions | undefined, splits: readonly Split[], threads: CallThreads,
): ChooseParams {
  // The plan's own parameters; the cutoff is the caller's only when given (else the scheduler's).
  return {
    ...planParams(shape, o, hyper), minSeqLen: hyper?.minSeqLenGiven ? hyper.minSeqLen : undefined, splits, threads: threads.count,
    ...(threads.asked === undefined ? {} : { threadsAsked: threads.asked }),
  };
}

async function backendOf(split: Split, devices: Devices): Promise<Backend | undefined> {
  if (split === 'cpu') return undefined;
  return split === 'webgpu' ? devices.gpu! : hybridBackend(devices.gpu!);
}

/** The threads a call's WebAssembly work runs on, and what it asked for where the cores capped that. */
interface CallThreads {
  count: number;
  asked: number | undefined;
}

async function callThreads(o: ResolvedExactOptions): Promise<CallThreads> {
  if (!(await threadsAvailable())) return { count: 1, asked: undefined };
  const count = await threadsFor(o.threads);
  const asked = askedThreads(o.threads);
  return { count, asked: asked !== undefined && asked > count ? asked : undefined };
}

/**
 * Runs inside the call queue. With backend 'auto' the scheduler chooses; with an explicit
 * backend it only explains (for profile: true) what that backend will do.
 */
export async function schedule(
  shape: AttentionShape, o: ResolvedExactOptions, hyper: ResolvedHyperOptions | undefined, explainToo: boolean,
): Promise<Scheduled> {
  const threads = await callThreads(o);
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

/**
 * The plan of a call on a key-value cache (src/cache.ts): its keys and values reside in the
 * cache's backend, which runs the call (the one split), so nothing of them is uploaded.
 * With backend 'auto' the cutoff is the scheduler's choice, as for other calls.
 * @internal (its backend types need WebGPU's, which the published types do not require)
 */
export async function scheduleResident(
  shape: AttentionShape, o: ResolvedExactOptions, hyper: ResolvedHyperOptions | undefined, backend: CpuBackend | WebGPUBackend,
): Promise<{ plan: Explanation; work: Plan }> {
  const cpu = await measuredCpu();
  const gpu = backend.name === 'webgpu' ? backend : undefined;
  const devices = { cpu, gpu, env: await environmentOf(cpu, gpu) };
  const profile = gpu ? await profileWithGpu(devices) : await profileOf(devices);
  const threads = { count: backend.name === 'cpu' ? backend.threads : 1, asked: undefined };
  const params = { ...chooseParams(shape, o, hyper, [backend.name], threads), residentKv: true };
  if (o.backend !== 'auto') params.minSeqLen = hyper?.minSeqLen;
  const { explanation, plan } = choosePlan(shape, params, profile);
  return { plan: explanation, work: plan };
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
    // What a call checks of its shapes before any work, so that explain answers as fast as the
    // call would reject (a plan for n = 2^40 rows would otherwise be built, and never end).
    if (o.output === 'host') checkOutputSize(shape);
    return serialize(async () => (await schedule(shape, o, hyper, true)).plan!);
  } catch (error) {
    return Promise.reject(error);
  }
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
