// The check the error suites share: bad input rejects with the right HyperAttentionError
// before any work. Apart from util.ts, which the Deno example imports and which therefore
// must not import uvu.
import * as assert from 'uvu/assert';
import { HyperAttentionError, type ErrorCode } from '../src/errors.ts';

/**
 * Awaits a call that must reject with a HyperAttentionError of `code` whose message matches
 * `pattern`, having done no work first (the call gets an onProgress that records any).
 */
export async function rejects(code: ErrorCode, pattern: RegExp, call: (o: { onProgress: () => void }) => Promise<unknown>) {
  let progressed = false;
  try {
    await call({ onProgress: () => { progressed = true; } });
  } catch (error) {
    assert.instance(error, HyperAttentionError);
    const e = error as HyperAttentionError;
    assert.is(e.code, code, e.message);
    assert.match(e.message, pattern);
    assert.not.ok(progressed, 'work was done before the error');
    return;
  }
  assert.unreachable(`expected ${code}`);
}
