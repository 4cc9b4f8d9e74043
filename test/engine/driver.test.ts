/**
 * The driver side (assembly/split-driver.ts) against the device side: both engines on one memory,
 * the driver's state in a queue area standing in for the front-end's memory, its rings and buffers
 * in guest region A (gpa = wasm - GUEST_AREA).
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import {
  REGION_TABLE, QF_EVENT_IDX, QF_INDIRECT, queueArea, QS_STAT_CHAINS, QS_STAT_BYTES_WRITTEN, QS_STAT_NOTIFY,
  DS_OUTSTANDING, DS_FREE_CHAINS, DS_ERRORS, DS_STAT_SUBMITTED, DS_STAT_REAPED, DS_STAT_USED_BYTES, DS_NUM_FREE,
  DS_STAT_KICKS, DS_STAT_KICKS_SUPPRESSED, DS_LAST_USED, DS_AVAIL_IDX, DRV_FIXED_READ, DRV_FIXED_WRITE,
  DRV_FIXED_READ_THEN_WRITE, DRV_SEG_BYTES, DRV_SEG_ADDR, DRV_SEG_LEN, DRV_SEG_FLAGS, DRV_SEG_F_WRITE,
  VIRTQ_USED_F_NO_NOTIFY, CHAINS_OFFSET, CHAIN_BYTES, CH_HEAD, CH_SEG_START, CH_SEG_COUNT, CH_WRITE_LEN,
  CH_USED_LEN, SEGS_OFFSET, SEG_BYTES,
} from '../../src/engine/layout.js';
import { Rig, QS0, G, readChains, setUsedLen } from './helpers.js';

const DS = queueArea(20); // the driver's state block ("front-end memory")
const SEGS_IN = queueArea(22); // drvAddChain input records
const REAPED = queueArea(23); // drvReapTo output
const DELTA = BigInt.asUintN(64, -BigInt(G)); // gpa = wasm + DELTA in region A
const RING = G + 0x1000;
const BUF = G + 0x10_0000;

function rng(seed: number): (n: number) => number {
  let s = seed >>> 0 || 1;
  return (n) => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s % n;
  };
}

describe('split driver + device engine', () => {
  const rig = new Rig();
  const e = rig.e;

  function init(size: number, eventIdx: boolean): { desc: number; avail: number; used: number } {
    rig.reset(24);
    rig.setRegions();
    const desc = RING;
    const avail = desc + 16 * size;
    const used = (avail + 6 + 2 * size + 3) & ~3;
    expect(e.drvInit(DS, size, desc, avail, used, DELTA, eventIdx ? 1 : 0)).toBe(0);
    e.splitConfigure(QS0, size, QF_INDIRECT | (eventIdx ? QF_EVENT_IDX : 0), desc, avail, used, REGION_TABLE, 0, 0);
    return { desc, avail, used };
  }

  it('drvInit refuses sizes that are not powers of two <= 32768 and misaligned rings', () => {
    expect(e.drvInit(DS, 12, RING, RING + 0x1000, RING + 0x2000, DELTA, 0)).toBe(-1);
    expect(e.drvInit(DS, 65536, RING, RING + 0x1000, RING + 0x2000, DELTA, 0)).toBe(-1);
    expect(e.drvInit(DS, 16, RING, RING + 0x1001, RING + 0x2000, DELTA, 0)).toBe(-1);
    expect(e.drvInit(DS, 16, RING, RING + 0x1000, RING + 0x2002, DELTA, 0)).toBe(-1);
  });

  /**
   * Fixed chains, a sleeping device woken only by kicks and a sleeping driver woken only by
   * interrupts: over many iterations (indices wrap 65535 -> 0 twice) nothing is lost, no buffer is
   * stranded while the side that should process it sleeps, and the counters add up.
   */
  function roundTrip(size: number, dpc: number, mode: number, eventIdx: boolean, target: number, seed: number): void {
    init(size, eventIdx);
    const bufLen = 64;
    const chains = e.drvSetupFixedChains(DS, BUF, bufLen, dpc, mode);
    expect(chains).toBe(Math.floor(size / dpc));
    const rnd = rng(seed);
    let deviceAwake = false;
    let driverAwake = true;
    e.drvSetInterrupts(DS, 0);
    let popped = 0;
    let reaped = 0;
    let submitted = 0;
    let usedBytes = 0n;
    let notifies = 0;
    let iterations = 0;
    let bad = 0;
    while (reaped < target) {
      if (++iterations > 50 * target) throw new Error('no progress');
      // driver: make buffers available, kick if the device asks for it
      if (driverAwake || rnd(4) === 0) {
        const n = e.drvSubmit(DS, 1 + rnd(chains));
        submitted += n;
        if (e.drvNeedKick(DS)) deviceAwake = true;
      }
      // device: process while awake; re-enable kicks and re-check before sleeping
      if (deviceAwake) {
        e.splitDisableNotify(QS0);
        for (let pass = 0; pass < 1 + rnd(3); pass++) {
          const n = e.splitPopBatch(QS0, 1 + rnd(size));
          if (n < 0) expect.fail(`ring broken: ${n}`);
          if (n === 0) break;
          // per chain: dpc segments starting at the head's first buffer (plain checks: this loop is hot)
          for (let k = 0; k < n; k++) {
            const rec = QS0 + CHAINS_OFFSET + CHAIN_BYTES * k;
            const head = rig.r32(rec + CH_HEAD);
            const segAddr = rig.r32(QS0 + SEGS_OFFSET + SEG_BYTES * rig.r32(rec + CH_SEG_START));
            if (rig.r32(rec + CH_SEG_COUNT) !== dpc || segAddr !== BUF + head * bufLen) bad++;
            const writeLen = rig.r32(rec + CH_WRITE_LEN);
            const len = writeLen ? rnd(writeLen + 1) : 0;
            rig.w32(rec + CH_USED_LEN, len);
            usedBytes += BigInt(len);
          }
          popped += n;
          if (e.splitComplete(QS0, n)) { notifies++; driverAwake = true; }
        }
        if (rnd(3) === 0 && e.splitEnableNotify(QS0) === 0) deviceAwake = false;
      }
      // no lost kick: a sleeping device has nothing pending
      if (!deviceAwake && e.splitAvailPending(QS0) !== 0) expect.fail(`device asleep with ${e.splitAvailPending(QS0)} buffers pending`);
      // driver: reap while awake; enable interrupts and re-check before sleeping
      if (driverAwake) {
        reaped += e.drvReap(DS, 1 + rnd(size));
        if (rnd(2) === 0) {
          const pending = e.drvSetInterrupts(DS, 1);
          if (pending === 0) driverAwake = false;
          else e.drvSetInterrupts(DS, 0);
        }
      }
      // no lost interrupt: a sleeping driver has nothing to reap
      if (!driverAwake && e.drvUsedPending(DS) !== 0) expect.fail(`driver asleep with ${e.drvUsedPending(DS)} completions pending`);
      // counters
      const outstanding = rig.r32(DS + DS_OUTSTANDING);
      if (outstanding !== submitted - reaped || rig.r32(DS + DS_FREE_CHAINS) + outstanding !== chains ||
        rig.r32(DS + DS_ERRORS) !== 0 || bad !== 0) {
        expect({ outstanding, free: rig.r32(DS + DS_FREE_CHAINS), errors: rig.r32(DS + DS_ERRORS), bad })
          .toEqual({ outstanding: submitted - reaped, free: chains - outstanding, errors: 0, bad: 0 });
      }
    }
    expect(rig.r64(DS + DS_STAT_SUBMITTED)).toBe(BigInt(submitted));
    expect(rig.r64(DS + DS_STAT_REAPED)).toBe(BigInt(reaped));
    expect(rig.r64(QS0 + QS_STAT_CHAINS)).toBe(BigInt(popped));
    expect(rig.r64(QS0 + QS_STAT_NOTIFY)).toBe(BigInt(notifies));
    expect(popped - reaped).toBe(e.drvUsedPending(DS));
    // everything reaped so far was reported by the device with exactly these lengths
    const drained = e.drvReap(DS, 1 << 20);
    reaped += drained;
    expect(rig.r64(DS + DS_STAT_USED_BYTES)).toBe(rig.r64(QS0 + QS_STAT_BYTES_WRITTEN));
    expect(rig.r64(QS0 + QS_STAT_BYTES_WRITTEN)).toBe(usedBytes);
    expect(reaped).toBe(popped);
  }

  it('drvSubmit -> splitPopBatch -> splitComplete -> drvReap keeps counts over 140k chains (indices wrap twice), EVENT_IDX', () => {
    roundTrip(256, 1, DRV_FIXED_WRITE, true, 140_000, 7);
  });

  it('the same without EVENT_IDX (NO_NOTIFY / NO_INTERRUPT flags), 3-descriptor read-then-write chains', () => {
    roundTrip(128, 3, DRV_FIXED_READ_THEN_WRITE, false, 140_000, 11);
  });

  it('round trips hold for random sizes, chain shapes, feature sets and schedules (property)', () => {
    fc.assert(fc.property(
      fc.constantFrom(4, 8, 64, 1024), fc.integer({ min: 1, max: 4 }), fc.constantFrom(DRV_FIXED_READ, DRV_FIXED_WRITE, DRV_FIXED_READ_THEN_WRITE),
      fc.boolean(), fc.nat(),
      (size, dpc, mode, eventIdx, seed) => roundTrip(size, Math.min(dpc, size), mode, eventIdx, 1500, seed),
    ), { numRuns: 25 });
  });

  it('generic chains: the device sees exactly the driver\'s buffers, writes land in them, drvReapTo returns (id, len) and frees every descriptor', () => {
    const size = 32;
    init(size, false);
    const rnd = rng(99);
    let heap = BUF;
    const outstanding = new Map<number, { segs: { addr: number; len: number; write: boolean }[] }>();
    let total = 0;
    for (let round = 0; round < 300; round++) {
      // add chains until the table is full
      for (;;) {
        const nSegs = 1 + rnd(4);
        const segs: { addr: number; len: number; write: boolean }[] = [];
        const nRead = rnd(nSegs + 1);
        for (let j = 0; j < nSegs; j++) {
          const len = 1 + rnd(200);
          if (heap + len > BUF + 0xf_0000) heap = BUF;
          segs.push({ addr: heap, len, write: j >= nRead });
          heap += len;
        }
        segs.forEach((s, j) => {
          rig.w32(SEGS_IN + j * DRV_SEG_BYTES + DRV_SEG_ADDR, s.addr);
          rig.w32(SEGS_IN + j * DRV_SEG_BYTES + DRV_SEG_LEN, s.len);
          rig.w32(SEGS_IN + j * DRV_SEG_BYTES + DRV_SEG_FLAGS, s.write ? DRV_SEG_F_WRITE : 0);
        });
        const free = rig.r32(DS + DS_NUM_FREE);
        const head = e.drvAddChain(DS, SEGS_IN, nSegs);
        if (nSegs > free) { expect(head).toBe(-1); break; }
        expect(head).toBeGreaterThanOrEqual(0);
        expect(outstanding.has(head)).toBe(false);
        outstanding.set(head, { segs });
        expect(rig.r32(DS + DS_NUM_FREE)).toBe(free - nSegs);
      }
      e.drvKickAvail(DS);
      // device: pop some, write a pattern into the writable part, complete in random order
      const n = e.splitPopBatch(QS0, 1 + rnd(size));
      expect(n).toBeGreaterThan(0);
      const recs = readChains(rig, QS0, n);
      const lens: number[] = [];
      for (const r of recs) {
        expect(r.segs).toEqual(outstanding.get(r.head)?.segs);
        let written = 0;
        for (const s of r.segs) if (s.write) { rig.u8.fill((r.head + round) & 0xff, s.addr, s.addr + s.len); written += s.len; }
        lens.push(written);
      }
      const order = recs.map((_, k) => k).sort(() => rnd(3) - 1);
      for (const k of order) expect(e.splitPushUsed(QS0, recs[k].head, lens[k])).toBe(0);
      e.splitPublish(QS0);
      // driver
      const got = e.drvReapTo(DS, REAPED, 1000);
      expect(got).toBe(n);
      for (let j = 0; j < got; j++) {
        const id = rig.r32(REAPED + 8 * j);
        const len = rig.r32(REAPED + 8 * j + 4);
        const k = order[j];
        expect([id, len]).toEqual([recs[k].head, lens[k]]);
        for (const s of outstanding.get(id)?.segs ?? []) if (s.write) expect(rig.u8[s.addr + s.len - 1]).toBe((id + round) & 0xff);
        outstanding.delete(id);
      }
      total += got;
      expect(rig.r32(DS + DS_ERRORS)).toBe(0);
    }
    // drain: every descriptor returns to the free list
    const rest = e.splitPopBatch(QS0, size);
    expect(rest).toBe(outstanding.size);
    for (const r of readChains(rig, QS0, rest)) e.splitPushUsed(QS0, r.head, 0);
    e.splitPublish(QS0);
    expect(e.drvReapTo(DS, REAPED, 1000)).toBe(rest);
    expect(rig.r32(DS + DS_NUM_FREE)).toBe(size);
    expect(rig.r32(DS + DS_OUTSTANDING)).toBe(0);
    expect(total).toBeGreaterThan(1000);
  });

  it('drvReapTo counts used ids that are not outstanding heads as errors and skips them', () => {
    const size = 8;
    const { used } = init(size, false);
    e.drvSetupFixedChains(DS, BUF, 16, 2, DRV_FIXED_WRITE);
    expect(e.drvSubmit(DS, 1)).toBe(1);
    // a buggy device: returns head 1 (not a chain head), 9 (out of range), then the real head 0
    for (const [i, id] of [1, 9, 0].entries()) { rig.w32(used + 4 + 8 * i, id); rig.w32(used + 8 + 8 * i, 5); }
    rig.w16(used + 2, 3);
    expect(e.drvReap(DS, 10)).toBe(1);
    expect(rig.r32(DS + DS_ERRORS)).toBe(2);
    expect(rig.r16(DS + DS_LAST_USED)).toBe(3);
    expect(rig.r64(DS + DS_STAT_USED_BYTES)).toBe(5n);
  });

  it('drvNeedKick: without EVENT_IDX honours used.flags NO_NOTIFY; with EVENT_IDX kicks iff avail_event was passed', () => {
    const { used } = init(16, false);
    e.drvSetupFixedChains(DS, BUF, 16, 1, DRV_FIXED_READ);
    expect(e.drvNeedKick(DS)).toBe(0); // nothing new
    e.drvSubmit(DS, 2);
    expect(e.drvNeedKick(DS)).toBe(1);
    e.splitDisableNotify(QS0);
    expect(rig.r16(used) & VIRTQ_USED_F_NO_NOTIFY).toBe(1);
    e.drvSubmit(DS, 2);
    expect(e.drvNeedKick(DS)).toBe(0);
    expect(e.splitEnableNotify(QS0)).toBe(1); // 4 buffers pending: keep going
    e.drvSubmit(DS, 1);
    expect(e.drvNeedKick(DS)).toBe(1);
    expect([rig.r64(DS + DS_STAT_KICKS), rig.r64(DS + DS_STAT_KICKS_SUPPRESSED)]).toEqual([2n, 1n]);

    init(16, true);
    e.drvSetupFixedChains(DS, BUF, 16, 1, DRV_FIXED_READ);
    e.drvSubmit(DS, 1); // avail_event is 0: entry 0 made available -> kick
    expect(e.drvNeedKick(DS)).toBe(1);
    e.drvSubmit(DS, 3); // avail_event still 0: no kick
    expect(e.drvNeedKick(DS)).toBe(0);
    expect(e.splitPopBatch(QS0, 2)).toBe(2);
    expect(e.splitEnableNotify(QS0)).toBe(1); // avail_event = 2 but 2 buffers still pending
    e.drvSubmit(DS, 1); // entries 4: not 2
    expect(e.drvNeedKick(DS)).toBe(0);
    expect(e.splitPopBatch(QS0, 16)).toBe(3);
    expect(e.splitEnableNotify(QS0)).toBe(0); // avail_event = 5
    e.drvSubmit(DS, 2); // entries 5, 6: passes 5
    expect(e.drvNeedKick(DS)).toBe(1);
    expect(rig.r16(DS + DS_AVAIL_IDX)).toBe(7);
  });

  it('drvSetInterrupts: NO_INTERRUPT without EVENT_IDX; used_event with EVENT_IDX; turning on reports pending completions', () => {
    const { avail } = init(8, true);
    e.drvSetupFixedChains(DS, BUF, 16, 1, DRV_FIXED_WRITE);
    e.drvSubmit(DS, 4);
    expect(e.splitPopBatch(QS0, 8)).toBe(4);
    expect(e.drvSetInterrupts(DS, 0)).toBe(0);
    expect(e.splitComplete(QS0, 1)).toBe(1); // first decision always notifies
    expect(e.drvSetInterrupts(DS, 1)).toBe(1); // one completion already there: reap it first
    expect(rig.r16(avail + 4 + 2 * 8)).toBe(0); // used_event = next used index to reap
    expect(e.drvReap(DS, 8)).toBe(1);
    expect(rig.r16(avail + 4 + 2 * 8)).toBe(1);
    e.drvSetInterrupts(DS, 0);
    expect(rig.r16(avail + 4 + 2 * 8)).toBe(0); // one behind: never crossed soon
    // records 1..3 are still chain records 1..3 of the batch: complete them one at a time
    expect(e.splitPushUsed(QS0, readChains(rig, QS0, 4)[1].head, 0)).toBe(0);
    expect(e.splitPublish(QS0)).toBe(0);
    expect(e.drvSetInterrupts(DS, 1)).toBe(1);
    expect(e.drvReap(DS, 8)).toBe(1);
    expect(e.splitPushUsed(QS0, readChains(rig, QS0, 4)[2].head, 0)).toBe(0);
    expect(e.splitPublish(QS0)).toBe(1); // driver asked for entry 2

    const r = init(8, false);
    e.drvSetInterrupts(DS, 0);
    expect(rig.r16(r.avail) & 1).toBe(1);
    expect(e.drvSetInterrupts(DS, 1)).toBe(0);
    expect(rig.r16(r.avail) & 1).toBe(0);
  });
});
