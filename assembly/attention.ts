// Tiled exact attention with log-sum-exp (online softmax, never an n x n matrix), over
// rows read directly or through index lists. One core serves full exact attention
// (causal or not), the block-diagonal part over LSH-sorted rows, and attention against
// sampled keys with the own-block mask; results are written or lse-merged in place.
//
// Work is organised as: a chunk of QC query rows (scaled copy in scratch), against tiles
// of KT keys (K transposed, V copied, both in scratch), in micro-tiles of 4 query rows.
// Scores for a micro-tile are 4 x KT; keys are the vector lanes, so any head dim works.

const QC: i32 = 64;
const KT: i32 = 64;
const EPS_F32: f32 = 1.1920928955078125e-7; // 2^-23, float32 epsilon (reference merge)

// write modes (ops.ts WriteMode)
const WRITE: i32 = 0;
const MERGE_REFERENCE: i32 = 1;

// mask kinds
const MASK_NONE: i32 = 0;
const MASK_CAUSAL: i32 = 1;
const MASK_OWN_BLOCK: i32 = 2;

@inline function paddedDv(dv: i32): i32 {
  return (dv + 7) & ~7;
}

/** Bytes of scratch the attention exports need for head dims d, dv and m samples. */
export function attentionScratchBytes(d: i32, dv: i32, m: i32): i32 {
  const dvp = paddedDv(dv);
  const floats = QC * d + d * KT + KT * dvp + QC * dvp + 2 * QC + 4 * KT + KT;
  return floats * 4 + m * 8 + 64;
}

// a * b + c: one fused op where the engine has relaxed SIMD, else a multiply and an add.
@inline function madd(a: v128, b: v128, c: v128): v128 {
  if (ASC_FEATURE_RELAXED_SIMD) return f32x4.relaxed_madd(a, b, c);
  return f32x4.add(f32x4.mul(a, b), c);
}

// exp(x) for x <= 0 (x may be -inf), four lanes; Cephes expf range reduction and
// polynomial, relative error ~1e-7. Lanes below -87 (incl. -inf) give exactly 0.
@inline function expNonPositive(x: v128): v128 {
  const xc = f32x4.max(x, f32x4.splat(-87.0));
  const n = f32x4.nearest(f32x4.mul(xc, f32x4.splat(1.44269504088896341)));
  let r = f32x4.sub(xc, f32x4.mul(n, f32x4.splat(0.693359375)));
  r = f32x4.sub(r, f32x4.mul(n, f32x4.splat(-2.12194440e-4)));
  let p = f32x4.splat(1.9875691500e-4);
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.3981999507e-3));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(8.3334519073e-3));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(4.1665795894e-2));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(1.6666665459e-1));
  p = f32x4.add(f32x4.mul(p, r), f32x4.splat(5.0000001201e-1));
  p = f32x4.add(f32x4.add(f32x4.mul(f32x4.mul(p, r), r), r), f32x4.splat(1.0));
  const pow2 = i32x4.shl(i32x4.add(i32x4.trunc_sat_f32x4_s(n), i32x4.splat(127)), 23);
  return v128.andnot(f32x4.mul(p, pow2), f32x4.lt(x, f32x4.splat(-87.0)));
}

// sc[r][j] = sum_k qs[r][k] * kt[k][j] for 4 rows r and j < kc (rounded up to 8).
@inline function scores4(qs: usize, kt: usize, sc: usize, d: i32, kc: i32): void {
  const rowBytes = (<usize>d) << 2;
  if (ASC_FEATURE_SIMD) {
    for (let j0 = 0; j0 < kc; j0 += 8) {
      let s00 = f32x4.splat(0), s01 = f32x4.splat(0);
      let s10 = f32x4.splat(0), s11 = f32x4.splat(0);
      let s20 = f32x4.splat(0), s21 = f32x4.splat(0);
      let s30 = f32x4.splat(0), s31 = f32x4.splat(0);
      let kp = kt + ((<usize>j0) << 2);
      let qp = qs;
      for (let k = 0; k < d; k++) {
        const k0 = v128.load(kp);
        const k1 = v128.load(kp, 16);
        const q0 = f32x4.splat(load<f32>(qp));
        const q1 = f32x4.splat(load<f32>(qp + rowBytes));
        const q2 = f32x4.splat(load<f32>(qp + 2 * rowBytes));
        const q3 = f32x4.splat(load<f32>(qp + 3 * rowBytes));
        s00 = madd(q0, k0, s00); s01 = madd(q0, k1, s01);
        s10 = madd(q1, k0, s10); s11 = madd(q1, k1, s11);
        s20 = madd(q2, k0, s20); s21 = madd(q2, k1, s21);
        s30 = madd(q3, k0, s30); s31 = madd(q3, k1, s31);
        kp += (<usize>KT) << 2;
        qp += 4;
      }
      const o = sc + ((<usize>j0) << 2);
      const stride = (<usize>KT) << 2;
      v128.store(o, s00); v128.store(o, s01, 16);
      v128.store(o + stride, s10); v128.store(o + stride, s11, 16);
      v128.store(o + 2 * stride, s20); v128.store(o + 2 * stride, s21, 16);
      v128.store(o + 3 * stride, s30); v128.store(o + 3 * stride, s31, 16);
    }
  } else {
    for (let r = 0; r < 4; r++) {
      for (let j = 0; j < kc; j++) {
        let acc: f32 = 0;
        for (let k = 0; k < d; k++) {
          acc += load<f32>(qs + <usize>r * rowBytes + ((<usize>k) << 2)) *
            load<f32>(kt + ((<usize>(k * KT + j)) << 2));
        }
        store<f32>(sc + ((<usize>(r * KT + j)) << 2), acc);
      }
    }
  }
}

