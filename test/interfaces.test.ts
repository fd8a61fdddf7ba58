// The binary interfaces between the host and the kernels, checked without a GPU: each
// WGSL kernel's generated struct Params against what its source reads and the layout
// WGSL gives it; the shared codes against the AssemblyScript kernels' copies; and the
// wasm kernels' declared parameters against their signatures and exports.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { suite } from './suite.ts';
import * as assert from 'uvu/assert';
import { KERNEL_CODES, WRITE_CODES } from '../src/codes.ts';
import { instantiateKernels, KERNEL_PARAMS, kernelArgIndexes, kernelArgs, type KernelName } from '../src/cpu/wasm.ts';
import { TO_F16 } from '../src/gpu/bindings.ts';
import { kernelSource, PLAIN, type Kernel } from '../src/gpu/kernels.ts';
import * as accurate from '../src/gpu/ops/accurate.ts';
import * as attention from '../src/gpu/ops/attention.ts';
import * as lsh from '../src/gpu/ops/lsh.ts';
import { layoutOf, packParams, wgslStruct, type ParamsDecl } from '../src/gpu/params.ts';

const test = suite('binary interfaces');

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const isKernel = (x: unknown): x is Kernel => typeof x === 'object' && x !== null && 'params' in x && 'source' in x;
const KERNELS: Kernel[] = [TO_F16, ...[lsh, attention, accurate].flatMap((family) => Object.values(family).filter(isKernel))];
/** Constants the host gives every kernel (any value will do for reading the source). */
const DIMS = { WG: 64, D: 64, D4: 16, DV: 64, DV4: 16, BK: 32, SG_MAX: 32 };

/** The kernel's full source in each variant it is compiled in. */
function sources(k: Kernel): string[] {
  if (!k.libraries.includes('lib-attention')) return [kernelSource(k, { WG: 64 }, PLAIN)];
  return [false, true].map((subgroups) => kernelSource(k, DIMS, { elem: 'f32', subgroups }));
}

/** Source text without comments. */
const code = (wgsl: string) => wgsl.replace(/\/\/.*$/gm, '');

test('every kernel source in shaders/ is declared once', () => {
  const files = readdirSync(join(root, 'shaders')).filter((f) => f.endsWith('.wgsl') && !f.startsWith('lib-'));
  assert.equal([...new Set(KERNELS.map((k) => `${k.source}.wgsl`))].sort(), files.sort());
  assert.is(new Set(KERNELS.map((k) => k.name)).size, KERNELS.length, 'kernel names are unique');
});

test("each kernel's struct Params holds exactly the fields its source reads", () => {
  for (const k of KERNELS) {
    for (const source of sources(k)) {
      const text = code(source);
      assert.is(text.match(/\bstruct Params\b/g)?.length, 1, `${k.name}: one struct Params (the generated one)`);
      const read = new Set([...text.matchAll(/\bp\.([a-z_][a-z0-9_]*)/g)].map((m) => m[1]));
      assert.equal([...read].filter((f) => !(f in k.params)), [], `${k.name}: fields read but not declared`);
      assert.equal(Object.keys(k.params).filter((f) => !read.has(f)), [], `${k.name}: fields declared but never read`);
    }
  }
});

test('each kernel binds its resources 0..n with the uniform p last', () => {
  for (const k of KERNELS) {
    const text = code(sources(k)[0]);
    const bindings = [...text.matchAll(/@group\(0\)\s*@binding\((\d+)\)\s*var<([a-z_, ]+)>\s*(\w+)/g)]
      .map((m) => ({ at: Number(m[1]), space: m[2], name: m[3] }))
      .sort((a, b) => a.at - b.at);
    assert.equal(bindings.map((b) => b.at), bindings.map((_, i) => i), `${k.name}: bindings 0..n`);
    const last = bindings[bindings.length - 1];
    assert.equal([last.space, last.name], ['uniform', 'p'], `${k.name}: the uniform p is the last binding`);
    assert.is(bindings.filter((b) => b.space === 'uniform').length, 1, `${k.name}: one uniform`);
  }
});

test('the shared codes come only from src/codes.ts, and every code a kernel names is one of them', () => {
  for (const k of KERNELS) {
    for (const source of sources(k)) {
      const text = code(source);
      for (const name of Object.keys(KERNEL_CODES)) {
        assert.is(text.match(new RegExp(`\\bconst ${name}\\b`, 'g'))?.length, 1, `${k.name}: ${name} declared once`);
      }
      const named = new Set([...text.matchAll(/\b((?:WRITE|PART|WINDOW)_[A-Z_]+)\b/g)].map((m) => m[1]));
      assert.equal([...named].filter((n) => !(n in KERNEL_CODES)), [], `${k.name}: codes not in src/codes.ts`);
    }
  }
  assert.equal(WRITE_CODES, { write: 0, 'merge-reference': 1, 'merge-fixed': 2 });
});

