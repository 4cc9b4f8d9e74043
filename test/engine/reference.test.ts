/**
 * The wasm engine against the plain-TypeScript reference model (src/engine/reference-split.ts):
 * random chains (direct, indirect, readable/writable, buffers crossing regions), random batch sizes,
 * out-of-order completion, notification settings, indices starting near 65535, and random corruption
 * of the rings. Each side runs on its own memory with identical contents; after every call the
 * return values, the whole queue area, the guest area and the inflight area must be byte-identical.
 * Valid chains are also checked against segments computed independently from the chain spec.
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import {
  REGION_TABLE, QF_EVENT_IDX, QF_INDIRECT, QF_INFLIGHT, INFLIGHT_AREA, VIRTQ_AVAIL_F_NO_INTERRUPT, QS_NEXT_USED,
} from '../../src/engine/layout.js';
import { ReferenceSplitEngine } from '../../src/engine/reference-split.js';
import type { SplitEngineApi } from '../../src/engine/engine.js';
import {
  Rig, TestRing, QS0, G, GUEST_BYTES, QUEUE_AREA_SIZE, F_NEXT, F_WRITE, F_INDIRECT, wasmOfGpa, readChains,
  setUsedLen, type Desc, type Seg,
} from './helpers.js';

type Place = 'A' | 'B' | 'C' | 'cross';
interface DescSpec { write: boolean; len: number; place: Place; off: number }
interface ChainSpec { direct: DescSpec[]; indirect: DescSpec[] | null; tableWriteFlag: boolean; seed: number }

const descArb: fc.Arbitrary<DescSpec> = fc.record({
  write: fc.boolean(),
  len: fc.oneof({ weight: 1, arbitrary: fc.constant(0) }, { weight: 6, arbitrary: fc.integer({ min: 1, max: 3000 }) }),
  place: fc.constantFrom<Place>('A', 'A', 'B', 'C', 'cross'),
  off: fc.nat({ max: 0xf_ffff }),
});
const chainArb: fc.Arbitrary<ChainSpec> = fc.record({
  direct: fc.array(descArb, { maxLength: 4 }),
  indirect: fc.option(fc.array(descArb, { minLength: 1, maxLength: 6 }), { nil: null, freq: 3 }),
  tableWriteFlag: fc.boolean(),
  seed: fc.nat(),
}).filter((c) => c.direct.length > 0 || c.indirect !== null);

type Op =
  | { k: 'pop'; max: number; usedSeed: number; mode: 'complete' | 'push'; }
  | { k: 'event'; rel: number; noInterrupt: boolean }
  | { k: 'notify'; enable: boolean };
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 6, arbitrary: fc.record({ k: fc.constant('pop' as const), max: fc.integer({ min: 1, max: 40 }), usedSeed: fc.nat(), mode: fc.constantFrom('complete' as const, 'push' as const) }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('event' as const), rel: fc.integer({ min: -4, max: 40 }), noInterrupt: fc.boolean() }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('notify' as const), enable: fc.boolean() }) },
);
interface Corruption { at: 'desc' | 'avail' | 'table'; byte: number; value: number }
const corruptionArb: fc.Arbitrary<Corruption> = fc.record({
  at: fc.constantFrom('desc' as const, 'avail' as const, 'table' as const),
  byte: fc.nat({ max: 4095 }),
  value: fc.integer({ min: 0, max: 255 }),
});

const TABLE_GPA = 0x1_0000_0000n; // indirect tables: region C, 0x100 bytes per slot

function gpaOf(d: DescSpec): bigint {
  const len = BigInt(Math.max(d.len, 1));
  const off = BigInt(d.off);
  switch (d.place) {
    case 'A': return 0x10_0000n + (off % (0x10_0000n - len));
    case 'B': return 0x20_0000n + (off % (0x20_0000n - len));
    case 'C': return 0x1_0010_0000n + (off % (0x10_0000n - len));
    case 'cross': return len > 1n ? 0x20_0000n - 1n - (off % (len - 1n)) : 0x1f_ffffn;
  }
}

/** Expected segments of a valid chain, computed from the spec (independent of both engines). */
function expectedSegs(c: ChainSpec): Seg[] {
  const out: Seg[] = [];
  for (const d of [...c.direct, ...(c.indirect ?? [])]) {
    if (d.len === 0) continue;
    const gpa = gpaOf(d);
    const end = gpa + BigInt(d.len);
    if (gpa < 0x20_0000n && end > 0x20_0000n) {
      out.push({ addr: wasmOfGpa(gpa), len: Number(0x20_0000n - gpa), write: d.write });
      out.push({ addr: wasmOfGpa(0x20_0000n), len: Number(end - 0x20_0000n), write: d.write });
    } else {
      out.push({ addr: wasmOfGpa(gpa), len: d.len, write: d.write });
    }
  }
  return out;
}

