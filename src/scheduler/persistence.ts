// Where profiles persist between processes and page loads: a file named by the caller, else
// localStorage where the runtime has it (browsers, Deno), else a file per environment in the
// per-user cache folder (Node; Deno when permitted). Failures to read or write are warned
// about once and leave the profile in memory only.
import { describeValue } from '../describe.ts';
import { HyperAttentionError } from '../errors.ts';
import { ownOptions } from '../owned.ts';
import { setWarningHandler, warn } from '../warnings.ts';
import { nodeBuiltin } from './environment.ts';
import { environmentKey, type Environment, type Profile } from './profile.ts';

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
  const { profilePath, persist, onWarning } = ownOptions(options, ['profilePath', 'persist', 'onWarning'], 'configureScheduler', 'scheduler option') as SchedulerConfig;
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

/** The part of node:fs/promises (Node, and Deno's Node compatibility) the profile file needs. */
interface FileSystem {
  open(path: string, flags: number): Promise<FileHandle>;
  constants?: { O_RDONLY?: number; O_NONBLOCK?: number };
  writeFile(path: string, data: string): Promise<void>;
  rename(from: string, to: string): Promise<void>;
  unlink(path: string): Promise<void>;
  mkdir(path: string): Promise<unknown>;
}

interface FileHandle {
  stat(): Promise<{ isFile(): boolean; size: number }>;
  read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<{ bytesRead: number }>;
  close(): Promise<void>;
}

/** A profile is a few kilobytes: a file much larger is not one, and is not read into memory. */
const MAX_PROFILE_BYTES = 1 << 20;

/**
 * The text of a profile file, read so that it can neither block nor run on: opened without
 * waiting (a FIFO's open would wait for a writer, holding a thread of the runtime's pool and
 * so the process), and read only if it is a regular file of at most MAX_PROFILE_BYTES (a
 * link to /dev/urandom never ends).
 */
async function readProfileFile(fs: FileSystem, file: string): Promise<string> {
  const handle = await fs.open(file, (fs.constants?.O_RDONLY ?? 0) | (fs.constants?.O_NONBLOCK ?? 0));
  try {
    const info = await handle.stat();
    if (!info.isFile()) throw new Error('not a regular file');
    if (info.size > MAX_PROFILE_BYTES) throw new Error(`${info.size} bytes, more than a profile holds (at most ${MAX_PROFILE_BYTES})`);
    // One byte more than its size: a file that grew meanwhile is not read on.
    const bytes = new Uint8Array(info.size + 1);
    const { bytesRead } = await handle.read(bytes, 0, bytes.length, 0);
    if (bytesRead > info.size) throw new Error('it grew while it was read');
    return new TextDecoder().decode(bytes.subarray(0, bytesRead));
  } finally {
    await handle.close();
  }
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
export async function readSaved(env: Environment): Promise<{ text: string; where: string } | undefined> {
  const where = await whereSaved(env);
  if (!where) return undefined;
  if ('file' in where) {
    try {
      return { text: await within(readProfileFile(await fileSystem(), where.file), 'reading'), where: where.file };
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

export async function save(profile: Profile): Promise<void> {
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
