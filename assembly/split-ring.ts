// Device side of a split virtqueue (B.1), running directly on guest memory mapped into the shared
// wasm memory. All state lives in the queue area `qs` (QS_* fields, chain records, segments): no
// globals, no allocation. Descriptors are read once into locals (the guest may change them under us).
//
// Memory ordering (B.5), all through wasm atomics (sequentially consistent):
//   row 1: atomic.load of avail.idx before reading the ring and the descriptors
//   row 2: used elements with plain stores, then ONE atomic.store of used.idx per publish
//   row 3: a full fence between publishing used.idx and reading used_event / avail.flags
//   row 4: a full fence between re-enabling kicks and re-reading avail.idx
// (fullFence in event-idx.ts: an idempotent atomic RMW, because asc 0.28.20 cannot emit atomic.fence)
//
// These entry points are the engine's one ring API: a queue set up by packedConfigure (QF_PACKED)
// is handed to packed-ring.ts by the first line of each, so callers never know the ring format.

import { addStat, countNotify } from './counters';
import { initQueueState } from './queue-state';
import {
  QS_SIZE_FIELD, QS_FEATURES, QS_DESC, QS_AVAIL, QS_USED, QS_REGIONS, QS_INFLIGHT, QS_ERROR, QS_LAST_AVAIL,
  QS_NEXT_USED, QS_SIGNALLED_USED, QS_SIGNALLED_VALID, QS_ERROR_DETAIL, QS_INFLIGHT_COUNTER, QS_PENDING,
  QS_STAT_CHAINS, QS_STAT_DESCS, QS_STAT_BATCHES, QS_STAT_BYTES_READ,
  QS_STAT_BYTES_WRITTEN, QF_EVENT_IDX, QF_INFLIGHT,
  CHAINS_OFFSET, CHAIN_BYTES, CHAIN_CAP, CH_HEAD, CH_SEG_START, CH_SEG_COUNT, CH_READ_LEN, CH_WRITE_LEN,
  CH_USED_LEN, SEGS_OFFSET, SEG_BYTES, SEG_CAP, SEG_ADDR, SEG_LEN, SEG_FLAGS, SEG_F_WRITE,
  ERR_AVAIL_IDX, ERR_HEAD_RANGE, ERR_NEXT_RANGE, ERR_CHAIN_LOOP, ERR_TRANSLATE, ERR_INDIRECT_LEN,
  ERR_INDIRECT_NESTED, ERR_WRITE_ORDER, ERR_INDIRECT_NEXT, ERR_SEGMENTS, ERR_CHAIN_BYTES, ERR_USED_ID,
  VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_INDIRECT, VIRTQ_AVAIL_F_NO_INTERRUPT,
  VIRTQ_USED_F_NO_NOTIFY, QUEUE_SIZE_MAX,
  INFL_HDR_BYTES, INFL_LAST_BATCH_HEAD, INFL_USED_IDX, INFLD_INFLIGHT, INFLD_NEXT, INFLD_COUNTER,
} from './layout';
import { needEventInline, fullFence } from './event-idx';
import { translateGpa } from './region-table';
import { appendSegments, SEGS_UNMAPPED } from './segments';
import { logBytesOf, ringLogBytesOf, logChainSegments, logSplitChain, logUsedRing } from './dirty-log';
import {
  isPacked, packedPopBatch, packedPopHeads, packedAvailPending, packedPushUsed, packedPublish, packedComplete,
  packedDisableNotify, packedEnableNotify,
} from './packed-ring';

/** walkChain result: the chain does not fit into the segments left in this batch. */
const WALK_NO_FIT: u32 = 0x100;
/** Spare word of a chain record: descriptors walked (statistics; src/engine/reference-split.ts CH_DESC_COUNT). */
const CH_DESC_COUNT: u32 = 24;
const BYTES_MAX: u64 = 0xffff_ffff;
/** QS_ERROR_DETAIL for a configuration splitConfigure refused (bad size or ring alignment). */
export const DETAIL_CONFIG: u32 = 0xffff_ffff;

