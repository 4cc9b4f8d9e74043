/**
 * Dirty-page logging (A.9, assembly/dirty-log.ts): after a batch, the log at LOG_AREA has exactly the bits of the
 * guest pages the device wrote (checked against a TS model of the chains), the used-ring writes logged at the
 * ring's log address only with VHOST_VRING_F_LOG (QF_LOG_USED), nothing without VHOST_F_LOG_ALL (QF_LOG), and a
 * log too small for the guest keeps every bit inside it.
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import {
  REGION_TABLE, REGION_HDR_LOG_BYTES, LOG_AREA, LOG_PAGE_SHIFT, QF_INDIRECT, QF_LOG, QF_LOG_USED, QS_LOG_USED,
  QS_LOG_DROPPED,
} from '../../src/engine/layout.js';
import { Rig, TestRing, PackedTestRing, QS0, F_NEXT, F_WRITE, F_INDIRECT, setUsedLen, DEFAULT_REGIONS } from './helpers.js';

const PAGE = 1n << BigInt(LOG_PAGE_SHIFT);
/** the highest test GPA is region C's end (4 GiB + 2 MiB): a log that covers it */
const FULL_LOG = Number((0x1_0020_0000n / PAGE + 7n) / 8n);
/** a used-ring log address apart from the ring itself, so its bits tell which address was used */
const USED_LOG_GPA = 0x1_0001_0000n;

interface Buf { gpa: bigint; len: number; write: boolean }

function setLog(rig: Rig, bytes: number): void {
  rig.u8.fill(0, LOG_AREA, LOG_AREA + FULL_LOG + 64);
  rig.w32(REGION_TABLE + REGION_HDR_LOG_BYTES, bytes);
}

function loggedPages(rig: Rig, bytes = FULL_LOG + 64): Set<bigint> {
  const out = new Set<bigint>();
  for (let i = 0; i < bytes; i++) {
    const b = rig.r8(LOG_AREA + i);
    for (let k = 0; k < 8; k++) if (b & (1 << k)) out.add(BigInt(i * 8 + k));
  }
  return out;
}

function addPages(set: Set<bigint>, gpa: bigint, len: bigint): void {
  if (len <= 0n) return;
  for (let p = gpa / PAGE; p <= (gpa + len - 1n) / PAGE; p++) set.add(p);
}

/** Model: the pages of the first `used` bytes of a chain's writable buffers. */
function modelChain(set: Set<bigint>, bufs: Buf[], used: number): void {
  let rem = used;
  for (const b of bufs) {
    if (!b.write || rem === 0) continue;
    const take = Math.min(rem, b.len);
    addPages(set, b.gpa, BigInt(take));
    rem -= take;
  }
}

/** A guest buffer anywhere in regions A (past the rings), B or C, crossing pages and the A/B boundary. */
const bufArb = fc.record({
  region: fc.constantFrom(0, 1, 2),
  off: fc.integer({ min: 0x1_0000, max: 0x1f_f000 }),
  len: fc.integer({ min: 1, max: 0x5000 }),
});
function bufGpa(b: { region: number; off: number; len: number }): { gpa: bigint; len: number } {
  const base = [0n, 0x20_0000n, 0x1_0000_0000n][b.region]!;
  // region A and B are GPA-adjacent: A's buffers may run into B; others stay inside their region
  const len = b.region === 0 ? b.len : Math.min(b.len, 0x20_0000 - b.off);
  return { gpa: base + BigInt(b.off), len };
}
type ChainSpec = { reads: Buf[]; writes: Buf[]; used: number };
/** readable then writable buffers; the device reports up to 120% of the writable length (clamped or not) */
const chainArb: fc.Arbitrary<ChainSpec> = fc
  .record({
    reads: fc.array(bufArb, { maxLength: 2 }),
    writes: fc.array(bufArb, { minLength: 1, maxLength: 4 }),
    usedFrac: fc.double({ min: 0, max: 1.2, noNaN: true }),
  })
  .map((v) => {
    const reads = v.reads.map((b) => ({ ...bufGpa(b), write: false }));
    const writes = v.writes.map((b) => ({ ...bufGpa(b), write: true }));
    const wlen = writes.reduce((s, b) => s + b.len, 0);
    return { reads, writes, used: Math.floor(wlen * v.usedFrac) };
  });

function splitSetup(rig: Rig, size: number, qf: number): TestRing {
  rig.reset();
  rig.setRegions();
  const ring = new TestRing(rig, size);
  rig.e.splitConfigure(QS0, size, qf, ring.desc, ring.avail, ring.used, REGION_TABLE, 0, 0);
  rig.w64(QS0 + QS_LOG_USED, USED_LOG_GPA);
  return ring;
}

