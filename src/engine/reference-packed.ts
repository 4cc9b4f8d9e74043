/**
 * Plain-TypeScript reference model of the device side of a packed ring (B.2): the semantics of
 * assembly/packed-ring.ts written for clarity on a DataView, producing the same bytes in the queue area and
 * the descriptor ring so the property tests can compare the two. ReferenceSplitEngine hands packed queues
 * (QF_PACKED) to it, so `--engine reference` runs packed rings too. Inflight tracking is not modelled: a
 * packed queue with QF_INFLIGHT is refused (ERR_TRANSLATE, detail 0xffffffff) by this model.
 */
import {
  QS_SIZE_FIELD, QS_FEATURES, QS_DESC, QS_AVAIL, QS_USED, QS_REGIONS, QS_INFLIGHT, QS_ERROR, QS_LAST_AVAIL,
  QS_NEXT_USED, QS_SIGNALLED_USED, QS_SIGNALLED_VALID, QS_ERROR_DETAIL, QS_PENDING, QS_PK_BATCH,
  QS_PK_BATCH_FLAGS, QS_STAT_CHAINS, QS_STAT_DESCS, QS_STAT_BATCHES, QS_STAT_NOTIFY, QS_STAT_SUPPRESSED,
  QS_STAT_BYTES_READ, QS_STAT_BYTES_WRITTEN, QF_EVENT_IDX, QF_INFLIGHT, QF_PACKED, QF_IN_ORDER, CHAINS_OFFSET,
  CHAIN_BYTES, CHAIN_CAP, CH_HEAD, CH_SEG_START, CH_SEG_COUNT, CH_READ_LEN, CH_WRITE_LEN, CH_USED_LEN,
  SEGS_OFFSET, SEG_BYTES, SEG_CAP, SEG_ADDR, SEG_LEN, SEG_FLAGS, SEG_F_WRITE, REGION_GPA, REGION_SIZE,
  REGION_WASM, PACKED_TOKEN_SLOTS_SHIFT, ERR_HEAD_RANGE, ERR_CHAIN_LOOP, ERR_TRANSLATE, ERR_INDIRECT_LEN,
  ERR_INDIRECT_NESTED, ERR_WRITE_ORDER, ERR_INDIRECT_NEXT, ERR_SEGMENTS, ERR_CHAIN_BYTES, ERR_USED_ID,
  ERR_DESC_FLAGS, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_AVAIL,
  VIRTQ_DESC_F_USED, RING_EVENT_FLAGS_ENABLE, RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_DESC, QUEUE_SIZE_MAX,
} from './layout.js';
import { CH_DESC_COUNT, DETAIL_CONFIG, needEventRef } from './reference-split.js';

const BYTES_MAX = 0xffff_ffff;

/** A ring position `index | wrap << 15` as a pair. */
interface Pos { i: number; w: number }
const pos = (p: number): Pos => ({ i: p & 0x7fff, w: p >>> 15 });
const enc = (p: Pos): number => p.i | (p.w << 15);
function advance(p: number, n: number, size: number): number {
  let { i, w } = pos(p);
  i += n;
  if (i >= size) {
    i -= size;
    w ^= 1;
  }
  return enc({ i, w });
}
/** B.2: a descriptor is available to a device expecting wrap counter w iff AVAIL == w and USED != w. */
function isAvailable(flags: number, w: number): boolean {
  return ((flags & VIRTQ_DESC_F_AVAIL) !== 0 ? 1 : 0) === w && ((flags & VIRTQ_DESC_F_USED) !== 0 ? 1 : 0) !== w;
}

interface Buf { addr: bigint; len: number; write: boolean }
interface Emit { seg: number; read: number; write: number; sawWrite: boolean }
type Walked = { code: 0; id: number; slots: number; descs: number; seg: number; read: number; write: number } | { code: number };
/** walk result: the chain does not fit into the segments left in this batch */
const NO_FIT = 0x100;

export class ReferencePackedRing {
  private dv: DataView;

