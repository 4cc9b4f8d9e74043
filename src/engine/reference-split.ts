/**
 * Plain-TypeScript reference model of the device side of a split ring: the same semantics as the
 * AssemblyScript engine (assembly/split-ring.ts, region-table.ts, event-idx.ts, inflight-split.ts),
 * written for clarity on a DataView over the same memory layout (./layout.ts). It writes the same
 * bytes to the queue area, the used ring and the inflight area, so the property tests can compare
 * the two byte for byte, and it can stand in for the wasm engine (it implements SplitEngineApi).
 */
import {
  REGION_HDR_COUNT, REGION_HDR_SIZE, REGION_ENTRY_SIZE, REGION_GPA, REGION_SIZE, REGION_UVA, REGION_WASM,
  MAX_REGIONS, QS_SIZE_FIELD, QS_FEATURES, QS_DESC, QS_AVAIL, QS_USED, QS_REGIONS, QS_INFLIGHT, QS_ERROR,
  QS_LAST_AVAIL, QS_NEXT_USED, QS_SIGNALLED_USED, QS_SIGNALLED_VALID, QS_ERROR_DETAIL, QS_INFLIGHT_COUNTER,
  QS_PENDING, QS_STAT_CHAINS, QS_STAT_DESCS, QS_STAT_BATCHES, QS_STAT_NOTIFY, QS_STAT_SUPPRESSED,
  QS_STAT_BYTES_READ, QS_STAT_BYTES_WRITTEN, QF_EVENT_IDX, QF_INFLIGHT, CHAINS_OFFSET, CHAIN_BYTES, CHAIN_CAP,
  CH_HEAD, CH_SEG_START, CH_SEG_COUNT, CH_READ_LEN, CH_WRITE_LEN, CH_USED_LEN, SEGS_OFFSET, SEG_BYTES, SEG_CAP,
  SEG_ADDR, SEG_LEN, SEG_FLAGS, SEG_F_WRITE, ERR_AVAIL_IDX, ERR_HEAD_RANGE, ERR_NEXT_RANGE, ERR_CHAIN_LOOP,
  ERR_TRANSLATE, ERR_INDIRECT_LEN, ERR_INDIRECT_NESTED, ERR_WRITE_ORDER, ERR_INDIRECT_NEXT, ERR_SEGMENTS,
  ERR_CHAIN_BYTES, ERR_USED_ID, QUEUE_SIZE_MAX, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_INDIRECT,
  VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_USED_F_NO_NOTIFY, QF_PACKED,
} from './layout.js';
import type { SplitEngineApi } from './engine.js';
import { ReferencePackedRing } from './reference-packed.js';

// ---- split inflight region (A.10); the engine's assembly/layout.ts has the same values ----
export const INFL_HDR_BYTES = 16;
export const INFL_FEATURES = 0; // u64
export const INFL_VERSION = 8; // u16: 1, or 0 = uninitialised
export const INFL_DESC_NUM = 10; // u16
export const INFL_LAST_BATCH_HEAD = 12; // u16
export const INFL_USED_IDX = 14; // u16
export const INFL_DESC_BYTES = 16;
export const INFLD_INFLIGHT = 0; // u8
export const INFLD_NEXT = 6; // u16
export const INFLD_COUNTER = 8; // u64

/** Spare word of a chain record where both engines leave the number of descriptors walked. */
export const CH_DESC_COUNT = 24;
/** QS_ERROR_DETAIL when splitConfigure refused the configuration. */
export const DETAIL_CONFIG = 0xffff_ffff;

const U64 = (1n << 64n) - 1n;
const WASM_LIMIT = 1n << 32n;
const BYTES_MAX = 0xffff_ffff;
const NO_FIT = 0x100;

/** need_event (B.4) on u16 indices: notify iff oldIdx <= eventIdx < newIdx modulo 2^16. */
export function needEventRef(eventIdx: number, newIdx: number, oldIdx: number): number {
  return ((newIdx - eventIdx - 1) & 0xffff) < ((newIdx - oldIdx) & 0xffff) ? 1 : 0;
}

