// Handing a descriptor's buffer out as segments (wasm address, length, flags), shared by the split and
// packed chain walkers. A buffer may span GPA-adjacent regions mapped at unrelated wasm addresses, so
// it is translated piecewise, one segment per region it touches.

import { REGION_GPA, REGION_SIZE, REGION_WASM, SEG_BYTES, SEG_CAP, SEG_ADDR, SEG_LEN, SEG_FLAGS } from './layout';
import { findGpaRegion } from './region-table';

/** appendSegments result: part of the buffer is outside the mapped guest regions. */
export const SEGS_UNMAPPED: u32 = 0xffff_ffff;

/**
 * Write the segments of guest buffer [gpa, gpa+len) (len > 0) from segment index `seg` on into the
 * array at `segs`; indices from SEG_CAP on are counted but not written (the caller sees the chain
 * does not fit). Returns the next segment index, or SEGS_UNMAPPED.
 */
// @ts-ignore: decorator
@inline
export function appendSegments(regions: u32, segs: u32, seg: u32, gpa: u64, len: u32, segFlags: u32): u32 {
  let rem = <u64>len;
  if (gpa + rem < gpa) return SEGS_UNMAPPED; // wraps 2^64
  do {
    const e = findGpaRegion(regions, gpa);
    if (e == 0) return SEGS_UNMAPPED;
    const off = gpa - load<u64>(e, REGION_GPA);
    const room = load<u64>(e, REGION_SIZE) - off;
    const take = rem < room ? rem : room;
    if (seg < SEG_CAP) {
      const s = segs + seg * SEG_BYTES;
      store<u32>(s, <u32>(load<u64>(e, REGION_WASM) + off), SEG_ADDR);
      store<u32>(s, <u32>take, SEG_LEN);
      store<u32>(s, segFlags, SEG_FLAGS);
    }
    seg++;
    gpa += take;
    rem -= take;
  } while (rem != 0);
  return seg;
}
