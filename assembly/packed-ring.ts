// Device side of a packed virtqueue (B.2), with the same shape as split-ring.ts for the hot path's
// callers: chains are handed out as chain records and segments, completions come back through
// packedPushUsed / packedComplete and go to the driver with packedPublish. The split entry points
// dispatch here when the queue was configured by packedConfigure (QF_PACKED), so workers and devices
// never know the ring format.
//
// Positions (next avail, next used) are `index | wrap << 15`, the vhost-user vring base encoding.
// A chain's token (CH_HEAD, pushUsed's head) is `buffer id | slots << 16`: the driver advances its used
// position by the chain's slot count, so the device must too (one used descriptor per chain).
//
// Memory ordering (B.5), wasm atomics being sequentially consistent:
//   row 5: atomic.load of the head descriptor's flags before reading the chain
//   row 6: used descriptors with plain stores, except the flags of the batch's FIRST used descriptor,
//          stored last with one atomic.store at publish: the driver polls that slot first
//   rows 3/4: a full fence before reading the driver's event suppression / re-reading the ring

import { addStat, countNotify } from './counters';
import { initQueueState } from './queue-state';
import {
  QS_SIZE_FIELD, QS_FEATURES, QS_DESC, QS_AVAIL, QS_USED, QS_REGIONS, QS_INFLIGHT, QS_ERROR, QS_LAST_AVAIL,
  QS_NEXT_USED, QS_SIGNALLED_USED, QS_SIGNALLED_VALID, QS_ERROR_DETAIL, QS_PENDING, QS_PK_BATCH,
  QS_PK_BATCH_FLAGS, QS_STAT_CHAINS, QS_STAT_DESCS, QS_STAT_BATCHES,
  QS_STAT_BYTES_READ, QS_STAT_BYTES_WRITTEN, QF_EVENT_IDX, QF_INFLIGHT, QF_PACKED, QF_IN_ORDER,
  CHAINS_OFFSET, CHAIN_BYTES, CHAIN_CAP, CH_HEAD, CH_SEG_START, CH_SEG_COUNT, CH_READ_LEN, CH_WRITE_LEN,
  CH_USED_LEN, SEGS_OFFSET, SEG_CAP, SEG_F_WRITE, PACKED_TOKEN_SLOTS_SHIFT,
  ERR_HEAD_RANGE, ERR_CHAIN_LOOP, ERR_TRANSLATE, ERR_INDIRECT_LEN, ERR_INDIRECT_NESTED, ERR_WRITE_ORDER,
  ERR_INDIRECT_NEXT, ERR_SEGMENTS, ERR_CHAIN_BYTES, ERR_USED_ID, ERR_DESC_FLAGS,
  VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED,
  RING_EVENT_FLAGS_ENABLE, RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_DESC, QUEUE_SIZE_MAX,
  PK_RESUB_DESCS_OFFSET, PK_RESUB_DESCS_CAP,
} from './layout';
import { needEventInline, fullFence } from './event-idx';
import { translateGpa } from './region-table';
import { appendSegments, SEGS_UNMAPPED } from './segments';
import { logBytesOf, ringLogBytesOf, logChainSegments, logWasm } from './dirty-log';
import { inflightPackedFetch, inflightPackedUsed, inflightPackedCommit, inflightPackedCopyChain } from './inflight-packed';

const WALK_NO_FIT: u32 = 0x100;
const CH_DESC_COUNT: u32 = 24; // spare word of a chain record: descriptors walked (statistics)
const BYTES_MAX: u64 = 0xffff_ffff;
const DETAIL_CONFIG: u32 = 0xffff_ffff;
const WRAP: u32 = 1 << 15;

// @ts-ignore: decorator
@inline
function setError(qs: u32, code: u32, detail: u32): void {
  store<u32>(qs, detail, QS_ERROR_DETAIL);
  store<u32>(qs, code, QS_ERROR);
}

