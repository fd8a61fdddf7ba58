// The accurate mode's attention parts (ColumnsTask, WindowTask, RoundTask, SamplesTask in
// src/ops.ts; the CPU kernels in assembly/accurate.ts): query rows against their keys
// with the accurate mask, writing or lse-merging the row and writing or adding its stats
// (how many keys it counted, the plain sum of their V rows). Built on lib-attention.wgsl
// with STATS = 1. Parts:
//   PART_LIST    rows [q_from, q_to) against the key positions of a list (the columns,
//                or the samples of a segment), shared by the whole workgroup
//   PART_WINDOW  rows against the key range covering every window of the workgroup's
//                rows; key_visible does each row's window test
//   PART_ROUND   sorted query i (qperm) of bucket u against the first `cap` keys of u
//                (kperm from kstarts[u]); composed with lib-tiles-own.wgsl, since the
//                rows of a workgroup may lie in different buckets
// Index data (flags, tags, the list, perms and starts) comes packed in one buffer, idx,
// at the *_at element offsets: separate bindings would pass the 8 storage buffers a
// device is guaranteed.

// struct Params (the uniform p) is generated from ACCURATE in src/gpu/ops/accurate.ts, the
// PART_* and WINDOW_* codes from src/codes.ts.

@group(0) @binding(5) var<storage, read_write> cnt_io: array<f32>;
@group(0) @binding(6) var<storage, read_write> vsum_io: array<f32>;
@group(0) @binding(7) var<storage, read> idx: array<i32>;
@group(0) @binding(8) var<uniform> p: Params;

// this invocation's query row (original position)
var<private> q_pos: u32;
// PART_ROUND: how many keys the row's bucket gives it (key positions past it are hidden)
var<private> own_keys: u32 = 0xffffffffu;
// PART_WINDOW: first key position of the range; PART_ROUND: idx position of the bucket's first key
var<private> k_from: u32;

fn key_row(pos: u32) -> u32 {
  if (p.part == PART_LIST) {
    return u32(idx[p.list_at + pos]);
  }
  if (p.part == PART_WINDOW) {
    return k_from + pos;
  }
  return u32(idx[k_from + pos]);
}

// The mask (AccurateMask in src/ops.ts; maskRowAccurate in assembly/attention.ts): query
// row qp sits at key position qp + causal_offset.
fn hidden(qp: u32, kp: u32) -> bool {
  let causal = p.causal != 0u;
  if (causal && kp > qp + p.causal_offset) {
    return true;
  }
  if (p.use_flags != 0u && idx[p.flags_at + kp] != 0) {
    return true;
  }
  if (p.win_mode != 0u) {
    let lo = window_start(qp, p.win_lo, p.win, causal, p.nk);
    let inside = i32(kp) >= lo && i32(kp) < lo + i32(p.win);
    if (inside == (p.win_mode == WINDOW_HIDE_INSIDE)) {
      return true;
    }
  }
  for (var t = 0u; t < p.rounds; t++) {
    if (idx[p.qtags_at + t * p.nq + qp] == idx[p.ktags_at + t * p.nk + kp]) {
      return true;
    }
  }
  return false;
}

fn key_visible(pos: u32) -> bool {
  return pos < own_keys && !hidden(q_pos, key_row(pos));
}

// The bucket of sorted query position i: the last u < num_keys with qstarts[u] <= i.
fn bucket_of(i: u32) -> u32 {
  var lo = 0u;
  var hi = p.num_keys;
  while (hi - lo > 1u) {
    let mid = (lo + hi) / 2u;
    if (u32(idx[p.qstarts_at + mid]) <= i) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let first = p.q_from + wg_index(wid, nwg) * WG;
  if (first >= p.q_to) {
    return;
  }
  let i = first + lid;
  let has_row = i < p.q_to;
  q_pos = i;
  var n_keys = p.n_list;
  if (p.part == PART_WINDOW) {
    // Window starts never decrease with the row.
    let causal = p.causal != 0u;
    let last = min(p.q_to, first + WG) - 1u;
    let lo = max(0, window_start(first, p.win_lo, p.win, causal, p.nk));
    let hi = min(i32(p.nk), window_start(last, p.win_lo, p.win, causal, p.nk) + i32(p.win));
    k_from = u32(lo);
    n_keys = u32(max(0, hi - lo));
  } else if (p.part == PART_ROUND) {
    // n_keys stays uniform, as attend_keys wants; key_visible hides what the row's
    // bucket does not give it (lib-tiles-own.wgsl skips such keys).
    n_keys = p.cap;
    own_keys = 0u;
    if (has_row) {
      q_pos = u32(idx[p.qperm_at + i]);
      let u = bucket_of(i);
      let start = idx[p.kstarts_at + u];
      k_from = p.kperm_at + u32(start);
      own_keys = min(p.cap, u32(idx[p.kstarts_at + u + 1u] - start));
    }
  }
  if (has_row) {
    load_query(p.q_off, q_pos, p.scale);
  }
  attend_keys(n_keys, p.k_off, p.v_off, lid, has_row);
  if (has_row) {
    write_row(p.out_off, p.lse_off, q_pos, p.mode, 0.0, 0.0);
    let add = p.stats_add != 0u;
    let at = p.cnt_off + q_pos;
    cnt_io[at] = select(0.0, cnt_io[at], add) + stat_count;
    let base = p.vsum_off + q_pos * DV;
    for (var c = 0u; c < DV; c++) {
      vsum_io[base + c] = select(0.0, vsum_io[base + c], add) + stat_vsum[c / 4u][c % 4u];
    }
  }
}
