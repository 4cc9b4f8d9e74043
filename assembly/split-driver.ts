// Guest (driver) side of a split virtqueue, for our built-in front-end and the benchmarks. State is a
// DS_* block at `ds` in the front-end's own memory; the rings are wherever the caller put them (wasm
// addresses), and descriptors carry gpa = wasm address + DS_GPA_DELTA.
//
// Two modes:
//  - fixed chains (benchmarks): drvSetupFixedChains gives every head a permanent chain; drvSubmit /
//    drvReap move whole chains between a free stack and the rings.
//  - generic: drvAddChain allocates descriptors from a free list (linked through desc.next, as Linux
//    does), drvKickAvail publishes, drvReapTo returns (id, len) pairs and frees the descriptors.
//
// Ordering mirrors the device side: avail.idx with one atomic store (release) per publish; used.idx
// with an atomic load (acquire); a full fence before reading avail_event / used.flags.

import { addStat } from './counters';
import {
  DS_SIZE_FIELD, DS_FLAGS, DS_DESC, DS_AVAIL, DS_USED, DS_NUM_FREE, DS_GPA_DELTA, DS_FREE_HEAD, DS_AVAIL_IDX,
  DS_LAST_USED, DS_KICK_AVAIL, DS_FREE_CHAINS, DS_DESCS_PER_CHAIN, DS_ERRORS, DS_STAT_SUBMITTED,
  DS_STAT_REAPED, DS_STAT_USED_BYTES, DS_STAT_KICKS, DS_STAT_KICKS_SUPPRESSED, DS_OUTSTANDING, DS_CHAIN_LEN,
  DS_FREE_STACK, DS_BYTES, DSF_EVENT_IDX, DSF_FIXED, DSF_INTR_OFF,
  DRV_FIXED_READ, DRV_FIXED_WRITE, DRV_FIXED_READ_THEN_WRITE, DRV_SEG_BYTES, DRV_SEG_ADDR, DRV_SEG_LEN,
  DRV_SEG_FLAGS, DRV_SEG_F_WRITE, DRV_USED_BYTES,
  VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_USED_F_NO_NOTIFY, QUEUE_SIZE_MAX,
} from './layout';
import { needEventInline, fullFence } from './event-idx';
import { DSF_PACKED, DRV_INIT_EVENT_IDX, DRV_INIT_PACKED } from './layout';
import {
  pdrvInit, pdrvSetupFixedChains, pdrvSubmit, pdrvAddChain, pdrvNeedKick, pdrvReapTo, pdrvSetInterrupts,
  pdrvUsedPending,
} from './packed-driver';

// A DS block set up with DRV_INIT_PACKED drives a packed ring: each entry point below hands it to
// packed-driver.ts first thing, so the front-end's workers never know the ring format.
// @ts-ignore: decorator
@inline
function isPacked(ds: u32): bool {
  return (load<u32>(ds, DS_FLAGS) & DSF_PACKED) != 0;
}

// @ts-ignore: decorator
@inline
function writeDesc(d: u32, addr: u64, len: u32, flags: u32, next: u32): void {
  store<u64>(d, addr, 0);
  store<u32>(d, len, 8);
  store<u32>(d, (flags & 0xffff) | (next << 16), 12);
}

/**
 * Initialise a driver: zero the three rings and the state block, chain all descriptors into the
 * free list. size must be a power of two <= 32768, ds 8-aligned, avail 2- and used 4-aligned
 * (returns -1 otherwise, else 0). gpaOfWasm0 is the delta with gpa = wasm address + delta
 * (mod 2^64). eventIdx: DRV_INIT_* bits (EVENT_IDX negotiated; PACKED: a packed ring, whose
 * avail / used are then the driver / device event suppression structures).
 */