// acc[r][0..dvp) += sum_{j < kc} sc[r][j] * vt[j][0..dvp) for 4 rows.
@inline function accumulatePV4(sc: usize, vt: usize, acc: usize, kc: i32, dvp: i32): void {
  const accRow = (<usize>dvp) << 2;
  const scRow = (<usize>KT) << 2;
  if (ASC_FEATURE_SIMD) {
    for (let c = 0; c < dvp; c += 8) {
      const a0 = acc + ((<usize>c) << 2);
      let o00 = v128.load(a0), o01 = v128.load(a0, 16);
      let o10 = v128.load(a0 + accRow), o11 = v128.load(a0 + accRow, 16);
      let o20 = v128.load(a0 + 2 * accRow), o21 = v128.load(a0 + 2 * accRow, 16);
      let o30 = v128.load(a0 + 3 * accRow), o31 = v128.load(a0 + 3 * accRow, 16);
      let vp = vt + ((<usize>c) << 2);
      let sp = sc;
      for (let j = 0; j < kc; j++) {
        const v0 = v128.load(vp);
        const v1 = v128.load(vp, 16);
        const p0 = f32x4.splat(load<f32>(sp));
        const p1 = f32x4.splat(load<f32>(sp + scRow));
        const p2 = f32x4.splat(load<f32>(sp + 2 * scRow));
        const p3 = f32x4.splat(load<f32>(sp + 3 * scRow));
        o00 = madd(p0, v0, o00); o01 = madd(p0, v1, o01);
        o10 = madd(p1, v0, o10); o11 = madd(p1, v1, o11);
        o20 = madd(p2, v0, o20); o21 = madd(p2, v1, o21);
        o30 = madd(p3, v0, o30); o31 = madd(p3, v1, o31);
        vp += accRow;
        sp += 4;
      }
      v128.store(a0, o00); v128.store(a0, o01, 16);
      v128.store(a0 + accRow, o10); v128.store(a0 + accRow, o11, 16);
      v128.store(a0 + 2 * accRow, o20); v128.store(a0 + 2 * accRow, o21, 16);
      v128.store(a0 + 3 * accRow, o30); v128.store(a0 + 3 * accRow, o31, 16);
    }
  } else {
    for (let r = 0; r < 4; r++) {
      for (let j = 0; j < kc; j++) {
        const p = load<f32>(sc + <usize>r * scRow + ((<usize>j) << 2));
        if (p == 0) continue;
        const vrow = vt + <usize>j * accRow;
        const arow = acc + <usize>r * accRow;
        for (let c = 0; c < dvp; c++) {
          const at = arow + ((<usize>c) << 2);
          store<f32>(at, load<f32>(at) + p * load<f32>(vrow + ((<usize>c) << 2)));
        }
      }
    }
  }
}

