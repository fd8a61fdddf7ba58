// Tiles for lib-attention.wgsl on devices with subgroups: no workgroup memory and no
// barrier. Each lane loads one key's K and V rows into registers and the subgroup reads
// them with subgroupShuffle, so a tile is as many keys as the subgroup has active lanes.
// (Software adapters run barrier-heavy kernels several times slower; on GPUs, measure
// before preferring either.) Lanes are ranked among the active ones through a ballot,
// so a partial subgroup still covers every key. The host prepends SG_MAX (the adapter's
// largest subgroup size) and the directive that lets shuffles sit under the loops'
// subgroup-uniform control flow.

const TILE: u32 = SG_MAX;

var<private> k_reg: array<vec4<f32>, D4>;
var<private> v_reg: array<vec4<f32>, DV4>;
// lanes[r]: subgroup_invocation_id of the active lane of rank r
var<private> lanes: array<u32, SG_MAX>;

fn tile_k(j: u32, c: u32) -> vec4<f32> {
  return subgroupShuffle(k_reg[c], lanes[j]);
}

fn tile_v(j: u32, c: u32) -> vec4<f32> {
  return subgroupShuffle(v_reg[c], lanes[j]);
}

fn attend_keys(n_keys: u32, k_off: u32, v_off: u32, lid: u32, has_row: bool) {
  var mask = subgroupBallot(true);
  var count = 0u;
  for (var w = 0u; w < 4u; w++) {
    var bits = mask[w];
    while (bits != 0u) {
      lanes[count] = 32u * w + countTrailingZeros(bits);
      bits &= bits - 1u;
      count++;
    }
  }
  let rank = subgroupExclusiveAdd(1u);
  for (var t0 = 0u; t0 < n_keys; t0 += count) {
    let kc = min(count, n_keys - t0);
    if (rank < kc) {
      let row = key_row(t0 + rank);
      for (var c = 0u; c < D4; c++) {
        k_reg[c] = load_k4(k_off + row * D, 4u * c);
      }
      for (var c = 0u; c < DV4; c++) {
        v_reg[c] = load_v4(v_off + row * DV, 4u * c);
      }
    }
    fold_tile(t0, kc, has_row);
  }
}
