/**
 * A virtio-blk load through the built-in front-end, against any vhost-user-blk back-end (ours, or
 * qemu-storage-daemon's vhost-user-blk export): per queue, a driver worker keeps `iodepth` requests in flight,
 * each one chain [16-byte virtio_blk_outhdr][bs bytes of data][1 status byte] at a random bs-aligned offset
 * inside the device's capacity (read through GET_CONFIG), and reports completions/s, MiB/s, the requests whose
 * status was not OK, and completion latency percentiles.
 *
 * The guest RAM of each queue holds its rings, then the request buffers (all preallocated):
 *   data    iodepth * bs bytes (slot s at s * bs: 4 KiB-aligned when bs is a multiple of 4 KiB)
 *   records iodepth * 32 bytes: the slot's outhdr at +0 and its status byte at +16
 * The segment records drvAddChain reads (three per slot, written once) and the (id, len) pairs drvReapTo
 * writes live in the queue's device area of the front-end's memory.
 */
import { Piscina } from 'piscina';
import { DRV_SEG_BYTES, DRV_USED_BYTES, deviceArea, DEVICE_AREA_SIZE } from '../engine/layout.js';
import { builtPath } from '../runtime/package-root.js';
import { bit, hasBit, ProtocolFeature } from '../vhost-user/constants.js';
import { Frontend } from './frontend.js';

export type BlkRw = 'randread' | 'randwrite';

// virtio-blk feature bits the load acks when offered (a Linux guest acks these and more): FLUSH so that the
// device may keep a write cache, as it does for a guest; MQ for more than one queue
const VIRTIO_BLK_F_FLUSH = 9;
const VIRTIO_BLK_F_MQ = 12;

export const BLK_SECTOR = 512;
/** virtio_blk_outhdr + status byte record per slot */
export const BLK_SLOT_RECORD = 32;
export const BLK_MAX_IODEPTH = 1024;
export const BLK_MAX_BS = 1 << 20;

export interface BlkLoadOptions {
  socketPath: string;
  queues: number;
  /** requests in flight per queue */
  iodepth: number;
  /** bytes per request: a multiple of 512, at most 1 MiB */
  bs: number;
  rw: BlkRw;
  seconds: number;
  /** ring size (default: 256, or the power of two that holds 3 descriptors per request) */
  queueSize?: number;
  /** negotiate VIRTIO_F_EVENT_IDX when offered (default true) */
  eventIdx?: boolean;
  /** drive packed virtqueues (VIRTIO_F_RING_PACKED; the back-end must offer it) */
  packed?: boolean;
  /** spin on the used ring instead of sleeping on the call eventfd */
  polling?: boolean;
  /** seed of the offset generator (default: a fixed one, so that runs draw the same offsets) */
  seed?: number;
}

/** What a blk driver worker gets (a piscina task). */
export interface BlkDriverTask {
  memory: WebAssembly.Memory;
  module: WebAssembly.Module;
  queue: number;
  ds: number;
  size: number;
  desc: number;
  avail: number;
  used: number;
  gpaDelta: bigint;
  eventIdx: boolean;
  /** VIRTIO_F_RING_PACKED negotiated */
  packed?: boolean;
  kickFd: number;
  callFd: number;
  /** wasm address of the queue's buffer area (data, then slot records) */
  buffers: number;
  /** wasm address where the 3 segment records per slot go (device area) */
  segs: number;
  /** wasm address of the drvReapTo output (iodepth pairs) */
  out: number;
  iodepth: number;
  bs: number;
  write: boolean;
  /** number of bs-sized blocks in the device (offsets are drawn from 0 .. blocks-1) */
  blocks: number;
  seconds: number;
  polling: boolean;
  seed: number;
}

export interface BlkLatency {
  samples: number;
  p50Us: number;
  p90Us: number;
  p99Us: number;
  p999Us: number;
  meanUs: number;
  maxUs: number;
}

export interface BlkQueueResult {
  queue: number;
  seconds: number;
  /** requests completed inside the measured window */
  completions: number;
  iops: number;
  mibPerSec: number;
  /** completions whose status byte was not VIRTIO_BLK_S_OK, plus used elements naming no outstanding request */
  errors: number;
  /** of the errors: status bytes other than 0 (the first such status is in firstBadStatus) */
  badStatus: number;
  firstBadStatus?: number;
  /** of the errors: used ids that were not outstanding heads */
  badIds: number;
  kicks: number;
  /** call eventfd wake-ups */
  calls: number;
  kicksPerRequest: number;
  callsPerRequest: number;
  /** requests still outstanding after the drain at the end (0 unless the back-end stalled) */
  leftInFlight: number;
  /**
   * sleeps on the call eventfd that ended by their timeout (50 ms) with requests in flight: a back-end that
   * misses a notification shows here (and in maxUs); a slow or descheduled one may too
   */
  sleepTimeouts: number;
  /** submit to reap, in µs */
  latency: BlkLatency;
}

