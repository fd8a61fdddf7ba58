// Attention of the sorted queries against m sampled sorted keys (SampledTask in
// src/ops.ts): sample j is key row kperm[samples[j]], hidden from sorted query i when
// samples[j] / k_block == min(i / q_block, n_blocks - 1) (the query's own diagonal
// block). lse gets + lse_offset (log(nk / m)); a row whose samples are all hidden gets
// lse -Infinity and out 0. Sorted query i reads Q row qperm[i] and writes destination
// row qperm[i]; pad rows (qperm[i] >= nq_real) compute nothing. Built on lib-attention.wgsl.

// struct Params (the uniform p) is generated from SAMPLED in src/gpu/ops/attention.ts.

@group(0) @binding(5) var<storage, read> qperm: array<i32>;
@group(0) @binding(6) var<storage, read> kperm: array<i32>;
@group(0) @binding(7) var<storage, read> samples: array<i32>;
@group(0) @binding(8) var<uniform> p: Params;

var<private> q_tag: u32;

fn key_row(pos: u32) -> u32 {
  return u32(kperm[p.kperm_off + u32(samples[pos])]);
}

fn key_visible(pos: u32) -> bool {
  return u32(samples[pos]) / p.k_block != q_tag;
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let first = wg_index(wid, nwg) * WG;
  if (first >= p.nq_sorted) {
    return;
  }
  let i = first + lid;
  var row = p.nq_real;
  if (i < p.nq_sorted) {
    row = u32(qperm[p.qperm_off + i]);
  }
  let has_row = row < p.nq_real;
  q_tag = min(i / p.q_block, p.n_blocks - 1u);
  if (has_row) {
    load_query(p.q_off, row, p.scale);
  }
  attend_keys(p.m, p.k_off, p.v_off, lid, has_row);
  if (has_row) {
    write_row(p.out_off, p.lse_off, row, p.mode, 0.0, p.lse_offset);
  }
}
