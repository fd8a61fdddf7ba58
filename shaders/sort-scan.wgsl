// Stable counting sort, pass 2 of 3: exclusive prefix sum, in place, over the key-major
// histogram, which turns counts[key * chunks + c] into the first output slot of key
// `key` in chunk c. One workgroup: each invocation scans a contiguous segment.

// struct Params (the uniform p) is generated from SORT_SCAN in src/gpu/ops/lsh.ts.

@group(0) @binding(0) var<storage, read_write> counts: array<u32>;
@group(0) @binding(1) var<uniform> p: Params;

var<workgroup> partial: array<u32, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
  let seg = (p.length + WG - 1u) / WG;
  let seg_from = min(lid * seg, p.length);
  let seg_to = min(seg_from + seg, p.length);
  var sum = 0u;
  for (var i = seg_from; i < seg_to; i++) {
    sum += counts[i];
  }
  partial[lid] = sum;
  workgroupBarrier();
  // Inclusive Hillis-Steele scan of the segment sums.
  for (var off = 1u; off < WG; off <<= 1u) {
    var add = 0u;
    if (lid >= off) {
      add = partial[lid - off];
    }
    workgroupBarrier();
    partial[lid] += add;
    workgroupBarrier();
  }
  var running = partial[lid] - sum;
  for (var i = seg_from; i < seg_to; i++) {
    let c = counts[i];
    counts[i] = running;
    running += c;
  }
}
