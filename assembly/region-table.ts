// Guest address translation through the region table (layout: REGION_*), in u64 with overflow checks.
// No cache: the table is scanned linearly (it has at most MAX_REGIONS entries, usually 1-3).

import {
  REGION_HDR_COUNT, REGION_HDR_SIZE, REGION_ENTRY_SIZE, REGION_GPA, REGION_SIZE, REGION_UVA, REGION_WASM,
  MAX_REGIONS,
} from './layout';

const WASM_LIMIT: u64 = 0x1_0000_0000;

/** Entries to scan: the header count, clamped to MAX_REGIONS. */
// @ts-ignore: decorator
@inline
export function regionCount(table: u32): u32 {
  const n = load<u32>(table, REGION_HDR_COUNT);
  return n > MAX_REGIONS ? MAX_REGIONS : n;
}

/**
 * The region entry (its wasm address) whose guest-physical range contains `gpa`, or 0. The entry's
 * mapping must lie inside the 4 GiB wasm space (wasm + size <= 2^32, checked in u64).
 */
// @ts-ignore: decorator
@inline
export function findGpaRegion(table: u32, gpa: u64): u32 {
  const n = regionCount(table);
  let e = table + REGION_HDR_SIZE;
  for (let i: u32 = 0; i < n; i++, e += REGION_ENTRY_SIZE) {
    const size = load<u64>(e, REGION_SIZE);
    if (gpa - load<u64>(e, REGION_GPA) < size) { // u64: wraps to a huge value when gpa < start
      const w = load<u64>(e, REGION_WASM);
      if (w > WASM_LIMIT || size > WASM_LIMIT - w) return 0;
      return e;
    }
  }
  return 0;
}

// @ts-ignore: decorator
@inline
function translateBy(table: u32, keyOffset: u32, addr: u64, len: u64): u32 {
  if (addr + len < addr) return 0; // the range wraps 2^64
  const n = regionCount(table);
  let e = table + REGION_HDR_SIZE;
  for (let i: u32 = 0; i < n; i++, e += REGION_ENTRY_SIZE) {
    const size = load<u64>(e, REGION_SIZE);
    const off = addr - load<u64>(e + keyOffset);
    if (off < size) {
      // first region containing addr decides: the whole range must be inside it
      if (len > size - off) return 0;
      const w = load<u64>(e, REGION_WASM);
      if (w > WASM_LIMIT || size > WASM_LIMIT - w) return 0;
      const r = w + off; // < 2^32 because off < size and w + size <= 2^32
      return <u32>r;
    }
  }
  return 0;
}

/** Wasm address of guest-physical [gpa, gpa+len) if it lies inside ONE region (len 0: gpa inside), else 0. */
export function translateGpa(regionTable: u32, gpa: u64, len: u64): u32 {
  return translateBy(regionTable, REGION_GPA, gpa, len);
}

/** Same, by front-end virtual address (SET_VRING_ADDR ring addresses). */
export function translateUva(regionTable: u32, uva: u64, len: u64): u32 {
  return translateBy(regionTable, REGION_UVA, uva, len);
}
