// Calibration profiles: what the scheduler knows about the devices at hand. A profile holds,
// per device and op, a fixed cost per call and a throughput, measured on one environment
// (runtime, WebAssembly build, GPU adapter); it is only ever used on that environment.
// Profiles are JSON values the caller may save and load; anything loaded is validated
// field by field, and a foreign or malformed profile is rejected with the reason.
import { describeValue } from '../describe.ts';
import { HyperAttentionError } from '../errors.ts';
import { COST_CLASSES, type CostClass, type Device } from '../ops.ts';

/** Time of one call of an op: fixedMs + units / unitsPerMs (units: see UNITS). */
export interface OpCost {
  fixedMs: number;
  unitsPerMs: number;
}

export type DeviceCosts = Record<CostClass, OpCost>;

/** What an op's work is counted in. */
export const UNITS: Readonly<Record<CostClass, string>> = {
  upload: 'bytes',
  download: 'bytes',
  hash: 'row·dim·projection',
  sort: 'rows',
  exact: 'flops',
  block: 'flops',
  sampled: 'flops',
  merge: 'row·dim',
};

/** The GPU adapter a profile was measured on, and the limits plans must respect there. */
export interface AdapterIdentity {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  /** a software (fallback) adapter: SwiftShader, lavapipe/llvmpipe, WARP */
  fallback: boolean;
  maxBufferBytes: number;
  maxBindingBytes: number;
}

/** Where a profile was measured. */
export interface Environment {
  /** e.g. 'node 20.20.2', 'deno 2.1.4', or the browser's user agent */
  runtime: string;
  /** the WebAssembly build in use: 'relaxed', 'simd' or 'scalar' */
  wasm: string;
  /** the CPU's model and logical CPUs (Node, Deno); null where the runtime does not tell */
  cpu: string | null;
  /** logical CPUs, where the runtime tells */
  threads: number | null;
  /** the WebAssembly threads the cpu costs were measured with (calls on other counts are scaled) */
  wasmThreads: number;
  /** null: no WebGPU adapter */
  adapter: AdapterIdentity | null;
}

export const PROFILE_FORMAT = 'hyperattention-profile';
/** 2: environment.wasmThreads (version 1 profiles were measured on one thread) */
export const PROFILE_VERSION = 2;

export interface Profile {
  format: typeof PROFILE_FORMAT;
  version: typeof PROFILE_VERSION;
  environment: Environment;
  /** ISO date of the calibration */
  created: string;
  /** how long the calibration took */
  calibrationMs: number;
  /**
   * per op, on WebAssembly; and on WebGPU when the environment has an adapter, unless it is a
   * software one that was not timed (backend 'auto' gives it no work)
   */
  devices: { cpu: DeviceCosts; webgpu: DeviceCosts | null };
}

/** One string per environment: profiles are cached and persisted under it. */
export function environmentKey(env: Environment): string {
  const a = env.adapter;
  const gpu = a ? `${a.vendor}/${a.architecture}/${a.device}/${a.description}${a.fallback ? ' (software)' : ''}` : 'no webgpu';
  return `${env.runtime} | wasm ${env.wasm} x${env.wasmThreads} | ${env.cpu ?? 'cpu ?'} | ${env.threads ?? '?'} threads | ${gpu}`;
}

function invalid(message: string): never {
  throw new HyperAttentionError('INVALID_PROFILE', message);
}

function object(value: unknown, where: string): Record<string, unknown> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) invalid(`${where}: expected an object, got ${describeValue(value)}`);
  return value as Record<string, unknown>;
}

function positive(value: unknown, where: string, allowZero = false): number {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0 || (!allowZero && value === 0)) {
    invalid(`${where}: expected a finite ${allowZero ? 'non-negative' : 'positive'} number, got ${describeValue(value)}`);
  }
  return value;
}

function text(value: unknown, where: string): string {
  if (typeof value !== 'string') invalid(`${where}: expected a string, got ${describeValue(value)}`);
  return value;
}

/**
 * Bounds no measured device comes near, so that a profile that is well-formed but absurd (an
 * op of a minute, a kernel a million times slower than its siblings) is rejected rather than
 * trusted, and persisted, by every later plan.
 */
const MAX_FIXED_MS = 10_000;
const UNITS_PER_MS = [1, 1e13] as const;
/** The attention kernels do the same flops in other orders: measured within 10x of each other, here at most this far apart. */
const ATTENTION_SPREAD = 100;