export function drvInit(
  ds: u32, size: u32, descAddr: u32, availAddr: u32, usedAddr: u32, gpaOfWasm0: u64, eventIdx: u32,
): i32 {
  if (eventIdx & DRV_INIT_PACKED) return pdrvInit(ds, size, descAddr, availAddr, usedAddr, gpaOfWasm0, (eventIdx & DRV_INIT_EVENT_IDX) != 0);
  if (size == 0 || size > QUEUE_SIZE_MAX || (size & (size - 1)) != 0) return -1;
  if ((ds & 7) != 0 || (availAddr & 1) != 0 || (usedAddr & 3) != 0) return -1;
  memory.fill(ds, 0, DS_BYTES);
  memory.fill(descAddr, 0, size << 4);
  memory.fill(availAddr, 0, 6 + (size << 1));
  memory.fill(usedAddr, 0, 6 + (size << 3));
  store<u32>(ds, size, DS_SIZE_FIELD);
  store<u32>(ds, (eventIdx & DRV_INIT_EVENT_IDX) != 0 ? DSF_EVENT_IDX : 0, DS_FLAGS);
  store<u32>(ds, descAddr, DS_DESC);
  store<u32>(ds, availAddr, DS_AVAIL);
  store<u32>(ds, usedAddr, DS_USED);
  store<u64>(ds, gpaOfWasm0, DS_GPA_DELTA);
  for (let i: u32 = 0; i + 1 < size; i++) store<u16>(descAddr + (i << 4), <u16>(i + 1), 14);
  store<u16>(ds, 0, DS_FREE_HEAD);
  store<u32>(ds, size, DS_NUM_FREE);
  return 0;
}

/**
 * Benchmark mode: head h = c * descsPerChain permanently owns descriptors h .. h+descsPerChain-1,
 * descriptor i pointing at bufAddr + i * bufLen (bufLen bytes). writable: DRV_FIXED_READ,
 * DRV_FIXED_WRITE or DRV_FIXED_READ_THEN_WRITE. Returns the number of chains (size / descsPerChain),
 * all free; -1 for bad arguments.
 */
export function drvSetupFixedChains(ds: u32, bufAddr: u32, bufLen: u32, descsPerChain: u32, writable: u32): i32 {
  if (isPacked(ds)) return pdrvSetupFixedChains(ds, bufAddr, bufLen, descsPerChain, writable);
  const size = load<u32>(ds, DS_SIZE_FIELD);
  if (descsPerChain == 0 || descsPerChain > size || writable > DRV_FIXED_READ_THEN_WRITE) return -1;
  if (<u64>bufAddr + <u64>bufLen * <u64>size > 0x1_0000_0000) return -1;
  const desc = load<u32>(ds, DS_DESC);
  const delta = load<u64>(ds, DS_GPA_DELTA);
  const chains = size / descsPerChain;
  for (let c: u32 = 0; c < chains; c++) {
    const head = c * descsPerChain;
    for (let j: u32 = 0; j < descsPerChain; j++) {
      const i = head + j;
      let flags: u32 = j + 1 < descsPerChain ? VIRTQ_DESC_F_NEXT : 0;
      if (writable == DRV_FIXED_WRITE || (writable == DRV_FIXED_READ_THEN_WRITE && j > 0)) flags |= VIRTQ_DESC_F_WRITE;
      writeDesc(desc + (i << 4), <u64>(bufAddr + i * bufLen) + delta, bufLen, flags, j + 1 < descsPerChain ? i + 1 : 0);
    }
    // stack: the last pushed is taken first, so push in reverse to hand out head 0 first
    const h = (chains - 1 - c) * descsPerChain;
    store<u16>(ds + DS_FREE_STACK + (c << 1), <u16>h);
    store<u16>(ds + DS_CHAIN_LEN + (h << 1), 0);
  }
  store<u32>(ds, chains, DS_FREE_CHAINS);
  store<u32>(ds, descsPerChain, DS_DESCS_PER_CHAIN);
  store<u32>(ds, 0, DS_NUM_FREE);
  store<u32>(ds, load<u32>(ds, DS_FLAGS) | DSF_FIXED, DS_FLAGS);
  return <i32>chains;
}

