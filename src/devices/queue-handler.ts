/**
 * What a device gives the queue workers: a handler that turns popped chains into completions. It sees the
 * chains as segment lists in linear memory (layout.ts), never fds of the protocol, never sockets.
 *
 * Two kinds:
 * - synchronous (no `completionFd`): `process(count)` completes every chain in place, in order, by setting
 *   CH_USED_LEN; the worker pushes them all with one publish.
 * - asynchronous (`completionFd` set): `process(count)` copies what it needs out of the chain records (they are
 *   reused by the next pop), starts the work, and completes chains later, in any order, through
 *   `ctx.pushUsed`; when `completionFd` is readable the worker calls `reap()`. `capacity()` bounds how many
 *   chains the worker pops for it.
 */
import type { SplitEngineApi } from '../engine/engine.js';

export interface QueueHandlerContext {
  readonly engine: SplitEngineApi;
  readonly memory: WebAssembly.Memory;
  /** host address of wasm address 0, for syscalls that move data straight into guest buffers */
  readonly hostBase: bigint;
  readonly queue: number;
  /** wasm address of the queue area (queue state, chain records, segments) */
  readonly queueArea: number;
  /** wasm address of this queue's device scratch area */
  readonly scratch: number;
  readonly options: Readonly<Record<string, string | number | boolean>>;
  /** asynchronous handlers: chain `head` is done, `len` bytes written (the worker publishes) */
  pushUsed(head: number, len: number): void;
}

export interface QueueHandler {
  /** Chains 0..count-1 of the queue's chain records were just popped. */
  process(count: number): void;
  /** asynchronous handlers: readable when completions are waiting */
  readonly completionFd?: number;
  /** asynchronous handlers: complete what has finished (ctx.pushUsed for each) */
  reap?(): void;
  /** asynchronous handlers: how many more chains it can take now */
  capacity?(): number;
  /** asynchronous handlers: chains taken and not completed yet */
  inflight?(): number;
  /** Release what the handler holds (files, rings); called when its ring stops. */
  close?(): void;
}

export type QueueHandlerFactory = (ctx: QueueHandlerContext) => QueueHandler;
