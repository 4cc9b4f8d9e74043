/**
 * vhost-wasm command line: back-end devices (rng, null), the built-in front-end (drive) and the demo that
 * `npm start` runs.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import type { DeviceModel } from '../devices/device.js';
import { blkCapabilitiesModel, blkDevice } from '../devices/blk.js';
import { nullDevice } from '../devices/null.js';
import { rngDevice } from '../devices/rng.js';
import { VhostUserServer } from '../vhost-user/server.js';
import { runDemo } from './demo.js';
import fs from 'node:fs';
import { ENGINES } from '../engine/engines.js';
import { runDrive } from './drive.js';
import { normaliseStatsFlag, startStatsReporter } from './stats-reporter.js';
import { runNet } from '../devices/net/cli.js';
import { NET_USAGE } from '../devices/net/net.js';
import { IVSHMEM_USAGE, runIvshmemClient, runIvshmemServer } from './ivshmem.js';
import { COMPLETION_ORDERS, NOTIFY_POLICIES, type CompletionOrder, type NotifyPolicy } from '../queues/worker-protocol.js';

const USAGE = `usage:
  vhost-wasm rng  (--socket-path P | --fd N) [--source FILE] [backend options]
  vhost-wasm null (--socket-path P | --fd N) [--queues N] [backend options]
  vhost-wasm blk  (--socket-path P | --fd N) --image FILE [--queues N] [--read-only] [--serial S] [backend options]
                  (raw image: a regular file or a block device, size a multiple of 512; --queues 1..32;
                   --serial: GET_ID answer, at most 20 bytes, default from the image name)
${NET_USAGE}  vhost-wasm <device> --print-capabilities
  vhost-wasm drive --socket-path P --device rng|null|blk [--queues N] [--seconds S] [--json]
                   blk: [--iodepth D] [--bs B] [--rw randread|randwrite]
                   [--mode throughput|latency] [--polling] [--queue-size N] [--desc-per-chain N] [--no-event-idx]
                   [--notify always|event-idx|adaptive] [--poll-us N] [--batch N]   (the driver's kicks; rng/null)
  vhost-wasm demo [--queues N] [--seconds S]        (what npm start runs)
${IVSHMEM_USAGE}
backend options:
  --queue-map 0,0,1   worker index per queue (default: one worker per queue)
  --notify P          notification policy: always (a call after every batch, whatever the driver asked),
                      event-idx (default: only when the driver asks, EVENT_IDX or NO_INTERRUPT; kicks re-armed
                      as soon as the ring is empty), adaptive (as event-idx, but busy-poll the ring for --poll-us
                      after the last work before re-arming kicks)
  --poll-us N         the adaptive policy's busy-poll budget in microseconds (default 50; alone, it implies
                      --notify adaptive)
  --batch N           most chains per engine call (default 128)
  --completion O      asynchronous devices (blk): as-finished (default) or in-order (a finished request waits
                      for every request popped before it: used ring order = avail ring order)
  --engine NAME       ring engine: wasm (default), reference (plain TypeScript), or a path to an engine module
  --stats [S]         print each running queue's figures every S seconds (default 1) on stderr
  --stats-json FILE   write them as JSON lines to FILE ('-' = stdout) instead
`;

const BACKEND_OPTIONS = {
  'socket-path': { type: 'string' },
  fd: { type: 'string' },
  'print-capabilities': { type: 'boolean' },
  queues: { type: 'string' },
  source: { type: 'string' },
  image: { type: 'string' },
  'read-only': { type: 'boolean' },
  serial: { type: 'string' },
  'queue-map': { type: 'string' },
  notify: { type: 'string' },
  'poll-us': { type: 'string' },
  batch: { type: 'string' },
  completion: { type: 'string' },
  engine: { type: 'string' },
  stats: { type: 'string' },
  'stats-json': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsConfig['options'];

export function intOption(name: string, v: string | undefined, dflt: number, min: number, max: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`--${name} must be an integer in ${min}..${max}, got '${v}'`);
  return n;
}

export class UsageError extends Error {}

export const DEFAULT_ADAPTIVE_POLL_US = 50;

/** --notify, --poll-us, --completion and --batch: the ring policies every back-end takes (worker-protocol.ts). */
export function ringPolicies(v: { notify?: string; 'poll-us'?: string; completion?: string; batch?: string }): {
  notify: NotifyPolicy;
  pollUs: number;
  completion: CompletionOrder;
  batch: number;
} {
  const pollGiven = v['poll-us'] !== undefined;
  const pollUs = intOption('poll-us', v['poll-us'], DEFAULT_ADAPTIVE_POLL_US, 0, 10_000_000);
  const notify = (v.notify ?? (pollGiven && pollUs > 0 ? 'adaptive' : 'event-idx')) as NotifyPolicy;
  if (!NOTIFY_POLICIES.includes(notify)) throw new UsageError(`--notify must be one of ${NOTIFY_POLICIES.join(', ')}, got '${v.notify}'`);
  // one meaning per flag: --poll-us is the adaptive policy's budget and nothing else
  if (pollGiven && pollUs > 0 && notify !== 'adaptive') throw new UsageError(`--poll-us is the busy-poll budget of --notify adaptive; it does not go with --notify ${notify}`);
  const completion = (v.completion ?? 'as-finished') as CompletionOrder;
  if (!COMPLETION_ORDERS.includes(completion)) throw new UsageError(`--completion must be one of ${COMPLETION_ORDERS.join(', ')}, got '${v.completion}'`);
  return { notify, pollUs: notify === 'adaptive' ? pollUs : 0, completion, batch: intOption('batch', v.batch, 128, 1, 1024) };
}

