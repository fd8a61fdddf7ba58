// The probe for heavy columns (ProbeTask in src/ops.ts; probeMass in
// assembly/accurate.ts), in two steps (dispatches) over the same bindings:
//   step 0: one workgroup per probe row p: lse_rows[p], the lse of query rows[p] over
//           every key it may see ([0, nk), or [0, i + causal_offset] when causal)
//   step 1: one invocation per key j: mass[j] = sum over probe rows of their softmax
//           probability of j, for j >= sinks, visible, and outside the row's window
// Scores are recomputed in step 1 rather than kept: an [rows, nk] matrix would not fit.

// struct Params (the uniform p) is generated from PROBE in src/gpu/ops/accurate.ts.

@group(0) @binding(0) var<storage, read> q: array<f32>;
@group(0) @binding(1) var<storage, read> k: array<f32>;
@group(0) @binding(2) var<storage, read> rows: array<i32>;
@group(0) @binding(3) var<storage, read_write> lse_rows: array<f32>;
@group(0) @binding(4) var<storage, read_write> mass: array<f32>;
@group(0) @binding(5) var<uniform> p: Params;

fn score(i: u32, j: u32) -> f32 {
  let qb = p.q_off + i * p.d;
  let kb = p.k_off + j * p.d;
  var dot = 0.0;
  for (var c = 0u; c < p.d; c++) {
    dot += q[qb + c] * k[kb + c];
  }
  return dot * p.scale;
}

// Keys [0, visible) are the ones query row i (at key position i + causal_offset) may see.
fn visible_keys(i: u32) -> u32 {
  return select(p.nk, min(p.nk, i + p.causal_offset + 1u), p.causal != 0u);
}

// Step 0's partial results: each invocation's running max and sum of exp(score - max)
var<workgroup> part_max: array<f32, WG>;
var<workgroup> part_sum: array<f32, WG>;

// Folds (m, s) (a max and a sum of exp(score - m); s = 0: nothing yet) into *mx, *sum.
fn fold(mx: ptr<function, f32>, sum: ptr<function, f32>, m: f32, s: f32) {
  if (s == 0.0) {
    return;
  }
  if (*sum == 0.0) {
    *mx = m;
    *sum = s;
  } else if (m > *mx) {
    *sum = *sum * exp(*mx - m) + s;
    *mx = m;
  } else {
    *sum += s * exp(m - *mx);
  }
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  if (p.step == 0u) {
    // One workgroup per probe row, its invocations taking every WG-th key: short loops
    // (lavapipe was seen to return wrong sums from one invocation looping over thousands
    // of keys).
    let r = wg_index(wid, nwg);
    if (r >= p.count) {
      return;
    }
    let i = u32(rows[p.rows_off + r]);
    let visible = visible_keys(i);
    var mx = 0.0;
    var sum = 0.0;
    for (var j = lid; j < visible; j += WG) {
      fold(&mx, &sum, score(i, j), 1.0);
    }
    part_max[lid] = mx;
    part_sum[lid] = sum;
    workgroupBarrier();
    if (lid == 0u) {
      mx = 0.0;
      sum = 0.0;
      for (var t = 0u; t < WG; t++) {
        fold(&mx, &sum, part_max[t], part_sum[t]);
      }
      lse_rows[r] = select(neg_inf(), mx + log(sum), sum > 0.0);
    }
    return;
  }
  let x = wg_index(wid, nwg) * WG + lid;
  if (x >= p.nk) {
    return;
  }
  var sum = 0.0;
  if (x >= p.sinks) {
    for (var r = 0u; r < p.count; r++) {
      let i = u32(rows[p.rows_off + r]);
      if (x >= visible_keys(i)) {
        continue;
      }
      let lo = window_start(i, p.win_lo, p.win, p.causal != 0u, p.nk);
      if (p.win > 0u && i32(x) >= lo && i32(x) < lo + i32(p.win)) {
        continue;
      }
      sum += exp(score(i, x) - lse_rows[r]);
    }
  }
  mass[p.mass_off + x] = sum;
}
