// Tiles for lib-attention.wgsl on any device: BK keys' K and V rows staged in workgroup
// memory by the whole workgroup, between barriers.

const TILE: u32 = BK;

var<workgroup> k_tile: array<vec4<f32>, BK * D4>;
var<workgroup> v_tile: array<vec4<f32>, BK * DV4>;

fn tile_k(j: u32, c: u32) -> vec4<f32> {
  return k_tile[j * D4 + c];
}

fn tile_v(j: u32, c: u32) -> vec4<f32> {
  return v_tile[j * DV4 + c];
}

// Key positions [0, n_keys) tile by tile. Every invocation of the workgroup calls this
// with the same n_keys (it has barriers); only `has_row` ones fold the tiles.
fn attend_keys(n_keys: u32, k_off: u32, v_off: u32, lid: u32, has_row: bool) {
  for (var t0 = 0u; t0 < n_keys; t0 += BK) {
    let kc = min(BK, n_keys - t0);
    workgroupBarrier();
    for (var e = lid; e < BK * D4; e += WG) {
      let j = e / D4;
      var x = vec4<f32>(0.0);
      if (j < kc) {
        x = load_k4(k_off + key_row(t0 + j) * D, 4u * (e % D4));
      }
      k_tile[e] = x;
    }
    for (var e = lid; e < BK * DV4; e += WG) {
      let j = e / DV4;
      var x = vec4<f32>(0.0);
      if (j < kc) {
        x = load_v4(v_off + key_row(t0 + j) * DV, 4u * (e % DV4));
      }
      v_tile[e] = x;
    }
    workgroupBarrier();
    if (has_row) {
      fold_tile(t0, kc, true);
    }
  }
}
