/**
 * Live per-queue figures (`--stats`): read from the counters the engine and the workers keep in each queue's
 * state block, so sampling costs the data path nothing. Rates are deltas between two samples.
 */
import {
  QF_PACKED,
  QS_AVAIL,
  QS_DESC,
  QS_FEATURES,
  QS_LAST_AVAIL,
  QS_SIZE_FIELD,
  QS_NEXT_USED,
  QS_STAT_BATCHES,
  QS_STAT_BYTES_READ,
  QS_STAT_BYTES_WRITTEN,
  QS_STAT_CALLS,
  QS_STAT_CHAINS,
  QS_STAT_KICKS,
  QS_STAT_NOTIFY,
  QS_STAT_SUPPRESSED,
  queueArea,
} from '../engine/layout.js';

/** Cumulative counters of one ring at one moment. */
export interface QueueCounters {
  queue: number;
  at: number; // ms
  chains: number;
  batches: number;
  bytesRead: number;
  bytesWritten: number;
  kicks: number;
  calls: number;
  notify: number;
  suppressed: number;
  /** chains the driver made available that the device has not popped (packed rings: descriptors) */
  occupancy: number;
  /** chains popped and not yet used (packed rings: the ring slots they hold) */
  inflight: number;
}

export interface QueueRates {
  queue: number;
  chainsPerSec: number;
  bytesPerSec: number;
  kicksPerSec: number;
  callsPerSec: number;
  avgBatch: number;
  occupancy: number;
  /** share of notification decisions where the driver did not want one */
  suppressedShare: number;
  inflight: number;
}

/** Read the counters of the started rings `queues` from a connection's Memory. */
export function readCounters(memory: WebAssembly.Memory, queues: readonly number[]): QueueCounters[] {
  const dv = new DataView(memory.buffer);
  const now = performance.now();
  const u64 = (a: number): number => Number(dv.getBigUint64(a, true));
  return queues.map((q) => {
    const qs = queueArea(q);
    const packed = (dv.getUint32(qs + QS_FEATURES, true) & QF_PACKED) !== 0 ? packedFigures(dv, qs) : undefined;
    const lastAvail = dv.getUint16(qs + QS_LAST_AVAIL, true);
    const avail = dv.getUint32(qs + QS_AVAIL, true);
    // the avail ring lies in mapped guest RAM (or zeros where a region was dropped): safe to read from JS
    const availIdx = avail ? dv.getUint16(avail + 2, true) : lastAvail;
    return {
      queue: q,
      at: now,
      chains: u64(qs + QS_STAT_CHAINS),
      batches: u64(qs + QS_STAT_BATCHES),
      bytesRead: u64(qs + QS_STAT_BYTES_READ),
      bytesWritten: u64(qs + QS_STAT_BYTES_WRITTEN),
      kicks: dv.getFloat64(qs + QS_STAT_KICKS, true),
      calls: dv.getFloat64(qs + QS_STAT_CALLS, true),
      notify: u64(qs + QS_STAT_NOTIFY),
      suppressed: u64(qs + QS_STAT_SUPPRESSED),
      occupancy: packed ? packed.occupancy : (availIdx - lastAvail) & 0xffff,
      inflight: packed ? packed.inflight : (lastAvail - dv.getUint16(qs + QS_NEXT_USED, true)) & 0xffff,
    };
  });
}

/**
 * A packed ring has no avail index to read: occupancy is the run of available descriptors from the next avail
 * position (their flags, B.2), inflight the ring slots between the next used and the next avail positions.
 */
function packedFigures(dv: DataView, qs: number): { occupancy: number; inflight: number } {
  const size = dv.getUint32(qs + QS_SIZE_FIELD, true);
  const desc = dv.getUint32(qs + QS_DESC, true);
  const avail = dv.getUint16(qs + QS_LAST_AVAIL, true);
  const used = dv.getUint16(qs + QS_NEXT_USED, true);
  const slot = (p: number): number => (p & 0x7fff) + ((p >> 15) & 1 ? 0 : size);
  const inflight = size ? (slot(avail) - slot(used) + 2 * size) % (2 * size) : 0;
  let occupancy = 0;
  let i = avail & 0x7fff;
  let w = (avail >> 15) & 1;
  while (desc && occupancy < size - inflight) {
    const f = dv.getUint16(desc + 16 * i + 14, true);
    if (((f >> 7) & 1) !== w || ((f >> 15) & 1) === w) break;
    occupancy++;
    if (++i === size) {
      i = 0;
      w ^= 1;
    }
  }
  return { occupancy, inflight };
}

export function rates(prev: QueueCounters, cur: QueueCounters): QueueRates {
  const dt = Math.max(1e-9, (cur.at - prev.at) / 1000);
  const batches = cur.batches - prev.batches;
  const decisions = cur.notify - prev.notify + (cur.suppressed - prev.suppressed);
  return {
    queue: cur.queue,
    chainsPerSec: (cur.chains - prev.chains) / dt,
    bytesPerSec: (cur.bytesRead - prev.bytesRead + (cur.bytesWritten - prev.bytesWritten)) / dt,
    kicksPerSec: (cur.kicks - prev.kicks) / dt,
    callsPerSec: (cur.calls - prev.calls) / dt,
    avgBatch: batches > 0 ? (cur.chains - prev.chains) / batches : 0,
    occupancy: cur.occupancy,
    suppressedShare: decisions > 0 ? (cur.suppressed - prev.suppressed) / decisions : 0,
    inflight: cur.inflight,
  };
}

export function formatRates(device: string, r: QueueRates): string {
  return (
    `${device} q${r.queue}: ${(r.chainsPerSec / 1e6).toFixed(3)} M chains/s  ${(r.bytesPerSec / 2 ** 20).toFixed(1)} MiB/s  ` +
    `kicks ${r.kicksPerSec.toFixed(0)}/s  calls ${r.callsPerSec.toFixed(0)}/s  batch ${r.avgBatch.toFixed(1)}  ` +
    `occupancy ${r.occupancy}  suppressed ${(100 * r.suppressedShare).toFixed(1)}%  inflight ${r.inflight}`
  );
}
