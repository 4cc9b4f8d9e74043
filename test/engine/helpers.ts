/**
 * Test rig for the engine: one shared WebAssembly.Memory laid out per src/engine/layout.ts, with the
 * "guest RAM" regions placed inside GUEST_AREA of that same memory (no memfd), a region table
 * pointing at them, and a small TS driver that writes split rings there.
 *
 * Regions (GPA-adjacent A and B are mapped at unrelated wasm addresses, so buffers crossing
 * GPA 0x20_0000 split into two segments; C sits above 4 GiB; everything else is unmapped):
 *   A: gpa 0x0000_0000 .. 0x0020_0000  -> wasm GUEST_AREA + 0
 *   C: gpa 0x1_0000_0000 .. +2 MiB     -> wasm GUEST_AREA + 2 MiB
 *   B: gpa 0x0020_0000 .. 0x0040_0000  -> wasm GUEST_AREA + 6 MiB
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, renameSync, statSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  GUEST_AREA, REGION_TABLE, REGION_HDR_COUNT, REGION_HDR_GENERATION, REGION_HDR_SIZE, REGION_ENTRY_SIZE,
  REGION_GPA, REGION_SIZE, REGION_UVA, REGION_WASM, WASM_PAGE, MEMORY_MAX_PAGES, queueArea, QUEUE_AREA_SIZE,
  VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_INDIRECT, CHAINS_OFFSET, CHAIN_BYTES, CH_HEAD,
  CH_SEG_START, CH_SEG_COUNT, CH_READ_LEN, CH_WRITE_LEN, CH_USED_LEN, SEGS_OFFSET, SEG_BYTES, SEG_ADDR, SEG_LEN,
  SEG_FLAGS, SEG_F_WRITE,
} from '../../src/engine/layout.js';
import { instantiateEngine, loadEngineModule, type EngineExports } from '../../src/engine/engine.js';
import { packageRoot } from '../../src/runtime/package-root.js';

export const ROOT = packageRoot();
export const WASM_PATH = join(ROOT, 'build', 'out', 'engine.wasm');
export const WAT_PATH = join(ROOT, 'build', 'out', 'engine.wat');

/** Build build/out/engine.wasm if it is missing or older than assembly/*.ts (atomic rename: test files run in parallel). */
export function ensureEngineBuilt(): void {
  const srcDir = join(ROOT, 'assembly');
  const newest = Math.max(...readdirSync(srcDir).filter((f) => f.endsWith('.ts')).map((f) => statSync(join(srcDir, f)).mtimeMs));
  if (existsSync(WASM_PATH) && existsSync(WAT_PATH) && statSync(WASM_PATH).mtimeMs >= newest) return;
  const tmp = `${WASM_PATH}.${process.pid}.${Date.now()}`;
  try {
    execFileSync('npx', ['asc', 'assembly/index.ts', '--config', 'build/asconfig.json', '--target', 'release',
      '--outFile', `${tmp}.wasm`, '--textFile', `${tmp}.wat`], { cwd: ROOT, stdio: 'pipe' });
    renameSync(`${tmp}.wat`, WAT_PATH);
    renameSync(`${tmp}.wasm`, WASM_PATH);
  } finally {
    rmSync(`${tmp}.wasm`, { force: true });
    rmSync(`${tmp}.wat`, { force: true });
  }
}

// at import time, outside any test's timeout (asc takes a few seconds)
ensureEngineBuilt();

export function engineModule(): WebAssembly.Module {
  return loadEngineModule(WASM_PATH);
}

export const G = GUEST_AREA;
export const GUEST_BYTES = 8 << 20;
export const MIB2 = 0x20_0000;
export interface RegionSpec { gpa: bigint; size: bigint; uva: bigint; wasm: bigint }
export const REGION_A: RegionSpec = { gpa: 0n, size: 0x20_0000n, uva: 0x7f00_0000_0000n, wasm: BigInt(G) };
export const REGION_C: RegionSpec = { gpa: 0x1_0000_0000n, size: 0x20_0000n, uva: 0x7f00_1000_0000n, wasm: BigInt(G + MIB2) };
export const REGION_B: RegionSpec = { gpa: 0x20_0000n, size: 0x20_0000n, uva: 0x7f00_0020_0000n, wasm: BigInt(G + 3 * MIB2) };
export const DEFAULT_REGIONS = [REGION_A, REGION_C, REGION_B];

