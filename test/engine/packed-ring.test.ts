/**
 * The packed-ring engine (assembly/packed-ring.ts), driven through the same entry points as split rings
 * (they dispatch on the format set by packedConfigure), with a TS driver writing packed rings (helpers.ts).
 */
import { describe, it, expect } from 'vitest';
import {
  REGION_TABLE, QF_EVENT_IDX, QF_INDIRECT, QF_IN_ORDER, QS_LAST_AVAIL, QS_NEXT_USED, QS_ERROR_DETAIL,
  ERR_CHAIN_LOOP, ERR_HEAD_RANGE, ERR_INDIRECT_NESTED, ERR_INDIRECT_NEXT, ERR_INDIRECT_LEN, ERR_DESC_FLAGS,
  ERR_WRITE_ORDER, ERR_TRANSLATE, ERR_USED_ID, RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_DESC,
  RING_EVENT_FLAGS_ENABLE, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE,
} from '../../src/engine/layout.js';
import { Rig, PackedTestRing, QS0, readChains, setUsedLen, wasmOfGpa, P_AVAIL, P_USED } from './helpers.js';

const WRAP = 1 << 15;

function setup(size: number, qf = QF_INDIRECT, pos = WRAP): { rig: Rig; ring: PackedTestRing } {
  const rig = new Rig();
  rig.setRegions();
  const ring = new PackedTestRing(rig, size);
  ring.availPos = pos;
  ring.usedPos = pos;
  rig.e.packedConfigure(QS0, size, qf, ring.desc, ring.drvEvent, ring.devEvent, REGION_TABLE, 0, pos, pos);
  return { rig, ring };
}

