// Tiled exact attention with log-sum-exp (online softmax, never an n x n matrix), over
// rows read directly or through index lists. One core serves full exact attention
// (causal or not), the block-diagonal part over LSH-sorted rows, and attention against
// sampled keys with the own-block mask; results are written or lse-merged in place.
//
// Work is organised as: a chunk of QC query rows (scaled copy in scratch), against tiles
// of KT keys (K transposed, V in column blocks, both in scratch), in micro-tiles of 4 query
// rows (see the micro-kernels). Scores for a micro-tile are 4 x KT; keys are the vector
// lanes, so any head dim works.

// Each chunk reads every key tile from memory once: 256 rows read them half as often as
// 128 (about 4% faster at n = 4096), while the chunk's queries and accumulators (256 x d
// each) stay in L2.
const QC: i32 = 256;
export const KT: i32 = 64;
// Query rows per micro-tile (the micro-kernels' constant offsets assume MR = 4, KT = 64).
const MR: i32 = 4;
const EPS_F32: f32 = 1.1920928955078125e-7; // 2^-23, float32 epsilon (reference merge)

// write modes (ops.ts WriteMode)
const WRITE: i32 = 0;
const MERGE_REFERENCE: i32 = 1;
export const MERGE_FIXED: i32 = 2;

// mask kinds
const MASK_NONE: i32 = 0;
const MASK_CAUSAL: i32 = 1;
const MASK_OWN_BLOCK: i32 = 2;
export const MASK_ACCURATE: i32 = 3;

// stats modes: per query row, the count of keys a part counted and the plain sum of their V
// rows (the accurate mode's remainder estimator needs both, see accurate.ts)
export const STATS_NONE: i32 = 0;
export const STATS_WRITE: i32 = 1;
export const STATS_ADD: i32 = 2;

// The accurate mode's mask (MASK_ACCURATE), in original row positions of the head: set by
// accurate.ts before each attendCore call rather than threaded through its arguments.
// Key kp is hidden from query row qp when causal and kp > qp + maskCausalOffset (the row's
// key position: queries are the last nq of nk positions); when flags[kp] != 0 (counted by
// the columns part); when the window test says so (1: hide kp inside the window of qp,
// 2: hide kp outside it; see windowStart); or when qTags[t][qp] == kTags[t][kp] for
// t < rounds (the same LSH bucket in an earlier hash round; a key past a bucket's cap has
// tag -1, which no query has).
// window modes of the accurate mask
export const WINDOW_IGNORE: i32 = 0;
export const WINDOW_HIDE_INSIDE: i32 = 1;
export const WINDOW_HIDE_OUTSIDE: i32 = 2;

export let maskCausal: bool = false;
export let maskCausalOffset: i32 = 0;
export let maskFlags: usize = 0;
export let maskWinMode: i32 = 0;
export let maskWinLo: i32 = 0;
export let maskWin: i32 = 0;
export let maskRounds: i32 = 0;
export let maskQTags: usize = 0;
export let maskKTags: usize = 0;
export let maskNq: i32 = 0;
export let maskNk: i32 = 0;

/**
 * First key position of query qp's window of win keys: qp + winLo, and when not causal
 * kept inside [0, nk) so that every window holds win keys (and win >= nk holds them all).
 */
@inline export function windowStart(qp: i32, winLo: i32, win: i32, causal: bool, nk: i32): i32 {
  const lo = qp + winLo;
  return causal ? lo : max(0, min(lo, nk - win));
}

// The most LSH tables a plan uses (the verified ladder's wide rung has 16; the option allows 8).
const MAX_ROUNDS: i32 = 32;

// Bits of a tile's summary of its keys' tags in one round: bit (tag & (TAG_BITS - 1)) is
// set when some key has that tag, so that a query whose bit is clear shares no key's
// bucket in that round.
const TAG_BITS: i32 = 512;
const TAG_WORDS: i32 = TAG_BITS / 32;
// i32 of a tile's mask data: KT each of positions, flags and MAX_ROUNDS rows of tags, then
// each round's tag summary.
const MASK_TILE_WORDS: i32 = KT * (2 + MAX_ROUNDS) + MAX_ROUNDS * TAG_WORDS;

// Per tile, what the accurate mask needs of its keys, loaded once (the keys of a bucket
// or of the samples sit at scattered positions): positions, column flags, each round's
// tags and their summaries, at tileKeys (MASK_TILE_WORDS i32). Returns whether some key
// of the tile is flagged.
@inline function loadMaskTile(tileKeys: usize, kc: i32): bool {
  let anyFlag = false;
  const flagsAt = tileKeys + ((<usize>KT) << 2);
  const bitsAt = tileKeys + ((<usize>(KT * (2 + MAX_ROUNDS))) << 2);
  memory.fill(bitsAt, 0, (<usize>(maskRounds * TAG_WORDS)) << 2);
  for (let j = 0; j < kc; j++) {
    const kp = load<i32>(tileKeys + ((<usize>j) << 2));
    let flag = 0;
    if (maskFlags != 0) flag = load<i32>(maskFlags + ((<usize>kp) << 2));
    store<i32>(flagsAt + ((<usize>j) << 2), flag);
    anyFlag = anyFlag || flag != 0;
    for (let t = 0; t < maskRounds; t++) {
      const tag = load<i32>(maskKTags + ((<usize>(t * maskNk + kp)) << 2));
      store<i32>(flagsAt + ((<usize>((t + 1) * KT + j)) << 2), tag);
      // A key past its bucket's cap (tag -1) is never hidden by its tag.
      if (tag >= 0) {
        const word = bitsAt + ((<usize>(t * TAG_WORDS + ((tag & (TAG_BITS - 1)) >> 5))) << 2);
        store<i32>(word, load<i32>(word) | (1 << (tag & 31)));
      }
    }
  }
  return anyFlag;
}

// Whether the accurate mask hides key position kp from query row qp (at key position pos,
// its window [lo, hi)): causally, flagged (flag != 0), by the window mode, or in an earlier
// round's bucket of the query, the key's tag of round t at tags + t * tagStride (a key past
// its bucket's cap has tag -1, which no query has).
@inline export function keyHidden(qp: i32, kp: i32, pos: i32, lo: i32, hi: i32, flag: i32, tags: usize, tagStride: usize): bool {
  let hide = (maskCausal && kp > pos) || flag != 0;
  if (!hide && maskWinMode != 0) {
    const inside = kp >= lo && kp < hi;
    hide = maskWinMode == WINDOW_HIDE_INSIDE ? inside : !inside;
  }
  for (let t = 0; t < maskRounds && !hide; t++) {
    hide = load<i32>(maskQTags + ((<usize>(t * maskNq + qp)) << 2)) == load<i32>(tags + <usize>t * tagStride);
  }
  return hide;
}

// Hides (score -Infinity) the tile's keys that the accurate mask hides from query qp,
// and returns how many; when stats are kept, their V rows leave the row's sum. kpMin and
// kpMax bound the tile's positions, so that most rows skip the per-key test.
@inline function maskRowAccurate(
  qp: i32, s: usize, tileKeys: usize, kc: i32, kpMin: i32, kpMax: i32, anyFlag: bool, tagBits: usize,
  stats: bool, vsRow: usize, vt: usize, dvp: i32,
): i32 {
  const lo = maskWinMode != 0 ? windowStart(qp, maskWinLo, maskWin, maskCausal, maskNk) : 0;
  const hi = lo + maskWin;
  const pos = qp + maskCausalOffset;
  let maybe = anyFlag || (maskCausal && kpMax > pos);
  if (maskWinMode == WINDOW_HIDE_INSIDE) maybe = maybe || (kpMax >= lo && kpMin < hi);
  else if (maskWinMode == WINDOW_HIDE_OUTSIDE) maybe = maybe || kpMin < lo || kpMax >= hi;
  // The tile's tag summaries (loadMaskTile) rule out most rows' buckets at once.
  for (let t = 0; t < maskRounds && !maybe; t++) {
    const qt = load<i32>(maskQTags + ((<usize>(t * maskNq + qp)) << 2));
    const word = load<i32>(tagBits + ((<usize>(t * TAG_WORDS + ((qt & (TAG_BITS - 1)) >> 5))) << 2));
    maybe = ((word >>> (qt & 31)) & 1) != 0;
  }
  if (!maybe) return 0;
  const flagsAt = tileKeys + ((<usize>KT) << 2);
  let hidden = 0;
  if (ASC_FEATURE_SIMD) {
    // Four keys at a time: each test gives a lane mask; hidden lanes become -Infinity.
    const pos4 = i32x4.splat(pos);
    const lo4 = i32x4.splat(lo);
    const hi4 = i32x4.splat(hi);
    const zero = i32x4.splat(0);
    const negInf = f32x4.splat(-Infinity);
    for (let j = 0; j < kc; j += 4) {
      const kp = v128.load(tileKeys + ((<usize>j) << 2));
      let hide = i32x4.ne(v128.load(flagsAt + ((<usize>j) << 2)), zero);
      if (maskCausal) hide = v128.or(hide, i32x4.gt_s(kp, pos4));
      if (maskWinMode != 0) {
        const inside = v128.and(i32x4.ge_s(kp, lo4), i32x4.lt_s(kp, hi4));
        hide = v128.or(hide, maskWinMode == WINDOW_HIDE_INSIDE ? inside : v128.not(inside));
      }
      for (let t = 0; t < maskRounds; t++) {
        const qt = i32x4.splat(load<i32>(maskQTags + ((<usize>(t * maskNq + qp)) << 2)));
        hide = v128.or(hide, i32x4.eq(qt, v128.load(flagsAt + ((<usize>((t + 1) * KT + j)) << 2))));
      }
      let bits = i32x4.bitmask(hide);
      if (j + 4 > kc) bits &= (1 << (kc - j)) - 1;
      if (bits == 0) continue;
      const at = s + ((<usize>j) << 2);
      v128.store(at, v128.bitselect(negInf, v128.load(at), hide));
      hidden += <i32>popcnt(bits);
      if (stats) {
        for (let e = 0; e < 4; e++) {
          if (bits & (1 << e)) addKeyV(vsRow, vt, j + e, dvp, -1);
        }
      }
    }
    return hidden;
  }
  for (let j = 0; j < kc; j++) {
    const kp = load<i32>(tileKeys + ((<usize>j) << 2));
    const flagAt = flagsAt + ((<usize>j) << 2);
    if (keyHidden(qp, kp, pos, lo, hi, load<i32>(flagAt), flagAt + ((<usize>KT) << 2), (<usize>KT) << 2)) {
      store<f32>(s + ((<usize>j) << 2), -Infinity);
      if (stats) addKeyV(vsRow, vt, j, dvp, -1);
      hidden++;
    }
  }
  return hidden;
}

// The accurate mask of a window row (keys at consecutive positions from tilePos, the mask
// in mode WINDOW_HIDE_OUTSIDE): hides the keys [jFrom, jTo) of the tile outside the run its
// window leaves visible to row qp (and, causal, past its position), and the flagged keys
// in the run, as two fills and (only where the tile holds a flagged key) a test per key of
// the run. Returns whether it hid any.
@inline function hideOutsideWindow(qp: i32, s: usize, tileKeys: usize, jFrom: i32, jTo: i32, tilePos: i32, anyFlag: bool): bool {
  const lo = windowStart(qp, maskWinLo, maskWin, maskCausal, maskNk) - tilePos;
  let hi = lo + maskWin;
  if (maskCausal) hi = min(hi, qp + maskCausalOffset + 1 - tilePos);
  const a = min(jTo, max(jFrom, lo));
  const b = min(jTo, max(a, hi));
  for (let j = jFrom; j < a; j++) store<f32>(s + ((<usize>j) << 2), -Infinity);
  for (let j = b; j < jTo; j++) store<f32>(s + ((<usize>j) << 2), -Infinity);
  let hid = a > jFrom || b < jTo;
  if (anyFlag) {
    const flagsAt = tileKeys + ((<usize>KT) << 2);
    for (let j = a; j < b; j++) {
      if (load<i32>(flagsAt + ((<usize>j) << 2)) != 0) {
        store<f32>(s + ((<usize>j) << 2), -Infinity);
        hid = true;
      }
    }
  }
  return hid;
}

@inline function paddedDv(dv: i32): i32 {
  return (dv + 7) & ~7;
}

/**
 * Bytes of one tile's slot in a tile cache: K transposed, V, the mask's per-key data and the
 * tile's bounds and flag (16 bytes).
 */