// @ts-ignore: decorator
@inline
function setError(qs: u32, code: u32, detail: u32): void {
  store<u32>(qs, detail, QS_ERROR_DETAIL);
  store<u32>(qs, code, QS_ERROR);
}

/**
 * Set up (or re-set) a queue. Ring addresses are wasm addresses the caller translated (translateUva).
 * A size that is not a power of two in 1..32768, or rings not aligned per B.6 (desc 16, avail 2,
 * used 4), leave the queue broken with ERR_TRANSLATE / DETAIL_CONFIG instead of trapping later.
 */
export function splitConfigure(
  qs: u32, size: u32, features: u32, descAddr: u32, availAddr: u32, usedAddr: u32,
  regionTable: u32, inflightAddr: u32, lastAvail: u32,
): void {
  initQueueState(qs, size, features, descAddr, availAddr, usedAddr, regionTable, inflightAddr, lastAvail);
  if (
    size == 0 || size > QUEUE_SIZE_MAX || (size & (size - 1)) != 0 ||
    descAddr == 0 || availAddr == 0 || usedAddr == 0 ||
    (descAddr & 15) != 0 || (availAddr & 1) != 0 || (usedAddr & 3) != 0
  ) {
    store<u16>(qs, 0, QS_NEXT_USED);
    setError(qs, ERR_TRANSLATE, DETAIL_CONFIG);
    return;
  }
  store<u16>(qs, atomic.load<u16>(usedAddr, 2), QS_NEXT_USED);
}

/**
 * Walk and validate the chain starting at `head` (< N), write its segments from index `segBase` on
 * and its chain record at `rec`. Returns 0, an ERR_* code, or WALK_NO_FIT. On 0 the descriptor count
 * walked is left in the record's spare word CH_DESC_COUNT for the caller's statistics.
 */
function walkChain(qs: u32, head: u32, rec: u32, segBase: u32): u32 {
  const size = load<u32>(qs, QS_SIZE_FIELD);
  const regions = load<u32>(qs, QS_REGIONS);
  const segs = qs + SEGS_OFFSET;

  let table = load<u32>(qs, QS_DESC); // current descriptor table (ring table or an indirect table)
  let limit = size; // entries in the current table (= loop bound)
  let indirect = false;
  let i = head;
  let count: u32 = 0; // descriptors walked in the current table
  let descs: u32 = 0; // descriptors walked in total
  let seg = segBase; // next segment index; keeps counting past SEG_CAP without writing
  let readLen: u64 = 0;
  let writeLen: u64 = 0;
  let sawWrite = false;

  while (true) {
    if (count >= limit) return ERR_CHAIN_LOOP;
    count++;
    descs++;
    const d = table + (i << 4);
    const addr = load<u64>(d, 0);
    const len = load<u32>(d, 8);
    const flagsNext = load<u32>(d, 12); // le16 flags, le16 next
    const flags = flagsNext & 0xffff;

    if (flags & VIRTQ_DESC_F_INDIRECT) {
      if (flags & VIRTQ_DESC_F_NEXT) return ERR_INDIRECT_NEXT;
      if (indirect) return ERR_INDIRECT_NESTED;
      if (len == 0 || (len & 15) != 0) return ERR_INDIRECT_LEN;
      const t = translateGpa(regions, addr, <u64>len);
      if (t == 0) return ERR_TRANSLATE;
      table = t;
      limit = len >>> 4;
      indirect = true;
      i = 0;
      count = 0;
      continue;
    }

    const write = (flags & VIRTQ_DESC_F_WRITE) != 0;
    if (write) sawWrite = true;
    else if (sawWrite) return ERR_WRITE_ORDER;

    if (len != 0) {
      if (write) {
        writeLen += <u64>len;
        if (writeLen > BYTES_MAX) return ERR_CHAIN_BYTES;
      } else {
        readLen += <u64>len;
        if (readLen > BYTES_MAX) return ERR_CHAIN_BYTES;
      }
      seg = appendSegments(regions, segs, seg, addr, len, write ? SEG_F_WRITE : 0);
      if (seg == SEGS_UNMAPPED) return ERR_TRANSLATE;
    }

    if ((flags & VIRTQ_DESC_F_NEXT) == 0) break;
    const next = flagsNext >>> 16;
    if (next >= limit) return ERR_NEXT_RANGE;
    i = next;
  }

  if (seg > SEG_CAP) return WALK_NO_FIT;
  store<u32>(rec, head, CH_HEAD);
  store<u32>(rec, segBase, CH_SEG_START);
  store<u32>(rec, seg - segBase, CH_SEG_COUNT);
  store<u32>(rec, <u32>readLen, CH_READ_LEN);
  store<u32>(rec, <u32>writeLen, CH_WRITE_LEN);
  store<u32>(rec, 0, CH_USED_LEN);
  store<u32>(rec, descs, CH_DESC_COUNT);
  return 0;
}

