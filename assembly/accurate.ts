// The accurate mode's parts (docs/algorithm.md, "The accurate mode"): every key a query may see
// is counted by exactly one part. Exact parts, in this order, each hiding what an earlier
// one counted: shared columns (sink keys and probed heavy columns), a local window, and
// for each LSH hash round (table) the keys that share the query's bucket (at most `cap`
// of them per bucket). The remainder is estimated from sampled
// keys that every exact part hides. Each exact part also reports, per query row, how many
// keys it counted and the plain sum of their V rows, so that the remainder's size and the
// sum of V over it are known exactly (remainderMerge). Causal, query row i sits at key
// position i + causalOffset (causalOffset = nk - nq: the queries are the last nq positions)
// and sees the keys up to it; windows (winLo) are in key positions too.
import {
  addRow, attendCore, bucketAttention, BUCKET_KEYS, KT, expNonPositive, madd, vmax, windowAttention, windowFitsBand, windowStart,
  MASK_ACCURATE, MERGE_FIXED, STATS_ADD, STATS_NONE, STATS_WRITE, WINDOW_IGNORE, WINDOW_HIDE_INSIDE, WINDOW_HIDE_OUTSIDE,
  maskCausal, maskCausalOffset, maskFlags, maskWinMode, maskWinLo, maskWin, maskRounds, maskQTags, maskKTags, maskNq, maskNk,
} from './attention';
import { bucketRows, BUCKET_ROWS } from './bucketrows';

// Query rows per chunk of a long window (attendCore): a chunk builds the tiles of the union
// of its rows' windows, win + WC - 1 keys, once for all its rows (each micro-tile computes
// only the keys that meet its rows' windows). Tiles start at multiples of KT whatever the
// chunk, so that a row's results do not depend on its chunk.
const WC: i32 = 256;
// Query rows per run of windowStats: its running sum restarts with each, so that a split of
// the rows at a multiple gives the same sums (WINDOW_ROWS in src/cpu/backend.ts).
const STATS_ROWS: i32 = 64;
const WRITE: i32 = 0;

function setMask(
  causal: i32, causalOffset: i32, flags: usize, winMode: i32, winLo: i32, win: i32,
  rounds: i32, qTags: usize, kTags: usize, nq: i32, nk: i32,
): void {
  maskCausal = causal != 0;
  maskCausalOffset = causalOffset;
  maskFlags = flags;
  maskWinMode = win > 0 ? winMode : WINDOW_IGNORE;
  maskWinLo = winLo;
  maskWin = win;
  maskRounds = rounds;
  maskQTags = qTags;
  maskKTags = kTags;
  maskNq = nq;
  maskNk = nk;
}

/**
 * Part 1: query rows [qFrom, qTo) against the listed key positions cols[0..nCols)
 * (ascending), hiding only causally; overwrites out, lse and the stats. cache: tileCacheBytes(d, dv,
 * nCols) bytes for the list's tiles, or 0.
 */
export function accurateColumns(
  q: usize, k: usize, v: usize, nq: i32, nk: i32, d: i32, dv: i32, scale: f32,
  cols: usize, nCols: i32, causal: i32, causalOffset: i32, qFrom: i32, qTo: i32,
  out: usize, lse: usize, cnt: usize, vsum: usize, scratch: usize, cache: usize,
): void {
  setMask(causal, causalOffset, 0, WINDOW_IGNORE, 0, 0, 0, 0, 0, nq, nk);
  attendCore(
    q, 0, qFrom, qTo - qFrom, nq, k, v, cols, 0, nCols, 0, d, dv, scale,
    MASK_ACCURATE, 0, 1, 0, 0, 0, out, lse, WRITE, scratch, STATS_WRITE, cnt, vsum, cache,
  );
}

/**
 * Part 2: query row i in [rowFrom, rowTo) against its window (windowStart in
 * attention.ts), hiding the columns (flags) and, when causal, keys past its position; merged into out
 * and lse, stats added. Short windows (windowFitsBand) go through windowAttention, each
 * micro-tile of rows in one pass over its run of keys; longer ones through attendCore in
 * chunks of WC rows from rowFrom, whose keys are the union of their windows, in tiles from
 * multiples of KT; the stats in runs of STATS_ROWS rows. A split of the rows gives the same
 * results where rowFrom is a multiple of STATS_ROWS (WINDOW_ROWS in src/cpu/backend.ts).
 */
