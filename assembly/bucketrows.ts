// The accurate mode's LSH round for buckets that hold few query rows. A chunk of a long
// prompt on a key-value cache (2048 queries against 64k keys, buckets of about 16 keys)
// gives most buckets one query row, where bucketAttention's tile (K transposed, V
// gathered, four-row micro-tiles) would be built for a single row: here each row works
// alone against the bucket's keys where they lie.
import {
  expShifted, hsum, keyHidden, madd, touchKeys, windowStart, KT,
  maskCausal, maskCausalOffset, maskFlags, maskWinMode, maskWinLo, maskWin, maskKTags, maskNk,
} from './attention';

/** The most query rows of a bucket that bucketRows takes (more share bucketAttention's tile). */
export const BUCKET_ROWS: i32 = 3;

/**
 * The accurate mask's attention (as set: see maskRowAccurate in attention.ts) of the query
 * rows qIdx[qStart .. qStart + nq) (nq <= BUCKET_ROWS) against the key rows kIdx[0 .. kc)
 * (kc <= KT), SIMD builds. Each row takes its mask first, so that hidden keys cost nothing
 * more; then its scores against the visible keys, read in place (lanes along d, four
 * chains); its softmax; P·V and the plain V sum over the visible keys in strips of 16
 * columns held in registers, each column one chain over the keys in order; and one merge
 * into out and lse (log-add-exp), the stats added (cnt, vsum). Scratch: 2 * KT + d f32.
 */
export function bucketRows(
  q: usize, qIdx: usize, qStart: i32, nq: i32, k: usize, v: usize, kIdx: usize, kc: i32,
  d: i32, dv: i32, scale: f32, out: usize, lse: usize, cnt: usize, vsum: usize, scratch: usize,
): void {
  if (!ASC_FEATURE_SIMD) unreachable();
  const dBytes = (<usize>d) << 2;
  const dvBytes = (<usize>dv) << 2;
  const sc = scratch; // [KT]: the visible keys' scores, then their weights
  const rows = sc + ((<usize>KT) << 2); // [KT]: the visible keys' rows
  const qs = rows + ((<usize>KT) << 2); // [d]: the scaled query
  // The bucket's scattered rows first, all at once: their misses overlap.
  store<i32>(sc, touchKeys(k, v, kIdx, kc, dBytes, dvBytes));
  for (let r = 0; r < nq; r++) {
    const qi = load<i32>(qIdx + ((<usize>(qStart + r)) << 2));
    const n = visibleKeys(qi, kIdx, kc, rows);
    if (n == 0) continue;
    const qRow = q + <usize>qi * dBytes;
    for (let c = 0; c < d; c++) store<f32>(qs + ((<usize>c) << 2), load<f32>(qRow + ((<usize>c) << 2)) * scale);
    let m: f32 = -Infinity;
    for (let j = 0; j < n; j++) {
      const s = dot(qs, k + <usize>load<i32>(rows + ((<usize>j) << 2)) * dBytes, d);
      store<f32>(sc + ((<usize>j) << 2), s);
      m = max(m, s);
    }
    const n4 = (n + 3) & ~3;
    for (let j = n; j < n4; j++) store<f32>(sc + ((<usize>j) << 2), -Infinity);
    const l = expShifted(sc, n4, m);
    // The merge: with M = max(lse1, m), lse = M + log(exp(lse1 - M) + l exp(m - M)); the row
    // keeps exp(lse1 - lse) of what it held and takes exp(m - lse) of P·V (unnormalised).
    const lseAt = lse + ((<usize>qi) << 2);
    const lse1 = load<f32>(lseAt);
    const top = max(lse1, m);
    const merged = top + Mathf.log(l * Mathf.exp(m - top) + Mathf.exp(lse1 - top));
    store<f32>(lseAt, merged);
    const cAt = cnt + ((<usize>qi) << 2);
    store<f32>(cAt, load<f32>(cAt) + <f32>n);
    valueStrips(v, rows, sc, n, dv, Mathf.exp(lse1 - merged), Mathf.exp(m - merged), out + <usize>qi * dvBytes, vsum + <usize>qi * dvBytes);
  }
}

// Lists at rows the keys of kIdx[0 .. kc) that the accurate mask leaves visible to query
// row qi (in order), and returns how many.
@inline function visibleKeys(qi: i32, kIdx: usize, kc: i32, rows: usize): i32 {
  const lo = maskWinMode != 0 ? windowStart(qi, maskWinLo, maskWin, maskCausal, maskNk) : 0;
  const hi = lo + maskWin;
  const pos = qi + maskCausalOffset;
  let n = 0;
  for (let j = 0; j < kc; j++) {
    const kp = load<i32>(kIdx + ((<usize>j) << 2));
    const flag = maskFlags != 0 ? load<i32>(maskFlags + ((<usize>kp) << 2)) : 0;
    if (!keyHidden(qi, kp, pos, lo, hi, flag, maskKTags + ((<usize>kp) << 2), (<usize>maskNk) << 2)) {
      store<i32>(rows + ((<usize>n) << 2), kp);
      n++;
    }
  }
  return n;
}

