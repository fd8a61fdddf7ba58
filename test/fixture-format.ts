// The reference fixtures' format (hyperattn-refcheck/1, see ../shared/fixtures/README.md),
// parsed from any source of files: the disk in Node and Deno, HTTP in a browser page.

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

/** Reads a file of one fixture, by its path inside the fixture's folder. */
export type FixtureReader = (path: string) => Promise<ArrayBuffer>;

export async function parseFixture(name: string, read: FixtureReader): Promise<Fixture> {
  const c = JSON.parse(new TextDecoder().decode(await read('case.json')));
  if (c.format !== 'hyperattn-refcheck/1') throw new Error(`${name}: unknown fixture format ${c.format}`);
  const f32 = async (path: string) => new Float32Array(await read(path));
  const i32 = async (path: string) => new Int32Array(await read(path));
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
    q: await f32(c.files.q),
    k: await f32(c.files.k),
    v: await f32(c.files.v),
    proj: await f32(c.files.proj),
    samples: await i32(c.files.samples),
    out: await f32('ref/out.f32'),
    lse: await f32('ref/lse.f32'),
    qhash: await i32('ref/qhash.i32'),
    khash: await i32('ref/khash.i32'),
  };
}