test('struct layouts follow WGSL: 4-byte scalars packed in order, a uniform buffer a multiple of 16 bytes', () => {
  for (const k of KERNELS) {
    const decl: ParamsDecl = k.params;
    const layout = layoutOf(decl);
    const names = Object.keys(decl);
    assert.equal(layout.fields.map((f) => [f.name, f.type, f.offset]), names.map((n, i) => [n, decl[n], 4 * i]), k.name);
    assert.ok(layout.size % 16 === 0 && layout.size >= 4 * names.length && layout.size < 4 * names.length + 16, `${k.name}: size ${layout.size}`);
    // The generated struct declares the fields in the same order, with the same types.
    const declared = [...wgslStruct(decl).matchAll(/^\s+(\w+): (\w+),$/gm)].map((m) => [m[1], m[2]]);
    assert.equal(declared, Object.entries(decl), k.name);
    // Packing by name puts each value at its field's offset, as its type.
    const values = Object.fromEntries(names.map((n, i) => [n, decl[n] === 'f32' ? i + 0.5 : decl[n] === 'i32' ? -i : i]));
    const data = new DataView(packParams(decl, values));
    assert.is(data.byteLength, layout.size);
    for (const { name, type, offset } of layout.fields) {
      const got = type === 'f32' ? data.getFloat32(offset, true) : type === 'i32' ? data.getInt32(offset, true) : data.getUint32(offset, true);
      assert.is(got, values[name], `${k.name}.${name}`);
    }
  }
});

test('packing refuses a missing field and a value its type cannot hold, rather than wrapping it', () => {
  const decl = { a: 'u32', b: 'i32', c: 'f32' } as const;
  assert.equal([...new Uint32Array(packParams(decl, { a: true, b: -1, c: 0 }))], [1, 0xffffffff, 0, 0]);
  assert.throws(() => packParams(decl, { a: 1, b: 0 } as never), /c: undefined/);
  assert.throws(() => packParams(decl, { a: -1, b: 0, c: 0 }), /a: -1 is not a u32/);
  assert.throws(() => packParams(decl, { a: 1.5, b: 0, c: 0 }), /a: 1.5 is not a u32/);
  assert.throws(() => packParams(decl, { a: 0, b: 2 ** 31, c: 0 }), /is not a i32/);
});

/** `const NAME: i32 = VALUE;` declarations of an AssemblyScript file. */
function assemblyConstants(file: string): Map<string, number> {
  const text = readFileSync(join(root, 'assembly', file), 'utf8');
  return new Map([...text.matchAll(/^(?:export )?const (\w+): i32 = (-?\d+);/gm)].map((m) => [m[1], Number(m[2])]));
}

test("the AssemblyScript kernels' copies of the shared codes agree with src/codes.ts", () => {
  // Their names there, and the code each one is.
  const copies: Record<string, Record<string, keyof typeof KERNEL_CODES>> = {
    'attention.ts': {
      WRITE: 'WRITE_OVERWRITE', MERGE_REFERENCE: 'WRITE_MERGE_REFERENCE', MERGE_FIXED: 'WRITE_MERGE_FIXED',
      WINDOW_IGNORE: 'WINDOW_IGNORE', WINDOW_HIDE_INSIDE: 'WINDOW_HIDE_INSIDE', WINDOW_HIDE_OUTSIDE: 'WINDOW_HIDE_OUTSIDE',
    },
    'accurate.ts': { WRITE: 'WRITE_OVERWRITE' },
  };
  for (const [file, names] of Object.entries(copies)) {
    const constants = assemblyConstants(file);
    for (const [name, code] of Object.entries(names)) {
      assert.is(constants.get(name), KERNEL_CODES[code], `assembly/${file}: ${name} is ${code}`);
    }
  }
});

/** Parameter names of every exported function of the AssemblyScript sources, in order. */
function assemblySignatures(): Map<string, string[]> {
  const signatures = new Map<string, string[]>();
  for (const file of readdirSync(join(root, 'assembly')).filter((f) => f.endsWith('.ts'))) {
    const text = readFileSync(join(root, 'assembly', file), 'utf8');
    for (const m of text.matchAll(/^export function (\w+)\(([^)]*)\)/gm)) {
      signatures.set(m[1], m[2].split(',').map((p) => p.trim()).filter(Boolean).map((p) => p.split(':')[0].trim()));
    }
  }
  return signatures;
}

test("the wasm kernels' declared parameters are their signatures' in assembly/, and their exports take that many", async () => {
  const signatures = assemblySignatures();
  const wasm = await instantiateKernels('scalar');
  for (const [fn, params] of Object.entries(KERNEL_PARAMS)) {
    assert.equal([...params], signatures.get(fn), `${fn}: parameters`);
    assert.is((wasm[fn as KernelName] as (...args: number[]) => void).length, params.length, `${fn}: arity of the export`);
  }
});

test('named arguments map to the positional list, flags as 0 and 1, and a missing one throws', () => {
  const args = { keys: 1, perm: 2, count: 3, numKeys: 4, cap: 5, tags: 6, starts: 7 };
  assert.equal(kernelArgs('bucketTags', args), [1, 2, 3, 4, 5, 6, 7]);
  assert.equal(kernelArgs('remainderSums', { v: 8, nk: 1, dv: 2, causal: true, starts: 3, count: 4, sums: 5 }), [8, 1, 2, 1, 3, 4, 5]);
  assert.equal(kernelArgIndexes('accurateColumns', ['scratch', 'cache']), [18, 19]);
  assert.throws(() => kernelArgs('bucketTags', { ...args, cap: undefined } as never), /bucketTags: no value for cap/);
});

