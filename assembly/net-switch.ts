// The per-frame work of the L2 switch (workers/net-worker.ts) that stays inside one guest's memory: reading the
// virtio_net_hdr and Ethernet header of a batch of TX chains, and taking RX buffers for a frame (writing its
// virtio_net_hdr, pushing the used elements). Called once per batch (TX) or once per frame (RX) instead of
// walking the records from JS: per-frame JS<->wasm crossings and JS byte loops were most of the switch's cost.
// The frame copy itself goes between two guests' memories and stays in JS (one TypedArray.set per span pair).
//
// Knows nothing of fds, threads, MAC tables or ports. No globals, no allocation: scratch lives in the caller's
// `out` area (the queue's device scratch area, owned by whoever drives that queue).

import {
  QS_ERROR, QS_FEATURES, QS_LAST_AVAIL, QF_INFLIGHT, CHAINS_OFFSET, CHAIN_BYTES, CH_HEAD, CH_SEG_START,
  CH_SEG_COUNT, CH_READ_LEN, CH_WRITE_LEN, SEGS_OFFSET, SEG_BYTES, SEG_ADDR, SEG_LEN, SEG_FLAGS, SEG_F_WRITE,
} from './layout';
import { splitPopBatch, splitPushUsed } from './split-ring';

// ---- TX frame records: netTxScan writes one per popped chain at out + c * NTX_BYTES ----
export const NTX_BYTES: u32 = 64;
export const NTX_FRAME_LEN: u32 = 0; // u32 bytes after the sender's virtio_net_hdr
export const NTX_STATUS: u32 = 4; // u32 NTX_OK or NTX_INVALID
export const NTX_FLAGS: u32 = 8; // u8 virtio_net_hdr.flags
export const NTX_GSO_TYPE: u32 = 9; // u8
export const NTX_ETHERTYPE: u32 = 10; // u16 (host order)
export const NTX_HDR_LEN: u32 = 12; // u16 virtio_net_hdr.hdr_len
export const NTX_GSO_SIZE: u32 = 14; // u16
export const NTX_CSUM_START: u32 = 16; // u16
export const NTX_CSUM_OFFSET: u32 = 18; // u16
export const NTX_DST0: u32 = 20; // i32 destination MAC bytes 0-3 (big-endian), MacTable.key0
export const NTX_DST1: u32 = 24; // i32 destination MAC bytes 4-5 << 16, MacTable.key1
export const NTX_SRC0: u32 = 28; // i32 source MAC, same encoding
export const NTX_SRC1: u32 = 32; // i32
/** staging for the header bytes read across segments (26 = 12-byte virtio_net_hdr + 14-byte Ethernet header) */
const NTX_STAGE: u32 = 36;
export const NTX_OK: u32 = 0;
/** shorter than an Ethernet header, longer than maxFrame, or a checksum field beyond the frame */
export const NTX_INVALID: u32 = 1;

const ETH_HLEN: u32 = 14;
const F_NEEDS_CSUM: u32 = 1;

// @ts-ignore: decorator
@inline
function be32(a: u32): i32 {
  return <i32>((<u32>load<u8>(a) << 24) | (<u32>load<u8>(a, 1) << 16) | (<u32>load<u8>(a, 2) << 8) | <u32>load<u8>(a, 3));
}

// @ts-ignore: decorator
@inline
function be16hi(a: u32): i32 {
  return <i32>((<u32>load<u8>(a) << 24) | (<u32>load<u8>(a, 1) << 16));
}

/**
 * Frame records for chain records 0..n-1 of TX queue `qs` (just popped): header fields, frame length, MACs.
 * hdrLen: the sender's virtio_net_hdr length (10 or 12); maxFrame: longest frame forwarded.
 */
