// Guest (driver) side of a packed virtqueue (B.2), for our built-in front-end and the benchmarks: the
// same API as split-driver.ts, whose entry points hand a DS block set up with DRV_INIT_PACKED here.
// Buffer ids come from a free stack (DS_FREE_STACK, DS_FREE_CHAINS of them); DS_CHAIN_LEN[id] is the
// ring slots an outstanding id took (the driver advances its used position by it); positions are
// index | wrap << 15.
//
// Ordering (B.5 from the driver's side): a chain's other descriptors first, its head's flags last with
// an atomic store (the device polls the head); used descriptors: atomic load of the flags before id/len;
// a full fence before reading the device's event suppression.
//
// Fixed-chain mode writes chain c (id c) at the next slots on every submit, with descriptor j pointing at
// DS_PK_BUF_ADDR + (c * dpc + j) * DS_PK_BUF_LEN (the split driver's buffer layout). Generic mode makes a
// chain available at once in drvAddChain (drvKickAvail has nothing left to publish).

import { addStat } from './counters';
import {
  DS_SIZE_FIELD, DS_FLAGS, DS_DESC, DS_AVAIL, DS_USED, DS_NUM_FREE, DS_GPA_DELTA, DS_AVAIL_IDX, DS_LAST_USED,
  DS_KICK_AVAIL, DS_FREE_CHAINS, DS_DESCS_PER_CHAIN, DS_ERRORS, DS_STAT_SUBMITTED, DS_STAT_REAPED,
  DS_STAT_USED_BYTES, DS_STAT_KICKS, DS_STAT_KICKS_SUPPRESSED, DS_OUTSTANDING, DS_CHAIN_LEN, DS_FREE_STACK,
  DS_BYTES, DSF_EVENT_IDX, DSF_FIXED, DSF_INTR_OFF, DSF_PACKED, DS_PK_BUF_ADDR, DS_PK_BUF_LEN, DS_PK_WRITABLE,
  DRV_FIXED_WRITE, DRV_FIXED_READ_THEN_WRITE, DRV_SEG_BYTES, DRV_SEG_ADDR, DRV_SEG_LEN, DRV_SEG_FLAGS,
  DRV_SEG_F_WRITE, DRV_USED_BYTES, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_AVAIL, VIRTQ_DESC_F_USED,
  RING_EVENT_FLAGS_ENABLE, RING_EVENT_FLAGS_DISABLE, RING_EVENT_FLAGS_DESC, QUEUE_SIZE_MAX,
} from './layout';
import { needEventInline, fullFence } from './event-idx';

const WRAP: u32 = 1 << 15;

// @ts-ignore: decorator
@inline
function advance(pos: u32, n: u32, size: u32): u32 {
  let i = (pos & 0x7fff) + n;
  let w = pos & WRAP;
  if (i >= size) {
    i -= size;
    w ^= WRAP;
  }
  return i | w;
}

/** The AVAIL/USED bits that make a descriptor available at position pos. */
// @ts-ignore: decorator
@inline
function availBits(pos: u32): u32 {
  return (pos & WRAP) != 0 ? VIRTQ_DESC_F_AVAIL : VIRTQ_DESC_F_USED;
}

export function pdrvInit(ds: u32, size: u32, descAddr: u32, drvEvent: u32, devEvent: u32, gpaOfWasm0: u64, eventIdx: bool): i32 {
  if (size == 0 || size > QUEUE_SIZE_MAX) return -1;
  if ((ds & 7) != 0 || (descAddr & 15) != 0 || (drvEvent & 3) != 0 || (devEvent & 3) != 0) return -1;
  memory.fill(ds, 0, DS_BYTES);
  memory.fill(descAddr, 0, size << 4);
  store<u32>(drvEvent, 0); // ENABLE
  store<u32>(devEvent, 0);
  store<u32>(ds, size, DS_SIZE_FIELD);
  store<u32>(ds, (eventIdx ? DSF_EVENT_IDX : 0) | DSF_PACKED, DS_FLAGS);
  store<u32>(ds, descAddr, DS_DESC);
  store<u32>(ds, drvEvent, DS_AVAIL);
  store<u32>(ds, devEvent, DS_USED);
  store<u64>(ds, gpaOfWasm0, DS_GPA_DELTA);
  store<u16>(ds, <u16>WRAP, DS_AVAIL_IDX);
  store<u16>(ds, <u16>WRAP, DS_LAST_USED);
  store<u16>(ds, <u16>WRAP, DS_KICK_AVAIL);
  // free ids: the last pushed is taken first, so id 0 comes out first
  for (let i: u32 = 0; i < size; i++) store<u16>(ds + DS_FREE_STACK + (i << 1), <u16>(size - 1 - i));
  store<u32>(ds, size, DS_FREE_CHAINS);
  store<u32>(ds, size, DS_NUM_FREE);
  return 0;
}