export interface BlkReport {
  device: 'blk';
  rw: BlkRw;
  bs: number;
  iodepth: number;
  queueCount: number;
  queueSize: number;
  eventIdx: boolean;
  /** packed virtqueues */
  packed: boolean;
  polling: boolean;
  /** device capacity in bytes (GET_CONFIG) */
  capacityBytes: number;
  seconds: number;
  /** sums over the queues */
  iops: number;
  mibPerSec: number;
  completions: number;
  errors: number;
  kicksPerRequest: number;
  callsPerRequest: number;
  /** the slowest queue's percentiles (max over queues), for a quick look; per queue in `queues` */
  latency: { p50Us: number; p99Us: number };
  queues: BlkQueueResult[];
}

const alignUp = (v: number, a: number): number => Math.ceil(v / a) * a;
const nextPow2 = (v: number): number => 2 ** Math.ceil(Math.log2(Math.max(1, v)));

export function blkBufferBytes(iodepth: number, bs: number): number {
  return alignUp(iodepth * bs, 4096) + alignUp(iodepth * BLK_SLOT_RECORD, 4096);
}

export function checkBlkLoadOptions(o: BlkLoadOptions): void {
  if (!Number.isInteger(o.iodepth) || o.iodepth < 1 || o.iodepth > BLK_MAX_IODEPTH) throw new Error(`iodepth must be 1..${BLK_MAX_IODEPTH}, got ${o.iodepth}`);
  if (!Number.isInteger(o.bs) || o.bs < BLK_SECTOR || o.bs > BLK_MAX_BS || o.bs % BLK_SECTOR !== 0)
    throw new Error(`bs must be a multiple of ${BLK_SECTOR} in ${BLK_SECTOR}..${BLK_MAX_BS}, got ${o.bs}`);
  if (o.rw !== 'randread' && o.rw !== 'randwrite') throw new Error(`rw must be randread or randwrite, got '${String(o.rw)}'`);
  if (!(o.seconds > 0)) throw new Error(`seconds must be > 0, got ${o.seconds}`);
  if (o.queueSize !== undefined) {
    if (!Number.isInteger(o.queueSize) || o.queueSize < 1 || o.queueSize > 32768 || (o.queueSize & (o.queueSize - 1)) !== 0)
      throw new Error(`queue size must be a power of two up to 32768, got ${o.queueSize}`);
    if (o.queueSize < 3 * o.iodepth) throw new Error(`queue size ${o.queueSize} cannot hold ${o.iodepth} requests of 3 descriptors`);
  }
  // segment records and reap output must fit the queue's device area
  if (o.iodepth * 3 * DRV_SEG_BYTES + o.iodepth * DRV_USED_BYTES > DEVICE_AREA_SIZE) throw new Error('iodepth too large for the device area');
}

/** Capacity in bytes: GET_CONFIG offset 0, 8 bytes (virtio_blk_config.capacity, in 512-byte sectors). */
export async function readBlkCapacity(fe: Frontend): Promise<number> {
  if (!hasBit(fe.protocolFeatures, ProtocolFeature.CONFIG))
    throw new Error('the back-end does not offer VHOST_USER_PROTOCOL_F_CONFIG: cannot read the device capacity');
  const r = await fe.client.request('GET_CONFIG', { offset: 0, flags: 0, data: Buffer.alloc(8) });
  if (!r || r.data.length < 8) throw new Error('GET_CONFIG of the capacity failed (empty reply)');
  const sectors = r.data.readBigUInt64LE(0);
  if (sectors === 0n) throw new Error('the device reports a capacity of 0 sectors');
  if (sectors > BigInt(Number.MAX_SAFE_INTEGER) / 512n) throw new Error(`capacity of ${sectors} sectors is too large`);
  return Number(sectors) * BLK_SECTOR;
}