// @ts-ignore: decorator
@inline
function clampChains(maxChains: i32): u32 {
  if (maxChains <= 0) return 0;
  return <u32>maxChains > CHAIN_CAP ? CHAIN_CAP : <u32>maxChains;
}

/**
 * Pop up to min(maxChains, CHAIN_CAP) chains into chain records 0.. and segments 0.. of this queue.
 * Returns the number popped, or -ERR once the ring is broken. A chain is consumed (last_avail
 * advanced, inflight recorded, statistics counted) only after it validated completely. If a chain is
 * malformed after others in the same batch validated, those are returned (count > 0), the error is
 * recorded in QS_ERROR/QS_ERROR_DETAIL and the next call returns -ERR. A chain that does not fit
 * into the segments left ends the batch unconsumed; one that does not fit into all of them is
 * ERR_SEGMENTS. QS_ERROR_DETAIL is the offending head (for ERR_AVAIL_IDX: the avail.idx seen).
 */
export function splitPopBatch(qs: u32, maxChains: i32): i32 {
  if (isPacked(qs)) return packedPopBatch(qs, maxChains);
  const err = load<u32>(qs, QS_ERROR);
  if (err != 0) return -<i32>err;
  const size = load<u32>(qs, QS_SIZE_FIELD);
  const avail = load<u32>(qs, QS_AVAIL);
  const lastAvail = <u32>load<u16>(qs, QS_LAST_AVAIL);
  const availIdx = <u32>atomic.load<u16>(avail, 2); // B.5 row 1 (acquire)
  const pending = (availIdx - lastAvail) & 0xffff;
  if (pending > size) {
    setError(qs, ERR_AVAIL_IDX, availIdx);
    return -<i32>ERR_AVAIL_IDX;
  }
  let want = clampChains(maxChains);
  if (want > pending) want = pending;
  if (want == 0) return 0;
  const n = collectChains(qs, want, 0, lastAvail);
  if (n > 0) store<u16>(qs, <u16>(lastAvail + <u32>n), QS_LAST_AVAIL);
  return n;
}

/**
 * Build chain records for `count` heads (u16 at headsAddr; resubmission after a reconnect) with the
 * same checks as splitPopBatch, without touching last_avail or the inflight records. At most
 * CHAIN_CAP per call, and fewer when the segments run out; returns how many were built (the caller
 * passes the rest again) or -ERR.
 */
export function splitPopHeads(qs: u32, headsAddr: u32, count: i32): i32 {
  if (isPacked(qs)) return packedPopHeads(qs, headsAddr, count);
  const err = load<u32>(qs, QS_ERROR);
  if (err != 0) return -<i32>err;
  return collectChains(qs, clampChains(count), headsAddr, 0);
}

/**
 * The one chain-walking loop behind splitPopBatch (headsAddr 0: heads from the avail ring starting at
 * `lastAvail`, recorded as inflight) and splitPopHeads (heads from headsAddr, already inflight).
 * Returns the number of chain records built (statistics counted), or -ERR when none could be.
 */
