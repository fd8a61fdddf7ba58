// The accurate mode's per-head work (plan.ts, AccuratePlan; docs/algorithm.md, "The accurate
// mode"): probe for heavy columns, then the exact parts (columns, window, the query's
// bucket in each LSH table), each hiding what an earlier part counted, then the
// remainder, estimated from samples that every exact part hides.
import type { ExecContext, HeadRef, HeadWork, Randomness } from './context.ts';
import { ColumnMassIndex, codesWithRoom } from './keyindex.ts';
import type { AttentionInputs, AccurateMask, OpResult, PartOutput, RowView } from './ops.ts';
import type { AccuratePlan } from './plan.ts';

export function runAccurateHead(
  ctx: ExecContext, plan: AccuratePlan, causal: boolean, controlVariate: number, randomness: Randomness,
): HeadWork {
  const { backend, run, f32, i32, qBuf, outBuf, lseBuf, scale, tick } = ctx;
  const { B, H, nq, nk, d, dv } = ctx.shape;
  const { sinkKeys, heavyKeys, rounds, r } = plan;
  const numKeys = 1 << r;
  const row0 = <T>(buf: T) => ({ buf, row: 0 });
  // Causal queries are the last nq key positions: row i sits at position i + causalOffset.
  const causalOffset = causal ? nk - nq : 0;
  const colsBuf = i32(sinkKeys + heavyKeys);
  const massBuf = heavyKeys > 0 ? f32(nk) : undefined;
  const probeBuf = heavyKeys > 0 ? i32(plan.probeRows.length) : undefined;
  const qKeys = i32(rounds > 0 ? nq : 0);
  const kKeys = i32(rounds > 0 ? nk : 0);
  // The keys' side of every round (order, bucket starts, tags) is kept for the next head:
  // the query heads of a key-value head (grouped-query attention) share it.
  const kPerm = i32(rounds * nk);
  const kStarts = i32(rounds * (numKeys + 1));
  const kTags = i32(rounds * nk);
  const proj = Array.from({ length: rounds }, () => f32(d * r));
  // Head slot s (the executor's rows of qBuf, outBuf and lseBuf from s * slotRows), with
  // what the head keeps from its columns to its remainder: its column flags, the exact
  // parts' stats, each round's query order, bucket starts and tags, and its samples' part.
  const slots = Array.from({ length: ctx.slots }, (_, s) => {
    const at = (buf: typeof qBuf) => ({ buf, row: s * ctx.slotRows });
    return {
      q: at(qBuf),
      exact: { out: at(outBuf), lse: at(lseBuf), cnt: row0(f32(nq)), vsum: row0(f32(nq * dv)) } satisfies PartOutput,
      sampled: plan.segments.length === 0 ? undefined : {
        out: row0(f32(nq * dv)), lse: row0(f32(nq)), cnt: row0(f32(nq)), vsum: row0(f32(nq * dv)),
      } satisfies PartOutput,
      flags: i32(nk),
      qPerm: i32(rounds > 0 ? nq : 0),
      qStarts: i32(rounds > 0 ? numKeys + 1 : 0),
      qTags: i32(rounds * nq),
    };
  });
  const mask = (s: number, hideRounds: number): AccurateMask => ({
    causal, causalOffset, flags: row0(slots[s].flags), winLo: plan.winLo, window: plan.window, rounds: hideRounds,
    qTags: row0(slots[s].qTags), kTags: row0(kTags),
  });

  /**
   * The keys' codes of round t into kKeys: those a cache keeps (keyindex.ts) copied in, only
   * the tokens appended since hashed (and kept); without a cache, every key hashed.
   */
  const keyCodes = rounds > 0 && ctx.keyCodes ? randomness.projections.map((p) => ctx.keyCodes!.entry(p, r)) : undefined;
  const hashKeys = async (t: number, hash: (x: RowView, rows: number, keys: RowView) => OpResult) => {
    const k = { buf: ctx.kBuf, row: ctx.kRow };
    if (!keyCodes) return hash(k, nk, row0(kKeys));
    const g = ctx.kvHead;
    const kept = keyCodes[t];
    const have = Math.min(kept.hashed[g], nk);
    const codes = codesWithRoom(kept, g, nk);
    if (have > 0) backend.upload(kKeys, codes.subarray(0, have));
    if (have === nk) return;
    await hash({ buf: k.buf, row: k.row + have }, nk - have, { buf: kKeys, row: have });
    await backend.download(kKeys, have, nk - have, codes, have);
    kept.hashed[g] = nk;
  };

  /**
   * The probe rows of head (b, h): all of the plan's; on a cache that keeps the masses
   * (keyindex.ts), a causal call whose head holds the masses of a full probe's rows takes
   * only its share of them (the last, which see the most keys) and adds what they find.
   */
  const probes = plan.probeRows.length;
  // The window as key positions (plan.winLo counts from the row): the same for every chunk.
  const massKey = { heads: B * H, scale, sinks: sinkKeys, winLo: plan.winLo - causalOffset, window: plan.window };
  const keptMasses = (b: number, h: number) => (causal && ctx.masses ? ctx.masses.head(massKey, b * H + h) : undefined);
  const probeCount = (kept: ReturnType<typeof keptMasses>) =>
    kept && kept.rows >= probes ? Math.max(1, Math.ceil((probes * nq) / nk)) : probes;
  /** Where a head's probe masses come to the host to be added: one array for the call's heads. */
  let fresh: Float32Array | undefined;

  let prepared = false;

  // Columns and window always; the window holds at least the query's own position (plan.ts).
  const units = (heavyKeys > 0 ? 1 : 0) + 2 + rounds +
    (plan.segments.length > 0 ? plan.segments.length + 1 : 0);
  /** The heads (of one key-value head), head i in slot i: each part for every head in turn. */
  const runHeads = async (heads: readonly HeadRef[], kvChanged: boolean) => {
    const k = { buf: ctx.kBuf, row: ctx.kRow };
    const v = { buf: ctx.vBuf, row: ctx.kRow };
    const inputs = (s: number): AttentionInputs => ({ q: slots[s].q, k, v, nq, nk, d, dv, scale });
    if (!prepared) {
      if (probeBuf) await run('upload', () => backend.upload(probeBuf, Int32Array.from(plan.probeRows)));
      for (const [t, p] of proj.entries()) await run('upload', () => backend.upload(p, randomness.projections[t]));
      // Without a probe the columns are the sinks, the same for every head.
      if (!massBuf) {
        await run('upload', () => {
          const sinks = Int32Array.from({ length: nk }, (_, j) => (j < sinkKeys ? 1 : 0));
          for (const slot of slots) backend.upload(slot.flags, sinks);
          if (sinkKeys > 0) backend.upload(colsBuf, Int32Array.from({ length: sinkKeys }, (_, j) => j));
        });
      }
      prepared = true;
    }

    for (const [s, { b, h }] of heads.entries()) {
      const { q, exact, flags } = slots[s];
      // Columns: the sinks, and the heavy columns this head's probe rows find, chosen where
      // the masses are (on the GPU they never come back to the host).
      if (massBuf && probeBuf) {
        const kept = keptMasses(b, h);
        const count = probeCount(kept);
        await run('probe', () => backend.probe({
          q, k, nq, nk, d, scale, rows: { buf: probeBuf, row: probes - count }, count, causal, causalOffset,
          sinks: sinkKeys, winLo: plan.winLo, window: plan.window, mass: row0(massBuf),
        }));
        if (kept) {
          await run('download', async () => {
            fresh ??= new Float32Array(nk);
            await backend.download(massBuf, 0, nk, fresh);
            backend.upload(massBuf, ColumnMassIndex.add(kept, fresh, count));
          });
        }
        await run('heavy', () => backend.heavy({
          mass: row0(massBuf), nk, sinks: sinkKeys, count: heavyKeys, cols: row0(colsBuf), flags: row0(flags),
        }));
        tick();
      }
      await run('columns', () => backend.columns({
        ...inputs(s), cols: row0(colsBuf), count: sinkKeys + heavyKeys, causal, causalOffset, dst: exact,
      }));
      tick();
      await run('window', () => backend.window({ ...inputs(s), mask: mask(s, 0), dst: exact }));
      tick();
    }

    for (let t = 0; t < rounds; t++) {
      const hash = (x: RowView, rows: number, keys: RowView) => backend.hash({ x, rows, d, proj: proj[t], r, mode: 'fixed', keys });
      const kRound = { perm: { buf: kPerm, row: t * nk }, starts: { buf: kStarts, row: t * (numKeys + 1) } };
      if (kvChanged) {
        await run('hash', () => hashKeys(t, hash));
        await run('sort', () => backend.sort({ keys: row0(kKeys), count: nk, pads: 0, numKeys, perm: kRound.perm }));
        await run('buckets', () => backend.buckets({
          keys: row0(kKeys), perm: kRound.perm, count: nk, numKeys, cap: plan.cap, tags: { buf: kTags, row: t * nk }, starts: kRound.starts,
        }));
      }
      for (const s of heads.keys()) {
        const { q, qPerm, qStarts, qTags } = slots[s];
        await run('hash', () => hash(q, nq, row0(qKeys)));
        await run('sort', () => backend.sort({ keys: row0(qKeys), count: nq, pads: 0, numKeys, perm: row0(qPerm) }));
        await run('buckets', () => backend.buckets({
          keys: row0(qKeys), perm: row0(qPerm), count: nq, numKeys, cap: nq, tags: { buf: qTags, row: t * nq }, starts: row0(qStarts),
        }));
      }
      // The heads meet the same keys' buckets: one pass (more than one head: a backend with groupedHeads).
      const group = heads.length > 1 ? slots.slice(1, heads.length).map((slot) => ({
        q: slot.q, qPerm: row0(slot.qPerm), qStarts: row0(slot.qStarts), flags: row0(slot.flags), qTags: row0(slot.qTags), dst: slot.exact,
      })) : undefined;
      await run('round', () => backend.round({
        ...inputs(0), qPerm: row0(slots[0].qPerm), kPerm: kRound.perm, qStarts: row0(slots[0].qStarts), kStarts: kRound.starts, numKeys,
        cap: plan.cap, mask: mask(0, t), dst: slots[0].exact, group,
      }));
      heads.forEach(() => tick());
    }

    if (plan.segments.length === 0) return;
    for (const [s, { b, h }] of heads.entries()) {
      for (const seg of plan.segments) {
        const m = plan.draws[seg.draw].count;
        const slice = (b * H + h) * m;
        await run('samples', () => backend.samples({
          ...inputs(s), samples: randomness.samples[seg.draw].subarray(slice, slice + m), qFrom: seg.qFrom, qTo: seg.qTo,
          mask: mask(s, rounds), dst: slots[s].sampled!,
        }));
        tick();
      }
    }
    // The heads' remainders share the sums of V (more than one head: a backend with groupedHeads).
    const [first, ...group] = slots.slice(0, heads.length).map((slot) => ({ exact: slot.exact, samples: slot.sampled! }));
    await run('remainder', () => backend.remainder({
      v, nq, nk, dv, causal, causalOffset, controlVariate, ...first, group: group.length > 0 ? group : undefined,
    }));
    heads.forEach(() => tick());
  };
  return { units, run: runHeads };

}
