/**
 * A malicious or broken driver: every malformed table must give its error code, consume nothing of
 * the offending chain, and leave guest memory exactly as it was (the device never writes the
 * descriptor table, the avail ring or any buffer while popping).
 */
import { describe, it, expect } from 'vitest';
import {
  REGION_TABLE, QF_INDIRECT, QS_LAST_AVAIL, QS_ERROR, QS_ERROR_DETAIL, QS_STAT_CHAINS, ERR_AVAIL_IDX,
  ERR_HEAD_RANGE, ERR_NEXT_RANGE, ERR_CHAIN_LOOP, ERR_TRANSLATE, ERR_INDIRECT_LEN, ERR_INDIRECT_NESTED,
  ERR_WRITE_ORDER, ERR_INDIRECT_NEXT, ERR_SEGMENTS, ERR_CHAIN_BYTES, SEG_CAP,
} from '../../src/engine/layout.js';
import { ReferenceSplitEngine } from '../../src/engine/reference-split.js';
import { Rig, TestRing, QS0, G, GUEST_BYTES, F_NEXT, F_WRITE, F_INDIRECT, wasmOfGpa, DEFAULT_REGIONS, type Desc, readChains } from './helpers.js';

const DATA = 0x10_0000n;
const TABLES = 0x1_0000_0000n;
const N = 8;

interface Case {
  name: string;
  err: number;
  /** Write descriptors (and tables); return the heads to publish (first ones may be valid). */
  build(ring: TestRing, tbl: (i: number, d: Desc, gpa?: bigint) => void): number[];
  /** chains expected to pop before the bad one (default 0) */
  good?: number;
  /** value expected in QS_ERROR_DETAIL (default: the last published head) */
  detail?: number;
  /** raw avail.idx to publish instead of heads.length */
  availIdx?: number;
  big?: boolean;
}

const ok = (ring: TestRing, i: number): void => ring.setDesc(i, { addr: DATA, len: 64, flags: 0, next: 0 });

