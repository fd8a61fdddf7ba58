// Loads the reference fixtures (outputs of the authors' code with given projections and
// draws, format hyperattn-refcheck/1) from ../shared/fixtures beside the repository, or
// from the folder named by HYPERATTENTION_FIXTURES.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const FIXTURE_DIR =
  process.env.HYPERATTENTION_FIXTURES ?? join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'shared', 'fixtures');

export interface FixtureDraw {
  high: number;
  shape: [number, number, number];
  offset: number;
}

export interface Fixture {
  name: string;
  shape: [number, number, number, number];
  causal: boolean;
  blockSize: number;
  sampleSize: number;
  lshNumProjs: number;
  minSeqLen: number;
  scale: number | null;
  draws: FixtureDraw[];
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  proj: Float32Array;
  samples: Int32Array;
  out: Float32Array;
  lse: Float32Array;
  qhash: Int32Array;
  khash: Int32Array;
}

function f32(path: string): Float32Array {
  const b = readFileSync(path);
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

function i32(path: string): Int32Array {
  const b = readFileSync(path);
  return new Int32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

export function fixtureNames(): string[] {
  if (!existsSync(FIXTURE_DIR)) return [];
  return readdirSync(FIXTURE_DIR).filter((f) => existsSync(join(FIXTURE_DIR, f, 'case.json'))).sort();
}

export function loadFixture(name: string): Fixture {
  const dir = join(FIXTURE_DIR, name);
  const c = JSON.parse(readFileSync(join(dir, 'case.json'), 'utf8'));
  if (c.format !== 'hyperattn-refcheck/1') throw new Error(`${name}: unknown fixture format ${c.format}`);
  return {
    name,
    shape: c.shape,
    causal: c.causal,
    blockSize: c.block_size,
    sampleSize: c.sample_size,
    lshNumProjs: c.lsh_num_projs,
    minSeqLen: c.min_seq_len,
    scale: c.scale,
    draws: c.draws,
    q: f32(join(dir, c.files.q)),
    k: f32(join(dir, c.files.k)),
    v: f32(join(dir, c.files.v)),
    proj: f32(join(dir, c.files.proj)),
    samples: i32(join(dir, c.files.samples)),
    out: f32(join(dir, 'ref', 'out.f32')),
    lse: f32(join(dir, 'ref', 'lse.f32')),
    qhash: i32(join(dir, 'ref', 'qhash.i32')),
    khash: i32(join(dir, 'ref', 'khash.i32')),
  };
}