/** wasm address of a GPA in A/B/C (test convenience; throws when unmapped). */
export function wasmOfGpa(gpa: bigint, regions: RegionSpec[] = DEFAULT_REGIONS): number {
  for (const r of regions) if (gpa >= r.gpa && gpa < r.gpa + r.size) return Number(r.wasm + gpa - r.gpa);
  throw new Error(`gpa ${gpa.toString(16)} unmapped`);
}

export function newMemory(): WebAssembly.Memory {
  return new WebAssembly.Memory({ initial: (G + GUEST_BYTES) / WASM_PAGE, maximum: MEMORY_MAX_PAGES, shared: true });
}

export class Rig {
  readonly memory: WebAssembly.Memory;
  readonly e: EngineExports;
  readonly dv: DataView;
  readonly u8: Uint8Array;

  constructor(memory: WebAssembly.Memory = newMemory()) {
    this.memory = memory;
    this.e = instantiateEngine(engineModule(), memory);
    this.dv = new DataView(memory.buffer);
    this.u8 = new Uint8Array(memory.buffer);
  }

  /** Zero the region table, the first queue areas and the guest area (reuse between property runs). */
  reset(queues = 2): void {
    this.u8.fill(0, REGION_TABLE, REGION_TABLE + 0x1000);
    this.u8.fill(0, queueArea(0), queueArea(queues));
    this.u8.fill(0, G, G + GUEST_BYTES);
  }

  setRegions(regions: RegionSpec[] = DEFAULT_REGIONS, table = REGION_TABLE): void {
    this.w32(table + REGION_HDR_COUNT, regions.length);
    this.w32(table + REGION_HDR_GENERATION, this.r32(table + REGION_HDR_GENERATION) + 1);
    regions.forEach((r, i) => {
      const e = table + REGION_HDR_SIZE + i * REGION_ENTRY_SIZE;
      this.w64(e + REGION_GPA, r.gpa);
      this.w64(e + REGION_SIZE, r.size);
      this.w64(e + REGION_UVA, r.uva);
      this.w64(e + REGION_WASM, r.wasm);
    });
  }

  r8(a: number): number { return this.dv.getUint8(a); }
  r16(a: number): number { return this.dv.getUint16(a, true); }
  r32(a: number): number { return this.dv.getUint32(a, true); }
  r64(a: number): bigint { return this.dv.getBigUint64(a, true); }
  w8(a: number, v: number): void { this.dv.setUint8(a, v); }
  w16(a: number, v: number): void { this.dv.setUint16(a, v & 0xffff, true); }
  w32(a: number, v: number): void { this.dv.setUint32(a, v >>> 0, true); }
  w64(a: number, v: bigint): void { this.dv.setBigUint64(a, BigInt.asUintN(64, v), true); }

  copy(from: number, len: number): Uint8Array { return this.u8.slice(from, from + len); }
  same(from: number, snapshot: Uint8Array): boolean { return Buffer.compare(this.u8.subarray(from, from + snapshot.length), snapshot) === 0; }
}

export interface Desc { addr: bigint; len: number; flags: number; next: number }

/** Split-ring layout for tests: all three parts in region A at fixed GPAs. */
export class TestRing {
  readonly descGpa: bigint;
  readonly availGpa: bigint;
  readonly usedGpa: bigint;
  readonly desc: number;
  readonly avail: number;
  readonly used: number;

  constructor(readonly rig: Rig, readonly size: number, base: bigint = 0x1000n) {
    this.descGpa = base;
    this.availGpa = base + BigInt(16 * size);
    this.usedGpa = (this.availGpa + BigInt(6 + 2 * size) + 3n) & ~3n;
    this.desc = wasmOfGpa(this.descGpa);
    this.avail = wasmOfGpa(this.availGpa);
    this.used = wasmOfGpa(this.usedGpa);
  }

  /** Bytes from desc to the end of the used ring (for before/after snapshots). */
  get span(): number { return this.used + 6 + 8 * this.size + 2 - this.desc; }