/**
 * Fixed-chain mode: make up to `max` free chains available with one release store of avail.idx.
 * Returns how many (0 in generic mode).
 */
export function drvSubmit(ds: u32, max: i32): i32 {
  if (isPacked(ds)) return pdrvSubmit(ds, max);
  if ((load<u32>(ds, DS_FLAGS) & DSF_FIXED) == 0 || max <= 0) return 0;
  let free = load<u32>(ds, DS_FREE_CHAINS);
  let n = <u32>max < free ? <u32>max : free;
  if (n == 0) return 0;
  const size = load<u32>(ds, DS_SIZE_FIELD);
  const mask = size - 1;
  const avail = load<u32>(ds, DS_AVAIL);
  const dpc = <u16>load<u32>(ds, DS_DESCS_PER_CHAIN);
  let ai = <u32>load<u16>(ds, DS_AVAIL_IDX);
  for (let k: u32 = 0; k < n; k++) {
    free--;
    const head = <u32>load<u16>(ds + DS_FREE_STACK + (free << 1));
    store<u16>(ds + DS_CHAIN_LEN + (head << 1), dpc);
    store<u16>(avail + 4 + ((ai & mask) << 1), <u16>head);
    ai++;
  }
  atomic.store<u16>(avail, <u16>ai, 2); // release: ring entries before avail.idx
  store<u16>(ds, <u16>ai, DS_AVAIL_IDX);
  store<u32>(ds, free, DS_FREE_CHAINS);
  store<u32>(ds, load<u32>(ds, DS_OUTSTANDING) + n, DS_OUTSTANDING);
  addStat(ds, DS_STAT_SUBMITTED, <u64>n);
  return <i32>n;
}

/**
 * Generic mode: build a chain from nSegs records {wasmAddr u32, len u32, flags u32 (DRV_SEG_F_WRITE),
 * pad u32} at segsAddr, put its head into the next avail slot (not yet published: drvKickAvail).
 * Returns the head, or -1 if there are not enough free descriptors (or nSegs is 0, or fixed mode).
 */
export function drvAddChain(ds: u32, segsAddr: u32, nSegs: u32): i32 {
  if (isPacked(ds)) return pdrvAddChain(ds, segsAddr, nSegs);
  if ((load<u32>(ds, DS_FLAGS) & DSF_FIXED) != 0 || nSegs == 0) return -1;
  const numFree = load<u32>(ds, DS_NUM_FREE);
  if (nSegs > numFree) return -1;
  const size = load<u32>(ds, DS_SIZE_FIELD);
  const desc = load<u32>(ds, DS_DESC);
  const avail = load<u32>(ds, DS_AVAIL);
  const delta = load<u64>(ds, DS_GPA_DELTA);
  const head = <u32>load<u16>(ds, DS_FREE_HEAD);
  let i = head;
  for (let k: u32 = 0; k < nSegs; k++) {
    const s = segsAddr + k * DRV_SEG_BYTES;
    const d = desc + (i << 4);
    const freeNext = <u32>load<u16>(d, 14);
    const last = k + 1 == nSegs;
    let flags: u32 = last ? 0 : VIRTQ_DESC_F_NEXT;
    if (load<u32>(s, DRV_SEG_FLAGS) & DRV_SEG_F_WRITE) flags |= VIRTQ_DESC_F_WRITE;
    writeDesc(d, <u64>load<u32>(s, DRV_SEG_ADDR) + delta, load<u32>(s, DRV_SEG_LEN), flags, last ? 0 : freeNext);
    if (last) store<u16>(ds, <u16>freeNext, DS_FREE_HEAD);
    i = freeNext;
  }
  store<u32>(ds, numFree - nSegs, DS_NUM_FREE);
  store<u16>(ds + DS_CHAIN_LEN + (head << 1), <u16>nSegs);
  const ai = <u32>load<u16>(ds, DS_AVAIL_IDX);
  store<u16>(avail + 4 + ((ai & (size - 1)) << 1), <u16>head);
  store<u16>(ds, <u16>(ai + 1), DS_AVAIL_IDX);
  store<u32>(ds, load<u32>(ds, DS_OUTSTANDING) + 1, DS_OUTSTANDING);
  addStat(ds, DS_STAT_SUBMITTED, 1);
  return <i32>head;
}

