/** Checked system calls: each returns its result or throws a SysError naming the call and errno. */
import fs from 'node:fs';
import { errno, raw } from './libc.js';
import { Errno, SysError } from './errors.js';

export const O_NONBLOCK = 0o4000;
export const O_CLOEXEC = 0o2000000;
export const MFD_CLOEXEC = 1;
export const MFD_ALLOW_SEALING = 2;
export const EFD_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;
export const PROT_NONE = 0;
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 1;
export const MAP_PRIVATE = 2;
export const MAP_FIXED = 0x10;
export const MAP_ANONYMOUS = 0x20;
export const MAP_NORESERVE = 0x4000;
export const POLLIN = 1;
export const POLLOUT = 4;
export const POLLERR = 8;
export const POLLHUP = 16;
export const POLLNVAL = 32;
const F_GETFL = 3;
const F_SETFL = 4;
const MAP_FAILED = 0xffff_ffff_ffff_ffffn;

function check(call: string, r: number, detail?: string): number {
  if (r < 0) throw new SysError(call, errno(), detail);
  return r;
}

export function close(fd: number): void {
  check('close', raw.close(fd), `fd ${fd}`);
}

/** close() that never throws: for cleanup paths where the fd may already be gone. */
export function closeQuietly(fd: number | undefined | null): void {
  if (fd !== undefined && fd !== null && fd >= 0) raw.close(fd);
}

export function memfdCreate(name: string, flags = MFD_CLOEXEC): number {
  return check('memfd_create', raw.memfd_create(name, flags), name);
}

export function ftruncate(fd: number, length: number | bigint): void {
  check('ftruncate', raw.ftruncate(fd, length), `fd ${fd}`);
}

export function setNonBlocking(fd: number): void {
  const fl = check('fcntl', raw.fcntl(fd, F_GETFL, 0), 'F_GETFL');
  check('fcntl', raw.fcntl(fd, F_SETFL, fl | O_NONBLOCK), 'F_SETFL');
}

const F_ADD_SEALS = 1033;
const F_GET_SEALS = 1034;
export const F_SEAL_SHRINK = 0x2;

/**
 * Make sure the file under `fd` can never shrink (a mapping past a shrunk end faults with SIGBUS, which kills
 * the process): true when it is sealed against shrinking now, false when it cannot be (not a memfd, or sealed
 * against further seals without SHRINK).
 */
export function sealAgainstShrink(fd: number): boolean {
  const seals = raw.fcntl(fd, F_GET_SEALS, 0);
  if (seals < 0) return false;
  if (seals & F_SEAL_SHRINK) return true;
  return raw.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK) >= 0;
}

/** True when `fd` is an eventfd (the only notification fd vhost-user uses on Linux). */
export function isEventfd(fd: number): boolean {
  try {
    return fs.readlinkSync(`/proc/self/fd/${fd}`) === 'anon_inode:[eventfd]';
  } catch {
    return false;
  }
}

export const O_RDWR = 2;
export const O_CREAT = 0o100;
export const O_NOFOLLOW = 0o400000;

/** open(2) with a mode (for O_CREAT); the fd is close-on-exec. */
export function openFile(path: string, flags: number, mode = 0o600): number {
  return check('open', raw.open(path, flags | O_CLOEXEC, 'uint32_t', mode), path);
}

/** mkstemp(3): a new file from `template` (ending in XXXXXX); returns its fd and the name it got. */
export function mkstemp(template: string): { fd: number; path: string } {
  const buf = Buffer.from(`${template}\0`);
  const fd = check('mkstemp', raw.mkstemp(buf), template);
  return { fd, path: buf.subarray(0, buf.length - 1).toString() };
}

export function dup(fd: number): number {
  return check('dup', raw.dup(fd), `fd ${fd}`);
}

export function mmap(addr: bigint, length: number | bigint, prot: number, flags: number, fd: number, offset: bigint): bigint {
  const p = raw.mmap(addr, length, prot, flags, fd, offset);
  if (p === MAP_FAILED) throw new SysError('mmap', errno(), `fd ${fd} len ${length}`);
  return p;
}

export function munmap(addr: bigint, length: number | bigint): void {
  check('munmap', raw.munmap(addr, length));
}

export function eventfd(initval = 0, flags = EFD_CLOEXEC | EFD_NONBLOCK): number {
  return check('eventfd', raw.eventfd(initval, flags));
}

