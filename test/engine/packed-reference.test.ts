/**
 * The wasm packed-ring engine against the plain-TypeScript model (src/engine/reference-packed.ts, reached through
 * ReferenceSplitEngine's dispatch): random chains (direct, wrapping round the ring end, indirect, buffers
 * crossing regions), random batch sizes, in-order and out-of-order completion, IN_ORDER runs, event suppression
 * settings, queue sizes that are not powers of two, many laps (so both wrap counters flip many times), and
 * random corruption of the descriptor ring (malicious flags). Each side runs on its own memory with identical
 * contents; after every step the return values, the queue area and the ring must be byte-identical, and, while
 * nothing was corrupted, the driver gets every buffer id back exactly once with a used length it can accept.
 */
import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import {
  REGION_TABLE, QF_EVENT_IDX, QF_INDIRECT, QF_IN_ORDER, QUEUE_AREA_SIZE, CHAINS_OFFSET, CHAIN_BYTES, CH_HEAD,
  CH_WRITE_LEN, CH_USED_LEN, PACKED_TOKEN_SLOTS_SHIFT, VIRTQ_DESC_F_WRITE,
} from '../../src/engine/layout.js';
import { ReferenceSplitEngine } from '../../src/engine/reference-split.js';
import type { SplitEngineApi } from '../../src/engine/engine.js';
import { Rig, PackedTestRing, QS0, wasmOfGpa, type PDesc } from './helpers.js';

interface BufSpec { write: boolean; len: number; gpa: bigint }
const bufArb: fc.Arbitrary<BufSpec> = fc.record({
  write: fc.boolean(),
  len: fc.oneof({ weight: 1, arbitrary: fc.constant(0) }, { weight: 5, arbitrary: fc.integer({ min: 1, max: 5000 }) }),
  gpa: fc.oneof(
    fc.bigInt({ min: 0x10_0000n, max: 0x1f_0000n }),
    fc.bigInt({ min: 0x1f_f000n, max: 0x20_0000n }), // crosses regions A/B
    fc.bigInt({ min: 0x1_0010_0000n, max: 0x1_0018_0000n }),
  ),
});
interface ChainSpec { bufs: BufSpec[]; indirect: boolean }
const chainArb: fc.Arbitrary<ChainSpec> = fc.record({ bufs: fc.array(bufArb, { minLength: 1, maxLength: 5 }), indirect: fc.boolean() });

type Op =
  | { k: 'add'; chain: ChainSpec }
  | { k: 'pop'; max: number; mode: 'complete' | 'push'; seed: number }
  | { k: 'finish'; seed: number }
  | { k: 'event'; flags: number; off: number; wrap: number }
  | { k: 'notify'; enable: boolean }
  | { k: 'corrupt'; byte: number; value: number };
const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 8, arbitrary: fc.record({ k: fc.constant('add' as const), chain: chainArb }) },
  { weight: 5, arbitrary: fc.record({ k: fc.constant('pop' as const), max: fc.integer({ min: 1, max: 8 }), mode: fc.constantFrom('complete' as const, 'push' as const), seed: fc.nat() }) },
  { weight: 2, arbitrary: fc.record({ k: fc.constant('finish' as const), seed: fc.nat() }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('event' as const), flags: fc.integer({ min: 0, max: 3 }), off: fc.nat({ max: 40 }), wrap: fc.integer({ min: 0, max: 1 }) }) },
  { weight: 1, arbitrary: fc.record({ k: fc.constant('notify' as const), enable: fc.boolean() }) },
);
const corruptArb: fc.Arbitrary<Op> = fc.record({ k: fc.constant('corrupt' as const), byte: fc.nat({ max: 16 * 9 - 1 }), value: fc.integer({ min: 0, max: 255 }) });

const TABLE_GPA = 0x1_0000_0000n; // indirect tables in region C, 0x100 bytes per buffer id

class Side {
  readonly rig = new Rig();
  readonly ring: PackedTestRing;
  readonly eng: SplitEngineApi;
  constructor(readonly size: number, ref: boolean, qf: number) {
    this.rig.setRegions();
    this.ring = new PackedTestRing(this.rig, size);
    this.eng = ref ? new ReferenceSplitEngine(this.rig.memory) : this.rig.e;
    const configure = ref ? (this.eng as ReferenceSplitEngine).packedConfigure.bind(this.eng) : this.rig.e.packedConfigure;
    configure(QS0, size, qf, this.ring.desc, this.ring.drvEvent, this.ring.devEvent, REGION_TABLE, 0, 1 << 15, 1 << 15);
  }
}

