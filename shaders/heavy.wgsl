// The accurate mode's heavy columns (HeavyTask in src/ops.ts; src/heavy.ts is the same
// selection on the CPU), in one workgroup, so that the probe's masses never leave the GPU:
//   cols = [0, sinks), then the `count` keys j >= sinks of largest mass[j] (ties to the
//   lower position), ascending; flags[j] = 1 for every column, 0 for every other key.
// The threshold (the count-th largest mass) by radix select over the masses' bits, 8 bits
// a pass (non-negative floats order as their bits do); then each invocation's run of keys
// is compacted in order, its offsets from prefix sums over the invocations.

// struct Params (the uniform p) is generated from HEAVY in src/gpu/ops/accurate.ts.

@group(0) @binding(0) var<storage, read> mass: array<f32>;
@group(0) @binding(1) var<storage, read_write> cols: array<i32>;
@group(0) @binding(2) var<storage, read_write> flags: array<i32>;
@group(0) @binding(3) var<uniform> p: Params;

var<workgroup> hist: array<atomic<u32>, 256>;
// (threshold bits so far, how many at them are still wanted), as invocation 0 found them
var<workgroup> chosen: vec2<u32>;
var<workgroup> sums: array<u32, WG>;

// A key's mass as ordered bits (masses are sums of probabilities: non-negative).
fn bits(j: u32) -> u32 {
  let m = mass[p.mass_off + j];
  return select(0u, bitcast<u32>(m), m > 0.0);
}

// Inclusive prefix sum of `value` over the workgroup's invocations.
fn prefix_sum(lid: u32, value: u32) -> u32 {
  sums[lid] = value;
  workgroupBarrier();
  for (var off = 1u; off < WG; off <<= 1u) {
    let other = sums[select(0u, lid - off, lid >= off)];
    let v = sums[lid] + select(0u, other, lid >= off);
    workgroupBarrier();
    sums[lid] = v;
    workgroupBarrier();
  }
  return sums[lid];
}

@compute @workgroup_size(WG)
fn main(@builtin(local_invocation_index) lid: u32) {
  // The threshold: the count-th largest bits among keys [sinks, nk), digit by digit.
  var prefix = 0u;
  var need = p.count;
  for (var digit = 0u; digit < 4u; digit++) {
    let shift = 24u - 8u * digit;
    let high = select(0u, 0xffffffffu << ((shift + 8u) & 31u), digit > 0u);
    for (var b = lid; b < 256u; b += WG) {
      atomicStore(&hist[b], 0u);
    }
    workgroupBarrier();
    for (var j = p.sinks + lid; j < p.nk; j += WG) {
      let x = bits(j);
      if ((x & high) == (prefix & high)) {
        atomicAdd(&hist[(x >> shift) & 255u], 1u);
      }
    }
    workgroupBarrier();
    if (lid == 0u) {
      var above = 0u;
      var bin = 255u;
      loop {
        let c = atomicLoad(&hist[bin]);
        if (above + c >= need || bin == 0u) {
          break;
        }
        above += c;
        bin -= 1u;
      }
      chosen = vec2<u32>(prefix | (bin << shift), need - above);
    }
    workgroupBarrier();
    prefix = chosen.x;
    need = chosen.y;
    workgroupBarrier();
  }

  // This invocation's run of keys, and what it keeps: all above the threshold, and those
  // at it while fewer than `need` at it come before them.
  let n = p.nk - min(p.sinks, p.nk);
  let run = (n + WG - 1u) / WG;
  let first = p.sinks + min(n, lid * run);
  let last = p.sinks + min(n, (lid + 1u) * run);
  var above = 0u;
  var at = 0u;
  for (var j = first; j < last; j++) {
    let x = bits(j);
    above += select(0u, 1u, x > prefix);
    at += select(0u, 1u, x == prefix);
  }
  let at_before = prefix_sum(lid, at) - at;
  let take_at = min(at, need - min(need, at_before));
  let kept = above + take_at;
  var out = p.sinks + prefix_sum(lid, kept) - kept;
  var seen_at = at_before;
  for (var j = first; j < last; j++) {
    let x = bits(j);
    var take = x > prefix;
    if (x == prefix) {
      take = seen_at < need;
      seen_at++;
    }
    if (take) {
      cols[p.cols_off + out] = i32(j);
      out++;
    }
    flags[p.flags_off + j] = select(0, 1, take);
  }
  for (var j = lid; j < min(p.sinks, p.nk); j += WG) {
    cols[p.cols_off + j] = i32(j);
    flags[p.flags_off + j] = 1;
  }
}