export function accurateWindow(
  q: usize, k: usize, v: usize, nq: i32, nk: i32, d: i32, dv: i32, scale: f32,
  flags: usize, winLo: i32, win: i32, causal: i32, causalOffset: i32, rowFrom: i32, rowTo: i32,
  out: usize, lse: usize, cnt: usize, vsum: usize, scratch: usize,
): void {
  if (windowFitsBand(win)) {
    windowAttention(q, k, v, nq, nk, d, dv, scale, flags, winLo, win, causal != 0, causalOffset, rowFrom, rowTo, out, lse, scratch);
  } else {
    setMask(causal, causalOffset, flags, WINDOW_HIDE_OUTSIDE, winLo, win, 0, 0, 0, nq, nk);
    for (let c0 = rowFrom; c0 < rowTo; c0 += WC) {
      const rows = min(WC, rowTo - c0);
      // Window starts never decrease with the row: the chunk's keys run from its first
      // row's window start to its last row's window end, in tiles from a multiple of KT.
      const kFrom = max(0, windowStart(c0, winLo, win, causal != 0, nk)) & ~(KT - 1);
      const kTo = min(nk, windowStart(c0 + rows - 1, winLo, win, causal != 0, nk) + win);
      if (kTo <= kFrom) continue;
      attendCore(
        q, 0, c0, rows, nq, k, v, 0, kFrom, kTo - kFrom, 0, d, dv, scale,
        MASK_ACCURATE, 0, 1, 0, 0, 0, out, lse, MERGE_FIXED, scratch, STATS_NONE,
      );
    }
  }
  for (let c0 = rowFrom; c0 < rowTo; c0 += STATS_ROWS) {
    const rows = min(STATS_ROWS, rowTo - c0);
    windowStats(v, nk, dv, flags, winLo, win, causal != 0, causalOffset, c0, c0 + rows, cnt, vsum, scratch);
  }
}

/**
 * The window part's stats of rows [from, to): row i counts the keys of its window that it
 * may see, [max(0, lo), min(nk, lo + win)) for lo = windowStart(i) (causal: up to its
 * position i + causalOffset), less the flagged ones (the columns); adds their number to
 * cnt[i] and the sum of their V rows to vsum[i]. The run of keys slides with the row (both
 * ends never decrease): each key's V row joins the running sum once and leaves it once.
 * run: dv f32 of scratch.
 */
function windowStats(
  v: usize, nk: i32, dv: i32, flags: usize, winLo: i32, win: i32, causal: bool, causalOffset: i32,
  from: i32, to: i32, cnt: usize, vsum: usize, run: usize,
): void {
  const dvBytes = (<usize>dv) << 2;
  memory.fill(run, 0, dvBytes);
  let count = 0;
  let a0 = -1; // the run [a0, b0) summed in run
  let b0 = -1;
  for (let i = from; i < to; i++) {
    const lo = windowStart(i, winLo, win, causal, nk);
    const a = max(0, lo);
    let b = min(nk, lo + win);
    if (causal) b = min(b, i + causalOffset + 1);
    b = max(a, b);
    if (a0 < 0) {
      a0 = a;
      b0 = a;
    }
    const vRow = vsum + <usize>i * dvBytes;
    const cAt = cnt + ((<usize>i) << 2);
    // Most rows' runs move by one key at each end, neither flagged: one pass over the
    // values (the same operations, in the same order, as the loops below).
    if (b == b0 + 1 && a == a0 + 1 && (flags == 0 || (load<i32>(flags + ((<usize>b0) << 2)) == 0 && load<i32>(flags + ((<usize>a0) << 2)) == 0))) {
      slideRun(run, v + <usize>b0 * dvBytes, v + <usize>a0 * dvBytes, vRow, dv);
      a0 = a;
      b0 = b;
      store<f32>(cAt, load<f32>(cAt) + <f32>count);
      continue;
    }
    for (; b0 < b; b0++) {
      if (flags != 0 && load<i32>(flags + ((<usize>b0) << 2)) != 0) continue;
      addRow(run, v + <usize>b0 * dvBytes, dv, 1);
      count++;
    }
    for (; a0 < a; a0++) {
      if (flags != 0 && load<i32>(flags + ((<usize>a0) << 2)) != 0) continue;
      addRow(run, v + <usize>a0 * dvBytes, dv, -1);
      count--;
    }
    store<f32>(cAt, load<f32>(cAt) + <f32>count);
    addRow(vRow, run, dv, 1);
  }
}

// run += enter, then run -= leave, then sum += run, over n values in one pass: the values
// addRow's three passes give (its multiply-adds by 1 and -1 are these adds).
@inline function slideRun(run: usize, enter: usize, leave: usize, sum: usize, n: i32): void {
  let c = 0;
  if (ASC_FEATURE_SIMD) {
    for (; c + 4 <= n; c += 4) {
      const o = (<usize>c) << 2;
      const r = f32x4.sub(f32x4.add(v128.load(run + o), v128.load(enter + o)), v128.load(leave + o));
      v128.store(run + o, r);
      v128.store(sum + o, f32x4.add(v128.load(sum + o), r));
    }
  }
  for (; c < n; c++) {
    const o = (<usize>c) << 2;
    const r = (load<f32>(run + o) + load<f32>(enter + o)) - load<f32>(leave + o);
    store<f32>(run + o, r);
    store<f32>(sum + o, load<f32>(sum + o) + r);
  }
}

