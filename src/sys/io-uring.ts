/**
 * A minimal io_uring for the queue workers: io_uring_setup/enter/register through koffi, the SQ and CQ rings
 * and the SQE array mmap'ed from the kernel and seen through typed arrays created once. No liburing.
 *
 * Hot path without allocation: SQE fields are written as u32 words (64-bit values split into two numbers,
 * exact below 2^53), completions are handed to one pre-bound callback, and one io_uring_enter submits every
 * SQE prepared since the last one. Completions are announced on an eventfd registered with the ring
 * (IORING_REGISTER_EVENTFD), which the worker polls.
 */
import { Errno } from './errors.js';
import {
  closeQuietly,
  eventfd,
  eventfdDrain,
  ioUringEnter,
  ioUringRegister,
  ioUringSetup,
  MAP_POPULATE,
  MAP_SHARED,
  mmapView,
  munmap,
  PROT_READ,
  PROT_WRITE,
} from './syscalls.js';

export const IORING_OP_NOP = 0;
export const IORING_OP_READV = 1;
export const IORING_OP_WRITEV = 2;
export const IORING_OP_FSYNC = 3;
export const IORING_OP_FALLOCATE = 17;
export const IORING_OP_READ = 22;
export const IORING_OP_WRITE = 23;

export const IORING_FSYNC_DATASYNC = 1;
/** pwritev2 flag: this write is durable when it completes (writethrough) */
export const RWF_DSYNC = 2;

export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_ZERO_RANGE = 0x10;

const IORING_FEAT_SINGLE_MMAP = 1;
const IORING_OFF_SQ_RING = 0n;
const IORING_OFF_CQ_RING = 0x800_0000n;
const IORING_OFF_SQES = 0x1000_0000n;
const IORING_REGISTER_EVENTFD = 4;

const SQE_BYTES = 64;
const SQE_WORDS = SQE_BYTES / 4;
const CQE_BYTES = 16;
const TWO32 = 4294967296;

/** Called once per completion with the SQE's user data (a u32 here) and its result (>= 0, or -errno). */
export type CompletionFn = (userData: number, res: number) => void;

export class IoUring {
  readonly fd: number;
  /** readable when completions are waiting (drain it before reading the CQ, see reap) */
  readonly eventFd: number;
  readonly sqEntries: number;
  readonly cqEntries: number;
  private readonly maps: { address: bigint; length: number }[] = [];
  private readonly sq: Uint32Array;
  private readonly cq: Uint32Array;
  private readonly cqRes: Int32Array;
  private readonly sqes: Uint32Array;
  private readonly sqHead: number;
  private readonly sqTail: number;
  private readonly sqMask: number;
  private readonly cqHead: number;
  private readonly cqTail: number;
  private readonly cqMask: number;
  private readonly cqes: number;
  /** our SQ tail (published to the kernel at submit) */
  private tail = 0;
  private closed = false;

  constructor(entries: number) {
    const params = Buffer.alloc(120);
    this.fd = ioUringSetup(entries, params);
    let evfd = -1;
    try {
      this.sqEntries = params.readUInt32LE(0);
      this.cqEntries = params.readUInt32LE(4);
      const features = params.readUInt32LE(20);
      const sqOff = (i: number): number => params.readUInt32LE(40 + i * 4);
      const cqOff = (i: number): number => params.readUInt32LE(80 + i * 4);
      const sqLen = sqOff(6) + this.sqEntries * 4;
      const cqLen = cqOff(5) + this.cqEntries * CQE_BYTES;
      const map = (len: number, off: bigint): ArrayBuffer => {
        const v = mmapView(len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, this.fd, off);
        this.maps.push({ address: v.address, length: len });
        return v.buffer;
      };
      let sqBuf: ArrayBuffer;
      let cqBuf: ArrayBuffer;
      if (features & IORING_FEAT_SINGLE_MMAP) {
        sqBuf = cqBuf = map(Math.max(sqLen, cqLen), IORING_OFF_SQ_RING);
      } else {
        sqBuf = map(sqLen, IORING_OFF_SQ_RING);
        cqBuf = map(cqLen, IORING_OFF_CQ_RING);
      }
      this.sqes = new Uint32Array(map(this.sqEntries * SQE_BYTES, IORING_OFF_SQES));
      this.sq = new Uint32Array(sqBuf);
      this.cq = new Uint32Array(cqBuf);
      this.cqRes = new Int32Array(cqBuf);
      this.sqHead = sqOff(0) >>> 2;
      this.sqTail = sqOff(1) >>> 2;
      this.sqMask = this.sq[sqOff(2) >>> 2]!;
      this.cqHead = cqOff(0) >>> 2;
      this.cqTail = cqOff(1) >>> 2;
      this.cqMask = this.cq[cqOff(2) >>> 2]!;
      this.cqes = cqOff(5) >>> 2;
      // SQ index array: slot i always names SQE i (SQEs are used in ring order)
      const array = sqOff(6) >>> 2;
      for (let i = 0; i < this.sqEntries; i++) this.sq[array + i] = i;
      this.tail = this.sq[this.sqTail]!;
      evfd = eventfd();
      const arg = Buffer.alloc(4);
      arg.writeInt32LE(evfd, 0);
      ioUringRegister(this.fd, IORING_REGISTER_EVENTFD, arg, 1);
      this.eventFd = evfd;
    } catch (e) {
      closeQuietly(evfd);
      this.unmapAll();
      closeQuietly(this.fd);
      throw e;
    }
  }

