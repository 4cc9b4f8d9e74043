// Packed-ring inflight records (A.10), the layout DPDK and SPDK use:
//   header (32 bytes): features u64, version u16, desc_num u16, free_head u16, old_free_head u16,
//                      used_idx u16, old_used_idx u16, used_wrap_counter u8, old_used_wrap_counter u8
//   per entry (32 bytes): inflight u8, pad u8, next u16, last u16, num u16, counter u64,
//                         id u16, flags u16, len u32, addr u64
// Entries hold copies of fetched descriptors, taken from a free list; a chain's head entry carries
// inflight/counter/num/last. The copies matter because a packed ring slot of a chain still in flight
// may already hold a used descriptor of another chain.
//
// Life of a chain (packed-ring.ts calls these):
//   fetch:    copy its descriptors into entries from free_head on; head.inflight = 1; old_free_head = free_head
//   complete: return its entries to the free list, advance used_idx/wrap (inflight stays 1)
//   commit:   after the used flags store that publishes the batch: clear inflight of the returned
//             entries (walking the free list up to old_free_head), then old_* = current
// The caller publishes before it fetches again, so returned-but-uncommitted entries are never reused.

import {
  QS_SIZE_FIELD, QS_DESC, QS_INFLIGHT, QS_INFLIGHT_COUNTER, QS_LAST_AVAIL, QS_NEXT_USED,
  PINFL_HDR_BYTES, PINFL_VERSION, PINFL_DESC_NUM, PINFL_FREE_HEAD, PINFL_OLD_FREE_HEAD, PINFL_USED_IDX,
  PINFL_OLD_USED_IDX, PINFL_USED_WRAP, PINFL_OLD_USED_WRAP, PINFL_DESC_BYTES, PINFLD_INFLIGHT, PINFLD_NEXT,
  PINFLD_LAST, PINFLD_NUM, PINFLD_COUNTER, PINFLD_ID, PINFLD_FLAGS, PINFLD_LEN, PINFLD_ADDR,
  PACKED_TOKEN_SLOTS_SHIFT,
} from './layout';

const NO_ENTRY: u32 = 0xffff;

// @ts-ignore: decorator
@inline
function entryAt(infl: u32, i: u32): u32 {
  return infl + PINFL_HDR_BYTES + i * PINFL_DESC_BYTES;
}

/** Bytes of one queue's area: align64(32 * N + 32). */
export function inflightPackedQueueBytes(queueSize: u32): u32 {
  return (queueSize * PINFL_DESC_BYTES + PINFL_HDR_BYTES + 63) & ~<u32>63;
}

/** Initialise one queue's area: version 1, every entry free (in order), used position 0 with wrap 1. */
export function inflightPackedInit(addr: u32, queueSize: u32): void {
  memory.fill(addr, 0, PINFL_HDR_BYTES + queueSize * PINFL_DESC_BYTES);
  store<u16>(addr, <u16>queueSize, PINFL_DESC_NUM);
  for (let i: u32 = 0; i < queueSize; i++) store<u16>(entryAt(addr, i), <u16>(i + 1), PINFLD_NEXT);
  store<u8>(addr, 1, PINFL_USED_WRAP);
  store<u8>(addr, 1, PINFL_OLD_USED_WRAP);
  store<u16>(addr, 1, PINFL_VERSION);
}

/**
 * Record the chain of `slots` ring descriptors at position `pos` (validated by the caller). Returns
 * its token (head entry | slots << 16), or 0xffff | slots << 16 when the free list is corrupt (the
 * completion is then refused as ERR_USED_ID).
 */
export function inflightPackedFetch(qs: u32, infl: u32, pos: u32, slots: u32): u32 {
  const size = load<u32>(qs, QS_SIZE_FIELD);
  const ring = load<u32>(qs, QS_DESC);
  const head = <u32>load<u16>(infl, PINFL_FREE_HEAD);
  if (head >= size) return NO_ENTRY | (slots << PACKED_TOKEN_SLOTS_SHIFT);
  let e = head;
  let last = head;
  let slot = pos & 0x7fff;
  for (let k: u32 = 0; k < slots; k++) {
    if (e >= size) return NO_ENTRY | (slots << PACKED_TOKEN_SLOTS_SHIFT);
    const d = ring + (slot << 4);
    const x = entryAt(infl, e);
    store<u64>(x, load<u64>(d, 0), PINFLD_ADDR);
    store<u32>(x, load<u32>(d, 8), PINFLD_LEN);
    store<u16>(x, load<u16>(d, 12), PINFLD_ID);
    store<u16>(x, load<u16>(d, 14), PINFLD_FLAGS);
    last = e;
    e = <u32>load<u16>(x, PINFLD_NEXT);
    slot++;
    if (slot == size) slot = 0;
  }
  const h = entryAt(infl, head);
  const counter = load<u64>(qs, QS_INFLIGHT_COUNTER);
  store<u64>(qs, counter + 1, QS_INFLIGHT_COUNTER);
  store<u16>(h, <u16>slots, PINFLD_NUM);
  store<u16>(h, <u16>last, PINFLD_LAST);
  store<u64>(h, counter, PINFLD_COUNTER);
  store<u8>(h, 1, PINFLD_INFLIGHT);
  store<u16>(infl, <u16>e, PINFL_FREE_HEAD);
  store<u16>(infl, <u16>e, PINFL_OLD_FREE_HEAD);
  return head | (slots << PACKED_TOKEN_SLOTS_SHIFT);
}

