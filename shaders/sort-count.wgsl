// Stable counting sort, pass 1 of 3 (SortTask in src/ops.ts): per-chunk key histogram.
// Rows [0, count) take keys[i]; rows [count, total) are pads with key 0. Chunk c is rows
// [c * WG, (c + 1) * WG); counts is key-major, counts[key * chunks + c], zeroed before.

// struct Params (the uniform p) is generated from SORT_COUNT in src/gpu/ops/lsh.ts.

@group(0) @binding(0) var<storage, read> keys: array<i32>;
@group(0) @binding(1) var<storage, read_write> counts: array<atomic<u32>>;
@group(0) @binding(2) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let chunk = wg_index(wid, nwg);
  let i = chunk * WG + lid;
  if (chunk >= p.chunks || i >= p.total) {
    return;
  }
  var key = 0u;
  if (i < p.count) {
    key = u32(keys[p.keys_off + i]);
  }
  atomicAdd(&counts[key * p.chunks + chunk], 1u);
}
