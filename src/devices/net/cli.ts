/**
 * `vhost-wasm net --socket-path P1 [--socket-path P2 ...] [--queues N]`: one process, one learning L2 switch, one
 * port per socket (or inherited listening fd). Two VMs (or a VM and DPDK) attached to the same process talk to
 * each other through it.
 */
import { parseArgs } from 'node:util';
import { intOption, UsageError } from '../../cli/main.js';
import { VhostUserServer } from '../../vhost-user/server.js';
import { formatMac, parseMac } from '../../net/frame.js';
import { createNetPorts, DEFAULT_MTU, NET_USAGE } from './net.js';

const NET_OPTIONS = {
  'socket-path': { type: 'string', multiple: true },
  fd: { type: 'string', multiple: true },
  queues: { type: 'string' },
  mac: { type: 'string', multiple: true },
  mtu: { type: 'string' },
  'no-offloads': { type: 'boolean' },
  'print-capabilities': { type: 'boolean' },
  batch: { type: 'string' },
  'poll-us': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

export async function runNet(args: string[]): Promise<void> {
  const { values } = parseArgs({ args, options: NET_OPTIONS, strict: true });
  if (values.help) {
    process.stdout.write(`usage:\n${NET_USAGE}`);
    return;
  }
  if (values['print-capabilities']) {
    process.stdout.write(JSON.stringify({ type: 'net', features: [] }) + '\n');
    return;
  }
  const paths = values['socket-path'] ?? [];
  const fds = (values.fd ?? []).map((v, i) => intOption(`fd[${i}]`, v, 0, 0, 1 << 20));
  const ports = paths.length + fds.length;
  if (ports === 0) throw new UsageError('net needs at least one --socket-path (or --fd): one switch port each');
  if (ports > 64) throw new UsageError(`at most 64 ports, got ${ports}`);
  const pairs = intOption('queues', values.queues, 1, 1, 16);
  let macs: Uint8Array[] | undefined;
  try {
    macs = values.mac?.map(parseMac);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (macs && macs.length > ports) throw new UsageError(`${macs.length} --mac for ${ports} port(s)`);
  const mtu = intOption('mtu', values.mtu, DEFAULT_MTU, 68, 65535);
  const batch = intOption('batch', values.batch, 128, 1, 1024);
  const pollUs = intOption('poll-us', values['poll-us'], 0, 0, 1_000_000);

  const log = (l: string): void => void process.stderr.write(`vhost-wasm net: ${l}\n`);
  const { sw, devices } = createNetPorts({ ports, pairs, macs, mtu, offloads: !values['no-offloads'], log });
  const servers: VhostUserServer[] = [];
  const printStats = (): void => {
    for (let p = 0; p < ports; p++) log(`port ${p} stats ${JSON.stringify(sw.stats(p))}`);
  };
  process.on('unhandledRejection', (e) => log(`internal error: ${(e as Error)?.stack ?? e}`));
  const stop = (sig: string): void => {
    log(`${sig}, shutting down`);
    void Promise.allSettled(servers.map((s) => s.close()))
      .then(() => {
        printStats();
        return sw.close();
      })
      .finally(() => process.exit(0));
    setTimeout(() => {
      log('shutdown did not finish within 3 s; exiting anyway');
      process.exit(1);
    }, 3000).unref();
  };
  process.once('SIGTERM', () => stop('SIGTERM'));
  process.once('SIGINT', () => stop('SIGINT'));
  process.on('SIGUSR1', printStats);
  for (let p = 0; p < ports; p++) {
    const portLog = (l: string): void => void process.stderr.write(`vhost-wasm net[${p}]: ${l}\n`);
    servers.push(
      new VhostUserServer({
        device: devices[p]!,
        socketPath: paths[p],
        fd: p >= paths.length ? fds[p - paths.length] : undefined,
        batch,
        pollUs,
        log: portLog,
      }).start(),
    );
    portLog(`mac ${formatMac(devices[p]!.mac)}, ${pairs} queue pair(s), mtu ${mtu}`);
  }
}