// Words of a query head's entry in accurateBuckets' table: q, qPerm, qStarts, flags,
// qTags, out, lse, cnt, vsum.
const HEAD_WORDS: i32 = 9;

/**
 * Part 3, one hash round, for `heads` query heads of one key-value head (grouped-query
 * attention: they share the keys and the keys' buckets). Head g's entry in `table`
 * (HEAD_WORDS pointers) names its queries, their sorted order (qPerm) and bucket starts
 * (qStarts), its column flags and earlier rounds' query tags (the mask's own parts), and its
 * destination (out, lse, cnt, vsum). For each bucket u in [uFrom, uTo) (of numKeys), and
 * each head in turn, the head's sorted queries of bucket u (qPerm positions [qStarts[u],
 * qStarts[u + 1])) against the first `cap` sorted keys of bucket u, hiding the columns, the
 * window, causally, and keys that shared a bucket with the query in one of the `rounds`
 * earlier rounds (tags); merged into out and lse, stats added. Bucket by bucket, the heads'
 * queries of a bucket read its keys one after the other, while they are in cache; each
 * head's bucket is computed as it would be alone.
 */
export function accurateBuckets(
  table: usize, heads: i32, k: usize, v: usize, nq: i32, nk: i32, d: i32, dv: i32, scale: f32,
  kPerm: usize, kStarts: usize, numKeys: i32, cap: i32,
  winLo: i32, win: i32, causal: i32, causalOffset: i32, rounds: i32, kTags: usize,
  uFrom: i32, uTo: i32, scratch: usize,
): void {
  for (let u = uFrom; u < uTo; u++) {
    const kFrom = load<i32>(kStarts + ((<usize>u) << 2));
    const kc = min(cap, load<i32>(kStarts + ((<usize>(u + 1)) << 2)) - kFrom);
    if (kc <= 0) continue;
    const keys = kPerm + ((<usize>kFrom) << 2);
    for (let g = 0; g < heads; g++) {
      const entry = table + ((<usize>(g * HEAD_WORDS)) << 2);
      const q = <usize>load<i32>(entry);
      const qPerm = <usize>load<i32>(entry, 4);
      const qStarts = <usize>load<i32>(entry, 8);
      const out = <usize>load<i32>(entry, 20);
      const lse = <usize>load<i32>(entry, 24);
      const cnt = <usize>load<i32>(entry, 28);
      const vsum = <usize>load<i32>(entry, 32);
      const qFrom = load<i32>(qStarts + ((<usize>u) << 2));
      const qTo = load<i32>(qStarts + ((<usize>(u + 1)) << 2));
      if (qFrom >= qTo) continue;
      setMask(causal, causalOffset, <usize>load<i32>(entry, 12), WINDOW_HIDE_INSIDE, winLo, win, rounds, <usize>load<i32>(entry, 16), kTags, nq, nk);
      if (ASC_FEATURE_SIMD && qTo - qFrom <= BUCKET_ROWS && kc <= KT) {
        bucketRows(q, qPerm, qFrom, qTo - qFrom, k, v, keys, kc, d, dv, scale, out, lse, cnt, vsum, scratch);
      } else if (ASC_FEATURE_SIMD && kc <= BUCKET_KEYS) {
        bucketAttention(q, qPerm, qFrom, qTo - qFrom, nq, k, v, keys, kc, d, dv, scale, out, lse, cnt, vsum, scratch);
      } else {
        attendCore(
          q, qPerm, qFrom, qTo - qFrom, nq, k, v, kPerm, kFrom, kc, 0, d, dv, scale,
          MASK_ACCURATE, 0, 1, 0, 0, 0, out, lse, MERGE_FIXED, scratch, STATS_ADD, cnt, vsum,
        );
      }
    }
  }
}

/**
 * Buckets of one hash round, from the LSH keys (original order) and their stable sort
 * perm: starts[u] = first sorted position with key u (starts[numKeys] = count), and
 * tags[row] = the row's key, or -1 for a row past the first `cap` of its bucket (a key the
 * round does not count).
 */
