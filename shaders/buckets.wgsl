// The buckets of a hash round (BucketsTask in src/ops.ts; bucketTags in
// assembly/accurate.ts) from LSH keys (original order) and their stable sort perm, by
// binary search over the sorted keys: invocation x writes starts[x] (the first sorted
// position with key >= x) for x <= num_keys, and for sorted position x < count the tag of
// row perm[x]: its key, or -1 when its rank in its bucket is `cap` or more.

// struct Params (the uniform p) is generated from BUCKETS in src/gpu/ops/lsh.ts.

@group(0) @binding(0) var<storage, read> keys: array<i32>;
@group(0) @binding(1) var<storage, read> perm: array<i32>;
@group(0) @binding(2) var<storage, read_write> tags: array<i32>;
@group(0) @binding(3) var<storage, read_write> starts: array<i32>;
@group(0) @binding(4) var<uniform> p: Params;

fn sorted_key(pos: u32) -> i32 {
  return keys[p.keys_off + u32(perm[p.perm_off + pos])];
}

// The first sorted position whose key is >= key (count if none).
fn first_at_least(key: i32) -> u32 {
  var lo = 0u;
  var hi = p.count;
  while (lo < hi) {
    let mid = (lo + hi) / 2u;
    if (sorted_key(mid) < key) {
      lo = mid + 1u;
    } else {
      hi = mid;
    }
  }
  return lo;
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let x = wg_index(wid, nwg) * WG + lid;
  if (x <= p.num_keys) {
    starts[p.starts_off + x] = i32(first_at_least(i32(x)));
  }
  if (x < p.count) {
    let row = u32(perm[p.perm_off + x]);
    let key = keys[p.keys_off + row];
    let rank = x - first_at_least(key);
    tags[p.tags_off + row] = select(-1, key, rank < p.cap);
  }
}