export function tileCacheSlotBytes(d: i32, dv: i32): i32 {
  const dvp = paddedDv(dv);
  return (d * KT + KT * dvp + MASK_TILE_WORDS) * 4 + 16;
}

/**
 * Bytes of a cache for the tiles of a key list of nk keys shared by every chunk of a call,
 * or 0 where the list is too long to be worth it (beyond TILE_CACHE_KEYS keys).
 */
export function tileCacheBytes(d: i32, dv: i32, nk: i32): i32 {
  if (nk > TILE_CACHE_KEYS) return 0;
  return ((nk + KT - 1) / KT) * tileCacheSlotBytes(d, dv);
}
const TILE_CACHE_KEYS: i32 = 4096;

/** Bytes of scratch the attention exports need for head dims d, dv and m samples. */
export function attentionScratchBytes(d: i32, dv: i32, m: i32): i32 {
  const dvp = paddedDv(dv);
  const floats = QC * d + d * KT + KT * dvp + QC * dvp + 2 * QC + MR * KT + MASK_TILE_WORDS + QC * dvp + QC + dvp +
    KT + 2 * MR;
  return floats * 4 + m * 8 + 64 + (m > 0 ? tileCacheBytes(d, dv, m) + 16 : 0);
}

// a * b + c: one fused op where the engine has relaxed SIMD, else a multiply and an add.
@inline export function madd(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_madd(a, b, c);
  return f32x4.add(f32x4.mul(a, b), c);
}

// The lane-wise max of scores (never NaN): one instruction where the engine has relaxed
// SIMD; the strict max also orders -0 below +0 and propagates NaN, in several.
@inline export function vmax(a: v128, b: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_max(a, b);
  return f32x4.max(a, b);
}

// exp(x) for x <= 0 (x may be -inf), four lanes, relative error below 2e-7; lanes below
// -87 (incl. -inf) give exactly 0. x = n ln2 + r with |r| <= ln2 / 2 (ln2 in two parts, so
// that r is exact enough); adding 1.5 * 2^23 + 127 rounds x log2(e) to the integer n in the
// low mantissa bits, already biased, so a shift makes s = 2^n; exp(r) = 1 + r p(r), p of
// degree 4 fitted for the least maximum relative error on [-ln2/2, ln2/2]; the result is
// s + (s r) p(r). 13 operations with fused multiply-adds.
@inline export function expNonPositive(x: v128): v128 {
  const magic = f32x4.splat(12583039.0);
  let n = madd(x, f32x4.splat(1.44269504088896341), magic);
  const s = i32x4.shl(n, 23);
  n = f32x4.sub(n, magic);
  let r = madd(n, f32x4.splat(-0.693359375), x);
  r = madd(n, f32x4.splat(2.12194440e-4), r);
  let p = madd(f32x4.splat(0.008313740603625774), r, f32x4.splat(0.04190408065915108));
  p = madd(p, r, f32x4.splat(0.16667281091213226));
  p = madd(p, r, f32x4.splat(0.49999096989631653));
  p = madd(p, r, f32x4.splat(0.9999998211860657));
  return v128.andnot(madd(f32x4.mul(r, s), p, s), f32x4.lt(x, f32x4.splat(-87.0)));
}

// The sum of a vector's four lanes, left to right.
@inline export function hsum(a: v128): f32 {
  return f32x4.extract_lane(a, 0) + f32x4.extract_lane(a, 1) + f32x4.extract_lane(a, 2) + f32x4.extract_lane(a, 3);
}

// Scores s[0 .. n4) (n4 a multiple of 4, -inf past the real ones) become exp(s - m) in
// place, four at a time; returns their sum.
@inline export function expShifted(s: usize, n4: i32, m: f32): f32 {
  const m4 = f32x4.splat(m);
  let l4 = f32x4.splat(0);
  for (let j = 0; j < n4; j += 4) {
    const at = s + ((<usize>j) << 2);
    const p = expNonPositive(f32x4.sub(v128.load(at), m4));
    v128.store(at, p);
    l4 = f32x4.add(l4, p);
  }
  return hsum(l4);
}

// The micro-kernels below work on MR query rows at a time against one key tile, in
// layouts chosen so that every load in their inner loops is a base pointer plus a constant
// offset (no per-load address arithmetic, one pointer increment per unrolled step):
// - query rows interleaved per micro-tile: row r's c-th value at qs + (c * MR + r) * 4;
// - K transposed: kt[c][j], KT keys per row;
// - V in column blocks of 8: value c of key j at vt + ((c >> 3) * KT * 8 + j * 8 + (c & 7)) * 4;
// - scores: sc[r][j], KT per row.
// Each score is one chain of multiply-adds over c in order, and each output one chain over
// j in order, whichever micro-tile or job a row falls in: results never depend on the split.

// Bytes between consecutive keys' blocks of 8 V values, and between V column blocks.
const VB_KEY: usize = 32;
const VB_BLOCK: usize = <usize>KT * VB_KEY;
const KT_ROW: usize = (<usize>KT) << 2;

// sc[r][j] = sum_c q[r][c] * kt[c][j] for the MR rows of a micro-tile, j < width (a
// multiple of 8); rowMax[r] = max_j sc[r][j]. Rows of kt are ktRow bytes apart, rows of sc
// scRow bytes (a tile's: KT keys each).
@inline function scoresTile(
  qs: usize, kt: usize, sc: usize, d: i32, width: i32, rowMax: usize, ktRow: usize = KT_ROW, scRow: usize = KT_ROW,
): void {
  if (ASC_FEATURE_SIMD) {
    let m0 = f32x4.splat(-Infinity), m1 = m0, m2 = m0, m3 = m0;
    for (let j0 = 0; j0 < width; j0 += 8) {
      let s00 = f32x4.splat(0), s01 = s00, s10 = s00, s11 = s00;
      let s20 = s00, s21 = s00, s30 = s00, s31 = s00;
      let kp = kt + ((<usize>j0) << 2);
      let qp = qs;
      // One step per iteration: V8 unrolls this loop itself, while unrolling it here lets
      // binaryen fold each accumulator's steps into one nested chain (serial, and spilling).
      for (let c = 0; c < d; c++) {
        const k0 = v128.load(kp), k1 = v128.load(kp, 16);
        const q0 = v128.load32_splat(qp), q1 = v128.load32_splat(qp, 4);
        const q2 = v128.load32_splat(qp, 8), q3 = v128.load32_splat(qp, 12);
        s00 = madd(q0, k0, s00); s01 = madd(q0, k1, s01);
        s10 = madd(q1, k0, s10); s11 = madd(q1, k1, s11);
        s20 = madd(q2, k0, s20); s21 = madd(q2, k1, s21);
        s30 = madd(q3, k0, s30); s31 = madd(q3, k1, s31);
        kp += ktRow;
        qp += 16;
      }
      const o = sc + ((<usize>j0) << 2);
      if (scRow == KT_ROW) {
        // A tile's rows: constant offsets.
        v128.store(o, s00); v128.store(o, s01, 16);
        v128.store(o, s10, 256); v128.store(o, s11, 272);
        v128.store(o, s20, 512); v128.store(o, s21, 528);
        v128.store(o, s30, 768); v128.store(o, s31, 784);
      } else {
        const o1 = o + scRow, o2 = o1 + scRow, o3 = o2 + scRow;
        v128.store(o, s00); v128.store(o, s01, 16);
        v128.store(o1, s10); v128.store(o1, s11, 16);
        v128.store(o2, s20); v128.store(o2, s21, 16);
        v128.store(o3, s30); v128.store(o3, s31, 16);
      }
      m0 = vmax(m0, vmax(s00, s01));
      m1 = vmax(m1, vmax(s10, s11));
      m2 = vmax(m2, vmax(s20, s21));
      m3 = vmax(m3, vmax(s30, s31));
    }
    store<f32>(rowMax, maxLanes(m0));
    store<f32>(rowMax, maxLanes(m1), 4);
    store<f32>(rowMax, maxLanes(m2), 8);
    store<f32>(rowMax, maxLanes(m3), 12);
  } else {
    for (let r = 0; r < MR; r++) {
      let mx: f32 = -Infinity;
      for (let j = 0; j < width; j++) {
        let acc: f32 = 0;
        for (let c = 0; c < d; c++) {
          acc += load<f32>(qs + ((<usize>(c * MR + r)) << 2)) * load<f32>(kt + <usize>c * ktRow + ((<usize>j) << 2));
        }
        store<f32>(sc + <usize>r * scRow + ((<usize>j) << 2), acc);
        mx = max(mx, acc);
      }
      store<f32>(rowMax + ((<usize>r) << 2), mx);
    }
  }
}

@inline function maxLanes(m: v128): f32 {
  return max(max(f32x4.extract_lane(m, 0), f32x4.extract_lane(m, 1)),
    max(f32x4.extract_lane(m, 2), f32x4.extract_lane(m, 3)));
}

// acc[r][c] = acc[r][c] * alpha[r] + sum_{j < width} sc[r][j] * V[j][c] for the MR rows of a
// micro-tile (acc rows dvp apart, sc rows scRow bytes apart), c < dvp. V value c of key j at
// vt + (c >> 3) * blockStep + j * keyStep + (c & 7) * 4: a tile's blocked V (VB_BLOCK,
// VB_KEY), or rows of dvp values (32, dvp * 4).
@inline function accumulateTile(
  sc: usize, vt: usize, acc: usize, alpha: usize, width: i32, dvp: i32, blockStep: usize = VB_BLOCK, keyStep: usize = VB_KEY,
  scRow: usize = KT_ROW,
): void {
  const accRow = (<usize>dvp) << 2;
  if (ASC_FEATURE_SIMD) {
    for (let c = 0; c < dvp; c += 8) {
      const a0 = acc + ((<usize>c) << 2);
      const a1 = a0 + accRow, a2 = a1 + accRow, a3 = a2 + accRow;
      let x = v128.load32_splat(alpha);
      let o00 = f32x4.mul(v128.load(a0), x), o01 = f32x4.mul(v128.load(a0, 16), x);
      x = v128.load32_splat(alpha, 4);
      let o10 = f32x4.mul(v128.load(a1), x), o11 = f32x4.mul(v128.load(a1, 16), x);
      x = v128.load32_splat(alpha, 8);
      let o20 = f32x4.mul(v128.load(a2), x), o21 = f32x4.mul(v128.load(a2, 16), x);
      x = v128.load32_splat(alpha, 12);
      let o30 = f32x4.mul(v128.load(a3), x), o31 = f32x4.mul(v128.load(a3, 16), x);
      let vp = vt + <usize>(c >> 3) * blockStep;
      let sp = sc;
      for (let j = 0; j < width; j++) {
        const v0 = v128.load(vp), v1 = v128.load(vp, 16);
        // A tile's rows (scRow KT_ROW) at constant offsets: no address arithmetic.
        const tile = scRow == KT_ROW;
        const p0 = v128.load32_splat(sp);
        const p1 = tile ? v128.load32_splat(sp, 256) : v128.load32_splat(sp + scRow);
        const p2 = tile ? v128.load32_splat(sp, 512) : v128.load32_splat(sp + 2 * scRow);
        const p3 = tile ? v128.load32_splat(sp, 768) : v128.load32_splat(sp + 3 * scRow);
        o00 = madd(p0, v0, o00); o01 = madd(p0, v1, o01);
        o10 = madd(p1, v0, o10); o11 = madd(p1, v1, o11);
        o20 = madd(p2, v0, o20); o21 = madd(p2, v1, o21);
        o30 = madd(p3, v0, o30); o31 = madd(p3, v1, o31);
        vp += keyStep;
        sp += 4;
      }
      v128.store(a0, o00); v128.store(a0, o01, 16);
      v128.store(a1, o10); v128.store(a1, o11, 16);
      v128.store(a2, o20); v128.store(a2, o21, 16);
      v128.store(a3, o30); v128.store(a3, o31, 16);
    }
  } else {
    for (let r = 0; r < MR; r++) {
      const arow = acc + <usize>r * accRow;
      const a = load<f32>(alpha + ((<usize>r) << 2));
      for (let c = 0; c < dvp; c++) {
        const at = arow + ((<usize>c) << 2);
        store<f32>(at, load<f32>(at) * a);
      }
      for (let j = 0; j < width; j++) {
        const p = load<f32>(sc + <usize>r * scRow + ((<usize>j) << 2));
        if (p == 0) continue;
        for (let c = 0; c < dvp; c++) {
          const at = arow + ((<usize>c) << 2);
          const vAt = vt + <usize>(c >> 3) * blockStep + <usize>j * keyStep + ((<usize>(c & 7)) << 2);
          store<f32>(at, load<f32>(at) + p * load<f32>(vAt));
        }
      }
    }
  }
}