  setDesc(i: number, d: Desc, table = this.desc): void {
    const a = table + 16 * i;
    this.rig.w64(a, d.addr);
    this.rig.w32(a + 8, d.len);
    this.rig.w16(a + 12, d.flags);
    this.rig.w16(a + 14, d.next);
  }
  get availIdx(): number { return this.rig.r16(this.avail + 2); }
  set availIdx(v: number) { Atomics.store(new Uint16Array(this.rig.memory.buffer), (this.avail + 2) / 2, v & 0xffff); }
  get usedIdx(): number { return this.rig.r16(this.used + 2); }
  set usedIdx(v: number) { this.rig.w16(this.used + 2, v); }
  setAvailSlot(idx: number, head: number): void { this.rig.w16(this.avail + 4 + 2 * (idx & (this.size - 1)), head); }
  /** Put heads into the ring after avail.idx and publish them. */
  publish(...heads: number[]): void {
    let idx = this.availIdx;
    for (const h of heads) this.setAvailSlot(idx++, h);
    this.availIdx = idx;
  }
  get availFlags(): number { return this.rig.r16(this.avail); }
  set availFlags(v: number) { this.rig.w16(this.avail, v); }
  get usedFlags(): number { return this.rig.r16(this.used); }
  get usedEvent(): number { return this.rig.r16(this.avail + 4 + 2 * this.size); }
  set usedEvent(v: number) { this.rig.w16(this.avail + 4 + 2 * this.size, v); }
  get availEvent(): number { return this.rig.r16(this.used + 4 + 8 * this.size); }
  usedElem(idx: number): { id: number; len: number } {
    const a = this.used + 4 + 8 * (idx & (this.size - 1));
    return { id: this.rig.r32(a), len: this.rig.r32(a + 4) };
  }
}

export const F_NEXT = VIRTQ_DESC_F_NEXT;
export const F_WRITE = VIRTQ_DESC_F_WRITE;
export const F_INDIRECT = VIRTQ_DESC_F_INDIRECT;
export const QS0 = queueArea(0);
export { QUEUE_AREA_SIZE };

export interface Seg { addr: number; len: number; write: boolean }
export interface ChainRec { head: number; segStart: number; segs: Seg[]; readLen: number; writeLen: number; usedLen: number }

/** Chain records 0..n-1 of queue area qs, with their segments. */
export function readChains(rig: Rig, qs: number, n: number): ChainRec[] {
  const out: ChainRec[] = [];
  for (let k = 0; k < n; k++) {
    const rec = qs + CHAINS_OFFSET + k * CHAIN_BYTES;
    const segStart = rig.r32(rec + CH_SEG_START);
    const segs: Seg[] = [];
    for (let s = 0; s < rig.r32(rec + CH_SEG_COUNT); s++) {
      const a = qs + SEGS_OFFSET + (segStart + s) * SEG_BYTES;
      segs.push({ addr: rig.r32(a + SEG_ADDR), len: rig.r32(a + SEG_LEN), write: (rig.r32(a + SEG_FLAGS) & SEG_F_WRITE) !== 0 });
    }
    out.push({
      head: rig.r32(rec + CH_HEAD), segStart, segs, readLen: rig.r32(rec + CH_READ_LEN),
      writeLen: rig.r32(rec + CH_WRITE_LEN), usedLen: rig.r32(rec + CH_USED_LEN),
    });
  }
  return out;
}

export function setUsedLen(rig: Rig, qs: number, k: number, len: number): void {
  rig.w32(qs + CHAINS_OFFSET + k * CHAIN_BYTES + CH_USED_LEN, len);
}

// ---- packed rings (B.2) ----
export const P_AVAIL = 1 << 7;
export const P_USED = 1 << 15;
export interface PDesc { addr: bigint; len: number; write?: boolean; indirect?: boolean }

/**
 * Driver side of a packed ring for tests, all parts in region A: the descriptor ring at `base`, the
 * driver event suppression structure after it, the device's after that. Positions are index | wrap << 15.
 */
export class PackedTestRing {
  readonly descGpa: bigint;
  readonly drvEventGpa: bigint;
  readonly devEventGpa: bigint;
  readonly desc: number;
  readonly drvEvent: number;
  readonly devEvent: number;
  availPos = 1 << 15;
  usedPos = 1 << 15;
  /** ring slots of each outstanding buffer id */
  readonly slotsOf = new Map<number, number>();

