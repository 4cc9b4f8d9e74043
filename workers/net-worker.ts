/**
 * A switch worker: the data path of the built-in L2 switch that joins the ports of `vhost-wasm net`.
 *
 * Every worker knows every connected port: its Memory (guest RAM of that front-end, the same memory its session
 * maps), an engine instance on it, and its RX rings. Worker i polls the TX rings of queue pairs p with
 * p % workers === i, for every port. A frame popped from port A's TX ring is looked up (learning table, shared by
 * all workers) and copied ONCE, straight from A's guest memory into the RX buffers of the receiving port(s), with
 * TypedArray.set between the two Memories. RX rings are shared by all workers: each RX ring has a spin lock
 * (Atomics on a shared Int32Array) held while a worker pops, fills and pushes its buffers, so a frame may land on
 * any RX pair of the receiver (same pair index when that pair is enabled, else the next enabled one).
 *
 * RX rings are never waited on: when a frame finds no buffers it is dropped and counted, as a switch does. Their
 * kicks are not polled and their notifications stay suppressed.
 */
import { workerData, type MessagePort } from 'node:worker_threads';
import * as Comlink from 'comlink/dist/esm/comlink.mjs';
import nodeEndpoint from 'comlink/dist/esm/node-adapter.mjs';
import { LinearViews } from '../src/devices/linear-views.js';
import { instantiateEngine, type EngineExports } from '../src/engine/engine.js';
import {
  CH_HEAD,
  CH_READ_LEN,
  CH_SEG_COUNT,
  CH_SEG_START,
  CH_WRITE_LEN,
  CHAIN_BYTES,
  CHAINS_OFFSET,
  MAX_QUEUES,
  QS_ERROR,
  QF_INFLIGHT,
  QS_ERROR_DETAIL,
  QS_FEATURES,
  QS_LAST_AVAIL,
  QS_STAT_CALLS,
  QS_STAT_KICKS,
  QUEUE_SIZE_MAX,
  queueArea,
  SEG_BYTES,
  SEG_CAP,
  SEG_F_WRITE,
  SEGS_OFFSET,
} from '../src/engine/layout.js';
import * as F from '../src/net/frame.js';
import { MacTable } from '../src/net/mac-table.js';
import {
  PORT_STATS_WORDS,
  ST_RX_BYTES,
  ST_RX_CSUM_FIXED,
  ST_RX_DROP_MTU,
  ST_RX_DROP_NO_BUFFER,
  ST_RX_DROP_NO_RING,
  ST_RX_DROP_OFFLOAD,
  ST_RX_DROP_TOO_SMALL,
  ST_RX_FRAMES,
  ST_RX_PAIR,
  ST_TX_BYTES,
  ST_TX_DROP_INVALID,
  ST_TX_DROP_LOCAL,
  ST_TX_FLOODED,
  ST_TX_FRAMES,
  ST_TX_PAIR,
  type AttachPort,
  type NetRingStart,
  type NetWorkerApi,
  type NetWorkerData,
  type NetWorkerEvent,
} from '../src/net/protocol.js';
import type { WorkerEvent } from '../src/queues/worker-protocol.js';
import { eventfdDrain, eventfdSignal, POLLERR, POLLHUP, POLLIN, POLLNVAL, pollFds } from '../src/sys/syscalls.js';

const data = workerData as NetWorkerData;
const ME = data.index;
const WORKERS = data.workers;
const NPORTS = data.ports;
const PAIRS = data.pairs;
const macs = new MacTable(data.macTable);
const locks = new Int32Array(data.locks);
const mtus = new Int32Array(data.mtus);
const stats = new Float64Array(data.stats);
const statBase = ME * NPORTS * PORT_STATS_WORDS;
const ctlWord = new Int32Array(data.ctlWord);
const events: MessagePort = data.events;

interface RxRing {
  q: number;
  pair: number;
  qs: number;
  callFd: number;
  errFd: number;
  enabled: boolean;
  broken: boolean;
  lock: number;
  dirty: boolean;
  port: Port;
}

interface TxRing {
  q: number;
  pair: number;
  qs: number;
  kickFd: number;
  callFd: number;
  errFd: number;
  enabled: boolean;
  broken: boolean;
  batch: number;
  /** the last visit ran out of budget with chains left: visit again without waiting for a kick */
  pending: boolean;
  port: Port;
}