// Byte offset of V value c of key j in a tile's blocked V.
@inline function vIndex(j: i32, c: i32): usize {
  return <usize>(c >> 3) * VB_BLOCK + <usize>j * VB_KEY + ((<usize>(c & 7)) << 2);
}

// dst[0..dvp) += sign * V[j] (key j of a tile's blocked V).
@inline function addKeyV(dst: usize, vt: usize, j: i32, dvp: i32, sign: f32): void {
  const src = vt + <usize>j * VB_KEY;
  if (ASC_FEATURE_SIMD) {
    const sv = f32x4.splat(sign);
    for (let c = 0; c < dvp; c += 8) {
      const at = dst + ((<usize>c) << 2);
      const from = src + <usize>(c >> 3) * VB_BLOCK;
      v128.store(at, madd(sv, v128.load(from), v128.load(at)));
      v128.store(at, madd(sv, v128.load(from, 16), v128.load(at, 16)), 16);
    }
  } else {
    for (let c = 0; c < dvp; c++) {
      const at = dst + ((<usize>c) << 2);
      store<f32>(at, load<f32>(at) + sign * load<f32>(vt + vIndex(j, c)));
    }
  }
}

// Four rows r0..r3 (d values each), times `scale` where `scaled`, interleaved from dst:
// value c of row r at dst + c * stride + r * 4. 4 x 4 blocks are transposed in registers,
// then the last d % 4 values go one at a time (the same products either way).
@inline function transposeRows(
  r0: usize, r1: usize, r2: usize, r3: usize, dst: usize, d: i32, stride: usize, scaled: bool, scale: f32,
): void {
  const sv = f32x4.splat(scale);
  const d4 = d & ~3;
  for (let c = 0; c < d4; c += 4) {
    const at = (<usize>c) << 2;
    let a = v128.load(r0 + at), b = v128.load(r1 + at);
    let e = v128.load(r2 + at), f = v128.load(r3 + at);
    if (scaled) {
      a = f32x4.mul(a, sv);
      b = f32x4.mul(b, sv);
      e = f32x4.mul(e, sv);
      f = f32x4.mul(f, sv);
    }
    const ab0 = f32x4.shuffle(a, b, 0, 4, 1, 5), ab1 = f32x4.shuffle(a, b, 2, 6, 3, 7);
    const ef0 = f32x4.shuffle(e, f, 0, 4, 1, 5), ef1 = f32x4.shuffle(e, f, 2, 6, 3, 7);
    v128.store(dst, f32x4.shuffle(ab0, ef0, 0, 1, 4, 5));
    v128.store(dst + stride, f32x4.shuffle(ab0, ef0, 2, 3, 6, 7));
    v128.store(dst + 2 * stride, f32x4.shuffle(ab1, ef1, 0, 1, 4, 5));
    v128.store(dst + 3 * stride, f32x4.shuffle(ab1, ef1, 2, 3, 6, 7));
    dst += 4 * stride;
  }
  for (let c = d4; c < d; c++) {
    const at = (<usize>c) << 2;
    store<f32>(dst, scaled ? load<f32>(r0 + at) * scale : load<f32>(r0 + at));
    store<f32>(dst, scaled ? load<f32>(r1 + at) * scale : load<f32>(r1 + at), 4);
    store<f32>(dst, scaled ? load<f32>(r2 + at) * scale : load<f32>(r2 + at), 8);
    store<f32>(dst, scaled ? load<f32>(r3 + at) * scale : load<f32>(r3 + at), 12);
    dst += stride;
  }
}

// Four key rows r0..r3 (d values each) into four columns of a transposed tile from dst
// (kt[c][j], KT_ROW bytes a row).
@inline function transposeKeys(r0: usize, r1: usize, r2: usize, r3: usize, dst: usize, d: i32): void {
  transposeRows(r0, r1, r2, r3, dst, d, KT_ROW, false, 1);
}

// A key tile of `keys` keys (KT, or a window band's) from the rows named at keyRows[0..kc): K
// transposed into kt (kt[c][j], keys a row) and (v != 0) V into vt in column blocks of 8
// (keys * 8 values a block); keys [kc, kcPad) and V columns [dv, dvp) are zero.
function buildTile(
  k: usize, v: usize, keyRows: usize, kc: i32, kcPad: i32, d: i32, dv: i32, kt: usize, vt: usize, keys: i32 = KT,
): void {
  const dBytes = (<usize>d) << 2;
  const dvBytes = (<usize>dv) << 2;
  const dvp = paddedDv(dv);
  const ktRow = (<usize>keys) << 2;
  const vBlock = <usize>keys * VB_KEY;
  let j = 0;
  if (ASC_FEATURE_SIMD) {
    for (; j + 4 <= kc; j += 4) {
      const r0 = k + <usize>load<i32>(keyRows + ((<usize>j) << 2)) * dBytes;
      const r1 = k + <usize>load<i32>(keyRows + ((<usize>j) << 2), 4) * dBytes;
      const r2 = k + <usize>load<i32>(keyRows + ((<usize>j) << 2), 8) * dBytes;
      const r3 = k + <usize>load<i32>(keyRows + ((<usize>j) << 2), 12) * dBytes;
      transposeRows(r0, r1, r2, r3, kt + ((<usize>j) << 2), d, ktRow, false, 1);
    }
  }
  for (; j < kcPad; j++) {
    const row: i32 = j < kc ? load<i32>(keyRows + ((<usize>j) << 2)) : 0;
    const ks = k + <usize>row * dBytes;
    for (let c = 0; c < d; c++) {
      store<f32>(kt + <usize>c * ktRow + ((<usize>j) << 2), j < kc ? load<f32>(ks + ((<usize>c) << 2)) : 0);
    }
  }
  if (v == 0) return;
  const dv8 = dv & ~7;
  for (j = 0; j < kcPad; j++) {
    const dst = vt + <usize>j * VB_KEY;
    if (j >= kc) {
      for (let c = 0; c < dvp; c += 8) memory.fill(dst + <usize>(c >> 3) * vBlock, 0, VB_KEY);
      continue;
    }
    const src = v + <usize>load<i32>(keyRows + ((<usize>j) << 2)) * dvBytes;
    for (let c = 0; c < dv8; c += 8) {
      const to = dst + <usize>(c >> 3) * vBlock;
      const from = src + ((<usize>c) << 2);
      if (ASC_FEATURE_SIMD) {
        v128.store(to, v128.load(from));
        v128.store(to, v128.load(from, 16), 16);
      } else {
        memory.copy(to, from, VB_KEY);
      }
    }
    if (dv8 < dvp) {
      const tail = dst + <usize>(dv8 >> 3) * vBlock;
      for (let c = dv8; c < dvp; c++) {
        store<f32>(tail + ((<usize>(c - dv8)) << 2), c < dv ? load<f32>(src + ((<usize>c) << 2)) : 0);
      }
    }
  }
}

// The max of one row of scores (the first `width`, a multiple of 8).
@inline function rowMaxOf(s: usize, width: i32): f32 {
  if (ASC_FEATURE_SIMD) {
    let mv = f32x4.splat(-Infinity);
    for (let j = 0; j < width; j += 4) mv = vmax(mv, v128.load(s + ((<usize>j) << 2)));
    return maxLanes(mv);
  }
  let mx: f32 = -Infinity;
  for (let j = 0; j < width; j++) mx = max(mx, load<f32>(s + ((<usize>j) << 2)));
  return mx;
}

// One row of scores (the first `width` of KT, a multiple of 8 covering the tile's keys;
// masked entries already -inf) with its max mx: online-softmax update of (m, l); the
// scores are replaced by their probabilities and alphaAt gets the factor that the row's
// accumulator takes before this tile's sum (accumulateTile applies it).
@inline function softmaxRow(s: usize, width: i32, mx: f32, mAt: usize, lAt: usize, alphaAt: usize): void {
  if (mx == -Infinity) {
    memory.fill(s, 0, (<usize>width) << 2);
    store<f32>(alphaAt, 1);
    return;
  }
  const mOld = load<f32>(mAt);
  const mNew = max(mOld, mx);
  // Once a row's max has settled, most tiles leave it: no exp call then; nor on the row's
  // first tile (nothing to rescale).
  const alpha: f32 = mOld == mNew ? 1 : mOld == -Infinity ? 0 : Mathf.exp(mOld - mNew);
  let sum: f32 = 0;
  if (ASC_FEATURE_SIMD) {
    const mv = f32x4.splat(mNew);
    let sv0 = f32x4.splat(0), sv1 = sv0;
    // two independent exps per step: the polynomial is one long dependency chain
    for (let j = 0; j < width; j += 8) {
      const at = s + ((<usize>j) << 2);
      const p0 = expNonPositive(f32x4.sub(v128.load(at), mv));
      const p1 = expNonPositive(f32x4.sub(v128.load(at, 16), mv));
      v128.store(at, p0);
      v128.store(at, p1, 16);
      sv0 = f32x4.add(sv0, p0);
      sv1 = f32x4.add(sv1, p1);
    }
    const sv = f32x4.add(sv0, sv1);
    sum = (f32x4.extract_lane(sv, 0) + f32x4.extract_lane(sv, 1)) +
      (f32x4.extract_lane(sv, 2) + f32x4.extract_lane(sv, 3));
  } else {
    for (let j = 0; j < width; j++) {
      const at = s + ((<usize>j) << 2);
      const x = load<f32>(at);
      const p: f32 = x == -Infinity ? 0 : Mathf.exp(x - mNew);
      store<f32>(at, p);
      sum += p;
    }
  }
  store<f32>(lAt, load<f32>(lAt) * alpha + sum);
  store<f32>(mAt, mNew);
  store<f32>(alphaAt, alpha);
}
/**
 * Write (out2 * outScale, lse2) into a destination row, or merge it there as part 2 of
 * (part 1 = what the row holds): c = 1 / (1 + exp(lse2 - lse1)), out = c out1 + (1-c) out2.
 * reference: lse = lse1 - log(c + 2^-23); fixed: lse = max + log1p(exp(-|lse1 - lse2|)).
 */
function combineRow(
  dstOut: usize, dstLse: usize, src: usize, srcScale: f32, lse2: f32, dv: i32, write: i32,
): void {
  const dv4 = ASC_FEATURE_SIMD ? dv & ~3 : 0;
  if (write == WRITE) {
    if (ASC_FEATURE_SIMD) {
      const sv = f32x4.splat(srcScale);
      for (let c = 0; c < dv4; c += 4) {
        const o = (<usize>c) << 2;
        v128.store(dstOut + o, f32x4.mul(v128.load(src + o), sv));
      }
    }
    for (let c = dv4; c < dv; c++) {
      store<f32>(dstOut + ((<usize>c) << 2), load<f32>(src + ((<usize>c) << 2)) * srcScale);
    }
    store<f32>(dstLse, lse2);
    return;
  }
  const lse1 = load<f32>(dstLse);
  let c: f32;
  let lse: f32;
  if (write == MERGE_REFERENCE) {
    c = 1 / (1 + Mathf.exp(lse2 - lse1));
    lse = lse1 - Mathf.log(c + EPS_F32);
  } else if (lse2 == -Infinity) {
    c = 1;
    lse = lse1;
  } else if (lse1 == -Infinity) {
    c = 0;
    lse = lse2;
  } else {
    // One exp: e = exp(-|lse1 - lse2|) is exp(lse2 - lse1) or its inverse.
    const e = Mathf.exp(-Mathf.abs(lse1 - lse2));
    c = lse2 <= lse1 ? 1 / (1 + e) : e / (1 + e);
    lse = max(lse1, lse2) + Mathf.log1p(e);
  }
  blendRow(dstOut, src, c, (1 - c) * srcScale, dv);
  store<f32>(dstLse, lse);
}