describe('packed ring engine', () => {
  it('pops a chain with the buffer id from the last descriptor and hands out its segments', () => {
    const { rig, ring } = setup(8);
    ring.add(5, [{ addr: 0x10_0000n, len: 100 }, { addr: 0x10_1000n, len: 200 }, { addr: 0x10_2000n, len: 300, write: true }]);
    // only the last descriptor's id counts
    rig.w16(ring.desc + 12, 7);
    expect(rig.e.splitAvailPending(QS0)).toBe(1);
    expect(rig.e.splitPopBatch(QS0, 16)).toBe(1);
    const [c] = readChains(rig, QS0, 1);
    expect(c!.head).toBe(5 | (3 << 16));
    expect(c!.readLen).toBe(300);
    expect(c!.writeLen).toBe(300);
    expect(c!.segs).toEqual([
      { addr: wasmOfGpa(0x10_0000n), len: 100, write: false },
      { addr: wasmOfGpa(0x10_1000n), len: 200, write: false },
      { addr: wasmOfGpa(0x10_2000n), len: 300, write: true },
    ]);
    expect(rig.r16(QS0 + QS_LAST_AVAIL)).toBe(3 | WRAP);
    expect(rig.e.splitPopBatch(QS0, 16)).toBe(0);
  });

  it('a chain whose head is not yet available (head flags written last) is not popped', () => {
    const { rig, ring } = setup(8);
    ring.add(1, [{ addr: 0x10_0000n, len: 10 }, { addr: 0x10_1000n, len: 10 }], { headLast: false });
    expect(rig.e.splitPopBatch(QS0, 16)).toBe(0);
    ring.setSlotFlags(0, P_AVAIL | VIRTQ_DESC_F_NEXT);
    expect(rig.e.splitPopBatch(QS0, 16)).toBe(1);
  });

  it('writes one used descriptor per chain at the chain\'s first slot and skips by its slot count (wrap-around, size 5)', () => {
    const { rig, ring } = setup(5);
    let id = 0;
    for (let lap = 0; lap < 12; lap++) {
      const n2 = 1 + (lap % 3);
      const descs = Array.from({ length: n2 }, (_, k) => ({ addr: 0x10_0000n + BigInt(k * 0x1000), len: 64, write: k === n2 - 1 }));
      const slotAt = ring.availPos & 0x7fff;
      ring.add(id, descs);
      expect(rig.e.splitPopBatch(QS0, 4)).toBe(1);
      setUsedLen(rig, QS0, 0, 10 + lap);
      rig.e.splitComplete(QS0, 1);
      expect(ring.slotFlags(slotAt) & (P_AVAIL | P_USED)).toBe((ring.usedPos & WRAP) ? P_AVAIL | P_USED : 0);
      expect(ring.reap()).toEqual({ id, len: 10 + lap, flags: expect.any(Number) as number });
      id = (id + 1) % 5;
    }
    expect(rig.r16(QS0 + QS_NEXT_USED)).toBe(ring.usedPos);
    expect(rig.r16(QS0 + QS_LAST_AVAIL)).toBe(ring.availPos);
  });

  it('a chain that wraps past the ring end: its later descriptors are available under the flipped wrap counter', () => {
    const { rig, ring } = setup(6, QF_INDIRECT, 4 | WRAP);
    ring.add(2, [{ addr: 0x10_0000n, len: 1 }, { addr: 0x10_0100n, len: 2 }, { addr: 0x10_0200n, len: 3 }, { addr: 0x10_0300n, len: 4, write: true }]);
    expect(rig.e.splitPopBatch(QS0, 4)).toBe(1);
    expect(readChains(rig, QS0, 1)[0]!.head).toBe(2 | (4 << 16));
    expect(rig.r16(QS0 + QS_LAST_AVAIL)).toBe(2);
  });

  it('indirect descriptors: the table holds the buffers, one ring slot', () => {
    const { rig, ring } = setup(4);
    const table = wasmOfGpa(0x1_0000_0000n);
    const ents = [{ a: 0x10_0000n, l: 16, f: 0 }, { a: 0x1f_fff0n, l: 32, f: VIRTQ_DESC_F_WRITE }];
    ents.forEach((e, k) => { rig.w64(table + 16 * k, e.a); rig.w32(table + 16 * k + 8, e.l); rig.w16(table + 16 * k + 12, 0); rig.w16(table + 16 * k + 14, e.f); });
    ring.add(3, [{ addr: 0x1_0000_0000n, len: 32, indirect: true }]);
    expect(rig.e.splitPopBatch(QS0, 4)).toBe(1);
    const [c] = readChains(rig, QS0, 1);
    expect(c!.head).toBe(3 | (1 << 16));
    expect(c!.segs.length).toBe(3); // the second buffer crosses region A/B
    expect(c!.writeLen).toBe(32);
  });

  it('out-of-order completion: the batch\'s first used descriptor gets its flags last (publish), the rest at once', () => {
    const { rig, ring } = setup(8);
    ring.add(0, [{ addr: 0x10_0000n, len: 8 }, { addr: 0x10_1000n, len: 8, write: true }]);
    ring.add(1, [{ addr: 0x10_2000n, len: 8 }]);
    ring.add(2, [{ addr: 0x10_3000n, len: 8 }]);
    expect(rig.e.splitPopBatch(QS0, 8)).toBe(3);
    const tokens = readChains(rig, QS0, 3).map((c) => c.head);
    expect(rig.e.splitPushUsed(QS0, tokens[2]!, 0)).toBe(0);
    expect(rig.e.splitPushUsed(QS0, tokens[0]!, 4)).toBe(0);
    // slot 0 holds id 2 but is not used yet; slot 1 (next used position) holds id 0, already flagged
    expect(ring.reap()).toBeNull();
    expect(rig.r16(ring.desc + 12)).toBe(2);
    expect(ring.slotFlags(1) & (P_AVAIL | P_USED)).toBe(P_AVAIL | P_USED);
    expect(rig.e.splitPublish(QS0)).toBe(1);
    expect(ring.reap()).toMatchObject({ id: 2, len: 0 });
    expect(ring.reap()).toMatchObject({ id: 0, len: 4 });
    expect(ring.reap()).toBeNull();
    expect(rig.e.splitPushUsed(QS0, tokens[1]!, 0)).toBe(0);
    rig.e.splitPublish(QS0);
    expect(ring.reap()).toMatchObject({ id: 1 });
    expect(rig.e.splitPushUsed(QS0, 9 | (1 << 16), 0)).toBe(-ERR_USED_ID);
    expect(rig.e.splitPushUsed(QS0, 1, 0)).toBe(-ERR_USED_ID);
  });

  it('IN_ORDER: a run of chains that wrote nothing gets one used descriptor (the last id, all their slots)', () => {
    const { rig, ring } = setup(7, QF_INDIRECT | QF_IN_ORDER);
    for (let id = 0; id < 3; id++) ring.add(id, [{ addr: 0x10_0000n, len: 8 }, { addr: 0x10_1000n, len: 8 }]);
    expect(rig.e.splitPopBatch(QS0, 8)).toBe(3);
    rig.e.splitComplete(QS0, 3);
    // the driver sees id 2 at slot 0 and skips the batch's 6 slots
    expect(rig.r16(ring.desc + 12)).toBe(2);
    ring.slotsOf.set(2, 6);
    expect(ring.reap()).toMatchObject({ id: 2 });
    expect(rig.r16(QS0 + QS_NEXT_USED)).toBe(6 | WRAP);
  });

  it('driver event suppression: DISABLE, ENABLE, and DESC with off/wrap under EVENT_IDX', () => {
    const { rig, ring } = setup(4, QF_INDIRECT);
    const one = (id: number): number => {
      ring.add(id, [{ addr: 0x10_0000n, len: 8 }]);
      expect(rig.e.splitPopBatch(QS0, 1)).toBe(1);
      const r = rig.e.splitComplete(QS0, 1);
      ring.reap();
      return r;
    };
    ring.drvEventFlags = RING_EVENT_FLAGS_DISABLE;
    expect(one(0)).toBe(0);
    ring.drvEventFlags = RING_EVENT_FLAGS_ENABLE;
    expect(one(1)).toBe(1);

    const e = setup(4, QF_INDIRECT | QF_EVENT_IDX);
    const one2 = (id: number): number => {
      e.ring.add(id, [{ addr: 0x10_0000n, len: 8 }]);
      expect(e.rig.e.splitPopBatch(QS0, 1)).toBe(1);
      const r = e.rig.e.splitComplete(QS0, 1);
      e.ring.reap();
      return r;
    };
    e.ring.drvEventFlags = RING_EVENT_FLAGS_DESC;
    e.ring.drvEventOffWrap = 2 | WRAP; // notify when the used descriptor at slot 2 of lap 1 is written
    expect(one2(0)).toBe(1); // first decision: always
    expect(one2(1)).toBe(0); // used position 2: the event at 2 is not crossed yet
    expect(one2(2)).toBe(1); // 2 -> 3 crosses it
    expect(one2(3)).toBe(0); // 3 -> 0 (wrap 0): no
    e.ring.drvEventOffWrap = 1; // slot 1 of the next lap (wrap 0)
    expect(one2(0)).toBe(0); // 0 -> 1
    expect(one2(1)).toBe(1); // 1 -> 2 crosses slot 1
    expect(one2(2)).toBe(0);
  });

  it('device event suppression: disable, re-enable (DESC at the next avail position under EVENT_IDX) and re-check', () => {
    const { rig, ring } = setup(4, QF_INDIRECT | QF_EVENT_IDX);
    rig.e.splitDisableNotify(QS0);
    expect(ring.devEventFlags).toBe(RING_EVENT_FLAGS_DISABLE);
    expect(rig.e.splitEnableNotify(QS0)).toBe(0);
    expect(ring.devEventFlags).toBe(RING_EVENT_FLAGS_DESC);
    expect(ring.devEventOffWrap).toBe(0 | WRAP);
    ring.add(0, [{ addr: 0x10_0000n, len: 8 }]);
    expect(rig.e.splitEnableNotify(QS0)).toBe(1);
    const plain = setup(4);
    plain.rig.e.splitDisableNotify(QS0);
    expect(plain.rig.e.splitEnableNotify(QS0)).toBe(0);
    expect(plain.ring.devEventFlags).toBe(RING_EVENT_FLAGS_ENABLE);
  });

  it('configure refuses a bad size, alignment or position; any size up to 32768 is fine', () => {
    const rig = new Rig();
    rig.setRegions();
    const ring = new PackedTestRing(rig, 8);
    for (const [size, d, pos] of [[0, ring.desc, WRAP], [32769, ring.desc, WRAP], [8, ring.desc + 8, WRAP], [8, ring.desc, 8 | WRAP]] as const) {
      rig.e.packedConfigure(QS0, size, 0, d, ring.drvEvent, ring.devEvent, REGION_TABLE, 0, pos, WRAP);
      expect(rig.e.splitPopBatch(QS0, 1)).toBe(-ERR_TRANSLATE);
      expect(rig.r32(QS0 + QS_ERROR_DETAIL)).toBe(0xffff_ffff);
    }
    rig.e.packedConfigure(QS0, 32768, 0, ring.desc, ring.drvEvent, ring.devEvent, REGION_TABLE, 0, WRAP, WRAP);
    expect(rig.e.splitPopBatch(QS0, 1)).toBe(0);
    rig.e.packedConfigure(QS0, 1, 0, ring.desc, ring.drvEvent, ring.devEvent, REGION_TABLE, 0, WRAP, WRAP);
    expect(rig.e.splitPopBatch(QS0, 1)).toBe(0);
  });
});

