// Stable counting sort, pass 3 of 3: each row goes to its key's first slot in its chunk
// (from the scanned histogram) plus its rank among the chunk's earlier rows of the same
// key, which keeps ties in ascending row order. perm[slot] = row.

// struct Params (the uniform p) is generated from SORT_SCATTER in src/gpu/ops/lsh.ts.

@group(0) @binding(0) var<storage, read> keys: array<i32>;
@group(0) @binding(1) var<storage, read> offsets: array<u32>;
@group(0) @binding(2) var<storage, read_write> perm: array<i32>;
@group(0) @binding(3) var<uniform> p: Params;

var<workgroup> tile: array<u32, WG>;

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let chunk = wg_index(wid, nwg);
  if (chunk >= p.chunks) {
    return;
  }
  let i = chunk * WG + lid;
  var key = 0xffffffffu;
  if (i < p.count) {
    key = u32(keys[p.keys_off + i]);
  } else if (i < p.total) {
    key = 0u;
  }
  tile[lid] = key;
  workgroupBarrier();
  if (i >= p.total) {
    return;
  }
  var rank = 0u;
  for (var j = 0u; j < lid; j++) {
    rank += select(0u, 1u, tile[j] == key);
  }
  perm[p.perm_off + offsets[key * p.chunks + chunk] + rank] = i32(i);
}