export function bucketTags(
  keys: usize, perm: usize, count: i32, numKeys: i32, cap: i32, tags: usize, starts: usize,
): void {
  memory.fill(starts, 0, (<usize>(numKeys + 1)) << 2);
  for (let i = 0; i < count; i++) {
    const at = starts + ((<usize>(load<i32>(keys + ((<usize>i) << 2)) + 1)) << 2);
    store<i32>(at, load<i32>(at) + 1);
  }
  for (let u = 0; u < numKeys; u++) {
    const at = starts + ((<usize>(u + 1)) << 2);
    store<i32>(at, load<i32>(at) + load<i32>(at - 4));
  }
  for (let i = 0; i < count; i++) {
    const row = load<i32>(perm + ((<usize>i) << 2));
    const key = load<i32>(keys + ((<usize>row) << 2));
    const rank = i - load<i32>(starts + ((<usize>key) << 2));
    store<i32>(tags + ((<usize>row) << 2), rank < cap ? key : -1);
  }
}

/**
 * The remainder's samples: query rows [qFrom, qTo) against the sampled key positions
 * samples[0..m), hiding everything an exact part counts (columns, window, causal, the
 * buckets of all `rounds` rounds). Overwrites sOut, sLse (softmax over the visible samples,
 * no weighting) and the sample stats. cache: tileCacheBytes(d, dv, m) bytes, or 0.
 */
export function accurateSamples(
  q: usize, k: usize, v: usize, nq: i32, nk: i32, d: i32, dv: i32, scale: f32,
  samples: usize, m: i32, qFrom: i32, qTo: i32,
  flags: usize, winLo: i32, win: i32, causal: i32, causalOffset: i32, rounds: i32, qTags: usize, kTags: usize,
  sOut: usize, sLse: usize, cnt: usize, vsum: usize, scratch: usize, cache: usize,
): void {
  setMask(causal, causalOffset, flags, WINDOW_HIDE_INSIDE, winLo, win, rounds, qTags, kTags, nq, nk);
  attendCore(
    q, 0, qFrom, qTo - qFrom, nq, k, v, samples, 0, m, 0, d, dv, scale,
    MASK_ACCURATE, 0, 1, 0, 0, 0, sOut, sLse, WRITE, scratch, STATS_WRITE, cnt, vsum, cache,
  );
}

// running[0 .. dv) (f64) += the float32 row, two columns at a time where there is SIMD:
// each column's sum is one chain over the rows either way.
@inline function addRowF64(running: usize, row: usize, dv: i32): void {
  let c = 0;
  if (ASC_FEATURE_SIMD) {
    for (; c + 2 <= dv; c += 2) {
      const at = running + ((<usize>c) << 3);
      v128.store(at, f64x2.add(v128.load(at), f64x2.promote_low_f32x4(v128.load64_zero(row + ((<usize>c) << 2)))));
    }
  }
  for (; c < dv; c++) {
    const at = running + ((<usize>c) << 3);
    store<f64>(at, load<f64>(at) + <f64>load<f32>(row + ((<usize>c) << 2)));
  }
}

/**
 * The running sums of V that remainderMerge's runs of rows start from: for each of the
 * `count` ascending key positions starts[t] (causal: the first row's position), the f64 sum
 * of V rows [0, min(starts[t], nk)) when causal, else of all nk rows, into sums [count, dv]. One pass over V, in row order:
 * every run then continues exactly the sum one pass over all rows would make.
 */
export function remainderSums(v: usize, nk: i32, dv: i32, causal: i32, starts: usize, count: i32, sums: usize): void {
  const dvBytes = (<usize>dv) << 2;
  const sumBytes = (<usize>dv) << 3;
  memory.fill(sums, 0, <usize>count * sumBytes);
  let t = 0;
  let running = sums; // the sum so far lives in the first row still to be handed out
  for (let j = 0; j < nk; j++) {
    while (causal && t < count && load<i32>(starts + ((<usize>t) << 2)) <= j) {
      if (t + 1 < count) memory.copy(running + sumBytes, running, sumBytes);
      running += t + 1 < count ? sumBytes : 0;
      t++;
    }
    if (causal && t >= count) return;
    addRowF64(running, v + <usize>j * dvBytes, dv);
  }
  // Starts past the last key (causal), or every start (non-causal), take the whole sum.
  for (; t + 1 < count; t++) {
    memory.copy(running + sumBytes, running, sumBytes);
    running += sumBytes;
  }
}

/**
 * Estimates the remainder R of rows [rowFrom, rowTo) (the keys a row may see that no exact
 * part counted) from its visible samples and merges it into out and lse (exact
 * log-add-exp). With c visible samples, |R| = visible keys - keys counted exactly:
 *   lse_R = lse_samples + log(|R| / c)                       (ratio estimator)
 *   out_R = out_samples + cv * (mean of V over R - mean of V over the samples)
 * The second term is a control variate: where the remainder's logits are flat it makes
 * out_R exactly the mean of V over R. Visible keys are [0, nk), or when causal [0, p] for
 * the row's key position p = i + causalOffset. start: dv f64, the sum of V over the visible
 * keys of the row before rowFrom (remainderSums); scratch holds dv f64.
 */
