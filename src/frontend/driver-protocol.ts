/** A driver run, as handed to a driver worker (piscina task) and what it reports back. */
export interface DriverTask {
  memory: WebAssembly.Memory;
  module: WebAssembly.Module;
  queue: number;
  /** driver state block (front-end memory) */
  ds: number;
  size: number;
  desc: number;
  avail: number;
  used: number;
  gpaDelta: bigint;
  eventIdx: boolean;
  /** VIRTIO_F_RING_PACKED negotiated: avail / used are the driver / device event suppression structures */
  packed?: boolean;
  kickFd: number;
  callFd: number;
  buffers: number;
  bufLen: number;
  descsPerChain: number;
  /** DRV_FIXED_* */
  writable: number;
  /** 'throughput': keep the ring full; 'latency': one chain at a time, timing kick to call */
  mode: 'throughput' | 'latency';
  /** spin on the used ring instead of sleeping on the call eventfd */
  polling: boolean;
  seconds: number;
  /** most chains made available per submit (0 = as many as are free) */
  submitBatch: number;
  /**
   * kicks: 'always' after every submit whatever the device asked; 'event-idx' (default) when the device asks;
   * 'adaptive' as event-idx, and when nothing is used yet spin on the used ring for `pollUs` before sleeping
   */
  notify?: 'always' | 'event-idx' | 'adaptive';
  pollUs?: number;
}

export interface LatencySummary {
  samples: number;
  p50Us: number;
  p90Us: number;
  p99Us: number;
  meanUs: number;
}

export interface DriverResult {
  queue: number;
  seconds: number;
  chains: number;
  chainsPerSec: number;
  usedBytes: number;
  kicks: number;
  /** call eventfd wake-ups */
  calls: number;
  kicksPerChain: number;
  callsPerChain: number;
  /** used elements that named a head the driver did not have outstanding */
  errors: number;
  latency?: LatencySummary;
}