/** True when the queue area holds a packed ring (the split entry points dispatch on this). */
// @ts-ignore: decorator
@inline
export function isPacked(qs: u32): bool {
  return (load<u32>(qs, QS_FEATURES) & QF_PACKED) != 0;
}

/** B.2: available iff AVAIL == wrap and USED != wrap. */
// @ts-ignore: decorator
@inline
export function descAvailable(flags: u32, wrap: u32): bool {
  return ((flags >>> 7) & 1) == wrap && ((flags >>> 15) & 1) != wrap;
}

/** Position `pos` (index | wrap << 15) moved on by `n` slots of a ring of `size`. */
// @ts-ignore: decorator
@inline
export function advance(pos: u32, n: u32, size: u32): u32 {
  let i = (pos & 0x7fff) + n;
  let w = pos & WRAP;
  if (i >= size) {
    i -= size;
    w ^= WRAP;
  }
  return i | w;
}

/**
 * Set up (or re-set) a packed queue. desc: the descriptor ring, drvEvent / devEvent: the driver and
 * device event suppression structures (SET_VRING_ADDR's avail and used addresses), all wasm addresses.
 * lastAvail / nextUsed: positions (index | wrap << 15) from SET_VRING_BASE. Size 1..32768 (any, B.2),
 * ring 16- and event structures 4-aligned, indices < size; otherwise the queue is left broken with
 * ERR_TRANSLATE / 0xffffffff.
 */
export function packedConfigure(
  qs: u32, size: u32, features: u32, descAddr: u32, drvEvent: u32, devEvent: u32,
  regionTable: u32, inflightAddr: u32, lastAvail: u32, nextUsed: u32,
): void {
  initQueueState(qs, size, features | QF_PACKED, descAddr, drvEvent, devEvent, regionTable, inflightAddr, lastAvail);
  store<u16>(qs, <u16>nextUsed, QS_NEXT_USED);
  if (
    size == 0 || size > QUEUE_SIZE_MAX || descAddr == 0 || drvEvent == 0 || devEvent == 0 ||
    (descAddr & 15) != 0 || (drvEvent & 3) != 0 || (devEvent & 3) != 0 ||
    (lastAvail & 0x7fff) >= size || (nextUsed & 0x7fff) >= size
  ) {
    setError(qs, ERR_TRANSLATE, DETAIL_CONFIG);
  }
}

/** addBuffer result flag: the rest is an ERR_* code. */
const BUF_ERR: u32 = 0x8000_0000;

/**
 * Walk and validate the chain whose head sits at position `pos`: ring descriptors linked by NEXT in
 * consecutive slots (wrapping, each one available for the wrap counter in effect at its slot), or one
 * indirect descriptor whose table holds the buffers. `table` != 0 walks copies of the descriptors
 * instead (inflight resubmission: `count` consecutive ring-format descriptors there, no flag checks).
 * Writes the chain record (token, segments, lengths); returns 0, an ERR_* code or WALK_NO_FIT.
 */
