// f32 -> f16 copy of a buffer, for the attention kernels' f16 storage variant (the
// backend's `storage: 'f16'`): two elements per invocation so that every write is a
// whole 32-bit word. Values beyond f16's range are clamped to its largest finite value.

// struct Params (the uniform p) is generated from TO_F16 in src/gpu/bindings.ts.

@group(0) @binding(0) var<storage, read> src: array<f32>;
@group(0) @binding(1) var<storage, read_write> dst: array<vec2<f16>>;
@group(0) @binding(2) var<uniform> p: Params;

const F16_MAX: f32 = 65504.0;

@compute @workgroup_size(WG)
fn main(
  @builtin(workgroup_id) wid: vec3<u32>,
  @builtin(num_workgroups) nwg: vec3<u32>,
  @builtin(local_invocation_index) lid: u32,
) {
  let pair = wg_index(wid, nwg) * WG + lid;
  let i = 2u * pair;
  if (i >= p.count) {
    return;
  }
  var hi = 0.0;
  if (i + 1u < p.count) {
    hi = src[i + 1u];
  }
  let lo = src[i];
  dst[pair] = vec2<f16>(vec2<f32>(clamp(lo, -F16_MAX, F16_MAX), clamp(hi, -F16_MAX, F16_MAX)));
}
