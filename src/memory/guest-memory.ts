/**
 * Guest memory of a back-end endpoint's front-ends, one connection at a time: one shared WebAssembly.Memory whose
 * guest-RAM part is made of the front-end's region fds, each mmap'ed with MAP_FIXED at a 2 MiB-aligned host address
 * inside it. The region table the engine translates through lives in the same Memory (layout.ts). A region that
 * goes away is covered by an anonymous MAP_FIXED mapping, never unmapped: a hole would kill the process on the
 * next JS access.
 */
import {
  GUEST_ALIGN,
  GUEST_AREA,
  INFLIGHT_AREA,
  INFLIGHT_AREA_MAX,
  LOG_AREA,
  LOG_AREA_MAX,
  MAX_REGIONS,
  MEMORY_MAX_PAGES,
  QUEUE_AREAS,
  REGION_ENTRY_SIZE,
  REGION_GPA,
  REGION_HDR_COUNT,
  REGION_HDR_GENERATION,
  REGION_HDR_LOG_BYTES,
  REGION_HDR_SIZE,
  REGION_SIZE,
  REGION_TABLE,
  REGION_UVA,
  REGION_WASM,
  WASM_PAGE,
} from '../engine/layout.js';
import { memoryBaseAddress } from '../sys/libc.js';
import { guardActive, guardRange, unguardRange } from '../sys/sigbus-guard.js';
import {
  closeQuietly,
  fstat,
  MAP_ANONYMOUS,
  MAP_FIXED,
  MAP_NORESERVE,
  MAP_PRIVATE,
  MAP_SHARED,
  mmap,
  PROT_READ,
  PROT_WRITE,
  sealAgainstShrink,
} from '../sys/syscalls.js';

const MEMORY_LIMIT = BigInt(MEMORY_MAX_PAGES) * BigInt(WASM_PAGE);
const SMALL_PAGE = 4096n;

export interface RegionSpec {
  gpa: bigint;
  size: bigint;
  uaddr: bigint;
  mmapOffset: bigint;
}

export interface MappedRegion extends RegionSpec {
  fd: number;
  /** wasm address of the region's first guest byte */
  wasmAddr: number;
  /** the mapped range (page-aligned, may start before wasmAddr and end after it) */
  mapAddr: number;
  mapLen: number;
}

export class GuestMemoryError extends Error {
  override name = 'GuestMemoryError';
}

function alignUp(v: bigint, a: bigint): bigint {
  return (v + a - 1n) & ~(a - 1n);
}

export class GuestMemory {
  readonly memory: WebAssembly.Memory;
  readonly base: bigint;
  private regions: MappedRegion[] = [];
  private generation = 0;
  private inflightLen = 0;
  private logLen = 0;
  private guardSlot: number;

  /** told when something is accepted that a hostile front-end could still turn against us */
  onWarning: ((line: string) => void) | undefined;

  constructor(initialBytes = GUEST_AREA) {
    this.memory = new WebAssembly.Memory({
      initial: Math.ceil(initialBytes / WASM_PAGE),
      maximum: MEMORY_MAX_PAGES,
      shared: true,
    });
    this.base = memoryBaseAddress(this.memory);
    // dirty log, inflight region and guest RAM: a front-end shrinking a file mapped there must not kill the process
    this.guardSlot = guardRange(this.base + BigInt(LOG_AREA), this.base + MEMORY_LIMIT);
  }

  /**
   * Ready for the next front-end (the Memory outlives connections: server.ts): regions and the inflight region
   * let go, queue state and device scratch back to zeros. Covering them returns their pages to the kernel, where
   * writing zeros would make every page resident. Only while no worker runs a ring on it.
   */
  reset(): void {
    this.clear();
    this.unmapInflight();
    this.unmapLog();
    this.cover(QUEUE_AREAS, INFLIGHT_AREA - QUEUE_AREAS);
    this.onWarning = undefined;
  }

  /** Stop guarding this Memory's range (its endpoint is done with it; the reservation goes with the Memory). */
  release(): void {
    this.clear();
    this.unmapInflight();
    this.unmapLog();
    unguardRange(this.guardSlot);
    this.guardSlot = -1;
  }

  get mapped(): readonly MappedRegion[] {
    return this.regions;
  }

  /** The host address of a wasm address: for syscalls that read or write guest buffers directly. */
  hostAddress(wasmAddr: number): bigint {
    return this.base + BigInt(wasmAddr);
  }

  /** Grow the Memory (never shrinks) so that JS views reach `endBytes`. */
  ensureVisible(endBytes: number): void {
    const pages = Math.ceil(endBytes / WASM_PAGE);
    const have = this.memory.buffer.byteLength / WASM_PAGE;
    if (pages > have) this.memory.grow(pages - have);
  }