  /** SQEs prepared and not yet taken by the kernel. */
  get unsubmitted(): number {
    return (this.tail - Atomics.load(this.sq, this.sqHead)) >>> 0;
  }

  /** Completions are waiting in the CQ (a memory read: no syscall). */
  get hasCompletions(): boolean {
    return Atomics.load(this.cq, this.cqHead) !== Atomics.load(this.cq, this.cqTail);
  }

  /** Free SQ entries. */
  get sqSpace(): number {
    return this.sqEntries - this.unsubmitted;
  }

  /**
   * Prepare one SQE. `off` and `addr` are byte values below 2^53; `opFlags` is rw_flags / fsync_flags;
   * FALLOCATE takes the length in `addr` and the mode in `len`. The caller keeps within sqSpace.
   */
  prep(opcode: number, fd: number, off: number, addr: number, len: number, opFlags: number, userData: number): void {
    const w = (this.tail & this.sqMask) * SQE_WORDS;
    const s = this.sqes;
    s[w] = opcode; // flags 0, ioprio 0
    s[w + 1] = fd;
    s[w + 2] = off >>> 0;
    s[w + 3] = Math.floor(off / TWO32);
    s[w + 4] = addr >>> 0;
    s[w + 5] = Math.floor(addr / TWO32);
    s[w + 6] = len;
    s[w + 7] = opFlags;
    s[w + 8] = userData;
    s[w + 9] = 0;
    s[w + 10] = 0;
    s[w + 11] = 0;
    s[w + 12] = 0;
    s[w + 13] = 0;
    s[w + 14] = 0;
    s[w + 15] = 0;
    this.tail = (this.tail + 1) >>> 0;
  }

  /**
   * Hand every prepared SQE to the kernel with one io_uring_enter. Returns how many it took; a transient
   * refusal (EAGAIN, EBUSY) leaves them queued for the next call and returns the negative errno.
   */
  submit(): number {
    const n = this.unsubmitted;
    if (n === 0) return 0;
    Atomics.store(this.sq, this.sqTail, this.tail);
    for (;;) {
      const r = ioUringEnter(this.fd, n, 0, 0);
      if (r === -Errno.EINTR) continue;
      return r;
    }
  }

  /**
   * Take back SQEs the kernel has not consumed (after a submit that failed for good): returns their user data
   * values through `fn` (res = -errno given) and rewinds the tail.
   */
  unprepare(fn: CompletionFn, res: number): number {
    const head = Atomics.load(this.sq, this.sqHead);
    let n = 0;
    while (this.tail !== head) {
      this.tail = (this.tail - 1) >>> 0;
      fn(this.sqes[(this.tail & this.sqMask) * SQE_WORDS + 8]!, res);
      n++;
    }
    Atomics.store(this.sq, this.sqTail, this.tail);
    return n;
  }

  /**
   * Drain the eventfd, then hand every waiting completion to `fn` (in CQ order) and release the CQ entries.
   * The order matters: a completion posted after the CQ was read signals the (already drained) eventfd again.
   */
  reap(fn: CompletionFn): number {
    eventfdDrain(this.eventFd);
    let head = Atomics.load(this.cq, this.cqHead);
    let n = 0;
    for (;;) {
      const tail = Atomics.load(this.cq, this.cqTail);
      if (head === tail) break;
      while (head !== tail) {
        const at = this.cqes + (head & this.cqMask) * (CQE_BYTES / 4);
        const userData = this.cq[at]!;
        const res = this.cqRes[at + 2]!;
        head = (head + 1) >>> 0;
        // release the entry before the callback: it may submit more work
        Atomics.store(this.cq, this.cqHead, head);
        fn(userData, res);
        n++;
      }
    }
    return n;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.unmapAll();
    closeQuietly(this.fd);
    closeQuietly(this.eventFd);
  }

  private unmapAll(): void {
    for (const m of this.maps.splice(0)) munmap(m.address, m.length);
  }
}