interface Port {
  key: number;
  port: number;
  engine: EngineExports;
  views: LinearViews;
  paused: boolean;
  caps: number;
  hdrLen: number;
  rx: (RxRing | undefined)[];
  tx: (TxRing | undefined)[];
}

const byKey = new Map<number, Port>();
const byPort: (Port | undefined)[] = new Array<Port | undefined>(NPORTS).fill(undefined);
let shuttingDown = false;

function post(key: number, event: WorkerEvent): void {
  const m: NetWorkerEvent = { key, event };
  events.postMessage(m);
}

function bump(port: number, k: number, by = 1): void {
  stats[statBase + port * PORT_STATS_WORDS + k] += by;
}

function bumpQueue(p: Port, q: number, off: number): void {
  const f64 = new Float64Array(p.views.u8.buffer, queueArea(q) + off, 1);
  f64[0]! += 1;
}

// ---- RX ring locks ----
function lock(i: number): void {
  while (Atomics.compareExchange(locks, i, 0, 1) !== 0) {
    /* another worker is filling this RX ring: a few hundred ns */
  }
}

function unlock(i: number): void {
  Atomics.store(locks, i, 0);
}

// ---- the frame being switched: its source spans (after the sender's virtio_net_hdr) ----
const spanAddr = new Uint32Array(SEG_CAP + 1);
const spanLen = new Uint32Array(SEG_CAP + 1);
let nSpans = 0;
let spanFirst = 0;
const hdrIn = new Uint8Array(64);
const hdrOut = new Uint8Array(16);
const patchBytes = new Uint8Array(2);
let patchPos = -1;

/** Copy the first n bytes of the spans into `out` (the header and the link header: parsing, not the frame copy). */
function gather(src: Uint8Array, out: Uint8Array, n: number): number {
  let got = 0;
  for (let i = spanFirst; i < nSpans && got < n; i++) {
    const a = spanAddr[i]!;
    const take = Math.min(spanLen[i]!, n - got);
    for (let j = 0; j < take; j++) out[got + j] = src[a + j]!;
    got += take;
  }
  return got;
}

function skipSpans(n: number): void {
  while (n > 0 && spanFirst < nSpans) {
    const l = spanLen[spanFirst]!;
    if (l <= n) {
      n -= l;
      spanFirst++;
    } else {
      spanAddr[spanFirst]! += n;
      spanLen[spanFirst]! -= n;
      n = 0;
    }
  }
}

/** Internet checksum of the frame from `start` to its end, read from the sender's memory. */
function spansChecksum(src: Uint8Array, start: number): number {
  let pos = 0;
  let sum = 0;
  for (let i = spanFirst; i < nSpans; i++) {
    const a = spanAddr[i]!;
    const l = spanLen[i]!;
    const from = start > pos ? start - pos : 0;
    if (from < l) {
      let j = from;
      if ((pos + j - start) & 1) sum += src[a + j++]!;
      for (; j + 1 < l; j += 2) sum += (src[a + j]! << 8) | src[a + j + 1]!;
      if (j < l) sum += src[a + j]! << 8;
      // an odd span leaves the next one starting on an odd offset: handled by the parity check above
    }
    pos += l;
  }
  return F.foldChecksum(sum);
}

// ---- the destination side: a cursor over the RX chains being filled (lock held) ----
let dEngine!: EngineExports;
let dRing!: RxRing;
let dU8!: Uint8Array;
let dU32!: Uint32Array;
let dSegBase = 0;
let dSeg = 0;
let dSegEnd = 0;
let dAddr = 0;
let dRoom = 0;
let dMrg = false;
let dChains = 0;
const usedHeads = new Uint32Array(QUEUE_SIZE_MAX);
const usedLens = new Uint32Array(QUEUE_SIZE_MAX);
const dirty: RxRing[] = [];

function ringError(r: { q: number; broken: boolean; errFd: number; port: Port }, code: number): void {
  if (r.broken) return;
  r.broken = true;
  const detail = r.port.views.refresh().u32[(queueArea(r.q) + QS_ERROR_DETAIL) >>> 2]!;
  if (r.errFd >= 0) eventfdSignal(r.errFd);
  post(r.port.key, { type: 'ring-error', queue: r.q, code, detail });
}

