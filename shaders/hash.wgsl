// Angular LSH sort keys (HashTask in src/ops.ts): bit t of a row's bin is
// (x . proj[:, t] > 0); the key is gray(bin) in reference mode and the inverse Gray code
// of bin in fixed mode. One invocation per row; the dot products accumulate over the
// head dim in order, like the CPU kernel, so that signs agree except at ties.

// struct Params (the uniform p) is generated from HASH in src/gpu/ops/lsh.ts.

@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> proj: array<f32>;
@group(0) @binding(2) var<storage, read_write> keys: array<i32>;
@group(0) @binding(3) var<uniform> p: Params;

fn inverse_gray(g: u32) -> u32 {
  var b = g;
  for (var shift = 1u; shift < 32u; shift <<= 1u) {
    b ^= b >> shift;
  }
  return b;
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let i = wg_index(wid, nwg) * WG + lid;
  if (i >= p.rows) {
    return;
  }
  let base = p.x_off + i * p.d;
  var bin = 0u;
  for (var t = 0u; t < p.r; t++) {
    var acc = 0.0;
    for (var k = 0u; k < p.d; k++) {
      acc += x[base + k] * proj[k * p.r + t];
    }
    if (acc > 0.0) {
      bin |= 1u << t;
    }
  }
  var key = bin ^ (bin >> 1u);
  if (p.fixed_mode != 0u) {
    key = inverse_gray(bin);
  }
  keys[p.keys_off + i] = i32(key);
}