/** Lay the chains out in the descriptor table (chain c's descriptors from c * 6 on) and publish them. */
function publishSplit(ring: TestRing, chains: ChainSpec[], indirectTable?: bigint): void {
  const heads: number[] = [];
  chains.forEach((c, k) => {
    const bufs = [...c.reads, ...c.writes];
    const base = k * 6;
    if (indirectTable !== undefined && k % 2 === 1) {
      // odd chains: one indirect descriptor whose table (in region C) holds the buffers
      const t = indirectTable + BigInt(k * 0x100);
      bufs.forEach((b, j) => {
        const a = Number(BigInt(DEFAULT_REGIONS[1]!.wasm) + (t - 0x1_0000_0000n)) + 16 * j;
        ring.rig.w64(a, b.gpa);
        ring.rig.w32(a + 8, b.len);
        ring.rig.w16(a + 12, (b.write ? F_WRITE : 0) | (j + 1 < bufs.length ? F_NEXT : 0));
        ring.rig.w16(a + 14, j + 1);
      });
      ring.setDesc(base, { addr: t, len: 16 * bufs.length, flags: F_INDIRECT, next: 0 });
    } else {
      bufs.forEach((b, j) => ring.setDesc(base + j, { addr: b.gpa, len: b.len, flags: (b.write ? F_WRITE : 0) | (j + 1 < bufs.length ? F_NEXT : 0), next: base + j + 1 }));
    }
    heads.push(base);
  });
  ring.publish(...heads);
}

function usedRingPages(n: number): Set<bigint> {
  const s = new Set<bigint>();
  addPages(s, USED_LOG_GPA + 2n, 2n);
  addPages(s, USED_LOG_GPA + 4n, BigInt(8 * n));
  return s;
}

describe('dirty log: split rings', () => {
  it('after a batch the log has exactly the pages written: buffers by used length, and the used ring at its log address (property, complete and pushUsed)', () => {
    const rig = new Rig();
    fc.assert(
      fc.property(fc.array(chainArb, { minLength: 1, maxLength: 10 }), fc.boolean(), fc.boolean(), (specs, outOfOrder, indirect) => {
        const chains = specs;
        const ring = splitSetup(rig, 64, QF_INDIRECT | QF_LOG | QF_LOG_USED);
        setLog(rig, FULL_LOG);
        publishSplit(ring, chains, indirect ? 0x1_0008_0000n : undefined);
        expect(rig.e.splitPopBatch(QS0, 64)).toBe(chains.length);
        const want = usedRingPages(chains.length);
        if (outOfOrder) {
          // completion in reverse order, lengths as the device reports them (pushUsed does not clamp)
          for (let k = chains.length - 1; k >= 0; k--) rig.e.splitPushUsed(QS0, k * 6, chains[k]!.used);
          rig.e.splitPublish(QS0);
        } else {
          chains.forEach((c, k) => setUsedLen(rig, QS0, k, c.used));
          rig.e.splitComplete(QS0, chains.length);
        }
        for (const c of chains) modelChain(want, c.writes, c.used);
        expect([...loggedPages(rig)].sort()).toEqual([...want].sort());
        expect(rig.r32(QS0 + QS_LOG_DROPPED)).toBe(0);
      }),
      { numRuns: 60 },
    );
  });

  it('without VHOST_F_LOG_ALL (QF_LOG off) nothing is logged, even with a log mapped and VHOST_VRING_F_LOG', () => {
    const rig = new Rig();
    const ring = splitSetup(rig, 16, QF_INDIRECT | QF_LOG_USED);
    setLog(rig, FULL_LOG);
    publishSplit(ring, [{ reads: [], writes: [{ gpa: 0x10_0000n, len: 5000, write: true }], used: 5000 }]);
    expect(rig.e.splitPopBatch(QS0, 16)).toBe(1);
    setUsedLen(rig, QS0, 0, 5000);
    rig.e.splitComplete(QS0, 1);
    rig.e.splitDisableNotify(QS0);
    rig.e.splitEnableNotify(QS0);
    expect(loggedPages(rig).size).toBe(0);
    expect(ring.usedIdx).toBe(1);
  });

  it('the used-ring log address is honoured only with VHOST_VRING_F_LOG (QF_LOG_USED)', () => {
    const rig = new Rig();
    const ring = splitSetup(rig, 16, QF_INDIRECT | QF_LOG);
    setLog(rig, FULL_LOG);
    publishSplit(ring, [{ reads: [], writes: [{ gpa: 0x10_0000n, len: 100, write: true }], used: 100 }]);
    rig.e.splitPopBatch(QS0, 16);
    rig.e.splitPushUsed(QS0, 0, 100);
    rig.e.splitPublish(QS0);
    expect([...loggedPages(rig)]).toEqual([0x10_0000n / PAGE]);
  });

  it('notification writes to the used ring (flags, avail_event) are logged at the log address', () => {
    const rig = new Rig();
    const ring = splitSetup(rig, 16, QF_INDIRECT | QF_LOG | QF_LOG_USED);
    setLog(rig, FULL_LOG);
    rig.e.splitDisableNotify(QS0);
    expect([...loggedPages(rig)]).toEqual([USED_LOG_GPA / PAGE]);
    void ring;
  });

  it('a log too small for the guest: only the pages inside it are set, the rest counted, nothing written past it', () => {
    const rig = new Rig();
    const ring = splitSetup(rig, 16, QF_INDIRECT | QF_LOG | QF_LOG_USED);
    const small = 0x10; // 128 pages: 512 KiB of guest
    setLog(rig, small);
    rig.u8.fill(0xee, LOG_AREA + small, LOG_AREA + small + 64);
    // 0x7f000 + 0x3000: pages 0x7f (inside) and 0x80, 0x81 (outside); used ring log address outside as well
    publishSplit(ring, [{ reads: [], writes: [{ gpa: 0x7_f000n, len: 0x3000, write: true }], used: 0x3000 }]);
    rig.e.splitPopBatch(QS0, 16);
    setUsedLen(rig, QS0, 0, 0x3000);
    rig.e.splitComplete(QS0, 1);
    expect([...loggedPages(rig, small)]).toEqual([0x7fn]);
    for (let i = 0; i < 64; i++) expect(rig.r8(LOG_AREA + small + i)).toBe(0xee);
    // 2 buffer pages + the used element and used.idx pages at 4 GiB + 64 KiB
    expect(rig.r32(QS0 + QS_LOG_DROPPED)).toBe(2 + 2);
  });
});

