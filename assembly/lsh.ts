// Angular LSH: sign bits of x against r Gaussian projections, packed into a bin, turned
// into a sort key. reference mode: key = gray(bin) (the authors' code); fixed mode: key =
// inverse Gray code of bin, so neighbouring keys differ in one bit.

export function grayCode(bin: i32): i32 {
  return bin ^ (bin >> 1);
}

export function inverseGrayCode(bin: i32): i32 {
  let x = bin;
  let shift = 1;
  while (shift < 32) {
    x ^= x >> shift;
    shift <<= 1;
  }
  return x;
}

/**
 * keys[i] for rows x[i, 0..d) (f32, row-major), projections proj[d, r] (row-major),
 * r <= 16. scratch holds d * 16 f32: the projections padded to 16 columns.
 */
export function lshKeys(
  x: usize, n: i32, d: i32, proj: usize, r: i32, mode: i32, keys: usize, scratch: usize,
): void {
  // Pad each projection row to 16 lanes so four vectors cover any r <= 16.
  for (let k = 0; k < d; k++) {
    for (let t = 0; t < 16; t++) {
      const value: f32 = t < r ? load<f32>(proj + ((<usize>(k * r + t)) << 2)) : 0;
      store<f32>(scratch + ((<usize>(k * 16 + t)) << 2), value);
    }
  }
  const vectors = (r + 3) >> 2;
  for (let i = 0; i < n; i++) {
    const row = x + ((<usize>i * <usize>d) << 2);
    let bin = 0;
    if (ASC_FEATURE_SIMD) {
      let a0 = f32x4.splat(0);
      let a1 = f32x4.splat(0);
      let a2 = f32x4.splat(0);
      let a3 = f32x4.splat(0);
      for (let k = 0; k < d; k++) {
        const xs = f32x4.splat(load<f32>(row + ((<usize>k) << 2)));
        const p = scratch + ((<usize>k * 16) << 2);
        a0 = f32x4.add(a0, f32x4.mul(xs, v128.load(p)));
        if (vectors > 1) a1 = f32x4.add(a1, f32x4.mul(xs, v128.load(p, 16)));
        if (vectors > 2) a2 = f32x4.add(a2, f32x4.mul(xs, v128.load(p, 32)));
        if (vectors > 3) a3 = f32x4.add(a3, f32x4.mul(xs, v128.load(p, 48)));
      }
      const zero = f32x4.splat(0);
      bin =
        i32x4.bitmask(f32x4.gt(a0, zero)) |
        (i32x4.bitmask(f32x4.gt(a1, zero)) << 4) |
        (i32x4.bitmask(f32x4.gt(a2, zero)) << 8) |
        (i32x4.bitmask(f32x4.gt(a3, zero)) << 12);
    } else {
      for (let t = 0; t < r; t++) {
        let acc: f32 = 0;
        for (let k = 0; k < d; k++) {
          acc += load<f32>(row + ((<usize>k) << 2)) * load<f32>(scratch + ((<usize>(k * 16 + t)) << 2));
        }
        if (acc > 0) bin |= 1 << t;
      }
    }
    bin &= (1 << r) - 1;
    store<i32>(keys + ((<usize>i) << 2), mode == 0 ? grayCode(bin) : inverseGrayCode(bin));
  }
}