// One row of scores (KT wide, masked entries already -inf): online-softmax update of
// (m, l) and of the accumulator row; the scores are replaced by their probabilities.
@inline function softmaxRow(s: usize, mAt: usize, lAt: usize, accRow: usize, dvp: i32): void {
  let mx: f32 = -Infinity;
  if (ASC_FEATURE_SIMD) {
    let mv = f32x4.splat(-Infinity);
    for (let j = 0; j < KT; j += 4) mv = f32x4.max(mv, v128.load(s + ((<usize>j) << 2)));
    mx = max(max(f32x4.extract_lane(mv, 0), f32x4.extract_lane(mv, 1)),
      max(f32x4.extract_lane(mv, 2), f32x4.extract_lane(mv, 3)));
  } else {
    for (let j = 0; j < KT; j++) mx = max(mx, load<f32>(s + ((<usize>j) << 2)));
  }
  if (mx == -Infinity) {
    memory.fill(s, 0, (<usize>KT) << 2);
    return;
  }
  const mOld = load<f32>(mAt);
  const mNew = max(mOld, mx);
  const alpha = Mathf.exp(mOld - mNew);
  let sum: f32 = 0;
  if (ASC_FEATURE_SIMD) {
    const mv = f32x4.splat(mNew);
    let sv = f32x4.splat(0);
    for (let j = 0; j < KT; j += 4) {
      const at = s + ((<usize>j) << 2);
      const p = expNonPositive(f32x4.sub(v128.load(at), mv));
      v128.store(at, p);
      sv = f32x4.add(sv, p);
    }
    sum = (f32x4.extract_lane(sv, 0) + f32x4.extract_lane(sv, 1)) +
      (f32x4.extract_lane(sv, 2) + f32x4.extract_lane(sv, 3));
  } else {
    for (let j = 0; j < KT; j++) {
      const at = s + ((<usize>j) << 2);
      const x = load<f32>(at);
      const p: f32 = x == -Infinity ? 0 : Mathf.exp(x - mNew);
      store<f32>(at, p);
      sum += p;
    }
  }
  store<f32>(lAt, load<f32>(lAt) * alpha + sum);
  store<f32>(mAt, mNew);
  if (alpha != 1) {
    if (ASC_FEATURE_SIMD) {
      const av = f32x4.splat(alpha);
      for (let c = 0; c < dvp; c += 4) {
        const at = accRow + ((<usize>c) << 2);
        v128.store(at, f32x4.mul(v128.load(at), av));
      }
    } else {
      for (let c = 0; c < dvp; c++) {
        const at = accRow + ((<usize>c) << 2);
        store<f32>(at, load<f32>(at) * alpha);
      }
    }
  }
}

/**
 * Write (out2 * outScale, lse2) into a destination row, or merge it there as part 2 of
 * (part 1 = what the row holds): c = 1 / (1 + exp(lse2 - lse1)), out = c out1 + (1-c) out2.
 * reference: lse = lse1 - log(c + 2^-23); fixed: lse = max + log1p(exp(-|lse1 - lse2|)).
 */
