import type { DeviceModel } from './device.js';

/** The null device: N queues whose chains complete at once, unread and unwritten. For measuring the engine. */
export function nullDevice(opts: { queues?: number } = {}): DeviceModel {
  const queues = opts.queues ?? 1;
  if (!Number.isInteger(queues) || queues < 1 || queues > 32) throw new Error(`--queues must be 1..32, got ${opts.queues}`);
  return {
    name: 'null',
    queues,
    maxQueueSize: 32768,
    features: 0n,
    protocolFeatures: 0n,
    usedInOrder: 'always', // a synchronous handler: each batch completes in pop order
    options: {},
    capabilities: [],
  };
}