export function netTxScan(qs: u32, n: i32, hdrLen: u32, maxFrame: u32, out: u32): void {
  const segBase = qs + SEGS_OFFSET;
  let rec = qs + CHAINS_OFFSET;
  const want = hdrLen + ETH_HLEN;
  for (let c = 0; c < n; c++, rec += CHAIN_BYTES, out += NTX_BYTES) {
    const readLen = load<u32>(rec, CH_READ_LEN);
    if (readLen < want || readLen - hdrLen > maxFrame) {
      store<u32>(out, 0, NTX_FRAME_LEN);
      store<u32>(out, NTX_INVALID, NTX_STATUS);
      continue;
    }
    const frameLen = readLen - hdrLen;
    // the first `want` bytes: read in place when the first segment holds them (the common case), else staged
    // (a header in its own descriptor); a byte loop, as memory.copy of a few bytes costs a runtime call
    let s = segBase + load<u32>(rec, CH_SEG_START) * SEG_BYTES;
    const end = s + load<u32>(rec, CH_SEG_COUNT) * SEG_BYTES;
    let stage = out + NTX_STAGE;
    if (load<u32>(s, SEG_LEN) >= want) {
      stage = load<u32>(s, SEG_ADDR);
    } else {
      let got: u32 = 0;
      for (; s < end && got < want; s += SEG_BYTES) {
        if (load<u32>(s, SEG_FLAGS) & SEG_F_WRITE) break;
        const a = load<u32>(s, SEG_ADDR);
        const l = load<u32>(s, SEG_LEN);
        const take = l < want - got ? l : want - got;
        for (let j: u32 = 0; j < take; j++) store<u8>(stage + got + j, load<u8>(a + j));
        got += take;
      }
    }
    const m = stage + hdrLen; // the Ethernet header
    const flags = <u32>load<u8>(stage, 0);
    const csumStart = <u32>load<u16>(stage, 6);
    const csumOff = <u32>load<u16>(stage, 8);
    store<u32>(out, frameLen, NTX_FRAME_LEN);
    store<u32>(out, (flags & F_NEEDS_CSUM) != 0 && csumStart + csumOff + 2 > frameLen ? NTX_INVALID : NTX_OK, NTX_STATUS);
    store<u8>(out, <u8>flags, NTX_FLAGS);
    store<u8>(out, load<u8>(stage, 1), NTX_GSO_TYPE);
    store<u16>(out, <u16>((<u32>load<u8>(m, 12) << 8) | <u32>load<u8>(m, 13)), NTX_ETHERTYPE);
    store<u16>(out, load<u16>(stage, 2), NTX_HDR_LEN);
    store<u16>(out, load<u16>(stage, 4), NTX_GSO_SIZE);
    store<u16>(out, <u16>csumStart, NTX_CSUM_START);
    store<u16>(out, <u16>csumOff, NTX_CSUM_OFFSET);
    store<i32>(out, be32(m), NTX_DST0);
    store<i32>(out, be16hi(m + 4), NTX_DST1);
    store<i32>(out, be32(m + 6), NTX_SRC0);
    store<i32>(out, be16hi(m + 10), NTX_SRC1);
  }
}

// ---- RX placement: netRxPlace writes, at `out`, the spans the frame bytes go to ----
export const NRX_SPANS: u32 = 16; // (u32 wasm address, u32 length) pairs from here
export const NRX_SPAN_CAP: u32 = 8192;
/** heads of the chains taken for the frame (u32 each) */
const NRX_HEADS: u32 = NRX_SPANS + NRX_SPAN_CAP * 8;
/** used length of each chain (u32 each) */
const NRX_USED: u32 = NRX_HEADS + 4 * 32768;
export const NRX_BYTES: u32 = NRX_USED + 4 * 32768;
// results below 0
export const NRX_NO_BUFFER: i32 = -1; // no (or not enough) buffers: nothing taken, the frame is dropped
export const NRX_TOO_SMALL: i32 = -2; // the one buffer could not hold the frame: it went back empty (publish)
export const NRX_GAVE_BACK: i32 = -3; // not enough buffers, inflight tracked: those taken went back empty (publish)
export const NRX_BROKEN: i32 = -4; // the ring is broken (QS_ERROR holds why)

/**
 * Take RX buffers of queue `qs` for a frame of frameLen bytes behind a virtio_net_hdr of hdrLen (10 or 12) bytes,
 * write the header (the given fields; num_buffers when hdrLen is 12), push the used elements (not published) and
 * leave at out + NRX_SPANS the spans the frame bytes go to. Returns the number of spans, or NRX_* (< 0).
 * mrg: MRG_RXBUF, a frame may take several chains; else it must fit one. The caller copies the frame into the
 * spans before it publishes the ring.
 */