function deviceCosts(value: unknown, where: string): DeviceCosts {
  const o = object(value, where);
  const costs = {} as DeviceCosts;
  for (const op of COST_CLASSES) {
    const c = object(o[op], `${where}.${op}`);
    costs[op] = { fixedMs: positive(c.fixedMs, `${where}.${op}.fixedMs`, true), unitsPerMs: positive(c.unitsPerMs, `${where}.${op}.unitsPerMs`) };
    if (costs[op].fixedMs > MAX_FIXED_MS) invalid(`${where}.${op}.fixedMs: ${costs[op].fixedMs} ms per op is not a measurement (at most ${MAX_FIXED_MS})`);
    if (costs[op].unitsPerMs < UNITS_PER_MS[0] || costs[op].unitsPerMs > UNITS_PER_MS[1]) {
      invalid(`${where}.${op}.unitsPerMs: ${costs[op].unitsPerMs} is not a measurement (expected ${UNITS_PER_MS[0]} to ${UNITS_PER_MS[1]})`);
    }
  }
  const rates = (['exact', 'block', 'sampled'] as const).map((op) => costs[op].unitsPerMs);
  if (Math.max(...rates) > ATTENTION_SPREAD * Math.min(...rates)) {
    invalid(`${where}: the attention kernels' rates (exact, block, sampled: ${rates.map((r) => r.toPrecision(3)).join(', ')} flops/ms) are more than ${ATTENTION_SPREAD}x apart; no device measures so`);
  }
  return costs;
}

function environment(value: unknown): Environment {
  const o = object(value, 'environment');
  const threads = o.threads === null ? null : positive(o.threads, 'environment.threads');
  let adapter: AdapterIdentity | null = null;
  if (o.adapter !== null) {
    const a = object(o.adapter, 'environment.adapter');
    if (typeof a.fallback !== 'boolean') invalid(`environment.adapter.fallback: expected a boolean, got ${describeValue(a.fallback)}`);
    adapter = {
      vendor: text(a.vendor, 'environment.adapter.vendor'),
      architecture: text(a.architecture, 'environment.adapter.architecture'),
      device: text(a.device, 'environment.adapter.device'),
      description: text(a.description, 'environment.adapter.description'),
      fallback: a.fallback,
      maxBufferBytes: positive(a.maxBufferBytes, 'environment.adapter.maxBufferBytes'),
      maxBindingBytes: positive(a.maxBindingBytes, 'environment.adapter.maxBindingBytes'),
    };
  }
  const cpu = o.cpu === null ? null : text(o.cpu, 'environment.cpu');
  const wasmThreads = positive(o.wasmThreads, 'environment.wasmThreads');
  if (!Number.isInteger(wasmThreads)) invalid(`environment.wasmThreads: expected an integer, got ${describeValue(wasmThreads)}`);
  return { runtime: text(o.runtime, 'environment.runtime'), wasm: text(o.wasm, 'environment.wasm'), cpu, threads, wasmThreads, adapter };
}

/**
 * A profile from a JSON value or its text, checked in full: throws INVALID_PROFILE saying
 * what is wrong, and, when `current` is given, if it was measured on another environment.
 */
export function parseProfile(value: unknown, current?: Environment): Profile {
  let raw = value;
  if (typeof raw === 'string') {
    try {
      raw = JSON.parse(raw);
    } catch (cause) {
      invalid(`profile: not JSON (${String(cause)})`);
    }
  }
  const o = object(raw, 'profile');
  if (o.format !== PROFILE_FORMAT) invalid(`profile.format: expected '${PROFILE_FORMAT}', got ${describeValue(o.format)}`);
  if (o.version !== PROFILE_VERSION) {
    invalid(`profile.version: this library reads version ${PROFILE_VERSION}, got ${describeValue(o.version)}: recalibrate`);
  }
  const env = environment(o.environment);
  const devices = object(o.devices, 'devices');
  const profile: Profile = {
    format: PROFILE_FORMAT,
    version: PROFILE_VERSION,
    environment: env,
    created: text(o.created, 'created'),
    calibrationMs: positive(o.calibrationMs, 'calibrationMs', true),
    devices: {
      cpu: deviceCosts(devices.cpu, 'devices.cpu'),
      webgpu: devices.webgpu === null ? null : deviceCosts(devices.webgpu, 'devices.webgpu'),
    },
  };
  // A software adapter may be left unmeasured: backend 'auto' never gives it work.
  if (env.adapter === null ? profile.devices.webgpu !== null : profile.devices.webgpu === null && !env.adapter.fallback) {
    invalid('devices.webgpu: must be present exactly when environment.adapter is (and may be null for a software adapter)');
  }
  if (current && environmentKey(env) !== environmentKey(current)) {
    invalid(`profile: measured on another environment (${environmentKey(env)}); this one is ${environmentKey(current)}`);
  }
  return profile;
}

/** Costs of the device, for a profile that has it. */
export function costsOf(profile: Profile, device: Device): DeviceCosts {
  const costs = profile.devices[device];
  if (!costs) throw new HyperAttentionError('UNSUPPORTED', `profile: no ${device} measurements (${environmentKey(profile.environment)})`);
  return costs;
}