  constructor(readonly memory: WebAssembly.Memory, private readonly findGpaRegion: (table: number, gpa: bigint) => number) {
    this.dv = new DataView(memory.buffer);
  }

  private v(): DataView {
    if (this.dv.byteLength !== this.memory.buffer.byteLength) this.dv = new DataView(this.memory.buffer);
    return this.dv;
  }
  private r16(a: number): number { return this.v().getUint16(a >>> 0, true); }
  private r32(a: number): number { return this.v().getUint32(a >>> 0, true); }
  private r64(a: number): bigint { return this.v().getBigUint64(a >>> 0, true); }
  private w16(a: number, x: number): void { this.v().setUint16(a >>> 0, x & 0xffff, true); }
  private w32(a: number, x: number): void { this.v().setUint32(a >>> 0, x >>> 0, true); }
  private w64(a: number, x: bigint): void { this.v().setBigUint64(a >>> 0, BigInt.asUintN(64, x), true); }
  private addStat(a: number, x: number | bigint): void { this.w64(a, this.r64(a) + BigInt(x)); }
  private setError(qs: number, code: number, detail: number): void {
    this.w32(qs + QS_ERROR_DETAIL, detail);
    this.w32(qs + QS_ERROR, code);
  }
  private translate(table: number, gpa: bigint, len: number): number {
    const e = this.findGpaRegion(table, gpa);
    if (e === 0) return 0;
    const off = gpa - this.r64(e + REGION_GPA);
    if (BigInt(len) > this.r64(e + REGION_SIZE) - off) return 0;
    return Number(this.r64(e + REGION_WASM) + off);
  }

  configure(
    qs: number, size: number, features: number, desc: number, drvEvent: number, devEvent: number,
    regionTable: number, inflight: number, lastAvail: number, nextUsed: number,
  ): void {
    this.w32(qs + QS_SIZE_FIELD, size);
    this.w32(qs + QS_FEATURES, features | QF_PACKED);
    this.w32(qs + QS_DESC, desc);
    this.w32(qs + QS_AVAIL, drvEvent);
    this.w32(qs + QS_USED, devEvent);
    this.w32(qs + QS_REGIONS, regionTable);
    this.w32(qs + QS_INFLIGHT, inflight);
    this.w16(qs + QS_LAST_AVAIL, lastAvail);
    this.w16(qs + QS_NEXT_USED, nextUsed);
    this.w32(qs + QS_PENDING, 0);
    this.w16(qs + QS_SIGNALLED_USED, 0);
    this.w16(qs + QS_SIGNALLED_VALID, 0);
    this.w32(qs + QS_ERROR_DETAIL, 0);
    this.w32(qs + QS_ERROR, 0);
    const bad = size < 1 || size > QUEUE_SIZE_MAX || desc === 0 || drvEvent === 0 || devEvent === 0 ||
      desc % 16 !== 0 || drvEvent % 4 !== 0 || devEvent % 4 !== 0 ||
      (lastAvail & 0x7fff) >= size || (nextUsed & 0x7fff) >= size;
    if (bad || (features & QF_INFLIGHT) !== 0) this.setError(qs, ERR_TRANSLATE, DETAIL_CONFIG);
  }

