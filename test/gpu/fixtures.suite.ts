// Parity of the WebGPU backend with the authors' code: every case in test/fixtures
// through runHyper in reference mode with the fixture's projections and draws, as
// test/fixtures.test.ts does for the wasm builds, within the same 1e-4 in out and lse.
// Rows with a projection within float rounding of zero (hashKeys in harness.ts) may hash,
// and so differ, otherwise. Node and Deno read the fixtures from disk; in the browser
// page, scripts/test-gpu.mjs serves them under /fixtures/.
import { suite } from '../suite.ts';
import * as assert from 'uvu/assert';
import { createWebGPUBackend } from '../../src/gpu/index.ts';
import { runHyper } from '../../src/hyper.ts';
import { resolveHyperOptions } from '../../src/options.ts';
import { attentionShape } from '../../src/tensor.ts';
import { parseFixture, type Fixture } from '../fixture-format.ts';
import { hashKeys, row } from './harness.ts';

const TOL = 1e-4;

interface FixtureSource {
  where: string;
  names: string[];
  load(name: string): Promise<Fixture>;
}

async function fixtureSource(): Promise<FixtureSource> {
  if (new URL(import.meta.url).protocol === 'file:') {
    // Resolved at run time, so that the browser bundle leaves out its node: imports. The
    // path holds from test/gpu/ (tsx) and from test-artifacts/gpu/ (the bundle) alike.
    const loader = new URL('../../test/fixtures.ts', import.meta.url).href;
    const { FIXTURE_DIR, fixtureNames, loadFixture }: typeof import('../fixtures.ts') = await import(loader);
    return { where: FIXTURE_DIR, names: fixtureNames(), load: loadFixture };
  }
  const get = async (path: string) => {
    const response = await fetch(`/fixtures/${path}`);
    if (!response.ok) throw new Error(`GET /fixtures/${path}: ${response.status}`);
    return response.arrayBuffer();
  };
  const names: string[] = JSON.parse(new TextDecoder().decode(await get('index.json')));
  return {
    where: '/fixtures/ (served by scripts/test-gpu.mjs)',
    names,
    load: (name) => parseFixture(name, (path) => get(`${name}/${path}`)),
  };
}

{
  const { where, names, load } = await fixtureSource();
  const gpu = await createWebGPUBackend();
  const Fixtures = suite('webgpu fixtures (reference mode)');
  Fixtures('fixtures are present', () => {
    assert.ok(names.length >= 6, `expected the reference fixtures in ${where}, found ${names.length}`);
  });
  for (const name of names) {
    Fixtures(`fixture ${name}`, async () => {
      const f = await load(name);
      const [B, H, N, D] = f.shape;
      const ambiguous = new Set<number>();
      for (let i = 0; i < B * H * N; i++) {
        const keys = [f.q, f.k].map((x) => hashKeys(row(x, i, D), f.proj, D, f.lshNumProjs, 'reference'));
        if (keys.some((k) => k.length > 1)) ambiguous.add(i);
      }
      const tensor = (data: Float32Array) => ({ data, shape: f.shape });
      const o = resolveHyperOptions({
        causal: f.causal, blockSize: f.blockSize, sampleSize: f.sampleSize, lshNumProjs: f.lshNumProjs,
        minSeqLen: f.minSeqLen, mode: 'reference', projections: f.proj, ...(f.scale === null ? {} : { scale: f.scale }),
        sampler: ({ index, batch }) => {
          const draw = f.draws[index];
          return f.samples.slice(draw.offset, draw.offset + batch * draw.shape[1] * draw.shape[2]);
        },
      });
      const [q, k, v] = [f.q, f.k, f.v].map(tensor);
      const r = await runHyper(gpu, attentionShape(q, k, v, f.causal), o, q, k, v);
      const bad: number[] = [];
      for (let i = 0; i < B * H * N; i++) {
        let rowOut = 0;
        for (let c = 0; c < D; c++) rowOut = Math.max(rowOut, Math.abs(r.out.data[i * D + c] - f.out[i * D + c]));
        if (!(rowOut <= TOL && Math.abs(r.lse.data[i] - f.lse[i]) <= TOL) && !ambiguous.has(i)) bad.push(i);
      }
      assert.equal(bad.length, 0, `${name}: ${bad.length} rows (${bad.slice(0, 10)}...) differ by more than ${TOL} off a hash boundary`);
    });
  }
}
