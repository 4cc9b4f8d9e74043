import type { RingWorkersFactory } from '../queues/ring-workers.js';

/**
 * A device model as the back-end core sees it: what it offers and how its config space reads. It knows nothing
 * of sockets or of the protocol; its queue work runs in the workers (queue-handlers.ts, by `name`).
 */
export interface DeviceModel {
  /** queue handler key and the `type` of --print-capabilities */
  readonly name: string;
  /** number of virtqueues served */
  readonly queues: number;
  /** largest ring a driver may set up (power of two <= 32768) */
  readonly maxQueueSize: number;
  /** device-specific virtio feature bits (the core adds the transport ones) */
  readonly features: bigint;
  /** protocol feature bits the device needs on top of the core set (e.g. CONFIG) */
  readonly protocolFeatures: bigint;
  /** core protocol feature bits this device must not offer (net: CONFIGURE_MEM_SLOTS, see devices/net/net.ts) */
  readonly withoutProtocolFeatures?: bigint;
  /**
   * When every queue uses buffers in the order they were made available, so VIRTIO_F_IN_ORDER may be offered:
   * 'always' (synchronous handlers complete each batch in pop order; the net switch pushes each chain as it pops
   * it), 'in-order-completion' (asynchronous handlers, only under --completion in-order); absent: never.
   */
  readonly usedInOrder?: 'always' | 'in-order-completion';
  /** handed to each queue handler */
  readonly options: Record<string, string | number | boolean>;
  /** capabilities for --print-capabilities (the vhost-user.json "features" list) */
  readonly capabilities: readonly string[];
  /** config space contents, if the device has one */
  readConfig?(): Buffer;
  /** a front-end write of `data` at `offset`; returns false when the field is read-only */
  writeConfig?(offset: number, data: Buffer): boolean;
  /** who runs the rings (default: a worker pool per connection) */
  readonly workers?: RingWorkersFactory;
  /** net: SEND_RARP (protocol feature RARP) asks the device to announce this MAC */
  sendRarp?(mac: Uint8Array): void | Promise<void>;
  /** net: NET_SET_MTU (protocol feature MTU), already checked to be in 68..65535 */
  setMtu?(mtu: number): void;
}
