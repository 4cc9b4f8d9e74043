/**
 * The built-in front-end's virtio-blk driver for one queue (a piscina task, see src/frontend/blk-load.ts):
 * keeps `iodepth` requests in flight for `seconds`, each one chain [outhdr (readable)][bs of data (writable
 * for a read, readable for a write)][status byte (writable)] at a random bs-aligned offset, and checks the
 * status of every completion. Notifications as the benchmark driver does (driver-worker.ts): interrupts off
 * while completions keep coming, on (with EVENT_IDX: used_event) and a sleep on the call eventfd only when
 * nothing is used. Everything the loop touches is allocated before it starts.
 */
import { drvInitFlags, instantiateEngine } from '../src/engine/engine.js';
import { DRV_SEG_ADDR, DRV_SEG_BYTES, DRV_SEG_F_WRITE, DRV_SEG_FLAGS, DRV_SEG_LEN, DS_ERRORS, DS_STAT_KICKS } from '../src/engine/layout.js';
import { eventfdDrain, eventfdSignal, POLLIN, pollFds } from '../src/sys/syscalls.js';
import type { BlkDriverTask, BlkLatency, BlkQueueResult } from '../src/frontend/blk-load.js';

const VIRTIO_BLK_T_IN = 0;
const VIRTIO_BLK_T_OUT = 1;
const OUTHDR = 16;
const RECORD = 32; // BLK_SLOT_RECORD
const STATUS_UNSET = 0xff;
const TWO32 = 4294967296;
/** how long the in-flight requests get to complete after the measured window */
const DRAIN_MS = 3000;

// latency histogram: 0.25 µs buckets below 4096 µs, 64 µs buckets up to ~1 s, the last bucket beyond
const FINE = 16384;
const COARSE = 16384;

function histValue(b: number): number {
  return b < FINE ? (b + 0.5) / 4 : 4096 + (b - FINE + 0.5) * 64;
}