function collectChains(qs: u32, want: u32, headsAddr: u32, lastAvail: u32): i32 {
  const size = load<u32>(qs, QS_SIZE_FIELD);
  const mask = size - 1;
  const avail = load<u32>(qs, QS_AVAIL);
  const features = load<u32>(qs, QS_FEATURES);
  const inflight = headsAddr == 0 && (features & QF_INFLIGHT) != 0 ? load<u32>(qs, QS_INFLIGHT) : 0;
  let counter = load<u64>(qs, QS_INFLIGHT_COUNTER);
  let n: u32 = 0;
  let segUsed: u32 = 0;
  let descs: u64 = 0;
  let bytes: u64 = 0;
  let failed: u32 = 0;
  let rec = qs + CHAINS_OFFSET;
  while (n < want) {
    const head = headsAddr == 0
      ? <u32>load<u16>(avail + 4 + (((lastAvail + n) & mask) << 1))
      : <u32>load<u16>(headsAddr + (n << 1));
    if (head >= size) {
      setError(qs, ERR_HEAD_RANGE, head);
      failed = ERR_HEAD_RANGE;
      break;
    }
    const r = walkChain(qs, head, rec, segUsed);
    if (r != 0) {
      if (r == WALK_NO_FIT) {
        if (n != 0) break; // next call takes it into an empty segment array
        failed = ERR_SEGMENTS;
      } else {
        failed = r;
      }
      setError(qs, failed, head);
      break;
    }
    segUsed += load<u32>(rec, CH_SEG_COUNT);
    descs += <u64>load<u32>(rec, CH_DESC_COUNT);
    bytes += <u64>load<u32>(rec, CH_READ_LEN);
    if (inflight != 0) {
      const d = inflight + INFL_HDR_BYTES + (head << 4);
      store<u64>(d, counter, INFLD_COUNTER);
      store<u8>(d, 1, INFLD_INFLIGHT);
      counter++;
    }
    n++;
    rec += CHAIN_BYTES;
  }
  if (n == 0) return failed != 0 ? -<i32>failed : 0;
  if (inflight != 0) store<u64>(qs, counter, QS_INFLIGHT_COUNTER);
  // batches before chains: a reader (stats.ts) takes chains first, so it never sees a batch's chains without it
  addStat(qs, QS_STAT_BATCHES, 1);
  addStat(qs, QS_STAT_CHAINS, <u64>n);
  addStat(qs, QS_STAT_DESCS, descs);
  addStat(qs, QS_STAT_BYTES_READ, bytes);
  return <i32>n;
}

/** Number of chains the driver has made available and we have not popped; -ERR when broken. */
export function splitAvailPending(qs: u32): i32 {
  if (isPacked(qs)) return packedAvailPending(qs);
  const err = load<u32>(qs, QS_ERROR);
  if (err != 0) return -<i32>err;
  const size = load<u32>(qs, QS_SIZE_FIELD);
  const availIdx = <u32>atomic.load<u16>(load<u32>(qs, QS_AVAIL), 2);
  const pending = (availIdx - <u32>load<u16>(qs, QS_LAST_AVAIL)) & 0xffff;
  if (pending > size) {
    setError(qs, ERR_AVAIL_IDX, availIdx);
    return -<i32>ERR_AVAIL_IDX;
  }
  return <i32>pending;
}

/**
 * Write one used element (plain stores; published later). With inflight tracking the head is also
 * linked into the last-batch list (A.10 completion step 1, before the used.idx store).
 */
// @ts-ignore: decorator
@inline
function writeUsed(qs: u32, used: u32, mask: u32, inflight: u32, nextUsed: u32, head: u32, len: u32): void {
  const e = used + 4 + ((nextUsed & mask) << 3);
  store<u32>(e, head, 0);
  store<u32>(e, len, 4);
  if (inflight != 0) {
    store<u16>(inflight + INFL_HDR_BYTES + (head << 4), load<u16>(inflight, INFL_LAST_BATCH_HEAD), INFLD_NEXT);
    store<u16>(inflight, <u16>head, INFL_LAST_BATCH_HEAD);
  }
}

// @ts-ignore: decorator
@inline
function inflightOf(qs: u32): u32 {
  return (load<u32>(qs, QS_FEATURES) & QF_INFLIGHT) != 0 ? load<u32>(qs, QS_INFLIGHT) : 0;
}