function shuffled(n: number, seed: number): number[] {
  const a = Array.from({ length: n }, (_, i) => i);
  let s = seed >>> 0 || 1;
  for (let i = n - 1; i > 0; i--) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    const j = s % (i + 1);
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

describe('wasm engine == reference model (property)', () => {
  const A = new Rig();
  const B = new Rig();
  const refB = new ReferenceSplitEngine(B.memory);

  it('same popped chains, segments, used ring, notifications, inflight records and errors', () => {
    fc.assert(fc.property(
      fc.constantFrom(8, 16, 64),
      fc.record({ eventIdx: fc.boolean(), inflight: fc.boolean() }),
      fc.oneof(fc.integer({ min: 0xff00, max: 0xffff }), fc.integer({ min: 0, max: 0xffff })),
      fc.array(chainArb, { minLength: 1, maxLength: 60 }),
      fc.array(opArb, { minLength: 1, maxLength: 40 }),
      fc.nat(),
      fc.option(fc.record({ round: fc.nat({ max: 3 }), c: corruptionArb }), { nil: null, freq: 3 }),
      fc.constantFrom(0, 0, 12), // run-level rate (1 in N) of chains left in random read/write order
      (size, feat, start, chains, ops, shuffleSeed, corruption, disorder) => {
        const features = QF_INDIRECT | (feat.eventIdx ? QF_EVENT_IDX : 0) | (feat.inflight ? QF_INFLIGHT : 0);
        const rings: TestRing[] = [];
        for (const rig of [A, B]) {
          rig.reset();
          rig.u8.fill(0, INFLIGHT_AREA, INFLIGHT_AREA + 16 + 16 * size);
          rig.setRegions();
          const ring = new TestRing(rig, size);
          ring.availIdx = start;
          ring.usedIdx = start;
          rings.push(ring);
        }
        const engines: [SplitEngineApi, SplitEngineApi] = [A.e, refB];
        engines.forEach((e, i) => {
          e.inflightSplitInit(INFLIGHT_AREA, size);
          e.splitConfigure(QS0, size, features, rings[i].desc, rings[i].avail, rings[i].used, REGION_TABLE,
            feat.inflight ? INFLIGHT_AREA : 0, start);
        });
        const both = (f: (ring: TestRing, rig: Rig) => void): void => { f(rings[0], A); f(rings[1], B); };
        const call = <T>(f: (e: SplitEngineApi) => T): T => {
          const a = f(engines[0]);
          const b = f(engines[1]);
          expect(a).toEqual(b);
          return a;
        };
        const sameMemory = (): void => {
          expect(Buffer.compare(A.u8.subarray(QS0, QS0 + QUEUE_AREA_SIZE), B.u8.subarray(QS0, QS0 + QUEUE_AREA_SIZE))).toBe(0);
          expect(Buffer.compare(A.u8.subarray(G, G + GUEST_BYTES), B.u8.subarray(G, G + GUEST_BYTES))).toBe(0);
          expect(Buffer.compare(A.u8.subarray(INFLIGHT_AREA, INFLIGHT_AREA + 16 + 16 * size),
            B.u8.subarray(INFLIGHT_AREA, INFLIGHT_AREA + 16 + 16 * size))).toBe(0);
        };

        let next = 0;
        let opIdx = 0;
        let broken = false;
        for (let round = 0; next < chains.length && !broken && round < 8; round++) {
          // ---- driver: lay out as many chains as the descriptor table holds ----
          const free = shuffled(size, shuffleSeed + round);
          const expected = new Map<number, Seg[]>();
          let slot = 0;
          let published = 0;
          while (next < chains.length) {
            const c = chains[next];
            const need = c.direct.length + (c.indirect ? 1 : 0);
            if (need > free.length) break;
            const idx = free.splice(0, need);
            // readable before writable (B.1), except in a few chains when the run asks for disorder:
            // those may break the ring with ERR_WRITE_ORDER (both engines must agree)
            const keep = disorder !== 0 && c.seed % disorder === 0;
            const byWrite = (x: DescSpec, y: DescSpec): number => Number(x.write) - Number(y.write);
            const ordered = keep ? c.direct : [...c.direct].sort(byWrite);
            const allWrite = c.direct.some((d) => d.write);
            const ind = c.indirect ? (keep ? c.indirect : [...c.indirect].sort(byWrite)) : null;
            const spec: ChainSpec = {
              ...c, direct: ordered,
              indirect: ind && allWrite && !keep ? ind.map((d) => ({ ...d, write: true })) : ind,
            };
            const tableGpa = TABLE_GPA + BigInt(slot++) * 0x100n;
            both((ring) => {
              spec.direct.forEach((d, j) => {
                const last = j === spec.direct.length - 1 && !spec.indirect;
                const desc: Desc = { addr: gpaOf(d), len: d.len, flags: (d.write ? F_WRITE : 0) | (last ? 0 : F_NEXT), next: last ? (c.seed & 0xff) : idx[j + 1] };
                ring.setDesc(idx[j], desc);
              });
              if (spec.indirect) {
                const entries = spec.indirect;
                const pos = [0, ...shuffled(entries.length, c.seed).filter((p) => p !== 0)];
                const tbl = wasmOfGpa(tableGpa);
                entries.forEach((d, j) => {
                  const last = j === entries.length - 1;
                  ring.setDesc(pos[j], { addr: gpaOf(d), len: d.len, flags: (d.write ? F_WRITE : 0) | (last ? 0 : F_NEXT), next: last ? 0 : pos[j + 1] }, tbl);
                });
                ring.setDesc(idx[need - 1], { addr: tableGpa, len: 16 * entries.length, flags: F_INDIRECT | (c.tableWriteFlag ? F_WRITE : 0), next: c.seed & 0xffff });
              }
              ring.setAvailSlot(ring.availIdx + published, idx[0]);
            });
            expected.set(idx[0], expectedSegs(spec));
            published++;
            next++;
          }
          both((ring) => { ring.availIdx = ring.availIdx + published; });
          let corrupted = false;
          if (corruption && corruption.round === round) {
            const { at, byte, value } = corruption.c;
            both((ring, rig) => {
              const base = at === 'desc' ? ring.desc + (byte % (16 * size)) : at === 'avail' ? ring.avail + (byte % (4 + 2 * size)) : wasmOfGpa(TABLE_GPA) + (byte % 0x1000);
              rig.w8(base, value);
            });
            corrupted = true;
          }
          sameMemory();

          // ---- device: random ops until this round's chains are all completed (or the ring breaks) ----
          let remaining = published;
          let guard = 0;
          while (remaining > 0 && !broken && guard++ < 200) {
            const op = ops[opIdx++ % ops.length];
            if (op.k === 'event') {
              // used_event near the device's next used index, so both outcomes of need_event occur
              const usedEvent = A.r16(QS0 + QS_NEXT_USED) + op.rel;
              both((ring) => { ring.usedEvent = usedEvent; ring.availFlags = op.noInterrupt ? VIRTQ_AVAIL_F_NO_INTERRUPT : 0; });
              continue;
            }
            if (op.k === 'notify') {
              if (op.enable) call((e) => e.splitEnableNotify(QS0));
              else call((e) => e.splitDisableNotify(QS0));
              sameMemory();
              continue;
            }
            call((e) => e.splitAvailPending(QS0));
            const n = call((e) => e.splitPopBatch(QS0, op.max));
            sameMemory();
            if (n < 0) { broken = true; break; }
            const recs = readChains(A, QS0, n);
            if (!corrupted) for (const r of recs) expect(r.segs).toEqual(expected.get(r.head));
            let s = op.usedSeed;
            const lens = recs.map((r) => { s = (Math.imul(s, 1103515245) + 12345) >>> 0; return r.writeLen ? s % (r.writeLen + 1) : 0; });
            if (op.mode === 'complete') {
              lens.forEach((len, k) => { setUsedLen(A, QS0, k, len); setUsedLen(B, QS0, k, len); });
              call((e) => e.splitComplete(QS0, n));
            } else {
              for (const k of shuffled(n, op.usedSeed)) call((e) => e.splitPushUsed(QS0, recs[k].head, lens[k]));
              call((e) => e.splitPublish(QS0));
            }
            sameMemory();
            remaining -= n;
            if (n === 0 && !corrupted) expect(remaining).toBe(0);
            if (n === 0) break;
          }
        }
        if (feat.inflight) {
          const out = INFLIGHT_AREA + 0x10_0000;
          call((e) => e.inflightSplitRecover(QS0, out));
          sameMemory();
          expect(Buffer.compare(A.u8.subarray(out, out + 2 * size), B.u8.subarray(out, out + 2 * size))).toBe(0);
        }
      },
    ), { numRuns: 120 });
  });
});