function deviceFor(name: string, v: Record<string, string | boolean | undefined>): DeviceModel {
  switch (name) {
    case 'rng':
      return rngDevice({ source: v['source'] as string | undefined });
    case 'null':
      return nullDevice({ queues: intOption('queues', v['queues'] as string | undefined, 1, 1, 32) });
    case 'blk': {
      if (v['image'] === undefined) {
        if (v['print-capabilities']) return blkCapabilitiesModel();
        throw new UsageError('blk needs --image FILE');
      }
      try {
        return blkDevice({
          image: v['image'] as string,
          queues: intOption('queues', v['queues'] as string | undefined, 1, 1, 32),
          readOnly: v['read-only'] === true,
          serial: v['serial'] as string | undefined,
        });
      } catch (e) {
        if (e instanceof UsageError) throw e;
        throw new UsageError((e as Error).message);
      }
    }
    default:
      throw new UsageError(`unknown device '${name}'`);
  }
}

async function runBackend(name: string, args: string[]): Promise<void> {
  const { values } = parseArgs({ args: normaliseStatsFlag(args), options: BACKEND_OPTIONS, strict: true });
  if (values.help) {
    process.stdout.write(USAGE);
    return;
  }
  const device = deviceFor(name, values);
  if (values['print-capabilities']) {
    process.stdout.write(JSON.stringify({ type: device.name, features: device.capabilities }) + '\n');
    return;
  }
  if ((values['socket-path'] === undefined) === (values.fd === undefined))
    throw new UsageError('exactly one of --socket-path and --fd is required');
  const queueToWorker = values['queue-map']?.split(',').map((s, i) => intOption(`queue-map[${i}]`, s, 0, 0, 31));
  if (queueToWorker && queueToWorker.length !== device.queues)
    throw new UsageError(`--queue-map names ${queueToWorker.length} queues, the device has ${device.queues}`);
  if (values.engine !== undefined && !(values.engine in ENGINES) && !fs.existsSync(values.engine))
    throw new UsageError(`--engine must be one of ${Object.keys(ENGINES).join(', ')} or the path of an engine module, got '${values.engine}'`);
  const policies = ringPolicies(values);
  // handlers first: the socket file appearing means "ready", and a SIGTERM from then on must exit cleanly
  let server: VhostUserServer | undefined;
  // a back-end serves other devices and queues whatever one of them did: log, never die
  process.on('unhandledRejection', (e) => process.stderr.write(`vhost-wasm ${name}: internal error: ${(e as Error)?.stack ?? e}\n`));
  const stop = (sig: string): void => {
    process.stderr.write(`vhost-wasm ${name}: ${sig}, shutting down\n`);
    void (server?.close() ?? Promise.resolve()).finally(() => process.exit(0));
    setTimeout(() => {
      process.stderr.write(`vhost-wasm ${name}: shutdown did not finish within 3 s; exiting anyway\n`);
      process.exit(1);
    }, 3000).unref();
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  server = new VhostUserServer({
    device,
    socketPath: values['socket-path'],
    fd: values.fd === undefined ? undefined : intOption('fd', values.fd, 0, 0, 1 << 20),
    queueToWorker,
    ...policies,
    engine: values.engine,
  }).start();
  if (values.stats !== undefined || values['stats-json'] !== undefined) {
    const intervalSec = Number(values.stats ?? 1);
    if (!(intervalSec > 0)) throw new UsageError(`--stats interval must be a positive number of seconds, got '${values.stats}'`);
    startStatsReporter(name, server, { intervalSec, jsonPath: values['stats-json'] });
  }
}

export async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case 'rng':
      case 'null':
      case 'blk':
        return await runBackend(cmd, rest);
      case 'net':
        return await runNet(rest);
      case 'drive':
        return await runDrive(rest);
      case 'demo':
        return await runDemo(rest);
      case 'ivshmem-server':
        return await runIvshmemServer(rest);
      case 'ivshmem-client':
        return await runIvshmemClient(rest);
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        process.stdout.write(USAGE);
        return;
      default:
        throw new UsageError(`unknown command '${cmd}'`);
    }
  } catch (e) {
    if (e instanceof UsageError || (e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`vhost-wasm: ${(e as Error).message}\n\n${USAGE}`);
      process.exit(2);
    }
    // failures the user can act on (a socket that is not there, a back-end that refused) need no stack trace
    process.stderr.write(`vhost-wasm: ${(e as Error).message}\n`);
    if (process.env['VHOST_WASM_DEBUG']) process.stderr.write(`${(e as Error).stack}\n`);
    process.exit(1);
  }
}
