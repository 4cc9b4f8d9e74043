/** Split inflight I/O tracking (A.10): records on pop, batch linking on completion, reconnect recovery. */
import { describe, it, expect } from 'vitest';
import {
  REGION_TABLE, QF_INFLIGHT, QF_INDIRECT, INFLIGHT_AREA, QS_INFLIGHT_COUNTER, QS_LAST_AVAIL,
} from '../../src/engine/layout.js';
import {
  ReferenceSplitEngine, INFL_HDR_BYTES, INFL_VERSION, INFL_DESC_NUM, INFL_LAST_BATCH_HEAD, INFL_USED_IDX,
  INFL_DESC_BYTES, INFLD_INFLIGHT, INFLD_NEXT, INFLD_COUNTER,
} from '../../src/engine/reference-split.js';
import type { SplitEngineApi } from '../../src/engine/engine.js';
import { Rig, TestRing, QS0, F_NEXT, F_WRITE, readChains, setUsedLen } from './helpers.js';

const DATA = 0x10_0000n;
const N = 16;
const INF = INFLIGHT_AREA;
const OUT = INFLIGHT_AREA + 0x10_0000; // scratch for recovered heads

const d = (h: number): number => INF + INFL_HDR_BYTES + h * INFL_DESC_BYTES;

describe('split inflight records (A.10)', () => {
  const rig = new Rig();
  const ref = new ReferenceSplitEngine(rig.memory);
  const inflight = (h: number): number => rig.r8(d(h) + INFLD_INFLIGHT);
  const counter = (h: number): bigint => rig.r64(d(h) + INFLD_COUNTER);

  function setup(eng: SplitEngineApi, start = 0): TestRing {
    rig.reset();
    rig.u8.fill(0, INF, INF + 0x20_0000);
    rig.setRegions();
    const ring = new TestRing(rig, N);
    for (let i = 0; i < N; i++) ring.setDesc(i, { addr: DATA + BigInt(i * 64), len: 64, flags: i % 3 === 0 ? F_WRITE : 0, next: 0 });
    ring.setDesc(3, { addr: DATA + 0x1000n, len: 10, flags: F_NEXT, next: 4 }); // a 2-descriptor chain at head 3
    ring.availIdx = start;
    ring.usedIdx = start;
    eng.inflightSplitInit(INF, N);
    eng.splitConfigure(QS0, N, QF_INFLIGHT | QF_INDIRECT, ring.desc, ring.avail, ring.used, REGION_TABLE, INF, start);
    return ring;
  }

  /** A back-end restart: a fresh queue state (counter 0) on the same rings and inflight area. */
  function reconnect(eng: SplitEngineApi, ring: TestRing, lastAvail: number): void {
    rig.u8.fill(0, QS0, QS0 + 0x4_0000);
    eng.splitConfigure(QS0, N, QF_INFLIGHT | QF_INDIRECT, ring.desc, ring.avail, ring.used, REGION_TABLE, INF, lastAvail);
  }
  const heads = (n: number): number[] => Array.from({ length: n }, (_, k) => rig.r16(OUT + 2 * k));

  it('inflightSplitQueueBytes is align64(16 N + 16), equal to libvhost-user align64(16 N + 2) for N >= 4', () => {
    for (let n = 4; n <= 32768; n *= 2) {
      expect(rig.e.inflightSplitQueueBytes(n)).toBe(Math.ceil((16 * n + 16) / 64) * 64);
      expect(rig.e.inflightSplitQueueBytes(n)).toBe(Math.ceil((16 * n + 2) / 64) * 64);
      expect(ref.inflightSplitQueueBytes(n)).toBe(rig.e.inflightSplitQueueBytes(n));
    }
    expect(rig.e.inflightSplitQueueBytes(1)).toBe(64);
  });

  for (const name of ['wasm', 'reference'] as const) {
    const E = (): SplitEngineApi => (name === 'wasm' ? rig.e : ref);

    it(`init writes version 1 and desc_num, everything else zero [${name}]`, () => {
      rig.u8.fill(0xff, INF, INF + 16 + 16 * N + 64);
      E().inflightSplitInit(INF, N);
      expect(rig.r16(INF + INFL_VERSION)).toBe(1);
      expect(rig.r16(INF + INFL_DESC_NUM)).toBe(N);
      expect(rig.r64(INF)).toBe(0n);
      expect([rig.r16(INF + INFL_LAST_BATCH_HEAD), rig.r16(INF + INFL_USED_IDX)]).toEqual([0, 0]);
      expect(rig.u8.subarray(d(0), d(N)).every((b) => b === 0)).toBe(true);
      expect(rig.r8(d(N))).toBe(0xff); // nothing past the area
    });

    it(`a pop records counter (fetch order) then inflight = 1 for each head; completion links the batch and clears it [${name}]`, () => {
      const eng = E();
      const ring = setup(eng, 0xfffe);
      ring.publish(5, 3, 9);
      expect(eng.splitPopBatch(QS0, 2)).toBe(2);
      expect(eng.splitPopBatch(QS0, 2)).toBe(1);
      expect([inflight(5), inflight(3), inflight(9), inflight(4)]).toEqual([1, 1, 1, 0]);
      expect([counter(5), counter(3), counter(9)]).toEqual([0n, 1n, 2n]);
      expect(rig.r64(QS0 + QS_INFLIGHT_COUNTER)).toBe(3n);
      // out-of-order completion of 9 then 5, in one batch
      expect(eng.splitPushUsed(QS0, 9, 1)).toBe(0);
      expect(eng.splitPushUsed(QS0, 5, 2)).toBe(0);
      expect(rig.r16(INF + INFL_LAST_BATCH_HEAD)).toBe(5); // step 1 before the used.idx store
      expect(rig.r16(d(5) + INFLD_NEXT)).toBe(9);
      expect(inflight(9)).toBe(1);
      expect(rig.r16(INF + INFL_USED_IDX)).toBe(0);
      eng.splitPublish(QS0);
      expect(ring.usedIdx).toBe(0);
      expect([inflight(5), inflight(3), inflight(9)]).toEqual([0, 1, 0]);
      expect(rig.r16(INF + INFL_USED_IDX)).toBe(0); // 0xfffe + 2 wrapped
      expect(eng.inflightSplitRecover(QS0, OUT)).toBe(1);
      expect(heads(1)).toEqual([3]);
    });

    it(`recovery repairs a batch whose used.idx was published before its inflight flags were cleared [${name}]`, () => {
      const eng = E();
      const ring = setup(eng, 100);
      ring.publish(1, 2, 6, 7, 8);
      expect(eng.splitPopBatch(QS0, 8)).toBe(5);
      // first batch fully committed: 7
      eng.splitPushUsed(QS0, 7, 0);
      eng.splitPublish(QS0);
      // second batch 2, 8: crash after step 2 (used.idx stored), before steps 3-4
      const snapshot = rig.copy(INF, 16 + 16 * N);
      eng.splitPushUsed(QS0, 2, 0);
      eng.splitPushUsed(QS0, 8, 0);
      const linked = rig.copy(INF, 16 + 16 * N);
      eng.splitPublish(QS0);
      expect(ring.usedIdx).toBe(103);
      rig.u8.set(linked, INF); // as if steps 3 and 4 never ran
      expect(rig.r16(INF + INFL_USED_IDX)).toBe(101);
      expect([inflight(2), inflight(8)]).toEqual([1, 1]);
      reconnect(eng, ring, 105);
      expect(eng.inflightSplitRecover(QS0, OUT)).toBe(2);
      expect(heads(2)).toEqual([1, 6]); // 2 and 8 were completed; 1 and 6 by counter
      expect(rig.r16(INF + INFL_USED_IDX)).toBe(103);
      expect([inflight(2), inflight(8), inflight(7)]).toEqual([0, 0, 0]);
      expect(rig.r64(QS0 + QS_INFLIGHT_COUNTER)).toBe(3n); // continues after the largest counter still inflight (6 had 2)
      expect(snapshot.length).toBeGreaterThan(0);
    });

    it(`a batch that crashed before its used.idx store is resubmitted whole [${name}]`, () => {
      const eng = E();
      const ring = setup(eng);
      ring.publish(0, 1, 2);
      expect(eng.splitPopBatch(QS0, 8)).toBe(3);
      eng.splitPushUsed(QS0, 1, 0); // linked, never published
      reconnect(eng, ring, 3);
      expect(eng.inflightSplitRecover(QS0, OUT)).toBe(3);
      expect(heads(3)).toEqual([0, 1, 2]);
      expect(ring.usedIdx).toBe(0);
    });

    it(`resubmission comes sorted by counter and splitPopHeads rebuilds the same chains without consuming avail entries [${name}]`, () => {
      const eng = E();
      const ring = setup(eng, 0xfff0);
      const order = [12, 3, 7, 0, 15, 9, 10, 6];
      ring.publish(...order);
      expect(eng.splitPopBatch(QS0, 3)).toBe(3);
      const first = readChains(rig, QS0, 3);
      expect(eng.splitPopBatch(QS0, 16)).toBe(5);
      const second = readChains(rig, QS0, 5);
      const original = new Map([...first, ...second].map((c) => [c.head, c]));
      // complete 7 and 15 out of order
      eng.splitPushUsed(QS0, 15, 0);
      eng.splitPushUsed(QS0, 7, 0);
      eng.splitPublish(QS0);
      // 'counter' order must win over head order: shuffle the counters' relation to head numbers
      reconnect(eng, ring, (0xfff0 + 8) & 0xffff);
      const n = eng.inflightSplitRecover(QS0, OUT);
      const want = order.filter((h) => h !== 7 && h !== 15);
      expect(n).toBe(want.length);
      expect(heads(n)).toEqual(want);
      const lastAvail = rig.r16(QS0 + QS_LAST_AVAIL);
      expect(eng.splitPopHeads(QS0, OUT, n)).toBe(n);
      expect(rig.r16(QS0 + QS_LAST_AVAIL)).toBe(lastAvail);
      const rebuilt = readChains(rig, QS0, n);
      expect(rebuilt.map((c) => c.head)).toEqual(want);
      for (const c of rebuilt) expect(c.segs).toEqual(original.get(c.head)?.segs);
      // completing the resubmitted chains clears their records
      for (let k = 0; k < n; k++) setUsedLen(rig, QS0, k, 0);
      eng.splitComplete(QS0, n);
      expect(eng.inflightSplitRecover(QS0, OUT)).toBe(0);
      // new pops continue after the recovered counters
      expect(rig.r64(QS0 + QS_INFLIGHT_COUNTER)).toBe(8n);
    });

    it(`an uninitialised area (version 0) or one for another queue size is reset and reported empty [${name}]`, () => {
      const eng = E();
      const ring = setup(eng, 77);
      rig.w16(INF + INFL_VERSION, 0);
      rig.w8(d(3) + INFLD_INFLIGHT, 1);
      expect(eng.inflightSplitRecover(QS0, OUT)).toBe(0);
      expect(rig.r16(INF + INFL_VERSION)).toBe(1);
      expect(rig.r16(INF + INFL_USED_IDX)).toBe(77);
      expect(inflight(3)).toBe(0);
      rig.w16(INF + INFL_DESC_NUM, N * 2);
      rig.w8(d(3) + INFLD_INFLIGHT, 1);
      expect(eng.inflightSplitRecover(QS0, OUT)).toBe(0);
      expect(rig.r16(INF + INFL_DESC_NUM)).toBe(N);
      expect(ring.size).toBe(N);
    });

    it(`without QF_INFLIGHT nothing is recorded [${name}]`, () => {
      const eng = E();
      const ring = setup(eng);
      eng.splitConfigure(QS0, N, 0, ring.desc, ring.avail, ring.used, REGION_TABLE, INF, 0);
      const before = rig.copy(INF, 16 + 16 * N);
      ring.publish(1, 2);
      expect(eng.splitPopBatch(QS0, 8)).toBe(2);
      expect(eng.splitComplete(QS0, 2)).toBe(1);
      expect(rig.same(INF, before)).toBe(true);
    });
  }
});
