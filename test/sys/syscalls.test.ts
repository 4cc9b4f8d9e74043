/**
 * The checked syscall layer (src/sys/syscalls.ts): failures become SysError with errno, code and call name;
 * eventfd semantics; memfd I/O straight into and out of guest memory host addresses.
 */
import fs from 'node:fs';
import os from 'node:os';
import { afterEach, describe, expect, it } from 'vitest';
import { SysError } from '../../src/sys/errors.js';
import {
  close,
  closeQuietly,
  dup,
  eventfd,
  eventfdDrain,
  eventfdSignal,
  EFD_CLOEXEC,
  EFD_NONBLOCK,
  fstat,
  ftruncate,
  MAP_SHARED,
  memfdCreate,
  mmap,
  pread,
  PROT_READ,
  pwrite,
  read,
  readv,
  write,
} from '../../src/sys/syscalls.js';
import { GuestMemory } from '../../src/memory/guest-memory.js';
import { DEVICE_AREAS } from '../../src/engine/layout.js';

const E = os.constants.errno;
const fds: number[] = [];
const track = (fd: number): number => (fds.push(fd), fd);

afterEach(() => {
  for (const fd of fds.splice(0)) closeQuietly(fd);
});

/** Run `fn`, expect it to throw, and return what it threw. */
function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return e;
  }
  throw new Error('expected a throw, nothing was thrown');
}

/** A closed (so: invalid) fd number. */
function deadFd(): number {
  const fd = eventfd();
  close(fd);
  return fd;
}

// one GuestMemory for the whole file: each costs 10 GiB of address space
const mem = new GuestMemory();
const scratch = DEVICE_AREAS; // inside the initial (visible) part of the Memory
const u8 = (off: number, len: number): Uint8Array => new Uint8Array(mem.memory.buffer, scratch + off, len);

describe('failures become SysError carrying errno, code name and the call name', () => {
  it('close(-1) throws SysError EBADF naming close', () => {
    const e = thrown(() => close(-1));
    expect(e).toBeInstanceOf(SysError);
    const s = e as SysError;
    expect(s.errno).toBe(E.EBADF);
    expect(s.code).toBe('EBADF');
    expect(s.call).toBe('close');
    expect(s.message).toMatch(/^close\b.*EBADF/);
    expect(s.name).toBe('SysError');
  });

  it('closing an fd twice: the second close is EBADF', () => {
    const fd = eventfd();
    close(fd);
    const e = thrown(() => close(fd)) as SysError;
    expect(e).toBeInstanceOf(SysError);
    expect([e.code, e.call]).toEqual(['EBADF', 'close']);
  });

  it('mmap of a bad fd throws SysError EBADF naming mmap (MAP_FAILED is detected)', () => {
    const bad = deadFd();
    const e = thrown(() => mmap(0n, 4096, PROT_READ, MAP_SHARED, bad, 0n)) as SysError;
    expect(e).toBeInstanceOf(SysError);
    expect(e.errno).toBe(E.EBADF);
    expect(e.code).toBe('EBADF');
    expect(e.call).toBe('mmap');
  });

  it('mmap with a length of 0 throws EINVAL naming mmap', () => {
    const fd = track(memfdCreate('t'));
    ftruncate(fd, 4096);
    const e = thrown(() => mmap(0n, 0, PROT_READ, MAP_SHARED, fd, 0n)) as SysError;
    expect(e).toBeInstanceOf(SysError);
    expect([e.code, e.call, e.errno]).toEqual(['EINVAL', 'mmap', E.EINVAL]);
  });

  it('ftruncate on an eventfd throws SysError EINVAL naming ftruncate', () => {
    const efd = track(eventfd());
    const e = thrown(() => ftruncate(efd, 4096)) as SysError;
    expect(e).toBeInstanceOf(SysError);
    expect(e.errno).toBe(E.EINVAL);
    expect(e.code).toBe('EINVAL');
    expect(e.call).toBe('ftruncate');
  });

  it('fstat, dup, pread, write on a closed fd name their own call', () => {
    const bad = deadFd();
    const calls = [
      ['fstat', () => fstat(bad)],
      ['dup', () => dup(bad)],
      ['pread', () => pread(bad, mem.hostAddress(scratch), 16, 0n)],
      ['write', () => write(bad, new Uint8Array(4))],
    ] as const;
    for (const [name, fn] of calls) {
      const e = thrown(fn) as SysError;
      expect(e, name).toBeInstanceOf(SysError);
      expect([e.call, e.code], name).toEqual([name, 'EBADF']);
    }
  });

  it('an errno with no symbolic name still gets a code', () => {
    const e = new SysError('frob', 4095);
    expect(e.code).toBe('E4095');
    expect(e.message).toContain('errno 4095');
  });
});