export default function runBlkDriver(t: BlkDriverTask): BlkQueueResult {
  const e = instantiateEngine(t.module, t.memory);
  if (e.drvInit(t.ds, t.size, t.desc, t.avail, t.used, t.gpaDelta, drvInitFlags(t.eventIdx, t.packed)) !== 0) throw new Error('drvInit refused the ring');
  const D = t.iodepth;
  const bs = t.bs;
  const spb = bs / 512; // sectors per block
  const type = t.write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN;
  const u8 = new Uint8Array(t.memory.buffer);
  const u32 = new Uint32Array(t.memory.buffer);
  const dataBase = t.buffers;
  const recBase = t.buffers + Math.ceil((D * bs) / 4096) * 4096;

  // three segment records per slot, written once: header, data, status
  const statusAt = new Uint32Array(D);
  const hdrWord = new Uint32Array(D);
  for (let s = 0; s < D; s++) {
    const rec = recBase + s * RECORD;
    const seg = t.segs + s * 3 * DRV_SEG_BYTES;
    const put = (i: number, addr: number, len: number, w: boolean): void => {
      const a = (seg + i * DRV_SEG_BYTES) >>> 2;
      u32[a + DRV_SEG_ADDR / 4] = addr;
      u32[a + DRV_SEG_LEN / 4] = len;
      u32[a + DRV_SEG_FLAGS / 4] = w ? DRV_SEG_F_WRITE : 0;
      u32[a + 3] = 0;
    };
    put(0, rec, OUTHDR, false);
    put(1, dataBase + s * bs, bs, !t.write);
    put(2, rec + OUTHDR, 1, true);
    statusAt[s] = rec + OUTHDR;
    hdrWord[s] = rec >>> 2;
    u32[(rec >>> 2) + 0] = type;
    u32[(rec >>> 2) + 1] = 0;
    if (t.write) u8.fill(0xa5 ^ s, dataBase + s * bs, dataBase + (s + 1) * bs);
  }
  const headSlot = new Int32Array(t.size).fill(-1);
  const issuedAt = new Float64Array(D);
  const done = new Int32Array(D);
  const hist = new Uint32Array(FINE + COARSE);
  const outWord = t.out >>> 2;
  const blocks = t.blocks;
  let rnd = t.seed >>> 0 || 1;

  const pfd = Buffer.alloc(8);
  pfd.writeInt32LE(t.callFd, 0);
  pfd.writeInt16LE(POLLIN, 4);
  let calls = 0;
  let sleepTimeouts = 0;
  const waitCall = (ms: number): void => {
    pfd.writeInt16LE(0, 6);
    if (pollFds(pfd, 1, ms) > 0) {
      if (eventfdDrain(t.callFd) > 0) calls++;
    } else sleepTimeouts++;
  };

  /** Fill slot s with a new random offset and add its chain (not yet published). */
  const issue = (s: number, now: number): void => {
    // xorshift32, two draws for the block number
    rnd ^= rnd << 13;
    rnd ^= rnd >>> 17;
    rnd ^= rnd << 5;
    const hi = rnd >>> 0;
    rnd ^= rnd << 13;
    rnd ^= rnd >>> 17;
    rnd ^= rnd << 5;
    const lo = rnd >>> 0;
    const block = Math.floor(((hi * TWO32 + lo) / (TWO32 * TWO32)) * blocks);
    const sector = block * spb;
    const h = hdrWord[s]!;
    u32[h + 2] = sector >>> 0;
    u32[h + 3] = Math.floor(sector / TWO32);
    u8[statusAt[s]!] = STATUS_UNSET;
    const head = e.drvAddChain(t.ds, t.segs + s * 3 * DRV_SEG_BYTES, 3);
    if (head < 0) throw new Error(`queue ${t.queue}: no free descriptors for request slot ${s}`);
    headSlot[head] = s;
    issuedAt[s] = now;
  };
  const publish = (): void => {
    e.drvKickAvail(t.ds);
    if (e.drvNeedKick(t.ds)) eventfdSignal(t.kickFd);
  };

  let completions = 0;
  let badStatus = 0;
  let firstBadStatus = -1;
  let outstanding = 0;
  let latSum = 0;
  let latMax = 0;
  let measuring = true;

  /** Reap what is used; resubmit while measuring. Returns how many were reaped. */
  const reap = (): number => {
    const got = e.drvReapTo(t.ds, t.out, D);
    if (got <= 0) return 0;
    const now = performance.now();
    // first every completion (drvReapTo has freed all their descriptors: a chain added now may take the
    // head of a pair further down this batch), then the new requests
    let n = 0;
    for (let i = 0; i < got; i++) {
      const id = u32[outWord + 2 * i]!;
      const s = headSlot[id]!;
      if (s < 0) continue; // the engine counts ids that were not outstanding (DS_ERRORS)
      headSlot[id] = -1;
      outstanding--;
      const st = u8[statusAt[s]!]!;
      if (st !== 0) {
        badStatus++;
        if (firstBadStatus < 0) firstBadStatus = st;
      }
      if (!measuring) continue;
      completions++;
      const us = (now - issuedAt[s]!) * 1000;
      latSum += us;
      if (us > latMax) latMax = us;
      const b = us < 4096 ? Math.floor(us * 4) : Math.min(FINE + COARSE - 1, FINE + Math.floor((us - 4096) / 64));
      hist[b < 0 ? 0 : b]++;
      done[n++] = s;
    }
    if (!measuring) return got;
    for (let i = 0; i < n; i++) issue(done[i]!, now);
    outstanding += n;
    if (n > 0) publish();
    return got;
  };

  e.drvSetInterrupts(t.ds, 0);
  const start = performance.now();
  const deadline = start + t.seconds * 1000;
  for (let s = 0; s < D; s++) issue(s, start);
  outstanding = D;
  publish();
  let spins = 0;
  for (;;) {
    if (reap() > 0) {
      if ((++spins & 63) === 0 && performance.now() >= deadline) break;
      continue;
    }
    if (performance.now() >= deadline) break;
    if (t.polling) continue;
    // nothing used: ask for an interrupt, re-check (the device may have raced us), then sleep
    if (e.drvSetInterrupts(t.ds, 1) === 0) waitCall(50);
    e.drvSetInterrupts(t.ds, 0);
  }
  const seconds = (performance.now() - start) / 1000;
  // let the requests in flight complete (not counted) so the rings stop quiescent
  measuring = false;
  const drainUntil = performance.now() + DRAIN_MS;
  while (outstanding > 0 && performance.now() < drainUntil) {
    if (reap() > 0) continue;
    if (e.drvSetInterrupts(t.ds, 1) === 0) waitCall(20);
  }

  const dv = new DataView(t.memory.buffer);
  const badIds = dv.getUint32(t.ds + DS_ERRORS, true);
  const kicks = Number(dv.getBigUint64(t.ds + DS_STAT_KICKS, true));
  const pct = (p: number): number => {
    if (completions === 0) return 0;
    const want = Math.max(1, Math.ceil((p / 100) * completions));
    let acc = 0;
    for (let b = 0; b < hist.length; b++) {
      acc += hist[b]!;
      if (acc >= want) return histValue(b);
    }
    return latMax;
  };
  const latency: BlkLatency = {
    samples: completions,
    p50Us: pct(50),
    p90Us: pct(90),
    p99Us: pct(99),
    p999Us: pct(99.9),
    meanUs: completions ? latSum / completions : 0,
    maxUs: latMax,
  };
  const iops = completions / seconds;
  return {
    queue: t.queue,
    seconds,
    completions,
    iops,
    mibPerSec: (iops * bs) / 2 ** 20,
    errors: badStatus + badIds,
    badStatus,
    ...(firstBadStatus >= 0 ? { firstBadStatus } : {}),
    badIds,
    kicks,
    calls,
    kicksPerRequest: completions ? kicks / completions : 0,
    callsPerRequest: completions ? calls / completions : 0,
    leftInFlight: outstanding,
    sleepTimeouts,
    latency,
  };
}