// dst[0..n) = keep * dst + take * src: four lanes at a time, then one at a time past a
// multiple of 4, lane by lane the same products and sum as the scalar loop (no fused
// multiply-add).
@inline function blendRow(dst: usize, src: usize, keep: f32, take: f32, n: i32): void {
  let c = 0;
  if (ASC_FEATURE_SIMD) {
    const kv = f32x4.splat(keep);
    const tv = f32x4.splat(take);
    for (; c + 4 <= n; c += 4) {
      const o = (<usize>c) << 2;
      v128.store(dst + o, f32x4.add(f32x4.mul(kv, v128.load(dst + o)), f32x4.mul(tv, v128.load(src + o))));
    }
  }
  for (; c < n; c++) {
    const o = (<usize>c) << 2;
    store<f32>(dst + o, keep * load<f32>(dst + o) + take * load<f32>(src + o));
  }
}

// One micro-tile's query rows, scaled, interleaved (row r's c-th value at dst + (c * MR + r)
// * 4): list positions [p, p + n) (n <= MR) name rows qIdx[p] (or p); rows past n, and rows
// outside [0, qReal), are zero. Where all MR rows are real, 4 x 4 blocks are transposed in
// registers (the same products as one value at a time).
@inline function queryTile(q: usize, qIdx: usize, p: i32, n: i32, qReal: i32, d: i32, scale: f32, dst: usize): void {
  const dBytes = (<usize>d) << 2;
  let all = n == MR;
  let r0: usize = 0, r1: usize = 0, r2: usize = 0, r3: usize = 0;
  if (ASC_FEATURE_SIMD && all) {
    const i0 = qIdx ? load<i32>(qIdx + ((<usize>p) << 2)) : p;
    const i1 = qIdx ? load<i32>(qIdx + ((<usize>p) << 2), 4) : p + 1;
    const i2 = qIdx ? load<i32>(qIdx + ((<usize>p) << 2), 8) : p + 2;
    const i3 = qIdx ? load<i32>(qIdx + ((<usize>p) << 2), 12) : p + 3;
    all = <u32>i0 < <u32>qReal && <u32>i1 < <u32>qReal && <u32>i2 < <u32>qReal && <u32>i3 < <u32>qReal;
    r0 = q + <usize>i0 * dBytes;
    r1 = q + <usize>i1 * dBytes;
    r2 = q + <usize>i2 * dBytes;
    r3 = q + <usize>i3 * dBytes;
  }
  if (ASC_FEATURE_SIMD && all) {
    transposeRows(r0, r1, r2, r3, dst, d, <usize>(MR << 2), true, scale);
    return;
  }
  for (let r = 0; r < MR; r++) {
    const idx = r >= n ? -1 : qIdx ? load<i32>(qIdx + ((<usize>(p + r)) << 2)) : p + r;
    const src = q + <usize>idx * dBytes;
    const real = idx >= 0 && idx < qReal;
    const to = dst + ((<usize>r) << 2);
    for (let c = 0; c < d; c++) {
      const x: f32 = real ? load<f32>(src + ((<usize>c) << 2)) * scale : 0;
      store<f32>(to + ((<usize>(c * MR)) << 2), x);
    }
  }
}

// One load per 64-byte line of [p, p + bytes), xor-ed: reads the range into cache.
@inline function touchRange(p: usize, bytes: usize): i32 {
  let x = 0;
  for (let o: usize = 0; o < bytes; o += 64) x ^= load<i32>(p + o);
  return x;
}

// Reads one word of every cache line of the rows qIdx[p .. p + n): of q, of the destination
// (out and lse, and cnt and vsum where cnt != 0); returns them xor-ed, for the caller to
// store (a load whose value is unused would be dropped).
function touchRows(
  qIdx: usize, p: i32, n: i32, qReal: i32, q: usize, qBytes: usize, out: usize, lse: usize, rowBytes: usize, cnt: usize, vsum: usize,
): i32 {
  let x = 0;
  for (let i = 0; i < n; i++) {
    const idx = load<i32>(qIdx + ((<usize>(p + i)) << 2));
    if (idx < 0 || idx >= qReal) continue;
    x ^= touchRange(q + <usize>idx * qBytes, qBytes);
    x ^= touchRange(out + <usize>idx * rowBytes, rowBytes);
    x ^= load<i32>(lse + ((<usize>idx) << 2));
    if (cnt) {
      x ^= touchRange(vsum + <usize>idx * rowBytes, rowBytes);
      x ^= load<i32>(cnt + ((<usize>idx) << 2));
    }
  }
  return x;
}

// Reads one word of every cache line of the K and V rows keyRows[0 .. n); returns them
// xor-ed, for the caller to store (as touchRows).
export function touchKeys(k: usize, v: usize, keyRows: usize, n: i32, kBytes: usize, vBytes: usize): i32 {
  let x = 0;
  for (let j = 0; j < n; j++) {
    const row = <usize>load<i32>(keyRows + ((<usize>j) << 2));
    x ^= touchRange(k + row * kBytes, kBytes);
    x ^= touchRange(v + row * vBytes, vBytes);
  }
  return x;
}

/**
 * Attention of a list of query rows against a list of key rows.
 * Query list position p in [qStart, qStart + nq) names row qIdx[p] (or p when qIdx == 0);
 * rows >= qReal are zero vectors whose results are dropped. Key list position p in
 * [kStart, kStart + nk) names row kIdx[p] (or p). Masks: causal, key position >
 * query position + causalOffset; own-block, kTags[j] == min(query position / qTagDiv, qTagMax).
 * phantom zero keys (logit 0, value 0) join every row's softmax; lseAdd is added to lse.
 * The result of a query goes to destination row = its row index.
 */
export function attendCore(
  q: usize, qIdx: usize, qStart: i32, nq: i32, qReal: i32,
  k: usize, v: usize, kIdx: usize, kStart: i32, nk: i32, kTags: usize,
  d: i32, dv: i32, scale: f32,
  maskKind: i32, causalOffset: i32, qTagDiv: i32, qTagMax: i32,
  phantom: i32, lseAdd: f32,
  out: usize, lse: usize, write: i32, scratch: usize,
  stats: i32 = STATS_NONE, cnt: usize = 0, vsum: usize = 0, cache: usize = 0,
): void {
  const dvp = paddedDv(dv);
  const dBytes = (<usize>d) << 2;
  const dvBytes = (<usize>dv) << 2;
  const dvpBytes = (<usize>dvp) << 2;
  const qs = scratch;
  const ktScratch = qs + (<usize>(QC * d) << 2); // then V, as in a cache slot
  const acc = ktScratch + (<usize>(d * KT + KT * dvp) << 2);
  const mRow = acc + (<usize>(QC * dvp) << 2);
  const lRow = mRow + ((<usize>QC) << 2);
  const sc = lRow + ((<usize>QC) << 2);
  const tagScratch = sc + ((<usize>(MR * KT)) << 2);
  const cntRow = tagScratch + ((<usize>MASK_TILE_WORDS) << 2);
  const vsRow = cntRow + ((<usize>QC) << 2);
  const listSum = vsRow + (<usize>(QC * dvp) << 2); // [dvp]: the key list's V sum (stats)
  const keyRows = listSum + ((<usize>dvp) << 2);
  const rowMax = keyRows + ((<usize>KT) << 2);
  const alphas = rowMax + ((<usize>MR) << 2);

  // Stats: every row starts from the whole list (its V sum, in list order, and nk keys) and
  // each tile takes back what its mask hides from the row.
  if (stats != STATS_NONE) {
    memory.fill(listSum, 0, dvpBytes);
    // A list's scattered rows are read all at once first, so that the misses overlap (as
    // touchKeys does for a tile).
    if (kIdx) {
      let x = 0;
      for (let p = kStart; p < kStart + nk; p++) x ^= touchRange(v + <usize>load<i32>(kIdx + ((<usize>p) << 2)) * dvBytes, dvBytes);
      store<i32>(keyRows, x);
    }
    for (let p = kStart; p < kStart + nk; p++) {
      const idx = kIdx ? load<i32>(kIdx + ((<usize>p) << 2)) : p;
      addRow(listSum, v + <usize>idx * dvBytes, dv, 1);
    }
  }
  for (let c0 = 0; c0 < nq; c0 += QC) {
    const rows = min(QC, nq - c0);
    const rows4 = (rows + MR - 1) & ~(MR - 1);
    // Rows named by a list (sorted by bucket or block) lie scattered over the head, and
    // merge into destination rows as scattered: their cache lines are read here, all at
    // once, so that the misses overlap instead of stalling the copy a few rows at a time
    // and the merges one row at a time at the chunk's end.
    if (qIdx && write != WRITE) {
      store<i32>(alphas, touchRows(qIdx, qStart + c0, rows, qReal, q, dBytes, out, lse, dvBytes, stats != STATS_NONE ? cnt : 0, vsum));
    }
    // The chunk's rows, scaled, interleaved per micro-tile (see the micro-kernels).
    for (let i0 = 0; i0 < rows4; i0 += MR) queryTile(q, qIdx, qStart + c0 + i0, min(MR, rows - i0), qReal, d, scale, qs + <usize>i0 * dBytes);
    memory.fill(acc, 0, <usize>rows4 * dvpBytes);
    if (stats != STATS_NONE) {
      for (let i = 0; i < rows4; i++) {
        copyRow(vsRow + <usize>i * dvpBytes, listSum, dvp);
        store<f32>(cntRow + ((<usize>i) << 2), <f32>nk);
      }
    }
    for (let i = 0; i < rows4; i++) {
      store<f32>(mRow + ((<usize>i) << 2), -Infinity);
      store<f32>(lRow + ((<usize>i) << 2), 0);
    }

    // Causal: keys past the chunk's last query position are never needed.
    let kEnd = nk;
    if (maskKind == MASK_CAUSAL) {
      kEnd = min(nk, max(0, qStart + c0 + rows - 1 + causalOffset - kStart + 1));
    }
    for (let t0 = 0; t0 < kEnd; t0 += KT) {
      const kc = min(KT, kEnd - t0);
      const kcPad = (kc + 7) & ~7;
      // With a cache, the first chunk builds each tile in its own slot and later chunks
      // read it from there (the key list is the same for every chunk of a call).
      const slot = cache + <usize>(t0 / KT) * <usize>tileCacheSlotBytes(d, dv);
      const kt = cache ? slot : ktScratch;
      const vt = kt + (<usize>(d * KT) << 2);
      const tagTile = cache ? vt + (<usize>(KT * dvp) << 2) : tagScratch;
      const meta = tagTile + ((<usize>MASK_TILE_WORDS) << 2); // in a cache slot only
      const build = !cache || c0 == 0;
      if (build) {
        for (let j = 0; j < kc; j++) {
          const p = kStart + t0 + j;
          const idx = kIdx ? load<i32>(kIdx + ((<usize>p) << 2)) : p;
          store<i32>(keyRows + ((<usize>j) << 2), idx);
          if (maskKind == MASK_OWN_BLOCK) {
            store<i32>(tagTile + ((<usize>j) << 2), load<i32>(kTags + ((<usize>(t0 + j)) << 2)));
          } else if (maskKind == MASK_ACCURATE) {
            store<i32>(tagTile + ((<usize>j) << 2), idx);
          }
        }
        // Keys named by a list (a bucket's) lie scattered over K and V: their cache lines
        // are read first, all at once, so that the misses overlap rather than stall the
        // transposition a few at a time (a cached tile is built once: not worth it there).
        if (kIdx && !cache) store<i32>(alphas, touchKeys(k, v, keyRows, kc, dBytes, dvBytes));
        buildTile(k, v, keyRows, kc, kcPad, d, dv, kt, vt);
      }
      let kpMin = 0;
      let kpMax = 0;
      let anyFlag = false;
      if (maskKind == MASK_ACCURATE && build) {
        kpMin = i32.MAX_VALUE;
        kpMax = -1;
        for (let j = 0; j < kc; j++) {
          const kp = load<i32>(tagTile + ((<usize>j) << 2));
          kpMin = min(kpMin, kp);
          kpMax = max(kpMax, kp);
        }
        anyFlag = loadMaskTile(tagTile, kc);
        if (cache) {
          store<i32>(meta, kpMin);
          store<i32>(meta, kpMax, 4);
          store<i32>(meta, anyFlag ? 1 : 0, 8);
        }
      } else if (maskKind == MASK_ACCURATE) {
        kpMin = load<i32>(meta);
        kpMax = load<i32>(meta, 4);
        anyFlag = load<i32>(meta, 8) != 0;
      }
      // Does any element of this tile need masking for this chunk?
      const tileLastPos = kStart + t0 + kc - 1;
      const needCausal = maskKind == MASK_CAUSAL && tileLastPos > qStart + c0 + causalOffset;
      // Window rows (keys at consecutive positions, every key outside a row's window
      // hidden): a micro-tile computes only the groups of 8 keys that meet its rows'
      // windows. The groups left out hold probability 0 for every row, so that the results
      // are what the whole tile gives.
      const windowRows = maskKind == MASK_ACCURATE && maskWinMode == WINDOW_HIDE_OUTSIDE && !kIdx && !qIdx;
      const tilePos = kStart + t0;

      for (let r0 = 0; r0 < rows4; r0 += MR) {
        let jFrom = 0;
        let jTo = kcPad;
        if (windowRows) {
          const first = qStart + c0 + r0;
          const last = qStart + c0 + min(rows, r0 + MR) - 1;
          const lo = windowStart(first, maskWinLo, maskWin, maskCausal, maskNk) - tilePos;
          const hi = windowStart(last, maskWinLo, maskWin, maskCausal, maskNk) + maskWin - tilePos;
          jFrom = max(0, lo) & ~7;
          jTo = min(kcPad, (min(kc, hi) + 7) & ~7);
          if (jTo <= jFrom) continue;
        }
        const width = jTo - jFrom;
        const jOff = (<usize>jFrom) << 2;
        scoresTile(qs + <usize>r0 * dBytes, kt + jOff, sc + jOff, d, width, rowMax);
        // Keys past kc (zero padding) inside the computed width: their scores are not the
        // row's, so its max is taken again after they are hidden.
        const padded = jTo > kc;
        for (let r = 0; r < MR; r++) {
          const s = sc + ((<usize>(r * KT)) << 2);
          for (let j = kc; j < kcPad; j++) store<f32>(s + ((<usize>j) << 2), -Infinity);
          const qPos = qStart + c0 + r0 + r;
          // Whether the mask hid a key of the width: only then is the max of the scores
          // (scoresTile's) not the max of the row's visible ones.
          let hid = false;
          if (needCausal) {
            const firstMasked = max(0, qPos + causalOffset + 1 - (kStart + t0));
            for (let j = firstMasked; j < kc; j++) store<f32>(s + ((<usize>j) << 2), -Infinity);
            hid = firstMasked < kc;
          } else if (maskKind == MASK_OWN_BLOCK) {
            const tag = min(qPos / qTagDiv, qTagMax);
            for (let j = 0; j < kc; j++) {
              if (load<i32>(tagTile + ((<usize>j) << 2)) == tag) {
                store<f32>(s + ((<usize>j) << 2), -Infinity);
                hid = true;
              }
            }
          } else if (windowRows && r0 + r < rows) {
            hid = hideOutsideWindow(qPos, s, tagTile, jFrom, min(kc, jTo), tilePos, anyFlag);
          } else if (maskKind == MASK_ACCURATE && r0 + r < rows) {
            const qi = qIdx ? load<i32>(qIdx + ((<usize>qPos) << 2)) : qPos;
            const keep = stats != STATS_NONE;
            const hidden = maskRowAccurate(
              qi, s + jOff, tagTile + jOff, min(kc, jTo) - jFrom, kpMin, kpMax, anyFlag,
              tagTile + ((<usize>(KT * (2 + MAX_ROUNDS))) << 2), keep, vsRow + <usize>(r0 + r) * dvpBytes,
              vt + <usize>jFrom * VB_KEY, dvp,
            );
            if (keep && hidden > 0) {
              const at = cntRow + ((<usize>(r0 + r)) << 2);
              store<f32>(at, load<f32>(at) - <f32>hidden);
            }
            hid = hidden > 0;
          }
          const row = r0 + r;
          const mx = padded || hid ? rowMaxOf(s + jOff, width) : load<f32>(rowMax + ((<usize>r) << 2));
          softmaxRow(s + jOff, width, mx, mRow + ((<usize>row) << 2), lRow + ((<usize>row) << 2), alphas + ((<usize>r) << 2));
        }
        accumulateTile(sc + jOff, vt + <usize>jFrom * VB_KEY, acc + <usize>r0 * dvpBytes, alphas, width, dvp);
      }
    }

    for (let i = 0; i < rows; i++) {
      const p = qStart + c0 + i;
      const idx = qIdx ? load<i32>(qIdx + ((<usize>p) << 2)) : p;
      if (idx < 0 || idx >= qReal) continue;
      let m = load<f32>(mRow + ((<usize>i) << 2));
      let l = load<f32>(lRow + ((<usize>i) << 2));
      let factor: f32 = 1;
      if (phantom > 0) {
        const m2 = max(m, 0);
        factor = Mathf.exp(m - m2);
        l = l * factor + <f32>phantom * Mathf.exp(-m2);
        m = m2;
      }
      let srcScale: f32 = 0;
      let lseValue: f32 = -Infinity;
      if (l > 0) {
        srcScale = factor / l;
        lseValue = m + Mathf.log(l) + lseAdd;
      }
      combineRow(
        out + <usize>idx * dvBytes, lse + ((<usize>idx) << 2),
        acc + <usize>i * dvpBytes, srcScale, lseValue, dv, write,
      );
      if (stats != STATS_NONE) {
        const cAt = cnt + ((<usize>idx) << 2);
        const vAt = vsum + <usize>idx * dvBytes;
        const src = vsRow + <usize>i * dvpBytes;
        const add = stats == STATS_ADD;
        store<f32>(cAt, (add ? load<f32>(cAt) : 0) + load<f32>(cntRow + ((<usize>i) << 2)));
        const dv4 = ASC_FEATURE_SIMD ? dv & ~3 : 0;
        if (ASC_FEATURE_SIMD) {
          for (let c = 0; c < dv4; c += 4) {
            const o = (<usize>c) << 2;
            v128.store(vAt + o, f32x4.add(add ? v128.load(vAt + o) : f32x4.splat(0), v128.load(src + o)));
          }
        }
        for (let c = dv4; c < dv; c++) {
          const at = vAt + ((<usize>c) << 2);
          store<f32>(at, (add ? load<f32>(at) : 0) + load<f32>(src + ((<usize>c) << 2)));
        }
      }
    }
  }
}

