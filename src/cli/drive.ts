/** `vhost-wasm drive`: the built-in front-end against any vhost-user back-end, printing what it measured. */
import { parseArgs } from 'node:util';
import { DRV_FIXED_READ, DRV_FIXED_WRITE } from '../engine/layout.js';
import type { DriverResult } from '../frontend/driver-protocol.js';
import { Frontend } from '../frontend/frontend.js';
import { formatBlkReport, runBlkLoad, type BlkReport, type BlkRw } from '../frontend/blk-load.js';
import { intOption, UsageError } from './main.js';

export interface DriveOptions {
  socketPath: string;
  device: 'rng' | 'null';
  queues: number;
  seconds: number;
  mode: 'throughput' | 'latency';
  polling: boolean;
  queueSize: number;
  descsPerChain: number;
  eventIdx: boolean;
  bufLen: number;
  /** the driver's kick policy (driver-protocol.ts); default 'event-idx' */
  notify?: 'always' | 'event-idx' | 'adaptive';
  /** 'adaptive': µs the driver spins on the used ring before sleeping */
  pollUs?: number;
  /** most chains made available per submit (0 = as many as are free) */
  batch?: number;
  /** packed virtqueues (VIRTIO_F_RING_PACKED) */
  packed?: boolean;
}

export interface DriveReport {
  device: string;
  mode: string;
  polling: boolean;
  eventIdx: boolean;
  notify: string;
  packed: boolean;
  queueCount: number;
  queueSize: number;
  seconds: number;
  /** total over all queues */
  chainsPerSec: number;
  kicksPerChain: number;
  callsPerChain: number;
  errors: number;
  queues: DriverResult[];
}

/** Connect, run the drivers, stop the rings, disconnect. */
export async function drive(o: DriveOptions): Promise<DriveReport> {
  const fe = await Frontend.connect({ socketPath: o.socketPath, queues: o.queues, queueSize: o.queueSize, eventIdx: o.eventIdx, packed: o.packed });
  try {
    const results = await fe.run({
      mode: o.mode,
      polling: o.polling,
      seconds: o.seconds,
      descsPerChain: o.descsPerChain,
      bufLen: o.bufLen,
      writable: o.device === 'rng' ? DRV_FIXED_WRITE : DRV_FIXED_READ,
      notify: o.notify,
      pollUs: o.pollUs,
      submitBatch: o.batch,
    });
    await fe.stop();
    const chains = results.reduce((s, r) => s + r.chains, 0);
    const kicks = results.reduce((s, r) => s + r.kicks, 0);
    const calls = results.reduce((s, r) => s + r.calls, 0);
    return {
      device: o.device,
      mode: o.mode,
      polling: o.polling,
      eventIdx: fe.eventIdx,
      notify: o.notify ?? 'event-idx',
      packed: fe.packed,
      queueCount: o.queues,
      queueSize: o.queueSize,
      seconds: Math.max(...results.map((r) => r.seconds)),
      chainsPerSec: results.reduce((s, r) => s + r.chainsPerSec, 0),
      kicksPerChain: chains ? kicks / chains : 0,
      callsPerChain: chains ? calls / chains : 0,
      errors: results.reduce((s, r) => s + r.errors, 0),
      queues: results,
    };
  } finally {
    fe.close();
  }
}

export interface DriveBlkOptions {
  socketPath: string;
  queues: number;
  iodepth: number;
  bs: number;
  rw: BlkRw;
  seconds: number;
  polling?: boolean;
  queueSize?: number;
  eventIdx?: boolean;
  packed?: boolean;
}

/**
 * `drive --device blk`: the virtio-blk load (src/frontend/blk-load.ts) against any vhost-user-blk back-end.
 * The report: device 'blk', rw, bs, iodepth, queueCount, seconds, iops, mibPerSec, errors and per queue
 * (queue, iops, mibPerSec, completions, errors, latency percentiles, kicks/calls per request).
 */
export function driveBlk(o: DriveBlkOptions): Promise<BlkReport> {
  return runBlkLoad(o);
}

export function formatReport(r: DriveReport): string {
  const lines = r.queues.map((q) => {
    const lat = q.latency ? `  kick->call p50 ${q.latency.p50Us.toFixed(1)} us p99 ${q.latency.p99Us.toFixed(1)} us` : '';
    return (
      `  queue ${q.queue}: ${(q.chainsPerSec / 1e6).toFixed(3)} M chains/s  ` +
      `kicks/chain ${q.kicksPerChain.toFixed(4)}  calls/chain ${q.callsPerChain.toFixed(4)}${lat}`
    );
  });
  return [
    `${r.device} ${r.mode}${r.polling ? ' (polling)' : ''}, ${r.queueCount} queue(s) of ${r.queueSize}, event_idx ${r.eventIdx ? 'on' : 'off'}${r.packed ? ', packed' : ''}, kicks ${r.notify}, ${r.seconds.toFixed(1)} s`,
    ...lines,
    `  total: ${(r.chainsPerSec / 1e6).toFixed(3)} M chains/s${r.errors ? `  ERRORS ${r.errors}` : ''}`,
  ].join('\n');
}