function run(size: number, qf: number, ops: Op[]): void {
  const sides = [new Side(size, false, qf), new Side(size, true, qf)] as const;
  const inOrder = (qf & QF_IN_ORDER) !== 0;
  const [w, r] = sides;
  let corrupted = false;
  let freeSlots = size;
  const freeIds = Array.from({ length: size }, (_, i) => i);
  const outstanding: { id: number; slots: number }[] = []; // in the order made available (IN_ORDER reaping)
  const tokens: number[] = []; // popped, not completed (push mode)
  const writeRoom = new Map<number, number>();
  const both = <T>(f: (s: Side) => T): T => {
    const a = f(w);
    const b = f(r);
    expect(b).toEqual(a);
    return a;
  };
  const reap = (): void => {
    for (;;) {
      const got = both((s) => {
        const i = s.ring.usedPos & 0x7fff;
        const fl = s.ring.slotFlags(i);
        const wr = (s.ring.usedPos >> 15) & 1;
        if (((fl >> 7) & 1) !== wr || ((fl >> 15) & 1) !== wr) return null;
        return { id: s.rig.r16(s.ring.desc + 16 * i + 12), len: s.rig.r32(s.ring.desc + 16 * i + 8) };
      });
      if (!got || corrupted) return;
      let slots = 0;
      if (inOrder) {
        const k = outstanding.findIndex((o) => o.id === got.id);
        expect(k, `used id ${got.id} is outstanding`).toBeGreaterThanOrEqual(0);
        for (const o of outstanding.splice(0, k + 1)) {
          slots += o.slots;
          freeIds.push(o.id);
        }
      } else {
        const k = outstanding.findIndex((o) => o.id === got.id);
        expect(k, `used id ${got.id} is outstanding`).toBeGreaterThanOrEqual(0);
        slots = outstanding.splice(k, 1)[0]!.slots;
        freeIds.push(got.id);
      }
      expect(got.len).toBeLessThanOrEqual(writeRoom.get(got.id) ?? 0);
      freeSlots += slots;
      for (const s of sides) s.ring.usedPos = PackedTestRing.advance(s.ring.usedPos, slots, size);
    }
  };
  const compare = (): void => {
    expect(Buffer.compare(w.rig.copy(QS0, QUEUE_AREA_SIZE), r.rig.copy(QS0, QUEUE_AREA_SIZE))).toBe(0);
    expect(Buffer.compare(w.rig.copy(w.ring.desc, 16 * size + 8), r.rig.copy(r.ring.desc, 16 * size + 8))).toBe(0);
  };
  for (const op of ops) {
    switch (op.k) {
      case 'add': {
        const c = op.chain;
        const slots = c.indirect ? 1 : c.bufs.length;
        if (corrupted || slots > freeSlots || freeIds.length === 0) break;
        // readable before writable, as a driver must
        const bufs = [...c.bufs].sort((a, b) => Number(a.write) - Number(b.write));
        const id = freeIds.shift()!;
        writeRoom.set(id, bufs.reduce((t, b) => t + (b.write ? b.len : 0), 0));
        for (const s of sides) {
          let descs: PDesc[];
          if (c.indirect) {
            const tg = TABLE_GPA + BigInt(id * 0x100);
            const t = wasmOfGpa(tg);
            bufs.forEach((b, k) => {
              s.rig.w64(t + 16 * k, b.gpa);
              s.rig.w32(t + 16 * k + 8, b.len);
              s.rig.w16(t + 16 * k + 12, 0);
              s.rig.w16(t + 16 * k + 14, b.write ? VIRTQ_DESC_F_WRITE : 0);
            });
            descs = [{ addr: tg, len: 16 * bufs.length, indirect: true }];
          } else {
            descs = bufs.map((b) => ({ addr: b.gpa, len: b.len, write: b.write }));
          }
          s.ring.add(id, descs);
        }
        freeSlots -= slots;
        outstanding.push({ id, slots });
        break;
      }
      case 'pop': {
        const n = both((s) => s.eng.splitPopBatch(QS0, op.max));
        if (n <= 0) break;
        if (op.mode === 'complete' || inOrder) {
          for (let k = 0; k < n; k++) {
            const rec = QS0 + CHAINS_OFFSET + k * CHAIN_BYTES;
            const room = w.rig.r32(rec + CH_WRITE_LEN);
            for (const s of sides) s.rig.w32(rec + CH_USED_LEN, (op.seed * (k + 7)) % (room + 3));
          }
          both((s) => s.eng.splitComplete(QS0, n));
        } else {
          for (let k = 0; k < n; k++) tokens.push(w.rig.r32(QS0 + CHAINS_OFFSET + k * CHAIN_BYTES + CH_HEAD));
          // complete some now, in a scrambled order
          const now = tokens.splice(0, op.seed % (tokens.length + 1));
          now.sort((a, b) => ((a * 2654435761 + op.seed) >>> 0) - ((b * 2654435761 + op.seed) >>> 0));
          for (const t of now) both((s) => s.eng.splitPushUsed(QS0, t, 0));
          both((s) => s.eng.splitPublish(QS0));
        }
        reap();
        break;
      }
      case 'finish': {
        const now = tokens.splice(0);
        for (const t of now) {
          expect(t >>> PACKED_TOKEN_SLOTS_SHIFT).toBeGreaterThan(0);
          both((s) => s.eng.splitPushUsed(QS0, t, 0));
        }
        both((s) => s.eng.splitPublish(QS0));
        reap();
        break;
      }
      case 'event':
        for (const s of sides) {
          s.ring.drvEventFlags = op.flags;
          s.ring.drvEventOffWrap = (op.off % size) | (op.wrap << 15);
        }
        break;
      case 'notify':
        if (op.enable) both((s) => s.eng.splitEnableNotify(QS0));
        else both((s) => s.eng.splitDisableNotify(QS0));
        break;
      case 'corrupt':
        corrupted = true;
        for (const s of sides) s.rig.w8(s.ring.desc + (op.byte % (16 * size)), op.value);
        break;
    }
    both((s) => s.eng.splitAvailPending(QS0));
    compare();
  }
}

