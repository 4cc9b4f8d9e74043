/**
 * The packed driver side (assembly/packed-driver.ts, through split-driver.ts's entry points with DRV_INIT_PACKED)
 * against the packed device engine: both on one memory, the driver's state in a queue area standing in for the
 * front-end's memory, its ring and buffers in guest region A (gpa = wasm - GUEST_AREA).
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import {
  REGION_TABLE, QF_EVENT_IDX, QF_INDIRECT, queueArea, QS_STAT_CHAINS, QS_STAT_BYTES_WRITTEN, QS_STAT_NOTIFY,
  DS_OUTSTANDING, DS_FREE_CHAINS, DS_ERRORS, DS_STAT_SUBMITTED, DS_STAT_REAPED, DS_STAT_USED_BYTES, DS_NUM_FREE,
  DRV_FIXED_READ, DRV_FIXED_WRITE, DRV_FIXED_READ_THEN_WRITE, DRV_SEG_BYTES, DRV_SEG_ADDR, DRV_SEG_LEN, DRV_SEG_FLAGS,
  DRV_SEG_F_WRITE, DRV_USED_BYTES, CHAINS_OFFSET, CHAIN_BYTES, CH_HEAD, CH_SEG_START, CH_SEG_COUNT, CH_WRITE_LEN,
  CH_USED_LEN, SEGS_OFFSET, SEG_BYTES, DRV_INIT_EVENT_IDX, DRV_INIT_PACKED,
} from '../../src/engine/layout.js';
import { Rig, QS0, G, readChains } from './helpers.js';

const DS = queueArea(20);
const SEGS_IN = queueArea(22);
const REAPED = queueArea(23);
const DELTA = BigInt.asUintN(64, -BigInt(G));
const RING = G + 0x1000;
const BUF = G + 0x10_0000;

function rng(seed: number): (n: number) => number {
  let s = seed >>> 0 || 1;
  return (n) => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s % n;
  };
}

describe('packed driver + packed device engine', () => {
  const rig = new Rig();
  const e = rig.e;

  function init(size: number, eventIdx: boolean): void {
    rig.reset(24);
    rig.setRegions();
    const desc = RING;
    const drvEvent = desc + 16 * size;
    const devEvent = drvEvent + 4;
    expect(e.drvInit(DS, size, desc, drvEvent, devEvent, DELTA, DRV_INIT_PACKED | (eventIdx ? DRV_INIT_EVENT_IDX : 0))).toBe(0);
    e.packedConfigure(QS0, size, QF_INDIRECT | (eventIdx ? QF_EVENT_IDX : 0), desc, drvEvent, devEvent, REGION_TABLE, 0, 1 << 15, 1 << 15);
  }

  it('drvInit (packed) takes any size up to 32768 and refuses a misaligned ring or event structure', () => {
    expect(e.drvInit(DS, 12, RING, RING + 0x1000, RING + 0x1004, DELTA, DRV_INIT_PACKED)).toBe(0);
    expect(e.drvInit(DS, 32769, RING, RING + 0x1000, RING + 0x1004, DELTA, DRV_INIT_PACKED)).toBe(-1);
    expect(e.drvInit(DS, 16, RING + 8, RING + 0x1000, RING + 0x1004, DELTA, DRV_INIT_PACKED)).toBe(-1);
    expect(e.drvInit(DS, 16, RING, RING + 0x1002, RING + 0x1004, DELTA, DRV_INIT_PACKED)).toBe(-1);
  });

  /**
   * Fixed chains, a device woken only by kicks and a driver woken only by interrupts, many laps of the ring:
   * nothing is lost, no buffer is stranded while the side that should process it sleeps, the counts add up.
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
      if (driverAwake || rnd(4) === 0) {
        submitted += e.drvSubmit(DS, 1 + rnd(chains));
        if (e.drvNeedKick(DS)) deviceAwake = true;
      }
      if (deviceAwake) {
        e.splitDisableNotify(QS0);
        for (let pass = 0; pass < 1 + rnd(3); pass++) {
          const n = e.splitPopBatch(QS0, 1 + rnd(size));
          if (n < 0) expect.fail(`ring broken: ${n}`);
          if (n === 0) break;
          for (let k = 0; k < n; k++) {
            const rec = QS0 + CHAINS_OFFSET + CHAIN_BYTES * k;
            const token = rig.r32(rec + CH_HEAD);
            const id = token & 0xffff;
            const segAddr = rig.r32(QS0 + SEGS_OFFSET + SEG_BYTES * rig.r32(rec + CH_SEG_START));
            if (token >>> 16 !== dpc || rig.r32(rec + CH_SEG_COUNT) !== dpc || segAddr !== BUF + id * dpc * bufLen) bad++;
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
      if (!deviceAwake && e.splitAvailPending(QS0) !== 0) expect.fail('device asleep with buffers pending');
      if (driverAwake) {
        reaped += e.drvReap(DS, 1 + rnd(size));
        if (rnd(2) === 0) {
          if (e.drvSetInterrupts(DS, 1) === 0) driverAwake = false;
          else e.drvSetInterrupts(DS, 0);
        }
      }
      if (!driverAwake && e.drvUsedPending(DS) !== 0) expect.fail('driver asleep with completions pending');
      const outstanding = rig.r32(DS + DS_OUTSTANDING);
      if (outstanding !== submitted - reaped || rig.r32(DS + DS_FREE_CHAINS) + outstanding !== chains ||
        rig.r32(DS + DS_ERRORS) !== 0 || bad !== 0) {
        expect({ outstanding, free: rig.r32(DS + DS_FREE_CHAINS), errors: rig.r32(DS + DS_ERRORS), bad })
          .toEqual({ outstanding: submitted - reaped, free: chains - outstanding, errors: 0, bad: 0 });
      }
    }
    expect(rig.r64(DS + DS_STAT_SUBMITTED)).toBe(BigInt(submitted));
    expect(rig.r64(QS0 + QS_STAT_CHAINS)).toBe(BigInt(popped));
    expect(rig.r64(QS0 + QS_STAT_NOTIFY)).toBe(BigInt(notifies));
    reaped += e.drvReap(DS, 1 << 20);
    expect(rig.r64(DS + DS_STAT_REAPED)).toBe(BigInt(reaped));
    expect(rig.r64(DS + DS_STAT_USED_BYTES)).toBe(rig.r64(QS0 + QS_STAT_BYTES_WRITTEN));
    expect(rig.r64(QS0 + QS_STAT_BYTES_WRITTEN)).toBe(usedBytes);
    expect(reaped).toBe(popped);
  }

  it('drvSubmit -> popBatch -> complete -> drvReap over 40k chains on a 100-slot ring (both wrap counters flip hundreds of times), EVENT_IDX', () => {
    roundTrip(100, 1, DRV_FIXED_WRITE, true, 40_000, 7);
  });

  it('the same without EVENT_IDX (ENABLE / DISABLE), 3-descriptor read-then-write chains on a 127-slot ring', () => {
    roundTrip(127, 3, DRV_FIXED_READ_THEN_WRITE, false, 40_000, 11);
  });

  it('round trips hold for random sizes (powers of two or not), chain shapes, feature sets and schedules (property)', () => {
    fc.assert(fc.property(
      fc.constantFrom(1, 3, 4, 7, 64, 100, 1000), fc.integer({ min: 1, max: 4 }), fc.constantFrom(DRV_FIXED_READ, DRV_FIXED_WRITE, DRV_FIXED_READ_THEN_WRITE),
      fc.boolean(), fc.nat(),
      (size, dpc, mode, eventIdx, seed) => roundTrip(size, Math.min(dpc, size), mode, eventIdx, 1500, seed),
    ), { numRuns: 25 });
  });

  it('generic chains: the device sees the driver\'s buffers, completes out of order, drvReapTo returns (id, len) and frees every slot', () => {
    const size = 30;
    init(size, true);
    const rnd = rng(99);
    let heap = BUF;
    const outstanding = new Map<number, { addr: number; len: number; write: boolean }[]>();
    let completed = 0;
    const popped: { token: number; written: number }[] = [];
    for (let round = 0; round < 400; round++) {
      for (;;) {
        const nSegs = 1 + rnd(4);
        const nRead = rnd(nSegs + 1);
        const segs = Array.from({ length: nSegs }, (_, j) => {
          const len = 1 + rnd(200);
          if (heap + len > BUF + 0xf_0000) heap = BUF;
          const s = { addr: heap, len, write: j >= nRead };
          heap += len;
          return s;
        });
        segs.forEach((s, j) => {
          rig.w32(SEGS_IN + j * DRV_SEG_BYTES + DRV_SEG_ADDR, s.addr);
          rig.w32(SEGS_IN + j * DRV_SEG_BYTES + DRV_SEG_LEN, s.len);
          rig.w32(SEGS_IN + j * DRV_SEG_BYTES + DRV_SEG_FLAGS, s.write ? DRV_SEG_F_WRITE : 0);
        });
        const free = rig.r32(DS + DS_NUM_FREE);
        const id = e.drvAddChain(DS, SEGS_IN, nSegs);
        if (nSegs > free) { expect(id).toBe(-1); break; }
        expect(id).toBeGreaterThanOrEqual(0);
        expect(outstanding.has(id)).toBe(false);
        outstanding.set(id, segs);
      }
      e.drvKickAvail(DS);
      const n = e.splitPopBatch(QS0, 1 + rnd(size));
      for (const r of readChains(rig, QS0, Math.max(n, 0))) {
        const id = r.head & 0xffff;
        expect(r.segs).toEqual(outstanding.get(id));
        popped.push({ token: r.head, written: r.segs.filter((s) => s.write).reduce((t, s) => t + s.len, 0) });
      }
      // complete a random subset in random order
      const k = rnd(popped.length + 1);
      for (let j = 0; j < k; j++) {
        const [c] = popped.splice(rnd(popped.length), 1);
        expect(e.splitPushUsed(QS0, c!.token, c!.written)).toBe(0);
      }
      e.splitPublish(QS0);
      const got = e.drvReapTo(DS, REAPED, size);
      for (let j = 0; j < got; j++) {
        const id = rig.r32(REAPED + j * DRV_USED_BYTES);
        const len = rig.r32(REAPED + j * DRV_USED_BYTES + 4);
        const segs = outstanding.get(id);
        expect(segs).toBeDefined();
        expect(len).toBe(segs!.filter((s) => s.write).reduce((t, s) => t + s.len, 0));
        outstanding.delete(id);
        completed++;
      }
    }
    expect(completed).toBeGreaterThan(1000);
    expect(rig.r32(DS + DS_ERRORS)).toBe(0);
  });
});
