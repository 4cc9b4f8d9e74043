/**
 * GuestMemory (src/memory/guest-memory.ts): front-end region fds mapped with MAP_FIXED into one shared
 * WebAssembly.Memory. Coherence, placement, translation bounds, removal without holes, refusals, and
 * add/remove cycling without leaks.
 */
import fs from 'node:fs';
import koffi from 'koffi';
import fc from 'fast-check';
import { afterEach, describe, expect, it } from 'vitest';
import { GuestMemory, GuestMemoryError, type MappedRegion, type RegionSpec } from '../../src/memory/guest-memory.js';
import { GUEST_ALIGN, GUEST_AREA, MAX_REGIONS, REGION_HDR_COUNT, REGION_TABLE } from '../../src/engine/layout.js';
import { instantiateEngine, loadEngineModule } from '../../src/engine/engine.js';
import { raw } from '../../src/sys/libc.js';
import {
  closeQuietly,
  dup,
  ftruncate,
  MAP_SHARED,
  memfdCreate,
  mmap,
  munmap,
  pread,
  PROT_READ,
  PROT_WRITE,
  pwrite,
} from '../../src/sys/syscalls.js';

const MiB = 1 << 20;
const TWO_MIB = 2n * 1024n * 1024n;
const U64 = 1n << 64n;
const F_GETFD = 1;

const fds: number[] = [];
const unmaps: [bigint, number][] = [];
afterEach(() => {
  for (const fd of fds.splice(0)) closeQuietly(fd);
  for (const [a, l] of unmaps.splice(0)) munmap(a, l);
});

const openFds = (): number => fs.readdirSync('/proc/self/fd').length;
const isOpen = (fd: number): boolean => raw.fcntl(fd, F_GETFD, 0) >= 0;

function memfd(bytes: number | bigint, name = 'gm-test'): number {
  const fd = memfdCreate(name);
  fds.push(fd);
  ftruncate(fd, bytes);
  return fd;
}

function spec(gpa: bigint, size: bigint, uaddr = 0x7f00_0000_0000n + gpa, mmapOffset = 0n): RegionSpec {
  return { gpa, size, uaddr, mmapOffset };
}

function view(mem: GuestMemory, wasmAddr: number, len: number): Uint8Array {
  return new Uint8Array(mem.memory.buffer, wasmAddr, len);
}

/** Write bytes into the fd at `off` through pwrite from a small scratch Buffer. */
function fdWrite(fd: number, off: number, data: Uint8Array): void {
  expect(fs.writeSync(fd, data, 0, data.length, off)).toBe(data.length);
}

function fdRead(fd: number, off: number, len: number): Buffer {
  const b = Buffer.alloc(len);
  expect(fs.readSync(fd, b, 0, len, off)).toBe(len);
  return b;
}

