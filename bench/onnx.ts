// The peers: tiny ONNX attention models built in code (a minimal protobuf writer, so no
// binary model is committed) and sessions for onnxruntime-node and onnxruntime-web on them.
// Two graphs: com.microsoft MultiHeadAttention (the fused kernel a real model would use),
// and MatMul-Softmax-MatMul (what onnxruntime-web must fall back to: its fused kernel
// overflows a 32-bit size at n >= 4096).

// --- protobuf wire format (only what ModelProto needs) ---

type Field = Uint8Array;

function varint(value: number): number[] {
  const bytes: number[] = [];
  let v = value;
  while (v >= 0x80) {
    bytes.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  bytes.push(v);
  return bytes;
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Wire type 0: int32/int64/enum fields (non-negative values only, all this file needs). */
function int(field: number, value: number): Field {
  return new Uint8Array([...varint(field * 8), ...varint(value)]);
}

/** Wire type 2: strings and embedded messages. */
function bytes(field: number, body: Uint8Array | string): Field {
  const data = typeof body === 'string' ? new TextEncoder().encode(body) : body;
  return concat([new Uint8Array([...varint(field * 8 + 2), ...varint(data.length)]), data]);
}

/** Wire type 5: a float field. */
function float32(field: number, value: number): Field {
  const out = new Uint8Array(5);
  out[0] = field * 8 + 5;
  new DataView(out.buffer).setFloat32(1, value, true);
  return out;
}

const message = (...fields: Field[]): Uint8Array => concat(fields);

// --- ONNX messages (field numbers from onnx.proto) ---

const FLOAT = 1; // TensorProto.DataType.FLOAT
const ATTR_FLOAT = 1;
const ATTR_INT = 2;
const ATTR_INTS = 7;

type Attribute = { name: string } & ({ f: number } | { i: number } | { ints: number[] });

function attribute(a: Attribute): Field {
  if ('f' in a) return bytes(5, message(bytes(1, a.name), int(20, ATTR_FLOAT), float32(2, a.f)));
  if ('i' in a) return bytes(5, message(bytes(1, a.name), int(20, ATTR_INT), int(3, a.i)));
  return bytes(5, message(bytes(1, a.name), int(20, ATTR_INTS), ...a.ints.map((v) => int(8, v))));
}

interface Node {
  op: string;
  domain?: string;
  inputs: string[];
  outputs: string[];
  attributes?: Attribute[];
}

function node(n: Node, index: number): Field {
  return bytes(
    1,
    message(
      ...n.inputs.map((s) => bytes(1, s)),
      ...n.outputs.map((s) => bytes(2, s)),
      bytes(3, `${n.op}_${index}`),
      bytes(4, n.op),
      ...(n.attributes ?? []).map(attribute),
      ...(n.domain ? [bytes(7, n.domain)] : []),
    ),
  );
}

/** A float tensor value; a string dimension is symbolic, so one model serves every n. */
function valueInfo(field: number, name: string, dims: (number | string)[]): Field {
  const dim = (d: number | string) => bytes(1, typeof d === 'number' ? int(1, d) : bytes(2, d));
  const shape = message(...dims.map(dim));
  return bytes(field, message(bytes(1, name), bytes(2, bytes(1, message(int(1, FLOAT), bytes(2, shape))))));
}

interface Graph {
  nodes: Node[];
  inputs: [string, (number | string)[]][];
  outputs: [string, (number | string)[]][];
  /** Constant float scalars (initializers). */
  scalars?: [string, number][];
  msOpset: boolean;
}

/** A float scalar TensorProto carried as raw little-endian bytes. */
function scalarTensor(name: string, value: number): Uint8Array {
  const raw = new Uint8Array(4);
  new DataView(raw.buffer).setFloat32(0, value, true);
  return message(int(2, FLOAT), bytes(8, name), bytes(9, raw));
}

function model(g: Graph): Uint8Array {
  const graph = message(
    ...g.nodes.map(node),
    bytes(2, 'attention'),
    ...(g.scalars ?? []).map(([name, value]) => bytes(5, scalarTensor(name, value))),
    ...g.inputs.map(([name, dims]) => valueInfo(11, name, dims)),
    ...g.outputs.map(([name, dims]) => valueInfo(12, name, dims)),
  );
  return message(
    int(1, 8), // ir_version
    bytes(2, 'hyperattention-bench'),
    bytes(7, graph),
    bytes(8, message(bytes(1, ''), int(2, 17))),
    ...(g.msOpset ? [bytes(8, message(bytes(1, 'com.microsoft'), int(2, 1)))] : []),
  );
}

/**
 * com.microsoft MultiHeadAttention. Query is [B, n, H * d] (BSNH); key and value are passed
 * as [B, H, n, d] (BNSH, the layout our tensors already have). `kvLength` names the keys'
 * length dimension: the queries' own 'N' by default, another name for fewer queries than
 * keys (decoding).
 */
export function multiHeadAttentionModel(heads: number, scale: number, causal: boolean, kvLength = 'N'): Uint8Array {
  return model({
    nodes: [
      {
        op: 'MultiHeadAttention',
        domain: 'com.microsoft',
        inputs: ['query', 'key', 'value'],
        outputs: ['out'],
        attributes: [
          { name: 'num_heads', i: heads },
          { name: 'scale', f: scale },
          { name: 'unidirectional', i: causal ? 1 : 0 },
        ],
      },
    ],
    inputs: [
      ['query', ['B', 'N', 'HD']],
      ['key', ['B', heads, kvLength, 'D']],
      ['value', ['B', heads, kvLength, 'D']],
    ],
    outputs: [['out', ['B', 'N', 'HD']]],
    msOpset: true,
  });
}

/** softmax(scale * Q K^T) V on [B, H, n, d] tensors, non-causal; materialises n x n scores. */
export function decomposedAttentionModel(scale: number): Uint8Array {
  return model({
    nodes: [
      { op: 'Transpose', inputs: ['key'], outputs: ['kt'], attributes: [{ name: 'perm', ints: [0, 1, 3, 2] }] },
      { op: 'MatMul', inputs: ['query', 'kt'], outputs: ['logits'] },
      { op: 'Mul', inputs: ['logits', 'scale'], outputs: ['scaled'] },
      { op: 'Softmax', inputs: ['scaled'], outputs: ['probs'], attributes: [{ name: 'axis', i: 3 }] },
      { op: 'MatMul', inputs: ['probs', 'value'], outputs: ['out'] },
    ],
    inputs: [
      ['query', ['B', 'H', 'N', 'D']],
      ['key', ['B', 'H', 'N', 'D']],
      ['value', ['B', 'H', 'N', 'D']],
    ],
    scalars: [['scale', scale]],
    outputs: [['out', ['B', 'H', 'N', 'D']]],
    msOpset: false,
  });
}
