// A fresh process for test/hardening.test.ts (#8), run under `ulimit -v`: a tiny call, one
// whose 8 GiB result the runtime cannot allocate, and a tiny call after it. Plain JavaScript
// on the built bundle (dist/), because tsx needs more memory than the smaller limit leaves.
// Prints one line 'result {json}' of each call's outcome ('ok' or the error's code) and exits
// by itself.
import { exactAttention } from '../dist/index.js';

const tensor = (n, d) => ({ data: new Float32Array(n * d).fill(0.5), shape: [1, 1, n, d] });
const outcome = (call) => call.then(() => 'ok', (e) => e?.code ?? `${e?.name}: ${e?.message}`);
const small = () => exactAttention(tensor(64, 16), tensor(64, 16), tensor(64, 16), { backend: 'cpu', threads: 1 });

const tiny = await outcome(small());
// out [1, 1, 2^25 - 1, 64]: just under the largest result (2^31 - 1 values) the library allows.
const nq = 2 ** 25 - 1;
const huge = await outcome(exactAttention(tensor(nq, 1), tensor(1, 1), tensor(1, 64), { backend: 'cpu', threads: 1 }));
const after = await outcome(small());
console.log(`result ${JSON.stringify({ tiny, huge, after })}`);