export function pdrvSetupFixedChains(ds: u32, bufAddr: u32, bufLen: u32, descsPerChain: u32, writable: u32): i32 {
  const size = load<u32>(ds, DS_SIZE_FIELD);
  if (descsPerChain == 0 || descsPerChain > size || writable > DRV_FIXED_READ_THEN_WRITE) return -1;
  if (<u64>bufAddr + <u64>bufLen * <u64>size > 0x1_0000_0000) return -1;
  const chains = size / descsPerChain;
  for (let c: u32 = 0; c < chains; c++) store<u16>(ds + DS_FREE_STACK + (c << 1), <u16>(chains - 1 - c));
  store<u32>(ds, chains, DS_FREE_CHAINS);
  store<u32>(ds, descsPerChain, DS_DESCS_PER_CHAIN);
  store<u32>(ds, bufAddr, DS_PK_BUF_ADDR);
  store<u32>(ds, bufLen, DS_PK_BUF_LEN);
  store<u32>(ds, writable, DS_PK_WRITABLE);
  store<u32>(ds, load<u32>(ds, DS_FLAGS) | DSF_FIXED, DS_FLAGS);
  return <i32>chains;
}

/**
 * Write one descriptor of a chain at position pos. The head (k == 0) gets its flags later (publishHead).
 */
// @ts-ignore: decorator
@inline
function writeDesc(d: u32, addr: u64, len: u32, id: u32, flags: u32, head: bool): void {
  store<u64>(d, addr, 0);
  store<u32>(d, len, 8);
  store<u16>(d, <u16>id, 12);
  if (!head) store<u16>(d, <u16>flags, 14);
}

/** Take a free id for a chain of `slots` slots and account for it; the id. */
// @ts-ignore: decorator
@inline
function takeId(ds: u32, slots: u32): u32 {
  const free = load<u32>(ds, DS_FREE_CHAINS) - 1;
  store<u32>(ds, free, DS_FREE_CHAINS);
  const id = <u32>load<u16>(ds + DS_FREE_STACK + (free << 1));
  store<u16>(ds + DS_CHAIN_LEN + (id << 1), <u16>slots);
  store<u32>(ds, load<u32>(ds, DS_NUM_FREE) - slots, DS_NUM_FREE);
  store<u32>(ds, load<u32>(ds, DS_OUTSTANDING) + 1, DS_OUTSTANDING);
  return id;
}

export function pdrvSubmit(ds: u32, max: i32): i32 {
  const flags = load<u32>(ds, DS_FLAGS);
  if ((flags & DSF_FIXED) == 0 || max <= 0) return 0;
  const size = load<u32>(ds, DS_SIZE_FIELD);
  const desc = load<u32>(ds, DS_DESC);
  const delta = load<u64>(ds, DS_GPA_DELTA);
  const dpc = load<u32>(ds, DS_DESCS_PER_CHAIN);
  const bufAddr = load<u32>(ds, DS_PK_BUF_ADDR);
  const bufLen = load<u32>(ds, DS_PK_BUF_LEN);
  const writable = load<u32>(ds, DS_PK_WRITABLE);
  let pos = <u32>load<u16>(ds, DS_AVAIL_IDX);
  let n: u32 = 0;
  while (n < <u32>max && load<u32>(ds, DS_FREE_CHAINS) != 0 && load<u32>(ds, DS_NUM_FREE) >= dpc) {
    const id = takeId(ds, dpc);
    const head = pos;
    let headFlags: u32 = 0;
    for (let j: u32 = 0; j < dpc; j++) {
      let f: u32 = availBits(pos);
      if (j + 1 < dpc) f |= VIRTQ_DESC_F_NEXT;
      if (writable == DRV_FIXED_WRITE || (writable == DRV_FIXED_READ_THEN_WRITE && j > 0)) f |= VIRTQ_DESC_F_WRITE;
      const i = id * dpc + j;
      writeDesc(desc + ((pos & 0x7fff) << 4), <u64>(bufAddr + i * bufLen) + delta, bufLen, id, f, j == 0);
      if (j == 0) headFlags = f;
      pos = advance(pos, 1, size);
    }
    atomic.store<u16>(desc + ((head & 0x7fff) << 4), <u16>headFlags, 14); // release: the chain before its head
    n++;
  }
  store<u16>(ds, <u16>pos, DS_AVAIL_IDX);
  addStat(ds, DS_STAT_SUBMITTED, <u64>n);
  return <i32>n;
}