/** Connect, read the capacity, run one driver per queue for `seconds`, stop the rings, disconnect. */
export async function runBlkLoad(o: BlkLoadOptions): Promise<BlkReport> {
  checkBlkLoadOptions(o);
  const queueSize = o.queueSize ?? Math.max(256, nextPow2(3 * o.iodepth));
  const fe = await Frontend.connect({
    socketPath: o.socketPath,
    queues: o.queues,
    queueSize,
    bufferBytes: blkBufferBytes(o.iodepth, o.bs),
    eventIdx: o.eventIdx ?? true,
    packed: o.packed ?? false,
    extraFeatures: bit(VIRTIO_BLK_F_FLUSH) | (o.queues > 1 ? bit(VIRTIO_BLK_F_MQ) : 0n),
  });
  let pool: Piscina | undefined;
  try {
    const capacityBytes = await readBlkCapacity(fe);
    const blocks = Math.floor(capacityBytes / o.bs);
    if (blocks < 1) throw new Error(`the device (${capacityBytes} bytes) is smaller than one ${o.bs}-byte request`);
    pool = new Piscina({ filename: builtPath('workers/blk-driver-worker.js'), minThreads: o.queues, maxThreads: o.queues, idleTimeout: 1000 });
    const seed = o.seed ?? 0x9e3779b9;
    const results = await Promise.all(
      fe.queues.map((qs, q) => {
        const task: BlkDriverTask = {
          memory: fe.ram.mem.memory,
          module: fe.module,
          queue: q,
          ds: fe.ds(q),
          size: fe.size,
          desc: qs.ring.desc,
          avail: qs.ring.avail,
          used: qs.ring.used,
          gpaDelta: fe.ram.gpaDelta,
          eventIdx: fe.eventIdx,
          packed: fe.packed,
          kickFd: qs.kickFd,
          callFd: qs.callFd,
          buffers: qs.ring.buffers,
          segs: deviceArea(q),
          out: deviceArea(q) + alignUp(o.iodepth * 3 * DRV_SEG_BYTES, 64),
          iodepth: o.iodepth,
          bs: o.bs,
          write: o.rw === 'randwrite',
          blocks,
          seconds: o.seconds,
          polling: o.polling ?? false,
          // a different stream per queue, the same streams on every run
          seed: (seed ^ Math.imul(q + 1, 0x85ebca6b)) >>> 0 || 1,
        };
        return pool!.run(task) as Promise<BlkQueueResult>;
      }),
    );
    await fe.stop();
    const completions = results.reduce((s, r) => s + r.completions, 0);
    const kicks = results.reduce((s, r) => s + r.kicks, 0);
    const calls = results.reduce((s, r) => s + r.calls, 0);
    return {
      device: 'blk',
      rw: o.rw,
      bs: o.bs,
      iodepth: o.iodepth,
      queueCount: o.queues,
      queueSize,
      eventIdx: fe.eventIdx,
      packed: fe.packed,
      polling: o.polling ?? false,
      capacityBytes,
      seconds: Math.max(...results.map((r) => r.seconds)),
      iops: results.reduce((s, r) => s + r.iops, 0),
      mibPerSec: results.reduce((s, r) => s + r.mibPerSec, 0),
      completions,
      errors: results.reduce((s, r) => s + r.errors, 0),
      kicksPerRequest: completions ? kicks / completions : 0,
      callsPerRequest: completions ? calls / completions : 0,
      latency: { p50Us: Math.max(...results.map((r) => r.latency.p50Us)), p99Us: Math.max(...results.map((r) => r.latency.p99Us)) },
      queues: results,
    };
  } finally {
    if (pool) await pool.destroy().catch(() => undefined);
    fe.close();
  }
}

export function formatBlkReport(r: BlkReport): string {
  const k = (x: number): string => (x / 1e3).toFixed(1);
  const lines = r.queues.map(
    (q) =>
      `  queue ${q.queue}: ${k(q.iops)} k IOPS  ${q.mibPerSec.toFixed(1)} MiB/s  lat p50 ${q.latency.p50Us.toFixed(1)} us p99 ${q.latency.p99Us.toFixed(1)} us  ` +
      `kicks/req ${q.kicksPerRequest.toFixed(3)}  calls/req ${q.callsPerRequest.toFixed(3)}${q.errors ? `  ERRORS ${q.errors}` : ''}`,
  );
  return [
    `blk ${r.rw} bs ${r.bs} iodepth ${r.iodepth}, ${r.queueCount} queue(s) of ${r.queueSize}, event_idx ${r.eventIdx ? 'on' : 'off'}${r.packed ? ', packed' : ''}${r.polling ? ', polling' : ''}, ` +
      `capacity ${(r.capacityBytes / 2 ** 20).toFixed(0)} MiB, ${r.seconds.toFixed(1)} s`,
    ...lines,
    `  total: ${k(r.iops)} k IOPS  ${r.mibPerSec.toFixed(1)} MiB/s${r.errors ? `  ERRORS ${r.errors}` : ''}`,
  ].join('\n');
}
