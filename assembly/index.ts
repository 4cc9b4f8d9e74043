// vhost-wasm engine entry: everything the JS side (src/engine/engine.ts) uses.
// Built with `npx asc assembly/index.ts --config build/asconfig.json --target release`.
// The only import is env.memory; there is no mutable global and no data segment.

export * from './layout';
export { needEvent } from './event-idx';
export { translateGpa, translateUva } from './region-table';
export {
  splitConfigure, splitPopBatch, splitPopHeads, splitAvailPending, splitPushUsed, splitPublish, splitComplete,
  splitDisableNotify, splitEnableNotify,
} from './split-ring';
export { packedConfigure } from './packed-ring';
export { inflightPackedQueueBytes, inflightPackedInit, inflightPackedRecover } from './inflight-packed';
export { inflightSplitQueueBytes, inflightSplitInit, inflightSplitRecover } from './inflight-split';
export {
  drvInit, drvSetupFixedChains, drvSubmit, drvAddChain, drvKickAvail, drvNeedKick, drvReapTo, drvReap,
  drvSetInterrupts, drvUsedPending,
} from './split-driver';