describe('packed ring: wasm engine vs TS model', () => {
  it('agree byte for byte on random workloads, sizes 1..9 and 256, many laps (wrap counters flip)', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(1, 2, 3, 5, 6, 7, 9, 256),
        fc.record({ eventIdx: fc.boolean(), inOrder: fc.boolean() }),
        fc.array(opArb, { minLength: 20, maxLength: 250 }),
        (size, f, ops) => {
          run(size, QF_INDIRECT | (f.eventIdx ? QF_EVENT_IDX : 0) | (f.inOrder ? QF_IN_ORDER : 0), ops);
        },
      ),
      { numRuns: 150 },
    );
  });

  it('agree on malicious rings: random corruption of descriptors and flags mid-run', () => {
    fc.assert(
      fc.property(
        fc.constantFrom(3, 5, 8),
        fc.array(opArb, { minLength: 5, maxLength: 60 }),
        fc.array(fc.tuple(fc.nat({ max: 60 }), corruptArb), { minLength: 1, maxLength: 4 }),
        fc.array(opArb, { minLength: 5, maxLength: 60 }),
        (size, before, corruptions, after) => {
          const ops = [...before];
          for (const [at, c] of corruptions) ops.splice(at % (ops.length + 1), 0, c);
          run(size, QF_INDIRECT | QF_EVENT_IDX, [...ops, ...after]);
        },
      ),
      { numRuns: 150 },
    );
  });

  it('a driver running many laps of a 7-slot ring sees every id back exactly once (wrap-around)', () => {
    const ops: Op[] = [];
    for (let lap = 0; lap < 60; lap++) {
      ops.push({ k: 'add', chain: { bufs: [{ write: false, len: 10, gpa: 0x10_0000n }, { write: true, len: 20, gpa: 0x1f_fff8n }], indirect: false } });
      ops.push({ k: 'add', chain: { bufs: [{ write: true, len: 30, gpa: 0x1_0010_0000n }], indirect: lap % 2 === 0 } });
      ops.push({ k: 'pop', max: 3, mode: lap % 3 === 0 ? 'push' : 'complete', seed: lap });
      ops.push({ k: 'finish', seed: lap });
    }
    run(7, QF_INDIRECT | QF_EVENT_IDX, ops);
  });
});
