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
import { instantiateNetSwitch, netLayout, type NetSwitchWasm } from '../src/net/net-engine.js';
import {
  CH_READ_LEN,
  CH_SEG_COUNT,
  CH_SEG_START,
  CHAIN_BYTES,
  CHAINS_OFFSET,
  deviceArea,
  MAX_QUEUES,
  QS_ERROR,
  QS_ERROR_DETAIL,
  QS_STAT_CALLS,
  QS_STAT_KICKS,
  QUEUE_AREA_SIZE,
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
const L = netLayout(data.netModule);
const NTX_BYTES = L.NTX_BYTES;
const NTX_FRAME_LEN = L.NTX_FRAME_LEN;
const NTX_STATUS = L.NTX_STATUS;
const NTX_OK = L.NTX_OK;
const NTX_FLAGS = L.NTX_FLAGS;
const NTX_GSO_TYPE = L.NTX_GSO_TYPE;
const NTX_ETHERTYPE = L.NTX_ETHERTYPE;
const NTX_HDR_LEN = L.NTX_HDR_LEN;
const NTX_CSUM_START = L.NTX_CSUM_START;
const NTX_DST0 = L.NTX_DST0;
const NTX_DST1 = L.NTX_DST1;
const NTX_SRC0 = L.NTX_SRC0;
const NTX_SRC1 = L.NTX_SRC1;
const NRX_SPANS = L.NRX_SPANS;
const NRX_BROKEN = L.NRX_BROKEN;
const NRX_TOO_SMALL = L.NRX_TOO_SMALL;
const NRX_GAVE_BACK = L.NRX_GAVE_BACK;
// the record layout the reads below assume (pairs of u16 read as one u32)
if (L.NTX_GSO_SIZE !== NTX_HDR_LEN + 2 || L.NTX_CSUM_OFFSET !== NTX_CSUM_START + 2 || NTX_HDR_LEN % 4 || NTX_CSUM_START % 4 || NTX_BYTES % 4)
  throw new Error('net-switch.wasm: unexpected frame record layout');

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
  /** scratch for netRxPlace in the receiver's memory (this ring's device area; used with the lock held) */
  out: number;
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
  /** busy-poll window (ms) after the last batch before kicks are re-enabled; 0: re-enable at once */
  pollMs: number;
  /** drained, kicks still off, inside its poll window: the poll loop looks at avail.idx itself */
  polled: boolean;
  lastWork: number;
  /** frame records of the batch (this ring's device area) */
  out: number;
  port: Port;
}

