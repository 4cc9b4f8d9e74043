/**
 * virtio-blk queue handler (asynchronous): every request becomes one io_uring operation at a time whose
 * iovecs point straight at guest buffers (host address = memory base + wasm address), so data moves between
 * the image and guest memory with no copy in between. One io_uring_enter submits a whole batch; completions
 * arrive on the ring's eventfd (the worker polls it) and are reaped in any order.
 *
 * Per request, a slot keeps what the completion needs (the chain records are reused by the next pop): head,
 * status byte address, file offset, bytes left, and its iovec array in the queue's scratch area
 * (BLK_IOV_PER_SLOT iovecs of 16 bytes per slot: BLK_QUEUE_DEPTH slots fill the 512 KiB exactly). Slot state
 * lives in typed arrays allocated once: the hot path allocates nothing.
 *
 * A request is checked completely before anything is touched: a bad header, a range beyond the image, a data
 * length that is not whole sectors, a write to a read-only image, too many discard ranges: each completes with
 * IOERR (UNSUPP for an unknown type or unknown flags) and reads or writes nothing but its status byte.
 * Short transfers are resubmitted for the remainder; a transfer that makes no progress (end of file: the image
 * shrank under us) fails with IOERR.
 */
import {
  CH_HEAD,
  CH_READ_LEN,
  CH_SEG_COUNT,
  CH_SEG_START,
  CH_WRITE_LEN,
  CHAIN_BYTES,
  CHAINS_OFFSET,
  DEVICE_AREA_SIZE,
  SEG_ADDR,
  SEG_BYTES,
  SEG_F_WRITE,
  SEG_FLAGS,
  SEG_LEN,
  SEGS_OFFSET,
} from '../engine/layout.js';
import { Errno } from '../sys/errors.js';
import {
  FALLOC_FL_KEEP_SIZE,
  FALLOC_FL_PUNCH_HOLE,
  FALLOC_FL_ZERO_RANGE,
  IORING_FSYNC_DATASYNC,
  IORING_OP_FALLOCATE,
  IORING_OP_FSYNC,
  IORING_OP_READV,
  IORING_OP_WRITE,
  IORING_OP_WRITEV,
  IoUring,
  RWF_DSYNC,
} from '../sys/io-uring.js';
import { bufferAddress } from '../sys/libc.js';
import { blkRangeIoctl, MAP_SHARED, mmapView, munmap, PROT_READ } from '../sys/syscalls.js';
import {
  BLK_IOV_PER_SLOT,
  BLK_MAX_DISCARD_SECTORS,
  BLK_MAX_DISCARD_SEG,
  BLK_MAX_WRITE_ZEROES_SECTORS,
  BLK_MAX_WRITE_ZEROES_SEG,
  BLK_OUTHDR_BYTES,
  BLK_QUEUE_DEPTH,
  SECTOR,
  VIRTIO_BLK_ID_BYTES,
  VIRTIO_BLK_S_IOERR,
  VIRTIO_BLK_S_OK,
  VIRTIO_BLK_S_UNSUPP,
  VIRTIO_BLK_T_DISCARD,
  VIRTIO_BLK_T_FLUSH,
  VIRTIO_BLK_T_GET_ID,
  VIRTIO_BLK_T_IN,
  VIRTIO_BLK_T_OUT,
  VIRTIO_BLK_T_WRITE_ZEROES,
  VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
} from './blk.js';
import { LinearViews } from './linear-views.js';
import type { QueueHandler, QueueHandlerContext, QueueHandlerFactory } from './queue-handler.js';

const SLOTS = BLK_QUEUE_DEPTH;
const IOV = BLK_IOV_PER_SLOT;
const MAX_DZ_SEG = Math.max(BLK_MAX_DISCARD_SEG, BLK_MAX_WRITE_ZEROES_SEG);
const TWO32 = 4294967296;
/** sectors at or above 2^44 are beyond any image this device opens (sizes stay below 2^52 bytes) */
const SECTOR_HI_LIMIT = 4096;
/** write-zeroes fallback (no fallocate mode the file system takes): zeros written from this buffer */
const ZERO_CHUNK = 1 << 20;