function combineRow(
  dstOut: usize, dstLse: usize, src: usize, srcScale: f32, lse2: f32, dv: i32, write: i32,
): void {
  if (write == WRITE) {
    for (let c = 0; c < dv; c++) {
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
    c = 1 / (1 + Mathf.exp(lse2 - lse1));
    lse = max(lse1, lse2) + Mathf.log1p(Mathf.exp(-Mathf.abs(lse1 - lse2)));
  }
  const c2: f32 = (1 - c) * srcScale;
  for (let k = 0; k < dv; k++) {
    const at = dstOut + ((<usize>k) << 2);
    store<f32>(at, c * load<f32>(at) + c2 * load<f32>(src + ((<usize>k) << 2)));
  }
  store<f32>(dstLse, lse);
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
function attendCore(
  q: usize, qIdx: usize, qStart: i32, nq: i32, qReal: i32,
  k: usize, v: usize, kIdx: usize, kStart: i32, nk: i32, kTags: usize,
  d: i32, dv: i32, scale: f32,
  maskKind: i32, causalOffset: i32, qTagDiv: i32, qTagMax: i32,
  phantom: i32, lseAdd: f32,
  out: usize, lse: usize, write: i32, scratch: usize,
): void {
  const dvp = paddedDv(dv);
  const dBytes = (<usize>d) << 2;
  const dvBytes = (<usize>dv) << 2;
  const dvpBytes = (<usize>dvp) << 2;
  const qs = scratch;
  const kt = qs + (<usize>(QC * d) << 2);
  const vt = kt + (<usize>(d * KT) << 2);
  const acc = vt + (<usize>(KT * dvp) << 2);
  const mRow = acc + (<usize>(QC * dvp) << 2);
  const lRow = mRow + ((<usize>QC) << 2);
  const sc = lRow + ((<usize>QC) << 2);
  const tagTile = sc + ((<usize>(4 * KT)) << 2);

  for (let c0 = 0; c0 < nq; c0 += QC) {
    const rows = min(QC, nq - c0);
    const rows4 = (rows + 3) & ~3;
    for (let i = 0; i < rows4; i++) {
      const dst = qs + <usize>i * dBytes;
      let idx = -1;
      if (i < rows) {
        const p = qStart + c0 + i;
        idx = qIdx ? load<i32>(qIdx + ((<usize>p) << 2)) : p;
      }
      if (idx < 0 || idx >= qReal) {
        memory.fill(dst, 0, dBytes);
      } else {
        const src = q + <usize>idx * dBytes;
        for (let c = 0; c < d; c++) {
          store<f32>(dst + ((<usize>c) << 2), load<f32>(src + ((<usize>c) << 2)) * scale);
        }
      }
    }
    memory.fill(acc, 0, <usize>rows4 * dvpBytes);
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
      for (let j = 0; j < kcPad; j++) {
        const vdst = vt + <usize>j * dvpBytes;
        if (j < kc) {
          const p = kStart + t0 + j;
          const idx = kIdx ? load<i32>(kIdx + ((<usize>p) << 2)) : p;
          const ks = k + <usize>idx * dBytes;
          for (let c = 0; c < d; c++) {
            store<f32>(kt + ((<usize>(c * KT + j)) << 2), load<f32>(ks + ((<usize>c) << 2)));
          }
          memory.copy(vdst, v + <usize>idx * dvBytes, dvBytes);
          if (dvp > dv) memory.fill(vdst + dvBytes, 0, dvpBytes - dvBytes);
          if (maskKind == MASK_OWN_BLOCK) {
            store<i32>(tagTile + ((<usize>j) << 2), load<i32>(kTags + ((<usize>(t0 + j)) << 2)));
          }
        } else {
          for (let c = 0; c < d; c++) store<f32>(kt + ((<usize>(c * KT + j)) << 2), 0);
          memory.fill(vdst, 0, dvpBytes);
        }
      }
      // Does any element of this tile need masking for this chunk?
      const tileLastPos = kStart + t0 + kc - 1;
      const needCausal = maskKind == MASK_CAUSAL && tileLastPos > qStart + c0 + causalOffset;

      for (let r0 = 0; r0 < rows4; r0 += 4) {
        scores4(qs + <usize>r0 * dBytes, kt, sc, d, kcPad);
        for (let r = 0; r < 4; r++) {
          const s = sc + ((<usize>(r * KT)) << 2);
          for (let j = kc; j < KT; j++) store<f32>(s + ((<usize>j) << 2), -Infinity);
          const qPos = qStart + c0 + r0 + r;
          if (needCausal) {
            const firstMasked = max(0, qPos + causalOffset + 1 - (kStart + t0));
            for (let j = firstMasked; j < kc; j++) store<f32>(s + ((<usize>j) << 2), -Infinity);
          } else if (maskKind == MASK_OWN_BLOCK) {
            const tag = min(qPos / qTagDiv, qTagMax);
            for (let j = 0; j < kc; j++) {
              if (load<i32>(tagTile + ((<usize>j) << 2)) == tag) store<f32>(s + ((<usize>j) << 2), -Infinity);
            }
          }
          const row = r0 + r;
          softmaxRow(s, mRow + ((<usize>row) << 2), lRow + ((<usize>row) << 2), acc + <usize>row * dvpBytes, dvp);
        }
        accumulatePV4(sc, vt, acc + <usize>r0 * dvpBytes, kc, dvp);
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
    }
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

/** Block-diagonal attention over sorted rows; see BlockTask in src/ops.ts. */
export function blockAttention(
  q: usize, k: usize, v: usize, qPerm: usize, kPerm: usize,
  nqSorted: i32, nqReal: i32, nk: i32, d: i32, dv: i32, scale: f32,
  qBlock: i32, kBlock: i32, nBlocks: i32, phantomKeys: i32,
  out: usize, lse: usize, write: i32, scratch: usize,
): void {
  for (let blk = 0; blk < nBlocks; blk++) {
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

/** Attention against sampled sorted keys with the own-block mask; see SampledTask. */
export function sampledAttention(
  q: usize, k: usize, v: usize, qPerm: usize, kPerm: usize, samples: usize, m: i32,
  nqSorted: i32, nqReal: i32, d: i32, dv: i32, scale: f32,
  qBlock: i32, kBlock: i32, nBlocks: i32, lseOffset: f32,
  out: usize, lse: usize, write: i32, scratch: usize,
): void {
  const kIdx = scratch + <usize>attentionScratchBytes(d, dv, 0);
  const kTags = kIdx + ((<usize>m) << 2);
  for (let j = 0; j < m; j++) {
    const s = load<i32>(samples + ((<usize>j) << 2));
    store<i32>(kIdx + ((<usize>j) << 2), load<i32>(kPerm + ((<usize>s) << 2)));
    store<i32>(kTags + ((<usize>j) << 2), s / kBlock);
  }
  attendCore(
    q, qPerm, 0, nqSorted, nqReal, k, v, kIdx, 0, m, kTags, d, dv, scale,
    MASK_OWN_BLOCK, 0, qBlock, nBlocks - 1, 0, lseOffset, out, lse, write, scratch,
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
