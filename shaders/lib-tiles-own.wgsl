// Tiles for lib-attention.wgsl when the rows of a workgroup see different keys (the
// accurate mode's hash rounds: sorted rows of one workgroup may lie in different
// buckets): each invocation reads its own keys from global memory, one key per tile, so
// nothing is shared (no barrier, no shuffle) and a key hidden from the row (key_visible)
// is skipped without being read.

const TILE: u32 = 1u;

var<private> k_reg: array<vec4<f32>, D4>;
var<private> v_reg: array<vec4<f32>, DV4>;

fn tile_k(j: u32, c: u32) -> vec4<f32> {
  return k_reg[c];
}

fn tile_v(j: u32, c: u32) -> vec4<f32> {
  return v_reg[c];
}

fn attend_keys(n_keys: u32, k_off: u32, v_off: u32, lid: u32, has_row: bool) {
  if (!has_row) {
    return;
  }
  for (var pos = 0u; pos < n_keys; pos++) {
    if (!key_visible(pos)) {
      continue;
    }
    let row = key_row(pos);
    for (var c = 0u; c < D4; c++) {
      k_reg[c] = load_k4(k_off + row * D, 4u * c);
    }
    for (var c = 0u; c < DV4; c++) {
      v_reg[c] = load_v4(v_off + row * DV, 4u * c);
    }
    fold_tile(pos, 1u, true);
  }
}
