// The reference fixtures' format (hyperattn-refcheck/1, see test/fixtures/README.md), parsed
// from any source of files: the disk in Node and Deno, HTTP in a browser page. The arrays
// are stored gzip-compressed (name + '.gz') and are gunzipped here with the web's
// DecompressionStream, which every runtime of the suites has; each one is checked against
// the SHA-256 its case's SHA256SUMS lists for the authors' file, so the data the tests
// compare are the authors' bit for bit.

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

/** Reads a file of one fixture as stored, by its path inside the fixture's folder. */
export type FixtureReader = (path: string) => Promise<ArrayBuffer>;

const hex = (bytes: ArrayBuffer) => Array.from(new Uint8Array(bytes), (b) => b.toString(16).padStart(2, '0')).join('');

export async function parseFixture(name: string, read: FixtureReader): Promise<Fixture> {
  const text = async (path: string) => new TextDecoder().decode(await read(path));
  const c = JSON.parse(await text('case.json'));
  if (c.format !== 'hyperattn-refcheck/1') throw new Error(`${name}: unknown fixture format ${c.format}`);
  // `sha256sum` lines: '<hex>  <path>'.
  const sums = new Map((await text('SHA256SUMS')).trim().split('\n').map((line) => {
    const [sum, path] = line.split(/\s+\*?/);
    return [path, sum] as const;
  }));
  const array = async (path: string) => {
    const stored = new Blob([await read(`${path}.gz`)]).stream().pipeThrough(new DecompressionStream('gzip'));
    const bytes = await new Response(stored).arrayBuffer();
    const sum = hex(await crypto.subtle.digest('SHA-256', bytes));
    if (sum !== sums.get(path)) throw new Error(`${name}/${path}: SHA-256 ${sum}, not the ${sums.get(path) ?? '(unlisted)'} of SHA256SUMS`);
    return bytes;
  };
  const f32 = async (path: string) => new Float32Array(await array(path));
  const i32 = async (path: string) => new Int32Array(await array(path));
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
