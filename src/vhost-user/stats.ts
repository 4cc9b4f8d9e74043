/**
 * Live per-queue figures (`--stats`): read from the counters the engine and the workers keep in each queue's
 * state block, so sampling costs the data path nothing. Rates are deltas between two samples.
 */
import {
  QS_AVAIL,
  QS_LAST_AVAIL,
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
  /** chains the driver made available that the device has not popped */
  occupancy: number;
  /** chains popped and not yet used */
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
      occupancy: (availIdx - lastAvail) & 0xffff,
      inflight: (lastAvail - dv.getUint16(qs + QS_NEXT_USED, true)) & 0xffff,
    };
  });
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