export function netRxPlace(
  qs: u32, frameLen: u32, hdrLen: u32, mrg: i32, flags: u32, gsoType: u32, hdrLenField: u32, gsoSize: u32,
  csumStart: u32, csumOffset: u32, out: u32,
): i32 {
  if (load<u32>(qs, QS_ERROR) != 0) return NRX_BROKEN;
  const lastAvail = load<u16>(qs, QS_LAST_AVAIL);
  const total = hdrLen + frameLen;
  const rec = qs + CHAINS_OFFSET; // each pop of one chain lands in record 0
  const segBase = qs + SEGS_OFFSET;
  let chains: u32 = 0;
  let spans: u32 = 0;
  let left = total;
  // header bytes still to write, from a 12-byte staging at out (spans start at NRX_SPANS)
  store<u8>(out, <u8>flags, 0);
  store<u8>(out, <u8>gsoType, 1);
  store<u16>(out, <u16>hdrLenField, 2);
  store<u16>(out, <u16>gsoSize, 4);
  store<u16>(out, <u16>csumStart, 6);
  store<u16>(out, <u16>csumOffset, 8);
  store<u16>(out, 0, 10); // num_buffers, known at the end
  let hdrDone: u32 = 0;
  let numBuffersAt: u32 = 0; // where num_buffers went (two bytes, maybe split: lo at numBuffersAt, hi at numBuffersHi)
  let numBuffersHi: u32 = 0;
  while (left > 0) {
    if (chains != 0 && !mrg) break;
    if (chains >= 32768) break;
    const n = splitPopBatch(qs, 1);
    if (n < 0) return NRX_BROKEN;
    if (n == 0) break;
    const head = load<u32>(rec, CH_HEAD);
    const room = load<u32>(rec, CH_WRITE_LEN);
    if (chains == 0 && (room < hdrLen || (!mrg && room < total))) {
      // a buffer that cannot take the frame goes back empty (the driver counts a short packet and reuses it)
      splitPushUsed(qs, head, 0);
      return NRX_TOO_SMALL;
    }
    store<u32>(out + NRX_HEADS + chains * 4, head);
    let used: u32 = 0;
    let s = segBase + load<u32>(rec, CH_SEG_START) * SEG_BYTES;
    const end = s + load<u32>(rec, CH_SEG_COUNT) * SEG_BYTES;
    for (; s < end && left > 0; s += SEG_BYTES) {
      if ((load<u32>(s, SEG_FLAGS) & SEG_F_WRITE) == 0) continue;
      let a = load<u32>(s, SEG_ADDR);
      let l = load<u32>(s, SEG_LEN);
      if (l > left) l = left;
      used += l;
      left -= l;
      // header bytes first
      while (hdrDone < hdrLen && l > 0) {
        if (hdrDone == 10) numBuffersAt = a;
        if (hdrDone == 11) numBuffersHi = a;
        store<u8>(a, load<u8>(out + hdrDone));
        hdrDone++;
        a++;
        l--;
      }
      if (l == 0) continue;
      if (spans == NRX_SPAN_CAP) {
        left = 1; // more pieces than the span list holds: treated as not enough buffers
        break;
      }
      store<u32>(out + NRX_SPANS + spans * 8, a);
      store<u32>(out + NRX_SPANS + spans * 8 + 4, l);
      spans++;
    }
    store<u32>(out + NRX_USED + chains * 4, used);
    chains++;
    if (spans == NRX_SPAN_CAP && left > 0) break;
  }
  if (left > 0) {
    if (load<u32>(qs, QS_FEATURES) & QF_INFLIGHT) {
      // inflight records were written for them: complete them empty instead of un-popping
      for (let c: u32 = 0; c < chains; c++) splitPushUsed(qs, load<u32>(out + NRX_HEADS + c * 4), 0);
      return chains != 0 ? NRX_GAVE_BACK : NRX_NO_BUFFER;
    }
    // nothing was pushed: give back what was taken
    store<u16>(qs, lastAvail, QS_LAST_AVAIL);
    return NRX_NO_BUFFER;
  }
  if (hdrLen == 12) {
    store<u8>(numBuffersAt, <u8>(chains & 0xff));
    store<u8>(numBuffersHi, <u8>(chains >>> 8));
  }
  for (let c: u32 = 0; c < chains; c++) splitPushUsed(qs, load<u32>(out + NRX_HEADS + c * 4), load<u32>(out + NRX_USED + c * 4));
  return <i32>spans;
}