interface Port {
  key: number;
  port: number;
  engine: EngineExports;
  sw: NetSwitchWasm;
  views: LinearViews;
  /** batchNo when views were last refreshed */
  viewsBatch: number;
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

// ---- the frame being switched ----
// Per TX batch, netTxScan (assembly/net-switch.ts) leaves one record per chain: lengths, header fields and MACs.
// The frame's source spans (after the sender's virtio_net_hdr) are built from the chain record only when the frame
// goes somewhere.
const spanAddr = new Uint32Array(SEG_CAP + 1);
const spanLen = new Uint32Array(SEG_CAP + 1);
let nSpans = 0;
let spanFirst = 0;
/** the chain record the spans come from (-1: not built for this frame yet) */
let spansOf = -1;
let sU8!: Uint8Array;
let sU32!: Uint32Array;
let sQs = 0;
let sHdrLen = 0;

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

/** Source spans of chain record c of the current batch (its readable segments, after the header). */
function buildSpans(c: number): void {
  if (spansOf === c) return;
  spansOf = c;
  const rec = (sQs + CHAINS_OFFSET + c * CHAIN_BYTES) >>> 2;
  const s0 = sU32[rec + CH_SEG_START / 4]!;
  const ns = sU32[rec + CH_SEG_COUNT / 4]!;
  const segBase = sQs + SEGS_OFFSET;
  nSpans = 0;
  spanFirst = 0;
  for (let s = s0; s < s0 + ns; s++) {
    const sg = (segBase + s * SEG_BYTES) >>> 2;
    if (sU32[sg + 2]! & SEG_F_WRITE) break;
    spanAddr[nSpans] = sU32[sg]!;
    spanLen[nSpans++] = sU32[sg + 1]!;
  }
  skipSpans(sHdrLen);
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

const dirty: RxRing[] = [];

function ringError(r: { q: number; broken: boolean; errFd: number; port: Port }, code: number): void {
  if (r.broken) return;
  r.broken = true;
  const detail = r.port.views.refresh().u32[(queueArea(r.q) + QS_ERROR_DETAIL) >>> 2]!;
  if (r.errFd >= 0) eventfdSignal(r.errFd);
  post(r.port.key, { type: 'ring-error', queue: r.q, code, detail });
}

const SHORT_COPY = 64;

/** n bytes from src[sa..] to dst[da..]: short runs byte by byte (a subarray per copy costs more than the loop). */
function copyBytes(src: Uint8Array, sa: number, dst: Uint8Array, da: number, n: number): void {
  if (n <= SHORT_COPY) for (let j = 0; j < n; j++) dst[da + j] = src[sa + j]!;
  else dst.set(src.subarray(sa, sa + n), da);
}

/** The frame (source spans) into the k destination spans netRxPlace left at `out` of the receiver's memory. */
function copyToSpans(dU8: Uint8Array, dU32: Uint32Array, out: number, k: number): void {
  let si = spanFirst;
  let sa = spanAddr[si]!;
  let sl = spanLen[si]!;
  for (let j = 0; j < k; j++) {
    const w = (out + NRX_SPANS) / 4 + 2 * j;
    let da = dU32[w]!;
    let dl = dU32[w + 1]!;
    while (dl > 0) {
      while (sl === 0) {
        if (++si >= nSpans) return; // cannot happen: the spans hold exactly the frame
        sa = spanAddr[si]!;
        sl = spanLen[si]!;
      }
      const m = sl < dl ? sl : dl;
      copyBytes(sU8, sa, dU8, da, m);
      sa += m;
      sl -= m;
      da += m;
      dl -= m;
    }
  }
}

/** Byte `pos` of the frame in the destination spans := b. */
function patchAt(dU8: Uint8Array, dU32: Uint32Array, out: number, k: number, pos: number, b: number): void {
  for (let j = 0; j < k; j++) {
    const w = (out + NRX_SPANS) / 4 + 2 * j;
    const l = dU32[w + 1]!;
    if (pos < l) {
      dU8[dU32[w]! + pos] = b;
      return;
    }
    pos -= l;
  }
}

/** Take RX buffers of `ring` (lock held) and copy the frame in; true when it was delivered. */
function deliverLocked(dp: Port, ring: RxRing, frameLen: number, flags: number, csumStart: number, csumOff: number, patch: number): boolean {
  if (dp.viewsBatch !== batchNo) {
    dp.views.refresh();
    dp.viewsBatch = batchNo;
  }
  const v = dp.views;
  if (v.u32[(ring.qs + QS_ERROR) >>> 2] !== 0) {
    ring.broken = true; // another worker found it broken and reported it
    return false;
  }
  const k = dp.sw.netRxPlace(ring.qs, frameLen, dp.hdrLen, dp.caps & F.CAP_MRG, flags, fGso, fHdrLen, fGsoSize, csumStart, csumOff, ring.out);
  if (k < 0) {
    if (k === NRX_BROKEN) ringError(ring, v.u32[(ring.qs + QS_ERROR) >>> 2]!);
    else if (k === NRX_TOO_SMALL) {
      markDirty(ring);
      bump(dp.port, ST_RX_DROP_TOO_SMALL);
    } else {
      if (k === NRX_GAVE_BACK) markDirty(ring);
      bump(dp.port, ST_RX_DROP_NO_BUFFER);
    }
    return false;
  }
  copyToSpans(v.u8, v.u32, ring.out, k);
  if (patch >= 0) {
    patchAt(v.u8, v.u32, ring.out, k, patch, fCsum >>> 8);
    patchAt(v.u8, v.u32, ring.out, k, patch + 1, fCsum & 0xff);
  }
  markDirty(ring);
  bump(dp.port, ST_RX_FRAMES);
  bump(dp.port, ST_RX_BYTES, frameLen);
  bump(dp.port, ST_RX_PAIR + ring.pair);
  return true;
}

// ---- the RX ring lock a batch holds: frames of one batch mostly go to the same ring, so a lock taken for one frame
// is kept for the next ones and released when the batch moves to another ring or ends (before flushDirty, which
// takes the locks of the rings it publishes). One held at a time: no lock order to get wrong.
let held: RxRing | undefined;
/** bumped per TX batch: a receiving port's memory views are refreshed once per batch */
let batchNo = 0;

function hold(r: RxRing): void {
  if (held === r) return;
  if (held) unlock(held.lock);
  held = undefined;
  lock(r.lock);
  held = r;
}

function release(): void {
  if (held) unlock(held.lock);
  held = undefined;
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

// ---- switching one frame: its header fields, from its record ----
let fFlags = 0;
let fGso = 0;
let fHdrLen = 0;
let fGsoSize = 0;
let fCsumStart = 0;
let fCsumOff = 0;
let fEtherType = 0;
let fCsum = -1;
/** chain record index of the frame (for its spans) */
let fChain = 0;

function toPort(d: number, frameLen: number, pair: number): void {
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
  buildSpans(fChain);
  let flags: number;
  let csumStart = fCsumStart;
  let csumOff = fCsumOff;
  let patch = -1;
  if (action === F.OFFLOAD_CSUM) {
    if (fCsum < 0) fCsum = spansChecksum(sU8, fCsumStart);
    patch = fCsumStart + fCsumOff;
    csumStart = 0;
    csumOff = 0;
    flags = 0;
  } else {
    flags = fFlags & F.VIRTIO_NET_HDR_F_NEEDS_CSUM;
  }
  hold(ring);
  if (deliverLocked(dp, ring, frameLen, flags, csumStart, csumOff, patch) && action === F.OFFLOAD_CSUM) bump(d, ST_RX_CSUM_FIXED);
}

// one-entry caches in front of the shared MAC table: a sender's frames mostly repeat the last source and
// destination; an entry holds while the table's write generation is unchanged (learnGen -1: confirm again)
let learnK0 = 0;
let learnK1 = 0;
let learnPort = -1;
let learnGen = -1;
let seenK0 = 0;
let seenK1 = 0;
let seenPort = -1;
let seenGen = -1;

/**
 * Switch the frames of a TX batch: records 0..n-1 (netTxScan) at `out` over the sender's memory (u8/u32), chain
 * records at qs, sent by port `sp` (virtio_net_hdr of hdrLen bytes) on queue pair `pair`.
 */
function forwardBatch(sp: number, u8: Uint8Array, u32: Uint32Array, qs: number, out: number, n: number, hdrLen: number, pair: number): void {
  sU8 = u8;
  sU32 = u32;
  sQs = qs;
  sHdrLen = hdrLen;
  spansOf = -1;
  // the MAC table's write generation, read once per batch: the batch sees the table as of its start (and its own
  // writes); a move another worker makes meanwhile counts from the next batch
  const gen = macs.generation;
  batchNo++;
  try {
    forwardFrames(sp, u8, u32, out, n, pair, gen);
  } finally {
    release();
  }
}

/** The frame loop of forwardBatch. */
function forwardFrames(sp: number, u8: Uint8Array, u32: Uint32Array, out: number, n: number, pair: number, gen: number): void {
  let frames = 0;
  let bytes = 0;
  let invalid = 0;
  for (let c = 0; c < n; c++) {
    const at = out + c * NTX_BYTES;
    const w = at >>> 2;
    if (u32[w + NTX_STATUS / 4] !== NTX_OK) {
      invalid++;
      continue;
    }
    const frameLen = u32[w + NTX_FRAME_LEN / 4]!;
    frames++;
    bytes += frameLen;
    fChain = c;
    fFlags = u8[at + NTX_FLAGS]!;
    fGso = u8[at + NTX_GSO_TYPE]!;
    fEtherType = u8[at + NTX_ETHERTYPE]! | (u8[at + NTX_ETHERTYPE + 1]! << 8);
    const h = u32[w + NTX_HDR_LEN / 4]!; // hdr_len, gso_size
    fHdrLen = h & 0xffff;
    fGsoSize = h >>> 16;
    const cs = u32[w + NTX_CSUM_START / 4]!; // csum_start, csum_offset
    fCsumStart = cs & 0xffff;
    fCsumOff = cs >>> 16;
    fCsum = -1;
    const s0 = u32[w + NTX_SRC0 / 4]! | 0;
    const s1 = u32[w + NTX_SRC1 / 4]! | 0;
    if (((s0 >>> 24) & 1) === 0 && (s0 !== learnK0 || s1 !== learnK1 || sp !== learnPort || gen !== learnGen)) {
      learnK0 = s0;
      learnK1 = s1;
      learnPort = sp;
      learnGen = gen;
      if (macs.learn(s0, s1, sp)) {
        // our own write moved the generation on; the next frame confirms the entry once more (a write of another
        // worker may have come between ours and this read)
        gen = macs.generation;
        learnGen = -1;
      }
    }
    const d0 = u32[w + NTX_DST0 / 4]! | 0;
    let d = -1;
    if (((d0 >>> 24) & 1) === 0) {
      const d1 = u32[w + NTX_DST1 / 4]! | 0;
      if (d0 !== seenK0 || d1 !== seenK1 || gen !== seenGen) {
        seenPort = macs.lookup(d0, d1);
        seenK0 = d0;
        seenK1 = d1;
        seenGen = gen;
      }
      d = seenPort;
      if (d === sp) {
        bump(sp, ST_TX_DROP_LOCAL);
        continue;
      }
    }
    if (d >= 0 && d < NPORTS) {
      toPort(d, frameLen, pair);
      continue;
    }
    bump(sp, ST_TX_FLOODED);
    // every other port gets its own copy, read again from the sender's memory
    for (let o = 0; o < NPORTS; o++) if (o !== sp) toPort(o, frameLen, pair);
  }
  if (invalid) bump(sp, ST_TX_DROP_INVALID, invalid);
  if (frames) {
    bump(sp, ST_TX_FRAMES, frames);
    bump(sp, ST_TX_BYTES, bytes);
    bump(sp, ST_TX_PAIR + pair, frames);
  }
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
  r.polled = false;
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
      p.sw.netTxScan(qs, n, p.hdrLen, F.MAX_FRAME, r.out);
      const { u8, u32 } = p.views.refresh();
      forwardBatch(p.port, u8, u32, qs, r.out, n, p.hdrLen, r.pair);
      flushDirty();
      // TX chains complete with used length 0 (CH_USED_LEN stays 0): nothing was written
      if (e.splitComplete(qs, n) && r.callFd >= 0) {
        eventfdSignal(r.callFd);
        bumpQueue(p, r.q, QS_STAT_CALLS);
      }
      if (r.pollMs > 0) r.lastWork = performance.now();
      continue;
    }
    if (r.pollMs > 0 && performance.now() - r.lastWork < r.pollMs) {
      r.polled = true; // kicks stay off while the sender keeps coming back within the window (spinPolled)
      break;
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

// ---- injected frames (SEND_RARP): a scratch memory of this worker stands in for a sender's guest memory ----
const INJ_QS = 0x1_0000;
const INJ_OUT = INJ_QS + QUEUE_AREA_SIZE;
const INJ_FRAME = INJ_OUT + 0x1_0000;
const injMemory = new WebAssembly.Memory({ initial: Math.ceil((INJ_FRAME + F.HDR_LEN + F.MAX_FRAME) / 0x1_0000), maximum: 65536, shared: true });
const injViews = new LinearViews(injMemory);
const injSw = instantiateNetSwitch(data.netModule, injMemory);

// ---- the poll loop ----
const POLL_SLOT = 8;
const MAX_POLL = 1 + NPORTS * PAIRS;
const pfd = Buffer.alloc(POLL_SLOT * MAX_POLL);
const slotRing: (TxRing | undefined)[] = new Array<TxRing | undefined>(MAX_POLL);

/** longest stretch spinPolled spins before the loop looks at the control fd and the kicks again */
const SPIN_SLICE_MS = 0.05;
const polledRings: TxRing[] = [];

/**
 * Rings inside their poll window: look at avail.idx (no syscall) until one has chains, the slice is over, or every
 * window has closed (kicks re-enabled, with the re-check that catches chains added meanwhile).
 */
function spinPolled(): void {
  const t0 = performance.now();
  for (;;) {
    let left = 0;
    const now = performance.now();
    for (const r of polledRings) {
      if (!r.polled) continue;
      const e = r.port.engine;
      if (e.splitAvailPending(r.qs) !== 0) {
        processTx(r);
      } else if (now - r.lastWork >= r.pollMs) {
        r.polled = false;
        if (e.splitEnableNotify(r.qs) !== 0) processTx(r);
      }
      if (r.polled) left++;
    }
    if (left === 0 || performance.now() - t0 >= SPIN_SLICE_MS) return;
  }
}

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
    polledRings.length = 0;
    for (const p of byKey.values()) {
      if (p.paused) continue;
      for (const r of p.tx) {
        if (!r || !r.enabled || r.broken) continue;
        if (r.pending) anyPending = true;
        if (r.polled) polledRings.push(r);
        if (r.kickFd < 0 || n >= MAX_POLL) continue;
        pfd.writeInt32LE(r.kickFd, n * POLL_SLOT);
        pfd.writeInt16LE(POLLIN, n * POLL_SLOT + 4);
        pfd.writeInt16LE(0, n * POLL_SLOT + 6);
        slotRing[n++] = r;
      }
    }
    const ready = pollFds(pfd, n, anyPending || polledRings.length > 0 ? 0 : -1);
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
    if (polledRings.length) spinPolled();
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
      sw: instantiateNetSwitch(data.netModule, a.memory),
      viewsBatch: -1,
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
        pollMs: s.pollUs / 1000,
        polled: false,
        lastWork: 0,
        out: deviceArea(s.queue),
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
      out: deviceArea(s.queue),
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
    if (frame.length > F.MAX_FRAME) {
      bump(port, ST_TX_DROP_INVALID);
      return;
    }
    // the frame goes through the path of TX chains: one chain record, one segment, in this worker's scratch memory
    const v = injViews.refresh();
    const rec = (INJ_QS + CHAINS_OFFSET) >>> 2;
    v.u32.fill(0, rec, rec + CHAIN_BYTES / 4);
    v.u32[rec + CH_SEG_COUNT / 4] = 1;
    v.u32[rec + CH_READ_LEN / 4] = F.HDR_LEN + frame.length;
    const sg = (INJ_QS + SEGS_OFFSET) >>> 2;
    v.u32[sg] = INJ_FRAME;
    v.u32[sg + 1] = F.HDR_LEN + frame.length;
    v.u32[sg + 2] = 0;
    v.u8.fill(0, INJ_FRAME, INJ_FRAME + F.HDR_LEN);
    v.u8.set(frame, INJ_FRAME + F.HDR_LEN);
    injSw.netTxScan(INJ_QS, 1, F.HDR_LEN, F.MAX_FRAME, INJ_OUT);
    forwardBatch(port, v.u8, v.u32, INJ_QS, INJ_OUT, 1, F.HDR_LEN, pair % PAIRS);
    flushDirty();
  },
};

Comlink.expose(api, nodeEndpoint(data.control));
void run().catch((e: unknown) => {
  events.postMessage({ key: 0, event: { type: 'log', message: `switch worker ${ME} failed: ${(e as Error).stack ?? e}` } });
});