export function remainderMerge(
  v: usize, nq: i32, nk: i32, dv: i32, causal: i32, causalOffset: i32, cv: f32, rowFrom: i32, rowTo: i32, start: usize,
  out: usize, lse: usize, cntE: usize, vsumE: usize,
  sOut: usize, sLse: usize, cntS: usize, vsumS: usize, scratch: usize,
): void {
  const dvBytes = (<usize>dv) << 2;
  const running = scratch; // f64 [dv]: sum of V over the visible keys
  memory.copy(running, start, (<usize>dv) << 3);
  for (let i = rowFrom; i < rowTo; i++) {
    const p = i + causalOffset;
    if (causal && p < nk) {
      addRowF64(running, v + <usize>p * dvBytes, dv);
    }
    const visible: f64 = causal ? <f64>min(p + 1, nk) : <f64>nk;
    const rest = visible - <f64>load<f32>(cntE + ((<usize>i) << 2));
    const c = <f64>load<f32>(cntS + ((<usize>i) << 2));
    const lseS = load<f32>(sLse + ((<usize>i) << 2));
    if (rest < 0.5 || c < 0.5 || lseS == -Infinity) continue;
    const lse2 = <f32>(<f64>lseS + Math.log(rest / c));
    const lse1 = load<f32>(lse + ((<usize>i) << 2));
    let w: f32 = 0; // weight of part 1 (the exact parts)
    let merged: f32 = lse2;
    if (lse1 != -Infinity) {
      w = 1 / (1 + Mathf.exp(lse2 - lse1));
      merged = max(lse1, lse2) + Mathf.log1p(Mathf.exp(-Mathf.abs(lse1 - lse2)));
    }
    const oRow = out + <usize>i * dvBytes;
    const sRow = sOut + <usize>i * dvBytes;
    const eRow = vsumE + <usize>i * dvBytes;
    const smRow = vsumS + <usize>i * dvBytes;
    // One division per row for each mean, not one per value.
    const perRest = 1 / rest;
    const perSample = 1 / c;
    let col = 0;
    if (ASC_FEATURE_SIMD) {
      // Four columns at a time, each lane the same f64 and f32 operations as below.
      const restV = f64x2.splat(perRest);
      const sampleV = f64x2.splat(perSample);
      const cvV = f64x2.splat(<f64>cv);
      const wV = f32x4.splat(w);
      const w1V = f32x4.splat(1 - w);
      for (; col + 4 <= dv; col += 4) {
        const off = (<usize>col) << 2;
        const run = running + ((<usize>col) << 3);
        const e = v128.load(eRow + off), sm = v128.load(smRow + off), so = v128.load(sRow + off);
        const lo = estimate(v128.load(run), e, sm, so, restV, sampleV, cvV);
        const hi = estimate(v128.load(run, 16), high(e), high(sm), high(so), restV, sampleV, cvV);
        const est = i32x4.shuffle(f32x4.demote_f64x2_zero(lo), f32x4.demote_f64x2_zero(hi), 0, 1, 4, 5);
        const at = oRow + off;
        v128.store(at, f32x4.add(f32x4.mul(wV, v128.load(at)), f32x4.mul(w1V, est)));
      }
    }
    for (; col < dv; col++) {
      const off = (<usize>col) << 2;
      const meanR = (load<f64>(running + ((<usize>col) << 3)) - <f64>load<f32>(eRow + off)) * perRest;
      const meanS = <f64>load<f32>(smRow + off) * perSample;
      const est = <f32>(<f64>load<f32>(sRow + off) + <f64>cv * (meanR - meanS));
      store<f32>(oRow + off, w * load<f32>(oRow + off) + (1 - w) * est);
    }
    store<f32>(lse + ((<usize>i) << 2), merged);
  }
}

// The f32 lanes 2 and 3 of x as lanes 0 and 1.
@inline function high(x: v128): v128 {
  return i32x4.shuffle(x, x, 2, 3, 2, 3);
}

// remainderMerge's estimate for two columns (f64 lanes): running sums r, and the low two
// f32 lanes of e (the exact parts' V sums), sm (the samples' V sums), so (the samples' out).
@inline function estimate(r: v128, e: v128, sm: v128, so: v128, perRest: v128, perSample: v128, cv: v128): v128 {
  const meanR = f64x2.mul(f64x2.sub(r, f64x2.promote_low_f32x4(e)), perRest);
  const meanS = f64x2.mul(f64x2.promote_low_f32x4(sm), perSample);
  return f64x2.add(f64x2.promote_low_f32x4(so), f64x2.mul(cv, f64x2.sub(meanR, meanS)));
}

