// Every test file's suites come from here, never from uvu directly. uvu keeps a suite's
// tests until its run(), and silently drops whatever is registered after it. So no test
// file calls run(): the runner (test/run.ts, test/gpu/main.ts) queues a file's suites with
// queueSuites() once the whole file has loaded, top-level awaits included, and a suite that
// is given a test or a hook after that throws instead of losing it.
// test/structure.test.ts checks that no test file goes around this module.
import './defer.ts';
import { suite as uvuSuite, type Callback, type Test } from 'uvu';

/** An uvu suite without run(): its tests run when the runner queues it. */
export interface Suite {
  (title: string, fn: Callback): void;
  only(title: string, fn: Callback): void;
  skip(title?: string, fn?: Callback): void;
  before: Test['before'];
  after: Test['after'];
}

const waiting: (() => void)[] = [];

export function suite(name: string): Suite {
  const inner = uvuSuite(name);
  let queued = false;
  const open = <A extends unknown[]>(what: string, add: (...args: A) => void) => (...args: A) => {
    if (queued) throw new Error(`suite '${name}': ${what} added after the suite was queued to run; register tests at the top level of the file`);
    add(...args);
  };
  const hook = (what: string, h: Test['before']) => Object.assign(open(what, (fn: Callback) => h(fn)), { each: open(`${what}.each`, (fn: Callback) => h.each(fn)) });
  const s = Object.assign(open('a test', (title: string, fn: Callback) => inner(title, fn)), {
    only: open('a test', (title: string, fn: Callback) => inner.only(title, fn)),
    skip: open('a test', (title?: string, fn?: Callback) => inner.skip(title, fn)),
    before: hook('before', inner.before),
    after: hook('after', inner.after),
  });
  waiting.push(() => {
    queued = true;
    inner.run();
  });
  return s;
}

/** Queues every suite made since the last call, in the order they were made (uvu's exec() runs them). */
export function queueSuites(): void {
  for (const queue of waiting.splice(0)) queue();
}
