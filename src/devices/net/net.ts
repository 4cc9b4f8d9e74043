/**
 * virtio-net (device id 1) for `vhost-wasm net`: every socket is one port of a built-in learning L2 switch
 * (src/net/switch.ts). This file is the device model of one port: feature bits, config space, SEND_RARP and
 * NET_SET_MTU. Its rings run in the switch's workers (DeviceModel.workers), never in a per-connection pool.
 *
 * Queues: rx0, tx0, rx1, tx1, ... (2 per queue pair; GET_QUEUE_NUM answers 2 * pairs). The control queue is the
 * front-end's business (QEMU and DPDK's virtio-user handle it themselves over vhost-user) and never reaches us.
 */
import type { DeviceModel } from '../device.js';
import type { RingWorkersFactory } from '../../queues/ring-workers.js';
import { bit, ProtocolFeature } from '../../vhost-user/constants.js';
import * as F from '../../net/frame.js';
import { NetSwitch, type NetSwitchOptions } from '../../net/switch.js';

export const NET_USAGE = `  vhost-wasm net  --socket-path P1 [--socket-path P2 ...] [--queues N] [--mac M ...] [--mtu N] [--no-offloads] [--poll-us N]
                  (one port of a built-in learning switch per socket, or per --fd; --queues: queue pairs 1..16;
                   --no-offloads: offer no checksum/TSO offloads, for ports that cannot take GSO frames;
                   --poll-us: keep TX kicks off and poll a drained TX ring for N us after its last frame, default 0)
`;

export const NET_CONFIG_BYTES = 24;
export const DEFAULT_MTU = 1500;

export interface NetPortsOptions {
  /** number of ports (one socket each) */
  ports: number;
  /** queue pairs per port (default 1) */
  pairs?: number;
  /** MAC per port for the config space (default: random, locally administered) */
  macs?: readonly (Uint8Array | undefined)[];
  /** initial MTU of every port (default 1500); NET_SET_MTU changes a port's */
  mtu?: number;
  /** offer CSUM/GUEST_CSUM/HOST_TSO4/6/GUEST_TSO4/6 (default true): see src/net/frame.ts for the rules */
  offloads?: boolean;
  log?: NetSwitchOptions['log'];
}

/** The virtio-net feature bits a port offers (the core adds VERSION_1, EVENT_IDX, INDIRECT_DESC). */
export function netFeatures(pairs: number, offloads: boolean): bigint {
  let f =
    bit(F.VIRTIO_NET_F_MAC) |
    bit(F.VIRTIO_NET_F_STATUS) |
    bit(F.VIRTIO_NET_F_MTU) |
    bit(F.VIRTIO_NET_F_MRG_RXBUF) |
    // QEMU then announces a migrated guest through the guest itself instead of sending SEND_RARP
    bit(F.VIRTIO_NET_F_GUEST_ANNOUNCE);
  if (pairs > 1) f |= bit(F.VIRTIO_NET_F_MQ);
  if (offloads)
    f |=
      bit(F.VIRTIO_NET_F_CSUM) |
      bit(F.VIRTIO_NET_F_GUEST_CSUM) |
      bit(F.VIRTIO_NET_F_HOST_TSO4) |
      bit(F.VIRTIO_NET_F_HOST_TSO6) |
      bit(F.VIRTIO_NET_F_GUEST_TSO4) |
      bit(F.VIRTIO_NET_F_GUEST_TSO6);
  return f;
}

/** One port of the switch, as the vhost-user core sees it. */
export class NetPortDevice implements DeviceModel {
  readonly name = 'net';
  readonly queues: number;
  readonly maxQueueSize = 32768;
  readonly features: bigint;
  readonly protocolFeatures = bit(ProtocolFeature.RARP) | bit(ProtocolFeature.MTU);
  /**
   * QEMU's multiqueue vhost-user-net runs one vhost_dev per queue pair over the one connection, and each keeps its
   * own idea of the memory regions: with CONFIGURE_MEM_SLOTS the second re-adds (and later removes) regions the
   * first already added, which no single region table can follow. Without it QEMU sends whole SET_MEM_TABLEs,
   * which replace the table and are idempotent.
   */
  readonly withoutProtocolFeatures = bit(ProtocolFeature.CONFIGURE_MEM_SLOTS);
  /** TX completes each popped batch in order; RX pushes each chain as it pops it, under the ring's lock (net-switch.ts) */
  readonly usedInOrder = 'always';
  readonly options: Record<string, string | number | boolean> = {};
  readonly capabilities: readonly string[] = [];
  readonly workers: RingWorkersFactory;
  mac: Uint8Array;

  constructor(
    readonly sw: NetSwitch,
    readonly port: number,
    mac: Uint8Array | undefined,
    offloads: boolean,
  ) {
    this.queues = 2 * sw.pairs;
    this.features = netFeatures(sw.pairs, offloads);
    this.mac = mac ? Uint8Array.from(mac) : F.randomMac();
    this.workers = sw.workersFor(port);
  }

  get mtu(): number {
    return this.sw.mtu(this.port);
  }

  /** struct virtio_net_config (5.1.4) */
  readConfig(): Buffer {
    const b = Buffer.alloc(NET_CONFIG_BYTES);
    b.set(this.mac, 0);
    b.writeUInt16LE(F.VIRTIO_NET_S_LINK_UP, 6); // status
    b.writeUInt16LE(this.sw.pairs, 8); // max_virtqueue_pairs
    b.writeUInt16LE(this.mtu, 10); // mtu
    b.writeUInt32LE(0xffff_ffff, 12); // speed: unknown (no VIRTIO_NET_F_SPEED_DUPLEX)
    b.writeUInt8(0xff, 16); // duplex: unknown
    return b;
  }

  /** Only the MAC is writable (legacy drivers set it through the config space). */
  writeConfig(offset: number, data: Buffer): boolean {
    if (offset < 0 || offset + data.length > F.ETH_ALEN) return false;
    this.mac.set(data, offset);
    return true;
  }

  sendRarp(mac: Uint8Array): Promise<void> {
    return this.sw.sendRarp(this.port, mac);
  }

  setMtu(mtu: number): void {
    if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) throw new RangeError(`MTU ${mtu} is outside 68..65535`);
    this.sw.setMtu(this.port, mtu);
  }
}

export interface NetPorts {
  sw: NetSwitch;
  devices: NetPortDevice[];
}

/** A switch with `ports` ports; serve devices[i] on socket i (one VhostUserServer each). */
export function createNetPorts(opts: NetPortsOptions): NetPorts {
  const mtu = opts.mtu ?? DEFAULT_MTU;
  if (!Number.isInteger(mtu) || mtu < 68 || mtu > 65535) throw new RangeError(`MTU ${mtu} is outside 68..65535`);
  if ((opts.macs?.length ?? 0) > opts.ports) throw new RangeError(`${opts.macs!.length} MACs for ${opts.ports} port(s)`);
  const sw = new NetSwitch({ ports: opts.ports, pairs: opts.pairs ?? 1, mtu, log: opts.log });
  const devices = Array.from({ length: opts.ports }, (_, i) => new NetPortDevice(sw, i, opts.macs?.[i], opts.offloads ?? true));
  return { sw, devices };
}