/** The most keys a bucket may hold for bucketAttention (beyond it, attendCore). */
export const BUCKET_KEYS: i32 = 32;

/**
 * The accurate mask's attention of one small bucket (SIMD builds; kc <= BUCKET_KEYS): the
 * query rows named at qIdx[qStart .. qStart + nq) against the key rows kIdx[0 .. kc), with
 * the accurate mask as set (maskRowAccurate), merged into out and lse (log-add-exp) and the
 * stats added (cnt, vsum). The bucket's scattered rows are read first, all at once (as in
 * attendCore: the misses overlap). One tile, built once: K transposed (its last group of
 * four keys repeats a key; those scores are hidden), V rows gathered row-major with their
 * sum; each micro-tile of MR rows takes its scores, masks them, and its softmax without a
 * running rescale (the tile is the rows' only one), P·V over the kc keys alone (no zero
 * keys), and merges each row once.
 */
export function bucketAttention(
  q: usize, qIdx: usize, qStart: i32, nq: i32, qReal: i32, k: usize, v: usize, kIdx: usize, kc: i32,
  d: i32, dv: i32, scale: f32, out: usize, lse: usize, cnt: usize, vsum: usize, scratch: usize,
): void {
  if (!ASC_FEATURE_SIMD) unreachable();
  const dvp = paddedDv(dv);
  const dBytes = (<usize>d) << 2;
  const dvBytes = (<usize>dv) << 2;
  const dvpBytes = (<usize>dvp) << 2;
  const kcPad = (kc + 7) & ~7;
  const kt = scratch; // [d][KT]
  const vg = kt + (<usize>(d * KT) << 2); // [kc][dvp]
  const qs = vg + <usize>BUCKET_KEYS * dvpBytes; // [d][MR]
  const sc = qs + (<usize>(d * MR) << 2); // [MR][KT]
  const acc = sc + ((<usize>(MR * KT)) << 2); // [MR][dvp]
  const tileSum = acc + <usize>MR * dvpBytes; // [dvp]
  const rest = tileSum + dvpBytes; // [dvp]: a row's sum of V less its hidden keys
  const ml = rest + dvpBytes; // m and l of one row
  const alphas = ml + 8; // [MR]: softmaxRow's (acc starts at zero: any factor leaves it so)
  const rowMax = alphas + ((<usize>MR) << 2); // [MR], scoresTile's (unused: rowMaxOf takes it after the mask)
  const rowM = rowMax + ((<usize>MR) << 2); // [MR]: each row's m, then its share kept
  const rowL = rowM + ((<usize>MR) << 2); // [MR]: each row's l
  const rowLse = rowL + ((<usize>MR) << 2); // [MR]: each row's lse before, then after
  const rowKeep = rowLse + ((<usize>MR) << 2); // [MR]: each row's factor on acc
  const tagTile = rowKeep + ((<usize>MR) << 2); // MASK_TILE_WORDS

  store<i32>(ml, touchKeys(k, v, kIdx, kc, dBytes, dvBytes) ^ touchRows(qIdx, qStart, nq, qReal, q, dBytes, out, lse, dvBytes, cnt, vsum));
  // K transposed, four keys at a time (past kc, the last key again).
  for (let j = 0; j < kc; j += 4) {
    const r0 = k + <usize>load<i32>(kIdx + ((<usize>j) << 2)) * dBytes;
    const r1 = k + <usize>load<i32>(kIdx + ((<usize>min(j + 1, kc - 1)) << 2)) * dBytes;
    const r2 = k + <usize>load<i32>(kIdx + ((<usize>min(j + 2, kc - 1)) << 2)) * dBytes;
    const r3 = k + <usize>load<i32>(kIdx + ((<usize>min(j + 3, kc - 1)) << 2)) * dBytes;
    transposeKeys(r0, r1, r2, r3, kt + ((<usize>j) << 2), d);
  }
  // V rows gathered, and their sum (columns [dv, dvp) zero); the mask's positions.
  const dv4 = dv & ~3;
  memory.fill(tileSum, 0, dvpBytes);
  for (let j = 0; j < kc; j++) {
    const idx = load<i32>(kIdx + ((<usize>j) << 2));
    store<i32>(tagTile + ((<usize>j) << 2), idx);
    const src = v + <usize>idx * dvBytes;
    const dst = vg + <usize>j * dvpBytes;
    for (let c = 0; c < dv4; c += 4) {
      const o = (<usize>c) << 2;
      const x = v128.load(src + o);
      v128.store(dst + o, x);
      v128.store(tileSum + o, f32x4.add(v128.load(tileSum + o), x));
    }
    for (let c = dv4; c < dvp; c++) {
      const o = (<usize>c) << 2;
      const x: f32 = c < dv ? load<f32>(src + o) : 0;
      store<f32>(dst + o, x);
      store<f32>(tileSum + o, load<f32>(tileSum + o) + x);
    }
  }
  let kpMin = i32.MAX_VALUE;
  let kpMax = -1;
  for (let j = 0; j < kc; j++) {
    const kp = load<i32>(tagTile + ((<usize>j) << 2));
    kpMin = min(kpMin, kp);
    kpMax = max(kpMax, kp);
  }
  const anyFlag = loadMaskTile(tagTile, kc);
  const tagBits = tagTile + ((<usize>(KT * (2 + MAX_ROUNDS))) << 2);

  for (let r0 = 0; r0 < nq; r0 += MR) {
    const rows = min(MR, nq - r0);
    queryTile(q, qIdx, qStart + r0, rows, qReal, d, scale, qs);
    scoresTile(qs, kt, sc, d, kcPad, rowMax);
    for (let r = 0; r < MR; r++) {
      const s = sc + ((<usize>(r * KT)) << 2);
      for (let j = kc; j < kcPad; j++) store<f32>(s + ((<usize>j) << 2), -Infinity);
      if (r >= rows) {
        memory.fill(s, 0, (<usize>kcPad) << 2);
        store<f32>(alphas + ((<usize>r) << 2), 0);
        store<f32>(rowM + ((<usize>r) << 2), -Infinity);
        store<f32>(rowL + ((<usize>r) << 2), 0);
        store<f32>(rowLse + ((<usize>r) << 2), -Infinity);
        continue;
      }
      const qi = load<i32>(qIdx + ((<usize>(qStart + r0 + r)) << 2));
      const hidden = maskRowAccurate(qi, s, tagTile, kc, kpMin, kpMax, anyFlag, tagBits, false, 0, 0, dvp);
      // Stats: the tile's count and V sum, less the keys the mask hid (-inf: the scores of
      // finite rows are finite).
      const cAt = cnt + ((<usize>qi) << 2);
      store<f32>(cAt, load<f32>(cAt) + <f32>(kc - hidden));
      let sum = tileSum;
      if (hidden > 0) {
        copyRow(rest, tileSum, dvp);
        for (let j = 0; j < kc; j++) {
          if (load<f32>(s + ((<usize>j) << 2)) == -Infinity) addRow(rest, vg + <usize>j * dvpBytes, dvp, -1);
        }
        sum = rest;
      }
      addRow(vsum + <usize>qi * dvBytes, sum, dv, 1);
      store<f32>(ml, -Infinity);
      store<f32>(ml, 0, 4);
      softmaxRow(s, kcPad, rowMaxOf(s, kcPad), ml, ml + 4, alphas + ((<usize>r) << 2));
      store<f32>(rowM + ((<usize>r) << 2), load<f32>(ml));
      store<f32>(rowL + ((<usize>r) << 2), load<f32>(ml, 4));
      store<f32>(rowLse + ((<usize>r) << 2), load<f32>(lse + ((<usize>qi) << 2)));
    }
    memory.fill(acc, 0, <usize>MR * dvpBytes);
    accumulateTile(sc, vg, acc, alphas, kc, dvp, 32, dvpBytes);
    // The rows' merges, four at once (mergeWeights): each row keeps rowM of what it held
    // and takes rowKeep of acc. Rows that see no key (l = 0) keep what they hold.
    mergeWeights(rowLse, rowM, rowL, rowKeep);
    for (let r = 0; r < rows; r++) {
      if (load<f32>(rowL + ((<usize>r) << 2)) == 0) continue;
      const qi = load<i32>(qIdx + ((<usize>(qStart + r0 + r)) << 2));
      const o = out + <usize>qi * dvBytes;
      const a = acc + <usize>r * dvpBytes;
      const keep = load<f32>(rowM + ((<usize>r) << 2));
      const take = load<f32>(rowKeep + ((<usize>r) << 2));
      const kv = f32x4.splat(keep), tv = f32x4.splat(take);
      for (let c = 0; c < dv4; c += 4) {
        const at = (<usize>c) << 2;
        v128.store(o + at, f32x4.add(f32x4.mul(kv, v128.load(o + at)), f32x4.mul(tv, v128.load(a + at))));
      }
      for (let c = dv4; c < dv; c++) {
        const at = (<usize>c) << 2;
        store<f32>(o + at, keep * load<f32>(o + at) + take * load<f32>(a + at));
      }
      store<f32>(lse + ((<usize>qi) << 2), load<f32>(rowLse + ((<usize>r) << 2)));
    }
  }
}