describe('packed ring: malicious descriptors break only that ring, with the split ring\'s ERR_* codes', () => {
  const cases: { name: string; err: number; build: (rig: Rig, ring: PackedTestRing) => void }[] = [
    { name: 'buffer id >= queue size', err: ERR_HEAD_RANGE, build: (_r, ring) => { ring.add(9, [{ addr: 0x10_0000n, len: 8 }]); } },
    { name: 'a chain continuing into a slot that is not available', err: ERR_DESC_FLAGS, build: (_r, ring) => {
      ring.add(0, [{ addr: 0x10_0000n, len: 8 }, { addr: 0x10_0000n, len: 8 }]);
      ring.setSlotFlags(2, P_USED);
    } },
    { name: 'AVAIL and USED both set on a following descriptor (inconsistent)', err: ERR_DESC_FLAGS, build: (_r, ring) => {
      ring.add(0, [{ addr: 0x10_0000n, len: 8 }, { addr: 0x10_0000n, len: 8 }]);
      ring.setSlotFlags(2, P_USED | P_AVAIL);
    } },
    { name: 'INDIRECT with NEXT', err: ERR_INDIRECT_NEXT, build: (_r, ring) => {
      ring.add(0, [{ addr: 0x1_0000_0000n, len: 16, indirect: true }, { addr: 0x10_0000n, len: 8 }]);
    } },
    { name: 'indirect inside indirect', err: ERR_INDIRECT_NESTED, build: (rig, ring) => {
      const t = wasmOfGpa(0x1_0000_0000n);
      rig.w64(t, 0x1_0000_1000n); rig.w32(t + 8, 16); rig.w16(t + 14, VIRTQ_DESC_F_INDIRECT);
      ring.add(0, [{ addr: 0x1_0000_0000n, len: 16, indirect: true }]);
    } },
    { name: 'NEXT on the indirect table\'s last entry', err: ERR_INDIRECT_NEXT, build: (rig, ring) => {
      const t = wasmOfGpa(0x1_0000_0000n);
      rig.w64(t, 0x10_0000n); rig.w32(t + 8, 8); rig.w16(t + 14, VIRTQ_DESC_F_NEXT);
      ring.add(0, [{ addr: 0x1_0000_0000n, len: 16, indirect: true }]);
    } },
    { name: 'indirect table length not a multiple of 16', err: ERR_INDIRECT_LEN, build: (_r, ring) => {
      ring.add(0, [{ addr: 0x1_0000_0000n, len: 24, indirect: true }]);
    } },
    { name: 'readable after writable', err: ERR_WRITE_ORDER, build: (_r, ring) => {
      ring.add(0, [{ addr: 0x10_0000n, len: 8, write: true }, { addr: 0x10_0000n, len: 8 }]);
    } },
    { name: 'buffer outside guest memory', err: ERR_TRANSLATE, build: (_r, ring) => {
      ring.add(0, [{ addr: 0x9000_0000n, len: 8 }]);
    } },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const { rig, ring } = setup(4);
      ring.add(1, [{ addr: 0x10_0000n, len: 8 }]); // a good chain first: returned, then the error
      c.build(rig, ring);
      expect(rig.e.splitPopBatch(QS0, 8)).toBe(1);
      expect(rig.e.splitPopBatch(QS0, 8)).toBe(-c.err);
      expect(rig.e.splitAvailPending(QS0)).toBe(-c.err);
      expect(rig.r32(QS0 + QS_ERROR_DETAIL)).toBe(1);
      // the good chain still completes
      rig.e.splitComplete(QS0, 1);
    });
  }
});

describe('packed ring: loops', () => {
  it('NEXT on every descriptor all the way round the ring is ERR_CHAIN_LOOP', () => {
    const { rig, ring } = setup(4);
    for (let i = 1; i < 4; i++) ring.writeSlot(i, { addr: 0x10_0000n, len: 8, id: 0, flags: P_AVAIL | VIRTQ_DESC_F_NEXT });
    ring.writeSlot(0, { addr: 0x10_0000n, len: 8, id: 0, flags: P_USED | VIRTQ_DESC_F_NEXT }); // available in lap 2
    ring.setSlotFlags(0, P_USED | VIRTQ_DESC_F_NEXT);
    rig.w16(QS0 + QS_LAST_AVAIL, 1 | WRAP);
    expect(rig.e.splitPopBatch(QS0, 8)).toBe(-ERR_CHAIN_LOOP);
    expect(rig.r32(QS0 + QS_ERROR_DETAIL)).toBe(1);
  });
});