interface Walk {
  code: number; // 0, ERR_*, or NO_FIT
}

export class ReferenceSplitEngine implements SplitEngineApi {
  private dv: DataView;
  private u16: Uint16Array;
  private u32: Uint32Array;

  /** packed queues (QF_PACKED) go to the packed model: the entry points below dispatch on the format */
  private readonly packed: ReferencePackedRing;

  constructor(readonly memory: WebAssembly.Memory) {
    this.packed = new ReferencePackedRing(memory, (t, g) => this.findGpaRegion(t, g));
    this.dv = new DataView(memory.buffer);
    this.u16 = new Uint16Array(memory.buffer);
    this.u32 = new Uint32Array(memory.buffer);
  }

  /**
   * Views are fixed-length: take them again after memory.grow(). Checked once per call of the interface, not per
   * access: reading `buffer` of a shared Memory makes a new object each time (a third of a microsecond).
   */
  private sync(): void {
    const buffer = this.memory.buffer;
    if (this.dv.byteLength !== buffer.byteLength) {
      this.dv = new DataView(buffer);
      this.u16 = new Uint16Array(buffer);
      this.u32 = new Uint32Array(buffer);
    }
  }

  private v(): DataView {
    return this.dv;
  }

  // ---- little helpers (addresses are u32 wasm addresses) ----
  private r8(a: number): number { return this.v().getUint8(a >>> 0); }
  private r16(a: number): number { return this.v().getUint16(a >>> 0, true); }
  private r32(a: number): number { return this.v().getUint32(a >>> 0, true); }
  private r64(a: number): bigint { return this.v().getBigUint64(a >>> 0, true); }
  private w8(a: number, x: number): void { this.v().setUint8(a >>> 0, x); }
  private w16(a: number, x: number): void { this.v().setUint16(a >>> 0, x & 0xffff, true); }
  private w32(a: number, x: number): void { this.v().setUint32(a >>> 0, x >>> 0, true); }
  private w64(a: number, x: bigint): void { this.v().setBigUint64(a >>> 0, BigInt.asUintN(64, x), true); }
  private aload16(a: number): number { this.v(); return Atomics.load(this.u16, (a >>> 0) / 2); }
  private astore16(a: number, x: number): void { this.v(); Atomics.store(this.u16, (a >>> 0) / 2, x & 0xffff); }
  private fence(ownWord: number): void { this.v(); Atomics.add(this.u32, (ownWord >>> 0) / 4, 0); }
  private addStat(a: number, x: number | bigint): void { this.w64(a, this.r64(a) + BigInt(x)); }
  private setError(qs: number, code: number, detail: number): void {
    this.w32(qs + QS_ERROR_DETAIL, detail);
    this.w32(qs + QS_ERROR, code);
  }

  private isPacked(qs: number): boolean {
    return (this.r32(qs + QS_FEATURES) & QF_PACKED) !== 0;
  }

  /** PackedEngineApi.packedConfigure (reference model, without inflight tracking). */
  packedConfigure(
    qs: number, size: number, features: number, descAddr: number, drvEventAddr: number, devEventAddr: number,
    regionTable: number, inflightAddr: number, lastAvail: number, nextUsed: number,
  ): void {
    this.packed.configure(qs, size, features, descAddr, drvEventAddr, devEventAddr, regionTable, inflightAddr, lastAvail, nextUsed);
  }

  needEvent(eventIdx: number, newIdx: number, oldIdx: number): number {
    return needEventRef(eventIdx, newIdx, oldIdx);
  }

  // ---- region table ----
  private regionCount(table: number): number {
    return Math.min(this.r32(table + REGION_HDR_COUNT), MAX_REGIONS);
  }