const cases: Case[] = [
  { name: 'a direct chain that loops breaks the ring (chain longer than the queue)', err: ERR_CHAIN_LOOP,
    build: (r) => { r.setDesc(0, { addr: DATA, len: 8, flags: F_NEXT, next: 1 }); r.setDesc(1, { addr: DATA, len: 8, flags: F_NEXT, next: 0 }); return [0]; } },
  { name: 'a zero-length self loop breaks the ring', err: ERR_CHAIN_LOOP,
    build: (r) => { r.setDesc(5, { addr: 0n, len: 0, flags: F_NEXT, next: 5 }); return [5]; } },
  { name: 'a chain through every descriptor and back (N + 1 long) breaks the ring', err: ERR_CHAIN_LOOP,
    build: (r) => { for (let i = 0; i < N; i++) r.setDesc(i, { addr: DATA, len: 1, flags: F_NEXT, next: (i + 1) % N }); return [3]; } },
  { name: 'an indirect table that loops breaks the ring', err: ERR_CHAIN_LOOP,
    build: (r, t) => { for (let j = 0; j < 4; j++) t(j, { addr: DATA, len: 4, flags: F_NEXT, next: (j + 1) % 4 }); r.setDesc(0, { addr: TABLES, len: 64, flags: F_INDIRECT, next: 0 }); return [0]; } },
  { name: 'next >= queue size breaks the ring', err: ERR_NEXT_RANGE,
    build: (r) => { r.setDesc(2, { addr: DATA, len: 8, flags: F_NEXT, next: N }); return [2]; } },
  { name: 'next >= len/16 inside an indirect table breaks the ring', err: ERR_NEXT_RANGE,
    build: (r, t) => { t(0, { addr: DATA, len: 4, flags: F_NEXT, next: 2 }); r.setDesc(0, { addr: TABLES, len: 32, flags: F_INDIRECT, next: 0 }); return [0]; } },
  { name: 'a head index >= queue size breaks the ring', err: ERR_HEAD_RANGE, detail: 0xffff,
    build: () => [0xffff] },
  { name: 'avail idx more than N ahead breaks the ring', err: ERR_AVAIL_IDX, availIdx: N + 1, detail: N + 1,
    build: (r) => { for (let i = 0; i < N; i++) ok(r, i); return []; } },
  { name: 'avail idx moved backwards (65535 ahead) breaks the ring', err: ERR_AVAIL_IDX, availIdx: 0xffff, detail: 0xffff,
    build: () => [] },
  { name: 'a buffer outside every region breaks the ring', err: ERR_TRANSLATE,
    build: (r) => { r.setDesc(0, { addr: 0x40_0000n, len: 16, flags: 0, next: 0 }); return [0]; } },
  { name: 'a buffer running past the last GPA-adjacent region breaks the ring', err: ERR_TRANSLATE,
    build: (r) => { r.setDesc(0, { addr: 0x3f_ff00n, len: 0x101, flags: 0, next: 0 }); return [0]; } },
  { name: 'a buffer whose address + length wraps 2^64 breaks the ring', err: ERR_TRANSLATE,
    build: (r) => { r.setDesc(0, { addr: 0xffff_ffff_ffff_fff0n, len: 0x20, flags: 0, next: 0 }); return [0]; } },
  { name: 'a 4 GiB - 1 buffer that no region holds breaks the ring', err: ERR_TRANSLATE,
    build: (r) => { r.setDesc(0, { addr: DATA, len: 0xffff_ffff, flags: F_WRITE, next: 0 }); return [0]; } },
  { name: 'a chain with more than 4 GiB - 1 readable bytes breaks the ring', err: ERR_CHAIN_BYTES, big: true,
    build: (r) => { r.setDesc(0, { addr: 0x10_0000_0000n, len: 0x8000_0000, flags: F_NEXT, next: 1 }); r.setDesc(1, { addr: 0x10_8000_0000n, len: 0x8000_0000, flags: 0, next: 0 }); return [0]; } },
  { name: 'a chain with more than 4 GiB - 1 writable bytes (via an indirect table) breaks the ring', err: ERR_CHAIN_BYTES, big: true,
    build: (r, t) => { t(0, { addr: 0x10_0000_0000n, len: 0xc000_0000, flags: F_WRITE | F_NEXT, next: 1 }); t(1, { addr: 0x10_0000_0000n, len: 0x4000_0000, flags: F_WRITE, next: 0 }); r.setDesc(0, { addr: TABLES, len: 32, flags: F_INDIRECT, next: 0 }); return [0]; } },
  { name: 'a nested indirect table breaks the ring', err: ERR_INDIRECT_NESTED,
    build: (r, t) => { t(0, { addr: TABLES + 0x100n, len: 16, flags: F_INDIRECT, next: 0 }); r.setDesc(0, { addr: TABLES, len: 16, flags: F_INDIRECT, next: 0 }); return [0]; } },
  { name: 'an empty indirect table breaks the ring', err: ERR_INDIRECT_LEN,
    build: (r) => { r.setDesc(0, { addr: TABLES, len: 0, flags: F_INDIRECT, next: 0 }); return [0]; } },
  { name: 'an indirect table whose length is not a multiple of 16 breaks the ring', err: ERR_INDIRECT_LEN,
    build: (r) => { r.setDesc(0, { addr: TABLES, len: 24, flags: F_INDIRECT, next: 0 }); return [0]; } },
  { name: 'INDIRECT together with NEXT breaks the ring', err: ERR_INDIRECT_NEXT,
    build: (r, t) => { t(0, { addr: DATA, len: 4, flags: 0, next: 0 }); r.setDesc(0, { addr: TABLES, len: 16, flags: F_INDIRECT | F_NEXT, next: 1 }); ok(r, 1); return [0]; } },
  { name: 'an indirect table outside guest memory breaks the ring', err: ERR_TRANSLATE,
    build: (r) => { r.setDesc(0, { addr: 0x8000_0000n, len: 16, flags: F_INDIRECT, next: 0 }); return [0]; } },
  { name: 'an indirect table split across two regions breaks the ring (it must be contiguous)', err: ERR_TRANSLATE,
    build: (r) => { r.setDesc(0, { addr: 0x1f_fff0n, len: 32, flags: F_INDIRECT, next: 0 }); return [0]; } },
  { name: 'a device-readable descriptor after a device-writable one breaks the ring', err: ERR_WRITE_ORDER,
    build: (r) => { r.setDesc(0, { addr: DATA, len: 8, flags: F_WRITE | F_NEXT, next: 1 }); r.setDesc(1, { addr: DATA, len: 8, flags: 0, next: 0 }); return [0]; } },
  { name: 'a readable entry in an indirect table after a writable direct descriptor breaks the ring', err: ERR_WRITE_ORDER,
    build: (r, t) => { t(0, { addr: DATA, len: 4, flags: 0, next: 0 }); r.setDesc(0, { addr: DATA, len: 8, flags: F_WRITE | F_NEXT, next: 1 }); r.setDesc(1, { addr: TABLES, len: 16, flags: F_INDIRECT, next: 0 }); return [0]; } },
  { name: 'a chain needing more than SEG_CAP segments breaks the ring', err: ERR_SEGMENTS,
    build: (r, t) => { for (let j = 0; j <= SEG_CAP; j++) t(j, { addr: DATA + BigInt(j), len: 1, flags: j < SEG_CAP ? F_NEXT : 0, next: j + 1 }); r.setDesc(0, { addr: TABLES, len: (SEG_CAP + 1) * 16, flags: F_INDIRECT, next: 0 }); return [0]; } },
  { name: 'good chains before a bad one in the same batch are returned; the next call reports the error', err: ERR_NEXT_RANGE, good: 2,
    build: (r) => { ok(r, 0); ok(r, 1); r.setDesc(2, { addr: DATA, len: 8, flags: F_NEXT, next: 200 }); return [0, 1, 2]; } },
];