/** Out-of-order completion: queue a used element (head, len). 0, or -ERR_USED_ID if head >= N. */
export function splitPushUsed(qs: u32, head: u32, len: u32): i32 {
  if (isPacked(qs)) return packedPushUsed(qs, head, len);
  const size = load<u32>(qs, QS_SIZE_FIELD);
  if (head >= size) return -<i32>ERR_USED_ID;
  const nextUsed = <u32>load<u16>(qs, QS_NEXT_USED);
  writeUsed(qs, load<u32>(qs, QS_USED), size - 1, inflightOf(qs), nextUsed, head, len);
  // the device wrote its buffers before completing them; the chain record may be gone by now
  const lb = logBytesOf(qs);
  if (lb != 0) logSplitChain(qs, lb, head, len);
  store<u16>(qs, <u16>(nextUsed + 1), QS_NEXT_USED);
  store<u32>(qs, load<u32>(qs, QS_PENDING) + 1, QS_PENDING);
  addStat(qs, QS_STAT_BYTES_WRITTEN, <u64>len);
  return 0;
}

/** Dirty log: the `pending` used elements before `nextUsed` (wrapping around the ring), and used.idx. */
function logUsedElems(qs: u32, lb: u32, size: u32, nextUsed: u32, pending: u32): void {
  if (pending >= size) {
    logUsedRing(qs, lb, 4, size << 3);
  } else {
    const start = (nextUsed - pending) & (size - 1);
    const first = start + pending <= size ? pending : size - start;
    logUsedRing(qs, lb, 4 + (start << 3), first << 3);
    if (first < pending) logUsedRing(qs, lb, 4, (pending - first) << 3);
  }
  logUsedRing(qs, lb, 2, 2);
}

/**
 * Publish the used elements written since the last publish: one atomic store of used.idx, the
 * inflight bookkeeping (A.10), then the notification decision (B.4). Returns 1 to notify the driver.
 */
export function splitPublish(qs: u32): i32 {
  if (isPacked(qs)) return packedPublish(qs);
  const pending = load<u32>(qs, QS_PENDING);
  if (pending == 0) return 0;
  const size = load<u32>(qs, QS_SIZE_FIELD);
  const used = load<u32>(qs, QS_USED);
  const avail = load<u32>(qs, QS_AVAIL);
  const features = load<u32>(qs, QS_FEATURES);
  const nextUsed = <u32>load<u16>(qs, QS_NEXT_USED);
  atomic.store<u16>(used, <u16>nextUsed, 2); // B.5 row 2: the only store that publishes
  store<u32>(qs, 0, QS_PENDING);
  const lb = ringLogBytesOf(qs);
  if (lb != 0) logUsedElems(qs, lb, size, nextUsed, pending);

  const inflight = (features & QF_INFLIGHT) != 0 ? load<u32>(qs, QS_INFLIGHT) : 0;
  if (inflight != 0) {
    // A.10 completion steps 3 and 4: clear the batch's inflight flags, then record used_idx
    let h = <u32>load<u16>(inflight, INFL_LAST_BATCH_HEAD);
    for (let k: u32 = 0; k < pending && h < size; k++) {
      const d = inflight + INFL_HDR_BYTES + (h << 4);
      store<u8>(d, 0, INFLD_INFLIGHT);
      h = <u32>load<u16>(d, INFLD_NEXT);
    }
    store<u16>(inflight, <u16>nextUsed, INFL_USED_IDX);
  }

  fullFence(qs + QS_PENDING); // B.5 row 3: used.idx store before the used_event / flags load
  let notify: bool;
  if (features & QF_EVENT_IDX) {
    const old = <u32>load<u16>(qs, QS_SIGNALLED_USED);
    const valid = load<u16>(qs, QS_SIGNALLED_VALID);
    store<u16>(qs, <u16>nextUsed, QS_SIGNALLED_USED);
    store<u16>(qs, 1, QS_SIGNALLED_VALID);
    const usedEvent = <u32>atomic.load<u16>(avail + 4 + (size << 1));
    notify = valid == 0 || needEventInline(usedEvent, nextUsed, old);
  } else {
    notify = (atomic.load<u16>(avail) & VIRTQ_AVAIL_F_NO_INTERRUPT) == 0;
  }
  return countNotify(qs, notify);
}