/**
 * Completion of the chain whose head entry is `head`: its buffer id (from the last entry), or
 * 0xffff if `head` is not an in-flight head entry. Returns the entries to the free list and advances
 * used_idx / used_wrap_counter by the chain's slots; inflight stays set until inflightPackedCommit.
 */
export function inflightPackedUsed(infl: u32, head: u32, size: u32): u32 {
  if (head >= size) return NO_ENTRY;
  const h = entryAt(infl, head);
  const last = <u32>load<u16>(h, PINFLD_LAST);
  const num = <u32>load<u16>(h, PINFLD_NUM);
  if (load<u8>(h, PINFLD_INFLIGHT) != 1 || last >= size || num == 0 || num > size) return NO_ENTRY;
  const id = <u32>load<u16>(entryAt(infl, last), PINFLD_ID);
  store<u16>(entryAt(infl, last), load<u16>(infl, PINFL_FREE_HEAD), PINFLD_NEXT);
  store<u16>(infl, <u16>head, PINFL_FREE_HEAD);
  let used = <u32>load<u16>(infl, PINFL_USED_IDX) + num;
  if (used >= size) {
    used -= size;
    store<u8>(infl, load<u8>(infl, PINFL_USED_WRAP) ^ 1, PINFL_USED_WRAP);
  }
  store<u16>(infl, <u16>used, PINFL_USED_IDX);
  return id;
}

/** Clear inflight on the free list from free_head until old_free_head (at most N entries). */
function clearReturned(infl: u32, size: u32, stopAtOld: bool): void {
  const stop = stopAtOld ? <u32>load<u16>(infl, PINFL_OLD_FREE_HEAD) : NO_ENTRY;
  let e = <u32>load<u16>(infl, PINFL_FREE_HEAD);
  for (let k: u32 = 0; k < size && e < size && e != stop; k++) {
    const x = entryAt(infl, e);
    store<u8>(x, 0, PINFLD_INFLIGHT);
    e = <u32>load<u16>(x, PINFLD_NEXT);
  }
}

/** After the batch's used flags reached the ring: clear the completed chains, snapshot old_* = current. */
export function inflightPackedCommit(infl: u32, size: u32): void {
  clearReturned(infl, size, true);
  store<u16>(infl, load<u16>(infl, PINFL_FREE_HEAD), PINFL_OLD_FREE_HEAD);
  store<u16>(infl, load<u16>(infl, PINFL_USED_IDX), PINFL_OLD_USED_IDX);
  store<u8>(infl, load<u8>(infl, PINFL_USED_WRAP), PINFL_OLD_USED_WRAP);
}

// @ts-ignore: decorator
@inline
function counterOf(infl: u32, heads: u32, a: u32): u64 {
  return load<u64>(entryAt(infl, <u32>load<u16>(heads + (a << 1))), PINFLD_COUNTER);
}

/** Insertion sort of n u16 head entries by counter (n is the in-flight count, small). */
function sortByCounter(infl: u32, heads: u32, n: u32): void {
  for (let i: u32 = 1; i < n; i++) {
    const v = load<u16>(heads + (i << 1));
    const c = load<u64>(entryAt(infl, <u32>v), PINFLD_COUNTER);
    let j = i;
    while (j > 0 && counterOf(infl, heads, j - 1) > c) {
      store<u16>(heads + (j << 1), load<u16>(heads + ((j - 1) << 1)));
      j--;
    }
    store<u16>(heads + (j << 1), v);
  }
}

/**
 * Reconnect (A.10 packed). Needs packedConfigure first. A region with version 0 or another desc_num
 * is initialised (at the configured positions' used side) and reported empty. Otherwise:
 *  1. used_idx != old_used_idx: the last batch was completed in the region; if the ring slot at
 *     old_used_idx shows a used descriptor for old_used_wrap, its publish reached the driver: commit;
 *     else roll back (current = old_*).
 *  2. clear inflight on every free-list entry;
 *  3. write the head entries still in flight, by counter, as u16 at outAddr (room for N); return count.
 * The queue's positions are taken from the region (the front-end cannot know them for packed rings):
 * next used = used_idx | wrap << 15, next avail = that plus the slots of the chains in flight.
 */