  /**
   * Walk the chain whose head is at position p, checking each descriptor and writing its segments from segBase
   * on as it goes (so the first broken rule in ring order is the one reported, as in the engine).
   */
  private walk(qs: number, p: number, segBase: number): Walked {
    const size = this.r32(qs + QS_SIZE_FIELD);
    const ring = this.r32(qs + QS_DESC);
    const regions = this.r32(qs + QS_REGIONS);
    let { i, w } = pos(p);
    const st: Emit = { seg: segBase, read: 0, write: 0, sawWrite: false };
    let slots = 0;
    let descs = 0;
    let id = 0;
    for (;;) {
      if (slots >= size) return { code: ERR_CHAIN_LOOP };
      const d = ring + 16 * i;
      const flags = this.r16(d + 14);
      if (slots > 0 && !isAvailable(flags, w)) return { code: ERR_DESC_FLAGS };
      slots++;
      descs++;
      id = this.r16(d + 12);
      const addr = this.r64(d);
      const len = this.r32(d + 8);
      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (flags & VIRTQ_DESC_F_NEXT) return { code: ERR_INDIRECT_NEXT };
        const n = len / 16;
        if (len === 0 || len % 16 !== 0 || n > QUEUE_SIZE_MAX) return { code: ERR_INDIRECT_LEN };
        const t = this.translate(regions, addr, len);
        if (t === 0) return { code: ERR_TRANSLATE };
        for (let k = 0; k < n; k++) {
          const e = t + 16 * k;
          const ef = this.r16(e + 14);
          if (ef & VIRTQ_DESC_F_INDIRECT) return { code: ERR_INDIRECT_NESTED };
          if ((ef & VIRTQ_DESC_F_NEXT) !== 0 && k === n - 1) return { code: ERR_INDIRECT_NEXT };
          descs++;
          const code = this.emit(qs, { addr: this.r64(e), len: this.r32(e + 8), write: (ef & VIRTQ_DESC_F_WRITE) !== 0 }, st);
          if (code !== 0) return { code };
        }
        break;
      }
      const code = this.emit(qs, { addr, len, write: (flags & VIRTQ_DESC_F_WRITE) !== 0 }, st);
      if (code !== 0) return { code };
      if ((flags & VIRTQ_DESC_F_NEXT) === 0) break;
      i++;
      if (i === size) {
        i = 0;
        w ^= 1;
      }
    }
    if (id >= size) return { code: ERR_HEAD_RANGE };
    if (st.seg > SEG_CAP) return { code: NO_FIT };
    return { code: 0, id, slots, descs, seg: st.seg, read: st.read, write: st.write };
  }

  /** One buffer: write order, byte totals, segments (counted but not written past SEG_CAP). 0 or ERR_*. */
  private emit(qs: number, b: Buf, st: Emit): number {
    const regions = this.r32(qs + QS_REGIONS);
    if (!b.write && st.sawWrite) return ERR_WRITE_ORDER;
    if (b.write) st.sawWrite = true;
    if (b.len === 0) return 0;
    if ((b.write ? st.write : st.read) + b.len > BYTES_MAX) return ERR_CHAIN_BYTES;
    let gpa = b.addr;
    let rem = BigInt(b.len);
    if (gpa + rem > (1n << 64n) - 1n) return ERR_TRANSLATE;
    while (rem > 0n) {
      const e = this.findGpaRegion(regions, gpa);
      if (e === 0) return ERR_TRANSLATE;
      const off = gpa - this.r64(e + REGION_GPA);
      const room = this.r64(e + REGION_SIZE) - off;
      const take = rem < room ? rem : room;
      if (st.seg < SEG_CAP) {
        const s = qs + SEGS_OFFSET + st.seg * SEG_BYTES;
        this.w32(s + SEG_ADDR, Number(this.r64(e + REGION_WASM) + off));
        this.w32(s + SEG_LEN, Number(take));
        this.w32(s + SEG_FLAGS, b.write ? SEG_F_WRITE : 0);
      }
      st.seg++;
      gpa += take;
      rem -= take;
    }
    if (b.write) {
      st.write += b.len;
    } else {
      st.read += b.len;
    }
    return 0;
  }

  popBatch(qs: number, maxChains: number): number {
    // a queue the wasm engine configured with packed inflight records: this model keeps none, so it refuses to run
    if ((this.r32(qs + QS_FEATURES) & QF_INFLIGHT) !== 0 && this.r32(qs + QS_ERROR) === 0) this.setError(qs, ERR_TRANSLATE, DETAIL_CONFIG);
    const err = this.r32(qs + QS_ERROR);
    if (err !== 0) return -err;
    const want = Math.min(Math.max(maxChains | 0, 0), CHAIN_CAP);
    if (want === 0) return 0;
    const size = this.r32(qs + QS_SIZE_FIELD);
    const ring = this.r32(qs + QS_DESC);
    let p = this.r16(qs + QS_LAST_AVAIL);
    let n = 0;
    let segUsed = 0;
    let descs = 0;
    let bytes = 0;
    let failed = 0;
    while (n < want) {
      if (!isAvailable(this.r16(ring + 16 * pos(p).i + 14), pos(p).w)) break;
      const rec = qs + CHAINS_OFFSET + n * CHAIN_BYTES;
      const c = this.walk(qs, p, segUsed);
      if (c.code !== 0) {
        let code = c.code;
        if (code === NO_FIT) {
          if (n !== 0) break;
          code = ERR_SEGMENTS;
        }
        failed = code;
        this.setError(qs, code, pos(p).i);
        break;
      }
      const ok = c as Extract<Walked, { code: 0 }>;
      this.w32(rec + CH_HEAD, (ok.id | (ok.slots << PACKED_TOKEN_SLOTS_SHIFT)) >>> 0);
      this.w32(rec + CH_SEG_START, segUsed);
      this.w32(rec + CH_SEG_COUNT, ok.seg - segUsed);
      this.w32(rec + CH_READ_LEN, ok.read);
      this.w32(rec + CH_WRITE_LEN, ok.write);
      this.w32(rec + CH_USED_LEN, 0);
      this.w32(rec + CH_DESC_COUNT, ok.descs);
      segUsed = ok.seg;
      descs += ok.descs;
      bytes += ok.read;
      p = advance(p, ok.slots, size);
      n++;
    }
    if (n === 0) return failed !== 0 ? -failed : 0;
    this.w16(qs + QS_LAST_AVAIL, p);
    this.addStat(qs + QS_STAT_BATCHES, 1); // before chains, as the wasm engine does (stats.ts reads chains first)
    this.addStat(qs + QS_STAT_CHAINS, n);
    this.addStat(qs + QS_STAT_DESCS, descs);
    this.addStat(qs + QS_STAT_BYTES_READ, bytes);
    return n;
  }

  availPending(qs: number): number {
    const err = this.r32(qs + QS_ERROR);
    if (err !== 0) return -err;
    const p = pos(this.r16(qs + QS_LAST_AVAIL));
    return isAvailable(this.r16(this.r32(qs + QS_DESC) + 16 * p.i + 14), p.w) ? 1 : 0;
  }

  private writeUsed(qs: number, id: number, slots: number, len: number): void {
    const size = this.r32(qs + QS_SIZE_FIELD);
    const p = this.r16(qs + QS_NEXT_USED);
    const d = this.r32(qs + QS_DESC) + 16 * pos(p).i;
    this.w32(d + 8, len);
    this.w16(d + 12, id);
    const flags = (pos(p).w ? VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED : 0) | (len !== 0 ? VIRTQ_DESC_F_WRITE : 0);
    const pending = this.r32(qs + QS_PENDING);
    // the first used descriptor of a batch becomes visible last, at publish
    if (pending === 0) {
      this.w16(qs + QS_PK_BATCH, p);
      this.w16(qs + QS_PK_BATCH_FLAGS, flags);
    } else {
      this.w16(d + 14, flags);
    }
    this.w16(qs + QS_NEXT_USED, advance(p, slots, size));
    this.w32(qs + QS_PENDING, pending + 1);
  }

  pushUsed(qs: number, token: number, len: number): number {
    const size = this.r32(qs + QS_SIZE_FIELD);
    const id = token & 0xffff;
    const slots = token >>> PACKED_TOKEN_SLOTS_SHIFT;
    if (id >= size || slots === 0 || slots > size) return -ERR_USED_ID;
    this.writeUsed(qs, id, slots, len >>> 0);
    this.addStat(qs + QS_STAT_BYTES_WRITTEN, len >>> 0);
    return 0;
  }

  publish(qs: number): number {
    const pending = this.r32(qs + QS_PENDING);
    if (pending === 0) return 0;
    const size = this.r32(qs + QS_SIZE_FIELD);
    const features = this.r32(qs + QS_FEATURES);
    const batch = this.r16(qs + QS_PK_BATCH);
    this.w16(this.r32(qs + QS_DESC) + 16 * pos(batch).i + 14, this.r16(qs + QS_PK_BATCH_FLAGS));
    this.w32(qs + QS_PENDING, 0);
    const nextUsed = this.r16(qs + QS_NEXT_USED);
    const drv = this.r32(qs + QS_AVAIL);
    const evFlags = this.r16(drv + 2) & 3;
    let notify: boolean;
    const eventIdx = (features & QF_EVENT_IDX) !== 0;
    if (!eventIdx || evFlags !== RING_EVENT_FLAGS_DESC) {
      notify = evFlags !== RING_EVENT_FLAGS_DISABLE;
      if (eventIdx) {
        this.w16(qs + QS_SIGNALLED_USED, nextUsed);
        this.w16(qs + QS_SIGNALLED_VALID, 1);
      }
    } else {
      const old = this.r16(qs + QS_SIGNALLED_USED);
      const valid = this.r16(qs + QS_SIGNALLED_VALID);
      this.w16(qs + QS_SIGNALLED_USED, nextUsed);
      this.w16(qs + QS_SIGNALLED_VALID, 1);
      if (valid === 0) notify = true;
      else {
        // DPDK vhost_vring_call_packed: indices of the previous lap count as one ring size lower
        const nw = pos(nextUsed).i;
        let o = pos(old).i;
        if (nw <= o) o -= size;
        const offWrap = this.r16(drv);
        let off = offWrap & 0x7fff;
        if (offWrap >>> 15 !== pos(nextUsed).w) off -= size;
        notify = needEventRef(off & 0xffff, nw, o & 0xffff) === 1;
      }
    }
    this.addStat(qs + (notify ? QS_STAT_NOTIFY : QS_STAT_SUPPRESSED), 1);
    return notify ? 1 : 0;
  }

  complete(qs: number, n: number): number {
    const cnt = Math.min(Math.max(n | 0, 0), CHAIN_CAP);
    const size = this.r32(qs + QS_SIZE_FIELD);
    const inOrder = (this.r32(qs + QS_FEATURES) & QF_IN_ORDER) !== 0;
    let bytes = 0;
    let runSlots = 0;
    for (let k = 0; k < cnt; k++) {
      const rec = qs + CHAINS_OFFSET + k * CHAIN_BYTES;
      const token = this.r32(rec + CH_HEAD);
      const id = token & 0xffff;
      const slots = token >>> PACKED_TOKEN_SLOTS_SHIFT;
      if (id >= size || slots === 0 || slots > size) continue;
      const len = Math.min(this.r32(rec + CH_USED_LEN), this.r32(rec + CH_WRITE_LEN));
      bytes += len;
      if (inOrder) {
        // one used descriptor for a run of chains that wrote nothing, ended by one that may have
        runSlots += slots;
        if (len === 0 && k + 1 < cnt) continue;
        this.writeUsed(qs, id, runSlots, len);
        runSlots = 0;
        continue;
      }
      this.writeUsed(qs, id, slots, len);
    }
    if (cnt !== 0) this.addStat(qs + QS_STAT_BYTES_WRITTEN, bytes);
    return this.publish(qs);
  }

  disableNotify(qs: number): void {
    this.w16(this.r32(qs + QS_USED) + 2, RING_EVENT_FLAGS_DISABLE);
  }

  enableNotify(qs: number): number {
    const dev = this.r32(qs + QS_USED);
    const p = this.r16(qs + QS_LAST_AVAIL);
    if (this.r32(qs + QS_FEATURES) & QF_EVENT_IDX) {
      this.w16(dev, p);
      this.w16(dev + 2, RING_EVENT_FLAGS_DESC);
    } else {
      this.w16(dev + 2, RING_EVENT_FLAGS_ENABLE);
    }
    return isAvailable(this.r16(this.r32(qs + QS_DESC) + 16 * pos(p).i + 14), pos(p).w) ? 1 : 0;
  }
}

