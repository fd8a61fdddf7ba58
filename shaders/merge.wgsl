// Merge of rows [0, rows) of a partial attention (src, as part 2) into dst (part 1), or a
// plain copy in overwrite mode (MergeTask in src/ops.ts). One invocation per row, since
// every element of a row needs the row's old lse. Built on lib-common.wgsl.

// struct Params (the uniform p) is generated from MERGE in src/gpu/ops/attention.ts.

@group(0) @binding(0) var<storage, read> src_out: array<f32>;
@group(0) @binding(1) var<storage, read> src_lse: array<f32>;
@group(0) @binding(2) var<storage, read_write> dst_out: array<f32>;
@group(0) @binding(3) var<storage, read_write> dst_lse: array<f32>;
@group(0) @binding(4) var<uniform> p: Params;

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let row = wg_index(wid, nwg) * WG + lid;
  if (row >= p.rows) {
    return;
  }
  let src = p.src_out_off + row * p.dv;
  let dst = p.dst_out_off + row * p.dv;
  let lse2 = src_lse[p.src_lse_off + row];
  if (p.mode == WRITE_OVERWRITE) {
    for (var c = 0u; c < p.dv; c++) {
      dst_out[dst + c] = src_out[src + c];
    }
    dst_lse[p.dst_lse_off + row] = lse2;
    return;
  }
  let w = merge_weights(dst_lse[p.dst_lse_off + row], lse2, p.mode);
  for (var c = 0u; c < p.dv; c++) {
    dst_out[dst + c] = w.x * dst_out[dst + c] + (1.0 - w.x) * src_out[src + c];
  }
  dst_lse[p.dst_lse_off + row] = w.y;
}