/** Pop one RX chain into chain record 0 and point the cursor at its first writable segment. */
function popChain(): boolean {
  if (dChains >= QUEUE_SIZE_MAX) return false;
  const n = dEngine.splitPopBatch(dRing.qs, 1);
  if (n !== 1) {
    if (n < 0) ringError(dRing, -n);
    return false;
  }
  const rec = (dRing.qs + CHAINS_OFFSET) >>> 2;
  usedHeads[dChains] = dU32[rec + CH_HEAD / 4]!;
  usedLens[dChains] = 0;
  dChains++;
  dSeg = dU32[rec + CH_SEG_START / 4]!;
  dSegEnd = dSeg + dU32[rec + CH_SEG_COUNT / 4]!;
  dRoom = 0;
  return true;
}

function nextSeg(): boolean {
  while (dSeg < dSegEnd) {
    const sg = (dSegBase + dSeg * SEG_BYTES) >>> 2;
    dSeg++;
    if ((dU32[sg + 2]! & SEG_F_WRITE) === 0) continue;
    const len = dU32[sg + 1]!;
    if (len === 0) continue;
    dAddr = dU32[sg]!;
    dRoom = len;
    return true;
  }
  return false;
}

/** Write n bytes of src at a; with MRG_RXBUF continue into further chains. False when out of room. */
function put(src: Uint8Array, a: number, n: number): boolean {
  while (n > 0) {
    if (dRoom === 0 && !nextSeg()) {
      if (!dMrg || !popChain()) return false;
      continue;
    }
    const k = n < dRoom ? n : dRoom;
    if (k < 16) for (let j = 0; j < k; j++) dU8[dAddr + j] = src[a + j]!;
    else dU8.set(src.subarray(a, a + k), dAddr);
    dAddr += k;
    dRoom -= k;
    a += k;
    n -= k;
    usedLens[dChains - 1]! += k;
  }
  return true;
}

/** Write one byte and return where it went. */
function putByteAt(b: number): number {
  if (dRoom === 0 && !nextSeg()) return -1;
  const at = dAddr;
  dU8[at] = b;
  dAddr++;
  dRoom--;
  usedLens[dChains - 1]!++;
  return at;
}

/** The frame from the source spans into the cursor, with the 2 checksum bytes replaced when patchPos >= 0. */
function copyFrame(src: Uint8Array): boolean {
  let pos = 0;
  for (let i = spanFirst; i < nSpans; i++) {
    let a = spanAddr[i]!;
    let l = spanLen[i]!;
    while (l > 0) {
      let k = l;
      if (patchPos >= 0) {
        if (pos >= patchPos && pos < patchPos + 2) {
          if (!put(patchBytes, pos - patchPos, 1)) return false;
          a++;
          l--;
          pos++;
          continue;
        }
        if (pos < patchPos && pos + k > patchPos) k = patchPos - pos;
      }
      if (!put(src, a, k)) return false;
      a += k;
      l -= k;
      pos += k;
    }
  }
  return true;
}

/** Fill RX chains of `ring` (lock held) with hdrOut + the frame; true when it was delivered. */
function deliverLocked(dp: Port, ring: RxRing, src: Uint8Array, frameLen: number): boolean {
  const v = dp.views.refresh();
  dEngine = dp.engine;
  dRing = ring;
  dU8 = v.u8;
  dU32 = v.u32;
  dSegBase = ring.qs + SEGS_OFFSET;
  dMrg = (dp.caps & F.CAP_MRG) !== 0;
  dChains = 0;
  if (v.u32[(ring.qs + QS_ERROR) >>> 2] !== 0) {
    ring.broken = true; // another worker found it broken and reported it
    return false;
  }
  const lastAvail = v.dv.getUint16(ring.qs + QS_LAST_AVAIL, true);
  if (!popChain()) {
    if (!ring.broken) bump(dp.port, ST_RX_DROP_NO_BUFFER);
    return false;
  }
  const hdrLen = dp.hdrLen;
  const room = dU32[(ring.qs + CHAINS_OFFSET + CH_WRITE_LEN) >>> 2]!;
  if (room < hdrLen || (!dMrg && room < hdrLen + frameLen)) {
    // a buffer that cannot take the frame goes back empty (the driver counts a short packet and reuses it)
    dEngine.splitPushUsed(ring.qs, usedHeads[0]!, 0);
    markDirty(ring);
    bump(dp.port, ST_RX_DROP_TOO_SMALL);
    return false;
  }
  put(hdrOut, 0, F.HDR_LEN_LEGACY);
  let nb0 = -1;
  let nb1 = -1;
  if (hdrLen === F.HDR_LEN) {
    nb0 = putByteAt(1);
    nb1 = putByteAt(0);
  }
  if (!copyFrame(src)) {
    if (!ring.broken) {
      if (v.u32[(ring.qs + QS_FEATURES) >>> 2]! & QF_INFLIGHT) {
        // inflight records were written for them: complete them empty instead of un-popping
        for (let c = 0; c < dChains; c++) dEngine.splitPushUsed(ring.qs, usedHeads[c]!, 0);
        markDirty(ring);
      } else {
        // not enough buffers for the whole frame: give back what was taken (nothing was pushed) and drop it
        v.dv.setUint16(ring.qs + QS_LAST_AVAIL, lastAvail, true);
      }
      bump(dp.port, ST_RX_DROP_NO_BUFFER);
    }
    return false;
  }
  if (nb0 >= 0) {
    dU8[nb0] = dChains & 0xff;
    dU8[nb1] = dChains >>> 8;
  }
  for (let c = 0; c < dChains; c++) dEngine.splitPushUsed(ring.qs, usedHeads[c]!, usedLens[c]!);
  markDirty(ring);
  bump(dp.port, ST_RX_FRAMES);
  bump(dp.port, ST_RX_BYTES, frameLen);
  bump(dp.port, ST_RX_PAIR + ring.pair);
  return true;
}

