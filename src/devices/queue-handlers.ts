/** The queue handlers a worker can run, by device name. */
import { createBlkQueueHandler } from './blk-queue.js';
import { createNullQueueHandler } from './null-queue.js';
import { createRngQueueHandler } from './rng-queue.js';
import type { QueueHandlerFactory } from './queue-handler.js';

export const QUEUE_HANDLERS: Readonly<Record<string, QueueHandlerFactory>> = {
  null: createNullQueueHandler,
  rng: createRngQueueHandler,
  blk: createBlkQueueHandler,
};
