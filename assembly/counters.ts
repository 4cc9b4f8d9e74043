// The statistics counters of a queue area (QS_STAT_*) and a driver area (DS_STAT_*): plain u64 fields that
// only the ring's own thread writes; readers (stats.ts) sample them while it runs.

import { QS_STAT_NOTIFY, QS_STAT_SUPPRESSED } from './layout';

// @ts-ignore: decorator
@inline
export function addStat(area: u32, offset: u32, v: u64): void {
  store<u64>(area + offset, load<u64>(area + offset) + v);
}

/** Count a notification decision (sent or suppressed) and return it as the engines' 1/0 answer. */
// @ts-ignore: decorator
@inline
export function countNotify(qs: u32, notify: bool): i32 {
  addStat(qs, notify ? QS_STAT_NOTIFY : QS_STAT_SUPPRESSED, 1);
  return notify ? 1 : 0;
}
