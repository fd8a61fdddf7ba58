// Exact attention with log-sum-exp: query rows [0, nq) against keys [0, nk), optionally
// causal (key j hidden from query i when j > i + causal_offset). Output row i goes to
// destination row i. Built on lib-attention.wgsl.
// Heads side by side (grid z = head h of the batch): Q, out and lse move on by a stride
// per head, K and V by a stride per key-value head, which is (h + phase) / group
// (grouped-query attention; phase places the batch's first head within its group).

// struct Params (the uniform p) is generated from EXACT in src/gpu/ops/attention.ts.

@group(0) @binding(5) var<uniform> p: Params;

var<private> q_pos: u32;

fn key_row(pos: u32) -> u32 {
  return pos;
}

fn key_visible(pos: u32) -> bool {
  return p.causal == 0u || i32(pos) <= i32(q_pos) + p.causal_offset;
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let first = wg_index(wid, nwg) * WG;
  if (first >= p.nq) {
    return;
  }
  let head = wid.z;
  let kv = (head + p.phase) / p.group;
  // Causal: keys past the workgroup's last query are hidden from all of its rows.
  var n_keys = p.nk;
  if (p.causal != 0u) {
    let last = min(p.nq, first + WG) - 1u;
    n_keys = u32(clamp(i32(last) + p.causal_offset + 1, 0, i32(p.nk)));
  }
  q_pos = first + lid;
  let has_row = q_pos < p.nq;
  if (has_row) {
    load_query(p.q_off + head * p.q_stride, q_pos, p.scale);
  }
  attend_keys(n_keys, p.k_off + kv * p.kv_stride_k, p.v_off + kv * p.kv_stride_v, lid, has_row);
  if (has_row) {
    write_row(p.out_off + head * p.out_stride, p.lse_off + head * p.lse_stride, q_pos, p.mode, 0.0, 0.0);
  }
}
