// Runs a command for the test runners (scripts/test.mjs, test-gpu.mjs, test-embedding.mjs)
// and resolves with its exit code and everything it printed. There is no limit on how long
// it may take; it is killed only when it has printed nothing for `silentMs` milliseconds of
// the reference machine (patience() in scripts/pace.mjs: scaled to this machine's pace,
// measured again before it is killed), so a slow machine finishes and a stuck one is caught.
import { spawn } from 'node:child_process';
import { patience } from './pace.mjs';

/** Long enough for the slowest single test (the WebGPU fuzz on a software adapter), on the reference machine. */
export const SILENT_MS = 5 * 60_000;

/**
 * `echo`: pass its output on as it comes. Resolves { code, text }: code -1 when it could
 * not start, null when it was killed; text is stdout and stderr together, a kill explained.
 */
export function runChild(cmd, args, { cwd, env = {}, echo = false, silentMs = SILENT_MS } = {}) {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let text = '';
    const watch = patience(silentMs, (waited) => {
      text += `\nkilled: no output for ${(waited / 1000).toFixed(0)} s\n`;
      if (echo) process.stdout.write(`\nkilled ${cmd}: no output for ${(waited / 1000).toFixed(0)} s\n`);
      child.kill('SIGKILL');
    });
    const take = (chunk) => {
      const s = chunk.toString();
      text += s;
      if (echo) process.stdout.write(s);
      watch.reset();
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    child.on('close', (code) => {
      watch.stop();
      resolve({ code, text });
    });
    child.on('error', (error) => {
      watch.stop();
      resolve({ code: -1, text: `${text}\n${error.message}\n` });
    });
  });
}