  /** Entry address of the region whose GPA range holds gpa (and which fits in wasm32), or 0. */
  private findGpaRegion(table: number, gpa: bigint): number {
    const n = this.regionCount(table);
    for (let i = 0; i < n; i++) {
      const e = table + REGION_HDR_SIZE + i * REGION_ENTRY_SIZE;
      const size = this.r64(e + REGION_SIZE);
      // modulo 2^64, like the engine's u64 arithmetic (gpa below start wraps to a huge offset)
      if (BigInt.asUintN(64, gpa - this.r64(e + REGION_GPA)) < size) {
        const w = this.r64(e + REGION_WASM);
        if (w > WASM_LIMIT || size > WASM_LIMIT - w) return 0;
        return e;
      }
    }
    return 0;
  }

  private translateBy(table: number, key: number, addr: bigint, len: bigint): number {
    addr = BigInt.asUintN(64, addr);
    len = BigInt.asUintN(64, len);
    if (addr + len > U64) return 0;
    const n = this.regionCount(table);
    for (let i = 0; i < n; i++) {
      const e = table + REGION_HDR_SIZE + i * REGION_ENTRY_SIZE;
      const size = this.r64(e + REGION_SIZE);
      const off = BigInt.asUintN(64, addr - this.r64(e + key));
      if (off < size) {
        if (len > size - off) return 0;
        const w = this.r64(e + REGION_WASM);
        if (w > WASM_LIMIT || size > WASM_LIMIT - w) return 0;
        return Number(w + off);
      }
    }
    return 0;
  }

  translateGpa(regionTable: number, gpa: bigint, len: bigint): number {
    this.sync();
    return this.translateBy(regionTable, REGION_GPA, gpa, len);
  }

  translateUva(regionTable: number, uva: bigint, len: bigint): number {
    this.sync();
    return this.translateBy(regionTable, REGION_UVA, uva, len);
  }

  // ---- configuration ----
  splitConfigure(
    qs: number, size: number, features: number, descAddr: number, availAddr: number, usedAddr: number,
    regionTable: number, inflightAddr: number, lastAvail: number,
  ): void {
    this.sync();
    this.w32(qs + QS_SIZE_FIELD, size);
    this.w32(qs + QS_FEATURES, features);
    this.w32(qs + QS_DESC, descAddr);
    this.w32(qs + QS_AVAIL, availAddr);
    this.w32(qs + QS_USED, usedAddr);
    this.w32(qs + QS_REGIONS, regionTable);
    this.w32(qs + QS_INFLIGHT, inflightAddr);
    this.w16(qs + QS_LAST_AVAIL, lastAvail);
    this.w32(qs + QS_PENDING, 0);
    this.w16(qs + QS_SIGNALLED_USED, 0);
    this.w16(qs + QS_SIGNALLED_VALID, 0);
    this.w32(qs + QS_ERROR_DETAIL, 0);
    this.w32(qs + QS_ERROR, 0);
    size >>>= 0;
    const pow2 = size !== 0 && (size & (size - 1)) === 0;
    if (!pow2 || size > QUEUE_SIZE_MAX || descAddr === 0 || availAddr === 0 || usedAddr === 0 ||
      (descAddr & 15) !== 0 || (availAddr & 1) !== 0 || (usedAddr & 3) !== 0) {
      this.w16(qs + QS_NEXT_USED, 0);
      this.setError(qs, ERR_TRANSLATE, DETAIL_CONFIG);
      return;
    }
    this.w16(qs + QS_NEXT_USED, this.aload16(usedAddr + 2));
  }