  /**
   * Map `spec` from `fd` (the fd is owned from here on). Placement: the lowest free wasm range above GUEST_AREA
   * whose host address is 2 MiB-aligned (or the fd's page size, for hugetlbfs) and that ends within 4 GiB.
   */
  add(spec: RegionSpec, fd: number): MappedRegion {
    try {
      if (this.regions.length >= MAX_REGIONS) throw new GuestMemoryError(`too many memory regions (max ${MAX_REGIONS})`);
      for (const r of this.regions) {
        if (spec.gpa < r.gpa + r.size && r.gpa < spec.gpa + spec.size)
          throw new GuestMemoryError(`region gpa 0x${spec.gpa.toString(16)} overlaps region gpa 0x${r.gpa.toString(16)}`);
      }
      const st = fstat(fd);
      // Mapping past the end of the file would turn the first access into a SIGBUS that kills the process; so
      // would a front-end shrinking the file later, which a seal prevents where the file is a memfd.
      if (!sealAgainstShrink(fd) && !guardActive())
        this.onWarning?.(`region gpa 0x${spec.gpa.toString(16)}: its fd cannot be sealed against shrinking and the SIGBUS guard is not built; a front-end that shrinks it would crash the back-end`);
      if (spec.mmapOffset + spec.size > st.size)
        throw new GuestMemoryError(
          `region gpa 0x${spec.gpa.toString(16)}: offset ${spec.mmapOffset} + size ${spec.size} lies beyond the end ` +
            `of its fd (${st.size} bytes)`,
        );
      const pageSize = st.blksize >= GUEST_ALIGN ? BigInt(st.blksize) : SMALL_PAGE;
      const fileOff = spec.mmapOffset & ~(pageSize - 1n);
      const delta = spec.mmapOffset - fileOff;
      const mapLen = alignUp(spec.size + delta, pageSize);
      const align = pageSize > BigInt(GUEST_ALIGN) ? pageSize : BigInt(GUEST_ALIGN);
      const mapAddr = this.place(mapLen, align);
      if (mapAddr === undefined) {
        const total = this.regions.reduce((s, r) => s + BigInt(r.mapLen), 0n) + mapLen;
        throw new GuestMemoryError(
          `guest RAM does not fit: ${total} bytes of regions, but only ${MEMORY_LIMIT - BigInt(GUEST_AREA)} bytes ` +
            `of the 4 GiB wasm32 memory are available for guest RAM`,
        );
      }
      this.ensureVisible(Number(BigInt(mapAddr) + mapLen));
      mmap(this.base + BigInt(mapAddr), mapLen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, fileOff);
      const region: MappedRegion = { ...spec, fd, wasmAddr: mapAddr + Number(delta), mapAddr, mapLen: Number(mapLen) };
      this.regions.push(region);
      this.writeTable();
      return region;
    } catch (e) {
      closeQuietly(fd);
      throw e;
    }
  }

  /** Remove the region matching gpa, size and uaddr (REM_MEM_REG); returns false if none matches. */
  remove(spec: Pick<RegionSpec, 'gpa' | 'size' | 'uaddr'>): boolean {
    const i = this.regions.findIndex((r) => r.gpa === spec.gpa && r.size === spec.size && r.uaddr === spec.uaddr);
    if (i < 0) return false;
    const [r] = this.regions.splice(i, 1);
    this.unmap(r!);
    this.writeTable();
    return true;
  }

  /**
   * Map the inflight-tracking memfd (GET/SET_INFLIGHT_FD) shared at INFLIGHT_AREA, replacing any earlier one;
   * the fd is closed here (the mapping keeps the memory). Returns its wasm address.
   */
  mapInflight(fd: number, offset: bigint, size: bigint): number {
    try {
      if (size === 0n || size > BigInt(INFLIGHT_AREA_MAX))
        throw new GuestMemoryError(`inflight region of ${size} bytes is not in 1..${INFLIGHT_AREA_MAX}`);
      if (offset & (SMALL_PAGE - 1n)) throw new GuestMemoryError(`inflight mmap_offset ${offset} is not page-aligned`);
      if (offset + size > fstat(fd).size) throw new GuestMemoryError(`inflight region [${offset}, +${size}) lies beyond the end of its fd`);
      if (!sealAgainstShrink(fd) && !guardActive()) this.onWarning?.('the inflight fd cannot be sealed against shrinking and the SIGBUS guard is not built');
      this.unmapInflight();
      const len = alignUp(size, SMALL_PAGE);
      this.ensureVisible(INFLIGHT_AREA + Number(len));
      mmap(this.base + BigInt(INFLIGHT_AREA), len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, offset);
      this.inflightLen = Number(len);
      return INFLIGHT_AREA;
    } finally {
      closeQuietly(fd);
    }
  }