// what a slot is doing
const K_READ = 1;
const K_WRITE = 2;
const K_FLUSH = 3;
const K_DZ = 4;

// how a discard / write-zeroes range is carried out
const DZ_SKIP = 0; // discard where holes cannot be punched: advisory, nothing to do
const DZ_PUNCH = 1; // fallocate PUNCH_HOLE | KEEP_SIZE
const DZ_ZERO = 2; // fallocate ZERO_RANGE | KEEP_SIZE
const DZ_PUNCH_ALLOC = 3; // PUNCH_HOLE then DZ_ALLOC: zeros that stay allocated where ZERO_RANGE is missing
const DZ_ALLOC = 4; // fallocate KEEP_SIZE
const DZ_WRITE = 5; // write zeros

export const createBlkQueueHandler: QueueHandlerFactory = (ctx: QueueHandlerContext): QueueHandler => {
  const o = ctx.options;
  const fd = Number(o['fd']);
  const size = Number(o['size']);
  const readOnly = o['readOnly'] === true;
  const blockDevice = o['blockDevice'] === true;
  const serial = new Uint8Array(VIRTIO_BLK_ID_BYTES);
  serial.set(Buffer.from(String(o['serial'] ?? '')).subarray(0, VIRTIO_BLK_ID_BYTES));
  if (!Number.isInteger(fd) || fd < 0 || !(size > 0)) throw new Error('blk queue handler: no image fd/size in the device options');
  if (SLOTS * IOV * 16 > DEVICE_AREA_SIZE) throw new Error('blk queue handler: request slots do not fit the scratch area');

  // the writeback byte of the config space, shared with the device model (1 writeback, 0 writethrough)
  const wceMap = mmapView(4096, PROT_READ, MAP_SHARED, Number(o['wceFd']), 0n);
  const wce = new Uint8Array(wceMap.buffer, 0, 1);
  let ring: IoUring;
  try {
    ring = new IoUring(SLOTS);
  } catch (e) {
    munmap(wceMap.address, 4096);
    throw e;
  }

  const views = new LinearViews(ctx.memory);
  let u8 = views.u8;
  let u32 = views.u32;
  const hostBase = Number(ctx.hostBase);
  const chainBase = ctx.queueArea + CHAINS_OFFSET;
  const segBase = ctx.queueArea + SEGS_OFFSET;
  const iovWasm = ctx.scratch;

  // ---- slot state ----
  const free = new Uint16Array(SLOTS);
  let freeTop = SLOTS;
  for (let i = 0; i < SLOTS; i++) free[i] = SLOTS - 1 - i;
  const sHead = new Uint32Array(SLOTS);
  const sStatus = new Uint32Array(SLOTS); // wasm address of the status byte
  const sWlen = new Uint32Array(SLOTS); // device-writable bytes of the chain
  const sKind = new Uint8Array(SLOTS);
  const sRwFlags = new Uint32Array(SLOTS);
  const sOff = new Float64Array(SLOTS); // file offset of the next transfer
  const sLeft = new Float64Array(SLOTS); // bytes still to transfer
  const sTotal = new Float64Array(SLOTS);
  const sIov = new Uint16Array(SLOTS); // first iovec still to transfer
  const sIovN = new Uint16Array(SLOTS);
  // discard / write zeroes: ranges, the current one, and how it is being carried out
  const sDiscard = new Uint8Array(SLOTS);
  const sRanges = new Uint8Array(SLOTS);
  const sRange = new Uint8Array(SLOTS);
  const sDzOp = new Uint8Array(SLOTS);
  const rOff = new Float64Array(SLOTS * MAX_DZ_SEG);
  const rLen = new Float64Array(SLOTS * MAX_DZ_SEG);
  const rUnmap = new Uint8Array(SLOTS * MAX_DZ_SEG);
  // what the file system turned down once (EOPNOTSUPP) is not tried again
  let noPunch = false;
  let noZeroRange = false;
  let zeroBuf: Buffer | undefined;
  let zeroAddr = 0;

  const hdr8 = new Uint8Array(BLK_OUTHDR_BYTES);
  const hdr32 = new Uint32Array(hdr8.buffer);
  const dz8 = new Uint8Array(MAX_DZ_SEG * 16);
  const dz32 = new Uint32Array(dz8.buffer);
  const sleepWord = new Int32Array(new SharedArrayBuffer(4));
  // where the payload after the header starts: segment index and offset in it (set by readHeader)
  let paySeg = 0;
  let payOff = 0;

  const warned = new Set<string>();
  const warnOnce = (key: string, msg: string): void => {
    if (warned.has(key)) return;
    warned.add(key);
    console.warn(`vhost-wasm blk: queue ${ctx.queue}: ${msg} (logged once)`);
  };

  const segAddr = (s: number): number => u32[((segBase + s * SEG_BYTES) >>> 2) + SEG_ADDR / 4]!;
  const segLen = (s: number): number => u32[((segBase + s * SEG_BYTES) >>> 2) + SEG_LEN / 4]!;
  const segWritable = (s: number): boolean => (u32[((segBase + s * SEG_BYTES) >>> 2) + SEG_FLAGS / 4]! & SEG_F_WRITE) !== 0;

  /**
   * Used length: the bytes written from the start of the device-writable area without a gap (virtio 2.7.8.2:
   * the device must have written at least len bytes from the start). The status byte is the last one, so it
   * counts when everything before it was written.
   */
  const usedLen = (wlen: number, prefix: number): number => (prefix >= wlen - 1 ? wlen : prefix);

  /** Complete a chain that has no slot (nothing in flight). */
  const completeNow = (head: number, statusAddr: number, wlen: number, prefix: number, status: number): void => {
    if (statusAddr === 0) {
      ctx.pushUsed(head, 0);
      return;
    }
    u8[statusAddr] = status;
    ctx.pushUsed(head, usedLen(wlen, prefix));
  };

  const finish = (slot: number, status: number): void => {
    u8[sStatus[slot]!] = status;
    const prefix = sKind[slot] === K_READ ? sTotal[slot]! - sLeft[slot]! : 0;
    ctx.pushUsed(sHead[slot]!, usedLen(sWlen[slot]!, prefix));
    free[freeTop++] = slot;
  };

  const iovWord = (slot: number, i: number): number => (iovWasm >>> 2) + (slot * IOV + i) * 4;

  /** Append iovecs for `want` bytes of segments s..end-1 (from offset `off` in the first); returns the iovec count or -1. */
  const addIovecs = (slot: number, s: number, end: number, off: number, want: number, writable: boolean): number => {
    let n = 0;
    for (; want > 0 && s < end; s++, off = 0) {
      if (segWritable(s) !== writable) continue;
      const take = Math.min(segLen(s) - off, want);
      if (take <= 0) continue;
      if (n === IOV) return -1;
      const w = iovWord(slot, n++);
      const h = hostBase + segAddr(s) + off;
      u32[w] = h >>> 0;
      u32[w + 1] = Math.floor(h / TWO32);
      u32[w + 2] = take;
      u32[w + 3] = 0;
      want -= take;
    }
    return n;
  };

  /** Consume `done` bytes from the front of a slot's iovecs (a short transfer). */
  const advance = (slot: number, done: number): void => {
    let i = sIov[slot]!;
    let n = sIovN[slot]!;
    while (done > 0 && n > 0) {
      const w = iovWord(slot, i);
      const len = u32[w + 2]!;
      if (done >= len) {
        done -= len;
        i++;
        n--;
        continue;
      }
      const base = u32[w]! + u32[w + 1]! * TWO32 + done;
      u32[w] = base >>> 0;
      u32[w + 1] = Math.floor(base / TWO32);
      u32[w + 2] = len - done;
      done = 0;
    }
    sIov[slot] = i;
    sIovN[slot] = n;
  };

  const chooseDzOp = (slot: number): number => {
    const r = slot * MAX_DZ_SEG + sRange[slot]!;
    if (sDiscard[slot]) return noPunch ? DZ_SKIP : DZ_PUNCH;
    if (rUnmap[r]) return !noPunch ? DZ_PUNCH : !noZeroRange ? DZ_ZERO : DZ_WRITE;
    return !noZeroRange ? DZ_ZERO : !noPunch ? DZ_PUNCH_ALLOC : DZ_WRITE;
  };

  /** Queue the slot's next operation (one at a time per slot: the SQ never holds more than SLOTS). */
  const submitSlot = (slot: number): void => {
    switch (sKind[slot]) {
      case K_READ:
      case K_WRITE:
        ring.prep(
          sKind[slot] === K_READ ? IORING_OP_READV : IORING_OP_WRITEV,
          fd,
          sOff[slot]!,
          hostBase + iovWasm + (slot * IOV + sIov[slot]!) * 16,
          sIovN[slot]!,
          sRwFlags[slot]!,
          slot,
        );
        return;
      case K_FLUSH:
        ring.prep(IORING_OP_FSYNC, fd, 0, 0, 0, IORING_FSYNC_DATASYNC, slot);
        return;
      default: {
        const op = sDzOp[slot];
        if (op === DZ_WRITE) {
          ring.prep(IORING_OP_WRITE, fd, sOff[slot]!, zeroAddr, Math.min(sLeft[slot]!, ZERO_CHUNK), sRwFlags[slot]!, slot);
          return;
        }
        const mode =
          op === DZ_ZERO ? FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE : op === DZ_ALLOC ? FALLOC_FL_KEEP_SIZE : FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
        ring.prep(IORING_OP_FALLOCATE, fd, sOff[slot]!, sLeft[slot]!, mode, 0, slot);
      }
    }
  };

  /** Start the slot's current discard / write-zeroes range (or complete the request after the last one). */
  const startRange = (slot: number): void => {
    for (;;) {
      if (sRange[slot]! >= sRanges[slot]!) {
        if (sRwFlags[slot]! & RWF_DSYNC) {
          // writethrough: the ranges are durable before the request completes
          sRwFlags[slot] = 0;
          sKind[slot] = K_FLUSH;
          submitSlot(slot);
          return;
        }
        finish(slot, VIRTIO_BLK_S_OK);
        return;
      }
      const op = chooseDzOp(slot);
      if (op === DZ_SKIP) {
        sRange[slot]++;
        continue;
      }
      const r = slot * MAX_DZ_SEG + sRange[slot]!;
      sDzOp[slot] = op;
      sOff[slot] = rOff[r]!;
      sLeft[slot] = rLen[r]!;
      if (op === DZ_WRITE && !zeroBuf) {
        zeroBuf = Buffer.allocUnsafeSlow(ZERO_CHUNK).fill(0);
        zeroAddr = Number(bufferAddress(zeroBuf));
      }
      submitSlot(slot);
      return;
    }
  };

  const onCompletion = (slot: number, res: number): void => {
    if (res === -Errno.EINTR || res === -Errno.EAGAIN) {
      submitSlot(slot);
      return;
    }
    const kind = sKind[slot];
    if (kind === K_READ || kind === K_WRITE) {
      if (res < 0) {
        warnOnce(`rw${res}`, `${kind === K_READ ? 'read' : 'write'} failed: errno ${-res}`);
        finish(slot, VIRTIO_BLK_S_IOERR);
      } else if (res >= sLeft[slot]!) {
        sLeft[slot] = 0;
        finish(slot, VIRTIO_BLK_S_OK);
      } else if (res === 0) {
        warnOnce('eof', `${kind === K_READ ? 'read' : 'write'} made no progress at offset ${sOff[slot]} (image shorter than at start?)`);
        finish(slot, VIRTIO_BLK_S_IOERR);
      } else {
        // short transfer: go on with the rest
        advance(slot, res);
        sOff[slot] += res;
        sLeft[slot] -= res;
        submitSlot(slot);
      }
      return;
    }
    if (kind === K_FLUSH) {
      if (res < 0) warnOnce(`flush${res}`, `flush failed: errno ${-res}`);
      finish(slot, res < 0 ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK);
      return;
    }
    // discard / write zeroes
    const op = sDzOp[slot];
    if (res === -Errno.EOPNOTSUPP && op !== DZ_WRITE) {
      if (op === DZ_ZERO) noZeroRange = true;
      else if (op === DZ_PUNCH || op === DZ_PUNCH_ALLOC) noPunch = true;
      if (op === DZ_ALLOC) sRange[slot]++; // the hole reads as zeros already
      startRange(slot);
      return;
    }
    if (res < 0) {
      warnOnce(`dz${res}`, `${sDiscard[slot] ? 'discard' : 'write zeroes'} failed: errno ${-res}`);
      finish(slot, VIRTIO_BLK_S_IOERR);
      return;
    }
    if (op === DZ_PUNCH_ALLOC) {
      sDzOp[slot] = DZ_ALLOC;
      submitSlot(slot);
      return;
    }
    if (op === DZ_WRITE) {
      if (res === 0) {
        finish(slot, VIRTIO_BLK_S_IOERR);
        return;
      }
      sOff[slot] += res;
      sLeft[slot] -= res;
      if (sLeft[slot]! > 0) {
        submitSlot(slot);
        return;
      }
    }
    sRange[slot]++;
    startRange(slot);
  };

  const failUnsubmitted = (slot: number): void => finish(slot, VIRTIO_BLK_S_IOERR);

  /** One io_uring_enter for everything prepared; a refusal is retried while completions can bring us back. */
  const flush = (): void => {
    for (let tries = 0; ring.unsubmitted > 0; tries++) {
      try {
        ring.submit();
      } catch (e) {
        warnOnce('submit', `io_uring_enter failed: ${(e as Error).message}; failing the requests`);
        ring.unprepare(failUnsubmitted, -Errno.EIO);
        return;
      }
      const pending = ring.unsubmitted;
      if (pending === 0) return;
      // completions of what the kernel did take call flush() again from reap()
      if (SLOTS - freeTop > pending) return;
      if (tries >= 100) {
        warnOnce('submit-again', `io_uring_enter keeps refusing ${pending} request(s); failing them`);
        ring.unprepare(failUnsubmitted, -Errno.EAGAIN);
        return;
      }
      Atomics.wait(sleepWord, 0, 0, 1);
    }
  };

  /** Copy the 16-byte header out of the first readable bytes (it may span segments); sets paySeg/payOff. */
  const readHeader = (s0: number, ns: number): void => {
    let got = 0;
    let s = s0;
    for (; s < s0 + ns && got < BLK_OUTHDR_BYTES; s++) {
      const len = segLen(s);
      const a = segAddr(s);
      let i = 0;
      for (; i < len && got < BLK_OUTHDR_BYTES; i++) hdr8[got++] = u8[a + i]!;
      if (got === BLK_OUTHDR_BYTES) {
        if (i < len) {
          paySeg = s;
          payOff = i;
          return;
        }
        paySeg = s + 1;
        payOff = 0;
        return;
      }
    }
    paySeg = s;
    payOff = 0;
  };

  /** File offset of the header's sector, or -1 when [sector*512, +bytes) is not inside the image. */
  const rangeOffset = (lo: number, hi: number, bytes: number): number => {
    if (hi >= SECTOR_HI_LIMIT) return -1;
    const off = (hi * TWO32 + lo) * SECTOR;
    return off + bytes <= size ? off : -1;
  };

  const takeSlot = (head: number, statusAddr: number, wlen: number, kind: number): number => {
    const slot = free[--freeTop]!;
    sHead[slot] = head;
    sStatus[slot] = statusAddr;
    sWlen[slot] = wlen;
    sKind[slot] = kind;
    sRwFlags[slot] = 0;
    sLeft[slot] = 0;
    sTotal[slot] = 0;
    return slot;
  };

  const releaseSlot = (slot: number): void => {
    free[freeTop++] = slot;
  };

  const handleChain = (head: number, s0: number, ns: number, rlen: number, wlen: number): void => {
    // the status byte: the last byte of the last non-empty device-writable segment
    let statusAddr = 0;
    if (wlen > 0) {
      for (let s = s0 + ns - 1; s >= s0 && segWritable(s); s--) {
        const len = segLen(s);
        if (len > 0) {
          statusAddr = segAddr(s) + len - 1;
          break;
        }
      }
    }
    if (rlen < BLK_OUTHDR_BYTES) {
      warnOnce('short-header', `request header of ${rlen} bytes (16 expected)${statusAddr ? '' : ' and no status byte'}`);
      completeNow(head, statusAddr, wlen, 0, VIRTIO_BLK_S_IOERR);
      return;
    }
    if (statusAddr === 0) {
      warnOnce('no-status', 'request without a device-writable status byte: completed with length 0');
      ctx.pushUsed(head, 0);
      return;
    }
    readHeader(s0, ns);
    const type = hdr32[0]!;
    const dataIn = wlen - 1; // device-writable bytes before the status byte
    const dataOut = rlen - BLK_OUTHDR_BYTES; // device-readable bytes after the header
    switch (type) {
      case VIRTIO_BLK_T_IN:
      case VIRTIO_BLK_T_OUT: {
        const isRead = type === VIRTIO_BLK_T_IN;
        const bytes = isRead ? dataIn : dataOut;
        const off = rangeOffset(hdr32[2]!, hdr32[3]!, bytes);
        if ((!isRead && readOnly) || bytes % SECTOR !== 0 || off < 0) {
          completeNow(head, statusAddr, wlen, 0, VIRTIO_BLK_S_IOERR);
          return;
        }
        if (bytes === 0) {
          completeNow(head, statusAddr, wlen, 0, VIRTIO_BLK_S_OK);
          return;
        }
        const slot = takeSlot(head, statusAddr, wlen, isRead ? K_READ : K_WRITE);
        const n = isRead ? addIovecs(slot, s0, s0 + ns, 0, bytes, true) : addIovecs(slot, paySeg, s0 + ns, payOff, bytes, false);
        if (n < 0) {
          warnOnce('iov', `request with more than ${IOV} data segments`);
          releaseSlot(slot);
          completeNow(head, statusAddr, wlen, 0, VIRTIO_BLK_S_IOERR);
          return;
        }
        sOff[slot] = off;
        sLeft[slot] = bytes;
        sTotal[slot] = bytes;
        sIov[slot] = 0;
        sIovN[slot] = n;
        if (!isRead && wce[0] === 0) sRwFlags[slot] = RWF_DSYNC;
        submitSlot(slot);
        return;
      }
      case VIRTIO_BLK_T_FLUSH:
        submitSlot(takeSlot(head, statusAddr, wlen, K_FLUSH));
        return;
      case VIRTIO_BLK_T_GET_ID: {
        const n = Math.min(VIRTIO_BLK_ID_BYTES, dataIn);
        let done = 0;
        for (let s = s0; s < s0 + ns && done < n; s++) {
          if (!segWritable(s)) continue;
          const a = segAddr(s);
          const len = segLen(s);
          for (let i = 0; i < len && done < n; i++) u8[a + i] = serial[done++]!;
        }
        completeNow(head, statusAddr, wlen, n, VIRTIO_BLK_S_OK);
        return;
      }
      case VIRTIO_BLK_T_DISCARD:
      case VIRTIO_BLK_T_WRITE_ZEROES: {
        const discard = type === VIRTIO_BLK_T_DISCARD;
        const maxSeg = discard ? BLK_MAX_DISCARD_SEG : BLK_MAX_WRITE_ZEROES_SEG;
        const maxSectors = discard ? BLK_MAX_DISCARD_SECTORS : BLK_MAX_WRITE_ZEROES_SECTORS;
        const count = dataOut / 16;
        if (readOnly || dataOut === 0 || dataOut % 16 !== 0 || count > maxSeg) {
          completeNow(head, statusAddr, wlen, 0, VIRTIO_BLK_S_IOERR);
          return;
        }
        // copy the ranges out (they may span segments), then check every one before touching anything
        let got = 0;
        for (let s = paySeg, off = payOff; s < s0 + ns && got < dataOut; s++, off = 0) {
          if (segWritable(s)) break;
          const a = segAddr(s);
          const len = segLen(s);
          for (let i = off; i < len && got < dataOut; i++) dz8[got++] = u8[a + i]!;
        }
        let status = VIRTIO_BLK_S_OK;
        for (let i = 0; i < count && status === VIRTIO_BLK_S_OK; i++) {
          const flags = dz32[i * 4 + 3]!;
          if (flags & ~VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP || (discard && flags !== 0)) status = VIRTIO_BLK_S_UNSUPP;
          else if (dz32[i * 4 + 2]! > maxSectors || rangeOffset(dz32[i * 4]!, dz32[i * 4 + 1]!, dz32[i * 4 + 2]! * SECTOR) < 0)
            status = VIRTIO_BLK_S_IOERR;
        }
        if (status !== VIRTIO_BLK_S_OK) {
          completeNow(head, statusAddr, wlen, 0, status);
          return;
        }
        if (blockDevice) {
          // block devices: BLKDISCARD / BLKZEROOUT, synchronously (io_uring has no such operation before 6.12)
          for (let i = 0; i < count && status === VIRTIO_BLK_S_OK; i++) {
            const len = dz32[i * 4 + 2]! * SECTOR;
            if (len === 0) continue;
            const e = blkRangeIoctl(fd, !discard, rangeOffset(dz32[i * 4]!, dz32[i * 4 + 1]!, len), len);
            if (e !== 0 && !(discard && e === Errno.EOPNOTSUPP)) {
              warnOnce(`blkioctl${e}`, `${discard ? 'BLKDISCARD' : 'BLKZEROOUT'} failed: errno ${e}`);
              status = VIRTIO_BLK_S_IOERR;
            }
          }
          completeNow(head, statusAddr, wlen, 0, status);
          return;
        }
        const slot = takeSlot(head, statusAddr, wlen, K_DZ);
        let ranges = 0;
        for (let i = 0; i < count; i++) {
          const len = dz32[i * 4 + 2]! * SECTOR;
          if (len === 0) continue;
          const r = slot * MAX_DZ_SEG + ranges++;
          rOff[r] = rangeOffset(dz32[i * 4]!, dz32[i * 4 + 1]!, len);
          rLen[r] = len;
          rUnmap[r] = dz32[i * 4 + 3]! & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP;
        }
        sDiscard[slot] = discard ? 1 : 0;
        sRanges[slot] = ranges;
        sRange[slot] = 0;
        if (wce[0] === 0) sRwFlags[slot] = RWF_DSYNC;
        startRange(slot);
        return;
      }
      default:
        completeNow(head, statusAddr, wlen, 0, VIRTIO_BLK_S_UNSUPP);
    }
  };

  return {
    completionFd: ring.eventFd,
    process(count: number): void {
      views.refresh();
      u8 = views.u8;
      u32 = views.u32;
      for (let c = 0; c < count; c++) {
        const ch = (chainBase + c * CHAIN_BYTES) >>> 2;
        handleChain(u32[ch + CH_HEAD / 4]!, u32[ch + CH_SEG_START / 4]!, u32[ch + CH_SEG_COUNT / 4]!, u32[ch + CH_READ_LEN / 4]!, u32[ch + CH_WRITE_LEN / 4]!);
      }
      flush();
      // what completed inside io_uring_enter (reads from the page cache do) goes out with this batch's
      // publish: no second wake-up through the eventfd for it. Nothing there (writes go to io-wq): no eventfd
      // read either; their completions come back through the eventfd
      if (freeTop < SLOTS && ring.hasCompletions) {
        ring.reap(onCompletion);
        flush();
      }
    },
    reap(): void {
      views.refresh();
      u8 = views.u8;
      u32 = views.u32;
      ring.reap(onCompletion);
      flush();
    },
    capacity(): number {
      return freeTop;
    },
    inflight(): number {
      return SLOTS - freeTop;
    },
    close(): void {
      ring.close();
      munmap(wceMap.address, 4096);
    },
  };
};