function markDirty(r: RxRing): void {
  if (r.dirty) return;
  r.dirty = true;
  dirty.push(r);
}

/** Publish what this batch pushed into RX rings, one used.idx store and at most one call per ring. */
function flushDirty(): void {
  for (const r of dirty) {
    r.dirty = false;
    lock(r.lock);
    let notify = 0;
    try {
      notify = r.port.engine.splitPublish(r.qs);
    } finally {
      unlock(r.lock);
    }
    if (notify && r.callFd >= 0) {
      eventfdSignal(r.callFd);
      bumpQueue(r.port, r.q, QS_STAT_CALLS);
    }
  }
  dirty.length = 0;
}

/** The receiver's RX ring for a frame sent on `pair`: the same pair when usable, else the next usable one. */
function pickRx(dp: Port, pair: number): RxRing | undefined {
  for (let k = 0; k < PAIRS; k++) {
    const r = dp.rx[(pair + k) % PAIRS];
    if (r && r.enabled && !r.broken) return r;
  }
  return undefined;
}

// ---- switching one frame ----
let fFlags = 0;
let fGso = 0;
let fCsumStart = 0;
let fCsumOff = 0;
let fEtherType = 0;
let fCsum = -1;

function toPort(d: number, src: Uint8Array, frameLen: number, pair: number): void {
  const dp = byPort[d];
  if (!dp) return; // nobody connected on that port
  const ring = dp.paused ? undefined : pickRx(dp, pair);
  if (!ring) {
    bump(d, ST_RX_DROP_NO_RING);
    return;
  }
  const action = F.offloadAction(fFlags, fGso, dp.caps);
  if (action === F.OFFLOAD_DROP) {
    bump(d, ST_RX_DROP_OFFLOAD);
    return;
  }
  if ((fGso & 0x7f) === 0 && (dp.caps & F.CAP_MTU) !== 0) {
    const l2 = F.ETH_HLEN + (fEtherType === F.ETHERTYPE_VLAN ? 4 : 0);
    if (frameLen - l2 > mtus[d]!) {
      bump(d, ST_RX_DROP_MTU);
      return;
    }
  }
  hdrOut.set(hdrIn.subarray(0, F.HDR_LEN_LEGACY));
  if (action === F.OFFLOAD_CSUM) {
    if (fCsum < 0) fCsum = spansChecksum(src, fCsumStart);
    patchPos = fCsumStart + fCsumOff;
    patchBytes[0] = fCsum >>> 8;
    patchBytes[1] = fCsum & 0xff;
    hdrOut.fill(0, F.HDR_CSUM_START, F.HDR_CSUM_OFFSET + 2);
    hdrOut[F.HDR_FLAGS] = 0;
  } else {
    patchPos = -1;
    hdrOut[F.HDR_FLAGS] = fFlags & F.VIRTIO_NET_HDR_F_NEEDS_CSUM;
  }
  let delivered = false;
  lock(ring.lock);
  try {
    delivered = deliverLocked(dp, ring, src, frameLen);
  } finally {
    unlock(ring.lock);
  }
  if (delivered && action === F.OFFLOAD_CSUM) bump(d, ST_RX_CSUM_FIXED);
}