describe('dirty log: packed rings', () => {
  it('after a batch the log has exactly the pages written and the ring slots of the used descriptors (property, complete)', () => {
    const rig = new Rig();
    fc.assert(
      fc.property(fc.array(chainArb, { minLength: 1, maxLength: 8 }), fc.boolean(), (specs, logUsed) => {
        const chains = specs;
        rig.reset();
        rig.setRegions();
        const ring = new PackedTestRing(rig, 64);
        rig.e.packedConfigure(QS0, 64, QF_INDIRECT | QF_LOG | (logUsed ? QF_LOG_USED : 0), ring.desc, ring.drvEvent, ring.devEvent, REGION_TABLE, 0, 0x8000, 0x8000);
        setLog(rig, FULL_LOG);
        chains.forEach((c, k) => ring.add(k, [...c.reads, ...c.writes].map((b) => ({ addr: b.gpa, len: b.len, write: b.write }))));
        expect(rig.e.splitPopBatch(QS0, 64)).toBe(chains.length);
        chains.forEach((c, k) => setUsedLen(rig, QS0, k, c.used));
        rig.e.splitComplete(QS0, chains.length);
        const want = new Set<bigint>();
        for (const c of chains) modelChain(want, c.writes, c.used);
        // the ring (64 slots at GPA 0x1000) lies in page 1
        if (logUsed) want.add(1n);
        expect([...loggedPages(rig)].sort()).toEqual([...want].sort());
        for (let k = 0; k < chains.length; k++) expect(ring.reap()?.id).toBe(k);
      }),
      { numRuns: 40 },
    );
  });

  it('without VHOST_F_LOG_ALL nothing is logged', () => {
    const rig = new Rig();
    rig.setRegions();
    const ring = new PackedTestRing(rig, 8);
    rig.e.packedConfigure(QS0, 8, QF_INDIRECT | QF_LOG_USED, ring.desc, ring.drvEvent, ring.devEvent, REGION_TABLE, 0, 0x8000, 0x8000);
    setLog(rig, FULL_LOG);
    ring.add(3, [{ addr: 0x10_0000n, len: 4096, write: true }]);
    rig.e.splitPopBatch(QS0, 8);
    setUsedLen(rig, QS0, 0, 4096);
    rig.e.splitComplete(QS0, 1);
    rig.e.splitEnableNotify(QS0);
    expect(loggedPages(rig).size).toBe(0);
    expect(ring.reap()?.id).toBe(3);
  });
});
