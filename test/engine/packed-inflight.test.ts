/**
 * Packed inflight tracking (A.10, assembly/inflight-packed.ts): the records a back-end keeps while it works, and
 * what a new back-end recovers from them after the old one died at any point: fetched but not completed,
 * completed in the region but not published to the ring (rolled back: resubmitted), published but not committed
 * in the region (committed: not resubmitted), committed. The new back-end is configured as QEMU 7.2 does after a
 * crash (the stale vring base of the start: QEMU cannot know packed positions) and takes the positions from the
 * region.
 */
import { describe, it, expect } from 'vitest';
import {
  REGION_TABLE, QF_EVENT_IDX, QF_INDIRECT, QF_INFLIGHT, INFLIGHT_AREA, QS_LAST_AVAIL, QS_NEXT_USED, CHAINS_OFFSET,
  CHAIN_BYTES, CH_HEAD, RESUBMIT_OFFSET, deviceArea, PINFL_HDR_BYTES, PINFL_DESC_BYTES, PINFLD_INFLIGHT,
  PINFL_USED_IDX, PINFL_USED_WRAP, PINFL_VERSION, PINFL_DESC_NUM,
} from '../../src/engine/layout.js';
import { Rig, PackedTestRing, QS0, readChains, type Seg } from './helpers.js';

const WRAP = 1 << 15;
const QF = QF_INDIRECT | QF_EVENT_IDX | QF_INFLIGHT;

function setup(size: number): { rig: Rig; ring: PackedTestRing; bytes: number } {
  const rig = new Rig();
  rig.setRegions();
  const ring = new PackedTestRing(rig, size);
  const bytes = rig.e.inflightPackedQueueBytes(size);
  rig.e.inflightPackedInit(INFLIGHT_AREA, size);
  rig.e.packedConfigure(QS0, size, QF, ring.desc, ring.drvEvent, ring.devEvent, REGION_TABLE, INFLIGHT_AREA, WRAP, WRAP);
  expect(rig.e.inflightPackedRecover(QS0, deviceArea(0))).toBe(0);
  return { rig, ring, bytes };
}

/** A new back-end on the same memory: stale base (0 with wrap 1 both ways), recovery; the heads it resubmits. */
function restart(rig: Rig, ring: PackedTestRing, size: number): number[] {
  rig.u8.fill(0, QS0, QS0 + 0x1000); // the old back-end's queue state is gone
  rig.e.packedConfigure(QS0, size, QF, ring.desc, ring.drvEvent, ring.devEvent, REGION_TABLE, INFLIGHT_AREA, WRAP, WRAP);
  const out = deviceArea(0);
  const n = rig.e.inflightPackedRecover(QS0, out);
  return Array.from({ length: n }, (_, i) => rig.r16(out + 2 * i));
}

/** Chain records for resubmitted heads (as the worker does it), their segments. */
function resubmit(rig: Rig, heads: number[]): { token: number; segs: Seg[] }[] {
  heads.forEach((h, i) => rig.w16(QS0 + RESUBMIT_OFFSET + 2 * i, h));
  const n = rig.e.splitPopHeads(QS0, QS0 + RESUBMIT_OFFSET, heads.length);
  expect(n).toBe(heads.length);
  return readChains(rig, QS0, n).map((c) => ({ token: c.head, segs: c.segs }));
}

const buf = (k: number): { addr: bigint; len: number; write?: boolean }[] => [
  { addr: 0x10_0000n + BigInt(k * 0x1000), len: 100 + k },
  { addr: 0x18_0000n + BigInt(k * 0x1000), len: 200, write: true },
];

