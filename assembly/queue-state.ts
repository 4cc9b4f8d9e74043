// The part of a queue area both ring formats set up alike: sizes, ring and table addresses, the avail position,
// and cleared notification and error state (QS_* in layout.ts). The format-specific checks stay with each ring.

import {
  QS_SIZE_FIELD, QS_FEATURES, QS_DESC, QS_AVAIL, QS_USED, QS_REGIONS, QS_INFLIGHT, QS_LAST_AVAIL, QS_PENDING,
  QS_SIGNALLED_USED, QS_SIGNALLED_VALID, QS_ERROR_DETAIL, QS_ERROR,
} from './layout';

/** `avail`/`used`: the split rings' avail and used rings, or the packed rings' driver and device event areas. */
export function initQueueState(
  qs: u32, size: u32, features: u32, descAddr: u32, avail: u32, used: u32,
  regionTable: u32, inflightAddr: u32, lastAvail: u32,
): void {
  store<u32>(qs, size, QS_SIZE_FIELD);
  store<u32>(qs, features, QS_FEATURES);
  store<u32>(qs, descAddr, QS_DESC);
  store<u32>(qs, avail, QS_AVAIL);
  store<u32>(qs, used, QS_USED);
  store<u32>(qs, regionTable, QS_REGIONS);
  store<u32>(qs, inflightAddr, QS_INFLIGHT);
  store<u16>(qs, <u16>lastAvail, QS_LAST_AVAIL);
  store<u32>(qs, 0, QS_PENDING);
  store<u16>(qs, 0, QS_SIGNALLED_USED);
  store<u16>(qs, 0, QS_SIGNALLED_VALID);
  store<u32>(qs, 0, QS_ERROR_DETAIL);
  store<u32>(qs, 0, QS_ERROR);
}