/**
 * Switch the frame whose bytes (virtio_net_hdr of srcHdrLen bytes, then the frame) are the spans over `src`,
 * sent by port `sp` on queue pair `pair`.
 */
function forwardFrame(sp: number, srcHdrLen: number, src: Uint8Array, total: number, pair: number): void {
  const frameLen = total - srcHdrLen;
  if (frameLen < F.ETH_HLEN || frameLen > F.MAX_FRAME) {
    bump(sp, ST_TX_DROP_INVALID);
    return;
  }
  gather(src, hdrIn, srcHdrLen + F.ETH_HLEN);
  if (srcHdrLen !== F.HDR_LEN_LEGACY) hdrIn.copyWithin(F.HDR_LEN_LEGACY, srcHdrLen, srcHdrLen + F.ETH_HLEN);
  // hdrIn: the 10 header bytes we use, then the Ethernet header at HDR_LEN_LEGACY
  skipSpans(srcHdrLen);
  const m = F.HDR_LEN_LEGACY;
  fFlags = hdrIn[F.HDR_FLAGS]!;
  fGso = hdrIn[F.HDR_GSO_TYPE]!;
  fCsumStart = hdrIn[F.HDR_CSUM_START]! | (hdrIn[F.HDR_CSUM_START + 1]! << 8);
  fCsumOff = hdrIn[F.HDR_CSUM_OFFSET]! | (hdrIn[F.HDR_CSUM_OFFSET + 1]! << 8);
  fEtherType = (hdrIn[m + 12]! << 8) | hdrIn[m + 13]!;
  fCsum = -1;
  if (fFlags & F.VIRTIO_NET_HDR_F_NEEDS_CSUM && fCsumStart + fCsumOff + 2 > frameLen) {
    bump(sp, ST_TX_DROP_INVALID);
    return;
  }
  bump(sp, ST_TX_FRAMES);
  bump(sp, ST_TX_BYTES, frameLen);
  bump(sp, ST_TX_PAIR + pair);
  if ((hdrIn[m + 6]! & 1) === 0) macs.learn(MacTable.key0(hdrIn, m + 6), MacTable.key1(hdrIn, m + 6), sp);
  let d = -1;
  if ((hdrIn[m]! & 1) === 0) {
    d = macs.lookup(MacTable.key0(hdrIn, m), MacTable.key1(hdrIn, m));
    if (d === sp) {
      bump(sp, ST_TX_DROP_LOCAL);
      return;
    }
  }
  if (d >= 0 && d < NPORTS) {
    toPort(d, src, frameLen, pair);
    return;
  }
  bump(sp, ST_TX_FLOODED);
  // every other port gets its own copy, read again from the sender's memory (copyFrame leaves the spans as they are)
  for (let o = 0; o < NPORTS; o++) if (o !== sp) toPort(o, src, frameLen, pair);
}

// ---- TX rings ----
/**
 * Batches per visit of a TX ring. A sender that refills its ring as fast as the switch drains it (testpmd txonly)
 * would otherwise keep the worker in one ring forever: the other rings of the worker and every control call (of
 * every port: a guest rebooting on another port waits on GET_VRING_BASE) would starve.
 */
const TX_ROUNDS = 8;

function processTx(r: TxRing): void {
  const p = r.port;
  r.pending = false;
  if (p.paused || !r.enabled || r.broken) return;
  const e = p.engine;
  const qs = r.qs;
  e.splitDisableNotify(qs);
  for (let round = 0; ; round++) {
    if (round === TX_ROUNDS) {
      r.pending = true; // notifications stay off; the poll loop comes back after a look at the control fd
      break;
    }
    const n = e.splitPopBatch(qs, r.batch);
    if (n < 0) {
      ringError(r, -n);
      break;
    }
    if (n > 0) {
      const { u8, u32 } = p.views.refresh();
      const segBase = qs + SEGS_OFFSET;
      for (let c = 0; c < n; c++) {
        const rec = (qs + CHAINS_OFFSET + c * CHAIN_BYTES) >>> 2;
        const s0 = u32[rec + CH_SEG_START / 4]!;
        const ns = u32[rec + CH_SEG_COUNT / 4]!;
        nSpans = 0;
        spanFirst = 0;
        for (let s = s0; s < s0 + ns; s++) {
          const sg = (segBase + s * SEG_BYTES) >>> 2;
          if (u32[sg + 2]! & SEG_F_WRITE) break;
          spanAddr[nSpans] = u32[sg]!;
          spanLen[nSpans++] = u32[sg + 1]!;
        }
        forwardFrame(p.port, p.hdrLen, u8, u32[rec + CH_READ_LEN / 4]!, r.pair);
      }
      flushDirty();
      // TX chains complete with used length 0 (CH_USED_LEN stays 0): nothing was written
      if (e.splitComplete(qs, n) && r.callFd >= 0) {
        eventfdSignal(r.callFd);
        bumpQueue(p, r.q, QS_STAT_CALLS);
      }
      continue;
    }
    if (e.splitEnableNotify(qs) === 0) break;
    e.splitDisableNotify(qs);
  }
}

