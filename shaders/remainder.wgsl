// The accurate mode's remainder (RemainderTask in src/ops.ts; remainderMerge in
// assembly/accurate.ts), in three steps (dispatches) over the same bindings. The sum of V over the
// keys a row may see ([0, nk), or [0, i + causal_offset] when causal) comes from per-chunk prefix sums:
//   step 0: one invocation per (chunk of CHUNK key rows, column): the chunk's V sum
//   step 1: one invocation per column: exclusive prefix over chunks, and the total
//   step 2: one invocation per query row: the remainder's estimate from the row's
//           samples, merged into out and lse by exact log-add-exp
// aux packs what would otherwise pass the 8 storage bindings a device is guaranteed:
// the exact parts' counts, the samples' counts and lse, and the chunk sums.

const CHUNK: u32 = 64u;

// struct Params (the uniform p) is generated from REMAINDER in src/gpu/ops/accurate.ts.

@group(0) @binding(0) var<storage, read> v: array<f32>;
@group(0) @binding(1) var<storage, read_write> out_io: array<f32>;
@group(0) @binding(2) var<storage, read_write> lse_io: array<f32>;
@group(0) @binding(3) var<storage, read> vsum_e: array<f32>;
@group(0) @binding(4) var<storage, read> s_out: array<f32>;
@group(0) @binding(5) var<storage, read> vsum_s: array<f32>;
@group(0) @binding(6) var<storage, read_write> aux: array<f32>;
@group(0) @binding(7) var<uniform> p: Params;

// Sum of V column c over key rows [lo, hi).
fn v_sum(lo: u32, hi: u32, c: u32) -> f32 {
  var s = 0.0;
  for (var j = lo; j < hi; j++) {
    s += v[p.v_off + j * p.dv + c];
  }
  return s;
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let x = wg_index(wid, nwg) * WG + lid;
  if (p.step == 0u) {
    if (x >= p.chunks * p.dv) {
      return;
    }
    let chunk = x / p.dv;
    let lo = chunk * CHUNK;
    aux[p.sums_at + x] = v_sum(lo, min(p.nk, lo + CHUNK), x % p.dv);
    return;
  }
  if (p.step == 1u) {
    if (x >= p.dv) {
      return;
    }
    var running = 0.0;
    for (var chunk = 0u; chunk < p.chunks; chunk++) {
      let at = p.sums_at + chunk * p.dv + x;
      let s = aux[at];
      aux[at] = running;
      running += s;
    }
    aux[p.sums_at + p.chunks * p.dv + x] = running;
    return;
  }
  let i = x;
  if (i >= p.nq) {
    return;
  }
  let causal = p.causal != 0u;
  let visible = select(p.nk, min(i + p.causal_offset + 1u, p.nk), causal);
  let rest = f32(visible) - aux[p.cnt_e_at + i];
  let c = aux[p.cnt_s_at + i];
  let lse_s = aux[p.s_lse_at + i];
  if (rest < 0.5 || c < 0.5 || is_neg_inf(lse_s)) {
    return;
  }
  let lse2 = lse_s + log(rest / c);
  let w = merge_weights(lse_io[p.lse_off + i], lse2, WRITE_MERGE_FIXED);
  // Keys [0, visible): the chunks before the last one's, then that chunk's rows.
  let chunk = select(p.chunks, (visible - 1u) / CHUNK, causal);
  for (var col = 0u; col < p.dv; col++) {
    var running = aux[p.sums_at + chunk * p.dv + col];
    if (causal) {
      running += v_sum(chunk * CHUNK, visible, col);
    }
    let mean_r = (running - vsum_e[p.vsum_e_off + i * p.dv + col]) / rest;
    let mean_s = vsum_s[p.vsum_s_off + i * p.dv + col] / c;
    let est = s_out[p.s_out_off + i * p.dv + col] + p.cv * (mean_r - mean_s);
    let at = p.out_off + i * p.dv + col;
    out_io[at] = w.x * out_io[at] + (1.0 - w.x) * est;
  }
  lse_io[p.lse_off + i] = w.y;
}
