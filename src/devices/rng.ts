import type { DeviceModel } from './device.js';

/** virtio-rng (virtio device id 4): one request queue, no feature bits, no config space. */
export function rngDevice(opts: { source?: string } = {}): DeviceModel {
  return {
    name: 'rng',
    queues: 1,
    maxQueueSize: 32768,
    features: 0n,
    protocolFeatures: 0n,
    usedInOrder: 'always', // a synchronous handler: each batch completes in pop order
    options: { source: opts.source ?? '/dev/urandom' },
    capabilities: [],
  };
}