export function pdrvAddChain(ds: u32, segsAddr: u32, nSegs: u32): i32 {
  if ((load<u32>(ds, DS_FLAGS) & DSF_FIXED) != 0 || nSegs == 0) return -1;
  if (nSegs > load<u32>(ds, DS_NUM_FREE) || load<u32>(ds, DS_FREE_CHAINS) == 0) return -1;
  const size = load<u32>(ds, DS_SIZE_FIELD);
  const desc = load<u32>(ds, DS_DESC);
  const delta = load<u64>(ds, DS_GPA_DELTA);
  const id = takeId(ds, nSegs);
  let pos = <u32>load<u16>(ds, DS_AVAIL_IDX);
  const head = pos;
  let headFlags: u32 = 0;
  for (let k: u32 = 0; k < nSegs; k++) {
    const s = segsAddr + k * DRV_SEG_BYTES;
    let f: u32 = availBits(pos);
    if (k + 1 < nSegs) f |= VIRTQ_DESC_F_NEXT;
    if (load<u32>(s, DRV_SEG_FLAGS) & DRV_SEG_F_WRITE) f |= VIRTQ_DESC_F_WRITE;
    writeDesc(desc + ((pos & 0x7fff) << 4), <u64>load<u32>(s, DRV_SEG_ADDR) + delta, load<u32>(s, DRV_SEG_LEN), id, f, k == 0);
    if (k == 0) headFlags = f;
    pos = advance(pos, 1, size);
  }
  atomic.store<u16>(desc + ((head & 0x7fff) << 4), <u16>headFlags, 14);
  store<u16>(ds, <u16>pos, DS_AVAIL_IDX);
  addStat(ds, DS_STAT_SUBMITTED, 1);
  return <i32>id;
}

/**
 * Whether the device wants a kick for what was made available since the last call: its event
 * suppression flags, and under DESC the need_event test on the slot it named (as Linux's
 * virtqueue_kick_prepare_packed: an event from the previous lap counts one ring size lower).
 */
export function pdrvNeedKick(ds: u32): i32 {
  fullFence(ds + DS_FLAGS);
  const newPos = <u32>load<u16>(ds, DS_AVAIL_IDX);
  const oldPos = <u32>load<u16>(ds, DS_KICK_AVAIL);
  if (newPos == oldPos) return 0;
  store<u16>(ds, <u16>newPos, DS_KICK_AVAIL);
  const size = load<u32>(ds, DS_SIZE_FIELD);
  const dev = load<u32>(ds, DS_USED);
  const evFlags = <u32>atomic.load<u16>(dev, 2) & 3;
  let kick: bool;
  if (evFlags != RING_EVENT_FLAGS_DESC || (load<u32>(ds, DS_FLAGS) & DSF_EVENT_IDX) == 0) {
    kick = evFlags != RING_EVENT_FLAGS_DISABLE;
  } else {
    const nw = newPos & 0x7fff;
    const added = (nw + ((newPos ^ oldPos) & WRAP ? size : 0) - (oldPos & 0x7fff)) % (size * 2);
    const offWrap = <u32>atomic.load<u16>(dev);
    let off = offWrap & 0x7fff;
    if ((offWrap & WRAP) != (newPos & WRAP)) off -= size;
    kick = needEventInline(off, nw, nw - added);
  }
  if (kick) {
    addStat(ds, DS_STAT_KICKS, 1);
    return 1;
  }
  addStat(ds, DS_STAT_KICKS_SUPPRESSED, 1);
  return 0;
}