  // ---- chain walk ----
  /**
   * Validate the chain at `head`, write its segments from segBase on (counting on past SEG_CAP
   * without writing) and, when it is good and fits, its chain record.
   */
  private walkChain(qs: number, head: number, rec: number, segBase: number): Walk {
    const size = this.r32(qs + QS_SIZE_FIELD);
    const regions = this.r32(qs + QS_REGIONS);
    const segs = qs + SEGS_OFFSET;
    let table = this.r32(qs + QS_DESC);
    let limit = size;
    let indirect = false;
    let i = head;
    let count = 0;
    let descs = 0;
    let seg = segBase;
    let readLen = 0;
    let writeLen = 0;
    let sawWrite = false;
    for (;;) {
      if (count >= limit) return { code: ERR_CHAIN_LOOP };
      count++;
      descs++;
      const d = table + i * 16;
      const addr = this.r64(d);
      const len = this.r32(d + 8);
      const flags = this.r16(d + 12);
      const next = this.r16(d + 14);
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (flags & VIRTQ_DESC_F_NEXT) return { code: ERR_INDIRECT_NEXT };
        if (indirect) return { code: ERR_INDIRECT_NESTED };
        if (len === 0 || len % 16 !== 0) return { code: ERR_INDIRECT_LEN };
        const t = this.translateGpa(regions, addr, BigInt(len));
        if (t === 0) return { code: ERR_TRANSLATE };
        table = t;
        limit = len / 16;
        indirect = true;
        i = 0;
        count = 0;
        continue;
      }
      const write = (flags & VIRTQ_DESC_F_WRITE) !== 0;
      if (write) sawWrite = true;
      else if (sawWrite) return { code: ERR_WRITE_ORDER };
      if (len !== 0) {
        if (write) {
          writeLen += len;
          if (writeLen > BYTES_MAX) return { code: ERR_CHAIN_BYTES };
        } else {
          readLen += len;
          if (readLen > BYTES_MAX) return { code: ERR_CHAIN_BYTES };
        }
        let gpa = addr;
        let rem = BigInt(len);
        if (gpa + rem > U64) return { code: ERR_TRANSLATE };
        while (rem !== 0n) {
          const e = this.findGpaRegion(regions, gpa);
          if (e === 0) return { code: ERR_TRANSLATE };
          const off = BigInt.asUintN(64, gpa - this.r64(e + REGION_GPA));
          const room = this.r64(e + REGION_SIZE) - off;
          const take = rem < room ? rem : room;
          if (seg < SEG_CAP) {
            const s = segs + seg * SEG_BYTES;
            this.w32(s + SEG_ADDR, Number(this.r64(e + REGION_WASM) + off));
            this.w32(s + SEG_LEN, Number(take));
            this.w32(s + SEG_FLAGS, write ? SEG_F_WRITE : 0);
          }
          seg++;
          gpa += take;
          rem -= take;
        }
      }
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) break;
      if (next >= limit) return { code: ERR_NEXT_RANGE };
      i = next;
    }
    if (seg > SEG_CAP) return { code: NO_FIT };
    this.w32(rec + CH_HEAD, head);
    this.w32(rec + CH_SEG_START, segBase);
    this.w32(rec + CH_SEG_COUNT, seg - segBase);
    this.w32(rec + CH_READ_LEN, readLen);
    this.w32(rec + CH_WRITE_LEN, writeLen);
    this.w32(rec + CH_USED_LEN, 0);
    this.w32(rec + CH_DESC_COUNT, descs);
    return { code: 0 };
  }

  private clampChains(n: number): number {
    return n <= 0 ? 0 : Math.min(n, CHAIN_CAP);
  }

  /** Shared loop of popBatch/popHeads. headAt(k) gives the k-th head to walk. */
  private popLoop(
    qs: number, want: number, headAt: (k: number) => number, onGood: (head: number) => void,
  ): { n: number; failed: number; descs: number; bytes: number } {
    const size = this.r32(qs + QS_SIZE_FIELD);
    let n = 0;
    let segUsed = 0;
    let descs = 0;
    let bytes = 0;
    let failed = 0;
    while (n < want) {
      const head = headAt(n);
      const rec = qs + CHAINS_OFFSET + n * CHAIN_BYTES;
      if (head >= size) {
        this.setError(qs, ERR_HEAD_RANGE, head);
        failed = ERR_HEAD_RANGE;
        break;
      }
      const r = this.walkChain(qs, head, rec, segUsed);
      if (r.code !== 0) {
        if (r.code === NO_FIT) {
          if (n !== 0) break;
          failed = ERR_SEGMENTS;
        } else {
          failed = r.code;
        }
        this.setError(qs, failed, head);
        break;
      }
      segUsed += this.r32(rec + CH_SEG_COUNT);
      descs += this.r32(rec + CH_DESC_COUNT);
      bytes += this.r32(rec + CH_READ_LEN);
      onGood(head);
      n++;
    }
    return { n, failed, descs, bytes };
  }

  private popStats(qs: number, n: number, descs: number, bytes: number): void {
    this.addStat(qs + QS_STAT_BATCHES, 1); // before chains, as the wasm engine does (stats.ts reads chains first)
    this.addStat(qs + QS_STAT_CHAINS, n);
    this.addStat(qs + QS_STAT_DESCS, descs);
    this.addStat(qs + QS_STAT_BYTES_READ, bytes);
  }

  splitPopBatch(qs: number, maxChains: number): number {
    this.sync();
    if (this.isPacked(qs)) return this.packed.popBatch(qs, maxChains);
    const err = this.r32(qs + QS_ERROR);
    if (err !== 0) return -err;
    const size = this.r32(qs + QS_SIZE_FIELD);
    const avail = this.r32(qs + QS_AVAIL);
    const lastAvail = this.r16(qs + QS_LAST_AVAIL);
    const availIdx = this.aload16(avail + 2); // B.5 row 1
    const pending = (availIdx - lastAvail) & 0xffff;
    if (pending > size) {
      this.setError(qs, ERR_AVAIL_IDX, availIdx);
      return -ERR_AVAIL_IDX;
    }
    const want = Math.min(this.clampChains(maxChains), pending);
    if (want === 0) return 0;
    const features = this.r32(qs + QS_FEATURES);
    const inflight = (features & QF_INFLIGHT) !== 0 ? this.r32(qs + QS_INFLIGHT) : 0;
    let counter = this.r64(qs + QS_INFLIGHT_COUNTER);
    const res = this.popLoop(
      qs, want,
      (k) => this.r16(avail + 4 + 2 * ((lastAvail + k) & (size - 1))),
      (head) => {
        if (inflight !== 0) {
          const d = inflight + INFL_HDR_BYTES + head * INFL_DESC_BYTES;
          this.w64(d + INFLD_COUNTER, counter);
          this.w8(d + INFLD_INFLIGHT, 1);
          counter = BigInt.asUintN(64, counter + 1n);
        }
      },
    );
    if (res.n === 0) return res.failed !== 0 ? -res.failed : 0;
    this.w16(qs + QS_LAST_AVAIL, lastAvail + res.n);
    this.w64(qs + QS_INFLIGHT_COUNTER, counter);
    this.popStats(qs, res.n, res.descs, res.bytes);
    return res.n;
  }

  splitPopHeads(qs: number, headsAddr: number, count: number): number {
    this.sync();
    if (this.isPacked(qs)) return this.r32(qs + QS_ERROR) !== 0 ? -this.r32(qs + QS_ERROR) : 0; // packed inflight is not modelled
    const err = this.r32(qs + QS_ERROR);
    if (err !== 0) return -err;
    const res = this.popLoop(qs, this.clampChains(count), (k) => this.r16(headsAddr + 2 * k), () => {});
    if (res.n === 0) return res.failed !== 0 ? -res.failed : 0;
    this.popStats(qs, res.n, res.descs, res.bytes);
    return res.n;
  }

  splitAvailPending(qs: number): number {
    this.sync();
    if (this.isPacked(qs)) return this.packed.availPending(qs);
    const err = this.r32(qs + QS_ERROR);
    if (err !== 0) return -err;
    const size = this.r32(qs + QS_SIZE_FIELD);
    const availIdx = this.aload16(this.r32(qs + QS_AVAIL) + 2);
    const pending = (availIdx - this.r16(qs + QS_LAST_AVAIL)) & 0xffff;
    if (pending > size) {
      this.setError(qs, ERR_AVAIL_IDX, availIdx);
      return -ERR_AVAIL_IDX;
    }
    return pending;
  }

  // ---- completion ----
  private inflightOf(qs: number): number {
    return (this.r32(qs + QS_FEATURES) & QF_INFLIGHT) !== 0 ? this.r32(qs + QS_INFLIGHT) : 0;
  }

  private writeUsed(qs: number, head: number, len: number): void {
    const size = this.r32(qs + QS_SIZE_FIELD);
    const nextUsed = this.r16(qs + QS_NEXT_USED);
    const e = this.r32(qs + QS_USED) + 4 + 8 * (nextUsed & (size - 1));
    this.w32(e, head);
    this.w32(e + 4, len);
    const inflight = this.inflightOf(qs);
    if (inflight !== 0) {
      // A.10 completion step 1: link into the last-batch list
      this.w16(inflight + INFL_HDR_BYTES + head * INFL_DESC_BYTES + INFLD_NEXT, this.r16(inflight + INFL_LAST_BATCH_HEAD));
      this.w16(inflight + INFL_LAST_BATCH_HEAD, head);
    }
    this.w16(qs + QS_NEXT_USED, nextUsed + 1);
    this.w32(qs + QS_PENDING, this.r32(qs + QS_PENDING) + 1);
    this.addStat(qs + QS_STAT_BYTES_WRITTEN, len >>> 0);
  }

  splitPushUsed(qs: number, head: number, len: number): number {
    this.sync();
    if (this.isPacked(qs)) return this.packed.pushUsed(qs, head, len);
    if (head >>> 0 >= this.r32(qs + QS_SIZE_FIELD)) return -ERR_USED_ID;
    this.writeUsed(qs, head >>> 0, len >>> 0);
    return 0;
  }

  splitPublish(qs: number): number {
    this.sync();
    if (this.isPacked(qs)) return this.packed.publish(qs);
    const pending = this.r32(qs + QS_PENDING);
    if (pending === 0) return 0;
    const size = this.r32(qs + QS_SIZE_FIELD);
    const used = this.r32(qs + QS_USED);
    const avail = this.r32(qs + QS_AVAIL);
    const features = this.r32(qs + QS_FEATURES);
    const nextUsed = this.r16(qs + QS_NEXT_USED);
    this.astore16(used + 2, nextUsed); // B.5 row 2
    this.w32(qs + QS_PENDING, 0);
    const inflight = (features & QF_INFLIGHT) !== 0 ? this.r32(qs + QS_INFLIGHT) : 0;
    if (inflight !== 0) {
      let h = this.r16(inflight + INFL_LAST_BATCH_HEAD);
      for (let k = 0; k < pending && h < size; k++) {
        const d = inflight + INFL_HDR_BYTES + h * INFL_DESC_BYTES;
        this.w8(d + INFLD_INFLIGHT, 0);
        h = this.r16(d + INFLD_NEXT);
      }
      this.w16(inflight + INFL_USED_IDX, nextUsed);
    }
    this.fence(qs + QS_PENDING); // B.5 row 3
    let notify: boolean;
    if (features & QF_EVENT_IDX) {
      const old = this.r16(qs + QS_SIGNALLED_USED);
      const valid = this.r16(qs + QS_SIGNALLED_VALID);
      this.w16(qs + QS_SIGNALLED_USED, nextUsed);
      this.w16(qs + QS_SIGNALLED_VALID, 1);
      const usedEvent = this.aload16(avail + 4 + 2 * size);
      notify = valid === 0 || needEventRef(usedEvent, nextUsed, old) === 1;
    } else {
      notify = (this.aload16(avail) & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
    }
    this.addStat(qs + (notify ? QS_STAT_NOTIFY : QS_STAT_SUPPRESSED), 1);
    return notify ? 1 : 0;
  }

  splitComplete(qs: number, n: number): number {
    this.sync();
    if (this.isPacked(qs)) return this.packed.complete(qs, n);
    const cnt = this.clampChains(n);
    const size = this.r32(qs + QS_SIZE_FIELD);
    for (let k = 0; k < cnt; k++) {
      const rec = qs + CHAINS_OFFSET + k * CHAIN_BYTES;
      const head = this.r32(rec + CH_HEAD);
      if (head >= size) continue;
      // the used length may underestimate what was written, never overestimate it (B.1)
      this.writeUsed(qs, head, Math.min(this.r32(rec + CH_USED_LEN), this.r32(rec + CH_WRITE_LEN)));
    }
    return this.splitPublish(qs);
  }

  splitDisableNotify(qs: number): void {
    this.sync();
    if (this.isPacked(qs)) return this.packed.disableNotify(qs);
    if (this.r32(qs + QS_FEATURES) & QF_EVENT_IDX) return;
    const used = this.r32(qs + QS_USED);
    this.astore16(used, this.aload16(used) | VIRTQ_USED_F_NO_NOTIFY);
  }

  splitEnableNotify(qs: number): number {
    this.sync();
    if (this.isPacked(qs)) return this.packed.enableNotify(qs);
    const size = this.r32(qs + QS_SIZE_FIELD);
    const used = this.r32(qs + QS_USED);
    const lastAvail = this.r16(qs + QS_LAST_AVAIL);
    if (this.r32(qs + QS_FEATURES) & QF_EVENT_IDX) this.astore16(used + 4 + 8 * size, lastAvail);
    else this.astore16(used, this.aload16(used) & ~VIRTQ_USED_F_NO_NOTIFY);
    this.fence(qs + QS_PENDING); // B.5 row 4
    return this.aload16(this.r32(qs + QS_AVAIL) + 2) !== lastAvail ? 1 : 0;
  }

  // ---- inflight (A.10) ----
  inflightSplitQueueBytes(queueSize: number): number {
    return ((queueSize * INFL_DESC_BYTES + INFL_HDR_BYTES + 63) & ~63) >>> 0;
  }

  inflightSplitInit(addr: number, queueSize: number): void {
    this.sync();
    this.v();
    new Uint8Array(this.memory.buffer, addr >>> 0, INFL_HDR_BYTES + queueSize * INFL_DESC_BYTES).fill(0);
    this.w16(addr + INFL_DESC_NUM, queueSize);
    this.w16(addr + INFL_VERSION, 1);
  }

  inflightSplitRecover(qs: number, outAddr: number): number {
    this.sync();
    const infl = this.r32(qs + QS_INFLIGHT);
    if (infl === 0) return 0;
    const size = this.r32(qs + QS_SIZE_FIELD);
    const usedIdx = this.aload16(this.r32(qs + QS_USED) + 2);
    if (this.r16(infl + INFL_VERSION) !== 1 || this.r16(infl + INFL_DESC_NUM) !== size) {
      this.inflightSplitInit(infl, size);
      this.w16(infl + INFL_USED_IDX, usedIdx);
      return 0;
    }
    const recorded = this.r16(infl + INFL_USED_IDX);
    if (recorded !== usedIdx) {
      const n = (usedIdx - recorded) & 0xffff;
      let h = this.r16(infl + INFL_LAST_BATCH_HEAD);
      for (let k = 0; k < n && h < size; k++) {
        const d = infl + INFL_HDR_BYTES + h * INFL_DESC_BYTES;
        this.w8(d + INFLD_INFLIGHT, 0);
        h = this.r16(d + INFLD_NEXT);
      }
      this.w16(infl + INFL_USED_IDX, usedIdx);
    }
    const found: { head: number; counter: bigint }[] = [];
    let next = this.r64(qs + QS_INFLIGHT_COUNTER);
    for (let h = 0; h < size; h++) {
      const d = infl + INFL_HDR_BYTES + h * INFL_DESC_BYTES;
      if (this.r8(d + INFLD_INFLIGHT) === 1) {
        const c = this.r64(d + INFLD_COUNTER);
        found.push({ head: h, counter: c });
        if (c >= next) next = BigInt.asUintN(64, c + 1n);
      }
    }
    this.w64(qs + QS_INFLIGHT_COUNTER, next);
    found.sort((a, b) => (a.counter < b.counter ? -1 : a.counter > b.counter ? 1 : a.head - b.head));
    found.forEach((f, k) => this.w16(outAddr + 2 * k, f.head));
    return found.length;
  }
}
