import type { QueueHandler, QueueHandlerFactory } from './queue-handler.js';

/** The null device: every chain completes at once with nothing written (CH_USED_LEN stays 0). */
export const createNullQueueHandler: QueueHandlerFactory = (): QueueHandler => ({
  process(): void {},
});