// The dot product of the scaled query qs and key row kr over d: four chains of lanes over
// 16 columns at a time, then one over 4, then the columns past a multiple of 4.
@inline function dot(qs: usize, kr: usize, d: i32): f32 {
  let a0 = f32x4.splat(0);
  let a1 = a0;
  let a2 = a0;
  let a3 = a0;
  let c = 0;
  for (; c + 16 <= d; c += 16) {
    const o = (<usize>c) << 2;
    a0 = madd(v128.load(qs + o), v128.load(kr + o), a0);
    a1 = madd(v128.load(qs + o, 16), v128.load(kr + o, 16), a1);
    a2 = madd(v128.load(qs + o, 32), v128.load(kr + o, 32), a2);
    a3 = madd(v128.load(qs + o, 48), v128.load(kr + o, 48), a3);
  }
  for (; c + 4 <= d; c += 4) a0 = madd(v128.load(qs + ((<usize>c) << 2)), v128.load(kr + ((<usize>c) << 2)), a0);
  const a = f32x4.add(f32x4.add(a0, a1), f32x4.add(a2, a3));
  let s = hsum(a);
  for (; c < d; c++) s += load<f32>(qs + ((<usize>c) << 2)) * load<f32>(kr + ((<usize>c) << 2));
  return s;
}

// out = keep * out + take * sum_j w[j] v[rows[j]] and vs += sum_j v[rows[j]] over the n
// visible keys, 16 columns at a time in registers (then 4, then one), each column one
// chain over the keys in order.
@inline function valueStrips(v: usize, rows: usize, w: usize, n: i32, dv: i32, keep: f32, take: f32, out: usize, vs: usize): void {
  const dvBytes = (<usize>dv) << 2;
  const keep4 = f32x4.splat(keep);
  const take4 = f32x4.splat(take);
  let c = 0;
  for (; c + 16 <= dv; c += 16) {
    const o = (<usize>c) << 2;
    let p0 = f32x4.splat(0);
    let p1 = p0;
    let p2 = p0;
    let p3 = p0;
    let s0 = p0;
    let s1 = p0;
    let s2 = p0;
    let s3 = p0;
    for (let j = 0; j < n; j++) {
      const vr = v + <usize>load<i32>(rows + ((<usize>j) << 2)) * dvBytes + o;
      const wj = v128.load32_splat(w + ((<usize>j) << 2));
      const x0 = v128.load(vr);
      const x1 = v128.load(vr, 16);
      const x2 = v128.load(vr, 32);
      const x3 = v128.load(vr, 48);
      p0 = madd(wj, x0, p0);
      p1 = madd(wj, x1, p1);
      p2 = madd(wj, x2, p2);
      p3 = madd(wj, x3, p3);
      s0 = f32x4.add(s0, x0);
      s1 = f32x4.add(s1, x1);
      s2 = f32x4.add(s2, x2);
      s3 = f32x4.add(s3, x3);
    }
    mergeStrip(out + o, p0, keep4, take4);
    mergeStrip(out + o + 16, p1, keep4, take4);
    mergeStrip(out + o + 32, p2, keep4, take4);
    mergeStrip(out + o + 48, p3, keep4, take4);
    v128.store(vs + o, f32x4.add(v128.load(vs + o), s0));
    v128.store(vs + o + 16, f32x4.add(v128.load(vs + o + 16), s1));
    v128.store(vs + o + 32, f32x4.add(v128.load(vs + o + 32), s2));
    v128.store(vs + o + 48, f32x4.add(v128.load(vs + o + 48), s3));
  }
  for (; c + 4 <= dv; c += 4) {
    const o = (<usize>c) << 2;
    let p = f32x4.splat(0);
    let s = p;
    for (let j = 0; j < n; j++) {
      const x = v128.load(v + <usize>load<i32>(rows + ((<usize>j) << 2)) * dvBytes + o);
      p = madd(v128.load32_splat(w + ((<usize>j) << 2)), x, p);
      s = f32x4.add(s, x);
    }
    mergeStrip(out + o, p, keep4, take4);
    v128.store(vs + o, f32x4.add(v128.load(vs + o), s));
  }
  for (; c < dv; c++) {
    const o = (<usize>c) << 2;
    let p: f32 = 0;
    let s: f32 = 0;
    for (let j = 0; j < n; j++) {
      const x = load<f32>(v + <usize>load<i32>(rows + ((<usize>j) << 2)) * dvBytes + o);
      p += load<f32>(w + ((<usize>j) << 2)) * x;
      s += x;
    }
    store<f32>(out + o, keep * load<f32>(out + o) + take * p);
    store<f32>(vs + o, load<f32>(vs + o) + s);
  }
}

@inline function mergeStrip(at: usize, p: v128, keep4: v128, take4: v128): void {
  v128.store(at, f32x4.add(f32x4.mul(keep4, v128.load(at)), f32x4.mul(take4, p)));
}