  constructor(readonly rig: Rig, readonly size: number, base: bigint = 0x1000n) {
    this.descGpa = base;
    this.drvEventGpa = base + BigInt(16 * size);
    this.devEventGpa = this.drvEventGpa + 4n;
    this.desc = wasmOfGpa(this.descGpa);
    this.drvEvent = wasmOfGpa(this.drvEventGpa);
    this.devEvent = wasmOfGpa(this.devEventGpa);
  }

  static advance(pos: number, n: number, size: number): number {
    let i = (pos & 0x7fff) + n;
    let w = pos & 0x8000;
    while (i >= size) {
      i -= size;
      w ^= 0x8000;
    }
    return i | w;
  }

  availFlags(pos: number): number {
    return (pos & 0x8000) !== 0 ? P_AVAIL : P_USED;
  }

  writeSlot(i: number, d: { addr: bigint; len: number; id: number; flags: number }): void {
    const a = this.desc + 16 * i;
    this.rig.w64(a, d.addr);
    this.rig.w32(a + 8, d.len);
    this.rig.w16(a + 12, d.id);
    this.rig.w16(a + 14, d.flags);
  }

  slotFlags(i: number): number { return this.rig.r16(this.desc + 16 * i + 14); }
  setSlotFlags(i: number, f: number): void {
    Atomics.store(new Uint16Array(this.rig.memory.buffer), (this.desc + 16 * i + 14) / 2, f & 0xffff);
  }

  /**
   * Make a chain available with buffer id `id`: descriptors in consecutive slots, NEXT on all but the last,
   * the id in every one (the device reads the last), the head's flags written last. Returns its slot count.
   */
  add(id: number, descs: PDesc[], opts: { headLast?: boolean } = {}): number {
    const start = this.availPos;
    let pos = start;
    let headFlags = 0;
    descs.forEach((d, k) => {
      let f = this.availFlags(pos);
      if (d.write) f |= VIRTQ_DESC_F_WRITE;
      if (d.indirect) f |= VIRTQ_DESC_F_INDIRECT;
      if (k + 1 < descs.length) f |= VIRTQ_DESC_F_NEXT;
      const i = pos & 0x7fff;
      if (k === 0) {
        headFlags = f;
        this.writeSlot(i, { addr: d.addr, len: d.len, id, flags: this.availFlags(PackedTestRing.advance(pos, this.size, this.size)) });
      } else {
        this.writeSlot(i, { addr: d.addr, len: d.len, id, flags: f });
      }
      pos = PackedTestRing.advance(pos, 1, this.size);
    });
    if (opts.headLast !== false) this.setSlotFlags(start & 0x7fff, headFlags);
    this.availPos = pos;
    this.slotsOf.set(id, descs.length);
    return descs.length;
  }

  /** The next used descriptor, or null; advances past the chain it completes. */
  reap(): { id: number; len: number; flags: number } | null {
    const i = this.usedPos & 0x7fff;
    const f = this.slotFlags(i);
    const w = (this.usedPos & 0x8000) !== 0 ? 1 : 0;
    if (((f >> 7) & 1) !== w || ((f >> 15) & 1) !== w) return null;
    const id = this.rig.r16(this.desc + 16 * i + 12);
    const len = this.rig.r32(this.desc + 16 * i + 8);
    const slots = this.slotsOf.get(id);
    if (slots === undefined) throw new Error(`used id ${id} is not outstanding`);
    this.slotsOf.delete(id);
    this.usedPos = PackedTestRing.advance(this.usedPos, slots, this.size);
    return { id, len, flags: f };
  }

  get drvEventFlags(): number { return this.rig.r16(this.drvEvent + 2); }
  set drvEventFlags(v: number) { this.rig.w16(this.drvEvent + 2, v); }
  set drvEventOffWrap(v: number) { this.rig.w16(this.drvEvent, v); }
  get devEventFlags(): number { return this.rig.r16(this.devEvent + 2); }
  get devEventOffWrap(): number { return this.rig.r16(this.devEvent); }
}
