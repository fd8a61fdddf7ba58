// Float64 exact attention: the yardstick every kernel and backend is checked against.
// Straightforward two-pass softmax per query row, in double precision.

export interface ReferenceInput {
  q: Float32Array; // [B, H, nq, d]
  k: Float32Array; // [B, Hkv, nk, d]
  v: Float32Array; // [B, Hkv, nk, dv]
  B: number;
  H: number;
  Hkv: number;
  nq: number;
  nk: number;
  d: number;
  dv: number;
  causal?: boolean;
  /** causal: key j is excluded for query i when j > i + causalOffset (default 0) */
  causalOffset?: number;
  scale?: number;
}

export interface ReferenceOutput {
  out: Float64Array; // [B, H, nq, dv]
  lse: Float64Array; // [B, H, nq]
}

/**
 * Exact attention in float64; causal excludes key j > query i + causalOffset (offset 0: the
 * same indexing as torch's triu(1)). A row that sees no key has out 0 and lse -Infinity.
 */
export function referenceAttention(x: ReferenceInput): ReferenceOutput {
  const { B, H, Hkv, nq, nk, d, dv } = x;
  const scale = x.scale ?? 1 / Math.sqrt(d);
  const group = H / Hkv;
  const out = new Float64Array(B * H * nq * dv);
  const lse = new Float64Array(B * H * nq);
  const s = new Float64Array(nk);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < H; h++) {
      const qh = (b * H + h) * nq;
      const kh = (b * Hkv + Math.floor(h / group)) * nk;
      for (let i = 0; i < nq; i++) {
        const last = x.causal ? Math.min(i + (x.causalOffset ?? 0), nk - 1) : nk - 1;
        let max = -Infinity;
        for (let j = 0; j <= last; j++) {
          let dot = 0;
          for (let c = 0; c < d; c++) dot += x.q[(qh + i) * d + c] * x.k[(kh + j) * d + c];
          s[j] = dot * scale;
          if (s[j] > max) max = s[j];
        }
        let sum = 0;
        for (let j = 0; j <= last; j++) {
          s[j] = Math.exp(s[j] - max);
          sum += s[j];
        }
        const o = (qh + i) * dv;
        for (let j = 0; j <= last; j++) {
          const p = s[j] / sum;
          for (let c = 0; c < dv; c++) out[o + c] += p * x.v[(kh + j) * dv + c];
        }
        lse[qh + i] = max + Math.log(sum);
      }
    }
  }
  return { out, lse };
}
