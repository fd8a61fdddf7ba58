// Shared by every kernel (prepended by src/gpu/kernels.ts): workgroup indexing over 2-D
// dispatch grids, infinity handling, the lse merge of two partial attentions, and the
// accurate mode's query windows.
// WGSL lets implementations assume that arithmetic never meets an infinity or NaN, so
// -Infinity is only ever produced by bit pattern and recognised by bit pattern, and exp
// arguments are clamped to the finite range. The write modes (WRITE_*) are generated from
// src/codes.ts.

const EPS_F32: f32 = 1.1920928955078125e-7;

// Grids wider than maxComputeWorkgroupsPerDimension spill into y.
fn wg_index(wid: vec3<u32>, nwg: vec3<u32>) -> u32 {
  return wid.x + wid.y * nwg.x;
}

// Bit patterns live in private variables: bitcast of a constant would be constant-
// evaluated, and a constant infinity or NaN is a shader-creation error.
var<private> NEG_INF_BITS: u32 = 0xff800000u;
var<private> NAN_BITS: u32 = 0x7fc00000u;

fn neg_inf() -> f32 {
  return bitcast<f32>(NEG_INF_BITS);
}

fn is_neg_inf(x: f32) -> bool {
  return bitcast<u32>(x) == NEG_INF_BITS;
}

fn quiet_nan() -> f32 {
  return bitcast<f32>(NAN_BITS);
}

// log(1 + x) for x in [0, 1] without losing small x (WGSL has no log1p).
fn log1p_small(x: f32) -> f32 {
  let u = 1.0 + x;
  if (u == 1.0) {
    return x;
  }
  return log(u) * x / (u - 1.0);
}

// (c, lse) for merging part 2 (lse2) into part 1 (lse1): out = c out1 + (1 - c) out2.
// reference: the authors' lse1 - log(c + 2^-23), with the float32 outcome of its
// infinities (both parts empty gives NaN, as in the CPU backend); fixed: log-add-exp.
fn merge_weights(lse1: f32, lse2: f32, mode: u32) -> vec2<f32> {
  let empty1 = is_neg_inf(lse1);
  let empty2 = is_neg_inf(lse2);
  if (mode == WRITE_MERGE_REFERENCE) {
    if (empty1 && empty2) {
      return vec2<f32>(quiet_nan(), quiet_nan());
    }
    if (empty2) {
      return vec2<f32>(1.0, lse1 - log(1.0 + EPS_F32));
    }
    if (empty1) {
      return vec2<f32>(0.0, neg_inf());
    }
    let c = 1.0 / (1.0 + exp(clamp(lse2 - lse1, -88.0, 88.0)));
    return vec2<f32>(c, lse1 - log(c + EPS_F32));
  }
  if (empty2) {
    return vec2<f32>(1.0, lse1);
  }
  if (empty1) {
    return vec2<f32>(0.0, lse2);
  }
  let t = lse2 - lse1;
  let c = 1.0 / (1.0 + exp(clamp(t, -88.0, 88.0)));
  return vec2<f32>(c, max(lse1, lse2) + log1p_small(exp(-abs(t))));
}

// First key position of query qp's window of `win` keys in the accurate mode
// (assembly/attention.ts, windowStart): qp + win_lo, and when not causal kept inside
// [0, nk) so that every window holds win keys.
fn window_start(qp: u32, win_lo: i32, win: u32, causal: bool, nk: u32) -> i32 {
  let lo = i32(qp) + win_lo;
  if (causal) {
    return lo;
  }
  return max(0, min(lo, i32(nk) - i32(win)));
}