/**
 * The probe for heavy columns, first step, over keys [kFrom, kTo): for each probe query row
 * rows[p] (p < nProbe), its scores against the keys of the range that it may see (causal:
 * the keys up to its position i + causalOffset), as exp(score - m) into scores[p][j]
 * (scores is [nProbe, nk]), and (m, l) into stats[2 p], stats[2 p + 1]: the range's max
 * score and the sum of those terms (m = -inf, l = 0 where the row sees no key of the range).
 * probeMass then joins the ranges. The ranges depend on nk alone (PROBE_RANGE in
 * src/cpu/backend.ts), so that the sums do not depend on the threads.
 */
export function probeScores(
  q: usize, k: usize, nk: i32, d: i32, scale: f32,
  rows: usize, nProbe: i32, causal: i32, causalOffset: i32, kFrom: i32, kTo: i32, scores: usize, stats: usize,
): void {
  const dBytes = (<usize>d) << 2;
  const rowBytes = (<usize>nk) << 2;
  let keys = kFrom; // the end of the keys some probe row sees
  for (let p = 0; p < nProbe; p++) keys = max(keys, min(kTo, probeVisible(rows, p, causal, causalOffset, nk)));
  // PROBE_GROUP rows at a time against a block of PROBE_KEYS keys, the block's keys staying
  // in cache for all the groups (rows past nProbe repeat the group's last, into its scores).
  for (let j0 = kFrom; j0 < keys; j0 += PROBE_KEYS) {
    const kb = min(PROBE_KEYS, keys - j0);
    for (let p0 = 0; p0 < nProbe; p0 += PROBE_GROUP) {
      const g = min(PROBE_GROUP, nProbe - p0);
      scoreGroup(
        probeRow(q, rows, p0, 0, g, dBytes), probeRow(q, rows, p0, 1, g, dBytes), probeRow(q, rows, p0, 2, g, dBytes),
        probeRow(q, rows, p0, 3, g, dBytes), k + <usize>j0 * dBytes, kb, d, scale,
        scores + <usize>p0 * rowBytes + ((<usize>j0) << 2), g > 1 ? rowBytes : 0, g > 2 ? rowBytes : 0, g > 3 ? rowBytes : 0,
      );
    }
  }
  for (let p = 0; p < nProbe; p++) {
    const to = min(kTo, probeVisible(rows, p, causal, causalOffset, nk));
    const at = stats + ((<usize>p) << 3);
    if (to <= kFrom) {
      store<f32>(at, -Infinity);
      store<f32>(at, 0, 4);
      continue;
    }
    expScores(scores + <usize>p * rowBytes + ((<usize>kFrom) << 2), to - kFrom, at);
  }
}

/**
 * The probe for heavy columns, second step, over keys [kFrom, kTo), range `range` of
 * `ranges` (stats: [ranges, nProbe, 2], from probeScores): each probe row's softmax
 * probability of each key it may see, mass[j] = the sum over the rows (in order) of that
 * probability for keys j that the columns part does not already hold by rule (j >= sinks)
 * and that lie outside the probe row's own window (windowStart). mass [nk]: the range's
 * keys are overwritten.
 */
export function probeMass(
  nk: i32, rows: usize, nProbe: i32, causal: i32, causalOffset: i32, sinks: i32, winLo: i32, win: i32,
  kFrom: i32, kTo: i32, range: i32, ranges: i32, scores: usize, stats: usize, mass: usize,
): void {
  memory.fill(mass + ((<usize>kFrom) << 2), 0, (<usize>(kTo - kFrom)) << 2);
  const rowBytes = (<usize>nk) << 2;
  const rangeBytes = (<usize>nProbe) << 3;
  for (let p = 0; p < nProbe; p++) {
    const visible = min(kTo, probeVisible(rows, p, causal, causalOffset, nk));
    const own = stats + <usize>range * rangeBytes + ((<usize>p) << 3);
    if (visible <= kFrom || load<f32>(own, 4) == 0) continue;
    // The row's softmax over all its keys: the ranges' (m, l) joined in range order.
    let mx: f32 = -Infinity;
    for (let r = 0; r < ranges; r++) mx = max(mx, load<f32>(stats + <usize>r * rangeBytes + ((<usize>p) << 3)));
    let sum: f32 = 0;
    for (let r = 0; r < ranges; r++) {
      const at = stats + <usize>r * rangeBytes + ((<usize>p) << 3);
      const l = load<f32>(at, 4);
      if (l > 0) sum += l * Mathf.exp(load<f32>(at) - mx);
    }
    const factor = Mathf.exp(load<f32>(own) - mx) / sum;
    const i = load<i32>(rows + ((<usize>p) << 2));
    const lo = windowStart(i, winLo, win, causal != 0, nk);
    const e = scores + <usize>p * rowBytes;
    // The keys that take mass: [sinks, visible) less the window, as two runs, in the range.
    const from = max(sinks, kFrom);
    const cut = win > 0 ? min(max(lo, from), visible) : visible;
    addMass(mass, e, from, cut, factor);
    if (win > 0) addMass(mass, e, max(lo + win, from), visible, factor);
  }
}