/**
 * In-order completion of chain records 0..n-1 (id = CH_HEAD, len = CH_USED_LEN), then publish.
 * Returns the notification decision.
 */
export function splitComplete(qs: u32, n: i32): i32 {
  if (isPacked(qs)) return packedComplete(qs, n);
  const cnt = clampChains(n);
  if (cnt != 0) {
    const size = load<u32>(qs, QS_SIZE_FIELD);
    const mask = size - 1;
    const used = load<u32>(qs, QS_USED);
    const inflight = inflightOf(qs);
    let nextUsed = <u32>load<u16>(qs, QS_NEXT_USED);
    let bytes: u64 = 0;
    let pushed: u32 = 0;
    const lb = logBytesOf(qs);
    let rec = qs + CHAINS_OFFSET;
    for (let k: u32 = 0; k < cnt; k++, rec += CHAIN_BYTES) {
      const head = load<u32>(rec, CH_HEAD);
      if (head >= size) continue; // not a record we wrote
      // the used length may underestimate what was written, never overestimate it (B.1)
      const want = load<u32>(rec, CH_USED_LEN);
      const room = load<u32>(rec, CH_WRITE_LEN);
      const len = want < room ? want : room;
      writeUsed(qs, used, mask, inflight, nextUsed, head, len);
      if (lb != 0) logChainSegments(qs, lb, rec, len);
      nextUsed++;
      pushed++;
      bytes += <u64>len;
    }
    store<u16>(qs, <u16>nextUsed, QS_NEXT_USED);
    store<u32>(qs, load<u32>(qs, QS_PENDING) + pushed, QS_PENDING);
    addStat(qs, QS_STAT_BYTES_WRITTEN, bytes);
  }
  return splitPublish(qs);
}

/** Suppress kicks: without EVENT_IDX set used.flags NO_NOTIFY; with EVENT_IDX nothing to do. */
export function splitDisableNotify(qs: u32): void {
  if (isPacked(qs)) return packedDisableNotify(qs);
  if (load<u32>(qs, QS_FEATURES) & QF_EVENT_IDX) return;
  const used = load<u32>(qs, QS_USED);
  atomic.store<u16>(used, atomic.load<u16>(used) | <u16>VIRTQ_USED_F_NO_NOTIFY);
  const lb = ringLogBytesOf(qs);
  if (lb != 0) logUsedRing(qs, lb, 0, 2);
}

/**
 * Re-enable kicks (EVENT_IDX: avail_event = last_avail; else clear NO_NOTIFY), full fence, re-read
 * avail.idx. Returns 1 if the driver added buffers meanwhile (keep processing: no kick will come for
 * them), else 0.
 */
export function splitEnableNotify(qs: u32): i32 {
  if (isPacked(qs)) return packedEnableNotify(qs);
  const size = load<u32>(qs, QS_SIZE_FIELD);
  const used = load<u32>(qs, QS_USED);
  const lastAvail = load<u16>(qs, QS_LAST_AVAIL);
  const lb = ringLogBytesOf(qs);
  if (load<u32>(qs, QS_FEATURES) & QF_EVENT_IDX) {
    atomic.store<u16>(used + 4 + (size << 3), lastAvail);
    if (lb != 0) logUsedRing(qs, lb, 4 + (size << 3), 2);
  } else {
    atomic.store<u16>(used, atomic.load<u16>(used) & ~<u16>VIRTQ_USED_F_NO_NOTIFY);
    if (lb != 0) logUsedRing(qs, lb, 0, 2);
  }
  fullFence(qs + QS_PENDING); // B.5 row 4
  return atomic.load<u16>(load<u32>(qs, QS_AVAIL), 2) != lastAvail ? 1 : 0;
}