function walkPacked(qs: u32, pos: u32, rec: u32, segBase: u32, table: u32, count: u32): u32 {
  const size = load<u32>(qs, QS_SIZE_FIELD);
  const regions = load<u32>(qs, QS_REGIONS);
  const ring = load<u32>(qs, QS_DESC);
  const segs = qs + SEGS_OFFSET;
  let i = pos & 0x7fff;
  let wrap = pos >>> 15;
  let slots: u32 = 0;
  let descs: u32 = 0;
  let seg = segBase;
  let readLen: u64 = 0;
  let writeLen: u64 = 0;
  let sawWrite = false;
  let id: u32 = 0;

  while (true) {
    if (slots >= size) return ERR_CHAIN_LOOP;
    let d: u32;
    if (table != 0) {
      if (slots >= count) return ERR_CHAIN_LOOP;
      d = table + (slots << 4);
    } else {
      d = ring + (i << 4);
    }
    const flags = <u32>load<u16>(d, 14);
    // the head's flags were checked (with acquire) by the caller; the driver writes the rest first
    if (table == 0 && slots != 0 && !descAvailable(flags, wrap)) return ERR_DESC_FLAGS;
    slots++;
    descs++;
    const addr = load<u64>(d, 0);
    const len = load<u32>(d, 8);
    id = <u32>load<u16>(d, 12);

    if (flags & VIRTQ_DESC_F_INDIRECT) {
      if (flags & VIRTQ_DESC_F_NEXT) return ERR_INDIRECT_NEXT;
      const n = len >>> 4;
      if (len == 0 || (len & 15) != 0 || n > QUEUE_SIZE_MAX) return ERR_INDIRECT_LEN;
      const t = translateGpa(regions, addr, <u64>len);
      if (t == 0) return ERR_TRANSLATE;
      // the table's entries are consecutive; only WRITE means anything there (B.2)
      for (let k: u32 = 0; k < n; k++) {
        const e = t + (k << 4);
        const ef = <u32>load<u16>(e, 14);
        if (ef & VIRTQ_DESC_F_INDIRECT) return ERR_INDIRECT_NESTED;
        if ((ef & VIRTQ_DESC_F_NEXT) != 0 && k + 1 == n) return ERR_INDIRECT_NEXT; // promises more than the table holds
        descs++;
        const r = addBuffer(regions, segs, seg, load<u64>(e, 0), load<u32>(e, 8), (ef & VIRTQ_DESC_F_WRITE) != 0, sawWrite, readLen, writeLen);
        if (r >= BUF_ERR) return r & ~BUF_ERR;
        const l = <u64>load<u32>(e, 8);
        if ((ef & VIRTQ_DESC_F_WRITE) != 0) {
          sawWrite = true;
          writeLen += l;
        } else {
          readLen += l;
        }
        seg = r;
      }
      break;
    }

    const write = (flags & VIRTQ_DESC_F_WRITE) != 0;
    const r = addBuffer(regions, segs, seg, addr, len, write, sawWrite, readLen, writeLen);
    if (r >= BUF_ERR) return r & ~BUF_ERR;
    if (write) {
      sawWrite = true;
      writeLen += <u64>len;
    } else {
      readLen += <u64>len;
    }
    seg = r;

    if ((flags & VIRTQ_DESC_F_NEXT) == 0) break;
    i++;
    if (i == size) {
      i = 0;
      wrap ^= 1;
    }
  }

  if (id >= size) return ERR_HEAD_RANGE;
  if (seg > SEG_CAP) return WALK_NO_FIT;
  store<u32>(rec, id | (slots << PACKED_TOKEN_SLOTS_SHIFT), CH_HEAD);
  store<u32>(rec, segBase, CH_SEG_START);
  store<u32>(rec, seg - segBase, CH_SEG_COUNT);
  store<u32>(rec, <u32>readLen, CH_READ_LEN);
  store<u32>(rec, <u32>writeLen, CH_WRITE_LEN);
  store<u32>(rec, 0, CH_USED_LEN);
  store<u32>(rec, descs, CH_DESC_COUNT);
  return 0;
}

/** One buffer's checks and segments; returns the next segment index or BUF_ERR | ERR_*. */
// @ts-ignore: decorator
@inline
function addBuffer(
  regions: u32, segs: u32, seg: u32, addr: u64, len: u32, write: bool, sawWrite: bool, readLen: u64, writeLen: u64,
): u32 {
  if (!write && sawWrite) return BUF_ERR | ERR_WRITE_ORDER;
  if (len == 0) return seg;
  if ((write ? writeLen : readLen) + <u64>len > BYTES_MAX) return BUF_ERR | ERR_CHAIN_BYTES;
  const r = appendSegments(regions, segs, seg, addr, len, write ? SEG_F_WRITE : 0);
  return r == SEGS_UNMAPPED ? BUF_ERR | ERR_TRANSLATE : r;
}

