import { describe, it, expect } from 'vitest';
import { readFileSync } from 'node:fs';
import {
  REGION_TABLE, QF_EVENT_IDX, QF_INDIRECT, QS_STAT_CHAINS, QS_STAT_DESCS, QS_STAT_BATCHES, QS_STAT_NOTIFY,
  QS_STAT_SUPPRESSED, QS_STAT_BYTES_READ, QS_STAT_BYTES_WRITTEN, QS_LAST_AVAIL, QS_NEXT_USED, QS_ERROR,
  QS_ERROR_DETAIL, QS_PENDING, ERR_USED_ID, ERR_TRANSLATE, CHAIN_CAP, SEG_CAP, VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_USED_F_NO_NOTIFY,
} from '../../src/engine/layout.js';
import {
  Rig, TestRing, QS0, G, REGION_B, F_NEXT, F_WRITE, F_INDIRECT, readChains, setUsedLen, WAT_PATH, wasmOfGpa,
} from './helpers.js';

const DATA = 0x10_0000n; // buffers in region A
const TABLES = 0x1_0000_0000n; // indirect tables in region C

function setup(rig: Rig, size: number, features = QF_INDIRECT, start = 0): TestRing {
  rig.reset();
  rig.setRegions();
  const ring = new TestRing(rig, size);
  ring.availIdx = start;
  ring.usedIdx = start;
  rig.e.splitConfigure(QS0, size, features, ring.desc, ring.avail, ring.used, REGION_TABLE, 0, start);
  return ring;
}

/** One-descriptor readable chains at heads 0..n-1 (16 bytes each). */
function simpleChains(ring: TestRing, n: number, write = false): void {
  for (let i = 0; i < n; i++) ring.setDesc(i, { addr: DATA + BigInt(i * 16), len: 16, flags: write ? F_WRITE : 0, next: 0 });
}