describe('eventfd signal/drain semantics', () => {
  it('the counter coalesces: three signals drain as 3, then the counter is 0', () => {
    const efd = track(eventfd());
    eventfdSignal(efd);
    eventfdSignal(efd);
    eventfdSignal(efd);
    expect(eventfdDrain(efd)).toBe(3);
    expect(eventfdDrain(efd)).toBe(0);
  });

  it('draining an empty non-blocking eventfd returns 0 and does not throw', () => {
    const efd = track(eventfd());
    expect(() => eventfdDrain(efd)).not.toThrow();
    expect(eventfdDrain(efd)).toBe(0);
  });

  it('the initial value is what the first drain returns', () => {
    const efd = track(eventfd(7));
    expect(eventfdDrain(efd)).toBe(7);
    expect(eventfdDrain(efd)).toBe(0);
  });

  it('a signal on a dup of the eventfd is seen through the original', () => {
    const efd = track(eventfd());
    const other = track(dup(efd));
    eventfdSignal(other);
    expect(eventfdDrain(efd)).toBe(1);
  });

  it('drain on a closed fd throws SysError naming read', () => {
    const e = thrown(() => eventfdDrain(deadFd())) as SysError;
    expect(e).toBeInstanceOf(SysError);
    expect([e.call, e.code]).toEqual(['read', 'EBADF']);
  });

  it('signal on a closed fd throws SysError naming write', () => {
    const e = thrown(() => eventfdSignal(deadFd())) as SysError;
    expect(e).toBeInstanceOf(SysError);
    expect([e.call, e.code]).toEqual(['write', 'EBADF']);
  });

  it('read() on an empty non-blocking eventfd returns -1 (would block) instead of throwing', () => {
    const efd = track(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    expect(read(efd, new Uint8Array(8))).toBe(-1);
  });
});

describe('memfd I/O through guest-memory host addresses', () => {
  it('pwrite from a guest-memory host address lands in the memfd at the given offset', () => {
    const fd = track(memfdCreate('pw'));
    ftruncate(fd, 8192);
    const src = u8(0, 100);
    for (let i = 0; i < 100; i++) src[i] = (i * 7 + 3) & 0xff;
    expect(pwrite(fd, mem.hostAddress(scratch), 100, 1000n)).toBe(100);
    const back = Buffer.alloc(100);
    expect(fs.readSync(fd, back, 0, 100, 1000)).toBe(100);
    expect(Buffer.from(src).equals(back)).toBe(true);
    // nothing written before the offset
    const before = Buffer.alloc(1000);
    fs.readSync(fd, before, 0, 1000, 0);
    expect(before.every((b) => b === 0)).toBe(true);
  });

  it('pread into a guest-memory host address fills exactly those bytes from the memfd', () => {
    const fd = track(memfdCreate('pr'));
    ftruncate(fd, 8192);
    const pattern = Buffer.from(Array.from({ length: 256 }, (_, i) => 255 - i));
    fs.writeSync(fd, pattern, 0, 256, 4096);
    const dst = u8(4096, 260);
    dst.fill(0xee);
    expect(pread(fd, mem.hostAddress(scratch + 4098), 256, 4096n)).toBe(256);
    expect(dst[0]).toBe(0xee);
    expect(dst[1]).toBe(0xee);
    expect(Buffer.from(dst.subarray(2, 258)).equals(pattern)).toBe(true);
    expect(dst[258]).toBe(0xee);
    expect(dst[259]).toBe(0xee);
  });

  it('pread at or past the end of the memfd returns 0 (EOF), a straddling pread is short', () => {
    const fd = track(memfdCreate('eof'));
    ftruncate(fd, 100);
    expect(pread(fd, mem.hostAddress(scratch), 16, 100n)).toBe(0);
    expect(pread(fd, mem.hostAddress(scratch), 16, 90n)).toBe(10);
  });

  it('pwrite then pread round-trips a 1 MiB block through the memfd', () => {
    const fd = track(memfdCreate('big'));
    const n = 1 << 20;
    ftruncate(fd, n);
    const a = u8(0, n);
    for (let i = 0; i < n; i += 4093) a[i] = (i >>> 3) & 0xff;
    const copy = Buffer.from(a);
    expect(pwrite(fd, mem.hostAddress(scratch), n, 0n)).toBe(n);
    a.fill(0);
    expect(pread(fd, mem.hostAddress(scratch), n, 0n)).toBe(n);
    expect(Buffer.from(a).equals(copy)).toBe(true);
  });

  it('readv scatters the file into several iovecs in order, leaving the gaps alone', () => {
    const fd = track(memfdCreate('rv'));
    const data = Buffer.from(Array.from({ length: 60 }, (_, i) => i + 1));
    fs.writeSync(fd, data, 0, 60, 0); // positional: the file offset readv uses stays 0
    const area = u8(0, 4096);
    area.fill(0xaa);
    const parts = [
      { off: 100, len: 10 },
      { off: 300, len: 25 },
      { off: 1000, len: 7 },
    ];
    // the iovec array itself lives in guest memory too
    const iovOff = 2048;
    const dv = new DataView(mem.memory.buffer, scratch + iovOff, parts.length * 16);
    parts.forEach((p, i) => {
      dv.setBigUint64(i * 16, mem.hostAddress(scratch + p.off), true);
      dv.setBigUint64(i * 16 + 8, BigInt(p.len), true);
    });
    expect(readv(fd, mem.hostAddress(scratch + iovOff), parts.length)).toBe(42);
    let at = 0;
    for (const p of parts) {
      expect(Buffer.from(area.subarray(p.off, p.off + p.len)).equals(data.subarray(at, at + p.len))).toBe(true);
      at += p.len;
      expect(area[p.off - 1]).toBe(0xaa);
      expect(area[p.off + p.len]).toBe(0xaa);
    }
    // the next readv continues from the file offset readv left behind
    dv.setBigUint64(0, mem.hostAddress(scratch), true);
    dv.setBigUint64(8, 100n, true);
    expect(readv(fd, mem.hostAddress(scratch + iovOff), 1)).toBe(18);
    expect(Buffer.from(area.subarray(0, 18)).equals(data.subarray(42, 60))).toBe(true);
    expect(readv(fd, mem.hostAddress(scratch + iovOff), 1)).toBe(0);
  });

  it('readv on a closed fd throws SysError naming readv', () => {
    const e = thrown(() => readv(deadFd(), mem.hostAddress(scratch), 1)) as SysError;
    expect(e).toBeInstanceOf(SysError);
    expect([e.call, e.code]).toEqual(['readv', 'EBADF']);
  });
});