// @ts-ignore: decorator
@inline
function clampChains(maxChains: i32): u32 {
  if (maxChains <= 0) return 0;
  return <u32>maxChains > CHAIN_CAP ? CHAIN_CAP : <u32>maxChains;
}

/**
 * Pop up to min(maxChains, CHAIN_CAP) available chains, in ring order, into chain records 0.. and
 * segments 0.. (same contract as splitPopBatch; QS_ERROR_DETAIL is the offending slot).
 */
export function packedPopBatch(qs: u32, maxChains: i32): i32 {
  const err = load<u32>(qs, QS_ERROR);
  if (err != 0) return -<i32>err;
  const want = clampChains(maxChains);
  if (want == 0) return 0;
  const size = load<u32>(qs, QS_SIZE_FIELD);
  const ring = load<u32>(qs, QS_DESC);
  const inflight = (load<u32>(qs, QS_FEATURES) & QF_INFLIGHT) != 0 ? load<u32>(qs, QS_INFLIGHT) : 0;
  let pos = <u32>load<u16>(qs, QS_LAST_AVAIL);
  let n: u32 = 0;
  let segUsed: u32 = 0;
  let descs: u64 = 0;
  let bytes: u64 = 0;
  let failed: u32 = 0;
  let rec = qs + CHAINS_OFFSET;
  while (n < want) {
    const flags = <u32>atomic.load<u16>(ring + ((pos & 0x7fff) << 4), 14); // B.5 row 5 (acquire)
    if (!descAvailable(flags, pos >>> 15)) break;
    const r = walkPacked(qs, pos, rec, segUsed, 0, 0);
    if (r != 0) {
      if (r == WALK_NO_FIT) {
        if (n != 0) break;
        failed = ERR_SEGMENTS;
      } else {
        failed = r;
      }
      setError(qs, failed, pos & 0x7fff);
      break;
    }
    const token = load<u32>(rec, CH_HEAD);
    const slots = token >>> PACKED_TOKEN_SLOTS_SHIFT;
    // inflight tracking: the token's low half becomes the chain's inflight head entry
    if (inflight != 0) {
      const t = inflightPackedFetch(qs, inflight, pos, slots);
      if ((t & 0xffff) == 0xffff) {
        // the region's free list is corrupt (the front-end owns that memory too): stop this ring
        failed = ERR_HEAD_RANGE;
        setError(qs, failed, pos & 0x7fff);
        break;
      }
      store<u32>(rec, t, CH_HEAD);
    }
    segUsed += load<u32>(rec, CH_SEG_COUNT);
    descs += <u64>load<u32>(rec, CH_DESC_COUNT);
    bytes += <u64>load<u32>(rec, CH_READ_LEN);
    pos = advance(pos, slots, size);
    n++;
    rec += CHAIN_BYTES;
  }
  if (n == 0) return failed != 0 ? -<i32>failed : 0;
  store<u16>(qs, <u16>pos, QS_LAST_AVAIL);
  // batches before chains: a reader (stats.ts) takes chains first, so it never sees a batch's chains without it
  addStat(qs, QS_STAT_BATCHES, 1);
  addStat(qs, QS_STAT_CHAINS, <u64>n);
  addStat(qs, QS_STAT_DESCS, descs);
  addStat(qs, QS_STAT_BYTES_READ, bytes);
  return <i32>n;
}

/**
 * Resubmission after a reconnect: chain records for `count` in-flight head entries (u16 at headsAddr,
 * from inflightPackedRecover), walked from the descriptor copies in the inflight area, not from the
 * ring (those slots may hold used descriptors by now). Count built, or -ERR.
 */