/** Interrupt wishes after reaping: DESC at the next used position under EVENT_IDX, else ENABLE. */
// @ts-ignore: decorator
@inline
function armInterrupts(ds: u32, lu: u32): void {
  const drv = load<u32>(ds, DS_AVAIL);
  if (load<u32>(ds, DS_FLAGS) & DSF_EVENT_IDX) {
    atomic.store<u16>(drv, <u16>lu);
    atomic.store<u16>(drv, <u16>RING_EVENT_FLAGS_DESC, 2);
  } else {
    atomic.store<u16>(drv, <u16>RING_EVENT_FLAGS_ENABLE, 2);
  }
}

/** Whether the descriptor at position pos has been used by the device. */
// @ts-ignore: decorator
@inline
function isUsed(desc: u32, pos: u32): bool {
  const f = <u32>atomic.load<u16>(desc + ((pos & 0x7fff) << 4), 14); // acquire: id/len after the flags
  const w: u32 = (pos & WRAP) != 0 ? 1 : 0;
  return ((f >>> 7) & 1) == w && ((f >>> 15) & 1) == w;
}

export function pdrvReapTo(ds: u32, outAddr: u32, max: i32): i32 {
  if (max <= 0) return 0;
  const size = load<u32>(ds, DS_SIZE_FIELD);
  const desc = load<u32>(ds, DS_DESC);
  const flags = load<u32>(ds, DS_FLAGS);
  let lu = <u32>load<u16>(ds, DS_LAST_USED);
  let freeIds = load<u32>(ds, DS_FREE_CHAINS);
  let numFree = load<u32>(ds, DS_NUM_FREE);
  let good: u32 = 0;
  let bytes: u64 = 0;
  while (good < <u32>max && isUsed(desc, lu)) {
    const d = desc + ((lu & 0x7fff) << 4);
    const id = <u32>load<u16>(d, 12);
    const len = load<u32>(d, 8);
    const slots = id < size ? <u32>load<u16>(ds + DS_CHAIN_LEN + (id << 1)) : 0;
    if (slots == 0) {
      // not an outstanding id: the device is broken, and where its next used descriptor is cannot be known
      store<u32>(ds, load<u32>(ds, DS_ERRORS) + 1, DS_ERRORS);
      break;
    }
    store<u16>(ds + DS_CHAIN_LEN + (id << 1), 0);
    store<u16>(ds + DS_FREE_STACK + (freeIds << 1), <u16>id);
    freeIds++;
    numFree += slots;
    lu = advance(lu, slots, size);
    if (outAddr != 0) {
      const o = outAddr + good * DRV_USED_BYTES;
      store<u32>(o, id, 0);
      store<u32>(o, len, 4);
    }
    good++;
    bytes += <u64>len;
  }
  store<u16>(ds, <u16>lu, DS_LAST_USED);
  store<u32>(ds, freeIds, DS_FREE_CHAINS);
  store<u32>(ds, numFree, DS_NUM_FREE);
  store<u32>(ds, load<u32>(ds, DS_OUTSTANDING) - good, DS_OUTSTANDING);
  addStat(ds, DS_STAT_REAPED, <u64>good);
  addStat(ds, DS_STAT_USED_BYTES, bytes);
  if ((flags & DSF_INTR_OFF) == 0 && (flags & DSF_EVENT_IDX) != 0) armInterrupts(ds, lu);
  return <i32>good;
}

/** Interrupts on (returns 1 if a used descriptor is already waiting: reap before sleeping) or off (0). */
export function pdrvSetInterrupts(ds: u32, on: u32): i32 {
  const flags = load<u32>(ds, DS_FLAGS);
  store<u32>(ds, on != 0 ? flags & ~DSF_INTR_OFF : flags | DSF_INTR_OFF, DS_FLAGS);
  if (on == 0) {
    atomic.store<u16>(load<u32>(ds, DS_AVAIL), <u16>RING_EVENT_FLAGS_DISABLE, 2);
    return 0;
  }
  const lu = <u32>load<u16>(ds, DS_LAST_USED);
  armInterrupts(ds, lu);
  fullFence(ds + DS_FLAGS);
  return isUsed(load<u32>(ds, DS_DESC), lu) ? 1 : 0;
}

/** 1 if the next used descriptor is there, else 0 (a packed ring has no used count to read). */
export function pdrvUsedPending(ds: u32): i32 {
  return isUsed(load<u32>(ds, DS_DESC), <u32>load<u16>(ds, DS_LAST_USED)) ? 1 : 0;
}