/** Complete `heads` with used length 0 and publish (resubmitted heads the switch does not replay). */
function completeEmpty(p: Port, qs: number, heads: readonly number[], callFd: number): void {
  for (const h of heads) p.engine.splitPushUsed(qs, h, 0);
  if (p.engine.splitPublish(qs) && callFd >= 0) eventfdSignal(callFd);
}

function ownsPair(pair: number): boolean {
  return pair % WORKERS === ME;
}

function portOf(key: number): Port {
  const p = byKey.get(key);
  if (!p) throw new Error(`switch worker ${ME}: no connection ${key}`);
  return p;
}

// ---- the poll loop ----
const POLL_SLOT = 8;
const MAX_POLL = 1 + NPORTS * PAIRS;
const pfd = Buffer.alloc(POLL_SLOT * MAX_POLL);
const slotRing: (TxRing | undefined)[] = new Array<TxRing | undefined>(MAX_POLL);

function yieldToEventLoop(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

async function run(): Promise<void> {
  while (!shuttingDown) {
    let n = 0;
    pfd.writeInt32LE(data.ctlFd, 0);
    pfd.writeInt16LE(POLLIN, 4);
    pfd.writeInt16LE(0, 6);
    slotRing[n++] = undefined;
    let anyPending = false;
    for (const p of byKey.values()) {
      if (p.paused) continue;
      for (const r of p.tx) {
        if (!r || !r.enabled || r.broken) continue;
        if (r.pending) anyPending = true;
        if (r.kickFd < 0 || n >= MAX_POLL) continue;
        pfd.writeInt32LE(r.kickFd, n * POLL_SLOT);
        pfd.writeInt16LE(POLLIN, n * POLL_SLOT + 4);
        pfd.writeInt16LE(0, n * POLL_SLOT + 6);
        slotRing[n++] = r;
      }
    }
    const ready = pollFds(pfd, n, anyPending ? 0 : -1);
    if (Atomics.load(ctlWord, 0) !== 0) break;
    if (ready > 0 && pfd.readInt16LE(6) !== 0) {
      eventfdDrain(data.ctlFd);
      // comlink calls were posted before the control eventfd was written: one loop turn delivers them
      await yieldToEventLoop();
      continue;
    }
    for (let i = 1; i < n; i++) {
      const rev = pfd.readInt16LE(i * POLL_SLOT + 6);
      if (rev === 0) continue;
      const r = slotRing[i]!;
      if (rev & (POLLERR | POLLHUP | POLLNVAL)) {
        post(r.port.key, { type: 'log', message: `queue ${r.q}: kick fd ${r.kickFd} reported poll error 0x${rev.toString(16)}` });
        r.kickFd = -1;
        continue;
      }
      if (eventfdDrain(r.kickFd) > 0) bumpQueue(r.port, r.q, QS_STAT_KICKS);
      processTx(r);
    }
    if (anyPending) {
      for (const p of byKey.values()) {
        if (p.paused) continue;
        for (const r of p.tx) if (r?.pending) processTx(r);
      }
    }
  }
  events.close();
  data.control.close();
}

const api: NetWorkerApi = {
  attachPort(a: AttachPort): void {
    const old = byPort[a.port];
    if (old) byKey.delete(old.key);
    const p: Port = {
      key: a.key,
      port: a.port,
      engine: instantiateEngine(data.module, a.memory),
      views: new LinearViews(a.memory),
      paused: false,
      caps: 0,
      hdrLen: F.HDR_LEN,
      rx: new Array<RxRing | undefined>(PAIRS).fill(undefined),
      tx: new Array<TxRing | undefined>(PAIRS).fill(undefined),
    };
    byKey.set(a.key, p);
    byPort[a.port] = p;
  },
  detachPort(key: number): void {
    const p = byKey.get(key);
    if (!p) return;
    byKey.delete(key);
    if (byPort[p.port] === p) byPort[p.port] = undefined;
  },
  startRing(key: number, s: NetRingStart): void {
    const p = portOf(key);
    p.caps = F.receiverCaps(s.features);
    p.hdrLen = F.netHdrLen(s.features);
    const pair = s.queue >>> 1;
    if (pair >= PAIRS) throw new Error(`queue ${s.queue} beyond the ${PAIRS} queue pair(s) of the switch`);
    const qs = queueArea(s.queue);
    if (s.queue & 1) {
      if (!ownsPair(pair)) return;
      const r: TxRing = {
        q: s.queue,
        pair,
        qs,
        kickFd: s.kickFd,
        callFd: s.callFd,
        errFd: s.errFd,
        enabled: s.enabled,
        broken: false,
        batch: Math.max(1, Math.min(s.batch, 1024)),
        pending: false,
        port: p,
      };
      p.tx[pair] = r;
      // chains a previous back-end left in flight (inflight recovery): their frames are not sent again
      if (s.resubmit?.length) completeEmpty(p, qs, s.resubmit, r.callFd);
      processTx(r);
      return;
    }
    const r: RxRing = {
      q: s.queue,
      pair,
      qs,
      callFd: s.callFd,
      errFd: s.errFd,
      enabled: s.enabled,
      broken: false,
      lock: p.port * MAX_QUEUES + s.queue,
      dirty: false,
      port: p,
    };
    p.rx[pair] = r;
    // buffers are taken when frames come, never waited for: no RX kicks wanted
    lock(r.lock);
    try {
      p.engine.splitDisableNotify(qs);
      // buffers a previous back-end left in flight go back empty (one worker does it)
      if (ME === 0 && s.resubmit?.length) completeEmpty(p, qs, s.resubmit, r.callFd);
    } finally {
      unlock(r.lock);
    }
  },
  stopRing(key: number, queue: number): void {
    const p = byKey.get(key);
    if (!p) return;
    const pair = queue >>> 1;
    if (queue & 1) p.tx[pair] = undefined;
    else p.rx[pair] = undefined;
  },
  setEnabled(key: number, queue: number, enabled: boolean): void {
    const p = byKey.get(key);
    if (!p) return;
    const pair = queue >>> 1;
    if (queue & 1) {
      const r = p.tx[pair];
      if (!r) return;
      r.enabled = enabled;
      // a kick that came while the ring was disabled is not lost: look at the ring now
      if (enabled) processTx(r);
    } else {
      const r = p.rx[pair];
      if (r) r.enabled = enabled;
    }
  },
  setFds(key: number, queue: number, fds: { kickFd?: number; callFd?: number; errFd?: number }): void {
    const p = byKey.get(key);
    if (!p) return;
    const pair = queue >>> 1;
    const r = queue & 1 ? p.tx[pair] : p.rx[pair];
    if (!r) return;
    if (fds.callFd !== undefined) r.callFd = fds.callFd;
    if (fds.errFd !== undefined) r.errFd = fds.errFd;
    if (fds.kickFd !== undefined && 'kickFd' in r) {
      r.kickFd = fds.kickFd;
      processTx(r);
    }
  },
  pausePort(key: number): void {
    const p = byKey.get(key);
    if (p) p.paused = true;
  },
  resumePort(key: number): void {
    const p = byKey.get(key);
    if (!p) return;
    p.paused = false;
    p.views.refresh();
    for (const r of p.tx) if (r) processTx(r);
  },
  inject(port: number, frame: Uint8Array, pair: number): void {
    const buf = new Uint8Array(F.HDR_LEN + frame.length);
    buf.set(frame, F.HDR_LEN);
    nSpans = 1;
    spanFirst = 0;
    spanAddr[0] = 0;
    spanLen[0] = buf.length;
    forwardFrame(port, F.HDR_LEN, buf, buf.length, pair % PAIRS);
    flushDirty();
  },
};

Comlink.expose(api, nodeEndpoint(data.control));
void run().catch((e: unknown) => {
  events.postMessage({ key: 0, event: { type: 'log', message: `switch worker ${ME} failed: ${(e as Error).stack ?? e}` } });
});