export function packedPopHeads(qs: u32, headsAddr: u32, count: i32): i32 {
  const err = load<u32>(qs, QS_ERROR);
  if (err != 0) return -<i32>err;
  const want = clampChains(count);
  const inflight = load<u32>(qs, QS_INFLIGHT);
  const size = load<u32>(qs, QS_SIZE_FIELD);
  const copies = qs + PK_RESUB_DESCS_OFFSET;
  let n: u32 = 0;
  let segUsed: u32 = 0;
  let rec = qs + CHAINS_OFFSET;
  let failed: u32 = 0;
  while (n < want) {
    const entry = <u32>load<u16>(headsAddr + (n << 1));
    const num = inflight != 0 ? inflightPackedCopyChain(inflight, entry, size, copies, PK_RESUB_DESCS_CAP) : 0;
    let r: u32 = num == 0 ? ERR_HEAD_RANGE : walkPacked(qs, 0, rec, segUsed, copies, num);
    if (r == WALK_NO_FIT) {
      if (n != 0) break;
      r = ERR_SEGMENTS;
    }
    if (r != 0) {
      setError(qs, r, entry);
      failed = r;
      break;
    }
    const slots = load<u32>(rec, CH_HEAD) >>> PACKED_TOKEN_SLOTS_SHIFT;
    store<u32>(rec, entry | (slots << PACKED_TOKEN_SLOTS_SHIFT), CH_HEAD);
    segUsed += load<u32>(rec, CH_SEG_COUNT);
    n++;
    rec += CHAIN_BYTES;
  }
  if (n == 0 && failed != 0) return -<i32>failed;
  return <i32>n;
}

/** 1 if the next slot holds an available chain, else 0; -ERR when broken. */
export function packedAvailPending(qs: u32): i32 {
  const err = load<u32>(qs, QS_ERROR);
  if (err != 0) return -<i32>err;
  const pos = <u32>load<u16>(qs, QS_LAST_AVAIL);
  const flags = <u32>atomic.load<u16>(load<u32>(qs, QS_DESC) + ((pos & 0x7fff) << 4), 14);
  return descAvailable(flags, pos >>> 15) ? 1 : 0;
}

/**
 * Write one used descriptor (id, len) at the next used position and move it on by `slots`. Its flags
 * are stored at once, except for the first descriptor of an unpublished batch: those are kept for
 * packedPublish, so the driver, which polls that slot first, sees the whole batch or nothing.
 */
// @ts-ignore: decorator
@inline
function writeUsed(qs: u32, ring: u32, size: u32, id: u32, slots: u32, len: u32): void {
  const pos = <u32>load<u16>(qs, QS_NEXT_USED);
  const d = ring + ((pos & 0x7fff) << 4);
  store<u32>(d, len, 8);
  store<u16>(d, <u16>id, 12);
  // used: AVAIL and USED both equal to the device's wrap counter; WRITE says len is meaningful
  let flags: u32 = (pos & WRAP) != 0 ? VIRTQ_DESC_F_AVAIL | VIRTQ_DESC_F_USED : 0;
  if (len != 0) flags |= VIRTQ_DESC_F_WRITE;
  const pending = load<u32>(qs, QS_PENDING);
  if (pending == 0) {
    store<u16>(qs, <u16>pos, QS_PK_BATCH);
    store<u16>(qs, <u16>flags, QS_PK_BATCH_FLAGS);
  } else {
    store<u16>(d, <u16>flags, 14);
  }
  store<u16>(qs, <u16>advance(pos, slots, size), QS_NEXT_USED);
  store<u32>(qs, pending + 1, QS_PENDING);
}

/**
 * Completion of one chain (any order): token from its chain record, len bytes written. Its buffer
 * writes are NOT dirty-logged: the chain's descriptors may already be overwritten by other used
 * descriptors and its chain record reused, so the session refuses VHOST_F_LOG_ALL on packed rings.
 * 0, or -ERR_USED_ID for a token that cannot be one we handed out.
 */
