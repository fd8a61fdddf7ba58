// A kernel's uniform parameters, declared once as an object of field names and WGSL
// types, in the order of the struct: the WGSL `struct Params` is generated from the
// declaration (kernels.ts puts it into the kernel's source), and the host packs its values
// by name into the bytes that struct lays out. Fields are 32-bit scalars, which WGSL lays
// out 4 bytes apart (align and size 4); a uniform buffer's size is a multiple of 16.
export type ScalarType = 'u32' | 'i32' | 'f32';

/** Field names (the WGSL identifiers, read as p.<name>) and types, in struct order. */
export type ParamsDecl = Readonly<Record<string, ScalarType>>;

/** Values for every field of a declaration; a u32 field also takes a boolean (1 or 0). */
export type ParamValues<P extends ParamsDecl> = { readonly [K in keyof P]: P[K] extends 'u32' ? number | boolean : number };

/** Byte offset of each field, and the struct's size, by WGSL's layout rules. */
export interface ParamsLayout {
  fields: { name: string; type: ScalarType; offset: number }[];
  /** bytes of the uniform buffer: the struct's size rounded up to 16 */
  size: number;
}

const SCALAR = { align: 4, size: 4 };

export function layoutOf(decl: ParamsDecl): ParamsLayout {
  let offset = 0;
  const fields = Object.entries(decl).map(([name, type]) => {
    offset = Math.ceil(offset / SCALAR.align) * SCALAR.align;
    const field = { name, type, offset };
    offset += SCALAR.size;
    return field;
  });
  return { fields, size: Math.max(16, Math.ceil(offset / 16) * 16) };
}

/** The WGSL declaration of the struct. */
export function wgslStruct(decl: ParamsDecl, name = 'Params'): string {
  const fields = Object.entries(decl).map(([field, type]) => `  ${field}: ${type},\n`);
  return `struct ${name} {\n${fields.join('')}}`;
}

/** The values laid out as the struct, little-endian; throws on a missing or unrepresentable value. */
export function packParams<P extends ParamsDecl>(decl: P, values: ParamValues<P>): ArrayBuffer {
  const { fields, size } = layoutOf(decl);
  const data = new DataView(new ArrayBuffer(size));
  for (const { name, type, offset } of fields) {
    const given = values[name];
    const value = typeof given === 'boolean' ? Number(given) : given;
    if (typeof value !== 'number' || !fits(type, value)) {
      throw new Error(`hyperattention: uniform field ${name}: ${String(given)} is not a ${type}`);
    }
    if (type === 'f32') data.setFloat32(offset, value, true);
    else if (type === 'i32') data.setInt32(offset, value, true);
    else data.setUint32(offset, value, true);
  }
  return data.buffer;
}

/** Any number is an f32 (rounded); integers must be in the type's range, not wrapped into it. */
function fits(type: ScalarType, value: number): boolean {
  if (type === 'f32') return true;
  if (!Number.isInteger(value)) return false;
  return type === 'u32' ? value >= 0 && value <= 0xffffffff : value >= -0x80000000 && value <= 0x7fffffff;
}