describe('packed inflight tracking and recovery', () => {
  it('region layout: align64(32 * N + 32) bytes per queue, version 1, desc_num N, used position 0 with wrap 1', () => {
    const { rig, bytes } = setup(5);
    expect(bytes).toBe(192);
    expect(rig.e.inflightPackedQueueBytes(256)).toBe(32 * 256 + 64);
    expect(rig.r16(INFLIGHT_AREA + PINFL_VERSION)).toBe(1);
    expect(rig.r16(INFLIGHT_AREA + PINFL_DESC_NUM)).toBe(5);
    expect(rig.r16(INFLIGHT_AREA + PINFL_USED_IDX)).toBe(0);
    expect(rig.r8(INFLIGHT_AREA + PINFL_USED_WRAP)).toBe(1);
  });

  it('died after fetching: every chain is resubmitted in fetch order, from the copies, with the positions from the region', () => {
    const size = 7;
    const { rig, ring } = setup(size);
    // a lap and a bit first, so the positions and wrap counters are not the start's
    for (let k = 0; k < 5; k++) {
      ring.add(k, buf(k));
      expect(rig.e.splitPopBatch(QS0, 1)).toBe(1);
      rig.e.splitComplete(QS0, 1);
      ring.reap();
    }
    ring.add(0, buf(10));
    ring.add(1, buf(11));
    ring.add(2, buf(12));
    expect(rig.e.splitPopBatch(QS0, 8)).toBe(3);
    const before = readChains(rig, QS0, 3).map((c) => c.segs);
    // the device overwrote chain 0's first slot with chain 2's used descriptor (out of order)... not published
    const heads = restart(rig, ring, size);
    expect(heads).toHaveLength(3);
    expect(rig.r16(QS0 + QS_NEXT_USED)).toBe(ring.usedPos);
    expect(rig.r16(QS0 + QS_LAST_AVAIL)).toBe(ring.availPos);
    const again = resubmit(rig, heads);
    expect(again.map((c) => c.segs)).toEqual(before);
    // completing them gives the driver its ids back, in any order
    for (const c of [...again].reverse()) expect(rig.e.splitPushUsed(QS0, c.token, 7)).toBe(0);
    rig.e.splitPublish(QS0);
    expect([ring.reap()?.id, ring.reap()?.id, ring.reap()?.id]).toEqual([2, 1, 0]);
    expect(ring.reap()).toBeNull();
    // and the next chain is popped where the driver put it
    ring.add(3, buf(13));
    expect(rig.e.splitPopBatch(QS0, 8)).toBe(1);
  });

  it('died between completing in the region and publishing to the ring: rolled back, resubmitted', () => {
    const size = 6;
    const { rig, ring } = setup(size);
    ring.add(0, buf(0));
    ring.add(1, buf(1));
    expect(rig.e.splitPopBatch(QS0, 8)).toBe(2);
    const t1 = rig.r32(QS0 + CHAINS_OFFSET + CHAIN_BYTES + CH_HEAD);
    expect(rig.e.splitPushUsed(QS0, t1, 5)).toBe(0); // in the region; the ring's flags wait for publish
    const heads = restart(rig, ring, size);
    expect(heads).toHaveLength(2);
    expect(rig.r16(QS0 + QS_NEXT_USED)).toBe(WRAP);
    expect(rig.r16(QS0 + QS_LAST_AVAIL)).toBe(4 | WRAP);
    const again = resubmit(rig, heads);
    rig.e.splitComplete(QS0, 2);
    expect(ring.reap()?.id).toBe(0);
    expect(ring.reap()?.id).toBe(1);
    expect(again.map((c) => c.token >>> 16)).toEqual([2, 2]);
  });

  it('died after the used flags reached the ring but before the region was committed: committed, not resubmitted', () => {
    const size = 6;
    const { rig, ring, bytes } = setup(size);
    ring.add(0, buf(0));
    ring.add(1, buf(1));
    expect(rig.e.splitPopBatch(QS0, 8)).toBe(2);
    const t0 = rig.r32(QS0 + CHAINS_OFFSET + CH_HEAD);
    expect(rig.e.splitPushUsed(QS0, t0, 5)).toBe(0);
    const regionBefore = rig.copy(INFLIGHT_AREA, bytes); // as a crash inside publish would leave it
    rig.e.splitPublish(QS0);
    rig.u8.set(regionBefore, INFLIGHT_AREA);
    expect(ring.reap()?.id).toBe(0);
    const heads = restart(rig, ring, size);
    expect(heads).toHaveLength(1); // chain 1 only
    expect(rig.r16(QS0 + QS_NEXT_USED)).toBe(2 | WRAP);
    const [c] = resubmit(rig, heads);
    expect(rig.e.splitPushUsed(QS0, c!.token, 0)).toBe(0);
    rig.e.splitPublish(QS0);
    expect(ring.reap()?.id).toBe(1);
    expect(ring.reap()).toBeNull();
  });

  it('many laps with random kills: the driver gets every id back exactly once', () => {
    const size = 5;
    const { rig, ring, bytes } = setup(size);
    let seed = 12345;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return (seed >>> 8) % n;
    };
    const freeIds = [0, 1, 2, 3, 4];
    let free = size;
    const returned = new Map<number, number>();
    let made = 0;
    let tokens: number[] = [];
    for (let step = 0; step < 3000; step++) {
      const a = rnd(6);
      if (a < 2 && free >= 2 && freeIds.length) {
        const id = freeIds.shift()!;
        ring.add(id, rnd(2) ? buf(id) : [{ addr: 0x10_0000n, len: 8 }]);
        free -= ring.slotsOf.get(id)!;
        made++;
      } else if (a < 4) {
        const n = rig.e.splitPopBatch(QS0, 1 + rnd(3));
        expect(n).toBeGreaterThanOrEqual(0);
        for (let k = 0; k < n; k++) tokens.push(rig.r32(QS0 + CHAINS_OFFSET + k * CHAIN_BYTES + CH_HEAD));
      } else if (a < 5 && tokens.length) {
        const k = 1 + rnd(tokens.length);
        for (const t of tokens.splice(0, k).reverse()) expect(rig.e.splitPushUsed(QS0, t, 1)).toBe(0);
        // sometimes the back-end dies before, inside or after publish
        const crash = rnd(4);
        const region = rig.copy(INFLIGHT_AREA, bytes);
        if (crash !== 1) rig.e.splitPublish(QS0);
        if (crash === 2) rig.u8.set(region, INFLIGHT_AREA);
        if (crash === 1 || crash === 2) {
          const heads = restart(rig, ring, size);
          tokens = resubmit(rig, heads).map((c) => c.token);
        }
      } else {
        for (;;) {
          const u = ring.reap();
          if (!u) break;
          returned.set(u.id, (returned.get(u.id) ?? 0) + 1);
          freeIds.push(u.id);
        }
        free = size - [...ring.slotsOf.values()].reduce((s, x) => s + x, 0);
      }
    }
    // finish: pop what is left, complete everything, reap: every chain made available came back exactly once
    // (PackedTestRing.reap throws on a used id that is not outstanding, so a doubled completion fails above)
    for (;;) {
      const n = rig.e.splitPopBatch(QS0, 8);
      expect(n).toBeGreaterThanOrEqual(0);
      if (n === 0) break;
      for (let k = 0; k < n; k++) tokens.push(rig.r32(QS0 + CHAINS_OFFSET + k * CHAIN_BYTES + CH_HEAD));
    }
    for (const t of tokens) expect(rig.e.splitPushUsed(QS0, t, 1)).toBe(0);
    rig.e.splitPublish(QS0);
    for (;;) {
      const u = ring.reap();
      if (!u) break;
      returned.set(u.id, (returned.get(u.id) ?? 0) + 1);
    }
    expect(made).toBeGreaterThan(300);
    expect(ring.slotsOf.size).toBe(0);
    expect([...returned.values()].reduce((t, n) => t + n, 0)).toBe(made);
  });

  it('a corrupt region (an entry out of range, an entry not in flight, a slot count larger than the ring) breaks the ring', () => {
    const size = 4;
    const { rig, ring } = setup(size);
    ring.add(0, buf(0));
    expect(rig.e.splitPopBatch(QS0, 8)).toBe(1);
    const heads = restart(rig, ring, size);
    expect(heads).toEqual([0]);
    // an entry index >= N
    rig.w16(QS0 + RESUBMIT_OFFSET, 9);
    expect(rig.e.splitPopHeads(QS0, QS0 + RESUBMIT_OFFSET, 1)).toBeLessThan(0);
    // an entry whose inflight flag is clear is not a chain to resubmit either
    const r2 = setup(size);
    r2.ring.add(0, buf(0));
    expect(r2.rig.e.splitPopBatch(QS0, 8)).toBe(1);
    r2.rig.w8(INFLIGHT_AREA + PINFL_HDR_BYTES + 0 * PINFL_DESC_BYTES + PINFLD_INFLIGHT, 0);
    r2.rig.w16(QS0 + RESUBMIT_OFFSET, 0);
    expect(r2.rig.e.splitPopHeads(QS0, QS0 + RESUBMIT_OFFSET, 1)).toBeLessThan(0);
    // a head entry claiming more ring slots than the ring has
    const r3 = setup(size);
    r3.ring.add(0, buf(0));
    expect(r3.rig.e.splitPopBatch(QS0, 8)).toBe(1);
    r3.rig.w16(INFLIGHT_AREA + PINFL_HDR_BYTES + 6, size + 1); // entry 0's num
    r3.rig.w16(QS0 + RESUBMIT_OFFSET, 0);
    expect(r3.rig.e.splitPopHeads(QS0, QS0 + RESUBMIT_OFFSET, 1)).toBeLessThan(0);
  });
});

describe('packed inflight: a corrupt free list', () => {
  it('breaks the ring at the fetch instead of handing out a chain that could never complete', () => {
    const size = 4;
    const rig = new Rig();
    rig.setRegions();
    const ring = new PackedTestRing(rig, size);
    rig.e.inflightPackedInit(INFLIGHT_AREA, size);
    rig.e.packedConfigure(QS0, size, QF, ring.desc, ring.drvEvent, ring.devEvent, REGION_TABLE, INFLIGHT_AREA, WRAP, WRAP);
    rig.w16(INFLIGHT_AREA + 12, 77); // free_head out of range
    ring.add(0, buf(0));
    expect(rig.e.splitPopBatch(QS0, 4)).toBeLessThan(0);
  });
});