const one = new BigUint64Array([1n]);
const oneBytes = new Uint8Array(one.buffer);

/** Signal an eventfd (adds 1). EAGAIN (counter saturated) counts as signalled. */
export function eventfdSignal(fd: number): void {
  const r = raw.write(fd, oneBytes, 8);
  if (r < 0) {
    const e = errno();
    if (e !== Errno.EAGAIN) throw new SysError('write', e, `eventfd ${fd}`);
  }
}

const drainBuf = new Uint8Array(8);
const drainWords = new Uint32Array(drainBuf.buffer);
/**
 * Read (and reset) an eventfd counter; 0 when nothing was pending on a non-blocking fd. Counts above 2^32 - 1
 * read as 2^32 - 1 (callers want "how many, roughly", and this path must not allocate).
 */
export function eventfdDrain(fd: number): number {
  const r = raw.read(fd, drainBuf, 8);
  if (r < 0) {
    const e = errno();
    if (e === Errno.EAGAIN) return 0;
    throw new SysError('read', e, `eventfd ${fd}`);
  }
  return drainWords[1] ? 0xffff_ffff : drainWords[0]!;
}

/** read(); returns bytes read, 0 at EOF, -1 on EAGAIN. */
export function read(fd: number, buf: Uint8Array, length = buf.byteLength): number {
  const r = raw.read(fd, buf, length);
  if (r < 0) {
    const e = errno();
    if (e === Errno.EAGAIN || e === Errno.EWOULDBLOCK) return -1;
    throw new SysError('read', e, `fd ${fd}`);
  }
  return r;
}

export function write(fd: number, buf: Uint8Array, length = buf.byteLength): number {
  return check('write', raw.write(fd, buf, length), `fd ${fd}`);
}

export function pread(fd: number, addr: bigint, length: number, offset: bigint): number {
  return check('pread', raw.preadAddr(fd, addr, length, offset), `fd ${fd}`);
}

export function pwrite(fd: number, addr: bigint, length: number, offset: bigint): number {
  return check('pwrite', raw.pwriteAddr(fd, addr, length, offset), `fd ${fd}`);
}

/** readv/preadv/pwritev take the host address of an iovec array (16 bytes per entry: base u64, len u64). */
export function readv(fd: number, iov: bigint, iovcnt: number): number {
  return check('readv', raw.readvAddr(fd, iov, iovcnt), `fd ${fd}`);
}

export function preadv(fd: number, iov: bigint, iovcnt: number, offset: bigint): number {
  return check('preadv', raw.preadvAddr(fd, iov, iovcnt, offset), `fd ${fd}`);
}

export function pwritev(fd: number, iov: bigint, iovcnt: number, offset: bigint): number {
  return check('pwritev', raw.pwritevAddr(fd, iov, iovcnt, offset), `fd ${fd}`);
}

export interface FileStat {
  dev: bigint;
  ino: bigint;
  mode: number;
  size: bigint;
  blksize: number;
}

const statBuf = Buffer.alloc(144);
export function fstat(fd: number): FileStat {
  check('fstat', raw.fstat(fd, statBuf), `fd ${fd}`);
  // struct stat on x86_64: dev@0 ino@8 nlink@16 mode@24 uid@28 gid@32 rdev@40 size@48 blksize@56
  return {
    dev: statBuf.readBigUInt64LE(0),
    ino: statBuf.readBigUInt64LE(8),
    mode: statBuf.readUInt32LE(24),
    size: statBuf.readBigInt64LE(48),
    blksize: Number(statBuf.readBigInt64LE(56)),
  };
}

/**
 * poll() over a small fd set, blocking the calling thread (workers only: the main thread uses nodePoll).
 * `pfd` is a reusable Buffer of 8 bytes per fd; returns the number of ready fds (0 on timeout, EINTR).
 */
export function pollFds(pfd: Buffer, nfds: number, timeoutMs: number): number {
  const r = raw.poll(pfd, nfds, timeoutMs);
  if (r < 0) {
    const e = errno();
    if (e === Errno.EINTR) return 0;
    throw new SysError('poll', e);
  }
  return r;
}

/**
 * Give the CPU to another runnable thread, if any (a busy-polling loop that found nothing: where both sides of a
 * ring spin on fewer cores than threads, the other side needs the CPU to make the progress we are waiting for).
 */