// Keys [0, visible) that probe row rows[p] may see.
@inline function probeVisible(rows: usize, p: i32, causal: i32, causalOffset: i32, nk: i32): i32 {
  return causal ? min(nk, load<i32>(rows + ((<usize>p) << 2)) + causalOffset + 1) : nk;
}

// Probe rows scored together: each key's values are loaded once for all of them.
const PROBE_GROUP: i32 = 4;
// Keys per block of the probe's scores: 16 KiB of keys at d = 64, read from cache by every group.
const PROBE_KEYS: i32 = 64;

// Query row of probe p0 + r of a group of g (rows past g repeat the group's last).
@inline function probeRow(q: usize, rows: usize, p0: i32, r: i32, g: i32, dBytes: usize): usize {
  return q + <usize>load<i32>(rows + ((<usize>(p0 + min(r, g - 1))) << 2)) * dBytes;
}

// Scores of four query rows q0..q3 against keys [0, keys) (rows of d at k), times scale, into
// rows of scores s0, s1 = s0 + step1, s2 = s1 + step2, s3 = s2 + step3 (a step 0 for a row
// that repeats another: its scores are written before the row's own). SIMD: two keys at a time, lanes along d, one
// accumulator per (row, key) (eight independent chains), summed across lanes at the end.
@inline function scoreGroup(
  q0: usize, q1: usize, q2: usize, q3: usize, k: usize, keys: i32, d: i32, scale: f32,
  s0: usize, step1: usize, step2: usize, step3: usize,
): void {
  const dBytes = (<usize>d) << 2;
  const d4 = d & ~3;
  const s1 = s0 + step1, s2 = s1 + step2, s3 = s2 + step3;
  let j = 0;
  if (ASC_FEATURE_SIMD) {
    const sv = f32x4.splat(scale);
    for (; j + 2 <= keys; j += 2) {
      const ka = k + <usize>j * dBytes;
      const kb = ka + dBytes;
      let a0 = f32x4.splat(0), a1 = a0, a2 = a0, a3 = a0;
      let b0 = a0, b1 = a0, b2 = a0, b3 = a0;
      for (let c = 0; c < d4; c += 4) {
        const o = (<usize>c) << 2;
        const x = v128.load(ka + o), y = v128.load(kb + o);
        const r0 = v128.load(q0 + o), r1 = v128.load(q1 + o), r2 = v128.load(q2 + o), r3 = v128.load(q3 + o);
        a0 = madd(r0, x, a0); b0 = madd(r0, y, b0);
        a1 = madd(r1, x, a1); b1 = madd(r1, y, b1);
        a2 = madd(r2, x, a2); b2 = madd(r2, y, b2);
        a3 = madd(r3, x, a3); b3 = madd(r3, y, b3);
      }
      // Across lanes: [a0, b0, a1, b1] and [a2, b2, a3, b3] summed to (row, key) scores.
      const t0 = f32x4.add(f32x4.shuffle(a0, b0, 0, 4, 1, 5), f32x4.shuffle(a0, b0, 2, 6, 3, 7));
      const t1 = f32x4.add(f32x4.shuffle(a1, b1, 0, 4, 1, 5), f32x4.shuffle(a1, b1, 2, 6, 3, 7));
      const t2 = f32x4.add(f32x4.shuffle(a2, b2, 0, 4, 1, 5), f32x4.shuffle(a2, b2, 2, 6, 3, 7));
      const t3 = f32x4.add(f32x4.shuffle(a3, b3, 0, 4, 1, 5), f32x4.shuffle(a3, b3, 2, 6, 3, 7));
      let u01 = f32x4.add(f32x4.shuffle(t0, t1, 0, 1, 4, 5), f32x4.shuffle(t0, t1, 2, 3, 6, 7));
      let u23 = f32x4.add(f32x4.shuffle(t2, t3, 0, 1, 4, 5), f32x4.shuffle(t2, t3, 2, 3, 6, 7));
      for (let c = d4; c < d; c++) {
        const o = (<usize>c) << 2;
        const xy = f32x4.replace_lane(f32x4.splat(load<f32>(ka + o)), 1, load<f32>(kb + o));
        u01 = madd(f32x4.shuffle(f32x4.splat(load<f32>(q0 + o)), f32x4.splat(load<f32>(q1 + o)), 0, 1, 4, 5),
          f32x4.shuffle(xy, xy, 0, 1, 0, 1), u01);
        u23 = madd(f32x4.shuffle(f32x4.splat(load<f32>(q2 + o)), f32x4.splat(load<f32>(q3 + o)), 0, 1, 4, 5),
          f32x4.shuffle(xy, xy, 0, 1, 0, 1), u23);
      }
      u01 = f32x4.mul(u01, sv);
      u23 = f32x4.mul(u23, sv);
      const o = (<usize>j) << 2;
      v128.store64_lane(s0 + o, u01, 0);
      v128.store64_lane(s1 + o, u01, 1);
      v128.store64_lane(s2 + o, u23, 0);
      v128.store64_lane(s3 + o, u23, 1);
    }
  }
  for (; j < keys; j++) {
    const kj = k + <usize>j * dBytes;
    let x0: f32 = 0, x1: f32 = 0, x2: f32 = 0, x3: f32 = 0;
    for (let c = 0; c < d; c++) {
      const o = (<usize>c) << 2;
      const kv = load<f32>(kj + o);
      x0 += load<f32>(q0 + o) * kv;
      x1 += load<f32>(q1 + o) * kv;
      x2 += load<f32>(q2 + o) * kv;
      x3 += load<f32>(q3 + o) * kv;
    }
    const o = (<usize>j) << 2;
    store<f32>(s0 + o, x0 * scale);
    store<f32>(s1 + o, x1 * scale);
    store<f32>(s2 + o, x2 * scale);
    store<f32>(s3 + o, x3 * scale);
  }
}