export function packedPushUsed(qs: u32, token: u32, len: u32): i32 {
  const size = load<u32>(qs, QS_SIZE_FIELD);
  const low = token & 0xffff;
  const slots = token >>> PACKED_TOKEN_SLOTS_SHIFT;
  if (low >= size || slots == 0 || slots > size) return -<i32>ERR_USED_ID;
  const inflight = (load<u32>(qs, QS_FEATURES) & QF_INFLIGHT) != 0 ? load<u32>(qs, QS_INFLIGHT) : 0;
  const id = inflight != 0 ? inflightPackedUsed(inflight, low, size) : low;
  if (id >= size) return -<i32>ERR_USED_ID;
  writeUsed(qs, load<u32>(qs, QS_DESC), size, id, slots, len);
  addStat(qs, QS_STAT_BYTES_WRITTEN, <u64>len);
  return 0;
}

/**
 * Dirty log: the ring slots from `batch` up to `nextUsed` (wrapping), where this batch's used
 * descriptors went (one per chain; the slots between them are logged too, which costs nothing extra:
 * they share the ring's pages). Equal positions with a batch pending mean a whole lap.
 */
function logUsedSlots(qs: u32, lb: u32, size: u32, batch: u32, nextUsed: u32): void {
  const ring = load<u32>(qs, QS_DESC);
  const b = batch & 0x7fff;
  const e = nextUsed & 0x7fff;
  if (e > b) {
    logWasm(qs, lb, ring + (b << 4), (e - b) << 4);
  } else {
    logWasm(qs, lb, ring + (b << 4), (size - b) << 4);
    if (e != 0) logWasm(qs, lb, ring, e << 4);
  }
}

/**
 * Publish the used descriptors written since the last publish (the batch's first flags, atomically),
 * then decide on a notification from the driver event suppression structure (B.4 packed, as DPDK's
 * vhost_vring_call_packed). Returns 1 to notify the driver.
 */
export function packedPublish(qs: u32): i32 {
  const pending = load<u32>(qs, QS_PENDING);
  if (pending == 0) return 0;
  const size = load<u32>(qs, QS_SIZE_FIELD);
  const features = load<u32>(qs, QS_FEATURES);
  const batch = <u32>load<u16>(qs, QS_PK_BATCH);
  atomic.store<u16>(load<u32>(qs, QS_DESC) + ((batch & 0x7fff) << 4), load<u16>(qs, QS_PK_BATCH_FLAGS), 14); // B.5 row 6
  store<u32>(qs, 0, QS_PENDING);
  const nextUsed = <u32>load<u16>(qs, QS_NEXT_USED);
  const lb = ringLogBytesOf(qs);
  if (lb != 0) logUsedSlots(qs, lb, size, batch, nextUsed);
  if ((features & QF_INFLIGHT) != 0) inflightPackedCommit(load<u32>(qs, QS_INFLIGHT), size);

  fullFence(qs + QS_PENDING); // B.5 row 3
  const drv = load<u32>(qs, QS_AVAIL);
  const evFlags = <u32>atomic.load<u16>(drv, 2) & 3;
  let notify: bool;
  if ((features & QF_EVENT_IDX) == 0 || evFlags != RING_EVENT_FLAGS_DESC) {
    notify = evFlags != RING_EVENT_FLAGS_DISABLE;
    if (features & QF_EVENT_IDX) {
      store<u16>(qs, <u16>nextUsed, QS_SIGNALLED_USED);
      store<u16>(qs, 1, QS_SIGNALLED_VALID);
    }
  } else {
    const oldPos = <u32>load<u16>(qs, QS_SIGNALLED_USED);
    const valid = load<u16>(qs, QS_SIGNALLED_VALID);
    store<u16>(qs, <u16>nextUsed, QS_SIGNALLED_USED);
    store<u16>(qs, 1, QS_SIGNALLED_VALID);
    if (valid == 0) {
      notify = true;
    } else {
      // indices without wrap bits; `old` and `off` move one lap back when they belong to the lap before
      const nw = nextUsed & 0x7fff;
      let old = oldPos & 0x7fff;
      if (nw <= old) old -= size;
      const offWrap = <u32>atomic.load<u16>(drv);
      let off = offWrap & 0x7fff;
      if ((offWrap >>> 15) != (nextUsed >>> 15)) off -= size;
      notify = needEventInline(off, nw, old);
    }
  }
  return countNotify(qs, notify);
}