describe('split ring, device side (B.1)', () => {
  const rig = new Rig();

  it('pops a readable+writable chain into segments in descriptor order, and returns id + written length in the used ring', () => {
    const ring = setup(rig, 8);
    ring.setDesc(3, { addr: DATA, len: 100, flags: F_NEXT, next: 5 });
    ring.setDesc(5, { addr: DATA + 0x1000n, len: 200, flags: F_WRITE, next: 0 });
    ring.publish(3);
    expect(rig.e.splitAvailPending(QS0)).toBe(1);
    expect(rig.e.splitPopBatch(QS0, 16)).toBe(1);
    const [c] = readChains(rig, QS0, 1);
    expect(c).toEqual({
      head: 3, segStart: 0, readLen: 100, writeLen: 200, usedLen: 0,
      segs: [{ addr: G + 0x10_0000, len: 100, write: false }, { addr: G + 0x10_1000, len: 200, write: true }],
    });
    expect(rig.r16(QS0 + QS_LAST_AVAIL)).toBe(1);
    setUsedLen(rig, QS0, 0, 150);
    expect(rig.e.splitComplete(QS0, 1)).toBe(1);
    expect(ring.usedIdx).toBe(1);
    expect(ring.usedElem(0)).toEqual({ id: 3, len: 150 });
    expect(rig.r64(QS0 + QS_STAT_CHAINS)).toBe(1n);
    expect(rig.r64(QS0 + QS_STAT_DESCS)).toBe(2n);
    expect(rig.r64(QS0 + QS_STAT_BATCHES)).toBe(1n);
    expect(rig.r64(QS0 + QS_STAT_BYTES_READ)).toBe(100n);
    expect(rig.r64(QS0 + QS_STAT_BYTES_WRITTEN)).toBe(150n);
    expect(rig.e.splitPopBatch(QS0, 16)).toBe(0);
  });

  it('splits a buffer that spans GPA-adjacent regions into one segment per region', () => {
    const ring = setup(rig, 4);
    ring.setDesc(0, { addr: 0x1f_ff00n, len: 0x300, flags: 0, next: 0 });
    ring.publish(0);
    expect(rig.e.splitPopBatch(QS0, 1)).toBe(1);
    expect(readChains(rig, QS0, 1)[0].segs).toEqual([
      { addr: G + 0x1f_ff00, len: 0x100, write: false },
      { addr: Number(REGION_B.wasm), len: 0x200, write: false },
    ]);
  });

  it('walks direct descriptors followed by one indirect table (entries chained by next from 0), ignoring WRITE on the table descriptor', () => {
    const ring = setup(rig, 4);
    const tbl = wasmOfGpa(TABLES);
    ring.setDesc(2, { addr: DATA, len: 10, flags: F_NEXT, next: 1 });
    ring.setDesc(1, { addr: TABLES, len: 4 * 16, flags: F_INDIRECT | F_WRITE, next: 0 });
    ring.setDesc(0, { addr: DATA + 0x100n, len: 20, flags: F_NEXT, next: 3 }, tbl);
    ring.setDesc(3, { addr: DATA + 0x200n, len: 30, flags: F_WRITE | F_NEXT, next: 1 }, tbl);
    ring.setDesc(1, { addr: DATA + 0x300n, len: 40, flags: F_WRITE, next: 2 }, tbl);
    ring.setDesc(2, { addr: 0xdeadn, len: 999, flags: 0, next: 0 }, tbl); // not part of the chain
    ring.publish(2);
    expect(rig.e.splitPopBatch(QS0, 4)).toBe(1);
    const [c] = readChains(rig, QS0, 1);
    expect(c.segs.map((s) => [s.addr - G - 0x10_0000, s.len, s.write])).toEqual([[0, 10, false], [0x100, 20, false], [0x200, 30, true], [0x300, 40, true]]);
    expect([c.readLen, c.writeLen]).toEqual([30, 70]);
    expect(rig.r64(QS0 + QS_STAT_DESCS)).toBe(5n);
  });

  it('zero-length descriptors produce no segment but count as descriptors', () => {
    const ring = setup(rig, 4);
    ring.setDesc(0, { addr: 0xffff_ffff_ffff_0000n, len: 0, flags: F_NEXT, next: 1 }); // never translated
    ring.setDesc(1, { addr: DATA, len: 8, flags: F_WRITE | F_NEXT, next: 2 });
    ring.setDesc(2, { addr: 0n, len: 0, flags: F_WRITE, next: 0 });
    ring.publish(0);
    expect(rig.e.splitPopBatch(QS0, 4)).toBe(1);
    expect(readChains(rig, QS0, 1)[0].segs).toEqual([{ addr: G + 0x10_0000, len: 8, write: true }]);
    expect(rig.r64(QS0 + QS_STAT_DESCS)).toBe(3n);
  });

  it('used.idx is published after the used elements (one store per batch)', () => {
    const ring = setup(rig, 8);
    simpleChains(ring, 3, true);
    ring.publish(0, 1, 2);
    expect(rig.e.splitPopBatch(QS0, 8)).toBe(3);
    expect(rig.e.splitPushUsed(QS0, 2, 7)).toBe(0);
    expect(rig.e.splitPushUsed(QS0, 0, 5)).toBe(0);
    expect(rig.e.splitPushUsed(QS0, 1, 6)).toBe(0);
    expect(ring.usedIdx).toBe(0); // written, not yet visible
    expect([ring.usedElem(0), ring.usedElem(1), ring.usedElem(2)]).toEqual([{ id: 2, len: 7 }, { id: 0, len: 5 }, { id: 1, len: 6 }]);
    expect(rig.r32(QS0 + QS_PENDING)).toBe(3);
    expect(rig.r16(QS0 + QS_NEXT_USED)).toBe(3);
    expect(rig.e.splitPublish(QS0)).toBe(1);
    expect(ring.usedIdx).toBe(3);
    expect(rig.e.splitPublish(QS0)).toBe(0); // nothing pending: no store, no notification
    // structure of the compiled publish: exactly one atomic store (used.idx), issued before the fence
    const wat = readFileSync(WAT_PATH, 'utf8');
    const body = /\n \(func \$assembly\/split-ring\/splitPublish[\s\S]*?\n \)\n/.exec(wat)?.[0] ?? '';
    expect(body.length).toBeGreaterThan(100);
    expect(body.match(/atomic\.store16/g)).toEqual(['atomic.store16']);
    expect(body.indexOf('atomic.store16 offset=2')).toBeLessThan(body.indexOf('atomic.rmw.add'));
    const complete = /\n \(func \$assembly\/split-ring\/splitComplete[\s\S]*?\n \)\n/.exec(wat)?.[0] ?? '';
    expect(complete.match(/atomic\.store/g) ?? []).toHaveLength(0); // it publishes through splitPublish
  });

  it('splitPushUsed refuses an id >= N (ERR_USED_ID) and writes nothing', () => {
    const ring = setup(rig, 8);
    const before = rig.copy(ring.used, 6 + 64);
    expect(rig.e.splitPushUsed(QS0, 8, 1)).toBe(-ERR_USED_ID);
    expect(rig.same(ring.used, before)).toBe(true);
    expect(rig.r32(QS0 + QS_PENDING)).toBe(0);
  });

  it('without EVENT_IDX the device notifies unless avail.flags has NO_INTERRUPT', () => {
    const ring = setup(rig, 8);
    simpleChains(ring, 4);
    ring.publish(0, 1, 2, 3);
    expect(rig.e.splitPopBatch(QS0, 8)).toBe(4);
    ring.availFlags = VIRTQ_AVAIL_F_NO_INTERRUPT;
    expect(rig.e.splitPushUsed(QS0, 0, 0)).toBe(0);
    expect(rig.e.splitPublish(QS0)).toBe(0);
    ring.availFlags = 0;
    expect(rig.e.splitPushUsed(QS0, 1, 0)).toBe(0);
    expect(rig.e.splitPublish(QS0)).toBe(1);
    ring.usedEvent = 0x1234; // ignored without EVENT_IDX
    expect(rig.e.splitPushUsed(QS0, 2, 0)).toBe(0);
    expect(rig.e.splitPublish(QS0)).toBe(1);
    expect(rig.r64(QS0 + QS_STAT_NOTIFY)).toBe(2n);
    expect(rig.r64(QS0 + QS_STAT_SUPPRESSED)).toBe(1n);
  });

  it('with EVENT_IDX the device notifies iff used_event was passed since the last decision (first decision always notifies; NO_INTERRUPT ignored)', () => {
    const ring = setup(rig, 16, QF_EVENT_IDX, 65530);
    simpleChains(ring, 16);
    ring.publish(...Array.from({ length: 16 }, (_, i) => i));
    expect(rig.e.splitPopBatch(QS0, 16)).toBe(16);
    ring.availFlags = VIRTQ_AVAIL_F_NO_INTERRUPT;
    ring.usedEvent = 0; // far away: but the first decision notifies anyway
    let head = 0;
    const publishOne = (): number => { rig.e.splitPushUsed(QS0, head++, 0); return rig.e.splitPublish(QS0); };
    expect(publishOne()).toBe(1); // 65530 -> 65531, first decision
    expect(publishOne()).toBe(0); // 65531 -> 65532, used_event 0 not passed
    ring.usedEvent = 65532; // "tell me when entry 65532 is used"
    expect(publishOne()).toBe(1); // 65532 -> 65533 passes it
    expect(publishOne()).toBe(0);
    ring.usedEvent = 0; // across the wrap: entries 65534, 65535, 0 in one publish
    rig.e.splitPushUsed(QS0, head++, 0);
    rig.e.splitPushUsed(QS0, head++, 0);
    rig.e.splitPushUsed(QS0, head++, 0);
    expect(rig.e.splitPublish(QS0)).toBe(1); // 65534 -> 1 passes 0
    expect(ring.usedIdx).toBe(1);
    ring.usedEvent = 0; // already passed: no more notifications until the driver moves it
    expect(publishOne()).toBe(0);
    ring.availFlags = 0;
    ring.usedEvent = 2;
    expect(publishOne()).toBe(1);
    expect(rig.r64(QS0 + QS_STAT_NOTIFY)).toBe(4n);
    expect(rig.r64(QS0 + QS_STAT_SUPPRESSED)).toBe(3n);
  });

  it('enableNotify re-checks avail.idx after re-enabling kicks and returns 1 when avail moved (NO_NOTIFY form)', () => {
    const ring = setup(rig, 8);
    simpleChains(ring, 8);
    rig.e.splitDisableNotify(QS0);
    expect(ring.usedFlags & VIRTQ_USED_F_NO_NOTIFY).toBe(1);
    expect(rig.e.splitEnableNotify(QS0)).toBe(0);
    expect(ring.usedFlags & VIRTQ_USED_F_NO_NOTIFY).toBe(0);
    rig.e.splitDisableNotify(QS0);
    ring.publish(0); // the driver adds a buffer while kicks are off: no kick will come
    expect(rig.e.splitEnableNotify(QS0)).toBe(1);
    expect(ring.usedFlags & VIRTQ_USED_F_NO_NOTIFY).toBe(0);
    expect(rig.e.splitPopBatch(QS0, 8)).toBe(1);
    expect(rig.e.splitEnableNotify(QS0)).toBe(0);
  });

  it('enableNotify with EVENT_IDX writes avail_event = last_avail, leaves used.flags alone, and returns 1 when avail moved', () => {
    const ring = setup(rig, 8, QF_EVENT_IDX, 0xfffe);
    simpleChains(ring, 8);
    rig.e.splitDisableNotify(QS0);
    expect(ring.usedFlags).toBe(0);
    expect(rig.e.splitEnableNotify(QS0)).toBe(0);
    expect(ring.availEvent).toBe(0xfffe);
    ring.publish(0, 1, 2);
    expect(rig.e.splitEnableNotify(QS0)).toBe(1);
    expect(rig.e.splitPopBatch(QS0, 8)).toBe(3);
    expect(rig.e.splitEnableNotify(QS0)).toBe(0);
    expect(ring.availEvent).toBe(1); // 0xfffe + 3 wrapped
  });

  it('pops at most min(maxChains, CHAIN_CAP) chains per call, in avail order', () => {
    const n = 2048;
    const ring = setup(rig, n);
    simpleChains(ring, n);
    const heads = Array.from({ length: 1500 }, (_, i) => (i * 7) % n);
    ring.publish(...heads);
    expect(rig.e.splitPopBatch(QS0, 0)).toBe(0);
    expect(rig.e.splitPopBatch(QS0, -5)).toBe(0);
    expect(rig.e.splitPopBatch(QS0, 3)).toBe(3);
    expect(readChains(rig, QS0, 3).map((c) => c.head)).toEqual(heads.slice(0, 3));
    expect(rig.e.splitPopBatch(QS0, 100000)).toBe(CHAIN_CAP);
    expect(readChains(rig, QS0, CHAIN_CAP).map((c) => c.head)).toEqual(heads.slice(3, 3 + CHAIN_CAP));
    expect(rig.e.splitAvailPending(QS0)).toBe(1500 - 3 - CHAIN_CAP);
    expect(rig.e.splitPopBatch(QS0, 100000)).toBe(1500 - 3 - CHAIN_CAP);
  });

  it('a chain that does not fit into the segments left ends the batch unconsumed and comes first in the next one', () => {
    const ring = setup(rig, 4);
    const per = Math.floor(SEG_CAP * 0.6);
    for (let h = 0; h < 2; h++) {
      const tGpa = TABLES + BigInt(h) * 0x10_0000n;
      const tbl = wasmOfGpa(tGpa);
      for (let j = 0; j < per; j++) ring.setDesc(j, { addr: DATA + BigInt(j), len: 1, flags: j + 1 < per ? F_NEXT : 0, next: j + 1 }, tbl);
      ring.setDesc(h, { addr: tGpa, len: per * 16, flags: F_INDIRECT, next: 0 });
    }
    ring.publish(0, 1);
    expect(rig.e.splitPopBatch(QS0, 4)).toBe(1);
    expect(rig.r16(QS0 + QS_LAST_AVAIL)).toBe(1);
    expect(readChains(rig, QS0, 1)[0].segs).toHaveLength(per);
    expect(rig.e.splitPopBatch(QS0, 4)).toBe(1);
    const [c] = readChains(rig, QS0, 1);
    expect([c.head, c.segStart, c.segs.length]).toEqual([1, 0, per]);
    expect(rig.r32(QS0 + QS_ERROR)).toBe(0);
  });

  it('splitConfigure refuses a size that is not a power of two and rings that break B.6 alignment', () => {
    const ring = setup(rig, 8);
    for (const [size, d, a, u] of [[6, ring.desc, ring.avail, ring.used], [65536, ring.desc, ring.avail, ring.used],
      [8, ring.desc + 8, ring.avail, ring.used], [8, ring.desc, ring.avail + 1, ring.used], [8, ring.desc, ring.avail, ring.used + 2]]) {
      rig.e.splitConfigure(QS0, size, 0, d, a, u, REGION_TABLE, 0, 0);
      expect(rig.r32(QS0 + QS_ERROR)).toBe(ERR_TRANSLATE);
      expect(rig.r32(QS0 + QS_ERROR_DETAIL)).toBe(0xffff_ffff);
      expect(rig.e.splitPopBatch(QS0, 1)).toBe(-ERR_TRANSLATE);
    }
    rig.e.splitConfigure(QS0, 8, 0, ring.desc, ring.avail, ring.used, REGION_TABLE, 0, 0);
    expect(rig.r32(QS0 + QS_ERROR)).toBe(0);
  });

  it('splitConfigure takes next_used from the used ring and last_avail from the caller', () => {
    rig.reset();
    rig.setRegions();
    const ring = new TestRing(rig, 16);
    ring.usedIdx = 0x4321;
    ring.availIdx = 0x1238;
    rig.e.splitConfigure(QS0, 16, 0, ring.desc, ring.avail, ring.used, REGION_TABLE, 0, 0x1234);
    expect(rig.r16(QS0 + QS_NEXT_USED)).toBe(0x4321);
    expect(rig.e.splitAvailPending(QS0)).toBe(4);
  });
});
