/**
 * What a device gives the queue workers: a handler that turns popped chains into completions. It sees the
 * chains as segment lists in linear memory (layout.ts), never fds of the protocol, never sockets.
 */
import type { EngineExports } from '../engine/engine.js';

export interface QueueHandlerContext {
  readonly engine: EngineExports;
  readonly memory: WebAssembly.Memory;
  /** host address of wasm address 0, for syscalls that move data straight into guest buffers */
  readonly hostBase: bigint;
  readonly queue: number;
  /** wasm address of the queue area (queue state, chain records, segments) */
  readonly queueArea: number;
  /** wasm address of this queue's device scratch area */
  readonly scratch: number;
  readonly options: Readonly<Record<string, string | number | boolean>>;
}

export interface QueueHandler {
  /**
   * Chains 0..count-1 of the queue's chain records were just popped: do the work and set each chain's
   * CH_USED_LEN. All of them are completed, in order, when this returns.
   */
  process(count: number): void;
  /** Release what the handler holds (files); called when its worker stops. */
  close?(): void;
}

export type QueueHandlerFactory = (ctx: QueueHandlerContext) => QueueHandler;
