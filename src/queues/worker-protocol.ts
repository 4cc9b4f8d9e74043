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

export interface RingStart {
  queue: number;
  kickFd: number; // -1: no kick fd, the worker polls the ring
  callFd: number; // -1: no notifications
  errFd: number;
  enabled: boolean;
  pollUs: number;
  batch: number;
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