function thrown(fn: () => unknown): Error {
  try {
    fn();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected a throw');
}

const module = loadEngineModule();

describe('coherence of a mapped memfd region', () => {
  it('JS writes through the Memory are seen by pread on the fd, pwrite on the fd by JS', () => {
    const mem = new GuestMemory();
    const fd = memfd(4 * MiB);
    const r = mem.add(spec(0n, BigInt(4 * MiB)), dup(fd));
    const v = view(mem, r.wasmAddr, 4 * MiB);
    // Memory -> fd
    for (let i = 0; i < 4 * MiB; i += 4096) v[i + 17] = (i >>> 12) & 0xff;
    for (const page of [0, 1, 513, 1023]) expect(fdRead(fd, page * 4096 + 17, 1)[0]).toBe(page & 0xff);
    // fd -> Memory
    const pattern = Buffer.from('written into the memfd with pwrite');
    fdWrite(fd, 3 * MiB + 5, pattern);
    expect(Buffer.from(v.subarray(3 * MiB + 5, 3 * MiB + 5 + pattern.length)).equals(pattern)).toBe(true);
    // the project's own pread/pwrite with the region's host address
    const scratch = mem.hostAddress(r.wasmAddr + 2 * MiB);
    expect(pwrite(fd, scratch, 64, 100n)).toBe(64);
    expect(Buffer.from(v.subarray(100, 164)).equals(Buffer.from(v.subarray(2 * MiB, 2 * MiB + 64)))).toBe(true);
    mem.clear();
  });

  it('a second mapping of the same fd (another region in the Memory) sees the same bytes', () => {
    const mem = new GuestMemory();
    const fd = memfd(2 * MiB);
    const a = mem.add(spec(0n, BigInt(2 * MiB)), dup(fd));
    const b = mem.add(spec(0x1_0000_0000n, BigInt(2 * MiB)), dup(fd));
    expect(b.wasmAddr).not.toBe(a.wasmAddr);
    const va = view(mem, a.wasmAddr, 2 * MiB);
    const vb = view(mem, b.wasmAddr, 2 * MiB);
    va[12345] = 0x5a;
    expect(vb[12345]).toBe(0x5a);
    vb[2 * MiB - 1] = 0xc3;
    expect(va[2 * MiB - 1]).toBe(0xc3);
    mem.clear();
  });

  it('a mapping outside the Memory (plain mmap of the fd) is coherent with the Memory both ways', () => {
    const mem = new GuestMemory();
    const fd = memfd(MiB);
    const r = mem.add(spec(0n, BigInt(MiB)), dup(fd));
    const p = mmap(0n, MiB, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0n);
    unmaps.push([p, MiB]);
    const outside = new Uint8Array(koffi.view(p, MiB));
    const inside = view(mem, r.wasmAddr, MiB);
    inside[777] = 0x11;
    expect(outside[777]).toBe(0x11);
    outside[MiB - 3] = 0x22;
    expect(inside[MiB - 3]).toBe(0x22);
    mem.clear();
  });

  it('a non-page-aligned mmapOffset puts the region at the right bytes of the fd', () => {
    const mem = new GuestMemory();
    const fd = memfd(4 * MiB);
    const off = 3 * 4096 + 100;
    fdWrite(fd, off, Buffer.from('first guest byte'));
    const r = mem.add(spec(0x8000n, 64n * 1024n, 0x5000n, BigInt(off)), dup(fd));
    expect(Buffer.from(view(mem, r.wasmAddr, 16)).toString()).toBe('first guest byte');
    expect(mem.translateGpa(0x8000n, 1n)).toBe(r.wasmAddr);
    // pread to the translated host address writes exactly at that guest address
    fdWrite(fd, 0, Buffer.from('ABCDEFGH'));
    const w = mem.translateGpa(0x8000n + 10n, 8n)!;
    expect(pread(fd, mem.hostAddress(w), 8, 0n)).toBe(8);
    expect(fdRead(fd, off + 10, 8).toString()).toBe('ABCDEFGH');
    mem.clear();
  });
});

describe('placement', () => {
  it('every region host address is 2 MiB-aligned, above GUEST_AREA, inside 4 GiB, not overlapping', () => {
    const mem = new GuestMemory();
    const fd = memfd(8 * MiB);
    const sizes = [4096n, 3n * BigInt(MiB), 64n * 1024n, 8n * BigInt(MiB), 5n * BigInt(MiB) + 4096n];
    const regions = sizes.map((s, i) => mem.add(spec(BigInt(i) << 32n, s), dup(fd)));
    for (const r of regions) {
      expect((mem.base + BigInt(r.mapAddr)) % TWO_MIB).toBe(0n);
      expect((mem.base + BigInt(r.mapAddr)) % BigInt(GUEST_ALIGN)).toBe(0n);
      expect(r.mapAddr).toBeGreaterThanOrEqual(GUEST_AREA);
      expect(r.mapAddr + r.mapLen).toBeLessThanOrEqual(2 ** 32);
      expect(r.mapLen % 4096).toBe(0);
      expect(BigInt(r.mapLen)).toBeGreaterThanOrEqual(r.size);
    }
    const sorted = [...regions].sort((a, b) => a.mapAddr - b.mapAddr);
    for (let i = 1; i < sorted.length; i++) expect(sorted[i]!.mapAddr).toBeGreaterThanOrEqual(sorted[i - 1]!.mapAddr + sorted[i - 1]!.mapLen);
    // the Memory was grown so that JS sees every region
    for (const r of regions) expect(mem.memory.buffer.byteLength).toBeGreaterThanOrEqual(r.mapAddr + r.mapLen);
    mem.clear();
  });

  it('the region table in the Memory matches the regions (the engine translates the same way)', () => {
    const mem = new GuestMemory();
    const e = instantiateEngine(module, mem.memory);
    const fd = memfd(4 * MiB);
    const a = mem.add(spec(0n, BigInt(2 * MiB)), dup(fd));
    const b = mem.add(spec(0x4000_0000n, BigInt(2 * MiB), 0x9000_0000n, BigInt(2 * MiB)), dup(fd));
    expect(new DataView(mem.memory.buffer).getUint32(REGION_TABLE + REGION_HDR_COUNT, true)).toBe(2);
    expect(e.translateGpa(REGION_TABLE, 0x10n, 4n)).toBe(a.wasmAddr + 0x10);
    expect(e.translateGpa(REGION_TABLE, 0x4000_0010n, 4n)).toBe(b.wasmAddr + 0x10);
    expect(e.translateUva(REGION_TABLE, 0x9000_0020n, 4n)).toBe(b.wasmAddr + 0x20);
    mem.clear();
  });
});

describe('translateGpa / translateUva bounds', () => {
  const size = BigInt(MiB);
  function withRegion<T>(gpa: bigint, uaddr: bigint, fn: (mem: GuestMemory, r: MappedRegion) => T): T {
    const mem = new GuestMemory();
    const fd = memfd(MiB);
    const r = mem.add(spec(gpa, size, uaddr), dup(fd));
    try {
      return fn(mem, r);
    } finally {
      mem.clear();
    }
  }

  it('inside: the wasm address of the byte; the whole region is one range', () => {
    withRegion(0x10_0000n, 0x7000_0000n, (mem, r) => {
      expect(mem.translateGpa(0x10_0000n, 1n)).toBe(r.wasmAddr);
      expect(mem.translateGpa(0x10_0000n + 4096n, 16n)).toBe(r.wasmAddr + 4096);
      expect(mem.translateGpa(0x10_0000n, size)).toBe(r.wasmAddr);
      expect(mem.translateGpa(0x10_0000n + size - 1n, 1n)).toBe(r.wasmAddr + MiB - 1);
      expect(mem.translateUva(0x7000_0000n + 8n, 8n)).toBe(r.wasmAddr + 8);
    });
  });

  it('outside or straddling an end: undefined', () => {
    withRegion(0x10_0000n, 0x7000_0000n, (mem) => {
      expect(mem.translateGpa(0x10_0000n - 1n, 1n)).toBeUndefined();
      expect(mem.translateGpa(0x10_0000n - 1n, 2n)).toBeUndefined(); // straddles the start
      expect(mem.translateGpa(0x10_0000n + size - 1n, 2n)).toBeUndefined(); // straddles the end
      expect(mem.translateGpa(0x10_0000n + size, 1n)).toBeUndefined();
      expect(mem.translateGpa(0x10_0000n, size + 1n)).toBeUndefined();
      expect(mem.translateUva(0x7000_0000n + size - 4n, 8n)).toBeUndefined();
      // gpa and uva are separate keys
      expect(mem.translateUva(0x10_0000n, 1n)).toBeUndefined();
      expect(mem.translateGpa(0x7000_0000n, 1n)).toBeUndefined();
    });
  });

  it('ranges that would wrap 2^64 are refused (region near the top of the u64 space)', () => {
    // the codec refuses regions whose end passes 2^64 - 1, so the highest region ends a bit below it
    const top = U64 - size; // end of the region
    withRegion(top - size, top - 2n * size, (mem, r) => {
      expect(mem.translateGpa(top - 16n, 16n)).toBe(r.wasmAddr + MiB - 16);
      expect(mem.translateGpa(top - 16n, 17n)).toBeUndefined();
      expect(mem.translateGpa(top - size, U64 - 1n)).toBeUndefined();
      expect(mem.translateGpa(top - 16n, U64 - 1n)).toBeUndefined(); // (a + len) mod 2^64 < a
      expect(mem.translateGpa(top - 16n, U64 - (top - 16n) + 8n)).toBeUndefined(); // (a + len) mod 2^64 == 8
      expect(mem.translateUva(top - 2n * size + 8n, U64 - 4n)).toBeUndefined();
    });
    withRegion(0n, 0x1000n, (mem) => {
      // a huge length from inside the region wraps to a small end in u64 arithmetic
      expect(mem.translateGpa(0x100n, U64 - 0x80n)).toBeUndefined();
      expect(mem.translateUva(0x1100n, U64 - 0x80n)).toBeUndefined();
    });
  });

  it('property: GuestMemory.translateGpa/Uva agree with the engine on the table it wrote (len >= 1)', () => {
    const mem = new GuestMemory();
    const e = instantiateEngine(module, mem.memory);
    const fd = memfd(MiB);
    const bases = [0n, 0x10_0000n, 0xffff_ffff_ffe0_0000n]; // the last ends 1 MiB below 2^64 (codec rule)
    for (const g of bases) mem.add(spec(g, size, g ^ 0x5555_0000_0000n), dup(fd));
    const near = fc.oneof(
      fc.constantFrom(...bases).chain((b) => fc.bigInt(-0x1000n, size + 0x1000n).map((d) => (b + d + U64) % U64)),
      fc.bigInt(0n, U64 - 1n),
    );
    const len = fc.oneof(fc.bigInt(1n, size + 16n), fc.bigInt(1n, U64 - 1n));
    fc.assert(
      fc.property(near, len, fc.boolean(), (a, l, byUva) => {
        const key = byUva ? a ^ 0x5555_0000_0000n : a;
        const js = byUva ? mem.translateUva(key, l) : mem.translateGpa(key, l);
        const wasm = byUva ? e.translateUva(REGION_TABLE, key, l) : e.translateGpa(REGION_TABLE, key, l);
        expect(js ?? 0).toBe(wasm);
      }),
      { numRuns: 3000 },
    );
    mem.clear();
  });
});

describe('remove() and clear()', () => {
  it('remove() leaves the range readable as zeros from JS, and the fd content untouched', () => {
    const mem = new GuestMemory();
    const fd = memfd(2 * MiB);
    const r = mem.add(spec(0n, BigInt(2 * MiB)), dup(fd));
    const v = view(mem, r.wasmAddr, 2 * MiB);
    v.fill(0x7e);
    expect(mem.remove({ gpa: r.gpa, size: r.size, uaddr: r.uaddr })).toBe(true);
    // no hole: reading every page from JS does not crash, and they are zeros
    const after = view(mem, r.mapAddr, r.mapLen);
    let nonZero = 0;
    for (let i = 0; i < after.length; i += 512) nonZero += after[i]!;
    expect(nonZero).toBe(0);
    expect(after.every((b) => b === 0)).toBe(true);
    // writable too, and writes no longer reach the fd
    after[100] = 1;
    expect(fdRead(fd, 0, 4096).every((b) => b === 0x7e)).toBe(true);
    expect(fdRead(fd, 2 * MiB - 4096, 4096).every((b) => b === 0x7e)).toBe(true);
    // the table forgot it
    expect(mem.translateGpa(0n, 1n)).toBeUndefined();
    expect(instantiateEngine(module, mem.memory).translateGpa(REGION_TABLE, 0n, 1n)).toBe(0);
    expect(mem.mapped).toHaveLength(0);
  });

  it('remove() closes the region fd it owned; removing it again (or an unknown region) returns false', () => {
    const mem = new GuestMemory();
    const fd = memfd(MiB);
    const owned = dup(fd);
    const r = mem.add(spec(0n, BigInt(MiB)), owned);
    expect(isOpen(owned)).toBe(true);
    expect(mem.remove(r)).toBe(true);
    expect(isOpen(owned)).toBe(false);
    expect(mem.remove(r)).toBe(false);
    expect(mem.remove({ gpa: 0n, size: 1n, uaddr: 0n })).toBe(false);
  });

  it('remove() matches on gpa, size and uaddr: a different uaddr removes nothing', () => {
    const mem = new GuestMemory();
    const fd = memfd(MiB);
    const r = mem.add(spec(0n, BigInt(MiB), 0x1000n), dup(fd));
    expect(mem.remove({ gpa: r.gpa, size: r.size, uaddr: 0x2000n })).toBe(false);
    expect(mem.translateGpa(0n, 1n)).toBe(r.wasmAddr);
    mem.clear();
  });

  it('clear() twice is fine and leaves the Memory empty and usable', () => {
    const mem = new GuestMemory();
    const fd = memfd(MiB);
    const before = openFds();
    const r = mem.add(spec(0n, BigInt(MiB)), dup(fd));
    mem.add(spec(0x10_0000_0000n, BigInt(MiB)), dup(fd));
    mem.clear();
    expect(() => mem.clear()).not.toThrow();
    expect(mem.mapped).toHaveLength(0);
    expect(openFds()).toBe(before);
    expect(view(mem, r.mapAddr, MiB).every((b) => b === 0)).toBe(true);
    const again = mem.add(spec(0n, BigInt(MiB)), dup(fd));
    fdWrite(fd, 0, Buffer.from([9]));
    expect(view(mem, again.wasmAddr, 1)[0]).toBe(9);
    mem.clear();
  });
});

describe('refusals (and the refused fd is closed)', () => {
  it('overlapping guest-physical ranges are refused', () => {
    const mem = new GuestMemory();
    const fd = memfd(4 * MiB);
    mem.add(spec(0x10_0000n, BigInt(2 * MiB)), dup(fd));
    for (const [gpa, size] of [
      [0x10_0000n, 4096n], // same start
      [0x0n, 0x10_0001n], // ends one byte inside
      [0x10_0000n + BigInt(2 * MiB) - 1n, 4096n], // starts on the last byte
      [0x0n, BigInt(4 * MiB)], // covers it
    ] as const) {
      const owned = dup(fd);
      const e = thrown(() => mem.add(spec(gpa, size), owned));
      expect(e, `gpa ${gpa}`).toBeInstanceOf(GuestMemoryError);
      expect(e.message).toMatch(/overlaps/);
      expect(isOpen(owned)).toBe(false);
    }
    // touching is not overlapping
    mem.add(spec(0x10_0000n + BigInt(2 * MiB), 4096n), dup(fd));
    mem.add(spec(0x10_0000n - 4096n, 4096n), dup(fd));
    expect(mem.mapped).toHaveLength(3);
    mem.clear();
  });

  it("a region bigger than what fits in the 4 GiB Memory is refused with 'does not fit'", () => {
    const mem = new GuestMemory();
    const bytes = 4n << 30n;
    const fd = memfd(bytes); // sparse: costs nothing
    const owned = dup(fd);
    const before = mem.memory.buffer.byteLength;
    const e = thrown(() => mem.add(spec(0n, bytes - BigInt(GUEST_AREA) + TWO_MIB), owned));
    expect(e).toBeInstanceOf(GuestMemoryError);
    expect(e.message).toMatch(/does not fit/);
    expect(isOpen(owned)).toBe(false);
    expect(mem.mapped).toHaveLength(0);
    expect(mem.memory.buffer.byteLength).toBe(before);
  });

  it("a region that fits alone but not next to the others is refused with 'does not fit', and fits after a remove", () => {
    const mem = new GuestMemory();
    const fd = memfd(3n << 30n);
    const big = mem.add(spec(0n, 3n << 30n), dup(fd));
    const e = thrown(() => mem.add(spec(0x1_0000_0000n, 1n << 30n), dup(fd)));
    expect(e.message).toMatch(/does not fit/);
    expect(mem.remove(big)).toBe(true);
    const r = mem.add(spec(0x1_0000_0000n, 1n << 30n), dup(fd));
    expect(r.mapAddr + r.mapLen).toBeLessThanOrEqual(2 ** 32);
    mem.clear();
  });

  it("a region past the fd's end is refused ('beyond the end') before anything is mapped", () => {
    const mem = new GuestMemory();
    const fd = memfd(MiB);
    for (const [size, off] of [
      [BigInt(MiB) + 1n, 0n],
      [BigInt(MiB), 4096n],
      [1n, BigInt(MiB)],
    ] as const) {
      const owned = dup(fd);
      const e = thrown(() => mem.add(spec(0n, size, 0n, off), owned));
      expect(e).toBeInstanceOf(GuestMemoryError);
      expect(e.message).toMatch(/beyond the end/);
      expect(isOpen(owned)).toBe(false);
    }
    expect(mem.mapped).toHaveLength(0);
    // exactly up to the end is fine
    mem.add(spec(0n, BigInt(MiB) - 4096n, 0n, 4096n), dup(fd));
    mem.clear();
  });

  it(`more than MAX_REGIONS (${MAX_REGIONS}) regions are refused`, () => {
    const mem = new GuestMemory();
    const fd = memfd(64 * 1024);
    for (let i = 0; i < MAX_REGIONS; i++) mem.add(spec(BigInt(i) << 20n, 64n * 1024n), dup(fd));
    const owned = dup(fd);
    expect(() => mem.add(spec(0x1_0000_0000n, 4096n), owned)).toThrow(/too many memory regions/);
    expect(isOpen(owned)).toBe(false);
    mem.clear();
  });

  it('a bad fd is refused with an error (fstat EBADF), nothing mapped', () => {
    const mem = new GuestMemory();
    const fd = memfdCreate('x');
    closeQuietly(fd);
    expect(() => mem.add(spec(0n, 4096n), fd)).toThrow(/EBADF/);
    expect(mem.mapped).toHaveLength(0);
  });
});

describe('many add/remove cycles', () => {
  it('200 add/remove cycles of a 64 MiB region: the hole is reused, no fd leaks, the Memory keeps working', () => {
    const mem = new GuestMemory();
    const size = 64 * MiB;
    const fd = memfd(size);
    mem.add(spec(0x10_0000_0000n, BigInt(MiB)), dup(fd)); // a neighbour that stays
    const before = openFds();
    let first: MappedRegion | undefined;
    let maxLen = 0;
    for (let i = 0; i < 200; i++) {
      const gpa = BigInt(i % 7) << 30n;
      const r = mem.add(spec(gpa, BigInt(size)), dup(fd));
      first ??= r;
      expect(r.mapAddr).toBe(first.mapAddr);
      const v = view(mem, r.wasmAddr, size);
      v[i * 4096] = i & 0xff;
      expect(fdRead(fd, i * 4096, 1)[0]).toBe(i & 0xff);
      expect(mem.translateGpa(gpa + BigInt(i), 1n)).toBe(r.wasmAddr + i);
      expect(mem.remove(r)).toBe(true);
      maxLen = Math.max(maxLen, mem.memory.buffer.byteLength);
    }
    expect(openFds()).toBe(before);
    expect(mem.mapped).toHaveLength(1);
    // still coherent afterwards
    const last = mem.add(spec(0n, BigInt(size)), dup(fd));
    const v = view(mem, last.wasmAddr, size);
    for (let i = 0; i < 200; i++) expect(v[i * 4096]).toBe(i & 0xff);
    fdWrite(fd, size - 1, Buffer.from([0xab]));
    expect(v[size - 1]).toBe(0xab);
    mem.clear();
    expect(maxLen).toBeLessThanOrEqual(first!.mapAddr + first!.mapLen + 2 * size);
  });
});
