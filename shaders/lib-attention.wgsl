// Shared core of exact.wgsl, block.wgsl, sampled.wgsl and accurate.wgsl: one invocation
// per query row, keys visited tile by tile with online softmax and accumulation in f32,
// then the row is written or lse-merged into its destination row. Where a tile's K and V
// rows live is the business of one of the libraries composed with this one:
//   lib-tiles-workgroup.wgsl  tiles of BK keys staged in workgroup memory (any device)
//   lib-tiles-subgroup.wgsl   one key per lane, passed around by subgroup shuffles
//   lib-tiles-own.wgsl        each invocation reads its own keys, one at a time
// Each defines const TILE (most keys per tile), fn tile_k(j, c) and fn tile_v(j, c) (vec4
// c of the K and V rows of the tile's key j) and fn attend_keys(n_keys, k_off, v_off,
// lid, has_row), which every invocation calls with the same n_keys.
// The including kernel defines
//   fn key_row(pos: u32) -> u32       row (in the bound K/V views) of key position pos
//   fn key_visible(pos: u32) -> bool  false hides key position pos from this invocation's query
// and the host prepends: alias elem (storage type of Q, K, V), const D, D4, DV, DV4 (head
// dims, and in vec4s), WG (invocations per workgroup), BK or SG_MAX for the tiles, and
// STATS (1: also count the visible keys and sum their V rows, for the accurate mode's
// parts; 0: the other kernels, where the compiler drops that work).

@group(0) @binding(0) var<storage, read> q_in: array<elem>;
@group(0) @binding(1) var<storage, read> k_in: array<elem>;
@group(0) @binding(2) var<storage, read> v_in: array<elem>;
@group(0) @binding(3) var<storage, read_write> out_io: array<f32>;
@group(0) @binding(4) var<storage, read_write> lse_io: array<f32>;

var<private> q_row: array<vec4<f32>, D4>;
var<private> acc: array<vec4<f32>, DV4>;
var<private> row_max: f32;
var<private> row_sum: f32;
var<private> seen: bool;
// STATS: the number of keys this row counted and the plain sum of their V rows
var<private> stat_count: f32;
var<private> stat_vsum: array<vec4<f32>, DV4>;

// Elements [i, i + 4) of a row starting at base, zero past the row's width (D or DV).
fn load_q4(base: u32, i: u32) -> vec4<f32> {
  var x = vec4<f32>(0.0);
  for (var e = 0u; e < 4u; e++) {
    if (i + e < D) {
      x[e] = f32(q_in[base + i + e]);
    }
  }
  return x;
}

fn load_k4(base: u32, i: u32) -> vec4<f32> {
  var x = vec4<f32>(0.0);
  for (var e = 0u; e < 4u; e++) {
    if (i + e < D) {
      x[e] = f32(k_in[base + i + e]);
    }
  }
  return x;
}

fn load_v4(base: u32, i: u32) -> vec4<f32> {
  var x = vec4<f32>(0.0);
  for (var e = 0u; e < 4u; e++) {
    if (i + e < DV) {
      x[e] = f32(v_in[base + i + e]);
    }
  }
  return x;
}

// Query row `row` of the bound Q view, pre-scaled so that scores are plain dot products.
fn load_query(q_off: u32, row: u32, scale: f32) {
  let base = q_off + row * D;
  for (var c = 0u; c < D4; c++) {
    q_row[c] = load_q4(base, 4u * c) * scale;
  }
}

// Folds key positions [t0, t0 + kc) of the current tile into this invocation's row. Every
// key's dot product is formed, visible or not, because under lib-tiles-subgroup.wgsl
// tile_k and tile_v are subgroup shuffles that all lanes must execute together.
fn fold_tile(t0: u32, kc: u32, has_row: bool) {
  var s: array<f32, TILE>;
  var tile_max = 0.0;
  var any_visible = false;
  for (var j = 0u; j < kc; j++) {
    var a = vec4<f32>(0.0);
    for (var c = 0u; c < D4; c++) {
      a += q_row[c] * tile_k(j, c);
    }
    let x = (a.x + a.y) + (a.z + a.w);
    s[j] = x;
    if (has_row && key_visible(t0 + j)) {
      tile_max = select(x, max(tile_max, x), any_visible);
      any_visible = true;
    }
  }
  let m_new = select(tile_max, max(row_max, tile_max), seen);
  if (any_visible && seen && m_new > row_max) {
    let alpha = exp(row_max - m_new);
    row_sum *= alpha;
    for (var c = 0u; c < DV4; c++) {
      acc[c] *= alpha;
    }
  }
  for (var j = 0u; j < kc; j++) {
    let visible = any_visible && has_row && key_visible(t0 + j);
    var p = 0.0;
    if (visible) {
      p = exp(s[j] - m_new);
    }
    row_sum += p;
    // A weight rather than a branch: every lane must execute tile_v.
    let counted = select(0.0, 1.0, visible);
    if (STATS != 0u) {
      stat_count += counted;
    }
    for (var c = 0u; c < DV4; c++) {
      let v = tile_v(j, c);
      acc[c] += p * v;
      if (STATS != 0u) {
        stat_vsum[c] += counted * v;
      }
    }
  }
  if (any_visible) {
    row_max = m_new;
    seen = true;
  }
}

// Writes (or merges as part 2) the finished row into destination row `dst`. `phantom`
// zero keys (logit 0, value 0) join the softmax; lse_add is added to a non-empty lse.
// A row that saw no key (and no phantom) gets out 0 and lse -Infinity.
fn write_row(out_off: u32, lse_off: u32, dst: u32, mode: u32, phantom: f32, lse_add: f32) {
  var m = select(0.0, row_max, seen);
  var l = row_sum;
  var factor = 1.0;
  if (phantom > 0.0) {
    let m2 = max(m, 0.0);
    factor = select(0.0, exp(m - m2), seen);
    l = l * factor + phantom * exp(-m2);
    m = m2;
  }
  var lse2 = neg_inf();
  var scale = 0.0;
  if (l > 0.0) {
    scale = factor / l;
    lse2 = m + log(l) + lse_add;
  }
  let base = out_off + dst * DV;
  let lse_at = lse_off + dst;
  if (mode == WRITE_OVERWRITE) {
    for (var c = 0u; c < DV; c++) {
      out_io[base + c] = acc[c / 4u][c % 4u] * scale;
    }
    lse_io[lse_at] = lse2;
    return;
  }
  let w = merge_weights(lse_io[lse_at], lse2, mode);
  let c2 = (1.0 - w.x) * scale;
  for (var c = 0u; c < DV; c++) {
    out_io[base + c] = w.x * out_io[base + c] + c2 * acc[c / 4u][c % 4u];
  }
  lse_io[lse_at] = w.y;
}
