/** What the main thread and a switch worker say to each other, and the shared counters' layout. */
import type { MessagePort } from 'node:worker_threads';
import type { RingStart, WorkerEvent } from '../queues/worker-protocol.js';

export interface NetWorkerData {
  /** this worker's index: it polls the TX rings of queue pairs p with p % workers === index */
  index: number;
  workers: number;
  /** switch ports (sockets) */
  ports: number;
  /** queue pairs per port */
  pairs: number;
  module: WebAssembly.Module;
  /** the switch's own wasm (assembly/net-switch.ts) */
  netModule: WebAssembly.Module;
  ctlFd: number;
  /** Int32Array[1]: non-zero = exit now (process exit) */
  ctlWord: SharedArrayBuffer;
  /** MacTable words */
  macTable: SharedArrayBuffer;
  /** Int32Array[ports * MAX_QUEUES]: one spin lock per RX ring (port * MAX_QUEUES + queue) */
  locks: SharedArrayBuffer;
  /** Int32Array[ports]: the MTU of each port (enforced towards receivers that acked VIRTIO_NET_F_MTU) */
  mtus: SharedArrayBuffer;
  /** Float64Array[workers * ports * PORT_STATS_WORDS]: this worker writes its own block, the main thread sums */
  stats: SharedArrayBuffer;
  events: MessagePort;
  control: MessagePort;
}

/** RingStart plus what a switch port must know of its connection. */
export interface NetRingStart extends RingStart {
  /** acked virtio features of the connection */
  features: bigint;
}

export interface AttachPort {
  /** connection key (a port has one connection at a time; a reconnect gets a new key) */
  key: number;
  port: number;
  memory: WebAssembly.Memory;
}

export interface NetWorkerApi {
  attachPort(a: AttachPort): void;
  /** forget the connection: after this resolves on every worker, nothing touches its memory */
  detachPort(key: number): void;
  startRing(key: number, s: NetRingStart): void;
  stopRing(key: number, queue: number): void;
  setEnabled(key: number, queue: number, enabled: boolean): void;
  setFds(key: number, queue: number, fds: { kickFd?: number; callFd?: number; errFd?: number }): void;
  pausePort(key: number): void;
  resumePort(key: number): void;
  /** switch a frame (no virtio_net_hdr) into the switch as if `port` had sent it on queue pair `pair` */
  inject(port: number, frame: Uint8Array, pair: number): void;
}

export interface NetWorkerEvent {
  key: number;
  event: WorkerEvent;
}

// ---- per-port counters (Float64 each) ----
export const NET_STATS_NAMES = [
  'txFrames', // frames taken from the port's TX rings
  'txBytes', // their bytes (without the virtio_net_hdr)
  'rxFrames', // frames delivered into the port's RX rings
  'rxBytes',
  'rxDropNoRing', // the port had no started and enabled RX ring (or was paused)
  'rxDropNoBuffer', // its RX ring had no (or not enough) buffers
  'rxDropTooSmall', // without MRG_RXBUF: the RX chain could not hold the frame
  'rxDropOffload', // a GSO frame the port did not negotiate the offload for
  'rxDropMtu', // a non-GSO frame above the port's MTU (F_MTU acked)
  'txDropInvalid', // malformed TX frames: shorter than an Ethernet header, longer than 64 KiB, bad csum offsets
  'txDropLocal', // unicast to a MAC learnt on the sending port itself
  'txFlooded', // broadcast, multicast and unknown unicast frames
  'rxCsumFixed', // frames delivered with the checksum computed by the switch
] as const;
export const NET_STATS = NET_STATS_NAMES.length;
/** queue pairs a port may have (2 * 16 = MAX_QUEUES rings) */
export const MAX_PAIRS = 16;
/** Float64 words per (worker, port): the counters, then TX frames per pair, then RX frames per pair */
export const PORT_STATS_WORDS = NET_STATS + 2 * MAX_PAIRS;
export const ST_TX_PAIR = NET_STATS;
export const ST_RX_PAIR = NET_STATS + MAX_PAIRS;
export type NetPortStats = Record<(typeof NET_STATS_NAMES)[number], number> & {
  /** frames taken from each TX queue pair */
  txByPair: number[];
  /** frames delivered into each RX queue pair */
  rxByPair: number[];
};
export const ST_TX_FRAMES = 0;
export const ST_TX_BYTES = 1;
export const ST_RX_FRAMES = 2;
export const ST_RX_BYTES = 3;
export const ST_RX_DROP_NO_RING = 4;
export const ST_RX_DROP_NO_BUFFER = 5;
export const ST_RX_DROP_TOO_SMALL = 6;
export const ST_RX_DROP_OFFLOAD = 7;
export const ST_RX_DROP_MTU = 8;
export const ST_TX_DROP_INVALID = 9;
export const ST_TX_DROP_LOCAL = 10;
export const ST_TX_FLOODED = 11;
export const ST_RX_CSUM_FIXED = 12;
