// Dirty-page logging for live migration (A.9). While VHOST_F_LOG_ALL is on (QF_LOG), every write the
// device made into guest memory sets the bit of each 4 KiB guest page it touched, in the bitmap the
// front-end handed over with SET_LOG_BASE (mapped at LOG_AREA, REGION_HDR_LOG_BYTES long). Bits are
// set with an atomic OR (the front-end clears them concurrently), AFTER the write they record: the
// front-end may copy a page as soon as its bit is visible. A page beyond the end of the log is not
// recorded; it is counted in QS_LOG_DROPPED for the worker to report.

import {
  QS_FEATURES, QS_REGIONS, QS_SIZE_FIELD, QS_DESC, QS_LOG_USED, QS_LOG_DROPPED, QF_LOG, QF_LOG_USED,
  REGION_HDR_LOG_BYTES, REGION_HDR_SIZE, REGION_ENTRY_SIZE, REGION_GPA, REGION_SIZE, REGION_WASM,
  LOG_AREA, LOG_PAGE_SHIFT, CH_SEG_START, CH_SEG_COUNT, SEGS_OFFSET, SEG_BYTES, SEG_ADDR, SEG_LEN,
  SEG_FLAGS, SEG_F_WRITE, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_INDIRECT,
} from './layout';
import { regionCount, translateGpa } from './region-table';

const NO_GPA: u64 = 0xffff_ffff_ffff_ffff;

/** Bytes of the log when QF_LOG is on for this queue and a log is mapped, else 0 (nothing to log). */
// @ts-ignore: decorator
@inline
export function logBytesOf(qs: u32): u32 {
  if ((load<u32>(qs, QS_FEATURES) & QF_LOG) == 0) return 0;
  return load<u32>(load<u32>(qs, QS_REGIONS), REGION_HDR_LOG_BYTES);
}

/** Same, for the ring writes: also needs QF_LOG_USED (VHOST_VRING_F_LOG). */
// @ts-ignore: decorator
@inline
export function ringLogBytesOf(qs: u32): u32 {
  if ((load<u32>(qs, QS_FEATURES) & (QF_LOG | QF_LOG_USED)) != (QF_LOG | QF_LOG_USED)) return 0;
  return load<u32>(load<u32>(qs, QS_REGIONS), REGION_HDR_LOG_BYTES);
}

/** Mark the pages of guest-physical [gpa, gpa+len) dirty; logBytes != 0. */
export function logGpa(qs: u32, logBytes: u32, gpa: u64, len: u64): void {
  if (len == 0) return;
  let last = gpa + (len - 1);
  if (last < gpa) last = NO_GPA; // wraps 2^64: up to the top
  let page = gpa >> <u64>LOG_PAGE_SHIFT;
  const lastPage = last >> <u64>LOG_PAGE_SHIFT;
  const bits = <u64>logBytes << 3;
  while (page <= lastPage) {
    if (page >= bits) {
      const lost = lastPage - page + 1; // >= 1; may be huge for a wild address
      const had = <u64>load<u32>(qs, QS_LOG_DROPPED);
      const sum = had + (lost > 0xffff_ffff ? 0xffff_ffff : lost);
      store<u32>(qs, sum > 0xffff_ffff ? 0xffff_ffff : <u32>sum, QS_LOG_DROPPED);
      return;
    }
    atomic.or<u8>(LOG_AREA + <u32>(page >> 3), <u8>(<u32>1 << <u32>(page & 7)));
    page++;
  }
}

/** The guest-physical address of wasm address `w` inside a mapped region, or NO_GPA. */
// @ts-ignore: decorator
@inline
function gpaOfWasm(regions: u32, w: u32): u64 {
  const n = regionCount(regions);
  let e = regions + REGION_HDR_SIZE;
  for (let i: u32 = 0; i < n; i++, e += REGION_ENTRY_SIZE) {
    const off = <u64>w - load<u64>(e, REGION_WASM); // wraps to a huge value below the region
    if (off < load<u64>(e, REGION_SIZE)) return load<u64>(e, REGION_GPA) + off;
  }
  return NO_GPA;
}

/** Log wasm range [w, w+len) (inside one region: a ring or a segment) by its guest-physical address. */
export function logWasm(qs: u32, logBytes: u32, w: u32, len: u32): void {
  const gpa = gpaOfWasm(load<u32>(qs, QS_REGIONS), w);
  if (gpa != NO_GPA) logGpa(qs, logBytes, gpa, <u64>len);
}

/**
 * Log the first `len` bytes of a chain record's device-writable segments (what the device reported
 * writing; the used length, already clamped to the writable length).
 */
export function logChainSegments(qs: u32, logBytes: u32, rec: u32, len: u32): void {
  let rem = len;
  if (rem == 0) return;
  const regions = load<u32>(qs, QS_REGIONS);
  let s = qs + SEGS_OFFSET + load<u32>(rec, CH_SEG_START) * SEG_BYTES;
  const end = s + load<u32>(rec, CH_SEG_COUNT) * SEG_BYTES;
  for (; s < end && rem != 0; s += SEG_BYTES) {
    if ((load<u32>(s, SEG_FLAGS) & SEG_F_WRITE) == 0) continue;
    const l = load<u32>(s, SEG_LEN);
    const take = rem < l ? rem : l;
    const gpa = gpaOfWasm(regions, load<u32>(s, SEG_ADDR));
    if (gpa != NO_GPA) logGpa(qs, logBytes, gpa, <u64>take);
    rem -= take;
  }
}

/**
 * Split ring, out-of-order completion (the chain record may be gone): walk the chain at `head` in the
 * descriptor table again, as libvhost-user does, and log the first `len` bytes of its writable
 * buffers. The descriptors still belong to the device (the head is not used yet); a malformed chain
 * was refused when it was popped, so this walk only stops at the bounds it cannot cross.
 */
export function logSplitChain(qs: u32, logBytes: u32, head: u32, len: u32): void {
  let rem = len;
  if (rem == 0) return;
  let table = load<u32>(qs, QS_DESC);
  let limit = load<u32>(qs, QS_SIZE_FIELD);
  let i = head;
  let count: u32 = 0;
  let indirect = false;
  while (rem != 0 && count < limit && i < limit) {
    count++;
    const d = table + (i << 4);
    const addr = load<u64>(d, 0);
    const dlen = load<u32>(d, 8);
    const flagsNext = load<u32>(d, 12);
    if ((flagsNext & VIRTQ_DESC_F_INDIRECT) != 0) {
      if (indirect) return;
      const t = translateGpa(load<u32>(qs, QS_REGIONS), addr, <u64>dlen);
      if (t == 0) return;
      table = t;
      limit = dlen >>> 4;
      indirect = true;
      i = 0;
      count = 0;
      continue;
    }
    if ((flagsNext & VIRTQ_DESC_F_WRITE) != 0) {
      const take = rem < dlen ? rem : dlen;
      logGpa(qs, logBytes, addr, <u64>take);
      rem -= take;
    }
    if ((flagsNext & VIRTQ_DESC_F_NEXT) == 0) return;
    i = flagsNext >>> 16;
  }
}

/** Split ring writes: [off, off+len) of the used ring, at log_guest_addr (VHOST_VRING_F_LOG). */
export function logUsedRing(qs: u32, logBytes: u32, off: u32, len: u32): void {
  const base = load<u64>(qs, QS_LOG_USED);
  logGpa(qs, logBytes, base + <u64>off, <u64>len);
}