// log(x) for normal positive x, four lanes: x = 2^k m with m in [sqrt(1/2), sqrt(2)) (the
// exponent bits moved by sqrt(1/2)'s), log(m) = 2 atanh(f / (2 + f)) for f = m - 1, s = f / (2 + f)
// (|s| <= 0.1716), as 2 (s + s^3/3 + ... + s^9/9), relative error below 3e-7.
@inline function logNormal(x: v128): v128 {
  const bits = i32x4.add(x, i32x4.splat(0x3f800000 - 0x3f3504f3));
  const k = f32x4.convert_i32x4_s(i32x4.sub(i32x4.shr_s(bits, 23), i32x4.splat(127)));
  const m = i32x4.add(v128.and(bits, i32x4.splat(0x007fffff)), i32x4.splat(0x3f3504f3));
  const f = f32x4.sub(m, f32x4.splat(1));
  const sv = f32x4.div(f, f32x4.add(f, f32x4.splat(2)));
  const s2 = f32x4.mul(sv, sv);
  let p = madd(s2, f32x4.splat(2.0 / 9.0), f32x4.splat(2.0 / 7.0));
  p = madd(p, s2, f32x4.splat(2.0 / 5.0));
  p = madd(p, s2, f32x4.splat(2.0 / 3.0));
  p = madd(p, s2, f32x4.splat(2.0));
  return madd(k, f32x4.splat(0.6931471805599453), f32x4.mul(sv, p));
}

// dst[0..n) = src[0..n), n a multiple of 4: a loop rather than memory.copy, which costs an
// engine call, for rows of a few hundred bytes.
@inline function copyRow(dst: usize, src: usize, n: i32): void {
  for (let c = 0; c < n; c += 4) {
    const o = (<usize>c) << 2;
    if (ASC_FEATURE_SIMD) {
      v128.store(dst + o, v128.load(src + o));
    } else {
      store<u64>(dst + o, load<u64>(src + o));
      store<u64>(dst + o, load<u64>(src + o, 8), 8);
    }
  }
}

// dst[0..n) += sign * src[0..n): four at a time, then one at a time past a multiple of 4.
@inline export function addRow(dst: usize, src: usize, n: i32, sign: f32): void {
  let c = 0;
  if (ASC_FEATURE_SIMD) {
    const sv = f32x4.splat(sign);
    for (; c + 4 <= n; c += 4) {
      const at = dst + ((<usize>c) << 2);
      v128.store(at, madd(sv, v128.load(src + ((<usize>c) << 2)), v128.load(at)));
    }
  }
  for (; c < n; c++) {
    const at = dst + ((<usize>c) << 2);
    store<f32>(at, load<f32>(at) + sign * load<f32>(src + ((<usize>c) << 2)));
  }
}

/** Exact attention: query rows [0, nq) against key rows [0, nk), optionally causal. */
export function exactAttention(
  q: usize, k: usize, v: usize, nq: i32, nk: i32, d: i32, dv: i32, scale: f32,
  causal: i32, causalOffset: i32, out: usize, lse: usize, write: i32, scratch: usize,
): void {
  attendCore(
    q, 0, 0, nq, nq, k, v, 0, 0, nk, 0, d, dv, scale,
    causal ? MASK_CAUSAL : MASK_NONE, causalOffset, 1, 0, 0, 0, out, lse, write, scratch,
  );
}

// float16 storage (a key-value cache's dtype 'float16'): T = u16 rows hold IEEE binary16
// bits, widened to float32 in registers as they are read. A half sign-extended to 32 bits
// and shifted up by 13 holds its sign in bit 31 (and copies of it in bits 30..28, masked
// off) and its exponent and mantissa in bits 27..13: a float32 whose value times 2^112 is
// the half's exactly (subnormals and zeros included: the multiply is exact, and keeps the
// sign). Inputs are finite (the cache checks them as they are appended). Three operations
// on four lanes after the load.
const HALF_SCALE: f32 = 5.192296858534828e33; // 2^112
const HALF_BITS: i32 = 0x8fffe000; // sign, then the half's exponent and mantissa shifted by 13

// Four float16 bits, sign-extended into 32-bit lanes, as float32 lanes.
@inline function widenLanes(h: v128): v128 {
  return f32x4.mul(v128.and(i32x4.shl(h, 13), i32x4.splat(HALF_BITS)), f32x4.splat(HALF_SCALE));
}

// Four consecutive elements of row p from element c, as float32 lanes.
@inline function loadLanes<T>(p: usize, c: i32): v128 {
  if (sizeof<T>() == 2) return widenLanes(v128.load16x4_s(p + ((<usize>c) << 1)));
  return v128.load(p + ((<usize>c) << 2));
}

// Element c of row p as a float32.
@inline function loadElement<T>(p: usize, c: i32): f32 {
  if (sizeof<T>() == 2) {
    const h = (<i32>load<i16>(p + ((<usize>c) << 1))) << 13;
    return reinterpret<f32>(h & HALF_BITS) * HALF_SCALE;
  }
  return load<f32>(p + ((<usize>c) << 2));
}

/**
 * float16 bits [0, n) at src widened into float32 at dst (exactly: every half is a float32),
 * for the calls on a float16 cache that run the float32 kernels (src/cpu/backend.ts, widen).
 */
export function widenHalf(src: usize, dst: usize, n: i32): void {
  let i = 0;
  if (ASC_FEATURE_SIMD) {
    // Eight halves a load, widened as loadLanes widens four.
    for (; i + 8 <= n; i += 8) {
      const h = v128.load(src + ((<usize>i) << 1));
      const at = dst + ((<usize>i) << 2);
      v128.store(at, widenLanes(i32x4.extend_low_i16x8_s(h)));
      v128.store(at, widenLanes(i32x4.extend_high_i16x8_s(h)), 16);
    }
    for (; i + 4 <= n; i += 4) v128.store(dst + ((<usize>i) << 2), loadLanes<u16>(src, i));
  }
  for (; i < n; i++) store<f32>(dst + ((<usize>i) << 2), loadElement<u16>(src, i));
}

// fewRows' P·V for one tile: the kc value rows from vp (vRow bytes apart) times the four
// rows' weights (at, KT apart), added to the rows' accumulators (c0, dv4 apart), in strips
// of 8 columns whose four rows' accumulators stay in registers over the tile's keys (a
// strip loads each value once and each weight once, and stores nothing until the tile
// ends). Each accumulator is one chain of multiply-adds over the keys in order.
@inline function valueTile(vp: usize, vRow: usize, kc: i32, at: usize, c0: usize, dv: i32, dv4: i32): void {
  const accRow = (<usize>dv4) << 2;
  const c1 = c0 + accRow;
  const c2 = c1 + accRow;
  const c3 = c2 + accRow;
  const w1 = at + (KT << 2);
  const w2 = at + (KT << 3);
  const w3 = at + KT * 12;
  const dvFull = dv & ~3;
  let c = 0;
  for (; c + 8 <= dvFull; c += 8) {
    const o = (<usize>c) << 2;
    let a0 = v128.load(c0 + o), b0 = v128.load(c0 + o, 16);
    let a1 = v128.load(c1 + o), b1 = v128.load(c1 + o, 16);
    let a2 = v128.load(c2 + o), b2 = v128.load(c2 + o, 16);
    let a3 = v128.load(c3 + o), b3 = v128.load(c3 + o, 16);
    let row = vp;
    for (let j = 0; j < kc; j++) {
      const x = v128.load(row + ((<usize>c) << 2));
      const y = v128.load(row + ((<usize>c) << 2), 16);
      const jo = (<usize>j) << 2;
      const p0 = v128.load32_splat(at + jo);
      const p1 = v128.load32_splat(w1 + jo);
      const p2 = v128.load32_splat(w2 + jo);
      const p3 = v128.load32_splat(w3 + jo);
      a0 = madd(p0, x, a0);
      b0 = madd(p0, y, b0);
      a1 = madd(p1, x, a1);
      b1 = madd(p1, y, b1);
      a2 = madd(p2, x, a2);
      b2 = madd(p2, y, b2);
      a3 = madd(p3, x, a3);
      b3 = madd(p3, y, b3);
      row += vRow;
    }
    v128.store(c0 + o, a0);
    v128.store(c0 + o, b0, 16);
    v128.store(c1 + o, a1);
    v128.store(c1 + o, b1, 16);
    v128.store(c2 + o, a2);
    v128.store(c2 + o, b2, 16);
    v128.store(c3 + o, a3);
    v128.store(c3 + o, b3, 16);
  }
  for (; c < dvFull; c += 4) {
    const o = (<usize>c) << 2;
    let a0 = v128.load(c0 + o);
    let a1 = v128.load(c1 + o);
    let a2 = v128.load(c2 + o);
    let a3 = v128.load(c3 + o);
    let row = vp;
    for (let j = 0; j < kc; j++) {
      const x = v128.load(row + ((<usize>c) << 2));
      const jo = (<usize>j) << 2;
      a0 = madd(v128.load32_splat(at + jo), x, a0);
      a1 = madd(v128.load32_splat(w1 + jo), x, a1);
      a2 = madd(v128.load32_splat(w2 + jo), x, a2);
      a3 = madd(v128.load32_splat(w3 + jo), x, a3);
      row += vRow;
    }
    v128.store(c0 + o, a0);
    v128.store(c1 + o, a1);
    v128.store(c2 + o, a2);
    v128.store(c3 + o, a3);
  }
  for (; c < dv; c++) {
    const o = (<usize>c) << 2;
    let s0 = load<f32>(c0 + o);
    let s1 = load<f32>(c1 + o);
    let s2 = load<f32>(c2 + o);
    let s3 = load<f32>(c3 + o);
    let row = vp;
    for (let j = 0; j < kc; j++) {
      const x = load<f32>(row + ((<usize>c) << 2));
      const jo = (<usize>j) << 2;
      s0 += load<f32>(at + jo) * x;
      s1 += load<f32>(w1 + jo) * x;
      s2 += load<f32>(w2 + jo) * x;
      s3 += load<f32>(w3 + jo) * x;
      row += vRow;
    }
    store<f32>(c0 + o, s0);
    store<f32>(c1 + o, s1);
    store<f32>(c2 + o, s2);
    store<f32>(c3 + o, s3);
  }
}