export const DRIVE_USAGE = `usage:
  vhost-wasm drive --socket-path P --device rng|null [--queues N] [--seconds S] [--json]
                   [--mode throughput|latency] [--polling] [--queue-size N] [--desc-per-chain N] [--buf-len N] [--no-event-idx] [--packed]
                   [--notify always|event-idx|adaptive] [--poll-us N] [--batch N]
                   (--notify: when the driver kicks: after every submit, when the device asks (default), or when it
                    asks after spinning --poll-us (default 50) on the used ring first; --batch: most chains per submit)
  vhost-wasm drive --socket-path P --device blk [--queues N] [--iodepth D] [--bs B] [--rw randread|randwrite]
                   [--seconds S] [--json] [--polling] [--queue-size N] [--no-event-idx] [--packed]
                   (any vhost-user-blk back-end; defaults: iodepth 32 per queue, bs 4096, randread)
`;

export async function runDrive(args: string[]): Promise<void> {
  const { values } = parseArgs({
    args,
    strict: true,
    options: {
      'socket-path': { type: 'string' },
      device: { type: 'string', default: 'null' },
      queues: { type: 'string' },
      seconds: { type: 'string' },
      json: { type: 'boolean' },
      mode: { type: 'string', default: 'throughput' },
      polling: { type: 'boolean' },
      'queue-size': { type: 'string' },
      'desc-per-chain': { type: 'string' },
      'buf-len': { type: 'string' },
      'no-event-idx': { type: 'boolean' },
      notify: { type: 'string' },
      'poll-us': { type: 'string' },
      batch: { type: 'string' },
      packed: { type: 'boolean' },
      iodepth: { type: 'string' },
      bs: { type: 'string' },
      rw: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(DRIVE_USAGE);
    return;
  }
  if (!values['socket-path']) throw new UsageError('drive needs --socket-path');
  if (values.device === 'blk') {
    for (const o of ['mode', 'desc-per-chain', 'buf-len', 'notify', 'poll-us', 'batch'] as const)
      if (values[o] !== undefined && !(o === 'mode' && values[o] === 'throughput')) throw new UsageError(`--${o} does not apply to --device blk`);
    const rw = values.rw ?? 'randread';
    if (rw !== 'randread' && rw !== 'randwrite') throw new UsageError(`--rw must be randread or randwrite, got '${rw}'`);
    const bs = intOption('bs', values.bs, 4096, 512, 1 << 20);
    if (bs % 512 !== 0) throw new UsageError(`--bs must be a multiple of 512, got '${values.bs}'`);
    const seconds = Number(values.seconds ?? 5);
    if (!(seconds > 0 && seconds <= 3600)) throw new UsageError(`--seconds must be in (0, 3600], got '${values.seconds}'`);
    const report = await driveBlk({
      socketPath: values['socket-path'],
      queues: intOption('queues', values.queues, 1, 1, 32),
      iodepth: intOption('iodepth', values.iodepth, 32, 1, 1024),
      bs,
      rw,
      seconds,
      polling: values.polling ?? false,
      queueSize: values['queue-size'] === undefined ? undefined : intOption('queue-size', values['queue-size'], 256, 1, 32768),
      eventIdx: !values['no-event-idx'],
      packed: values.packed ?? false,
    });
    process.stdout.write((values.json ? JSON.stringify(report) : formatBlkReport(report)) + '\n');
    return;
  }
  const notify = values.notify ?? (values['poll-us'] !== undefined ? 'adaptive' : 'event-idx');
  if (notify !== 'always' && notify !== 'event-idx' && notify !== 'adaptive') throw new UsageError(`--notify must be always, event-idx or adaptive, got '${notify}'`);
  if (values['poll-us'] !== undefined && notify !== 'adaptive') throw new UsageError(`--poll-us is the spin budget of --notify adaptive`);
  if (values.polling && values.notify !== undefined) throw new UsageError('--polling spins without kicks or interrupts: it takes no --notify');
  for (const o of ['iodepth', 'bs', 'rw'] as const) if (values[o] !== undefined) throw new UsageError(`--${o} applies to --device blk only`);
  if (values.device !== 'rng' && values.device !== 'null') throw new UsageError(`--device must be rng, null or blk, got '${values.device}'`);
  if (values.mode !== 'throughput' && values.mode !== 'latency') throw new UsageError(`--mode must be throughput or latency`);
  const report = await drive({
    socketPath: values['socket-path'],
    device: values.device,
    queues: intOption('queues', values.queues, 1, 1, 32),
    seconds: Number(values.seconds ?? 5),
    mode: values.mode,
    polling: values.polling ?? false,
    queueSize: intOption('queue-size', values['queue-size'], 256, 1, 32768),
    descsPerChain: intOption('desc-per-chain', values['desc-per-chain'], 1, 1, 64),
    bufLen: intOption('buf-len', values['buf-len'], 64, 1, 65536),
    eventIdx: !values['no-event-idx'],
    notify,
    pollUs: intOption('poll-us', values['poll-us'], 50, 0, 10_000_000),
    batch: intOption('batch', values.batch, 0, 0, 32768),
    packed: values.packed ?? false,
  });
  process.stdout.write((values.json ? JSON.stringify(report) : formatReport(report)) + '\n');
}