/**
 * In-order completion of chain records 0..n-1 (token CH_HEAD, len min(CH_USED_LEN, CH_WRITE_LEN)),
 * then publish. With IN_ORDER negotiated (and no inflight tracking) a run of chains that wrote nothing,
 * ended by one that may have, gets ONE used descriptor: the run's last id, its slots all together.
 */
export function packedComplete(qs: u32, n: i32): i32 {
  const cnt = clampChains(n);
  if (cnt != 0) {
    const size = load<u32>(qs, QS_SIZE_FIELD);
    const ring = load<u32>(qs, QS_DESC);
    const features = load<u32>(qs, QS_FEATURES);
    const inflight = (features & QF_INFLIGHT) != 0 ? load<u32>(qs, QS_INFLIGHT) : 0;
    const inOrder = (features & QF_IN_ORDER) != 0 && inflight == 0;
    let bytes: u64 = 0;
    let runSlots: u32 = 0;
    const lb = logBytesOf(qs);
    let rec = qs + CHAINS_OFFSET;
    for (let k: u32 = 0; k < cnt; k++, rec += CHAIN_BYTES) {
      const token = load<u32>(rec, CH_HEAD);
      const low = token & 0xffff;
      const slots = token >>> PACKED_TOKEN_SLOTS_SHIFT;
      if (low >= size || slots == 0 || slots > size) continue; // not a record we wrote
      const want = load<u32>(rec, CH_USED_LEN);
      const room = load<u32>(rec, CH_WRITE_LEN);
      const len = want < room ? want : room;
      bytes += <u64>len;
      if (lb != 0) logChainSegments(qs, lb, rec, len);
      if (inOrder) {
        runSlots += slots;
        if (len == 0 && k + 1 < cnt) continue;
        writeUsed(qs, ring, size, low, runSlots, len);
        runSlots = 0;
        continue;
      }
      const id = inflight != 0 ? inflightPackedUsed(inflight, low, size) : low;
      if (id >= size) continue;
      writeUsed(qs, ring, size, id, slots, len);
    }
    addStat(qs, QS_STAT_BYTES_WRITTEN, bytes);
  }
  return packedPublish(qs);
}

/** Suppress kicks: device event suppression flags = DISABLE. */
export function packedDisableNotify(qs: u32): void {
  atomic.store<u16>(load<u32>(qs, QS_USED), <u16>RING_EVENT_FLAGS_DISABLE, 2);
  const lb = ringLogBytesOf(qs);
  if (lb != 0) logWasm(qs, lb, load<u32>(qs, QS_USED), 4);
}

/**
 * Re-enable kicks (EVENT_IDX: DESC mode at our next avail position; else ENABLE), full fence, look at
 * the next slot again. Returns 1 if a chain became available meanwhile (no kick will come for it).
 */
export function packedEnableNotify(qs: u32): i32 {
  const dev = load<u32>(qs, QS_USED);
  const pos = <u32>load<u16>(qs, QS_LAST_AVAIL);
  if (load<u32>(qs, QS_FEATURES) & QF_EVENT_IDX) {
    atomic.store<u16>(dev, <u16>pos);
    atomic.store<u16>(dev, <u16>RING_EVENT_FLAGS_DESC, 2);
  } else {
    atomic.store<u16>(dev, <u16>RING_EVENT_FLAGS_ENABLE, 2);
  }
  const lb = ringLogBytesOf(qs);
  if (lb != 0) logWasm(qs, lb, dev, 4);
  fullFence(qs + QS_PENDING); // B.5 row 4
  const flags = <u32>atomic.load<u16>(load<u32>(qs, QS_DESC) + ((pos & 0x7fff) << 4), 14);
  return descAvailable(flags, pos >>> 15) ? 1 : 0;
}
