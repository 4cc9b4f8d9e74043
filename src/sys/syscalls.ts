/** Checked system calls: each returns its result or throws a SysError naming the call and errno. */
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

export function getpid(): number {
  return raw.getpid();
}