/** Generic mode: publish the chains added so far (one release store of avail.idx). */
export function drvKickAvail(ds: u32): void {
  if (isPacked(ds)) return; // packed: drvAddChain made the chain available already
  atomic.store<u16>(load<u32>(ds, DS_AVAIL), load<u16>(ds, DS_AVAIL_IDX), 2);
}

/**
 * Whether the device wants a kick for the buffers published since the last call (B.4): with
 * EVENT_IDX need_event(avail_event, new, old), else !(used.flags & NO_NOTIFY). 0 when nothing new.
 */
export function drvNeedKick(ds: u32): i32 {
  if (isPacked(ds)) return pdrvNeedKick(ds);
  fullFence(ds + DS_FLAGS); // avail.idx store before the avail_event / used.flags load
  const newIdx = <u32>load<u16>(ds, DS_AVAIL_IDX);
  const old = <u32>load<u16>(ds, DS_KICK_AVAIL);
  if (newIdx == old) return 0;
  store<u16>(ds, <u16>newIdx, DS_KICK_AVAIL);
  const used = load<u32>(ds, DS_USED);
  let kick: bool;
  if (load<u32>(ds, DS_FLAGS) & DSF_EVENT_IDX) {
    const size = load<u32>(ds, DS_SIZE_FIELD);
    kick = needEventInline(<u32>atomic.load<u16>(used + 4 + (size << 3)), newIdx, old);
  } else {
    kick = (atomic.load<u16>(used) & VIRTQ_USED_F_NO_NOTIFY) == 0;
  }
  if (kick) {
    addStat(ds, DS_STAT_KICKS, 1);
    return 1;
  }
  addStat(ds, DS_STAT_KICKS_SUPPRESSED, 1);
  return 0;
}

/**
 * Reap up to `max` used elements: return their chains to the free stack / free list, count them and
 * their lengths, and write (id u32, len u32) pairs to outAddr when it is not 0. Elements whose id is
 * not an outstanding head are counted in DS_ERRORS and skipped. With EVENT_IDX (interrupts on) sets
 * used_event = the next used index, so the device notifies on the next completion. Returns the number
 * of valid elements reaped.
 */