// The scores of four query rows (q0, dB bytes apart) against the float32 keys at kp and
// kp + kRow, stored at `at` and at + 4 (rows KT apart): dot products over d, lanes along d,
// then the lanes summed. Two keys at once: eight independent multiply-add chains hide the
// chains' latency, and each query load serves both keys; each score's chain is the same as
// with one key. A tile's odd last key comes with kRow 0 and `both` false (its copy is not
// stored).
@inline function keyPairScores(kp: usize, kRow: usize, q0: usize, dB: usize, d: i32, at: usize, both: bool): void {
  const d4 = d & ~3;
  const kp2 = kp + kRow;
  const q1 = q0 + dB;
  const q2 = q1 + dB;
  const q3 = q2 + dB;
  let a0 = f32x4.splat(0);
  let a1 = f32x4.splat(0);
  let a2 = f32x4.splat(0);
  let a3 = f32x4.splat(0);
  let b0 = f32x4.splat(0);
  let b1 = f32x4.splat(0);
  let b2 = f32x4.splat(0);
  let b3 = f32x4.splat(0);
  for (let c = 0; c < d4; c += 4) {
    const o = (<usize>c) << 2;
    const kv = v128.load(kp + o);
    const kw = v128.load(kp2 + o);
    const x0 = v128.load(q0 + o);
    a0 = madd(x0, kv, a0);
    b0 = madd(x0, kw, b0);
    const x1 = v128.load(q1 + o);
    a1 = madd(x1, kv, a1);
    b1 = madd(x1, kw, b1);
    const x2 = v128.load(q2 + o);
    a2 = madd(x2, kv, a2);
    b2 = madd(x2, kw, b2);
    const x3 = v128.load(q3 + o);
    a3 = madd(x3, kv, a3);
    b3 = madd(x3, kw, b3);
  }
  let s0 = hsum(a0), s1 = hsum(a1), s2 = hsum(a2), s3 = hsum(a3);
  let t0 = hsum(b0), t1 = hsum(b1), t2 = hsum(b2), t3 = hsum(b3);
  for (let c = d4; c < d; c++) {
    const o = (<usize>c) << 2;
    const x = load<f32>(kp + o);
    const y = load<f32>(kp2 + o);
    const y0 = load<f32>(q0 + o), y1 = load<f32>(q1 + o), y2 = load<f32>(q2 + o), y3 = load<f32>(q3 + o);
    s0 += y0 * x;
    s1 += y1 * x;
    s2 += y2 * x;
    s3 += y3 * x;
    t0 += y0 * y;
    t1 += y1 * y;
    t2 += y2 * y;
    t3 += y3 * y;
  }
  store<f32>(at, s0);
  store<f32>(at + (KT << 2), s1);
  store<f32>(at + (KT << 3), s2);
  store<f32>(at + KT * 12, s3);
  if (!both) return;
  store<f32>(at, t0, 4);
  store<f32>(at + (KT << 2), t1, 4);
  store<f32>(at + (KT << 3), t2, 4);
  store<f32>(at + KT * 12, t3, 4);
}

// Exact attention of a few query rows (decoding: FEW_ROWS at most in practice; up to QC
// rows fit attentionScratchBytes) against keys and values read where they lie, without the core's tile copies
// (K transposed, V in column blocks): with few rows those copies cost about what the
// arithmetic does. Keys go in tiles of KT: each key's scores against the rows, four rows
// at a time, are dot products over d (lanes along d, then summed); the online softmax
// updates each row per tile; P·V adds each key's value row, scaled per row, to the row's
// accumulator. Scratch: the scaled queries [nq4, d], accumulators [nq4, dv4], the running
// max and sum [nq4] each, a tile's scores [4, KT] and, for float16 rows, the tile's keys
// and values widened [KT, d] and [KT, dv] (nq4, dv4: nq, dv rounded up to 4). Keys and values are float32 (T = f32) or float16
// bits (T = u16, see loadLanes): each key and value row is read from memory once either way.
export function fewRowsAttention(
  q: usize, k: usize, v: usize, nq: i32, nk: i32, d: i32, dv: i32, scale: f32,
  out: usize, lse: usize, write: i32, scratch: usize,
): void {
  // The scalar build (engines without SIMD) runs the core instead.
  if (!ASC_FEATURE_SIMD) {
    exactAttention(q, k, v, nq, nk, d, dv, scale, 0, 0, out, lse, write, scratch);
    return;
  }
  fewRows<f32>(q, k, v, nq, nk, d, dv, scale, out, lse, write, scratch);
}

/**
 * fewRowsAttention over float16 keys and values (a float16 cache's rows, read in place and
 * widened a tile at a time).
 * SIMD builds only: with the scalar build the backend widens the rows and runs the core.
 */
export function fewRowsAttentionHalf(
  q: usize, k: usize, v: usize, nq: i32, nk: i32, d: i32, dv: i32, scale: f32,
  out: usize, lse: usize, write: i32, scratch: usize,
): void {
  if (!ASC_FEATURE_SIMD) unreachable();
  fewRows<u16>(q, k, v, nq, nk, d, dv, scale, out, lse, write, scratch);
}

@inline function fewRows<T>(
  q: usize, k: usize, v: usize, nq: i32, nk: i32, d: i32, dv: i32, scale: f32,
  out: usize, lse: usize, write: i32, scratch: usize,
): void {
  if (ASC_FEATURE_SIMD) {
    const nq4 = (nq + 3) & ~3;
    const dv4 = (dv + 3) & ~3;
    const dB = (<usize>d) << 2;
    const dvB = (<usize>dv) << 2;
    const kRow = <usize>d * sizeof<T>();
    const vRow = <usize>dv * sizeof<T>();
    const qs = scratch;
    const acc = qs + <usize>nq4 * dB;
    const mx = acc + <usize>nq4 * ((<usize>dv4) << 2);
    const sum = mx + ((<usize>nq4) << 2);
    const sc = sum + ((<usize>nq4) << 2);
    const kw = sc + ((<usize>(4 * KT)) << 2); // float16 rows: a tile's keys widened [KT][d]
    const vw = kw + <usize>KT * dB; // and its values [KT][dv]
    for (let r = 0; r < nq4; r++) {
      for (let c = 0; c < d; c++) {
        store<f32>(qs + <usize>r * dB + ((<usize>c) << 2), r < nq ? load<f32>(q + <usize>r * dB + ((<usize>c) << 2)) * scale : 0);
      }
      for (let c = 0; c < dv4; c++) store<f32>(acc + <usize>r * ((<usize>dv4) << 2) + ((<usize>c) << 2), 0);
      store<f32>(mx + ((<usize>r) << 2), -Infinity);
      store<f32>(sum + ((<usize>r) << 2), 0);
    }
    for (let j0 = 0; j0 < nk; j0 += KT) {
      const kc = min(KT, nk - j0);
      const kc4 = (kc + 3) & ~3;
      // The tile's keys and values are read into cache before the arithmetic, in one pass
      // that streams at the memory's rate (WebAssembly has no prefetch, and the kernel's
      // own loads, far apart in its passes, leave the memory idle): float32 rows by a loop
      // of one load a line, float16 rows by widening them into float32 tiles (exactly), so
      // that the arithmetic below is the same on both and gives the same bits.
      let kt = k + <usize>j0 * kRow;
      let vt = v + <usize>j0 * vRow;
      let kStride = kRow;
      let vStride = vRow;
      store<i32>(sc, touchRange(kt, <usize>kc * kRow) ^ touchRange(vt, <usize>kc * vRow));
      if (sizeof<T>() == 2) {
        widenHalf(kt, kw, kc * d);
        widenHalf(vt, vw, kc * dv);
        kt = kw;
        vt = vw;
        kStride = dB;
        vStride = dvB;
      }
      for (let r0 = 0; r0 < nq4; r0 += 4) {
        const q0 = qs + <usize>r0 * dB;
        // Scores of rows r0 .. r0 + 3 against the tile's keys, two at a time (keyPairScores).
        let j = 0;
        for (; j + 1 < kc; j += 2) keyPairScores(kt + <usize>j * kStride, kStride, q0, dB, d, sc + ((<usize>j) << 2), true);
        if (j < kc) keyPairScores(kt + <usize>j * kStride, 0, q0, dB, d, sc + ((<usize>j) << 2), false);
        // Online softmax per row: the scores become exp(s - new max), the accumulator and sum rescale.
        for (let r = 0; r < 4; r++) {
          const row = sc + <usize>r * (KT << 2);
          for (let j = kc; j < kc4; j++) store<f32>(row + ((<usize>j) << 2), -Infinity);
          let tileMax: f32 = -Infinity;
          for (let j = 0; j < kc; j++) tileMax = max(tileMax, load<f32>(row + ((<usize>j) << 2)));
          const mAt = mx + ((<usize>(r0 + r)) << 2);
          const sAt = sum + ((<usize>(r0 + r)) << 2);
          const mOld = load<f32>(mAt);
          const mNew = max(mOld, tileMax);
          const tileSum = expShifted(row, kc4, mNew);
          if (mOld != mNew) {
            const alpha = Mathf.exp(mOld - mNew);
            const a4 = f32x4.splat(alpha);
            const accRow = acc + <usize>(r0 + r) * ((<usize>dv4) << 2);
            for (let c = 0; c < dv4; c += 4) v128.store(accRow + ((<usize>c) << 2), f32x4.mul(v128.load(accRow + ((<usize>c) << 2)), a4));
            store<f32>(sAt, load<f32>(sAt) * alpha + tileSum);
          } else {
            store<f32>(sAt, load<f32>(sAt) + tileSum);
          }
          store<f32>(mAt, mNew);
        }
        // P·V: the tile's value rows, times each row's weights, into the rows' accumulators.
        valueTile(vt, vStride, kc, sc, acc + <usize>r0 * ((<usize>dv4) << 2), dv, dv4);
      }
    }
    for (let r = 0; r < nq; r++) {
      const l = load<f32>(sum + ((<usize>r) << 2));
      combineRow(
        out + <usize>r * dvB, lse + ((<usize>r) << 2), acc + <usize>r * ((<usize>dv4) << 2), 1 / l,
        load<f32>(mx + ((<usize>r) << 2)) + Mathf.log(l), dv, write,
      );
    }
  }
}

/** Block-diagonal attention over sorted rows, blocks [blkFrom, blkTo); see BlockTask in src/ops.ts. */
export function blockAttention(
  q: usize, k: usize, v: usize, qPerm: usize, kPerm: usize,
  nqSorted: i32, nqReal: i32, nk: i32, d: i32, dv: i32, scale: f32,
  qBlock: i32, kBlock: i32, nBlocks: i32, phantomKeys: i32, blkFrom: i32, blkTo: i32,
  out: usize, lse: usize, write: i32, scratch: usize,
): void {
  for (let blk = blkFrom; blk < blkTo; blk++) {
    const qFrom = blk * qBlock;
    const qTo = blk == nBlocks - 1 ? nqSorted : min(nqSorted, qFrom + qBlock);
    if (qFrom >= qTo) continue;
    const kFrom = blk * kBlock;
    const kc = min(kBlock, nk - kFrom);
    attendCore(
      q, qPerm, qFrom, qTo - qFrom, nqReal, k, v, kPerm, kFrom, kc, 0, d, dv, scale,
      MASK_NONE, 0, 1, 0, phantomKeys ? kBlock - kc : 0, 0, out, lse, write, scratch,
    );
  }
}

