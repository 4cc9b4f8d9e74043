/** What the main thread and a queue worker say to each other (comlink calls one way, events the other). */
import type { MessagePort } from 'node:worker_threads';

export interface QueueWorkerData {
  memory: WebAssembly.Memory;
  module: WebAssembly.Module;
  device: string;
  options: Record<string, string | number | boolean>;
  /** ring engine name or module path (engines.ts); default wasm */
  engine?: string;
  /** eventfd the main thread writes before each control call, so a worker blocked in poll() wakes up */
  ctlFd: number;
  /** Int32Array[1] over this SAB: non-zero = exit now (written at process exit, when no call can be awaited) */
  ctlWord: SharedArrayBuffer;
  events: MessagePort;
  /** comlink endpoint */
  control: MessagePort;
}

/**
 * When the back-end signals the driver (the call eventfd) and re-arms kicks:
 * - 'always': a call after every batch that completed something, whatever EVENT_IDX / NO_INTERRUPT asked;
 * - 'event-idx': only when the driver asked for it (used_event, or the NO_INTERRUPT flag without EVENT_IDX),
 *   kicks re-armed as soon as the ring is empty;
 * - 'adaptive': as 'event-idx', but kicks stay off while the worker busy-polls the ring for `pollUs` after the
 *   last work; re-armed only when that budget passes with nothing to do.
 */
export type NotifyPolicy = 'always' | 'event-idx' | 'adaptive';
export const NOTIFY_POLICIES: readonly NotifyPolicy[] = ['always', 'event-idx', 'adaptive'];

/**
 * The order asynchronous devices (blk) put completions in the used ring: 'as-finished' (as the I/O completes),
 * or 'in-order' (a finished request waits until every request popped before it has finished: used ring order
 * equals avail ring order). Synchronous devices complete in order either way.
 */
export type CompletionOrder = 'in-order' | 'as-finished';
export const COMPLETION_ORDERS: readonly CompletionOrder[] = ['in-order', 'as-finished'];

export interface RingStart {
  queue: number;
  kickFd: number; // -1: no kick fd, the worker polls the ring
  callFd: number; // -1: no notifications
  errFd: number;
  enabled: boolean;
  /** default 'event-idx', or 'adaptive' when pollUs > 0 */
  notify?: NotifyPolicy;
  /** busy-poll budget of the 'adaptive' policy, µs */
  pollUs: number;
  batch: number;
  /** default 'as-finished' */
  completion?: CompletionOrder;
  /** heads left in flight by a previous back-end (inflight recovery), to process before anything new */
  resubmit?: number[];
  /** the connection's acked virtio features (devices whose data path depends on them: net's header, offloads) */
  features?: bigint;
}

export interface StoppedRing {
  queue: number;
  wasRunning: boolean;
}

export interface QueueWorkerApi {
  start(s: RingStart): void;
  stop(queue: number): StoppedRing;
  setEnabled(queue: number, enabled: boolean): void;
  setFds(queue: number, fds: { kickFd?: number; callFd?: number; errFd?: number }): void;
  /** stop touching guest memory until resume(); returns the queues it holds */
  pause(): number[];
  resume(): void;
  /** forget every ring (each drained first) and un-pause: the worker goes back to its pool for the next connection */
  reset(): void;
  shutdown(): void;
}

export type WorkerEvent =
  | { type: 'ring-error'; queue: number; code: number; detail: number }
  | { type: 'log'; message: string };
