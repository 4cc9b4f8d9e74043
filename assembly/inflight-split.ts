// Split-ring inflight records (A.10), the layout libvhost-user, DPDK and QEMU share:
//   header (16 bytes): features u64, version u16 (1; 0 = uninitialised), desc_num u16,
//                      last_batch_head u16, used_idx u16
//   per descriptor (16 bytes): inflight u8, pad[5], next u16 (last-batch list), counter u64
// splitPopBatch records pops, splitPushUsed/splitComplete link the batch, splitPublish clears it.

import {
  QS_SIZE_FIELD, QS_USED, QS_INFLIGHT, QS_INFLIGHT_COUNTER,
  INFL_HDR_BYTES, INFL_VERSION, INFL_DESC_NUM, INFL_LAST_BATCH_HEAD, INFL_USED_IDX, INFL_DESC_BYTES,
  INFLD_INFLIGHT, INFLD_NEXT, INFLD_COUNTER,
} from './layout';

/** Bytes of one queue's inflight area: align64(16 * N + 16) (DPDK; equals libvhost-user for N >= 4). */
export function inflightSplitQueueBytes(queueSize: u32): u32 {
  return (queueSize * INFL_DESC_BYTES + INFL_HDR_BYTES + 63) & ~<u32>63;
}

/** Initialise one queue's area: version 1, desc_num = queueSize, everything else 0. */
export function inflightSplitInit(addr: u32, queueSize: u32): void {
  memory.fill(addr, 0, INFL_HDR_BYTES + queueSize * INFL_DESC_BYTES);
  store<u16>(addr, <u16>queueSize, INFL_DESC_NUM);
  store<u16>(addr, 1, INFL_VERSION);
}

/** Sort key order: counter ascending, then head ascending (equal counters only after corruption). */
// @ts-ignore: decorator
@inline
function greater(infl: u32, headsAddr: u32, a: u32, b: u32): bool {
  const ha = <u32>load<u16>(headsAddr + (a << 1));
  const hb = <u32>load<u16>(headsAddr + (b << 1));
  const ca = load<u64>(infl + INFL_HDR_BYTES + (ha << 4), INFLD_COUNTER);
  const cb = load<u64>(infl + INFL_HDR_BYTES + (hb << 4), INFLD_COUNTER);
  return ca > cb || (ca == cb && ha > hb);
}

// @ts-ignore: decorator
@inline
function swapHeads(headsAddr: u32, a: u32, b: u32): void {
  const pa = headsAddr + (a << 1);
  const pb = headsAddr + (b << 1);
  const t = load<u16>(pa);
  store<u16>(pa, load<u16>(pb));
  store<u16>(pb, t);
}

function siftDown(infl: u32, heads: u32, start: u32, end: u32): void {
  let root = start;
  while (true) {
    let child: u32 = 2 * root + 1;
    if (child >= end) return;
    if (child + 1 < end && greater(infl, heads, child + 1, child)) child++;
    if (!greater(infl, heads, child, root)) return;
    swapHeads(heads, root, child);
    root = child;
  }
}

/** In-place heap sort of n u16 heads by their inflight counter, ascending (no allocation). */
function sortByCounter(infl: u32, heads: u32, n: u32): void {
  if (n < 2) return;
  let start = n >>> 1;
  while (start > 0) {
    start--;
    siftDown(infl, heads, start, n);
  }
  let end = n;
  while (end > 1) {
    end--;
    swapHeads(heads, 0, end);
    siftDown(infl, heads, 0, end);
  }
}

/**
 * Reconnect (A.10): repair a half-committed last batch (header used_idx != used.idx: walk
 * used.idx - used_idx entries from last_batch_head clearing inflight, then used_idx = used.idx), then
 * write the heads still inflight, sorted by counter ascending (ties by head), as u16 at outAddr (room for N) and
 * return their count. The queue's fetch counter continues after the largest counter found. An area
 * with version 0 (or a desc_num other than N) is initialised and reported empty. Needs
 * splitConfigure first (size, used ring, inflight address); returns 0 without an inflight area.
 */
export function inflightSplitRecover(qs: u32, outAddr: u32): i32 {
  const infl = load<u32>(qs, QS_INFLIGHT);
  if (infl == 0) return 0;
  const size = load<u32>(qs, QS_SIZE_FIELD);
  const usedIdx = atomic.load<u16>(load<u32>(qs, QS_USED), 2);
  if (load<u16>(infl, INFL_VERSION) != 1 || <u32>load<u16>(infl, INFL_DESC_NUM) != size) {
    inflightSplitInit(infl, size);
    store<u16>(infl, usedIdx, INFL_USED_IDX);
    return 0;
  }
  const recorded = load<u16>(infl, INFL_USED_IDX);
  if (recorded != usedIdx) {
    const n = (<u32>usedIdx - <u32>recorded) & 0xffff;
    let h = <u32>load<u16>(infl, INFL_LAST_BATCH_HEAD);
    for (let k: u32 = 0; k < n && h < size; k++) {
      const d = infl + INFL_HDR_BYTES + (h << 4);
      store<u8>(d, 0, INFLD_INFLIGHT);
      h = <u32>load<u16>(d, INFLD_NEXT);
    }
    store<u16>(infl, usedIdx, INFL_USED_IDX);
  }
  let count: u32 = 0;
  let next = load<u64>(qs, QS_INFLIGHT_COUNTER);
  for (let h: u32 = 0; h < size; h++) {
    const d = infl + INFL_HDR_BYTES + (h << 4);
    if (load<u8>(d, INFLD_INFLIGHT) == 1) {
      store<u16>(outAddr + (count << 1), <u16>h);
      count++;
      const c = load<u64>(d, INFLD_COUNTER);
      if (c >= next) next = c + 1;
    }
  }
  store<u64>(qs, next, QS_INFLIGHT_COUNTER);
  sortByCounter(infl, outAddr, count);
  return <i32>count;
}