/** Sorted query positions [qFrom, qTo) against sampled sorted keys with the own-block mask; see SampledTask. */
export function sampledAttention(
  q: usize, k: usize, v: usize, qPerm: usize, kPerm: usize, samples: usize, m: i32,
  nqSorted: i32, nqReal: i32, d: i32, dv: i32, scale: f32,
  qBlock: i32, kBlock: i32, nBlocks: i32, lseOffset: f32, qFrom: i32, qTo: i32,
  out: usize, lse: usize, write: i32, scratch: usize,
): void {
  const kIdx = scratch + <usize>attentionScratchBytes(d, dv, 0);
  const kTags = kIdx + ((<usize>m) << 2);
  const cache = tileCacheBytes(d, dv, m) > 0 ? (kTags + ((<usize>m) << 2) + 15) & ~15 : 0;
  for (let j = 0; j < m; j++) {
    const s = load<i32>(samples + ((<usize>j) << 2));
    store<i32>(kIdx + ((<usize>j) << 2), load<i32>(kPerm + ((<usize>s) << 2)));
    store<i32>(kTags + ((<usize>j) << 2), s / kBlock);
  }
  attendCore(
    q, qPerm, qFrom, qTo - qFrom, nqReal, k, v, kIdx, 0, m, kTags, d, dv, scale,
    MASK_OWN_BLOCK, 0, qBlock, nBlocks - 1, 0, lseOffset, out, lse, write, scratch, STATS_NONE, 0, 0, cache,
  );
}

/** Merge src rows (part 2) into dst rows (part 1), or copy them when write == 0. */
export function mergeRows(
  dstOut: usize, dstLse: usize, srcOut: usize, srcLse: usize, rows: i32, dv: i32, write: i32,
): void {
  const dvBytes = (<usize>dv) << 2;
  for (let i = 0; i < rows; i++) {
    combineRow(
      dstOut + <usize>i * dvBytes, dstLse + ((<usize>i) << 2),
      srcOut + <usize>i * dvBytes, 1, load<f32>(srcLse + ((<usize>i) << 2)), dv, write,
    );
  }
}

/** The most keys one micro-tile of window rows takes in windowAttention: a score row's length. */
const BAND_KEYS: i32 = 136;
// Query rows whose keys windowAttention builds as one band: 128 rows build 1.5 keys a row
// for a 64-key window where 64 built 2; the band (up to 275 keys) fits the scratch that
// attentionScratchBytes sizes, for every d and dv.
const BAND_ROWS: i32 = 128;

/**
 * Whether windowAttention serves windows of `win` keys: the windows of MR consecutive rows
 * (starts and ends step by at most one a row) join to at most win + MR - 1 keys, rounded up
 * to 8 for the micro-kernels.
 */
export function windowFitsBand(win: i32): bool {
  return ((win + MR - 1 + 7) & ~7) <= BAND_KEYS;
}

// The end of query row i's window (one past its last key): windowStart + win, and when causal
// not past its position i + causalOffset; at most nk.
@inline function windowEnd(i: i32, winLo: i32, win: i32, causal: bool, causalOffset: i32, nk: i32): i32 {
  const end = windowStart(i, winLo, win, causal, nk) + win;
  return min(nk, causal ? min(end, i + causalOffset + 1) : end);
}

/**
 * The accurate mode's window part for query rows [rowFrom, rowTo) where their windows are
 * short (windowFitsBand): each row against the keys of its window, [max(0, windowStart),
 * windowEnd), less the flagged ones (flags[j] != 0: the columns part's), merged into out and
 * lse (log-add-exp; mergeWeights in SIMD builds, attendCore's MERGE_FIXED in the scalar one).
 * Rows go in chunks of BAND_ROWS, whose keys, the union of their windows, are built once as
 * one band (K transposed, V in column blocks); each micro-tile of MR rows then takes the run
 * of keys its rows' windows cover, from the first one's start (at most BAND_KEYS), in one
 * pass: its scores, the keys outside each row's window and the flagged ones hidden, one
 * softmax (no running rescale), P·V, one merge per row. A row's result depends on its
 * micro-tile's first window start alone (micro-tiles start at rowFrom + a multiple of MR),
 * so that splits of the rows at multiples of MR give the same bits. Scratch: the band (d +
 * dvp floats and two i32 per key, up to BAND_ROWS + win + 15 keys), a micro-tile's queries,
 * scores and accumulators.
 */
export function windowAttention(
  q: usize, k: usize, v: usize, nq: i32, nk: i32, d: i32, dv: i32, scale: f32,
  flags: usize, winLo: i32, win: i32, causal: bool, causalOffset: i32, rowFrom: i32, rowTo: i32,
  out: usize, lse: usize, scratch: usize,
): void {
  for (let c0 = rowFrom; c0 < rowTo; c0 += BAND_ROWS) {
    windowBand(q, k, v, nq, nk, d, dv, scale, flags, winLo, win, causal, causalOffset, c0, min(BAND_ROWS, rowTo - c0), out, lse, scratch);
  }
}

// windowAttention's rows [c0, c0 + rows), rows <= BAND_ROWS: one band of keys.
function windowBand(
  q: usize, k: usize, v: usize, nq: i32, nk: i32, d: i32, dv: i32, scale: f32,
  flags: usize, winLo: i32, win: i32, causal: bool, causalOffset: i32, c0: i32, rows: i32,
  out: usize, lse: usize, scratch: usize,
): void {
  const kFrom = max(0, windowStart(c0, winLo, win, causal, nk));
  const kTo = windowEnd(c0 + rows - 1, winLo, win, causal, causalOffset, nk);
  if (kTo <= kFrom) return;
  const n = kTo - kFrom;
  // A micro-tile reads up to 7 keys past the band's last (its run rounded up to 8): zeros.
  const keys = ((n + 7) & ~7) + 8;
  const dvp = paddedDv(dv);
  const dBytes = (<usize>d) << 2;
  const dvBytes = (<usize>dv) << 2;
  const dvpBytes = (<usize>dvp) << 2;
  const scRow = (<usize>BAND_KEYS) << 2;
  const kt = scratch; // [d][keys]
  const vt = kt + <usize>d * ((<usize>keys) << 2); // [dvp / 8][keys][8]
  const keyRows = vt + <usize>keys * dvpBytes; // [n]: the band's key rows
  const flagged = keyRows + ((<usize>n) << 2); // [n + 1]: flagged keys of the band before each
  const qs = (flagged + ((<usize>(n + 1)) << 2) + 15) & ~15; // [d][MR]
  const sc = qs + <usize>MR * dBytes; // [MR][BAND_KEYS]
  const acc = sc + <usize>MR * scRow; // [MR][dvp]
  const mRow = acc + <usize>MR * dvpBytes; // [MR] each
  const lRow = mRow + ((<usize>MR) << 2);
  const alphas = lRow + ((<usize>MR) << 2);
  const rowMax = alphas + ((<usize>MR) << 2);

  let count = 0;
  store<i32>(flagged, 0);
  for (let j = 0; j < n; j++) {
    store<i32>(keyRows + ((<usize>j) << 2), kFrom + j);
    if (flags != 0 && load<i32>(flags + ((<usize>(kFrom + j)) << 2)) != 0) count++;
    store<i32>(flagged + ((<usize>(j + 1)) << 2), count);
  }
  // P·V reads V rows where they lie when they hold whole blocks of 8 values (dv = dvp), else
  // a copy in column blocks.
  const vRows = dv == dvp;
  buildTile(k, vRows ? 0 : v, keyRows, n, keys, d, dv, kt, vt, keys);

  for (let r0 = 0; r0 < rows; r0 += MR) {
    const nr = min(MR, rows - r0);
    const first = c0 + r0;
    // The micro-tile's run of keys [a, b): its first row's window start to its last row's end.
    const a = max(0, windowStart(first, winLo, win, causal, nk));
    const b = windowEnd(first + nr - 1, winLo, win, causal, causalOffset, nk);
    if (b <= a) continue;
    const width = (b - a + 7) & ~7;
    const off = a - kFrom;
    const anyFlag = load<i32>(flagged + ((<usize>(off + b - a)) << 2)) > load<i32>(flagged + ((<usize>off) << 2));
    queryTile(q, 0, first, nr, nq, d, scale, qs);
    scoresTile(qs, kt + ((<usize>off) << 2), sc, d, width, rowMax, (<usize>keys) << 2, scRow);
    for (let r = 0; r < MR; r++) {
      const s = sc + <usize>r * scRow;
      store<f32>(mRow + ((<usize>r) << 2), -Infinity);
      store<f32>(lRow + ((<usize>r) << 2), 0);
      if (r >= nr) {
        // No row: zero weights, its accumulator unused.
        memory.fill(s, 0, (<usize>width) << 2);
        store<f32>(alphas + ((<usize>r) << 2), 0);
        continue;
      }
      const i = first + r;
      // The row's window in the run: [lo, hi).
      const lo = max(0, windowStart(i, winLo, win, causal, nk)) - a;
      const hi = max(lo, windowEnd(i, winLo, win, causal, causalOffset, nk) - a);
      for (let j = 0; j < lo; j++) store<f32>(s + ((<usize>j) << 2), -Infinity);
      for (let j = hi; j < width; j++) store<f32>(s + ((<usize>j) << 2), -Infinity);
      if (anyFlag && load<i32>(flagged + ((<usize>(off + hi)) << 2)) > load<i32>(flagged + ((<usize>(off + lo)) << 2))) {
        for (let j = lo; j < hi; j++) {
          if (load<i32>(flags + ((<usize>(a + j)) << 2)) != 0) store<f32>(s + ((<usize>j) << 2), -Infinity);
        }
      }
      softmaxRow(s, width, rowMaxOf(s, width), mRow + ((<usize>r) << 2), lRow + ((<usize>r) << 2), alphas + ((<usize>r) << 2));
    }
    // The run is each row's only tile: the accumulators start at zero (softmaxRow's factor
    // is 0 for a row with keys, 1 for one without).
    memory.fill(acc, 0, <usize>MR * dvpBytes);
    // P·V over the run's keys alone (V rows in place end at nk).
    if (vRows) accumulateTile(sc, v + <usize>a * dvBytes, acc, alphas, b - a, dvp, VB_KEY, dvBytes, scRow);
    else accumulateTile(sc, vt + <usize>off * VB_KEY, acc, alphas, b - a, dvp, <usize>keys * VB_KEY, VB_KEY, scRow);
    if (!ASC_FEATURE_SIMD) {
      for (let r = 0; r < nr; r++) {
        const l = load<f32>(lRow + ((<usize>r) << 2));
        // A row whose keys are all hidden keeps what it holds.
        if (l == 0) continue;
        const i = first + r;
        const lse2 = load<f32>(mRow + ((<usize>r) << 2)) + Mathf.log(l);
        combineRow(out + <usize>i * dvBytes, lse + ((<usize>i) << 2), acc + <usize>r * dvpBytes, 1 / l, lse2, dv, MERGE_FIXED);
      }
      continue;
    }
    // The rows' merges, four at once (mergeWeights); rows past nr have m = -inf, l = 0.
    for (let r = 0; r < MR; r++) {
      store<f32>(rowMax + ((<usize>r) << 2), r < nr ? load<f32>(lse + ((<usize>(first + r)) << 2)) : -Infinity);
    }
    mergeWeights(rowMax, mRow, lRow, alphas);
    for (let r = 0; r < nr; r++) {
      // A row whose keys are all hidden keeps what it holds.
      if (load<f32>(lRow + ((<usize>r) << 2)) == 0) continue;
      blendRow(
        out + <usize>(first + r) * dvBytes, acc + <usize>r * dvpBytes,
        load<f32>(mRow + ((<usize>r) << 2)), load<f32>(alphas + ((<usize>r) << 2)), dv,
      );
      store<f32>(lse + ((<usize>(first + r)) << 2), load<f32>(rowMax + ((<usize>r) << 2)));
    }
  }
}

/**
 * Log-add-exp merges of four rows (SIMD builds): each holds lse1 (at lse, four lanes) and
 * takes a part of max m and sum l (the sum of exp(score - m) over its keys; at m and l). With
 * M = max(lse1, m), the merged lse is M + log(exp(lse1 - M) + l exp(m - M)) (the sum lies in
 * [1, l + 1]); the row keeps exp(lse1 - lse) of what it held and takes exp(m - lse) of the
 * part's unnormalised sum of P·V. Writes the merged lse into lse, the factors kept into m and
 * the factors taken into take. Lanes with l = 0 are not defined.
 */
@inline function mergeWeights(lse: usize, m: usize, l: usize, take: usize): void {
  const lse1 = v128.load(lse);
  const mv = v128.load(m);
  const top = f32x4.max(lse1, mv);
  const total = madd(v128.load(l), expNonPositive(f32x4.sub(mv, top)), expNonPositive(f32x4.sub(lse1, top)));
  const merged = f32x4.add(top, logNormal(total));
  v128.store(lse, merged);
  v128.store(m, expNonPositive(f32x4.sub(lse1, merged)));
  v128.store(take, expNonPositive(f32x4.sub(mv, merged)));
}