// Scores s[0, visible) (visible > 0) become exp(score - m); (m, their sum) into stats[0], stats[1].
@inline function expScores(s: usize, visible: i32, stats: usize): void {
  let mx: f32 = -Infinity;
  let sum: f32 = 0;
  if (ASC_FEATURE_SIMD) {
    const v4 = visible & ~3;
    let m4 = f32x4.splat(-Infinity);
    for (let j = 0; j < v4; j += 4) m4 = vmax(m4, v128.load(s + ((<usize>j) << 2)));
    mx = max(max(f32x4.extract_lane(m4, 0), f32x4.extract_lane(m4, 1)), max(f32x4.extract_lane(m4, 2), f32x4.extract_lane(m4, 3)));
    for (let j = v4; j < visible; j++) mx = max(mx, load<f32>(s + ((<usize>j) << 2)));
    // Four exps at a time (expNonPositive, as the attention core's softmax), the last
    // keys one lane at a time: every key's term is the same function of its score.
    const mv = f32x4.splat(mx);
    let acc = f32x4.splat(0);
    for (let j = 0; j < v4; j += 4) {
      const at = s + ((<usize>j) << 2);
      const e = expNonPositive(f32x4.sub(v128.load(at), mv));
      v128.store(at, e);
      acc = f32x4.add(acc, e);
    }
    sum = (f32x4.extract_lane(acc, 0) + f32x4.extract_lane(acc, 1)) + (f32x4.extract_lane(acc, 2) + f32x4.extract_lane(acc, 3));
    for (let j = v4; j < visible; j++) {
      const at = s + ((<usize>j) << 2);
      const e = expLane(load<f32>(at) - mx);
      store<f32>(at, e);
      sum += e;
    }
  } else {
    for (let j = 0; j < visible; j++) mx = max(mx, load<f32>(s + ((<usize>j) << 2)));
    for (let j = 0; j < visible; j++) {
      const at = s + ((<usize>j) << 2);
      const e = Mathf.exp(load<f32>(at) - mx);
      store<f32>(at, e);
      sum += e;
    }
  }
  store<f32>(stats, mx);
  store<f32>(stats, sum, 4);
}

// exp(x) for x <= 0 as one lane of expNonPositive.
@inline function expLane(x: f32): f32 {
  return f32x4.extract_lane(expNonPositive(f32x4.splat(x)), 0);
}

// mass[j] += e[j] * factor for keys j in [from, to).
@inline function addMass(mass: usize, e: usize, from: i32, to: i32, factor: f32): void {
  let j = from;
  if (ASC_FEATURE_SIMD) {
    const fv = f32x4.splat(factor);
    for (; j + 4 <= to; j += 4) {
      const at = mass + ((<usize>j) << 2);
      v128.store(at, f32x4.add(v128.load(at), f32x4.mul(v128.load(e + ((<usize>j) << 2)), fv)));
    }
  }
  for (; j < to; j++) {
    const at = mass + ((<usize>j) << 2);
    store<f32>(at, load<f32>(at) + load<f32>(e + ((<usize>j) << 2)) * factor);
  }
}
