// Block-diagonal attention over LSH-sorted rows (BlockTask in src/ops.ts). Sorted query i
// reads Q row qperm[i] and lies in block min(i / q_block, n_blocks - 1); it attends to
// sorted keys [blk * k_block, min((blk + 1) * k_block, nk)), read through kperm, plus
// the phantom zero keys of a short last block when phantom_keys is set. Its result goes
// to destination row qperm[i]; pad rows (qperm[i] >= nq_real) compute nothing.
// Workgroups are laid out block-major, wg_per_block per block, so that all invocations
// of a workgroup share one key block. Built on lib-attention.wgsl.

// struct Params (the uniform p) is generated from BLOCK in src/gpu/ops/attention.ts.

@group(0) @binding(5) var<storage, read> qperm: array<i32>;
@group(0) @binding(6) var<storage, read> kperm: array<i32>;
@group(0) @binding(7) var<uniform> p: Params;

var<private> k_from: u32;

fn key_row(pos: u32) -> u32 {
  return u32(kperm[p.kperm_off + k_from + pos]);
}

fn key_visible(pos: u32) -> bool {
  return true;
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let w = wg_index(wid, nwg);
  let blk = w / p.wg_per_block;
  if (blk >= p.n_blocks) {
    return;
  }
  let q_from = blk * p.q_block;
  var q_to = min(p.nq_sorted, q_from + p.q_block);
  if (blk == p.n_blocks - 1u) {
    q_to = p.nq_sorted;
  }
  let first = q_from + (w % p.wg_per_block) * WG;
  if (first >= q_to) {
    return;
  }
  let first_key = blk * p.k_block;
  k_from = first_key;
  let kc = select(0u, min(p.k_block, p.nk - first_key), p.nk > first_key);
  let i = first + lid;
  var row = p.nq_real;
  if (i < q_to) {
    row = u32(qperm[p.qperm_off + i]);
  }
  let has_row = row < p.nq_real;
  if (has_row) {
    load_query(p.q_off, row, p.scale);
  }
  attend_keys(kc, p.k_off, p.v_off, lid, has_row);
  let phantom = select(0.0, f32(p.k_block - kc), p.phantom_keys != 0u);
  if (has_row) {
    write_row(p.out_off, p.lse_off, row, p.mode, phantom, 0.0);
  }
}