describe('malicious descriptor tables break the ring and leave guest memory untouched', () => {
  const rig = new Rig();
  const ref = new ReferenceSplitEngine(rig.memory);

  for (const engineName of ['wasm', 'reference'] as const) {
    for (const c of cases) {
      it(`${c.name} [${engineName}]`, () => {
        const eng = engineName === 'wasm' ? rig.e : ref;
        rig.reset();
        const regions = c.big ? [...DEFAULT_REGIONS, { gpa: 0x10_0000_0000n, size: 0xe000_0000n, uva: 0n, wasm: 0x1000_0000n }] : DEFAULT_REGIONS;
        rig.setRegions(regions);
        const ring = new TestRing(rig, N);
        const start = 0xfffe; // indices wrap during the test
        ring.availIdx = start;
        ring.usedIdx = start;
        const heads = c.build(ring, (i, d, gpa = TABLES) => ring.setDesc(i, d, wasmOfGpa(gpa)));
        let idx = start;
        for (const h of heads) ring.setAvailSlot(idx++, h);
        ring.availIdx = c.availIdx !== undefined ? (start + c.availIdx) & 0xffff : idx;
        eng.splitConfigure(QS0, N, QF_INDIRECT, ring.desc, ring.avail, ring.used, REGION_TABLE, 0, start);

        const guest = rig.copy(G, GUEST_BYTES);
        const good = c.good ?? 0;
        const r1 = eng.splitPopBatch(QS0, 64);
        expect(r1).toBe(good > 0 ? good : -c.err);
        if (good > 0) {
          expect(readChains(rig, QS0, good).map((x) => x.head)).toEqual(heads.slice(0, good));
          expect(eng.splitPopBatch(QS0, 64)).toBe(-c.err);
        }
        expect(rig.r32(QS0 + QS_ERROR)).toBe(c.err);
        const detail = c.detail !== undefined ? (c.availIdx !== undefined ? (start + c.detail) & 0xffff : c.detail) : heads[heads.length - 1];
        expect(rig.r32(QS0 + QS_ERROR_DETAIL)).toBe(detail);
        expect(rig.r16(QS0 + QS_LAST_AVAIL)).toBe((start + good) & 0xffff); // nothing of the bad chain consumed
        expect(rig.r64(QS0 + QS_STAT_CHAINS)).toBe(BigInt(good));
        // sticky: every later call reports the same error
        expect(eng.splitPopBatch(QS0, 64)).toBe(-c.err);
        expect(eng.splitAvailPending(QS0)).toBe(-c.err);
        // byte for byte: descriptor table, rings, indirect tables, buffers
        expect(rig.same(G, guest)).toBe(true);
      });
    }
  }

  it('exactly N chains outstanding is not an error (avail idx N ahead)', () => {
    rig.reset();
    rig.setRegions();
    const ring = new TestRing(rig, N);
    for (let i = 0; i < N; i++) ok(ring, i);
    ring.availIdx = 0xfffc;
    ring.usedIdx = 0xfffc;
    rig.e.splitConfigure(QS0, N, 0, ring.desc, ring.avail, ring.used, REGION_TABLE, 0, 0xfffc);
    ring.publish(0, 1, 2, 3, 4, 5, 6, 7);
    expect(rig.e.splitAvailPending(QS0)).toBe(N);
    expect(rig.e.splitPopBatch(QS0, 64)).toBe(N);
  });

  it('a chain of exactly 4 GiB - 1 bytes is accepted', () => {
    rig.reset();
    rig.setRegions([...DEFAULT_REGIONS, { gpa: 0x10_0000_0000n, size: 0xe000_0000n, uva: 0n, wasm: 0x1000_0000n }]);
    const ring = new TestRing(rig, N);
    ring.setDesc(0, { addr: 0x10_0000_0000n, len: 0x8000_0000, flags: F_NEXT, next: 1 });
    ring.setDesc(1, { addr: 0x10_0000_0000n, len: 0x7fff_ffff, flags: 0, next: 0 });
    rig.e.splitConfigure(QS0, N, 0, ring.desc, ring.avail, ring.used, REGION_TABLE, 0, 0);
    ring.publish(0);
    expect(rig.e.splitPopBatch(QS0, 64)).toBe(1);
    expect(readChains(rig, QS0, 1)[0].readLen).toBe(0xffff_ffff);
  });

  it('device MUST NOT write a device-readable buffer (nor the table or avail ring): a full pop/complete cycle changes only the used ring and writable buffers it was told about', () => {
    rig.reset();
    rig.setRegions();
    const ring = new TestRing(rig, N);
    rig.u8.fill(0xcc, G + 0x10_0000, G + 0x11_0000);
    for (let i = 0; i < N; i++) ring.setDesc(i, { addr: DATA + BigInt(i * 256), len: 256, flags: i % 2 ? F_WRITE : 0, next: 0 });
    rig.e.splitConfigure(QS0, N, 0, ring.desc, ring.avail, ring.used, REGION_TABLE, 0, 0);
    ring.publish(0, 1, 2, 3, 4, 5, 6, 7);
    const guest = rig.copy(G, GUEST_BYTES);
    expect(rig.e.splitPopBatch(QS0, 64)).toBe(N);
    for (let k = 0; k < N; k++) rig.w32(QS0 + 0x200 + k * 32 + 20, k % 2 ? 256 : 0);
    expect(rig.e.splitComplete(QS0, N)).toBe(1);
    const usedStart = ring.used - G;
    const now = rig.u8.subarray(G, G + GUEST_BYTES);
    const changed: number[] = [];
    for (let i = 0; i < GUEST_BYTES; i++) if (now[i] !== guest[i]) changed.push(i);
    expect(changed.length).toBeGreaterThan(0);
    for (const off of changed) {
      expect(off >= usedStart && off < usedStart + 4 + 8 * N).toBe(true);
    }
  });
});