  /**
   * SET_LOG_BASE: map the dirty log (one bit per 4 KiB guest page) at LOG_AREA, replacing an older one, and tell
   * the engine its size (REGION_HDR_LOG_BYTES), which bounds every bit it sets. The fd is owned from here on.
   * Only while no worker runs a ring (the size and the mapping change together).
   */
  mapLog(fd: number, offset: bigint, size: bigint): void {
    try {
      if (size === 0n || size > BigInt(LOG_AREA_MAX)) throw new GuestMemoryError(`dirty log of ${size} bytes is not in 1..${LOG_AREA_MAX}`);
      if (offset & (SMALL_PAGE - 1n)) throw new GuestMemoryError(`dirty log mmap_offset ${offset} is not page-aligned`);
      if (offset + size > fstat(fd).size) throw new GuestMemoryError(`dirty log [${offset}, +${size}) lies beyond the end of its fd`);
      if (!sealAgainstShrink(fd) && !guardActive()) this.onWarning?.('the dirty log fd cannot be sealed against shrinking and the SIGBUS guard is not built');
      this.unmapLog();
      const len = alignUp(size, SMALL_PAGE);
      this.ensureVisible(LOG_AREA + Number(len));
      mmap(this.base + BigInt(LOG_AREA), len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, fd, offset);
      this.logLen = Number(len);
      new DataView(this.memory.buffer).setUint32(REGION_TABLE + REGION_HDR_LOG_BYTES, Number(size), true);
    } finally {
      closeQuietly(fd);
    }
  }

  /** Bytes of dirty log mapped (0 = none). */
  get logBytes(): number {
    return new DataView(this.memory.buffer).getUint32(REGION_TABLE + REGION_HDR_LOG_BYTES, true);
  }

  unmapLog(): void {
    new DataView(this.memory.buffer).setUint32(REGION_TABLE + REGION_HDR_LOG_BYTES, 0, true);
    if (!this.logLen) return;
    this.cover(LOG_AREA, this.logLen);
    this.logLen = 0;
  }

  get inflightMapped(): boolean {
    return this.inflightLen > 0;
  }

  unmapInflight(): void {
    if (!this.inflightLen) return;
    this.cover(INFLIGHT_AREA, this.inflightLen);
    this.inflightLen = 0;
  }

  /** Drop every region (SET_MEM_TABLE replaces the table; disconnect releases it). */
  clear(): void {
    for (const r of this.regions) this.unmap(r);
    this.regions = [];
    this.writeTable();
  }

  /** Guest bytes [gpa, gpa+len) as a wasm address when they lie in one region, else undefined. */
  translateGpa(gpa: bigint, len: bigint): number | undefined {
    return this.translate(gpa, len, 'gpa');
  }

  translateUva(uva: bigint, len: bigint): number | undefined {
    return this.translate(uva, len, 'uaddr');
  }

  private translate(a: bigint, len: bigint, key: 'gpa' | 'uaddr'): number | undefined {
    for (const r of this.regions) {
      const start = r[key];
      if (a >= start && a + len <= start + r.size && a + len >= a) return r.wasmAddr + Number(a - start);
    }
    return undefined;
  }

  private unmap(r: MappedRegion): void {
    this.cover(r.mapAddr, r.mapLen);
    closeQuietly(r.fd);
  }

  /** Cover, never unmap: the range stays readable zeros and whatever file was mapped there is let go. */
  private cover(addr: number, len: number): void {
    mmap(this.base + BigInt(addr), len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0n);
  }

  private place(len: bigint, align: bigint): number | undefined {
    const used = [...this.regions].sort((a, b) => a.mapAddr - b.mapAddr);
    let cursor = BigInt(GUEST_AREA);
    const fit = (at: bigint): bigint => alignUp(this.base + at, align) - this.base;
    for (const r of used) {
      const at = fit(cursor);
      if (at + len <= BigInt(r.mapAddr)) return Number(at);
      cursor = BigInt(r.mapAddr + r.mapLen);
    }
    const at = fit(cursor);
    return at + len <= MEMORY_LIMIT ? Number(at) : undefined;
  }

  private writeTable(): void {
    const dv = new DataView(this.memory.buffer);
    this.regions.forEach((r, i) => {
      const e = REGION_TABLE + REGION_HDR_SIZE + i * REGION_ENTRY_SIZE;
      dv.setBigUint64(e + REGION_GPA, r.gpa, true);
      dv.setBigUint64(e + REGION_SIZE, r.size, true);
      dv.setBigUint64(e + REGION_UVA, r.uaddr, true);
      dv.setBigUint64(e + REGION_WASM, BigInt(r.wasmAddr), true);
    });
    dv.setUint32(REGION_TABLE + REGION_HDR_COUNT, this.regions.length, true);
    dv.setUint32(REGION_TABLE + REGION_HDR_GENERATION, ++this.generation, true);
  }
}