export function inflightPackedRecover(qs: u32, outAddr: u32): i32 {
  const infl = load<u32>(qs, QS_INFLIGHT);
  if (infl == 0) return 0;
  const size = load<u32>(qs, QS_SIZE_FIELD);
  if (load<u16>(infl, PINFL_VERSION) != 1 || <u32>load<u16>(infl, PINFL_DESC_NUM) != size) {
    inflightPackedInit(infl, size);
    const used = <u32>load<u16>(qs, QS_NEXT_USED);
    store<u16>(infl, <u16>(used & 0x7fff), PINFL_USED_IDX);
    store<u16>(infl, <u16>(used & 0x7fff), PINFL_OLD_USED_IDX);
    store<u8>(infl, <u8>(used >>> 15), PINFL_USED_WRAP);
    store<u8>(infl, <u8>(used >>> 15), PINFL_OLD_USED_WRAP);
    return 0;
  }
  const cur = <u32>load<u16>(infl, PINFL_USED_IDX) | (<u32>load<u8>(infl, PINFL_USED_WRAP) << 15);
  const oldIdx = <u32>load<u16>(infl, PINFL_OLD_USED_IDX);
  const oldWrap = <u32>load<u8>(infl, PINFL_OLD_USED_WRAP) & 1;
  if (cur != (oldIdx | (oldWrap << 15)) && oldIdx < size) {
    const flags = <u32>atomic.load<u16>(load<u32>(qs, QS_DESC) + (oldIdx << 4), 14);
    const used = ((flags >>> 7) & 1) == oldWrap && ((flags >>> 15) & 1) == oldWrap;
    if (used) {
      inflightPackedCommit(infl, size);
    } else {
      store<u16>(infl, load<u16>(infl, PINFL_OLD_FREE_HEAD), PINFL_FREE_HEAD);
      store<u16>(infl, <u16>oldIdx, PINFL_USED_IDX);
      store<u8>(infl, <u8>oldWrap, PINFL_USED_WRAP);
    }
  }
  clearReturned(infl, size, false);
  let count: u32 = 0;
  let slots: u32 = 0;
  let next = load<u64>(qs, QS_INFLIGHT_COUNTER);
  for (let e: u32 = 0; e < size; e++) {
    const x = entryAt(infl, e);
    if (load<u8>(x, PINFLD_INFLIGHT) != 1) continue;
    store<u16>(outAddr + (count << 1), <u16>e);
    count++;
    slots += <u32>load<u16>(x, PINFLD_NUM);
    const c = load<u64>(x, PINFLD_COUNTER);
    if (c >= next) next = c + 1;
  }
  store<u64>(qs, next, QS_INFLIGHT_COUNTER);
  sortByCounter(infl, outAddr, count);
  let usedIdx = <u32>load<u16>(infl, PINFL_USED_IDX);
  if (usedIdx >= size) usedIdx = 0;
  const usedPos = usedIdx | ((<u32>load<u8>(infl, PINFL_USED_WRAP) & 1) << 15);
  store<u16>(qs, <u16>usedPos, QS_NEXT_USED);
  // at most one lap of slots can be in flight; more means a corrupt region: keep the position sane
  let avail = usedPos;
  let left = slots % (size * 2);
  while (left > 0) {
    const step = left > size - (avail & 0x7fff) ? size - (avail & 0x7fff) : left;
    let i = (avail & 0x7fff) + step;
    let w = avail & 0x8000;
    if (i >= size) {
      i -= size;
      w ^= 0x8000;
    }
    avail = i | w;
    left -= step;
  }
  store<u16>(qs, <u16>avail, QS_LAST_AVAIL);
  return <i32>count;
}

/**
 * Copy the descriptors of in-flight chain `head` (ring format, 16 bytes each) to `out` (room for
 * `cap`); their count, or 0 when `head` is not an in-flight head entry or the chain does not fit.
 */
export function inflightPackedCopyChain(infl: u32, head: u32, size: u32, out: u32, cap: u32): u32 {
  if (head >= size) return 0;
  const h = entryAt(infl, head);
  const num = <u32>load<u16>(h, PINFLD_NUM);
  if (load<u8>(h, PINFLD_INFLIGHT) != 1 || num == 0 || num > cap || num > size) return 0;
  let e = head;
  for (let k: u32 = 0; k < num; k++) {
    if (e >= size) return 0;
    const x = entryAt(infl, e);
    const d = out + (k << 4);
    store<u64>(d, load<u64>(x, PINFLD_ADDR), 0);
    store<u32>(d, load<u32>(x, PINFLD_LEN), 8);
    store<u16>(d, load<u16>(x, PINFLD_ID), 12);
    // the copy's NEXT flags say where the chain ends; keep them
    store<u16>(d, load<u16>(x, PINFLD_FLAGS), 14);
    e = <u32>load<u16>(x, PINFLD_NEXT);
  }
  return num;
}