export function schedYield(): void {
  raw.sched_yield();
}

export function getpid(): number {
  return raw.getpid();
}

// ---- block device back-end: io_uring, block-device ioctls, shared mappings seen through views ----
import { nativeView, rawBlk } from './libc.js';

const SYS_io_uring_setup = 425;
const SYS_io_uring_enter = 426;
const SYS_io_uring_register = 427;
export const MAP_POPULATE = 0x8000;

/** io_uring_setup(entries, params): the ring fd; `params` (120 bytes) is filled in by the kernel. */
export function ioUringSetup(entries: number, params: Buffer): number {
  return check('io_uring_setup', rawBlk.ioUringSetup(SYS_io_uring_setup, entries, params), `${entries} entries`);
}

/**
 * io_uring_enter(fd, toSubmit, minComplete, flags): SQEs consumed. EINTR, EAGAIN and EBUSY (transient: try
 * again later) come back as negative errno values instead of throwing, so the hot path can retry.
 */
export function ioUringEnter(fd: number, toSubmit: number, minComplete: number, flags: number): number {
  const r = rawBlk.ioUringEnter(SYS_io_uring_enter, fd, toSubmit, minComplete, flags, 0, 0);
  if (r >= 0) return r;
  const e = errno();
  if (e === Errno.EINTR || e === Errno.EAGAIN || e === Errno.EBUSY) return -e;
  throw new SysError('io_uring_enter', e, `fd ${fd}`);
}

export function ioUringRegister(fd: number, opcode: number, arg: Buffer | null, nrArgs: number): number {
  return check('io_uring_register', rawBlk.ioUringRegister(SYS_io_uring_register, fd, opcode, arg, nrArgs), `opcode ${opcode}`);
}

/** mmap() seen from JavaScript: an ArrayBuffer over the mapping (unmap with munmap(address, length)). */
export function mmapView(length: number, prot: number, flags: number, fd: number, offset: bigint): { buffer: ArrayBuffer; address: bigint } {
  const p = rawBlk.mmapPtr(0n, length, prot, flags, fd, offset);
  const v = nativeView(p, length);
  if (v.address === MAP_FAILED) throw new SysError('mmap', errno(), `fd ${fd} len ${length}`);
  return v;
}

const BLKSSZGET = 0x1268n;
const BLKGETSIZE64 = 0x80081272n;
const BLKDISCARD = 0x1277n;
const BLKZEROOUT = 0x127fn;
const BLKPBSZGET = 0x127bn;
const ioctlBuf = Buffer.alloc(16);

/** Size in bytes of a block device (ioctl BLKGETSIZE64). */
export function blkGetSize64(fd: number): bigint {
  check('ioctl', rawBlk.ioctlPtr(fd, BLKGETSIZE64, ioctlBuf), `BLKGETSIZE64 fd ${fd}`);
  return ioctlBuf.readBigUInt64LE(0);
}

/** Logical (BLKSSZGET) and physical (BLKPBSZGET) sector sizes of a block device. */
export function blkSectorSizes(fd: number): { logical: number; physical: number } {
  ioctlBuf.fill(0);
  check('ioctl', rawBlk.ioctlPtr(fd, BLKSSZGET, ioctlBuf), `BLKSSZGET fd ${fd}`);
  const logical = ioctlBuf.readInt32LE(0);
  ioctlBuf.fill(0);
  check('ioctl', rawBlk.ioctlPtr(fd, BLKPBSZGET, ioctlBuf), `BLKPBSZGET fd ${fd}`);
  return { logical, physical: ioctlBuf.readUInt32LE(0) };
}

/** BLKDISCARD / BLKZEROOUT over [offset, offset + length): 0, or the errno (no throw: the caller maps it to a status). */
export function blkRangeIoctl(fd: number, zeroOut: boolean, offset: number, length: number): number {
  ioctlBuf.writeBigUInt64LE(BigInt(offset), 0);
  ioctlBuf.writeBigUInt64LE(BigInt(length), 8);
  return rawBlk.ioctlPtr(fd, zeroOut ? BLKZEROOUT : BLKDISCARD, ioctlBuf) < 0 ? errno() : 0;
}

export function fdatasync(fd: number): void {
  check('fdatasync', rawBlk.fdatasync(fd), `fd ${fd}`);
}