export function drvReapTo(ds: u32, outAddr: u32, max: i32): i32 {
  if (isPacked(ds)) return pdrvReapTo(ds, outAddr, max);
  if (max <= 0) return 0;
  const size = load<u32>(ds, DS_SIZE_FIELD);
  const mask = size - 1;
  const used = load<u32>(ds, DS_USED);
  const avail = load<u32>(ds, DS_AVAIL);
  const desc = load<u32>(ds, DS_DESC);
  const flags = load<u32>(ds, DS_FLAGS);
  const fixed = (flags & DSF_FIXED) != 0;
  const usedIdx = <u32>atomic.load<u16>(used, 2); // acquire: elements after the index
  let lu = <u32>load<u16>(ds, DS_LAST_USED);
  let n = (usedIdx - lu) & 0xffff;
  if (n > <u32>max) n = <u32>max;
  let freeChains = load<u32>(ds, DS_FREE_CHAINS);
  let freeHead = <u32>load<u16>(ds, DS_FREE_HEAD);
  let numFree = load<u32>(ds, DS_NUM_FREE);
  let good: u32 = 0;
  let bytes: u64 = 0;
  let errors: u32 = 0;
  for (let k: u32 = 0; k < n; k++, lu++) {
    const e = used + 4 + ((lu & mask) << 3);
    const id = load<u32>(e, 0);
    const len = load<u32>(e, 4);
    const cl = id < size ? <u32>load<u16>(ds + DS_CHAIN_LEN + (id << 1)) : 0;
    if (cl == 0) {
      errors++;
      continue;
    }
    store<u16>(ds + DS_CHAIN_LEN + (id << 1), 0);
    if (fixed) {
      store<u16>(ds + DS_FREE_STACK + (freeChains << 1), <u16>id);
      freeChains++;
    } else {
      let last = id;
      for (let j: u32 = 1; j < cl; j++) last = <u32>load<u16>(desc + (last << 4), 14);
      store<u16>(desc + (last << 4), <u16>freeHead, 14);
      freeHead = id;
      numFree += cl;
    }
    if (outAddr != 0) {
      const o = outAddr + good * DRV_USED_BYTES;
      store<u32>(o, id, 0);
      store<u32>(o, len, 4);
    }
    good++;
    bytes += <u64>len;
  }
  store<u16>(ds, <u16>lu, DS_LAST_USED);
  store<u32>(ds, freeChains, DS_FREE_CHAINS);
  store<u16>(ds, <u16>freeHead, DS_FREE_HEAD);
  store<u32>(ds, numFree, DS_NUM_FREE);
  if (errors != 0) store<u32>(ds, load<u32>(ds, DS_ERRORS) + errors, DS_ERRORS);
  store<u32>(ds, load<u32>(ds, DS_OUTSTANDING) - good, DS_OUTSTANDING);
  addStat(ds, DS_STAT_REAPED, <u64>good);
  addStat(ds, DS_STAT_USED_BYTES, bytes);
  if ((flags & (DSF_EVENT_IDX | DSF_INTR_OFF)) == DSF_EVENT_IDX) {
    atomic.store<u16>(avail + 4 + (size << 1), <u16>lu); // used_event
  }
  return <i32>good;
}

/** drvReapTo without the (id, len) output: for the fixed-chain benchmarks. */
export function drvReap(ds: u32, max: i32): i32 {
  return drvReapTo(ds, 0, max);
}

/**
 * Ask for (on != 0) or suppress device interrupts: without EVENT_IDX through avail.flags
 * NO_INTERRUPT, with EVENT_IDX through used_event (= next used index when on; = one behind when off,
 * which the device only crosses after 2^16 completions). When turning them on, fences and returns the
 * used elements already pending (reap them before sleeping, or a completion is missed); else 0.
 */
export function drvSetInterrupts(ds: u32, on: u32): i32 {
  if (isPacked(ds)) return pdrvSetInterrupts(ds, on);
  const flags = load<u32>(ds, DS_FLAGS);
  const size = load<u32>(ds, DS_SIZE_FIELD);
  const avail = load<u32>(ds, DS_AVAIL);
  const lu = <u32>load<u16>(ds, DS_LAST_USED);
  store<u32>(ds, on != 0 ? flags & ~DSF_INTR_OFF : flags | DSF_INTR_OFF, DS_FLAGS);
  if (flags & DSF_EVENT_IDX) {
    atomic.store<u16>(avail + 4 + (size << 1), <u16>(on != 0 ? lu : lu - 1));
  } else {
    const f = atomic.load<u16>(avail);
    atomic.store<u16>(avail, on != 0 ? f & ~<u16>VIRTQ_AVAIL_F_NO_INTERRUPT : f | <u16>VIRTQ_AVAIL_F_NO_INTERRUPT);
  }
  if (on == 0) return 0;
  fullFence(ds + DS_FLAGS);
  return <i32>((<u32>atomic.load<u16>(load<u32>(ds, DS_USED), 2) - lu) & 0xffff);
}

/** Used elements published by the device and not reaped yet (acquire load of used.idx). */
export function drvUsedPending(ds: u32): i32 {
  if (isPacked(ds)) return pdrvUsedPending(ds);
  return <i32>((<u32>atomic.load<u16>(load<u32>(ds, DS_USED), 2) - <u32>load<u16>(ds, DS_LAST_USED)) & 0xffff);
}
